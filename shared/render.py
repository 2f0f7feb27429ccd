"""Pictures of motion boxes: boxes on frames, motion colour maps, PNG strips, GIF/MP4 previews.

Frames are ``(T, H, W, 3)`` uint8 RGB. Boxes are ``[x1, y1, x2, y2]`` pixels with x2/y2
exclusive, or ``None`` for "no box". A box's border is drawn *inside* the box (its outermost ring is
the pixels x1..x2-1, y1..y2-1), so nothing outside the box is ever painted; a box reaching past
the frame is clipped to it first. :func:`draw_box` is the one routine that draws a box, for the
previews here and for training's pictures (:mod:`mofo.training.visualise`).

Pictures are made as bytes (:func:`motion_map_png`, :func:`preview_bytes`), which the service
sends as they are; :func:`write_motion_map` and :func:`write_preview` put them in files,
atomically: to a temporary name in the target folder, then renamed over the target, so a failure
never leaves a half-written file behind.
"""

from __future__ import annotations

import io
import math
import operator
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from mofo.shared.files import write_bytes_atomic

Color = tuple[int, int, int]

DEFAULT_COLOR: Color = (255, 64, 0)
FALLBACK_COLOR: Color = (160, 160, 160)  # grey: a fallback box is a guess, not a detection
FALLBACK_LABEL = "fallback"
DASH_ON = 4  # dashed fallback border: pixels drawn ...
DASH_OFF = 3  # ... then pixels skipped, along each edge
STRIP_GAP = 4  # pixels between the tiles of a motion-map strip
STRIP_BACKGROUND: Color = (255, 255, 255)
COLORMAP = cv2.COLORMAP_TURBO
MIN_GIF_FRAME_MS = 20  # browsers play GIF delays under 20 ms as 100 ms
MP4_CRF = 18


# --------------------------------------------------------------------------- validation


def _check_frames(frames: np.ndarray) -> None:
    """Raise ValueError unless ``frames`` is a (T, H, W, 3) uint8 array with H, W > 0."""
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be (T, H, W, 3) uint8 RGB, got shape {frames.shape} dtype {frames.dtype}"
        )
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"frames must have a non-zero height and width, got shape {frames.shape}")


def _pixel(value: object) -> int:
    """A box side as a whole pixel: ints as they are, finite floats (sub-pixel sides of
    working-size boxes) to the nearest pixel, halves up."""
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            raise TypeError(f"not a finite number: {value!r}")
        return math.floor(value + 0.5)
    return operator.index(value)  # type: ignore[arg-type]


def _check_boxes(
    boxes: Sequence[Sequence[float] | None], count: int
) -> list[tuple[int, ...] | None]:
    """Return the boxes as int tuples, fractional sides at the nearest pixel; raise ValueError
    on a wrong count or a malformed box."""
    if len(boxes) != count:
        raise ValueError(f"got {len(boxes)} boxes for {count} frames; need one box (or None) each")
    out: list[tuple[int, ...] | None] = []
    for i, box in enumerate(boxes):
        if box is None:
            out.append(None)
            continue
        try:
            values = tuple(_pixel(v) for v in box)
        except TypeError as exc:
            raise ValueError(f"box {i} must be 4 numbers [x1, y1, x2, y2], got {box!r}") from exc
        if len(values) != 4:
            raise ValueError(f"box {i} must be 4 numbers [x1, y1, x2, y2], got {box!r}")
        out.append(values)
    return out


def _check_color(color: Sequence[int]) -> Color:
    """Return ``color`` as an RGB int triple in 0..255, or raise ValueError."""
    values = tuple(int(c) for c in color)
    if len(values) != 3 or not all(0 <= c <= 255 for c in values):
        raise ValueError(f"color must be 3 integers in 0..255 (R, G, B), got {color!r}")
    return values  # type: ignore[return-value]


def _check_fps(fps: float) -> float:
    """Return ``fps`` as a float, or raise ValueError unless it is finite and positive."""
    value = float(fps)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return value


PREVIEW_SUFFIXES = (".gif", ".mp4")
MOTION_MAP_SUFFIXES = (".png",)


def check_output_path(path: str | Path, suffixes: tuple[str, ...], what: str) -> Path:
    """Check an output path's suffix and that its folder exists; return it as a Path."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        wanted = " or ".join(suffixes)
        raise ValueError(f"{what} must end in {wanted}, got {str(path)!r}")
    folder = out.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {str(folder)!r} does not exist (for {str(out)!r})")
    return out


# --------------------------------------------------------------------------- drawing


def _clipped(box: Sequence[int], height: int, width: int) -> tuple[int, int, int, int] | None:
    """The whole-pixel box clipped to the frame; None when nothing of it is inside."""
    x1, y1 = max(box[0], 0), max(box[1], 0)
    x2, y2 = min(box[2], width), min(box[3], height)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _draw_solid(img: np.ndarray, box: tuple[int, ...], color: Color, thickness: int) -> None:
    """Draw a ``thickness`` pixels wide outline inside the box (x2/y2 exclusive), in place."""
    x1, y1, x2, y2 = box
    img[y1 : min(y1 + thickness, y2), x1:x2] = color  # top
    img[max(y2 - thickness, y1) : y2, x1:x2] = color  # bottom
    img[y1:y2, x1 : min(x1 + thickness, x2)] = color  # left
    img[y1:y2, max(x2 - thickness, x1) : x2] = color  # right


def _draw_dashed(img: np.ndarray, box: tuple[int, ...], color: Color, thickness: int) -> None:
    """Like ``_draw_solid`` but dashed: DASH_ON pixels on, DASH_OFF off, from each edge's start."""
    height, width = img.shape[:2]
    period = DASH_ON + DASH_OFF
    x1, y1, x2, y2 = box
    for i in range(thickness):
        a, b, c, d = x1 + i, y1 + i, x2 - 1 - i, y2 - 1 - i
        if a > c or b > d:
            break
        xs = np.arange(a, c + 1)
        xs = xs[((xs - a) % period < DASH_ON) & (xs >= 0) & (xs < width)]
        ys = np.arange(b, d + 1)
        ys = ys[((ys - b) % period < DASH_ON) & (ys >= 0) & (ys < height)]
        for y in (b, d):
            if 0 <= y < height:
                img[y, xs] = color
        for x in (a, c):
            if 0 <= x < width:
                img[ys, x] = color


def _draw_label(img: np.ndarray, box: tuple[int, ...], text: str, color: Color, pad: int) -> None:
    """Write a small label in the box's top-left corner (kept inside the frame), outlined dark."""
    height, width = img.shape[:2]
    scale = max(0.3, min(0.6, height / 480))
    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, 1)
    x = min(max(box[0] + pad, 0), max(width - text_w, 0))
    y = min(max(box[1] + pad + text_h, text_h), max(height - baseline, text_h))
    cv2.putText(img, text, (x, y), font, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), font, scale, color, 1, cv2.LINE_AA)


def draw_box(
    frame: np.ndarray,
    box: Sequence[float] | np.ndarray,
    color: Sequence[int] = DEFAULT_COLOR,
    thickness: int = 1,
    *,
    cover: bool = False,
) -> np.ndarray:
    """A copy of one ``(H, W, 3)`` uint8 frame with the outline of ``box`` ``[x1, y1, x2, y2]``.

    The outline is ``thickness`` pixels wide, inside the box. Fractional sides go to the nearest
    pixel (as records round), or with ``cover`` outwards, so that every pixel the box touches is
    inside it (training's boxes, moved by crops and flips). A box reaching past the frame is
    clipped to it first, so the outline runs along the frame's edge there; an empty box, one
    wholly outside, or one with a NaN side draws nothing.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    if operator.index(thickness) < 1:
        raise ValueError(f"thickness must be at least 1, got {thickness!r}")
    rgb = _check_color(color)
    sides = np.asarray(box, dtype=np.float64)
    if sides.shape != (4,):
        raise ValueError(f"box must be (4,) [x1, y1, x2, y2], got shape {sides.shape}")
    out = np.ascontiguousarray(frame).copy()
    if not np.isfinite(sides).all():
        return out
    if cover:
        pixels = (
            math.floor(sides[0]),
            math.floor(sides[1]),
            math.ceil(sides[2]),
            math.ceil(sides[3]),
        )
    else:
        pixels = tuple(_pixel(float(v)) for v in sides)
    clipped = _clipped(pixels, *frame.shape[:2])
    if clipped is not None:
        _draw_solid(out, clipped, rgb, thickness)
    return out


def draw_boxes(
    frames: np.ndarray,
    boxes: Sequence[Sequence[int] | None],
    color: Sequence[int] = DEFAULT_COLOR,
    thickness: int = 2,
    fallback: bool = False,
) -> np.ndarray:
    """Return a copy of ``frames`` with each frame's box drawn; ``frames`` is left unchanged.

    Each box is drawn as :func:`draw_box` draws it: a border ``thickness`` pixels wide inside the
    box, from x1/y1 to the last pixel x2-1/y2-1, so pixels outside the box keep their values; a
    box reaching past the frame is clipped to it first. ``color`` is RGB. With
    ``fallback=True`` the box is a guess, not a detection: it is drawn dashed in grey
    (FALLBACK_COLOR, ``color`` is not used) with a small "fallback" label. ``None`` boxes and
    empty boxes (x2 <= x1 or y2 <= y1) draw nothing.
    Raises ValueError when frames is not (T, H, W, 3) uint8, ``len(boxes) != T``, or a box is
    not four integers.
    """
    _check_frames(frames)
    checked = _check_boxes(boxes, frames.shape[0])
    rgb = _check_color(color)
    if operator.index(thickness) < 1:
        raise ValueError(f"thickness must be at least 1, got {thickness!r}")
    out = np.ascontiguousarray(frames).copy()
    height, width = frames.shape[1:3]
    for t, whole in enumerate(checked):
        box = None if whole is None else _clipped(whole, height, width)
        if box is None:
            continue
        img = out[t]  # a contiguous view: drawing writes into ``out``
        if fallback:
            _draw_dashed(img, box, FALLBACK_COLOR, thickness)
            _draw_label(img, box, FALLBACK_LABEL, FALLBACK_COLOR, thickness + 2)
        else:
            _draw_solid(img, box, rgb, thickness)
    return out


def motion_map_image(motion: np.ndarray) -> np.ndarray:
    """Colour motion magnitudes (T, H, W) as (T, H, W, 3) uint8 RGB TURBO maps.

    Values are scaled by the maximum over the whole clip, so the frames' colours are comparable.
    NaN, infinite and negative values count as zero; an all-zero clip gives the colormap's zero
    colour everywhere. Raises ValueError unless ``motion`` is a 3-D real-valued array.
    """
    if not isinstance(motion, np.ndarray):
        raise ValueError(f"motion must be a numpy array, got {type(motion).__name__}")
    if motion.ndim != 3 or not (
        np.issubdtype(motion.dtype, np.floating) or np.issubdtype(motion.dtype, np.integer)
    ):
        raise ValueError(
            f"motion must be a (T, H, W) real-valued array, got shape {motion.shape} "
            f"dtype {motion.dtype}"
        )
    count, height, width = motion.shape
    if motion.size == 0:
        return np.zeros((count, height, width, 3), np.uint8)
    values = np.nan_to_num(motion.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    np.maximum(values, 0.0, out=values)
    peak = float(values.max())
    if peak > 0:
        levels = np.rint(values * (255.0 / peak)).clip(0, 255).astype(np.uint8)
    else:
        levels = np.zeros(values.shape, np.uint8)
    bgr = cv2.applyColorMap(levels.reshape(count * height, width), COLORMAP)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return rgb.reshape(count, height, width, 3)


def _pick_columns(count: int, max_columns: int) -> np.ndarray:
    """Indices of up to ``max_columns`` frames spread evenly over ``count``, first and last kept."""
    n = min(count, max_columns)
    return np.rint(np.linspace(0, count - 1, n)).astype(int)


def strip_size(frame_count: int, height: int, width: int, max_columns: int = 8) -> tuple[int, int]:
    """Return (width, height) in pixels of the strip ``write_motion_map`` draws for such a clip."""
    n = min(frame_count, max_columns)
    return n * width + (n - 1) * STRIP_GAP, 2 * height + STRIP_GAP


def motion_map_png(
    frames: np.ndarray,
    motion: np.ndarray,
    boxes: Sequence[Sequence[int] | None],
    max_columns: int = 8,
    fallback: bool = False,
) -> bytes:
    """A PNG strip: frames with boxes on top, their motion maps (same boxes) below.

    Up to ``max_columns`` frames are picked evenly across the clip (first and last included);
    tiles are separated by STRIP_GAP white pixels, so the image is ``strip_size(...)``. Motion
    maps are normalised over the whole clip; a motion array at another resolution than the
    frames is resized to the frames' size. ``fallback`` draws the boxes as in ``draw_boxes``.
    Raises ValueError for mismatched shapes.
    """
    _check_frames(frames)
    count, height, width = frames.shape[:3]
    if count == 0:
        raise ValueError(f"frames must hold at least one frame, got shape {frames.shape}")
    if not isinstance(motion, np.ndarray) or motion.ndim != 3 or motion.shape[0] != count:
        shape = getattr(motion, "shape", type(motion).__name__)
        raise ValueError(f"motion must be ({count}, H, W) to match the frames, got {shape}")
    if operator.index(max_columns) < 1:
        raise ValueError(f"max_columns must be at least 1, got {max_columns!r}")
    _check_boxes(boxes, count)

    maps = motion_map_image(motion)  # whole clip, so the normalisation spans every frame
    picks = _pick_columns(count, max_columns)
    if maps.shape[1:3] != (height, width):
        maps = np.stack(
            [cv2.resize(maps[i], (width, height), interpolation=cv2.INTER_LINEAR) for i in picks]
        )
    else:
        maps = maps[picks]
    picked_boxes = [boxes[i] for i in picks]
    top = draw_boxes(frames[picks], picked_boxes, fallback=fallback)
    bottom = draw_boxes(maps, picked_boxes, fallback=fallback)

    strip_w, strip_h = strip_size(count, height, width, max_columns)
    canvas = np.empty((strip_h, strip_w, 3), np.uint8)
    canvas[:] = STRIP_BACKGROUND
    for col in range(len(picks)):
        x = col * (width + STRIP_GAP)
        canvas[:height, x : x + width] = top[col]
        canvas[height + STRIP_GAP :, x : x + width] = bottom[col]

    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return buffer.getvalue()


def write_motion_map(
    path: str | Path,
    frames: np.ndarray,
    motion: np.ndarray,
    boxes: Sequence[Sequence[int] | None],
    max_columns: int = 8,
    fallback: bool = False,
) -> Path:
    """:func:`motion_map_png` into a file. Raises ValueError for a suffix other than .png or
    mismatched shapes, FileNotFoundError when the folder does not exist. Returns the path."""
    out = check_output_path(path, MOTION_MAP_SUFFIXES, "motion map")
    png = motion_map_png(frames, motion, boxes, max_columns, fallback)
    return write_bytes_atomic(out, png)


# --------------------------------------------------------------------------- previews


def _gif_duration_ms(fps: float) -> int:
    """Per-frame GIF delay: 1000/fps ms rounded to GIF's 10 ms unit, at least MIN_GIF_FRAME_MS."""
    return max(MIN_GIF_FRAME_MS, 10 * round(100.0 / fps))


def _gif(frames: np.ndarray, fps: float) -> bytes:
    """``frames`` as a looping GIF (Pillow)."""
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=_gif_duration_ms(fps),
        loop=0,
    )
    return buffer.getvalue()


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by one repeated edge row/column (yuv420p needs even sizes)."""
    pad_h = frames.shape[1] % 2
    pad_w = frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def encode_mp4(
    path: str | Path | io.BytesIO,
    frames: np.ndarray,
    fps: float,
    *,
    crf: int = MP4_CRF,
    preset: str = "veryfast",
    faststart: bool = False,
) -> Path:
    """Encode (T, H, W, 3) uint8 RGB ``frames`` as an H.264 yuv420p MP4 with PyAV at ``fps`` (kept
    as a Fraction), without B-frames; odd sides are padded by one repeated edge row/column.
    ``faststart`` puts the header before the frame data, as streaming encoders do. ``path`` may
    be a seekable file object (a BytesIO), which the MP4 is written into."""
    import av  # imported here: only writing videos needs it

    rate = Fraction(fps).limit_denominator(1001)
    frames = _even(np.asarray(frames))
    options = {"movflags": "+faststart"} if faststart else {}
    target = path if isinstance(path, io.BytesIO) else str(path)
    with av.open(target, mode="w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / rate
        stream.options = {"crf": str(crf), "preset": preset, "bf": "0"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path if isinstance(path, io.BytesIO) else Path(path)


def sampled_fps(fps: float, frame_indices: Sequence[int]) -> float:
    """Playback rate of the kept frames, so a preview lasts as long as the clip."""
    span = frame_indices[-1] - frame_indices[0]
    return fps * (len(frame_indices) - 1) / span if span > 0 else fps


def preview_bytes(
    frames: np.ndarray,
    boxes: Sequence[Sequence[int] | None],
    fps: float,
    kind: str = "gif",
    fallback: bool = False,
) -> bytes:
    """The clip with its boxes drawn, as a ``"gif"`` (Pillow) or an ``"mp4"`` (PyAV, H.264
    yuv420p).

    GIF: looping, each frame shown 1000/fps ms rounded to 10 ms (GIF's unit, at least 20 ms);
    Pillow merges consecutive identical frames, adding their durations. MP4: odd widths/heights
    are padded by one repeated edge pixel to be even; the frame rate is ``fps`` as a Fraction
    (denominator at most 1001, so a rate read back as 30000/1001 stays exact). Raises ValueError
    for another kind, bad shapes or fps.
    """
    if kind not in ("gif", "mp4"):
        raise ValueError(f"a preview is a gif or an mp4, got {kind!r}")
    rate = _check_fps(fps)
    drawn = draw_boxes(frames, boxes, fallback=fallback)
    if drawn.shape[0] == 0:
        raise ValueError(f"frames must hold at least one frame, got shape {frames.shape}")
    if kind == "gif":
        return _gif(drawn, rate)
    buffer = io.BytesIO()
    encode_mp4(buffer, drawn, rate)
    return buffer.getvalue()


def write_preview(
    path: str | Path,
    frames: np.ndarray,
    boxes: Sequence[Sequence[int] | None],
    fps: float,
    fallback: bool = False,
) -> Path:
    """:func:`preview_bytes` into a .gif or .mp4 file (its suffix says which). Raises ValueError
    for another suffix, bad shapes or fps, FileNotFoundError when the folder does not exist.
    Returns the path written."""
    out = check_output_path(path, PREVIEW_SUFFIXES, "preview")
    data = preview_bytes(frames, boxes, fps, out.suffix.lower()[1:], fallback)
    return write_bytes_atomic(out, data)
