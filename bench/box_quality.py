"""Box quality on synthetic clips with exact ground truth: our pipeline against the paper's.

For every scenario of :data:`bench.synthetic.SCENARIOS` and every seed, render the clip, run the
paper's public-code pipeline (:mod:`bench.paper_pipeline`, both its public and literal reading,
on one set of OpenCV TV-L1 flows) and ours (``shared.pipeline.analyse_frames``, default
``MotionParams``, CPU), and score the mean per-frame IoU against the ground-truth union box of the
movers (frames without a visible mover are skipped; a missing prediction scores 0).

    python bench/box_quality.py [--seeds N] [--frames T] [--json OUT] [--only NAME ...]

Prints a table per scenario, the overall and shaky-camera means and the wall time; writes, for
the first seed, one PNG per scenario under ``bench-out/box_quality/`` (GT green, paper blue,
paper-literal yellow, ours red; under each frame the eq. 1 map of the pair and our smoothed map).
When ``shared.pipeline`` cannot be imported, the paper reference still runs and ours is
reported as not available.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.paper_pipeline import motion_boundary, opencv_flows, paper_boxes  # noqa: E402
from bench.synthetic import SCENARIOS, Scenario, SyntheticClip, make_clip, with_frames  # noqa: E402
from shared.record import box_iou  # noqa: E402

Box = list[int]
OursFn = Callable[[np.ndarray], tuple[list[Box | None], np.ndarray, bool]]

GREEN, BLUE, RED, YELLOW = (0, 200, 0), (40, 90, 255), (255, 40, 40), (255, 220, 0)
OUT_DIR = ROOT / "bench-out" / "box_quality"


@dataclass
class Result:
    """Scores of one clip (mean per-frame IoU; None where a method did not run)."""

    scenario: str
    seed: int
    paper: float | None
    paper_literal: float | None
    ours: float | None
    ours_fallback: bool | None
    ours_error: str | None
    paper_s: float
    ours_s: float | None
    gt_frames: int
    per_frame: dict[str, list[float | None]] = field(default_factory=dict)


def load_ours() -> tuple[OursFn | None, str]:
    """Our pipeline as ``frames -> (boxes, motion maps, fallback)``, or None and the reason."""
    try:
        from shared.params import MotionParams
        from shared.pipeline import analyse_frames
    except Exception as exc:  # not written yet, or broken mid-edit: the reference still runs
        return None, f"{type(exc).__name__}: {exc}"

    def run(frames: np.ndarray) -> tuple[list[Box | None], np.ndarray, bool]:
        result = analyse_frames(frames, MotionParams(), device="cpu")
        return list(result.boxes), np.asarray(result.motion), bool(result.fallback)

    return run, "shared.pipeline.analyse_frames, MotionParams() defaults, device=cpu"


def frame_ious(gt: list[Box | None], pred: list[Box | None]) -> list[float | None]:
    """IoU per frame; None where the ground truth has no box, 0 where the prediction has none."""
    return [
        None if g is None else (0.0 if p is None else box_iou(g, p))
        for g, p in zip(gt, pred, strict=True)
    ]


def mean_of(values: list[float | None]) -> float | None:
    """Mean over the frames that count (ground truth present); None when none does."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _draw_box(image: np.ndarray, box: Box | None, colour: tuple[int, int, int], width: int) -> None:
    if box is not None:
        cv2.rectangle(image, (box[0], box[1]), (box[2] - 1, box[3] - 1), colour, width)


def _heat(values: np.ndarray, scale: float) -> np.ndarray:
    """A motion map as an RGB heat image, ``scale`` mapping to full brightness."""
    grey = np.clip(values / max(scale, 1e-9) * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def save_png(
    path: Path,
    clip: SyntheticClip,
    paper: list[Box | None],
    literal: list[Box | None],
    ours: list[Box | None] | None,
    paper_maps: np.ndarray,
    our_maps: np.ndarray | None,
    caption: str,
) -> None:
    """A grid of the clip's frames with all boxes, and the motion maps under each frame."""
    frames_n, height, width = clip.frames.shape[:3]
    half = (width // 2, height // 2)
    p_scale = float(np.percentile(paper_maps, 99.9)) if paper_maps.size else 1.0
    o_scale = float(np.percentile(our_maps, 99.9)) if our_maps is not None else 1.0
    cells = []
    for t in range(frames_n):
        image = clip.frames[t].copy()
        _draw_box(image, clip.boxes[t], GREEN, 2)
        _draw_box(image, literal[t], YELLOW, 1)
        _draw_box(image, paper[t], BLUE, 1)
        if ours is not None:
            _draw_box(image, ours[t], RED, 1)
        cv2.putText(image, str(t), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        pair = min(t, len(paper_maps) - 1)
        left = cv2.resize(_heat(paper_maps[pair], p_scale), half, interpolation=cv2.INTER_AREA)
        _draw_box(left, _half(clip.boxes[t]), GREEN, 1)
        if our_maps is not None:
            right = cv2.resize(_heat(our_maps[t], o_scale), half, interpolation=cv2.INTER_AREA)
            _draw_box(right, _half(clip.boxes[t]), GREEN, 1)
        else:
            right = np.zeros_like(left)
        below = np.hstack([left, right])
        below = cv2.resize(below, (width, below.shape[0]))
        cells.append(np.vstack([image, below]))
    cols = 5
    while len(cells) % cols:
        cells.append(np.zeros_like(cells[0]))
    grid = np.vstack([np.hstack(cells[i : i + cols]) for i in range(0, len(cells), cols)])
    header = np.zeros((22, grid.shape[1], 3), np.uint8)
    text = f"{caption}   GT green | paper blue | paper-literal yellow | ours red"
    cv2.putText(header, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack([header, grid]), cv2.COLOR_RGB2BGR))


def _half(box: Box | None) -> Box | None:
    return None if box is None else [v // 2 for v in box]


def run_clip(scenario: Scenario, seed: int, ours: OursFn | None, png: Path | None) -> Result:
    """Render one clip, run both pipelines, score them, optionally save the PNG."""
    clip = make_clip(scenario, seed)
    t0 = time.perf_counter()
    flows = opencv_flows(clip.frames)
    paper = paper_boxes(clip.frames, flows, "public")
    literal = paper_boxes(clip.frames, flows, "literal")
    paper_s = time.perf_counter() - t0

    our_boxes = our_maps = fallback = error = ours_s = None
    if ours is not None:
        t1 = time.perf_counter()
        try:
            our_boxes, our_maps, fallback = ours(clip.frames)
        except Exception:  # one failing clip must not hide the rest of the table
            error = traceback.format_exc(limit=3).strip().splitlines()[-1]
        ours_s = time.perf_counter() - t1

    per_frame = {
        "paper": frame_ious(clip.boxes, paper),
        "paper_literal": frame_ious(clip.boxes, literal),
    }
    if our_boxes is not None:
        per_frame["ours"] = frame_ious(clip.boxes, our_boxes)
    if png is not None:
        maps = np.stack([motion_boundary(f) for f in flows])
        caption = f"{scenario.name} seed {seed}"
        save_png(png, clip, paper, literal, our_boxes, maps, our_maps, caption)
    return Result(
        scenario=scenario.name,
        seed=seed,
        paper=mean_of(per_frame["paper"]),
        paper_literal=mean_of(per_frame["paper_literal"]),
        ours=mean_of(per_frame["ours"]) if "ours" in per_frame else None,
        ours_fallback=fallback,
        ours_error=error,
        paper_s=paper_s,
        ours_s=ours_s,
        gt_frames=sum(b is not None for b in clip.boxes),
        per_frame=per_frame,
    )


def _fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def _mean(results: list[Result], key: str) -> float | None:
    """Mean of one score over clips; None when any clip lacks it (e.g. ours did not run)."""
    values = [getattr(r, key) for r in results if r.gt_frames]
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def summarise(results: list[Result], scenarios: list[Scenario]) -> dict[str, dict]:
    """Means per scenario (over seeds), overall, and over the shaky-camera scenarios."""
    table: dict[str, dict] = {}
    groups = {s.name: [r for r in results if r.scenario == s.name] for s in scenarios}
    groups["mean (all)"] = results
    groups["mean (shaky)"] = [
        r for r in results if any(s.name == r.scenario and s.camera == "shaky" for s in scenarios)
    ]
    for name, rows in groups.items():
        if rows:
            table[name] = {key: _mean(rows, key) for key in ("ours", "paper", "paper_literal")} | {
                "fallbacks": sum(bool(r.ours_fallback) for r in rows),
                "errors": sum(r.ours_error is not None for r in rows),
            }
    return table


def print_table(table: dict[str, dict], ours_note: str) -> None:
    print(f"{'scenario':16s} {'ours':>6s} {'paper':>6s} {'p-lit':>6s}  notes")
    for name, row in table.items():
        if name.startswith("mean (all)"):
            print("-" * 48)
        notes = []
        if row["fallbacks"]:
            notes.append(f"{row['fallbacks']} fallback")
        if row["errors"]:
            notes.append(f"{row['errors']} error")
        line = f"{name:16s} {_fmt(row['ours'])} {_fmt(row['paper'])} {_fmt(row['paper_literal'])}"
        print(f"{line}  {', '.join(notes)}".rstrip())
    print(f"ours: {ours_note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per scenario (0..N-1)")
    parser.add_argument("--frames", type=int, default=10, help="frames per clip")
    parser.add_argument("--json", type=Path, default=None, help="write all scores here")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    parser.add_argument("--no-png", action="store_true", help="skip the PNGs of the first seed")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.frames < 2:
        parser.error("need --seeds >= 1 and --frames >= 2")

    scenarios = [with_frames(s, args.frames) for s in SCENARIOS]
    if args.only:
        unknown = set(args.only) - {s.name for s in scenarios}
        if unknown:
            parser.error(f"unknown scenarios {sorted(unknown)}")
        scenarios = [s for s in scenarios if s.name in args.only]

    ours, ours_note = load_ours()
    if ours is None:
        ours_note = f"not available ({ours_note})"
    print(f"{len(scenarios)} scenarios x {args.seeds} seeds, {args.frames} frames", file=sys.stderr)

    start = time.perf_counter()
    results: list[Result] = []
    for scenario in scenarios:
        for seed in range(args.seeds):
            png = None if args.no_png or seed else OUT_DIR / f"{scenario.name}.png"
            result = run_clip(scenario, seed, ours, png)
            results.append(result)
            print(
                f"  {scenario.name} seed {seed}: ours {_fmt(result.ours)} paper "
                f"{_fmt(result.paper)} literal {_fmt(result.paper_literal)}"
                + (f"  [ours error: {result.ours_error}]" if result.ours_error else ""),
                file=sys.stderr,
            )
    wall = time.perf_counter() - start

    table = summarise(results, scenarios)
    print_table(table, ours_note)
    paper_s = sum(r.paper_s for r in results)
    ours_s = sum(r.ours_s or 0.0 for r in results)
    print(
        f"wall {wall:.1f} s (paper flows+boxes {paper_s:.1f} s, ours {ours_s:.1f} s) on "
        f"{platform.machine()}, {os.cpu_count()} CPUs, OpenCV {cv2.getNumThreads()} threads"
    )
    if not args.no_png:
        print(f"PNGs of seed 0: {OUT_DIR}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": " ".join(["python", "bench/box_quality.py", *(argv or sys.argv[1:])]),
            "frames": args.frames,
            "seeds": args.seeds,
            "ours": ours_note,
            "wall_s": wall,
            "summary": table,
            "clips": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
