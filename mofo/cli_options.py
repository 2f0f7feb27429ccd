"""What the ``mofo`` commands share: the error console and exit codes, the options of the
commands that compute boxes (``mofo boxes``, ``mofo flow``, ``mofo cache build``) and how they
become motion parameters, decode limits and settings."""

from __future__ import annotations

import dataclasses
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mofo.shared.errors import MofoError
from mofo.shared.params import CUDA_KERNELS, FLOW_BACKENDS, DecodeLimits, preset_params

err = Console(stderr=True, soft_wrap=True)  # one message, one line, whatever the width

EXIT_CLIP_FAILED = 1
EXIT_USAGE = 2
EXIT_INFRA = 3  # what the command needs is not there: Redis unreachable, the device missing


# "auto" and the flow backends (mofo.shared.params.FLOW_BACKENDS)
Backend = StrEnum("Backend", {name: name for name in ("auto", *FLOW_BACKENDS)})


class Stopping(StrEnum):
    epsilon = "epsilon"
    fixed = "fixed"


class Quality(StrEnum):
    fast = "fast"
    balanced = "balanced"
    paper = "paper"


class FlowDtype(StrEnum):
    """How flow files store their values (:data:`mofo.shared.flow_files.DTYPES`)."""

    float16 = "float16"
    float32 = "float32"


def output_path(template: Path, clip: str, several: bool) -> Path:
    """Where a clip's preview or strip goes: ``{stem}`` in the name is replaced by the clip's stem;
    with several clips and no ``{stem}``, ``-<stem>`` is added before the suffix."""
    stem = Path(clip).stem
    if "{stem}" in template.name:
        return template.with_name(template.name.replace("{stem}", stem))
    if several:
        return template.with_name(f"{template.stem}-{stem}{template.suffix}")
    return template


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


# Options shared by the commands that compute boxes (`boxes`, `flow`, `cache build`).
ClipsArg = Annotated[
    list[str],
    typer.Argument(
        help="Video files, folders of them (searched recursively), or - for standard input.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
BatchSizeOpt = Annotated[
    int | None, typer.Option(help="Frame pairs per flow batch (default 8 CPU, 16 CUDA).")
]
BackendOpt = Annotated[
    Backend, typer.Option(help="TV-L1 backend; auto = torch on CUDA, opencv on CPU.")
]
QualityOpt = Annotated[
    Quality,
    typer.Option(
        help="Speed/quality preset: working size, TV-L1 budget and region settings "
        "(paper: OpenCV's default TV-L1 at 224 px)."
    ),
]
ShortSideOpt = Annotated[
    int | None,
    typer.Option(help="Working size: short side in pixels (default: the preset's)."),
]
MotionStepOpt = Annotated[
    int, typer.Option(help="Measure each kept frame's motion to the frame N source frames on.")
]
MotionStepSOpt = Annotated[
    float | None,
    typer.Option(help="Motion step in seconds instead (the same motion at any frame rate)."),
]
StrideOpt = Annotated[int, typer.Option(help="Keep every N-th frame.")]
FpsOpt = Annotated[
    float | None, typer.Option(help="Keep frames nearest to this rate (overrides --stride).")
]
NumFramesOpt = Annotated[int | None, typer.Option(help="At most this many frames, spread evenly.")]
StoppingOpt = Annotated[
    Stopping, typer.Option(help="TV-L1 stopping: OpenCV's epsilon rule, or all iterations.")
]
MaxFramesOpt = Annotated[int, typer.Option(help="Refuse clips with more frames.")]
MaxDurationOpt = Annotated[float, typer.Option(help="Refuse clips longer (s).")]
MaxWidthOpt = Annotated[int, typer.Option(help="Refuse wider clips (px).")]
MaxHeightOpt = Annotated[int, typer.Option(help="Refuse taller clips (px).")]
MaxBytesOpt = Annotated[int, typer.Option(help="Refuse larger files (bytes).")]
_LIMITS = DecodeLimits()


def sampling_options(
    short_side: int | None,
    stride: int,
    fps: float | None,
    num_frames: int | None,
    motion_step: int,
    motion_step_s: float | None,
) -> dict:
    """The MotionParams fields the sampling options set, for :func:`motion_settings`."""
    return {
        "short_side": short_side,
        "stride": stride,
        "fps": fps,
        "num_frames": num_frames,
        "motion_step": motion_step,
        "motion_step_s": motion_step_s,
    }


def motion_settings(
    device: str,
    backend: Backend,
    stopping: Stopping,
    sampling: dict,
    limits: tuple[int, int, float, int, int],
    quality: Quality = Quality.balanced,
):
    """(device, params, limits) from the options, or a usage error (exit 2). ``sampling`` holds
    the MotionParams fields set by options (short_side, stride, fps, num_frames, motion step)."""
    from mofo.shared.pipeline import default_backend, resolve_device

    try:
        dev = resolve_device(device)
        chosen = default_backend(dev) if backend is Backend.auto else backend.value
        params = preset_params(quality.value, backend=chosen, stopping=stopping.value, **sampling)
        max_bytes, max_frames, max_duration, max_width, max_height = limits
        decode_limits = DecodeLimits(
            max_bytes=max_bytes,
            max_frames=max_frames,
            max_duration_s=max_duration,
            max_width=max_width,
            max_height=max_height,
        )
    except (MofoError, ValueError) as exc:
        raise fail(str(exc)) from None
    if chosen == "opencv" and stopping is Stopping.fixed:
        raise fail("--stopping fixed needs --backend torch (OpenCV only stops on epsilon)")
    params = dataclasses.replace(
        params, flow=dataclasses.replace(params.flow, cuda_kernel=tvl1_kernel())
    )
    return dev, params, decode_limits


def tvl1_kernel() -> str:
    """The TV-L1 kernel on CUDA of the flow a command computes itself: ``MOFO_TVL1_KERNEL``, the
    setting ``mofo serve`` and ``mofo worker`` read, checked as they check it (exit 2)."""
    name = os.environ.get("MOFO_TVL1_KERNEL", CUDA_KERNELS[0])
    if name not in CUDA_KERNELS:
        choices = " or ".join(f"'{k}'" for k in CUDA_KERNELS)
        raise fail(f"bad settings: tvl1_kernel: Input should be {choices}")
    return name


def load_settings(**overrides):
    """Settings from MOFO_* variables with the given options (None = not given) on top; bad
    values are a usage error (exit 2) naming each field."""
    from pydantic import ValidationError

    from mofo.shared.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise fail(f"bad settings: {problems}") from None
