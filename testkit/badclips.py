"""Writers of small good and bad inputs for decoder tests.

Each function writes one file into the directory ``d`` and returns its path. Everything is made
here with PyAV / Pillow / numpy (seeded), so tests need no fixtures on disk and stay fast.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from mofo.shared.render import encode_mp4

_FPS = 25


def _textured_square_frames(frames: int, size: tuple[int, int]) -> list[np.ndarray]:
    """RGB frames of a noise-textured square moving right and down over a smooth background."""
    w, h = size
    rng = np.random.default_rng(7)
    side = max(8, min(w, h) // 3)
    texture = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack(
        [(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), np.full_like(xx, 96)], axis=-1
    ).astype(np.uint8)
    out = []
    for t in range(frames):
        frame = background.copy()
        x0 = min(2 + 3 * t, w - side)
        y0 = min(2 + 2 * t, h - side)
        frame[y0 : y0 + side, x0 : x0 + side] = texture
        out.append(frame)
    return out


def _write_mp4(path: Path, frames: list[np.ndarray], faststart: bool = False) -> Path:
    """Encode RGB frames into an mp4 at 25 fps (libx264, yuv420p, no B-frames)."""
    return encode_mp4(path, np.stack(frames), _FPS, crf=23, preset="ultrafast", faststart=faststart)


def small_clip(d: str | Path, frames: int = 8, size: tuple[int, int] = (96, 64)) -> Path:
    """A valid mp4 (libx264, yuv420p, 25 fps) of a moving textured square; ``size`` is (w, h)."""
    path = Path(d) / f"small_{frames}f_{size[0]}x{size[1]}.mp4"
    return _write_mp4(path, _textured_square_frames(frames, size))


def one_frame_clip(d: str | Path) -> Path:
    """An mp4 holding exactly one frame: decodable, but too short for motion."""
    path = Path(d) / "one_frame.mp4"
    return _write_mp4(path, _textured_square_frames(1, (96, 64)))


def huge_resolution_clip(d: str | Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A tiny mp4 that is 'huge' relative to a small limit, e.g. DecodeLimits(max_width=32)."""
    path = Path(d) / f"huge_{size[0]}x{size[1]}.mp4"
    return _write_mp4(path, _textured_square_frames(3, size))


def empty_file(d: str | Path) -> Path:
    """A zero-byte file with a video extension."""
    path = Path(d) / "empty.mp4"
    path.write_bytes(b"")
    return path


def random_bytes(d: str | Path, n: int = 64 * 1024, seed: int = 0) -> Path:
    """``n`` seeded random bytes named like a video."""
    path = Path(d) / "random.mp4"
    path.write_bytes(np.random.default_rng(seed).bytes(n))
    return path


def truncated_mp4(d: str | Path, keep: float = 0.4, faststart: bool = True) -> Path:
    """A valid 30-frame mp4 cut to ``keep`` of its bytes.

    With ``faststart`` the header survives and decoding breaks mid-stream (the first few frames
    still decode); without it the header (written last) is cut off and the file cannot be opened.
    """
    full = _write_mp4(
        Path(d) / "full.mp4", _textured_square_frames(30, (96, 64)), faststart=faststart
    )
    data = full.read_bytes()
    full.unlink()
    path = Path(d) / f"truncated_{round(keep * 100)}{'_faststart' if faststart else ''}.mp4"
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def image_file(d: str | Path, size: tuple[int, int] = (96, 64), fmt: str = "png") -> Path:
    """A PNG (or ``fmt="jpeg"``) picture; FFmpeg opens it as a one-frame 'video'."""
    path = Path(d) / f"picture.{'jpg' if fmt == 'jpeg' else fmt}"
    Image.fromarray(_textured_square_frames(1, size)[0]).save(path, format=fmt.upper())
    return path


def headerless_clip(d: str | Path, frames: int = 30, size: tuple[int, int] = (96, 64)) -> Path:
    """A raw H.264 stream (.h264): no frame count, duration or timestamps in any header."""
    path = Path(d) / f"raw_{frames}f.h264"
    h264 = {"preset": "ultrafast", "crf": "23", "bf": "0"}
    with av.open(str(path), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=_FPS, options=h264)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for rgb in _textured_square_frames(frames, size):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def audio_only(d: str | Path, seconds: float = 1.0, rate: int = 16_000) -> Path:
    """A WAV (pcm_s16le, mono) with a 440 Hz sine and no video stream."""
    path = Path(d) / "tone.wav"
    n = int(seconds * rate)
    samples = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.int16)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def slow_clip(d: str | Path, frames: int = 40, fps: float = 1.0) -> Path:
    """A small mp4 at a low frame rate: few frames, but a long duration (frames / fps seconds)."""
    path = Path(d) / f"slow_{frames}f_{fps:g}fps.mp4"
    frames_rgb = np.stack(_textured_square_frames(frames, (64, 48)))
    return encode_mp4(path, frames_rgb, fps, crf=23, preset="ultrafast")


def numbered_clip(
    d: str | Path,
    frames: int = 150,
    size: tuple[int, int] = (64, 48),
    gop: int = 10,
    bframes: int = 0,
) -> Path:
    """An mp4 (libx264, 25 fps) whose frame ``i`` shows ``i`` in binary, to check frame ranges.

    The width holds 8 vertical stripes, least significant bit on the left: white for 1, black
    for 0, which survives compression and resizing. A keyframe every ``gop`` frames makes seeks
    land mid-file; ``bframes`` > 0 stores frames out of display order, as cameras often do.
    """
    if not 0 < frames <= 256 or size[0] % 8:
        raise ValueError(f"needs 1-256 frames and a width divisible by 8, got {frames}, {size}")
    w, h = size
    path = Path(d) / f"numbered_{frames}f_g{gop}_b{bframes}.mp4"
    options = {"preset": "ultrafast", "crf": "18", "g": str(gop), "bf": str(bframes)}
    time_base = Fraction(1, _FPS)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=_FPS, options=options)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        for i in range(frames):
            row = np.repeat((i >> np.arange(8)) & 1, w // 8).astype(np.uint8) * 255
            rgb = np.ascontiguousarray(np.broadcast_to(row[None, :, None], (h, w, 3)))
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
