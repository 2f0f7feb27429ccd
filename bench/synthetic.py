"""Synthetic clips with exact ground-truth motion boxes, for judging box quality.

A clip is a camera looking at a textured world: a natural-image background (scikit-image data),
1–3 static *props* (textured patches that belong to the scene) and 1–2 textured *movers*
(elliptical or rounded patches cut from another image) that travel at 1.5–6 px/frame, turn and
spin. Each frame composites the movers at their world poses, then warps the world into the frame
with the camera's affine (static, pan, zoom or shaky hand-held), so movers move with the camera
plus their own motion while props move with the camera only; mild sensor noise is added last.

The ground truth of a frame is the union box of the movers' visible pixels (their masks warped by
the same affines), which is what a motion box should find: props and background stay out of it.
Geometry, textures and noise draw from separate seeded generators, so ``flat=True`` renders the
same geometry in flat colours (movers red / green, props blue, black background, no noise) for
pixel checks in tests.

:data:`SCENARIOS` are the original 10-frame clips. :data:`EXTENDED` adds longer (64–128 frame),
harder clips, each mixing a camera kind with some of these factors (all off by default, so the
original scenarios render exactly as before):

* ``mover_kind="cutout"``: movers are real objects cut from photographs (a coin thresholded out
  of ``coins``, the rocket out of its night sky, the ``horse`` silhouette filled with a photo
  texture) instead of ellipses;
* ``nonrigid``: the first mover has two parts moving differently, either a hand carrying an
  object that it lets go of partway (``"carry"``) or an arm swinging about its shoulder, with a
  static torso prop that must stay out of the box (``"arm"``); its box is the union of its parts;
* ``blur``: motion blur, each frame the mean of sub-frame renders over the shutter time; the
  ground truth is then the box of the pixels the movers cover more than half of that time;
* ``lighting``: a global brightness/contrast ramp, an exposure flicker, or a soft shadow that
  drifts across the frame (none of which is motion to box);
* ``crf``: an H.264 round trip (PyAV, libx264 at that CRF) after the noise, as in real footage;
* ``cut_at``: a scene cut: from that fraction of the clip on, a second shot with another
  background, props, movers and camera path; :attr:`SyntheticClip.cuts` lists the last frame of
  the first shot, and each frame's ground truth comes from its own shot.

``flat=True`` keeps geometry and blur but leaves out lighting and compression.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import skimage.data

from mofo.shared.record import union_box
from mofo.shared.render import encode_mp4

CameraKind = Literal["static", "pan", "zoom", "shaky"]
MoverKind = Literal["shape", "cutout"]
Nonrigid = Literal["carry", "arm"]
Lighting = Literal["ramp", "flicker", "shadow"]
Box = list[int]  # [x1, y1, x2, y2] working-size pixels, x2/y2 exclusive

BACKGROUND_IMAGES = ("coffee", "rocket", "chelsea", "astronaut")
PATCH_IMAGES = ("brick", "grass", "gravel", "astronaut", "coffee", "chelsea", "rocket")
MIN_SPEED, MAX_SPEED = 1.5, 6.0  # mover speed in world px/frame
FLAT_MOVER_COLOURS = ((255.0, 0.0, 0.0), (0.0, 255.0, 0.0))
FLAT_PROP_COLOUR = (0.0, 0.0, 255.0)
CUTOUTS = ("horse", "coin", "rocket")
CUTOUT_SCALE = {"horse": 1.3, "coin": 0.9, "rocket": 1.8}  # larger half side / drawn mover half
ZOOM_LIMITS = (0.5, 2.0)  # a zoom that reaches either scale turns back
BLUR_SAMPLES = 9  # sub-frame renders averaged per blurred frame
SKIN_CROP = (slice(115, 140), slice(183, 201))  # a cheek in skimage.data.astronaut(), for hands


@dataclass(frozen=True)
class Scenario:
    """One kind of clip: camera motion, movers and static props, size, noise and the harder
    factors of the extended suite (see the module docstring; all off by default)."""

    name: str
    camera: CameraKind
    movers: int
    frames: int = 10
    height: int = 224
    width: int = 298
    min_props: int = 1
    max_props: int = 3
    noise: float = 1.5  # sensor noise std in grey levels
    mover_half: tuple[float, float] = (14.0, 30.0)  # range of a mover's half width / height
    mover_kind: MoverKind = "shape"
    nonrigid: Nonrigid | None = None  # the first mover's two-part motion
    blur: float = 0.0  # shutter time in frame intervals (0: sharp frames)
    lighting: Lighting | None = None
    crf: int | None = None  # H.264 round trip at this constant rate factor
    cut_at: float | None = None  # scene cut at this fraction of the clip

    def __post_init__(self) -> None:
        if self.camera not in ("static", "pan", "zoom", "shaky"):
            raise ValueError(f"unknown camera {self.camera!r}")
        if self.movers not in (1, 2):
            raise ValueError(f"movers must be 1 or 2, got {self.movers}")
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2, got {self.frames}")
        if not 0 <= self.min_props <= self.max_props:
            raise ValueError(f"bad prop range {self.min_props}..{self.max_props}")
        if self.mover_kind not in ("shape", "cutout"):
            raise ValueError(f"unknown mover kind {self.mover_kind!r}")
        if self.nonrigid not in (None, "carry", "arm"):
            raise ValueError(f"unknown nonrigid motion {self.nonrigid!r}")
        if not 0.0 <= self.blur <= 2.0:
            raise ValueError(f"blur must be in [0, 2] frame intervals, got {self.blur}")
        if self.lighting not in (None, "ramp", "flicker", "shadow"):
            raise ValueError(f"unknown lighting {self.lighting!r}")
        if self.crf is not None and not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {self.crf}")
        if self.cut_at is not None and not 2 <= self.cut_frame <= self.frames - 2:
            raise ValueError(
                f"cut_at={self.cut_at} leaves a shot under 2 frames in a {self.frames}-frame clip"
            )

    @property
    def cut_frame(self) -> int | None:
        """First frame of the second shot, or None without a cut."""
        return None if self.cut_at is None else round(self.cut_at * self.frames)


SCENARIOS: tuple[Scenario, ...] = tuple(
    Scenario(f"{camera}-{movers}mover", camera, movers)
    for camera in ("static", "pan", "zoom", "shaky")
    for movers in (1, 2)
)

EXTENDED: tuple[Scenario, ...] = (
    Scenario(
        "static-hand-object-shadow",
        "static",
        1,
        64,
        nonrigid="carry",
        mover_kind="cutout",
        lighting="shadow",
    ),
    Scenario("static-arm-flicker", "static", 1, 64, nonrigid="arm", lighting="flicker"),
    Scenario("static-2cutout-crf30-cut", "static", 2, 96, mover_kind="cutout", crf=30, cut_at=0.5),
    Scenario("pan-cutout-blur", "pan", 1, 64, mover_kind="cutout", blur=1.0),
    Scenario("pan-hand-object-crf28", "pan", 1, 64, nonrigid="carry", crf=28),
    Scenario(
        "pan-2cutout-ramp-cut", "pan", 2, 128, mover_kind="cutout", lighting="ramp", cut_at=0.6
    ),
    Scenario("zoom-2mover-crf30-ramp", "zoom", 2, 64, crf=30, lighting="ramp"),
    Scenario("zoom-cutout-blur", "zoom", 1, 64, mover_kind="cutout", blur=0.8),
    Scenario("zoom-arm-shadow", "zoom", 1, 64, nonrigid="arm", lighting="shadow"),
    Scenario("shaky-2cutout-crf32-cut", "shaky", 2, 96, mover_kind="cutout", crf=32, cut_at=0.5),
    Scenario("shaky-hand-object-blur", "shaky", 1, 64, nonrigid="carry", blur=1.0),
    Scenario(
        "shaky-cutout-flicker-crf32",
        "shaky",
        1,
        64,
        mover_kind="cutout",
        lighting="flicker",
        crf=32,
    ),
)

ALL: tuple[Scenario, ...] = SCENARIOS + EXTENDED


@dataclass
class SyntheticClip:
    """Rendered frames and their exact ground truth.

    ``boxes[t]`` is the union box of the movers visible in frame ``t`` (None when none is);
    ``mover_boxes[t][m]`` (a two-part mover's is the union of its parts) and ``prop_boxes[t][p]``
    are the per-object boxes (props unoccluded); ``cameras[t]`` is the affine from the world of
    frame ``t``'s shot to the frame. ``cuts`` lists each ``t`` whose frames ``t`` and ``t + 1``
    belong to different shots (empty without a scene cut).
    """

    scenario: Scenario
    seed: int
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    boxes: list[Box | None]
    mover_boxes: list[list[Box | None]]
    prop_boxes: list[list[Box | None]]
    cameras: np.ndarray  # (T, 2, 3) float64
    cuts: list[int] = field(default_factory=list)


@dataclass
class _Patch:
    """A textured shape on its own square canvas: premultiplied RGB and alpha in [0, 1]."""

    rgb: np.ndarray  # (S, S, 3) float32, premultiplied by alpha
    alpha: np.ndarray  # (S, S) float32
    radius: float  # half of the shape's larger side, for spacing


@dataclass
class _Part:
    """A rigid patch and its pose per frame; a mover is one part, or two for non-rigid motion."""

    patch: _Patch
    positions: np.ndarray  # (T, 2) world x, y of the patch centre
    angles: np.ndarray  # (T,) own rotation in degrees

    def to_world(self, t: int) -> np.ndarray:
        return _patch_to_world(self.patch, self.positions[t], float(self.angles[t]))

    def to_world_at(self, time: float) -> np.ndarray:
        """The pose at a fractional frame time, linear between (and beyond) frames."""
        return _patch_to_world(
            self.patch, _lerp(self.positions, time), float(_lerp(self.angles, time))
        )


_Mover = list[_Part]


# --------------------------------------------------------------------------- images and shapes


@functools.lru_cache(maxsize=16)
def _image(name: str) -> np.ndarray:
    """A scikit-image sample as float32 RGB; grey images stay single-channel (H, W, 1)."""
    img = getattr(skimage.data, name)().astype(np.float32)
    return img[..., None] if img.ndim == 2 else img[..., :3]


def _texture(
    name: str,
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    min_crop: float = 0.35,
    contrast: float | None = None,
) -> np.ndarray:
    """A random crop of ``name`` resized to (height, width), colour-jittered, float32 RGB.

    ``contrast`` sets the grey-level std of the result (object patches need visible texture);
    None keeps the image's own.
    """
    src = _image(name)
    sh, sw = src.shape[:2]
    aspect = width / height
    crop_h = min(sh, sw / aspect) * rng.uniform(min_crop, 1.0)
    crop_w = crop_h * aspect
    y0 = rng.uniform(0, sh - crop_h)
    x0 = rng.uniform(0, sw - crop_w)
    crop = src[int(y0) : int(y0 + crop_h), int(x0) : int(x0 + crop_w)]
    out = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    if out.ndim == 2:
        out = out[..., None]
    if out.shape[2] == 1:  # colourise grey textures with a random tint
        tint = rng.uniform(0.4, 1.1, size=3).astype(np.float32)
        out = out * tint + rng.uniform(0, 60, size=3).astype(np.float32)
    else:
        out = out * rng.uniform(0.8, 1.2, size=3).astype(np.float32) + rng.uniform(-20, 20)
    if contrast is not None:
        mean = out.mean(axis=(0, 1), keepdims=True)
        out = (out - mean) * (contrast / max(float(out.std()), 1.0)) + mean
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(np.clip(out, 0, 255), dtype=np.float32)


def _shape_alpha(half_w: float, half_h: float, kind: str, size: int) -> np.ndarray:
    """Anti-aliased alpha of an ellipse or rounded rectangle centred on a size × size canvas."""
    ss = 4  # supersampling
    canvas = np.zeros((size * ss, size * ss), np.uint8)
    cx = cy = size * ss / 2
    hw, hh = half_w * ss, half_h * ss
    if kind == "ellipse":
        cv2.ellipse(canvas, (round(cx), round(cy)), (round(hw), round(hh)), 0, 0, 360, 255, -1)
    else:
        r = round(min(hw, hh) * 0.35)
        x1, y1, x2, y2 = round(cx - hw), round(cy - hh), round(cx + hw), round(cy + hh)
        cv2.rectangle(canvas, (x1 + r, y1), (x2 - r, y2), 255, -1)
        cv2.rectangle(canvas, (x1, y1 + r), (x2, y2 - r), 255, -1)
        for px, py in ((x1 + r, y1 + r), (x2 - r, y1 + r), (x1 + r, y2 - r), (x2 - r, y2 - r)):
            cv2.circle(canvas, (px, py), r, 255, -1)
    small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def _make_patch(
    half_w: float,
    half_h: float,
    kind: str,
    texture: str | None,
    flat_colour: tuple[float, float, float],
    rng: np.random.Generator,
) -> _Patch:
    """A shape filled with a texture crop (or a flat colour when ``texture`` is None)."""
    size = math.ceil(2 * math.hypot(half_w, half_h)) + 6  # room to rotate
    alpha = _shape_alpha(half_w, half_h, kind, size)
    if texture is None:
        rgb = np.broadcast_to(np.array(flat_colour, np.float32), (size, size, 3))
    else:
        rgb = _texture(texture, size, size, rng, contrast=rng.uniform(35, 55))
    return _Patch(rgb=rgb * alpha[..., None], alpha=alpha, radius=max(half_w, half_h))


def _fill_rows(mask: np.ndarray) -> np.ndarray:
    """Each row of ``mask`` set between its first and last set pixel (closes dents and holes)."""
    out = np.zeros_like(mask)
    for y in np.nonzero(mask.any(axis=1))[0]:
        xs = np.nonzero(mask[y])[0]
        out[y, xs[0] : xs[-1] + 1] = True
    return out


def _tight(rgb: np.ndarray | None, mask: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Crop an object's RGB (or None) and mask to the mask's box; the alpha is float32."""
    ys, xs = np.nonzero(mask)
    rows, cols = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
    crop = None if rgb is None else np.ascontiguousarray(rgb[rows, cols], dtype=np.float32)
    return crop, mask[rows, cols].astype(np.float32)


def _coins() -> list[tuple[np.ndarray | None, np.ndarray]]:
    """Whole coins of ``skimage.data.coins()``: a local threshold, then each round blob's hull."""
    grey = skimage.data.coins()
    mask = cv2.adaptiveThreshold(
        grey, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 101, -10
    )
    mask = cv2.morphologyEx(
        mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    )
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    coins = []
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        inside = x > 1 and y > 1 and x + w < grey.shape[1] - 1 and y + h < grey.shape[0] - 1
        if area < 700 or not inside:
            continue
        hull = np.zeros(grey.shape, np.uint8)
        cv2.fillConvexPoly(
            hull, cv2.convexHull(cv2.findNonZero((labels == label).astype(np.uint8))), 1
        )
        if hull.sum() > 0.88 * math.pi / 4 * max(w, h) ** 2:  # round: a whole coin, not a part
            coins.append(_tight(rgb, hull > 0))
    return coins


def _rocket() -> tuple[np.ndarray | None, np.ndarray]:
    """The rocket of ``skimage.data.rocket()`` against its night sky: the bright blob, mirrored
    about the rocket's axis (its nose is half in shade) and filled row by row."""
    rgb = skimage.data.rocket()[40:335, 260:360]  # the rocket and its launch tower
    bright = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) > 90).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(bright)
    body = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    axis = 62  # the rocket's centre column in this crop
    xs = np.arange(body.shape[1])
    mirrored = np.zeros_like(body)
    valid = (2 * axis - xs >= 0) & (2 * axis - xs < body.shape[1])
    mirrored[:, valid] = body[:, (2 * axis - xs)[valid]]
    return _tight(rgb, _fill_rows(body | mirrored))


@functools.lru_cache(maxsize=4)
def _cutout_objects(name: str) -> tuple[tuple[np.ndarray | None, np.ndarray], ...]:
    """Real objects cut out of scikit-image photos, as (RGB float32 or None, alpha float32)
    tight crops; None RGB is a bare silhouette (the horse), to be filled with a texture."""
    if name == "horse":
        return (_tight(None, ~skimage.data.horse()),)  # the horse is False on True
    if name == "coin":
        return tuple(_coins())
    if name == "rocket":
        return (_rocket(),)
    raise ValueError(f"unknown cut-out {name!r}")


def _fill(
    texture: str | None,
    size: int,
    flat_colour: tuple[float, float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """A size × size fill: flat colour (None), skin (``"skin"``) or a textured crop."""
    if texture is None:
        return np.broadcast_to(np.array(flat_colour, np.float32), (size, size, 3))
    if texture == "skin":
        skin = _image("astronaut")[SKIN_CROP]
        out = cv2.resize(skin, (size, size), interpolation=cv2.INTER_LINEAR)
        tone = rng.uniform(0.55, 1.05) * rng.uniform(0.95, 1.05, size=3)  # darker or lighter skin
        out = out * tone.astype(np.float32)
        return np.clip(out, 0, 255).astype(np.float32)
    return _texture(texture, size, size, rng, contrast=rng.uniform(35, 55))


def _make_cutout_patch(
    name: str,
    index: int,
    radius: float,
    flip: bool,
    texture: str | None,
    flat_colour: tuple[float, float, float],
    rng: np.random.Generator,
) -> _Patch:
    """Cut-out ``index`` of ``name`` scaled so its larger half side is ``radius``: its own photo
    pixels (colour-jittered), a texture fill for a bare silhouette, or a flat colour when
    ``texture`` is None."""
    rgb_src, alpha_src = _cutout_objects(name)[index]
    scale = 2 * radius / max(alpha_src.shape)
    w = max(2, round(alpha_src.shape[1] * scale))
    h = max(2, round(alpha_src.shape[0] * scale))
    size = math.ceil(math.hypot(w, h)) + 6  # room to rotate
    x0, y0 = (size - w) // 2, (size - h) // 2
    alpha = np.zeros((size, size), np.float32)
    alpha[y0 : y0 + h, x0 : x0 + w] = cv2.resize(alpha_src, (w, h), interpolation=cv2.INTER_AREA)
    if texture is None or rgb_src is None:
        rgb = np.array(_fill(texture, size, flat_colour, rng))
    else:
        rgb = np.zeros((size, size, 3), np.float32)
        photo = cv2.resize(rgb_src, (w, h), interpolation=cv2.INTER_AREA)
        jitter = rng.uniform(0.75, 1.15) * rng.uniform(0.92, 1.08, size=3)  # exposure, tint
        rgb[y0 : y0 + h, x0 : x0 + w] = np.clip(photo * jitter.astype(np.float32), 0, 255)
    if flip:
        alpha, rgb = alpha[:, ::-1], rgb[:, ::-1]
    alpha = np.ascontiguousarray(alpha)
    return _Patch(rgb=np.ascontiguousarray(rgb * alpha[..., None]), alpha=alpha, radius=radius)


def _make_hand_patch(
    half_w: float,
    half_h: float,
    skin: bool,
    flat_colour: tuple[float, float, float],
    rng: np.random.Generator,
) -> _Patch:
    """A mitten-shaped hand: a rounded palm with a thumb, skin-textured (or a flat colour)."""
    size = math.ceil(2 * math.hypot(half_w * 1.4, half_h)) + 6
    palm = _shape_alpha(half_w, half_h, "rounded", size)
    ss = 4
    thumb = np.zeros((size * ss, size * ss), np.uint8)
    centre = (round((size / 2 + 0.95 * half_w) * ss), round((size / 2 + 0.1 * half_h) * ss))
    axes = (round(0.35 * half_w * ss), round(0.6 * half_h * ss))
    cv2.ellipse(thumb, centre, axes, -25, 0, 360, 255, -1)
    thumb = cv2.resize(thumb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    alpha = np.maximum(palm, thumb)
    rgb = _fill("skin" if skin else None, size, flat_colour, rng)
    return _Patch(rgb=rgb * alpha[..., None], alpha=alpha, radius=max(1.4 * half_w, half_h))


# --------------------------------------------------------------------------- camera


def _camera_path(
    kind: CameraKind, frames: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame camera offset (world px, from the world centre), zoom and roll (degrees)."""
    t = np.arange(frames, dtype=np.float64)
    offsets = np.zeros((frames, 2))
    scales = np.ones(frames)
    angles = np.zeros(frames)
    if kind == "pan":
        heading = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(2.0, 4.0)
        offsets = np.outer(t, [math.cos(heading), math.sin(heading)]) * speed
    elif kind == "zoom":
        rate = rng.uniform(0.015, 0.03) * rng.choice([-1.0, 1.0])
        scales = _fold_scales((1.0 + rate) ** t, *ZOOM_LIMITS)
        drift = rng.uniform(-1.0, 1.0, size=2)
        offsets = rng.uniform(-20, 20, size=2) + np.outer(t, drift)
    elif kind == "shaky":
        for i in range(1, frames):
            offsets[i] = 0.5 * offsets[i - 1] + rng.normal(0.0, 2.5, size=2)
            angles[i] = np.clip(0.5 * angles[i - 1] + rng.normal(0.0, 0.7), -2.0, 2.0)
    return offsets, scales, angles


def _fold_scales(scales: np.ndarray, low: float, high: float) -> np.ndarray:
    """Reflect zooms that leave [low, high] back inside, on a log scale, so a long zoom turns
    back at a limit; values already inside are returned untouched (bit for bit)."""
    outside = (scales < low) | (scales > high)
    if not outside.any():
        return scales
    lo, span = math.log(low), math.log(high / low)
    phase = np.mod(np.log(scales) - lo, 2 * span)
    folded = np.exp(lo + np.where(phase > span, 2 * span - phase, phase))
    return np.where(outside, folded, scales)


def _lerp(values: np.ndarray, time: float) -> np.ndarray:
    """Linear interpolation of per-frame ``values`` at a fractional frame time, extrapolating
    from the first or last two frames outside the clip (a shutter open past its ends)."""
    i = min(max(math.floor(time), 0), len(values) - 2)
    w = time - i
    return values[i] * (1.0 - w) + values[i + 1] * w


def _camera_affines(
    offsets: np.ndarray,
    scales: np.ndarray,
    angles: np.ndarray,
    world_centre: tuple[float, float],
    frame_size: tuple[int, int],
) -> np.ndarray:
    """World-to-frame affines: ``q = s·R(θ)·(X − c_t) + frame centre``."""
    height, width = frame_size
    fc = np.array([width / 2, height / 2])
    out = np.zeros((len(scales), 2, 3))
    for i, (off, s, deg) in enumerate(zip(offsets, scales, angles, strict=True)):
        th = math.radians(deg)
        rot = s * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        centre = np.asarray(world_centre) + off
        out[i, :, :2] = rot
        out[i, :, 2] = fc - rot @ centre
    return out


def _view_extent(affines: np.ndarray, frame_size: tuple[int, int]) -> tuple[float, float]:
    """Largest |x|, |y| (world px from the origin) any frame corner maps to over the clip."""
    height, width = frame_size
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64)
    ex = ey = 0.0
    for aff in affines:
        inv = cv2.invertAffineTransform(aff)
        pts = corners @ inv[:, :2].T + inv[:, 2]
        ex = max(ex, float(np.abs(pts[:, 0]).max()))
        ey = max(ey, float(np.abs(pts[:, 1]).max()))
    return ex, ey


def _to_frame(aff: np.ndarray, point: np.ndarray) -> np.ndarray:
    return aff[:, :2] @ point + aff[:, 2]


def _to_world(aff: np.ndarray, point: np.ndarray) -> np.ndarray:
    inv = cv2.invertAffineTransform(aff)
    return inv[:, :2] @ point + inv[:, 2]


# --------------------------------------------------------------------------- objects


def _place(
    rng: np.random.Generator,
    radius: float,
    taken: list[tuple[np.ndarray, float]],
    low: np.ndarray,
    high: np.ndarray,
    gap: float,
) -> np.ndarray:
    """A frame position in [low, high] at least ``gap`` px clear of the objects in ``taken``."""
    best, best_clear = low, -math.inf
    for _ in range(100):
        p = rng.uniform(low, high)
        clear = min((float(np.linalg.norm(p - q)) - radius - r for q, r in taken), default=math.inf)
        if clear >= gap:
            return p
        if clear > best_clear:
            best, best_clear = p, clear
    return best


def _mover_track(
    start: np.ndarray,
    affines: np.ndarray,
    frame_size: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """World positions and own rotations of one mover: drifting heading, one sharp turn,
    bouncing off an inset of the camera's view so it stays mostly in frame."""
    frames = len(affines)
    height, width = frame_size
    low = np.array([0.1 * width, 0.12 * height])
    high = np.array([0.9 * width, 0.88 * height])
    heading = rng.uniform(0, 2 * math.pi)
    base_speed = rng.uniform(MIN_SPEED, MAX_SPEED)
    turn_at = int(rng.integers(1, frames)) if frames > 2 else -1
    positions = np.zeros((frames, 2))
    positions[0] = _to_world(affines[0], start)
    for t in range(1, frames):
        heading += rng.normal(0.0, math.radians(10))
        if t == turn_at:
            heading += rng.choice([-1.0, 1.0]) * math.radians(rng.uniform(50, 120))
        speed = float(np.clip(base_speed * rng.uniform(0.85, 1.15), MIN_SPEED, MAX_SPEED))
        step = speed * np.array([math.cos(heading), math.sin(heading)])
        q = _to_frame(affines[t], positions[t - 1] + step)
        if not low[0] <= q[0] <= high[0]:
            heading = math.pi - heading
        if not low[1] <= q[1] <= high[1]:
            heading = -heading
        step = speed * np.array([math.cos(heading), math.sin(heading)])
        q = np.clip(_to_frame(affines[t], positions[t - 1] + step), low, high)
        positions[t] = _to_world(affines[t], q)
    spin = rng.uniform(-2.0, 2.0)
    angles = rng.uniform(0, 360) + spin * np.arange(frames)
    return positions, angles


def _patch_to_world(patch: _Patch, position: np.ndarray, angle: float) -> np.ndarray:
    """Affine placing the patch canvas centre at ``position``, rotated by ``angle`` degrees."""
    size = patch.alpha.shape[0]
    centre = (size / 2, size / 2)
    aff = cv2.getRotationMatrix2D(centre, float(angle), 1.0)
    aff[:, 2] += position - np.asarray(centre)
    return aff


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2×3 affine ``outer ∘ inner``."""
    return outer[:, :2] @ inner + np.hstack([np.zeros((2, 2)), outer[:, 2:]])


def _paste(canvas: np.ndarray, patch: _Patch, aff: np.ndarray) -> None:
    """Composite a premultiplied patch into ``canvas`` (float32 RGB) in place, through ``aff``."""
    size = (canvas.shape[1], canvas.shape[0])
    rgb = cv2.warpAffine(patch.rgb, aff, size, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(patch.alpha, aff, size, flags=cv2.INTER_LINEAR)
    canvas *= 1.0 - alpha[..., None]
    canvas += rgb


def _visible_box(patch: _Patch, aff: np.ndarray, frame_size: tuple[int, int]) -> Box | None:
    """Box of the patch pixels (alpha > 0.5) that land inside the frame through ``aff``."""
    height, width = frame_size
    alpha = cv2.warpAffine(patch.alpha, aff, (width, height), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(alpha > 0.5)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _mask_box(mask: np.ndarray) -> Box | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


# --------------------------------------------------------------------------- movers


_MOVER_REGION = ((0.22, 0.25), (0.78, 0.75))  # where movers start, as fractions of (w, h)


def _mover_region(frame_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    height, width = frame_size
    (lx, ly), (hx, hy) = _MOVER_REGION
    return np.array([lx * width, ly * height]), np.array([hx * width, hy * height])


def _mover_patch(
    scenario: Scenario,
    flat_colour: tuple[float, float, float],
    flat: bool,
    patch_names: list[str],
    geo: np.random.Generator,
    tex: np.random.Generator,
    scale: float = 1.0,
) -> _Patch:
    """One mover's patch: a textured ellipse / rounded rectangle, or a real cut-out."""
    if scenario.mover_kind == "shape":
        half = geo.uniform(*scenario.mover_half, size=2) * scale
        kind = str(geo.choice(["ellipse", "rounded"]))
        texture = None if flat else str(tex.choice(patch_names))
        return _make_patch(half[0], half[1], kind, texture, flat_colour, tex)
    name = str(geo.choice(CUTOUTS))
    index = int(geo.integers(len(_cutout_objects(name))))
    radius = geo.uniform(*scenario.mover_half) * CUTOUT_SCALE[name] * scale
    flip = bool(geo.random() < 0.5)
    texture = None if flat else str(tex.choice(patch_names))
    return _make_cutout_patch(name, index, radius, flip, texture, flat_colour, tex)


def _upright_angles(
    frames: int, rng: np.random.Generator, tilt: float = 15.0, spin: float = 0.4
) -> np.ndarray:
    """Own rotations that stay near upright (degrees): real objects seldom turn upside down."""
    return rng.uniform(-tilt, tilt) + rng.uniform(-spin, spin) * np.arange(frames)


def _direction(degrees: np.ndarray) -> np.ndarray:
    """Unit vectors (T, 2) along a patch's x axis after ``cv2.getRotationMatrix2D(.., degrees)``."""
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), -np.sin(rad)], axis=-1)


def _carry_mover(
    scenario: Scenario,
    cameras: np.ndarray,
    frame_size: tuple[int, int],
    flat_colour: tuple[float, float, float],
    flat: bool,
    patch_names: list[str],
    taken: list[tuple[np.ndarray, float]],
    geo: np.random.Generator,
    tex: np.random.Generator,
) -> _Mover:
    """A hand carrying an object, which it lets go of between 35 % and 65 % of the shot; the
    object then travels on its own. Parts: the object, then the hand (drawn on top)."""
    frames = len(cameras)
    thing = _mover_patch(scenario, flat_colour, flat, patch_names, geo, tex, scale=0.8)
    hand_half = geo.uniform(9.0, 12.0), geo.uniform(12.0, 16.0)
    hand = _make_hand_patch(*hand_half, not flat, flat_colour, tex)
    reach = 0.5 * hand.radius + 0.8 * thing.radius  # hand centre to object centre
    grip = geo.uniform(0, 360)  # where the object sits, in the hand's own frame (degrees)
    low, high = _mover_region(frame_size)
    start = _place(geo, reach + thing.radius, taken, low, high, gap=8.0)
    taken.append((start, reach + thing.radius))
    hand_positions, _ = _mover_track(start, cameras, frame_size, geo)
    hand_angles = _upright_angles(frames, geo, tilt=30.0, spin=1.0)
    held = hand_positions + reach * _direction(hand_angles + grip)
    thing_angles = hand_angles + geo.uniform(-30, 30)
    release = min(int(geo.integers(round(0.35 * frames), round(0.65 * frames) + 1)), frames - 1)
    release = max(release, 1)
    free, _ = _mover_track(
        _to_frame(cameras[release], held[release]), cameras[release:], frame_size, geo
    )
    positions = held.copy()
    positions[release:] = free
    thing_angles[release:] = thing_angles[release] + geo.uniform(-3, 3) * np.arange(
        frames - release
    )
    return [_Part(thing, positions, thing_angles), _Part(hand, hand_positions, hand_angles)]


def _skin_patch(
    half_w: float,
    half_h: float,
    skin: bool,
    flat_colour: tuple[float, float, float],
    rng: np.random.Generator,
) -> _Patch:
    """A skin-textured rounded rectangle (a forearm), or a flat colour."""
    size = math.ceil(2 * math.hypot(half_w, half_h)) + 6
    alpha = _shape_alpha(half_w, half_h, "rounded", size)
    rgb = _fill("skin" if skin else None, size, flat_colour, rng)
    return _Patch(rgb=rgb * alpha[..., None], alpha=alpha, radius=max(half_w, half_h))


def _arm_mover(
    cameras: np.ndarray,
    frame_size: tuple[int, int],
    flat_colour: tuple[float, float, float],
    flat: bool,
    patch_names: list[str],
    taken: list[tuple[np.ndarray, float]],
    geo: np.random.Generator,
    tex: np.random.Generator,
) -> tuple[_Mover, tuple[_Patch, np.ndarray]]:
    """An arm waving about a shoulder fixed on a torso: the upper arm swings, the forearm swings
    about the elbow out of phase. Returns the arm (sleeve, then skin forearm) and the torso,
    a static prop that the ground truth leaves out."""
    frames = len(cameras)
    t = np.arange(frames)
    upper_len, fore_len = geo.uniform(34, 46), geo.uniform(30, 42)
    upper_half, fore_half = geo.uniform(7, 10), geo.uniform(5.5, 8)  # half thickness
    torso_half = geo.uniform(18, 24), geo.uniform(34, 44)
    side = float(geo.choice([-1.0, 1.0]))  # arm to the right (+1) or left (-1) of the torso
    low, high = _mover_region(frame_size)
    spot = _place(geo, upper_len + fore_len, taken, low, high, gap=8.0)
    taken.append((spot, upper_len + fore_len))
    shoulder = _to_world(cameras[0], spot)
    omega = 2 * math.pi / geo.uniform(24, 40)  # one swing per 24-40 frames
    hang = geo.uniform(-35, -5)  # rest direction of the upper arm, below horizontal
    upper_swing = hang + geo.uniform(20, 35) * np.sin(omega * t + geo.uniform(0, 2 * math.pi))
    bend = geo.uniform(15, 45) + geo.uniform(20, 40) * np.sin(
        omega * t + geo.uniform(0, 2 * math.pi)
    )
    upper_angle = upper_swing if side > 0 else 180.0 - upper_swing
    fore_angle = upper_angle + side * bend
    upper_dir, fore_dir = _direction(upper_angle), _direction(fore_angle)
    elbow = shoulder + upper_len * upper_dir
    cloth = None if flat else str(tex.choice(patch_names))
    sleeve = _make_patch(
        upper_len / 2 + 0.6 * upper_half, upper_half, "rounded", cloth, flat_colour, tex
    )
    forearm = _skin_patch(fore_len / 2 + 0.6 * fore_half, fore_half, not flat, flat_colour, tex)
    arm = [
        _Part(sleeve, shoulder + 0.5 * upper_len * upper_dir, upper_angle),
        _Part(forearm, elbow + 0.5 * fore_len * fore_dir, fore_angle),
    ]
    torso = _make_patch(*torso_half, "rounded", cloth, FLAT_PROP_COLOUR, tex)
    torso_centre = shoulder + np.array([-side * 0.7 * torso_half[0], 0.75 * torso_half[1]])
    taken.append((_to_frame(cameras[0], torso_centre), torso.radius))
    return arm, (torso, _patch_to_world(torso, torso_centre, 0.0))


# --------------------------------------------------------------------------- lighting, codec


@dataclass
class _Light:
    """Per-frame lighting: channel gains and contrast about mid-grey, and an optional soft
    shadow (a blurred ellipse, ``depth`` dark at its core) whose centre moves along ``path``."""

    gains: np.ndarray  # (T, 3)
    contrast: np.ndarray  # (T,)
    shadow_path: np.ndarray | None = None  # (T, 2) frame x, y of the shadow centre
    shadow_axes: tuple[float, float] = (1.0, 1.0)
    shadow_angle: float = 0.0  # radians
    shadow_depth: float = 0.0
    shadow_edge: float = 20.0  # px of soft edge

    def apply(self, image: np.ndarray, t: int) -> np.ndarray:
        out = 128.0 + (image * self.gains[t].astype(np.float32) - 128.0) * np.float32(
            self.contrast[t]
        )
        if self.shadow_path is not None:
            out = out * self._shade(t, image.shape[:2])[..., None]
        return out.astype(np.float32)

    def _shade(self, t: int, frame_size: tuple[int, int]) -> np.ndarray:
        ys, xs = np.mgrid[0 : frame_size[0], 0 : frame_size[1]].astype(np.float32)
        dx, dy = xs - self.shadow_path[t, 0], ys - self.shadow_path[t, 1]
        c, s = math.cos(self.shadow_angle), math.sin(self.shadow_angle)
        u, v = (c * dx + s * dy) / self.shadow_axes[0], (-s * dx + c * dy) / self.shadow_axes[1]
        inside = np.clip(
            (1.0 - np.sqrt(u * u + v * v)) * min(self.shadow_axes) / self.shadow_edge + 0.5, 0, 1
        )
        inside = inside * inside * (3 - 2 * inside)  # smoothstep
        return 1.0 - np.float32(self.shadow_depth) * inside


def _lighting(
    kind: Lighting, frames: int, frame_size: tuple[int, int], rng: np.random.Generator
) -> _Light:
    """A lighting change over the clip: a brightness/contrast/colour ramp, an exposure flicker,
    or a soft shadow drifting across the frame at 1.5–3 px/frame."""
    t = np.arange(frames) / max(frames - 1, 1)
    gains = np.ones((frames, 3))
    contrast = np.ones(frames)
    if kind == "ramp":
        ends = [rng.uniform(0.55, 0.75), rng.uniform(1.15, 1.35)]
        if rng.random() < 0.5:
            ends.reverse()
        warm = rng.uniform(-0.08, 0.08) * np.array([1.0, 0.0, -1.0])  # white-balance drift
        gains = (ends[0] + (ends[1] - ends[0]) * t)[:, None] * (1.0 + np.outer(t, warm))
        contrast = 1.0 + (rng.uniform(0.7, 1.25) - 1.0) * t
        return _Light(gains, contrast)
    if kind == "flicker":
        period = rng.uniform(6, 20)
        wave = rng.uniform(0.06, 0.15) * np.sin(
            2 * math.pi * np.arange(frames) / period + rng.uniform(0, 2 * math.pi)
        )
        gain = np.clip(1.0 + wave + rng.normal(0.0, 0.04, frames), 0.7, 1.3)
        return _Light(np.repeat(gain[:, None], 3, axis=1), contrast)
    height, width = frame_size
    heading = rng.uniform(0, 2 * math.pi)
    along = np.array([math.cos(heading), math.sin(heading)])
    speed = rng.uniform(1.5, 3.0)
    start = np.array([width / 2, height / 2]) - along * speed * frames / 2
    start += np.array([-along[1], along[0]]) * rng.uniform(-0.25, 0.25) * height
    path = start + np.outer(np.arange(frames), along * speed)
    axes = (float(rng.uniform(50, 90)), float(rng.uniform(40, 70)))
    return _Light(
        gains,
        contrast,
        shadow_path=path,
        shadow_axes=axes,
        shadow_angle=float(rng.uniform(0, math.pi)),
        shadow_depth=float(rng.uniform(0.35, 0.55)),
    )


def _h264_round_trip(frames: np.ndarray, crf: int, fps: int = 25) -> np.ndarray:
    """Encode (T, H, W, 3) uint8 RGB frames as H.264 yuv420p at ``crf`` with libx264 (preset
    veryfast, B-frames and all) and decode them back; odd sides are padded by an edge row or
    column for yuv420p, then cropped."""
    import av  # imported here: only compressed scenarios need it

    count, height, width = frames.shape[:3]
    even = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = even.shape[2], even.shape[1]
        stream.pix_fmt = "yuv420p"
        # One thread and x264's C code: its assembly reads uninitialised padding, which makes
        # the bitstream (and the decoded frames) vary from run to run.
        stream.options = {
            "crf": str(crf),
            "preset": "veryfast",
            "threads": "1",
            "x264-params": "asm=0",
        }
        for i, rgb in enumerate(even):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer, mode="r") as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if len(decoded) != count:
        raise RuntimeError(f"H.264 round trip gave {len(decoded)} frames for {count}")
    return np.stack(decoded)[:, :height, :width]


# --------------------------------------------------------------------------- shots and clips


@dataclass
class _Shot:
    """One continuous shot: a world (background with the props pasted in), movers, camera."""

    world: np.ndarray  # (Hw, Ww, 3) float32
    path: tuple[np.ndarray, np.ndarray, np.ndarray]  # camera offsets, zooms, rolls per frame
    world_centre: tuple[float, float]
    cameras: np.ndarray  # (T, 2, 3) world-to-frame affines
    movers: list[_Mover]
    props: list[tuple[_Patch, np.ndarray]]  # patch and its patch-to-world affine
    background: str

    def camera_at(self, time: float, frame_size: tuple[int, int]) -> np.ndarray:
        offsets, scales, angles = (np.asarray([_lerp(v, time)]) for v in self.path)
        return _camera_affines(offsets, scales, angles, self.world_centre, frame_size)[0]


def _build_shot(
    scenario: Scenario,
    frames: int,
    geo: np.random.Generator,
    tex: np.random.Generator,
    flat: bool,
    avoid_background: str | None = None,
) -> _Shot:
    """Camera path, movers, props and world of one shot (another background than
    ``avoid_background``)."""
    frame_size = (scenario.height, scenario.width)
    height, width = frame_size

    offsets, scales, angles = _camera_path(scenario.camera, frames, geo)
    # Size the world so that no frame ever sees past its edge (reflect borders would mirror).
    rel = _camera_affines(offsets, scales, angles, (0.0, 0.0), frame_size)
    ex, ey = _view_extent(rel, frame_size)
    pad = 24
    world_w, world_h = 2 * math.ceil(ex) + 2 * pad, 2 * math.ceil(ey) + 2 * pad
    world_centre = (world_w / 2, world_h / 2)
    cameras = _camera_affines(offsets, scales, angles, world_centre, frame_size)

    background_name = str(tex.choice([n for n in BACKGROUND_IMAGES if n != avoid_background]))
    patch_names = [n for n in PATCH_IMAGES if n != background_name]

    # Movers: sizes and start positions in frame coordinates, then tracks.
    taken: list[tuple[np.ndarray, float]] = []
    movers: list[_Mover] = []
    props: list[tuple[_Patch, np.ndarray]] = []
    for m in range(scenario.movers):
        colour = FLAT_MOVER_COLOURS[m]
        if m == 0 and scenario.nonrigid == "carry":
            movers.append(
                _carry_mover(
                    scenario, cameras, frame_size, colour, flat, patch_names, taken, geo, tex
                )
            )
            continue
        if m == 0 and scenario.nonrigid == "arm":
            arm, torso = _arm_mover(cameras, frame_size, colour, flat, patch_names, taken, geo, tex)
            movers.append(arm)
            props.append(torso)
            continue
        patch = _mover_patch(scenario, colour, flat, patch_names, geo, tex)
        low, high = _mover_region(frame_size)
        start = _place(geo, patch.radius, taken, low, high, gap=8.0)
        taken.append((start, patch.radius))
        positions, own_angles = _mover_track(start, cameras, frame_size, geo)
        if scenario.mover_kind == "cutout":
            own_angles = _upright_angles(frames, geo)
        movers.append([_Part(patch, positions, own_angles)])

    # Props: static scene patches, placed clear of the movers' start positions.
    n_props = int(geo.integers(scenario.min_props, scenario.max_props + 1))
    for _ in range(n_props):
        half = geo.uniform(15, 35, size=2)
        kind = str(geo.choice(["ellipse", "rounded"]))
        texture = None if flat else str(tex.choice(patch_names))
        patch = _make_patch(half[0], half[1], kind, texture, FLAT_PROP_COLOUR, tex)
        low = np.array([0.06 * width, 0.08 * height])
        high = np.array([0.94 * width, 0.92 * height])
        spot = _place(geo, patch.radius, taken, low, high, gap=10.0)
        taken.append((spot, patch.radius))
        world_pos = _to_world(cameras[0], spot)
        props.append((patch, _patch_to_world(patch, world_pos, float(geo.uniform(-20, 20)))))

    if flat:
        world = np.zeros((world_h, world_w, 3), np.float32)
    else:
        world = _texture(background_name, world_h, world_w, tex, min_crop=0.6)
    for patch, aff in props:
        _paste(world, patch, aff)
    return _Shot(
        world, (offsets, scales, angles), world_centre, cameras, movers, props, background_name
    )


def _render_sharp(
    shot: _Shot, t: int, frame_size: tuple[int, int]
) -> tuple[np.ndarray, list[Box | None]]:
    """Frame ``t``: movers pasted into the world, the world warped into the frame."""
    height, width = frame_size
    cam = shot.cameras[t]
    canvas = shot.world.copy()
    boxes: list[Box | None] = []
    for mover in shot.movers:
        part_boxes = []
        for part in mover:
            aff = part.to_world(t)
            _paste(canvas, part.patch, aff)
            part_boxes.append(_visible_box(part.patch, _compose(cam, aff), frame_size))
        boxes.append(union_box(part_boxes))
    image = cv2.warpAffine(
        canvas, cam, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    return image, boxes


def _render_blurred(
    shot: _Shot, t: int, shutter: float, frame_size: tuple[int, int]
) -> tuple[np.ndarray, list[Box | None]]:
    """Frame ``t`` as the mean of sub-frame renders over ``shutter`` frame intervals centred
    on ``t``; a mover's box holds the pixels it covers more than half of that time. Each
    sub-frame is composited in frame space (cheaper than pasting into the whole world)."""
    height, width = frame_size
    total = np.zeros((height, width, 3), np.float32)
    coverage = [np.zeros((height, width), np.float32) for _ in shot.movers]
    for time in t + shutter * (np.linspace(0.0, 1.0, BLUR_SAMPLES) - 0.5):
        cam = shot.camera_at(float(time), frame_size)
        image = cv2.warpAffine(
            shot.world, cam, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        for mover, covered in zip(shot.movers, coverage, strict=True):
            union = np.zeros((height, width), np.float32)
            for part in mover:
                aff = _compose(cam, part.to_world_at(float(time)))
                rgb = cv2.warpAffine(part.patch.rgb, aff, (width, height), flags=cv2.INTER_LINEAR)
                alpha = cv2.warpAffine(
                    part.patch.alpha, aff, (width, height), flags=cv2.INTER_LINEAR
                )
                image *= 1.0 - alpha[..., None]
                image += rgb
                union += alpha * (1.0 - union)
            covered += union
        total += image
    boxes = [_mask_box(covered > 0.5 * BLUR_SAMPLES) for covered in coverage]
    return total / BLUR_SAMPLES, boxes


def make_clip(scenario: Scenario, seed: int, *, flat: bool = False) -> SyntheticClip:
    """Render ``scenario`` for ``seed``: the same seed always gives the same clip.

    ``flat=True`` keeps the geometry (and motion blur) but paints movers red (first) / green
    (second), props blue and the background black, without noise, lighting change or
    compression, so tests can check the ground truth on pixels.
    """
    salt = zlib.crc32(scenario.name.encode())  # scenarios differ even for equal seeds
    noise_rng = np.random.default_rng([seed, salt, 2])
    frame_size = (scenario.height, scenario.width)
    height, width = frame_size
    cut = scenario.cut_frame
    lengths = [scenario.frames] if cut is None else [cut, scenario.frames - cut]
    shots: list[_Shot] = []
    for k, length in enumerate(lengths):  # shot k draws from streams 3k (geometry), 3k + 1
        geo = np.random.default_rng([seed, salt, 3 * k])
        tex = np.random.default_rng([seed, salt, 3 * k + 1])
        avoid = shots[-1].background if shots else None
        shots.append(_build_shot(scenario, length, geo, tex, flat, avoid))
    light = None
    if scenario.lighting is not None and not flat:
        light_rng = np.random.default_rng([seed, salt, 5])
        light = _lighting(scenario.lighting, scenario.frames, frame_size, light_rng)

    frames = np.zeros((scenario.frames, height, width, 3), np.uint8)
    mover_boxes: list[list[Box | None]] = []
    prop_boxes: list[list[Box | None]] = []
    index = 0
    for shot in shots:
        for t, cam in enumerate(shot.cameras):
            if scenario.blur > 0:
                image, boxes_t = _render_blurred(shot, t, scenario.blur, frame_size)
            else:
                image, boxes_t = _render_sharp(shot, t, frame_size)
            mover_boxes.append(boxes_t)
            prop_boxes.append(
                [_visible_box(p, _compose(cam, aff), frame_size) for p, aff in shot.props]
            )
            if light is not None:
                image = light.apply(image, index)
            if not flat and scenario.noise > 0:
                image = image + noise_rng.normal(0.0, scenario.noise, image.shape).astype(
                    np.float32
                )
            frames[index] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
            index += 1
    if scenario.crf is not None and not flat:
        frames = _h264_round_trip(frames, scenario.crf)

    return SyntheticClip(
        scenario=scenario,
        seed=seed,
        frames=frames,
        boxes=[union_box(b) for b in mover_boxes],
        mover_boxes=mover_boxes,
        prop_boxes=prop_boxes,
        cameras=np.concatenate([shot.cameras for shot in shots]),
        cuts=[] if cut is None else [cut - 1],
    )


def with_frames(scenario: Scenario, frames: int) -> Scenario:
    """The same scenario with another clip length."""
    return dataclasses.replace(scenario, frames=frames)


def write_mp4(clip: SyntheticClip, path: str | Path, fps: int = 12) -> Path:
    """Encode the clip as H.264 (yuv420p) with PyAV so it can be used as a real video file.

    yuv420p needs even sides: an odd width or height is padded by repeating the last column or
    row, which leaves the ground-truth boxes valid.
    """
    return encode_mp4(path, clip.frames, fps)
