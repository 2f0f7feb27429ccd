"""Tests for mofo.shared.render: box drawing, motion colour maps, PNG strips, GIF and MP4
previews."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mofo.shared.render import (
    DEFAULT_COLOR,
    FALLBACK_COLOR,
    STRIP_BACKGROUND,
    STRIP_GAP,
    draw_box,
    draw_boxes,
    motion_map_image,
    motion_map_png,
    preview_bytes,
    strip_size,
    write_motion_map,
    write_preview,
)

RED = (255, 0, 0)
BG = 40


def clip(t: int = 4, h: int = 24, w: int = 32, value: int = BG) -> np.ndarray:
    """A flat grey clip."""
    return np.full((t, h, w, 3), value, np.uint8)


def moving_clip(t: int = 6, h: int = 48, w: int = 64) -> np.ndarray:
    """A clip whose frames all differ (so GIF encoders keep every frame)."""
    frames = clip(t, h, w)
    for i in range(t):
        frames[i, 30:40, 2 + 4 * i : 8 + 4 * i] = 200
    return frames


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean (…, H, W) mask of pixels that differ in any channel."""
    return (a != b).any(axis=-1)


def ring(h: int, w: int, box: list[int], thickness: int) -> np.ndarray:
    """Expected mask of a solid border ``thickness`` wide inside ``box`` (x2/y2 exclusive)."""
    x1, y1, x2, y2 = box
    mask = np.zeros((h, w), bool)
    mask[y1:y2, x1:x2] = True
    mask[y1 + thickness : y2 - thickness, x1 + thickness : x2 - thickness] = False
    return mask


# --------------------------------------------------------------------------- draw_boxes


def test_draw_box_edges_coloured_rest_unchanged() -> None:
    frames = clip(2, 24, 32)
    box = [5, 4, 20, 15]
    out = draw_boxes(frames, [box, box], color=RED, thickness=2)
    expected = ring(24, 32, box, 2)
    for t in range(2):
        assert np.array_equal(changed(out[t], frames[t]), expected)
        assert (out[t][expected] == RED).all()
    # corners and the last pixel row/column of the box carry the colour
    assert tuple(out[0, 4, 5]) == RED
    assert tuple(out[0, 14, 19]) == RED
    # just inside the border and just outside the box keep the background
    assert tuple(out[0, 6, 7]) == (BG, BG, BG)
    assert tuple(out[0, 15, 19]) == (BG, BG, BG)
    assert tuple(out[0, 14, 20]) == (BG, BG, BG)
    assert tuple(out[0, 3, 5]) == (BG, BG, BG)


def test_draw_box_does_not_modify_input() -> None:
    frames = clip(1)
    before = frames.copy()
    out = draw_boxes(frames, [[1, 1, 10, 10]])
    assert np.array_equal(frames, before)
    assert out is not frames
    assert (out[0, 1, 1] == DEFAULT_COLOR).all()


def test_exclusive_x2_y2_exact_on_tiny_frame() -> None:
    frames = clip(1, 5, 6)
    out = draw_boxes(frames, [[1, 1, 4, 3]], color=RED, thickness=1)
    mask = changed(out[0], frames[0])
    expected = np.zeros((5, 6), bool)
    expected[1:3, 1:4] = True  # a 3x2 box is all border at thickness 1
    assert np.array_equal(mask, expected)


def test_one_pixel_box_and_thick_border_fill_the_box_only() -> None:
    frames = clip(2, 6, 6)
    out = draw_boxes(frames, [[2, 3, 3, 4], [1, 1, 5, 5]], color=RED, thickness=3)
    first = np.zeros((6, 6), bool)
    first[3, 2] = True
    second = np.zeros((6, 6), bool)
    second[1:5, 1:5] = True  # thickness > half the box: the whole box, nothing outside
    assert np.array_equal(changed(out[0], frames[0]), first)
    assert np.array_equal(changed(out[1], frames[1]), second)


def test_box_partly_outside_frame_is_clipped_to_it_first() -> None:
    """The outline runs along the frame's edge where the box reaches past it."""
    frames = clip(1, 10, 10)
    out = draw_boxes(frames, [[-5, 2, 7, 30]], color=RED, thickness=1)
    mask = changed(out[0], frames[0])
    assert mask[2, :7].all() and mask[9, :7].all()  # top edge; bottom along the frame's edge
    assert mask[2:, 0].all() and mask[2:, 6].all()  # left along the frame's edge; right x2-1 = 6
    assert not mask[3:9, 1:6].any()  # the inside keeps its values
    assert not mask[:, 7:].any()
    assert not mask[:2].any()


# --------------------------------------------------------------------------- draw_box: one box, the
# routine previews and training's pictures share


GREEN = (0, 255, 0)


def _drawn(frame: np.ndarray) -> list[str]:
    """The frame as rows of '#' (the box's colour) and '.' (anything else)."""
    green = (frame == GREEN).all(-1)
    return ["".join("#" if g else "." for g in row) for row in green]


BLANK = np.zeros((6, 8, 3), dtype=np.uint8)


def test_draw_box_outlines_the_exclusive_box_exactly():
    out = draw_box(BLANK, [1, 1, 5, 4], GREEN)
    assert _drawn(out) == [
        "........",
        ".####...",  # corner at (x1, y1) = (1, 1)
        ".#..#...",
        ".####...",  # corner at (x2 - 1, y2 - 1) = (4, 3)
        "........",
        "........",
    ]
    assert not BLANK.any()  # the input is left alone


def test_draw_box_covers_every_pixel_a_fractional_box_touches_or_rounds_like_records():
    """Training's pictures cover what a moved box touches; previews round as records do."""
    covered = draw_box(BLANK, [0.5, 1.2, 3.1, 3.9], GREEN, cover=True)
    assert _drawn(covered) == _drawn(draw_box(BLANK, [0, 1, 4, 4], GREEN))
    rounded = draw_box(BLANK, [0.5, 1.2, 3.1, 3.9], GREEN)
    assert _drawn(rounded) == _drawn(draw_box(BLANK, [1, 1, 3, 4], GREEN))  # halves up


def test_draw_box_thickness_grows_inward():
    assert _drawn(draw_box(BLANK, [0, 0, 6, 5], GREEN, thickness=2)) == [
        "######..",
        "######..",
        "##..##..",
        "######..",
        "######..",
        "........",
    ]


def test_draw_box_clips_a_box_reaching_past_the_frame():
    assert _drawn(draw_box(BLANK, torch.tensor([-3.0, 4.0, 3.0, 20.0]), GREEN, cover=True)) == [
        "........",
        "........",
        "........",
        "........",
        "###.....",
        "###.....",
    ]


@pytest.mark.parametrize(
    "box",
    [[3, 3, 3, 5], [5, 2, 2, 4], [8, 0, 12, 6], [-5, -5, 0, 0], [float("nan"), 0, 4, 4]],
    ids=["empty", "inverted", "right-of-frame", "above-left-of-frame", "nan"],
)
def test_draw_box_with_no_area_in_the_frame_draws_nothing(box):
    assert not draw_box(BLANK, box, GREEN).any()
    assert not draw_box(BLANK, box, GREEN, cover=True).any()


def test_none_and_empty_boxes_leave_frames_untouched() -> None:
    frames = moving_clip(3)
    out = draw_boxes(frames, [None, [5, 5, 5, 9], None])
    assert np.array_equal(out, frames)
    out = draw_boxes(frames, [None, None, None], fallback=True)
    assert np.array_equal(out, frames)


def test_numpy_boxes_accepted() -> None:
    frames = clip(2)
    boxes = np.array([[1, 1, 6, 6], [2, 2, 8, 8]], dtype=np.int64)
    out = draw_boxes(frames, boxes, color=RED, thickness=1)
    assert tuple(out[1, 2, 2]) == RED
    assert tuple(out[1, 7, 7]) == RED


def test_fallback_is_grey_dashed_and_labelled() -> None:
    frames = clip(1, 60, 80)
    box = [2, 2, 78, 58]
    out = draw_boxes(frames, [box], color=RED, thickness=1, fallback=True)
    mask = changed(out[0], frames[0])
    # no pixel of the detection colour, some grey border pixels
    assert not (out[0] == RED).all(axis=-1).any()
    top = out[0, 2, 2:78]
    grey = (top == FALLBACK_COLOR).all(axis=-1)
    assert 0 < grey.sum() < top.shape[0]  # dashed: gaps along the edge
    # a label is written inside the box, below the top edge
    assert mask[4:20, 3:60].any()
    # nothing outside the box
    outside = np.ones_like(mask)
    outside[2:58, 2:78] = False
    assert not mask[outside].any()


@pytest.mark.parametrize(
    ("frames", "fragment"),
    [
        (np.zeros((4, 24, 32), np.uint8), "(4, 24, 32)"),
        (np.zeros((4, 24, 32, 4), np.uint8), "(4, 24, 32, 4)"),
        (np.zeros((24, 32, 3), np.uint8), "(24, 32, 3)"),
        (np.zeros((4, 24, 32, 3), np.float32), "float32"),
    ],
)
def test_bad_frame_shape_raises(frames: np.ndarray, fragment: str) -> None:
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)") as info:
        draw_boxes(frames, [None] * len(frames))
    assert fragment in str(info.value)


def test_box_count_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="got 3 boxes for 4 frames"):
        draw_boxes(clip(4), [None] * 3)


@pytest.mark.parametrize("box", [[1, 2, 3], [1.0, 2, float("nan"), 4], "abcd", [1, 2, "3", 4]])
def test_malformed_box_raises(box: object) -> None:
    with pytest.raises(ValueError, match="box 0 must be 4 numbers"):
        draw_boxes(clip(1), [box])  # type: ignore[list-item]


def test_fractional_box_drawn_at_the_nearest_pixels() -> None:
    """Working-size boxes have sub-pixel sides; they are drawn at the nearest whole pixels."""
    frames = clip(1)
    whole = draw_boxes(frames, [[2, 3, 12, 9]])
    assert np.array_equal(draw_boxes(frames, [[2.25, 2.5, 11.5, 9.25]]), whole)
    assert not np.array_equal(draw_boxes(frames, [[2.75, 2.5, 11.5, 9.25]]), whole)


# --------------------------------------------------------------------------- motion_map_image


def test_motion_map_zeros_constant_no_nan() -> None:
    out = motion_map_image(np.zeros((3, 8, 10), np.float32))
    assert out.shape == (3, 8, 10, 3)
    assert out.dtype == np.uint8
    assert (out == out[0, 0, 0]).all()
    zero = cv2.applyColorMap(np.zeros((1, 1), np.uint8), cv2.COLORMAP_TURBO)[0, 0, ::-1]
    assert tuple(out[0, 0, 0]) == tuple(zero)  # the colormap's zero colour, in RGB


def test_motion_map_normalised_over_whole_clip() -> None:
    turbo = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_TURBO)[0, :, ::-1]
    motion = np.zeros((2, 4, 4), np.float32)
    motion[0, 1, 1] = 2.0  # half the clip's peak
    motion[1, 2, 2] = 4.0  # the clip's peak
    out = motion_map_image(motion)
    assert tuple(out[0, 1, 1]) == tuple(turbo[128])  # not re-scaled to 255 on its own frame
    assert tuple(out[1, 2, 2]) == tuple(turbo[255])
    assert tuple(out[0, 0, 0]) == tuple(turbo[0])


def test_motion_map_ignores_nan_and_negative() -> None:
    motion = np.array([[[np.nan, -3.0], [1.0, 0.0]]], np.float32)
    out = motion_map_image(motion)
    assert np.array_equal(out[0, 0, 0], out[0, 1, 1])
    assert np.array_equal(out[0, 0, 1], out[0, 1, 1])
    assert not np.array_equal(out[0, 1, 0], out[0, 1, 1])


def test_motion_map_bad_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"\(4, 8, 8, 1\)"):
        motion_map_image(np.zeros((4, 8, 8, 1), np.float32))


# --------------------------------------------------------------------------- write_motion_map


@pytest.mark.parametrize(("count", "max_columns", "columns"), [(10, 4, 4), (3, 8, 3), (5, 1, 1)])
def test_strip_size_and_readback(
    tmp_path: Path, count: int, max_columns: int, columns: int
) -> None:
    h, w = 20, 30
    frames = moving_clip(count, h, w)
    motion = np.random.default_rng(0).random((count, h, w)).astype(np.float32)
    boxes = [[2, 3, 12, 15]] * count
    path = write_motion_map(tmp_path / "strip.png", frames, motion, boxes, max_columns=max_columns)
    assert path == tmp_path / "strip.png"
    expected = (columns * w + (columns - 1) * STRIP_GAP, 2 * h + STRIP_GAP)
    assert strip_size(count, h, w, max_columns) == expected
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == expected
        pixels = np.asarray(image.convert("RGB"))
    # first column: the first frame with its box on top, its motion map below
    top = draw_boxes(frames[:1], boxes[:1])[0]
    assert np.array_equal(pixels[:h, :w], top)
    assert (pixels[h : h + STRIP_GAP] == STRIP_BACKGROUND).all()
    assert tuple(pixels[h + STRIP_GAP + 3, 2]) == DEFAULT_COLOR
    if columns > 1:
        assert (pixels[:, w : w + STRIP_GAP] == STRIP_BACKGROUND).all()
        # last column is the last frame
        last = draw_boxes(frames[-1:], boxes[-1:])[0]
        assert np.array_equal(pixels[:h, -w:], last)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_strip_resizes_motion_of_other_resolution(tmp_path: Path) -> None:
    frames = moving_clip(2, 20, 30)
    motion = np.zeros((2, 10, 15), np.float32)
    path = write_motion_map(tmp_path / "s.png", frames, motion, [None, None])
    with Image.open(path) as image:
        assert image.size == strip_size(2, 20, 30)


def test_strip_rejects_mismatched_motion(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(3, 20, 30\)"):
        write_motion_map(tmp_path / "s.png", clip(2, 20, 30), np.zeros((3, 20, 30)), [None] * 2)
    assert list(tmp_path.iterdir()) == []


def test_strip_wrong_suffix_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png"):
        write_motion_map(tmp_path / "s.jpg", clip(2), np.zeros((2, 24, 32)), [None] * 2)
    assert list(tmp_path.iterdir()) == []


def test_strip_missing_folder_raises(tmp_path: Path) -> None:
    target = tmp_path / "nope" / "s.png"
    with pytest.raises(FileNotFoundError, match="nope"):
        write_motion_map(target, clip(2), np.zeros((2, 24, 32)), [None] * 2)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- write_preview


def test_gif_frames_and_duration(tmp_path: Path) -> None:
    frames = moving_clip(6)
    path = write_preview(tmp_path / "p.gif", frames, [[1, 1, 20, 20]] * 6, fps=10)
    with Image.open(path) as image:
        assert image.format == "GIF"
        assert image.n_frames == 6
        assert image.size == (64, 48)
        assert image.info["loop"] == 0
        for i in range(6):
            image.seek(i)
            assert image.info["duration"] == 100
        image.seek(0)
        first = np.asarray(image.convert("RGB"))
    assert np.abs(first[1, 10].astype(int) - DEFAULT_COLOR).max() <= 8
    assert list(tmp_path.iterdir()) == [path]


def test_gif_duration_rounded_to_10ms(tmp_path: Path) -> None:
    path = write_preview(tmp_path / "p.gif", moving_clip(3), [None] * 3, fps=30)
    with Image.open(path) as image:
        assert image.info["duration"] == 30


def test_mp4_frames_size_fps_and_box(tmp_path: Path) -> None:
    t, h, w = 8, 48, 64
    frames = clip(t, h, w, value=128)
    box = [16, 12, 48, 36]
    path = write_preview(tmp_path / "p.mp4", frames, [box] * t, fps=Fraction(30000, 1001))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == Fraction(30000, 1001)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == t
    assert decoded[0].shape == (h, w, 3)
    for img in (decoded[0], decoded[-1]):
        left_edge = img[18:30, 16:18].reshape(-1, 3).astype(int).mean(axis=0)
        top_edge = img[12:14, 22:42].reshape(-1, 3).astype(int).mean(axis=0)
        assert np.abs(left_edge - DEFAULT_COLOR).max() < 40
        assert np.abs(top_edge - DEFAULT_COLOR).max() < 40
        inside = img[20:28, 24:40].reshape(-1, 3).astype(int)
        outside = img[:8, :].reshape(-1, 3).astype(int)
        assert np.abs(inside - 128).max() < 12
        assert np.abs(outside - 128).max() < 12
    assert list(tmp_path.iterdir()) == [path]


def test_mp4_odd_size_padded_to_even(tmp_path: Path) -> None:
    frames = moving_clip(3, 47, 63)
    path = write_preview(tmp_path / "p.mp4", frames, [None] * 3, fps=12.5)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (64, 48)
        assert stream.average_rate == Fraction(25, 2)
        assert sum(1 for _ in container.decode(stream)) == 3


@pytest.mark.parametrize("name", ["p.avi", "p.png", "p"])
def test_preview_wrong_suffix_raises(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"preview must end in \.gif or \.mp4, got"):
        write_preview(tmp_path / name, clip(2), [None] * 2, fps=10)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["p.gif", "p.mp4"])
def test_preview_missing_folder_raises(tmp_path: Path, name: str) -> None:
    target = tmp_path / "missing" / name
    with pytest.raises(FileNotFoundError, match="missing"):
        write_preview(target, clip(2), [None] * 2, fps=10)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fps", [0, -5, float("nan"), float("inf")])
def test_preview_bad_fps_raises(tmp_path: Path, fps: float) -> None:
    with pytest.raises(ValueError, match="fps"):
        write_preview(tmp_path / "p.gif", clip(2), [None] * 2, fps=fps)
    assert list(tmp_path.iterdir()) == []


def test_preview_bad_shape_raises_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(2, 24, 32\)"):
        write_preview(tmp_path / "p.mp4", np.zeros((2, 24, 32), np.uint8), [None] * 2, fps=10)
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_the_usual_mode(tmp_path: Path) -> None:
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    umask = os.umask(0o022)
    try:
        out = write_preview(tmp_path / "p.gif", frames, [None, None], fps=5)
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mofo.shared.render as render

    def boom(out, frames: np.ndarray, fps: float) -> None:
        out.write(b"half")
        raise RuntimeError("encoder died")

    monkeypatch.setattr(render, "encode_mp4", boom)
    target = tmp_path / "p.mp4"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="encoder died"):  # before any file is touched
        write_preview(target, clip(2), [None] * 2, fps=10)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]

    real_write = Path.write_bytes

    def disk_full(self: Path, data: bytes) -> int:
        real_write(self, data[:4])
        raise OSError(28, "No space left on device")

    gif = tmp_path / "p.gif"
    gif.write_bytes(b"old gif")
    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError, match="No space left"):  # while the file is written
        write_preview(gif, clip(2), [None] * 2, fps=10)
    assert gif.read_bytes() == b"old gif"  # the previous file is kept whole
    assert sorted(tmp_path.iterdir()) == sorted([target, gif])  # no half-written one is left


# ------------------------------------------------------------ bytes, with files a thin layer


def test_pictures_are_bytes_and_the_files_hold_exactly_them(tmp_path: Path) -> None:
    """The service sends the bytes as they are; the command line writes the same bytes."""
    frames = moving_clip(4)
    boxes = [[4, 4, 30, 20], None, [10, 8, 50, 40], [0, 0, 64, 48]]
    motion = np.random.default_rng(0).random((4, 48, 64)).astype(np.float32)
    png = motion_map_png(frames, motion, boxes)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert write_motion_map(tmp_path / "m.png", frames, motion, boxes).read_bytes() == png
    gif = preview_bytes(frames, boxes, 12.0, "gif")
    assert gif.startswith(b"GIF89a")
    assert write_preview(tmp_path / "p.gif", frames, boxes, 12.0).read_bytes() == gif
    mp4 = preview_bytes(frames, boxes, 12.0, "mp4")
    with av.open(str(write_preview(tmp_path / "p.mp4", frames, boxes, 12.0))) as container:
        assert container.streams.video[0].frames == 4
    with av.open(__import__("io").BytesIO(mp4)) as container:  # the bytes decode alone
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 4 and decoded[0].shape == (48, 64, 3)
    with pytest.raises(ValueError, match="a preview is a gif or an mp4, got 'webm'"):
        preview_bytes(frames, boxes, 12.0, "webm")
