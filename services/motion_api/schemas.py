"""Request and response schemas of the HTTP API (separate from the library's dataclasses, so the
API contract is stated and checked at the edge)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mofo.shared.params import FlowBackend, MotionParams, preset_params
from mofo.shared.record import SCHEMA

Box = Annotated[list[int], Field(min_length=4, max_length=4, description="[x1, y1, x2, y2]")]
PARAMS_HASH = r"^[0-9a-f]{16}$"
# The largest working short side a request may ask for: twice the "paper" preset's 224 px. The
# work a clip holds grows with its square (MOFO_MAX_WORK_PIXELS bounds it as a whole).
MAX_SHORT_SIDE = 448


class BoxOptions(BaseModel):
    """Query options of every clip endpoint: the settings that change the result."""

    model_config = ConfigDict(extra="forbid")

    quality: Literal["fast", "balanced", "paper"] = Field(
        "balanced",
        description="Speed/quality preset: working size, TV-L1 budget and region settings "
        "(paper: OpenCV's default TV-L1 at 224 px).",
    )
    short_side: int | None = Field(
        None,
        ge=32,
        le=MAX_SHORT_SIDE,
        description="Working size: short side (px); default the preset's.",
    )
    stride: int = Field(1, ge=1, le=1000, description="Keep every N-th frame.")
    fps: float | None = Field(
        None, gt=0, le=240, description="Keep frames nearest to this rate (overrides stride)."
    )
    num_frames: int | None = Field(None, ge=2, le=10_000, description="At most this many frames.")
    motion_step: int = Field(
        1, ge=1, le=1000, description="Each kept frame's motion is measured N source frames on."
    )
    motion_step_s: float | None = Field(
        None, gt=0, le=10, description="The motion step in seconds instead (any frame rate)."
    )
    backend: Literal["auto", FlowBackend] = Field(
        "auto", description="TV-L1 backend; auto = the server's (torch on GPU, opencv on CPU)."
    )
    stopping: Literal["epsilon", "fixed"] = Field(
        "epsilon", description="TV-L1 stopping: OpenCV's epsilon rule or all iterations (torch)."
    )

    def motion_params(self, default_backend: str, default_frames: int = 0) -> MotionParams:
        """The request's settings; ``default_frames`` (> 0) caps the frames boxed when the
        request asks for no sampling itself."""
        backend = default_backend if self.backend == "auto" else self.backend
        num_frames = self.num_frames
        if default_frames and self.stride == 1 and self.fps is None and num_frames is None:
            num_frames = max(2, default_frames)
        if backend == "opencv" and self.stopping == "fixed":
            raise ValueError("stopping=fixed needs backend=torch (OpenCV only stops on epsilon)")
        return preset_params(
            self.quality,
            short_side=self.short_side,
            stride=self.stride,
            fps=self.fps,
            num_frames=num_frames,
            motion_step=self.motion_step,
            motion_step_s=self.motion_step_s,
            backend=backend,
            stopping=self.stopping,
        )


class ComputeOptions(BoxOptions):
    refresh: bool = Field(False, description="Recompute even when the cache has the record.")


class LookupOptions(BoxOptions):
    params: str | None = Field(
        None, pattern=PARAMS_HASH, description="A record's params hash; overrides the options."
    )


class PreviewOptions(BoxOptions):
    format: Literal["gif", "mp4"] = Field("gif", description="Animated GIF or H.264 MP4.")


class PathRequest(BaseModel):
    """A clip named by its path under the server's data root."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096, examples=["clips/0001.mp4"])


class JobRequest(BaseModel):
    """Clips named by path under the server's data root, boxed in the background."""

    model_config = ConfigDict(extra="forbid")

    paths: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        min_length=1, examples=[["clips/0001.mp4", "clips/0002.mp4"]]
    )


class BoxRecordOut(BaseModel):
    """The box record (``mofo.box/2``): source pixels, x2/y2 exclusive; ``own`` says which
    frames found a box of their own, ``cuts`` which frames' motion pairs cross a shot boundary."""

    schema_: Literal["mofo.box/2"] = Field(SCHEMA, alias="schema")
    video: str
    params: str
    width: int
    height: int
    fps: float
    frame_indices: list[int]
    frames: list[Box | None]
    clip_box: Box
    fallback: bool
    own: list[bool]
    cuts: list[int]

    model_config = ConfigDict(populate_by_name=True)


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    finished = "finished"
    failed = "failed"
    cancelled = "cancelled"


class JobProgress(BaseModel):
    total: int = Field(description="Clips in the job.")
    done: int = Field(0, description="Clips boxed.")
    failed: int = Field(0, description="Clips that failed (each outcome says why).")
    pairs_done: int | None = Field(
        None, description="Frame pairs of the clip being boxed whose flow is done."
    )
    pairs_total: int | None = Field(
        None, description="Frame pairs of the clip being boxed (null until its flow starts)."
    )
    eta_s: float | None = Field(
        None, description="Seconds left, estimated from the work done so far (running jobs)."
    )


class ClipOutcome(BaseModel):
    video: str
    ok: bool
    record: BoxRecordOut | None = None
    error: str | None = None


class JobOut(BaseModel):
    id: str
    status: JobState
    status_url: str
    progress: JobProgress
    result: list[ClipOutcome] | None = None
    error: str | None = None
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    device: str
    backend: str
    flow_warmed: bool
    cache: Literal["memory", "redis"]
    cache_reachable: bool
    jobs: Literal["local", "rq"]
    detail: str | None = None


class ProblemOut(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
