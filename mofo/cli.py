"""The ``mofo`` command line. Data goes to stdout, messages and progress to stderr; the exit code
is non-zero when any clip failed (the others still complete)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mofo import cli_cache, cli_train
from mofo.cli_options import (
    _LIMITS,
    EXIT_CLIP_FAILED,
    Backend,
    BackendOpt,
    FpsOpt,
    MaxBytesOpt,
    MaxDurationOpt,
    MaxFramesOpt,
    MaxHeightOpt,
    MaxWidthOpt,
    MotionStepOpt,
    MotionStepSOpt,
    NumFramesOpt,
    Quality,
    QualityOpt,
    ShortSideOpt,
    Stopping,
    StoppingOpt,
    StrideOpt,
    err,
    fail,
    load_settings,
    motion_settings,
    output_path,
    sampling_options,
)
from mofo.shared.errors import MofoError
from mofo.shared.sample import sample_clip

app = typer.Typer(
    help="MOFO: motion boxes from TV-L1 motion boundaries.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: "[env MOFO_HOST]" is text, not markup; no box drawing
)


def _version(shown: bool) -> None:
    if shown:
        from importlib.metadata import version

        from mofo.shared.params import ALGORITHM_VERSION

        typer.echo(f"mofo {version('mofo')} (algorithm version {ALGORITHM_VERSION})")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and the algorithm version (which names records) and exit.",
        ),
    ] = False,
) -> None:
    """MOFO motion boxes, service, workers and training."""


@app.command()
def sample() -> None:
    """Print the path of the bundled sample clip."""
    typer.echo(str(sample_clip()))


@app.command()
def boxes(
    clips: Annotated[
        list[str],
        typer.Argument(
            help="Video files, folders of them (searched recursively), or - for standard input.",
            show_default=False,
        ),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="One box record (JSON) per clip and line on stdout.")
    ] = False,
    preview: Annotated[
        Path | None, typer.Option(help="Write the clip with its boxes drawn: OUT.gif or OUT.mp4.")
    ] = None,
    motion_map: Annotated[
        Path | None, typer.Option(help="Write a PNG strip of frames above their motion maps.")
    ] = None,
    maps: Annotated[
        Path | None,
        typer.Option(
            help="Write each clip's flow and motion maps into this folder, as STEM.npz "
            "(mofo.flow/1; read with mofo.read_flow_file).",
            file_okay=False,
        ),
    ] = None,
    maps_dtype: Annotated[
        str, typer.Option(help="float16 (half the size) or float32 (exact) for --maps.")
    ] = "float16",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    backend: BackendOpt = Backend.auto,
    quality: QualityOpt = Quality.balanced,
    short_side: ShortSideOpt = None,
    stride: StrideOpt = 1,
    fps: FpsOpt = None,
    num_frames: NumFramesOpt = None,
    motion_step: MotionStepOpt = 1,
    motion_step_s: MotionStepSOpt = None,
    stopping: StoppingOpt = Stopping.epsilon,
    batch_size: Annotated[
        int | None, typer.Option(help="Frame pairs per flow batch (default 8 CPU, 16 CUDA).")
    ] = None,
    max_frames: MaxFramesOpt = _LIMITS.max_frames,
    max_duration: MaxDurationOpt = _LIMITS.max_duration_s,
    max_width: MaxWidthOpt = _LIMITS.max_width,
    max_height: MaxHeightOpt = _LIMITS.max_height,
    max_bytes: MaxBytesOpt = _LIMITS.max_bytes,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Find the motion boxes of one or more clips."""
    # Imported here so that `mofo --help` stays fast.
    from mofo.shared.pipeline import analyse_clip
    from mofo.shared.render import (
        MOTION_MAP_SUFFIXES,
        PREVIEW_SUFFIXES,
        check_output_path,
        sampled_fps,
        write_motion_map,
        write_preview,
    )

    sampling = sampling_options(short_side, stride, fps, num_frames, motion_step, motion_step_s)
    dev, params, limits = motion_settings(
        device,
        backend,
        stopping,
        sampling,
        (max_bytes, max_frames, max_duration, max_width, max_height),
        quality,
    )
    # Refuse a bad output path before any clip is decoded, not after the work is done.
    outputs = (
        (preview, PREVIEW_SUFFIXES, "preview"),
        (motion_map, MOTION_MAP_SUFFIXES, "motion map"),
    )
    for out, suffixes, what in outputs:
        if out is not None:
            try:
                check_output_path(out, suffixes, f"--{what.replace(' ', '-')}")
            except (ValueError, FileNotFoundError) as exc:
                raise fail(str(exc)) from None
    if maps is not None and not maps.is_dir():
        raise fail(f"--maps {maps}: no such folder")
    if maps_dtype not in ("float16", "float32"):
        raise fail(f"--maps-dtype must be float16 or float32, got {maps_dtype!r}")

    clips = _clips_of(clips)
    several = len(clips) > 1
    failed = 0
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet or not err.is_terminal,
        transient=True,
    )
    with progress:
        task = progress.add_task("motion boxes", total=len(clips), visible=several)
        pairs = progress.add_task("frame pairs", total=None, visible=False)

        def pairs_done(done: int, total: int) -> None:
            progress.update(pairs, completed=done, total=total, visible=True)

        for clip in clips:
            progress.update(task, description=os.path.basename(clip))
            progress.reset(pairs, total=None, visible=False)
            try:
                source = _stdin_clip(limits.max_bytes) if clip == "-" else clip
                result = analyse_clip(
                    source,
                    params,
                    limits,
                    dev,
                    name="-" if clip == "-" else None,
                    batch_size=batch_size,
                    progress=pairs_done,
                    keep_flow=maps is not None,
                )
                work = result.clip.frames
                if preview is not None:
                    write_preview(
                        output_path(preview, clip, several),
                        work,
                        result.analysis.boxes,
                        fps=sampled_fps(result.record.fps, result.record.frame_indices),
                        fallback=result.analysis.fallback,
                    )
                if maps is not None:
                    _write_maps(maps, clip, result, maps_dtype)
                if motion_map is not None:
                    write_motion_map(
                        output_path(motion_map, clip, several),
                        work,
                        result.analysis.motion,
                        result.analysis.boxes,
                        fallback=result.analysis.fallback,
                    )
            except MofoError as exc:
                failed += 1
                err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            except (OSError, ValueError) as exc:
                failed += 1
                err.print(f"[bold red]error:[/] {escape(f'{clip}: {exc}')}", highlight=False)
            else:
                rec = result.record
                if json_out:
                    typer.echo(rec.to_json())
                else:
                    note = "  (no motion: centre fallback)" if rec.fallback else ""
                    typer.echo(
                        f"{rec.video}\t{rec.width}x{rec.height}\t{len(rec.frames)} frames"
                        f"\tclip_box={rec.clip_box}{note}"
                    )
            progress.advance(task)
    if failed:
        err.print(f"{failed} of {len(clips)} clips failed", highlight=False)
        raise typer.Exit(EXIT_CLIP_FAILED)


def _write_maps(folder: Path, clip: str, result, dtype: str) -> Path:
    """A clip's flow and motion maps as ``folder/STEM.npz`` (:mod:`mofo.shared.flow_files`)."""
    from mofo.shared.flow_files import write_flow_file

    record, work = result.record, result.clip
    height, width = work.frames.shape[1:3]
    meta = {
        "video": record.video,
        "params": record.params,
        "width": width,
        "height": height,
        "source_width": record.width,
        "source_height": record.height,
        "fps": record.fps,
    }
    stem = "stdin" if clip == "-" else Path(clip).stem
    return write_flow_file(
        folder / f"{stem}.npz",
        result.analysis.flow.cpu().numpy(),
        result.analysis.motion,
        record.frame_indices,
        work.partner_indices or record.frame_indices,
        meta,
        dtype,
    )


def _stdin_clip(max_bytes: int) -> bytes:
    """A clip's bytes from standard input (``mofo boxes -``), refused past ``--max-bytes``."""
    from mofo.shared.errors import FileTooLarge

    data = sys.stdin.buffer.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(f"-: standard input is over {max_bytes} bytes (--max-bytes)")
    return data


def _clips_of(paths: list[str]) -> list[str]:
    """The clips named: a folder stands for its video files, found as ``mofo cache build``
    finds them (recursively, by suffix, hidden ones left out, sorted); an empty one is a usage
    error (exit 2)."""
    from mofo.shared.sources import open_source

    if paths.count("-") > 1:
        raise fail("standard input ('-') can be named once")
    clips: list[str] = []
    for path in paths:
        if path == "-" or not Path(path).is_dir():
            clips.append(path)
            continue
        try:
            folder = open_source(Path(path))
        except MofoError as exc:
            raise fail(str(exc)) from None
        clips.extend(str(Path(path) / item.path) for item in folder.items)
    return clips


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [env MOFO_HOST].")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port; 0 picks a free one [env MOFO_PORT].")
    ] = None,
    data_root: Annotated[
        Path | None, typer.Option(help="Folder that path requests may read [env MOFO_DATA_ROOT].")
    ] = None,
    redis: Annotated[
        str | None, typer.Option(help="Redis URL for the box cache and jobs [env MOFO_REDIS_URL].")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda[:N] [env MOFO_DEVICE].")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the motion API (FastAPI + uvicorn). Other settings: MOFO_* variables (see README)."""
    import uvicorn

    settings = load_settings(
        host=host, port=port, data_root=data_root, redis_url=redis, device=device
    )
    from mofo.services.motion_api.app import create_app

    try:
        api = create_app(settings)
    except MofoError as exc:
        raise fail(str(exc)) from None
    uvicorn.run(api, host=settings.host, port=settings.port, log_level=log_level)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset into.")],
    clips: Annotated[int, typer.Option(help="Clips in all.")] = 200,
    size: Annotated[int, typer.Option(help="Frame side in pixels.")] = 64,
    frames: Annotated[int, typer.Option(help="Frames per clip.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes the same dataset.")] = 0,
    validation: Annotated[float, typer.Option(help="Share of clips held out.")] = 0.2,
) -> None:
    """Write a synthetic motion dataset with known boxes, in SSV2's layout (8 motion classes)."""
    from mofo.training.synth import write_dataset

    if size < 32 or frames < 2:
        raise fail(f"--size must be >= 32 and --frames >= 2, got {size}, {frames}")
    try:
        counts = write_dataset(out, clips, size, frames, seed, validation)
    except (FileExistsError, ValueError) as exc:
        raise fail(str(exc)) from None
    err.print(
        f"wrote {counts['train']} training and {counts['validation']} validation clips to {out}",
        highlight=False,
        markup=False,
    )


# The worker, cache and training commands live in their own modules.
app.command()(cli_cache.worker)
app.add_typer(cli_cache.cache_app, name="cache")
app.command()(cli_train.pretrain)
app.command()(cli_train.finetune)
app.command()(cli_train.evaluate)
