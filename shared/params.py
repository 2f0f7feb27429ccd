"""Settings that change a motion result, and the hash that names them.

Every field of :class:`MotionParams` (and the nested :class:`FlowParams`) can change the boxes a
clip gets, so all of them, plus :data:`ALGORITHM_VERSION`, go into :func:`MotionParams.hash`.
Limits on input size (:class:`DecodeLimits`) only refuse clips and are not hashed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal, get_args

# Bump when the algorithm changes what it outputs for the same settings.
ALGORITHM_VERSION = 15

FlowBackend = Literal["opencv", "torch"]
FLOW_BACKENDS: tuple[str, ...] = get_args(FlowBackend)  # every place that names them reads these
Stopping = Literal["epsilon", "fixed"]
# Whether a pair whose exposure changed is measured again at one exposure (flow/exposure.py).
Exposure = Literal["off", "gain"]
# The torch TV-L1's inner loop on CUDA: hand-written Triton kernels or the torch.compile'd step.
CudaKernel = Literal["triton", "compiled"]
CUDA_KERNELS: tuple[str, ...] = get_args(CudaKernel)
# Fields that choose how a result is computed, not what it is: left out of MotionParams.hash.
NOT_HASHED = {"flow": ("cuda_kernel",)}


@dataclass(frozen=True)
class FlowParams:
    """TV-L1 settings; defaults are OpenCV's ``DualTVL1OpticalFlow`` defaults.

    ``stopping="epsilon"`` stops each pair like OpenCV does (per warp, once the squared update
    falls under ``epsilon² · area``); ``"fixed"`` always runs every iteration and never waits
    on the host, for graph capture on a GPU. The OpenCV backend only knows ``"epsilon"``.

    ``exposure`` (not an OpenCV setting; ``"off"`` by default, as OpenCV): TV-L1 reads any
    brightness change as motion, so with ``"gain"`` a pair whose exposure changed (measured along
    its flow) is measured again with its brighter frame scaled to the other
    (:mod:`mofo.shared.flow.exposure`); both backends see the same matched frames.

    ``cuda_kernel``: how the torch backend runs TV-L1's inner loop on CUDA, hand-written
    ``"triton"`` kernels or the ``"compiled"`` step (torch.compile); both compute the same
    iteration (to float rounding), so the choice is not hashed. The service and the workers set
    it from their ``tvl1_kernel`` setting (``MOFO_TVL1_KERNEL``); elsewhere it is ignored.
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    scales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    median_filtering: int = 5
    stopping: Stopping = "epsilon"
    exposure: Exposure = "off"
    cuda_kernel: CudaKernel = "triton"

    def __post_init__(self) -> None:
        if self.cuda_kernel not in CUDA_KERNELS:
            raise ValueError(
                f"cuda_kernel must be one of {', '.join(CUDA_KERNELS)}, got {self.cuda_kernel!r}"
            )
        if not 0.0 < self.scale_step < 1.0:
            raise ValueError(f"scale_step must be in (0, 1), got {self.scale_step}")
        for name in ("scales", "warps", "inner_iterations", "outer_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.median_filtering not in (0, 1, 3, 5):
            raise ValueError(f"median_filtering must be 0, 1, 3 or 5, got {self.median_filtering}")
        if self.stopping not in ("epsilon", "fixed"):
            raise ValueError(f"stopping must be 'epsilon' or 'fixed', got {self.stopping!r}")
        if self.exposure not in ("off", "gain"):
            raise ValueError(f"exposure must be 'off' or 'gain', got {self.exposure!r}")


@dataclass(frozen=True)
class MotionParams:
    """Everything that decides a clip's motion boxes.

    Sampling: every ``stride``-th decoded frame, or frames nearest to a target ``fps`` when set;
    at most ``num_frames`` of them (evenly spread) when set. Frames are resized so the short side
    is ``short_side`` pixels; boxes are mapped back to source pixels.

    Motion step: sampling picks the frames, never the flow pairs. Each kept frame's motion is the
    flow from it to the frame ``motion_step`` source frames later (or ``motion_step_s`` seconds
    later, at the clip's frame rate, when set), so a 60 fps and a 12 fps source can see
    comparable motion; the last frames of a clip, with nothing that far after them, look as far
    back instead. A pair whose two frames belong to different shots (:mod:`mofo.shared.cuts`, score
    over ``cut_threshold``) gets no box of its own.

    Regions: the motion-boundary map (eq. 1) is zeroed within ``border`` × short side of the
    frame edge (flow is unreliable where content enters or leaves), clamped at its own
    ``outlier_quantile`` (isolated TV-L1 spikes cannot set the threshold), averaged over
    ``temporal_window`` neighbouring pairs and smoothed with a Gaussian of ``sigma`` × short side;
    its per-frame median is taken as background (camera zoom and rotation leave a constant
    there); pixels above ``median + max(threshold_abs, threshold_rel · (max − median))`` form
    regions; the ``regions`` strongest regions (by summed motion) of at least ``min_region`` ×
    frame area, and at least ``region_ratio`` × the strongest's, give the frame's box.

    Tight boxes (``refine``, :mod:`mofo.shared.refine`): the boundary map peaks on a band each side
    of a mover's edge, so each region's box is shrunk to the pixels whose flow, less the
    camera's (a robust affine fit), reaches ``refine_fraction`` of the region's own level, its
    leading side pulled back by ``refine_lead`` × its motion; a region moving less than
    ``refine_min_motion`` × short side against the camera is dropped as camera motion, and so
    is one whose pixels the camera's motion explains as well as its own flow (their local
    correlation with the second frame warped back along the flow gains less than
    ``refine_evidence`` over the camera's motion: a drifting shadow, changing light,
    compression noise); ``refine_pixel_evidence`` then takes out of the box the moving pixels
    that do not gain that much themselves. A mover whose parts move at different speeds (an arm
    swinging from the shoulder) keeps its slow parts: pixels of the region's box that move at
    least ``refine_grow_fraction`` of the region's level and gain ``refine_grow_evidence``
    join the box, whose grown sides then come back by ``refine_grow_margin`` × short side (the
    evidence, a windowed correlation, reaches that far past what moves; ``None``: no growth).
    Growth may leave the region's box by up to ``refine_grow_reach`` × short side, through such
    pixels or moving flat ones joined to the box (the rest of a slow or flat mover whose
    boundary the region's threshold cut short); only pixels that gain set the grown sides.
    Growth never takes pixels moving less than ``refine_grow_noise`` × the frame's median
    residual motion (the flow's own noise once the camera is taken out: compression blocks,
    flicker): in a clean clip that floor is near zero and a mover's slowest parts join, in a
    noisy one only what moves clearly above the noise does (``None``: no floor).
    The region test correlates over squares of 2 · round(0.03 × short side) + 1 pixels; the
    pixel-level cuts (``refine_pixel_evidence``, growth) over ``refine_pixel_window`` × short
    side (a smaller window reaches less far past a mover's edge), and a box's sides are set by
    the pixels that bear their motion out, not by flat ones beside them that cannot tell. A
    pixel tells only where the first frame's local standard deviation reaches
    ``refine_texture`` grey levels: below that, compression blocks (which stay put while the
    content moves) and the soft edge of a shadow decide the correlation, not the content.
    Each region is refined at ``refine_subpixel`` samples a working pixel (its residual flow
    read bilinearly), so a box's sides fall where the flow crosses the cut, to a quarter pixel
    at 4, rather than on whole working pixels (1).
    The camera's affine is fitted with each pixel
    weighted by how well the first frame pins its flow down (``camera_confidence``: the square
    root of the structure tensor's smaller eigenvalue over this many grey levels, capped at 1;
    flat sky and walls get TV-L1's guess, not a measurement).

    A second look (``second_threshold_rel``): a frame with fewer than ``regions`` regions kept
    takes more from the regions above ``median + max(threshold_abs, second_threshold_rel ·
    (max − median))`` (a slow mover beside a fast one stays under a threshold relative to the
    frame's peak) that pass the same tests with ``second_evidence`` in place of
    ``refine_evidence`` (and have the texture to be tested at all), overlap no region kept and
    are not strips (at most 4:1): long thin regions at that level are TV-L1's artefacts along
    edges and the frame's border. It needs the evidence test (``refine_evidence`` set).
    """

    short_side: int = 128  # the "balanced" preset (see QUALITY_PRESETS)
    stride: int = 1
    fps: float | None = None
    num_frames: int | None = None
    motion_step: int = 1
    motion_step_s: float | None = None
    backend: FlowBackend = "opencv"
    flow: FlowParams = field(default_factory=lambda: FlowParams(warps=3, exposure="gain"))
    temporal_window: int = 1
    # Region defaults chosen by bench/tune_regions.py (BENCHMARKS.md §2).
    sigma: float = 0.005
    threshold_rel: float = 0.3
    threshold_abs: float = 0.05
    second_threshold_rel: float | None = 0.1  # None: no second look
    second_evidence: float = 0.08
    regions: int = 2
    min_region: float = 0.002
    region_ratio: float = 0.0
    border: float = 0.05
    outlier_quantile: float = 0.99
    refine: bool = True
    refine_fraction: float = 0.5
    refine_lead: float = 1.0
    refine_min_motion: float = 0.004
    refine_evidence: float | None = 0.05  # None: no test against the frames
    refine_pixel_evidence: float | None = 0.05  # None: the region's moving pixels all count
    refine_grow_evidence: float | None = 0.05  # None: no growth by evidence
    refine_grow_fraction: float = 0.05
    refine_grow_noise: float | None = 4.0  # None: growth has no noise floor
    refine_grow_margin: float = 0.02
    refine_grow_reach: float = 0.15
    refine_pixel_window: float = 0.02
    refine_texture: float = 5.0
    refine_subpixel: int = 4
    camera_confidence: float | None = 2.0  # None: the camera fitted on every pixel alike
    cut_threshold: float | None = 0.1  # None: no cut detection
    fallback_size: float = 0.5

    def __post_init__(self) -> None:
        if self.short_side < 32:
            raise ValueError(f"short_side must be >= 32, got {self.short_side}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.num_frames is not None and self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        if self.motion_step < 1:
            raise ValueError(f"motion_step must be >= 1, got {self.motion_step}")
        if self.motion_step_s is not None and not 0 < self.motion_step_s <= 10:
            raise ValueError(f"motion_step_s must be in (0, 10] seconds, got {self.motion_step_s}")
        if self.backend not in FLOW_BACKENDS:
            raise ValueError(
                f"backend must be one of {', '.join(FLOW_BACKENDS)}, got {self.backend!r}"
            )
        if self.temporal_window < 1 or self.temporal_window % 2 == 0:
            raise ValueError(f"temporal_window must be odd and >= 1, got {self.temporal_window}")
        if self.regions < 1:
            raise ValueError(f"regions must be >= 1, got {self.regions}")
        if not 0.0 < self.refine_fraction < 1.0:
            raise ValueError(f"refine_fraction must be in (0, 1), got {self.refine_fraction}")
        if self.refine_evidence is not None and not -1.0 <= self.refine_evidence <= 2.0:
            raise ValueError(
                f"refine_evidence must be in [-1, 2] or None, got {self.refine_evidence}"
            )
        pixel = self.refine_pixel_evidence
        if pixel is not None and not -1.0 <= pixel <= 2.0:
            raise ValueError(f"refine_pixel_evidence must be in [-1, 2] or None, got {pixel}")
        grow = self.refine_grow_evidence
        if grow is not None and not -1.0 <= grow <= 2.0:
            raise ValueError(f"refine_grow_evidence must be in [-1, 2] or None, got {grow}")
        if not 0.0 <= self.refine_grow_fraction < 1.0:
            raise ValueError(
                f"refine_grow_fraction must be in [0, 1), got {self.refine_grow_fraction}"
            )
        if not 0.0 <= self.refine_grow_margin <= 0.25:
            raise ValueError(
                f"refine_grow_margin must be in [0, 0.25], got {self.refine_grow_margin}"
            )
        noise = self.refine_grow_noise
        if noise is not None and not 0.0 < noise <= 100.0:
            raise ValueError(f"refine_grow_noise must be in (0, 100] or None, got {noise}")
        if not 0.0 <= self.refine_grow_reach <= 0.5:
            raise ValueError(f"refine_grow_reach must be in [0, 0.5], got {self.refine_grow_reach}")
        if not 0.0 < self.refine_pixel_window <= 0.25:
            raise ValueError(
                f"refine_pixel_window must be in (0, 0.25], got {self.refine_pixel_window}"
            )
        if not 1 <= self.refine_subpixel <= 8:
            raise ValueError(f"refine_subpixel must be in [1, 8], got {self.refine_subpixel}")
        if not 0.0 <= self.refine_texture <= 64.0:
            raise ValueError(f"refine_texture must be in [0, 64], got {self.refine_texture}")
        second = self.second_threshold_rel
        if second is not None and not 0.0 < second < self.threshold_rel:
            raise ValueError(
                f"second_threshold_rel must be in (0, threshold_rel = {self.threshold_rel}) or "
                f"None, got {second}"
            )
        if not -1.0 <= self.second_evidence <= 2.0:
            raise ValueError(f"second_evidence must be in [-1, 2], got {self.second_evidence}")
        if self.camera_confidence is not None and self.camera_confidence <= 0:
            raise ValueError(f"camera_confidence must be > 0 or None, got {self.camera_confidence}")
        if self.cut_threshold is not None and self.cut_threshold <= 0:
            raise ValueError(f"cut_threshold must be > 0 or None, got {self.cut_threshold}")
        if not 0.0 < self.fallback_size <= 1.0:
            raise ValueError(f"fallback_size must be in (0, 1], got {self.fallback_size}")

    def step_frames(self, fps: float) -> int:
        """The motion step in source frames for a clip at ``fps`` (25 when unknown)."""
        if self.motion_step_s is None:
            return self.motion_step
        return max(1, round(self.motion_step_s * (fps if fps > 0 else 25.0)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MotionParams:
        """Inverse of :meth:`to_dict` (how jobs carry settings to workers)."""
        fields = dict(data)
        if isinstance(fields.get("flow"), dict):
            fields["flow"] = FlowParams(**fields["flow"])
        return cls(**fields)

    def hash(self) -> str:
        """Short stable hash of every setting that changes the result, and the algorithm version."""
        fields = self.to_dict()
        for section, names in NOT_HASHED.items():
            fields[section] = {k: v for k, v in fields[section].items() if k not in names}
        payload = json.dumps(
            {"algorithm": ALGORITHM_VERSION, **fields}, sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DecodeLimits:
    """Hard limits checked from the container header before any frame is decoded.

    The work limits bound what motion analysis holds, whatever the clip's size on disk:
    ``max_work_pixels`` caps working-size pixels × frames held (kept frames and their motion
    partners; about 100 bytes each through flow and regions), ``max_work_side`` the working
    long side (a 3840×2 clip at short side 128 would be 245760 px long).
    """

    max_bytes: int = 2 * 1024**3
    max_frames: int = 100_000
    max_duration_s: float = 3 * 3600.0
    max_width: int = 7680
    max_height: int = 4320
    max_work_pixels: int = 64_000_000
    max_work_side: int = 1024


Quality = Literal["fast", "balanced", "paper"]

# Named trade-offs of speed for box quality, as the fields that differ from MotionParams'
# defaults (which are "balanced"), chosen on the frontier's tuning seeds (bench/frontier.py,
# BENCHMARKS.md): "balanced" 128 px and 3 TV-L1 warps, each pair whose exposure changed measured
# again at one exposure, boxes refined to a quarter pixel; "fast" 112 px, also stops each warp
# at twice OpenCV's epsilon and keeps whole-pixel sides;
# "paper" is OpenCV's default TV-L1 at 224 px, as the paper measured flow (no exposure matching).
QUALITY_PRESETS: dict[str, dict] = {
    "fast": {
        "short_side": 112,
        "flow": FlowParams(warps=3, epsilon=0.02, exposure="gain"),
        "refine_subpixel": 1,
    },
    "balanced": {},
    "paper": {"short_side": 224, "flow": FlowParams()},
}


def preset_params(
    quality: Quality = "balanced",
    *,
    short_side: int | None = None,
    stopping: Stopping | None = None,
    **options,
) -> MotionParams:
    """MotionParams of a named quality preset with what a user set on top (sampling, motion
    step, backend, working size, stopping); an unknown preset or a bad value is a ValueError."""
    if quality not in QUALITY_PRESETS:
        raise ValueError(f"quality must be one of {', '.join(QUALITY_PRESETS)}, got {quality!r}")
    fields = dict(QUALITY_PRESETS[quality])
    if short_side is not None:
        fields["short_side"] = short_side
    if stopping is not None:
        flow = fields.get("flow", MotionParams().flow)
        fields["flow"] = dataclasses.replace(flow, stopping=stopping)
    return MotionParams(**{**fields, **options})
