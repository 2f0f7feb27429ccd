"""The hostile-input corpus: small files that cost far more work than their size says, streams that
change shape, and today's bad inputs, written fresh (nothing binary is committed).

``python -m tests.hostile_corpus DIR`` writes every file into DIR and prints one line per file;
tests call :func:`write_corpus` (or a single writer) into a temporary folder. Every clip is made
with PyAV (libx264) from fixed patterns, so two runs write the same bytes.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from testkit import badclips


def _encode(
    out: av.container.OutputContainer, size: tuple[int, int], frames: int, fps: int, start: int = 0
) -> None:
    """Encode ``frames`` frames of ``size`` (w, h) into ``out`` at ``fps``: diagonal bands that
    move a pixel a frame (little to compress, so large frames stay small files)."""
    stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "bf": "0"})
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    time_base = Fraction(1, fps)
    stream.codec_context.time_base = time_base
    w, h = size
    diagonal = np.add.outer(np.arange(h), np.arange(w))
    for i in range(frames):
        bands = ((diagonal + i) * 8 % 256).astype(np.uint8)
        rgb = np.ascontiguousarray(np.stack([bands, 255 - bands, np.full_like(bands, 96)], -1))
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = start + i
        frame.time_base = time_base
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _clip(path: Path, size: tuple[int, int], frames: int, fps: int) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        _encode(out, size, frames, fps)
    return path


def long_tiny_clip(d: str | Path) -> Path:
    """9000 frames of 16x16 at 15 fps (600 s, a few hundred KB): inside the default frame and
    duration limits, but every frame at working size is 9000 x 128 x 128 pixels of work."""
    return _clip(Path(d) / "long_tiny_9000f_16x16.mp4", (16, 16), 9000, 15)


def tiny_clip(d: str | Path) -> Path:
    """60 frames of 16x16 at 15 fps (a few KB): costly only when asked for a large short side."""
    return _clip(Path(d) / "tiny_60f_16x16.mp4", (16, 16), 60, 15)


def wide_clip(d: str | Path) -> Path:
    """30 frames of 3840x2: within the resolution limit, 245760x128 at the default working size."""
    return _clip(Path(d) / "wide_3840x2.mp4", (3840, 2), 30, 15)


def tall_clip(d: str | Path) -> Path:
    """30 frames of 16x2160: 128x17280 at the default working size (one flow pair: seconds)."""
    return _clip(Path(d) / "tall_16x2160.mp4", (16, 2160), 30, 15)


def huge_clip(d: str | Path) -> Path:
    """3 frames of 4096x4096: over the default resolution limit (3840x2160)."""
    return _clip(Path(d) / "huge_4096x4096.mp4", (4096, 4096), 3, 15)


def size_change_clip(d: str | Path) -> Path:
    """An MPEG-TS of 15 frames at 64x64 then 15 at 128x32 (two streams back to back, as a cut
    between two recordings gives): the header says 64x64."""
    path = Path(d) / "size_change_64x64_128x32.ts"
    parts = []
    for size, start in (((64, 64), 0), ((128, 32), 15)):
        buf = io.BytesIO()
        with av.open(buf, "w", format="mpegts") as out:
            _encode(out, size, 15, 25, start)
        parts.append(buf.getvalue())
    path.write_bytes(b"".join(parts))
    return path


# Name → writer. The first six are the costly and changing clips; the rest today's bad inputs.
WRITERS: dict[str, Callable[[Path], Path]] = {
    "long_tiny": long_tiny_clip,
    "tiny": tiny_clip,
    "wide": wide_clip,
    "tall": tall_clip,
    "huge": huge_clip,
    "size_change": size_change_clip,
    "empty": badclips.empty_file,
    "random": badclips.random_bytes,
    "truncated": badclips.truncated_mp4,
    "picture": badclips.image_file,
    "audio_only": badclips.audio_only,
    "one_frame": badclips.one_frame_clip,
}


def write_corpus(d: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write the corpus (or the files ``names`` picks) into ``d``; name → path."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    return {name: WRITERS[name](d) for name in names or WRITERS}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.hostile_corpus DIR", file=sys.stderr)
        return 2
    for name, path in write_corpus(argv[0]).items():
        print(f"{name}\t{path}\t{path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
