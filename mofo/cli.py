"""The ``mofo`` command line. Data goes to stdout, messages and progress to stderr; the exit code
is non-zero when any clip failed (the others still complete)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.completion import Shells, completion_init, install_callback, show_callback
from typer.core import TyperGroup

from mofo import cli_cache, cli_train
from mofo.cli_options import (
    _LIMITS,
    EXIT_CLIP_FAILED,
    Backend,
    BackendOpt,
    BatchSizeOpt,
    ClipsArg,
    DeviceOpt,
    FlowDtype,
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


class _MofoGroup(TyperGroup):
    """The root command: registers Typer's shell completion classes before Click answers a
    completion request (``_MOFO_COMPLETE=complete_bash``), as Typer does for the options it adds
    itself, which ``mofo`` replaces by its own (see :func:`main`)."""

    def main(self, *args, **kwargs):
        completion_init()
        return super().main(*args, **kwargs)


app = typer.Typer(
    cls=_MofoGroup,
    help="MOFO: motion boxes from TV-L1 motion boundaries.",
    no_args_is_help=True,
    # Typer's own completion options guess the shell from the parent processes, which fails
    # where there is none (a container, a script) and can guess wrong: ours name it.
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
    install_completion: Annotated[
        Shells | None,
        typer.Option(
            callback=install_callback,
            expose_value=False,
            is_eager=True,
            show_default=False,
            help="Install tab completion of mofo for this shell (in its start-up file).",
        ),
    ] = None,
    show_completion: Annotated[
        Shells | None,
        typer.Option(
            callback=show_callback,
            expose_value=False,
            is_eager=True,
            show_default=False,
            help="Print the tab completion script of mofo for this shell.",
        ),
    ] = None,
) -> None:
    """MOFO motion boxes, service, workers and training."""


@app.command()
def sample() -> None:
    """Print the path of the bundled sample clip."""
    typer.echo(str(sample_clip()))


@app.command()
def boxes(
    clips: ClipsArg,
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
        FlowDtype, typer.Option(help="float16 (half the size) or float32 (exact) for --maps.")
    ] = FlowDtype.float16,
    device: DeviceOpt = "auto",
    backend: BackendOpt = Backend.auto,
    quality: QualityOpt = Quality.balanced,
    short_side: ShortSideOpt = None,
    stride: StrideOpt = 1,
    fps: FpsOpt = None,
    num_frames: NumFramesOpt = None,
    motion_step: MotionStepOpt = 1,
    motion_step_s: MotionStepSOpt = None,
    stopping: StoppingOpt = Stopping.epsilon,
    batch_size: BatchSizeOpt = None,
    max_frames: MaxFramesOpt = _LIMITS.max_frames,
    max_duration: MaxDurationOpt = _LIMITS.max_duration_s,
    max_width: MaxWidthOpt = _LIMITS.max_width,
    max_height: MaxHeightOpt = _LIMITS.max_height,
    max_bytes: MaxBytesOpt = _LIMITS.max_bytes,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Find the motion boxes of one or more clips."""
    # Imported here so that `mofo --help` stays fast.
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

    clips = _clips_of(clips)
    flow_files = _flow_paths(maps, clips, "--maps") if maps is not None else {}
    several = len(clips) > 1

    def box(clip: str, pairs_done: _PairsDone) -> None:
        result = _analyse(clip, params, limits, dev, batch_size, pairs_done, maps is not None)
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
            _write_flow(flow_files[clip], result, maps_dtype)
        if motion_map is not None:
            write_motion_map(
                output_path(motion_map, clip, several),
                work,
                result.analysis.motion,
                result.analysis.boxes,
                fallback=result.analysis.fallback,
            )
        rec = result.record
        if json_out:
            typer.echo(rec.to_json())
        else:
            note = "  (no motion: centre fallback)" if rec.fallback else ""
            typer.echo(
                f"{rec.video}\t{rec.width}x{rec.height}\t{len(rec.frames)} frames"
                f"\tclip_box={rec.clip_box}{note}"
            )

    _each_clip(clips, box, "motion boxes", quiet)


@app.command()
def flow(
    clips: ClipsArg,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for the files, STEM.npz per clip (made if missing).",
            file_okay=False,
            show_default=False,
        ),
    ],
    dtype: Annotated[
        FlowDtype, typer.Option(help="float16 (half the size) or float32 (exact).")
    ] = FlowDtype.float16,
    device: DeviceOpt = "auto",
    backend: BackendOpt = Backend.auto,
    quality: QualityOpt = Quality.balanced,
    short_side: ShortSideOpt = None,
    stride: StrideOpt = 1,
    fps: FpsOpt = None,
    num_frames: NumFramesOpt = None,
    motion_step: MotionStepOpt = 1,
    motion_step_s: MotionStepSOpt = None,
    stopping: StoppingOpt = Stopping.epsilon,
    batch_size: BatchSizeOpt = None,
    max_frames: MaxFramesOpt = _LIMITS.max_frames,
    max_duration: MaxDurationOpt = _LIMITS.max_duration_s,
    max_width: MaxWidthOpt = _LIMITS.max_width,
    max_height: MaxHeightOpt = _LIMITS.max_height,
    max_bytes: MaxBytesOpt = _LIMITS.max_bytes,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress bar, and no list of the files written."),
    ] = False,
) -> None:
    """Write clips' optical flow and motion maps.

    One file per clip, OUT/STEM.npz in the format mofo.flow/1 (read it with
    mofo.read_flow_file): the flow of each kept frame to its motion partner and the frame's
    motion-boundary map, at the working size, as `mofo boxes` computes them.
    """
    sampling = sampling_options(short_side, stride, fps, num_frames, motion_step, motion_step_s)
    dev, params, limits = motion_settings(
        device,
        backend,
        stopping,
        sampling,
        (max_bytes, max_frames, max_duration, max_width, max_height),
        quality,
    )
    clips = _clips_of(clips)
    flow_files = _flow_paths(out, clips, "--out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"--out {out}: {exc.strerror or exc}") from None

    def write(clip: str, pairs_done: _PairsDone) -> None:
        result = _analyse(clip, params, limits, dev, batch_size, pairs_done, keep_flow=True)
        path = _write_flow(flow_files[clip], result, dtype)
        if not quiet:
            typer.echo(str(path))

    _each_clip(clips, write, "flow", quiet)


_PairsDone = Callable[[int, int], None]  # told (frame pairs done, in all) as a clip's flow goes


def _each_clip(
    clips: list[str], work: Callable[[str, _PairsDone], None], what: str, quiet: bool
) -> None:
    """Run ``work(clip, pairs_done)`` on each clip in turn under a progress display on stderr
    (a terminal's only; the frame pairs of the clip in hand, and a bar over the clips when there
    are several). A clip that fails gets one ``error:`` line and the others go on; the command
    exits 1 at the end if any failed."""
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
        task = progress.add_task(what, total=len(clips), visible=len(clips) > 1)
        pairs = progress.add_task("frame pairs", total=None, visible=False)

        def pairs_done(done: int, total: int) -> None:
            progress.update(pairs, completed=done, total=total, visible=True)

        for clip in clips:
            progress.update(task, description=os.path.basename(clip))
            progress.reset(pairs, total=None, visible=False)
            try:
                work(clip, pairs_done)
            except MofoError as exc:
                failed += 1
                err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            except (OSError, ValueError) as exc:
                failed += 1
                err.print(f"[bold red]error:[/] {escape(f'{clip}: {exc}')}", highlight=False)
            progress.advance(task)
    if failed:
        err.print(f"{failed} of {len(clips)} clips failed", highlight=False)
        raise typer.Exit(EXIT_CLIP_FAILED)


def _analyse(clip: str, params, limits, device, batch_size, progress, keep_flow: bool):
    """:func:`mofo.shared.pipeline.analyse_clip` of a clip named on the command line (``-``:
    standard input, named ``-`` in its record)."""
    from mofo.shared.pipeline import analyse_clip

    return analyse_clip(
        _stdin_clip(limits.max_bytes) if clip == "-" else clip,
        params,
        limits,
        device,
        name="-" if clip == "-" else None,
        batch_size=batch_size,
        progress=progress,
        keep_flow=keep_flow,
    )


def _flow_paths(folder: Path, clips: list[str], option: str) -> dict[str, Path]:
    """Where each clip's flow file goes: ``folder/STEM.npz`` (``stdin.npz`` for ``-``). Two clips
    of one stem (``a/x.mp4``, ``b/x.mp4``) are a usage error (exit 2) before any work, rather
    than one file silently replacing the other."""
    paths: dict[str, Path] = {}
    first: dict[Path, str] = {}
    for clip in clips:
        path = folder / f"{'stdin' if clip == '-' else Path(clip).stem}.npz"
        if path in first and first[path] != clip:
            raise fail(f"{option}: {first[path]} and {clip} would both be written to {path}")
        first.setdefault(path, clip)
        paths[clip] = path
    return paths


def _write_flow(path: Path, result, dtype: FlowDtype) -> Path:
    """A clip's flow and motion maps as one ``mofo.flow/1`` file (:mod:`mofo.shared.flow_files`)."""
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
    return write_flow_file(
        path,
        result.analysis.flow.cpu().numpy(),
        result.analysis.motion,
        record.frame_indices,
        work.partner_indices or record.frame_indices,
        meta,
        dtype.value,
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
app.command()(cli_train.export)
