"""The speed/quality frontier of the motion-box pipeline: held-out mean IoU against pairs/s.

For each setting tried (working size × TV-L1 budget, region stage at its defaults), score the
synthetic suite as ``bench/box_quality.py`` does (``ours`` only, every frame and
``num_frames=6``), on the tuning seeds and on the held-out seeds; then, back to back in this same
run, measure the CPU speed of the whole per-pair work (flow, motion boundaries, regions, cuts,
boxes) on one thread, on the same frame pairs for every setting. Writes a table, a JSON and a
plot. Flows are cached (``bench-out/flows/``), so a second run costs the region stage and the
speed probe only.

    python bench/frontier.py [--suite all] [--only NAME ...] [--speed-pairs 24]
                             [--json bench/results/frontier.json]
                             [--plot bench/results/frontier.png]

Choosing the presets, on the *tuning seeds* only (the held-out figures are the honest ones):
``balanced`` is the fastest setting at least 3x the speed of ``paper`` (OpenCV's default TV-L1
at 224 px) whose tuning IoU is within 0.01 of the best such setting's (differences that small
are within the noise of two seeds); ``fast`` the fastest within 0.03.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import synthetic  # noqa: E402
from bench.box_quality import (  # noqa: E402
    HELDOUT_SEEDS,
    TRAIN_SEEDS,
    frame_ious,
    kept_frames,
    mean_of,
    run_pipeline,
    suite,
    to_working,
)
from bench.common import cores_line, one_thread  # noqa: E402
from mofo.shared.params import FlowParams, MotionParams, preset_params  # noqa: E402
from mofo.shared.pipeline import analyse_frames  # noqa: E402

MODES = ("every", "num_frames=6")


GRID = {
    224: ("default", "w3"),
    160: ("default", "w3"),
    128: ("w3",),
    112: ("default", "w3", "s4w2", "w3e02"),
    96: ("w3",),
}
BUDGETS = {
    "default": FlowParams(),
    "w3": FlowParams(warps=3),
    "s4w2": FlowParams(scales=4, warps=2),
    "w3e02": FlowParams(warps=3, epsilon=0.02),
}


def settings() -> dict[str, MotionParams]:
    """The settings tried: the presets, and working size × TV-L1 budget (:data:`GRID`)."""
    tried = {name: preset_params(name) for name in ("paper", "balanced", "fast")}
    base = preset_params("balanced")
    for side, budgets in GRID.items():
        for name in budgets:
            tried[f"{side}/{name}"] = dataclasses.replace(base, short_side=side, flow=BUDGETS[name])
    # the presets may coincide with grid points: keep the preset's name only
    seen: dict[str, str] = {}
    unique = {}
    for name, params in tried.items():
        if params.hash() not in seen:
            seen[params.hash()] = name
            unique[name] = params
    return unique


def capped(scenarios, frames: int | None) -> list[synthetic.Scenario]:
    """The scenarios with clips at most ``frames`` long (the frontier's flows cost less)."""
    if frames is None:
        return list(scenarios)
    return [synthetic.with_frames(s, min(s.frames, frames)) for s in scenarios]


@functools.lru_cache(maxsize=256)
def clip_of(scenario: synthetic.Scenario, seed: int) -> synthetic.SyntheticClip:
    return synthetic.make_clip(scenario, seed)


def quality(params: MotionParams, scenarios, seeds) -> dict[str, float]:
    """Mean IoU per sampling mode over the clips, and per camera kind (every frame)."""
    per_mode: dict[str, list[float]] = {mode: [] for mode in MODES}
    per_camera: dict[str, list[float]] = {}
    for scenario in scenarios:
        for seed in seeds:
            clip = clip_of(scenario, seed)
            for mode in MODES:
                kept = kept_frames(len(clip.frames), mode)
                boxes = run_pipeline(clip, params, kept).boxes
                score = mean_of(frame_ious([clip.boxes[k] for k in kept], boxes))
                if score is None:
                    continue
                per_mode[mode].append(score)
                if mode == "every":
                    per_camera.setdefault(scenario.camera, []).append(score)
    out = {mode: float(np.mean(v)) for mode, v in per_mode.items()}
    out |= {f"camera {c}": float(np.mean(v)) for c, v in per_camera.items()}
    return out


def speed_frames(pairs: int) -> list[np.ndarray]:
    """The frames every setting is timed on: consecutive frames of a few suite clips."""
    picks = [synthetic.ALL[0], synthetic.ALL[3], synthetic.ALL[-1]]
    per_clip = max(2, pairs // len(picks) + 1)
    clips = [synthetic.make_clip(synthetic.with_frames(s, per_clip), 7) for s in picks]
    return [c.frames for c in clips]


def pairs_per_second(params: MotionParams, clips: list[np.ndarray]) -> float:
    """Pairs/s of the whole per-pair work (resize excluded) on one thread."""
    works = [to_working(frames, params.short_side)[0] for frames in clips]
    analyse_frames(works[0][:2], params)  # warm up (allocations, OpenCV's first call)
    start = time.perf_counter()
    pairs = 0
    for work in works:
        analyse_frames(work, params)
        pairs += len(work)
    return pairs / (time.perf_counter() - start)


def print_speeds(speeds: dict[str, float]) -> None:
    """One line a setting: pairs/s and the ratio to ``paper`` (when measured)."""
    reference = speeds.get("paper")
    for name, value in speeds.items():
        ratio = f"  {value / reference:5.2f}x paper" if reference else ""
        print(f"{name:16s} {value:8.2f} pairs/s{ratio}")
    print(f"on {cores_line()}")


def plot(path: Path, rows: list[dict], chosen: str) -> None:
    """Held-out IoU (every frame) against pairs/s, log x, drawn with OpenCV."""
    w, h, pad = 900, 560, 70
    image = np.full((h, w, 3), 255, np.uint8)
    speeds = np.log10([r["pairs_per_s"] for r in rows])
    ious = [r["heldout"]["every"] for r in rows]
    x0, x1 = speeds.min() - 0.1, speeds.max() + 0.1
    y0, y1 = min(ious) - 0.03, max(ious) + 0.03

    def at(speed: float, iou: float) -> tuple[int, int]:
        x = pad + (speed - x0) / (x1 - x0) * (w - 2 * pad)
        y = h - pad - (iou - y0) / (y1 - y0) * (h - 2 * pad)
        return round(x), round(y)

    cv2.rectangle(image, (pad, pad), (w - pad, h - pad), (0, 0, 0), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for k in range(int(np.floor(x0)), int(np.ceil(x1)) + 1):
        for m in (1, 2, 5):
            v = np.log10(m) + k
            if x0 <= v <= x1:
                x, _ = at(v, y0)
                cv2.line(image, (x, h - pad), (x, h - pad + 5), (0, 0, 0), 1)
                cv2.putText(image, f"{m * 10.0**k:g}", (x - 10, h - pad + 20), font, 0.4, 0, 1)
    for v in np.arange(np.ceil(y0 * 20) / 20, y1, 0.05):
        _, y = at(x0, v)
        cv2.line(image, (pad - 5, y), (pad, y), (0, 0, 0), 1)
        cv2.putText(image, f"{v:.2f}", (pad - 45, y + 4), font, 0.4, 0, 1)
    cv2.putText(image, "pairs/s, one CPU thread (log)", (w // 2 - 120, h - 25), font, 0.5, 0, 1)
    cv2.putText(image, "held-out mean IoU, every frame", (10, 40), font, 0.5, 0, 1)
    for row, speed, iou in zip(rows, speeds, ious, strict=True):
        colour = (0, 0, 220) if row["name"] == chosen else (200, 90, 0)
        if row["name"] in ("paper", "fast", "balanced"):
            colour = (0, 0, 220) if row["name"] == chosen else (0, 150, 0)
        x, y = at(speed, iou)
        cv2.circle(image, (x, y), 4, colour, -1)
        cv2.putText(image, row["name"], (x + 6, y - 4), font, 0.35, colour, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


LOG_ROW = re.compile(
    r"^\s+(?P<name>\S+)\s+(?P<speed>[\d.]+) pairs/s\s+train (?P<train>[\d.]+)\s+"
    r"held-out (?P<every>[\d.]+) / (?P<six>[\d.]+)"
)


def rows_from_log(path: Path) -> list[dict]:
    """The rows of an earlier run's log (its per-setting lines), to plot them again."""
    rows = []
    for line in path.read_text().splitlines():
        if (m := LOG_ROW.match(line)) is not None:
            rows.append(
                {
                    "name": m["name"],
                    "pairs_per_s": float(m["speed"]),
                    "train": {"every": float(m["train"])},
                    "heldout": {"every": float(m["every"]), "num_frames=6": float(m["six"])},
                }
            )
    if not rows:
        raise SystemExit(f"error: no setting lines in {path}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("classic", "extended", "all"), default="all")
    parser.add_argument("--only", nargs="*", default=None, help="settings to try (names)")
    parser.add_argument("--speed-pairs", type=int, default=24)
    parser.add_argument("--frames", type=int, default=32, help="longest clip scored")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument(
        "--from-log", type=Path, default=None, help="only plot an earlier run's log (with --plot)"
    )
    parser.add_argument("--chosen", default="112/w3", help="drawn as chosen (--from-log)")
    parser.add_argument(
        "--speed-only", action="store_true", help="pairs/s only, back to back (no IoU, no flows)"
    )
    args = parser.parse_args(argv)
    if args.from_log is not None:
        if args.plot is None:
            parser.error("--from-log needs --plot")
        plot(args.plot, rows_from_log(args.from_log), args.chosen)
        return 0
    one_thread()

    tried = settings()
    if args.only:
        tried = {k: v for k, v in tried.items() if k in args.only}
    clips = speed_frames(args.speed_pairs)
    if args.speed_only:
        print_speeds({name: pairs_per_second(p, clips) for name, p in tried.items()})
        return 0
    scenarios = capped(suite(args.suite), args.frames)
    start = time.perf_counter()
    rows = []
    for name, params in tried.items():  # quality first: flows computed here are cached
        t0 = time.perf_counter()
        row = {
            "name": name,
            "short_side": params.short_side,
            "flow": dataclasses.asdict(params.flow),
            "train": quality(params, scenarios, TRAIN_SEEDS),
            "heldout": quality(params, scenarios, HELDOUT_SEEDS),
        }
        rows.append(row)
        print(
            f"  {name:16s} train {row['train']['every']:.3f}  "
            f"held-out {row['heldout']['every']:.3f} / {row['heldout']['num_frames=6']:.3f}  "
            f"({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    for row, params in zip(rows, tried.values(), strict=True):  # then speed, back to back
        row["pairs_per_s"] = pairs_per_second(params, clips)
        print(f"  {row['name']:16s} {row['pairs_per_s']:7.2f} pairs/s", file=sys.stderr, flush=True)
    reference = next((r for r in rows if r["name"] == "paper"), None)
    floor = 3 * reference["pairs_per_s"] if reference else 0.0
    fast_enough = [r for r in rows if r["pairs_per_s"] >= floor] or rows
    best = max(r["train"]["every"] for r in fast_enough)

    def fastest_within(margin: float) -> str:
        near = [r for r in fast_enough if r["train"]["every"] >= best - margin]
        return max(near, key=lambda r: r["pairs_per_s"])["name"]

    chosen, fastest = fastest_within(0.01), fastest_within(0.03)

    print(
        f"{'setting':16s} {'pairs/s':>8s} {'x paper':>8s} {'train':>6s} {'held':>6s} {'h n=6':>6s}"
    )
    for row in sorted(rows, key=lambda r: r["pairs_per_s"]):
        ratio = row["pairs_per_s"] / reference["pairs_per_s"] if reference else float("nan")
        mark = {chosen: "  <- balanced", fastest: "  <- fast"}.get(row["name"], "")
        print(
            f"{row['name']:16s} {row['pairs_per_s']:8.2f} {ratio:8.2f} "
            f"{row['train']['every']:6.3f} {row['heldout']['every']:6.3f} "
            f"{row['heldout']['num_frames=6']:6.3f}{mark}"
        )
    wall = time.perf_counter() - start
    print(f"wall {wall:.0f} s on {cores_line()}")
    if args.plot is not None:
        plot(args.plot, rows, chosen)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(["python", "bench/frontier.py", *(argv or sys.argv[1:])])
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "wall_s": wall,
                    "balanced": chosen,
                    "fast": fastest,
                    "rows": rows,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
