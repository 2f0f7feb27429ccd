"""Write the bundled sample clip, shared/data/sample.mp4: a synthetic scene from the box-quality
benchmark (static camera, two textured movers, static props), 16 frames at 12 fps.

    python scripts/make_sample_clip.py
"""

from __future__ import annotations

from pathlib import Path

from bench.synthetic import SCENARIOS, make_clip, with_frames, write_mp4

OUT = Path(__file__).resolve().parents[1] / "shared" / "data" / "sample.mp4"


def main() -> None:
    scenario = next(s for s in SCENARIOS if s.name == "static-2mover")
    clip = make_clip(with_frames(scenario, 16), seed=7)
    write_mp4(clip, OUT, fps=12)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB); true boxes: {clip.boxes[0]} ...")


if __name__ == "__main__":
    main()
