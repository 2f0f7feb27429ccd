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
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import skimage.data

from shared.record import union_box
from shared.render import encode_mp4

CameraKind = Literal["static", "pan", "zoom", "shaky"]
Box = list[int]  # [x1, y1, x2, y2] working-size pixels, x2/y2 exclusive

BACKGROUND_IMAGES = ("coffee", "rocket", "chelsea", "astronaut")
PATCH_IMAGES = ("brick", "grass", "gravel", "astronaut", "coffee", "chelsea", "rocket")
MIN_SPEED, MAX_SPEED = 1.5, 6.0  # mover speed in world px/frame
FLAT_MOVER_COLOURS = ((255.0, 0.0, 0.0), (0.0, 255.0, 0.0))
FLAT_PROP_COLOUR = (0.0, 0.0, 255.0)


@dataclass(frozen=True)
class Scenario:
    """One kind of clip: camera motion, number of movers and static props, size and noise."""

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

    def __post_init__(self) -> None:
        if self.camera not in ("static", "pan", "zoom", "shaky"):
            raise ValueError(f"unknown camera {self.camera!r}")
        if self.movers not in (1, 2):
            raise ValueError(f"movers must be 1 or 2, got {self.movers}")
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2, got {self.frames}")
        if not 0 <= self.min_props <= self.max_props:
            raise ValueError(f"bad prop range {self.min_props}..{self.max_props}")


SCENARIOS: tuple[Scenario, ...] = tuple(
    Scenario(f"{camera}-{movers}mover", camera, movers)
    for camera in ("static", "pan", "zoom", "shaky")
    for movers in (1, 2)
)


@dataclass
class SyntheticClip:
    """Rendered frames and their exact ground truth.

    ``boxes[t]`` is the union box of the movers visible in frame ``t`` (None when none is);
    ``mover_boxes[t][m]`` and ``prop_boxes[t][p]`` are the per-object boxes (props unoccluded);
    ``cameras[t]`` is the world-to-frame affine.
    """

    scenario: Scenario
    seed: int
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    boxes: list[Box | None]
    mover_boxes: list[list[Box | None]]
    prop_boxes: list[list[Box | None]]
    cameras: np.ndarray  # (T, 2, 3) float64


@dataclass
class _Patch:
    """A textured shape on its own square canvas: premultiplied RGB and alpha in [0, 1]."""

    rgb: np.ndarray  # (S, S, 3) float32, premultiplied by alpha
    alpha: np.ndarray  # (S, S) float32
    radius: float  # half of the shape's larger side, for spacing


@dataclass
class _Mover:
    patch: _Patch
    positions: np.ndarray  # (T, 2) world x, y of the patch centre
    angles: np.ndarray  # (T,) own rotation in degrees


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
        scales = (1.0 + rate) ** t
        drift = rng.uniform(-1.0, 1.0, size=2)
        offsets = rng.uniform(-20, 20, size=2) + np.outer(t, drift)
    elif kind == "shaky":
        for i in range(1, frames):
            offsets[i] = 0.5 * offsets[i - 1] + rng.normal(0.0, 2.5, size=2)
            angles[i] = np.clip(0.5 * angles[i - 1] + rng.normal(0.0, 0.7), -2.0, 2.0)
    return offsets, scales, angles


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


# --------------------------------------------------------------------------- clips


def make_clip(scenario: Scenario, seed: int, *, flat: bool = False) -> SyntheticClip:
    """Render ``scenario`` for ``seed``: the same seed always gives the same clip.

    ``flat=True`` keeps the geometry but paints movers red (first) / green (second), props blue
    and the background black, without noise, so tests can check the ground truth on pixels.
    """
    salt = zlib.crc32(scenario.name.encode())  # scenarios differ even for equal seeds
    geo = np.random.default_rng([seed, salt, 0])
    tex = np.random.default_rng([seed, salt, 1])
    noise_rng = np.random.default_rng([seed, salt, 2])
    frame_size = (scenario.height, scenario.width)
    height, width = frame_size

    offsets, scales, angles = _camera_path(scenario.camera, scenario.frames, geo)
    # Size the world so that no frame ever sees past its edge (reflect borders would mirror).
    rel = _camera_affines(offsets, scales, angles, (0.0, 0.0), frame_size)
    ex, ey = _view_extent(rel, frame_size)
    pad = 24
    world_w, world_h = 2 * math.ceil(ex) + 2 * pad, 2 * math.ceil(ey) + 2 * pad
    cameras = _camera_affines(offsets, scales, angles, (world_w / 2, world_h / 2), frame_size)

    background_name = str(tex.choice(BACKGROUND_IMAGES))
    patch_names = [n for n in PATCH_IMAGES if n != background_name]

    # Movers: sizes and start positions in frame coordinates, then tracks.
    taken: list[tuple[np.ndarray, float]] = []
    movers: list[_Mover] = []
    for m in range(scenario.movers):
        half = geo.uniform(*scenario.mover_half, size=2)
        kind = str(geo.choice(["ellipse", "rounded"]))
        texture = None if flat else str(tex.choice(patch_names))
        patch = _make_patch(half[0], half[1], kind, texture, FLAT_MOVER_COLOURS[m], tex)
        low = np.array([0.22 * width, 0.25 * height])
        high = np.array([0.78 * width, 0.75 * height])
        start = _place(geo, patch.radius, taken, low, high, gap=8.0)
        taken.append((start, patch.radius))
        positions, own_angles = _mover_track(start, cameras, frame_size, geo)
        movers.append(_Mover(patch, positions, own_angles))

    # Props: static scene patches, placed clear of the movers' start positions.
    n_props = int(geo.integers(scenario.min_props, scenario.max_props + 1))
    props: list[tuple[_Patch, np.ndarray]] = []
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

    frames = np.zeros((scenario.frames, height, width, 3), np.uint8)
    mover_boxes: list[list[Box | None]] = []
    prop_boxes: list[list[Box | None]] = []
    for t, cam in enumerate(cameras):
        canvas = world.copy()
        boxes_t: list[Box | None] = []
        for mover in movers:
            aff = _patch_to_world(mover.patch, mover.positions[t], float(mover.angles[t]))
            _paste(canvas, mover.patch, aff)
            boxes_t.append(_visible_box(mover.patch, _compose(cam, aff), frame_size))
        mover_boxes.append(boxes_t)
        prop_boxes.append([_visible_box(p, _compose(cam, aff), frame_size) for p, aff in props])
        image = cv2.warpAffine(
            canvas, cam, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        if not flat and scenario.noise > 0:
            image = image + noise_rng.normal(0.0, scenario.noise, image.shape).astype(np.float32)
        frames[t] = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    return SyntheticClip(
        scenario=scenario,
        seed=seed,
        frames=frames,
        boxes=[union_box(b) for b in mover_boxes],
        mover_boxes=mover_boxes,
        prop_boxes=prop_boxes,
        cameras=cameras,
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
