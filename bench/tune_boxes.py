"""Tuning the region stage at a working size and TV-L1 budget, on cached flows, checked on
held-out seeds.

    python bench/tune_boxes.py [--short-side 112] [--warps 3] [--frames 16]

Scores (every frame, mean IoU as ``bench/box_quality.py``) each setting of a small grid of the
region and refinement settings on the tuning seeds (0–1) of the whole suite, clips capped at
``--frames`` frames, and reports the best with its score on the held-out seeds (2–3), which the
choice never sees. Flows come from ``bench-out/flows/`` (``bench/frontier.py`` fills it), so a
grid costs only the region stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import synthetic  # noqa: E402
from bench.box_quality import (  # noqa: E402
    HELDOUT_SEEDS,
    TRAIN_SEEDS,
    frame_ious,
    mean_of,
    run_pipeline,
)
from bench.common import one_thread  # noqa: E402
from bench.frontier import capped  # noqa: E402
from mofo.shared.params import FlowParams, MotionParams, preset_params  # noqa: E402

GRID = {
    "threshold_rel": [0.3, 0.4, 0.5],
    "regions": [1, 2],
    "refine_fraction": [0.4, 0.5],
    "refine_min_motion": [0.004, 0.008],
    "sigma": [0.005, 0.01],
}


@functools.lru_cache(maxsize=512)
def clip_of(scenario: synthetic.Scenario, seed: int) -> synthetic.SyntheticClip:
    return synthetic.make_clip(scenario, seed)


def score(params: MotionParams, scenarios, seeds) -> tuple[float, dict[str, float]]:
    """Mean IoU over the clips (every frame), and per camera kind."""
    per_camera: dict[str, list[float]] = {}
    for scenario in scenarios:
        for seed in seeds:
            clip = clip_of(scenario, seed)
            kept = list(range(len(clip.frames)))
            boxes = run_pipeline(clip, params, kept).boxes
            value = mean_of(frame_ious(clip.boxes, boxes))
            if value is not None:
                per_camera.setdefault(scenario.camera, []).append(value)
    means = {camera: float(np.mean(v)) for camera, v in per_camera.items()}
    return float(np.mean([v for vs in per_camera.values() for v in vs])), means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short-side", type=int, default=112)
    parser.add_argument("--scales", type=int, default=5)
    parser.add_argument("--warps", type=int, default=5)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args(argv)
    one_thread()
    base = dataclasses.replace(
        preset_params("balanced"),
        short_side=args.short_side,
        flow=FlowParams(scales=args.scales, warps=args.warps),
    )
    scenarios = capped(synthetic.ALL, args.frames)
    start = time.perf_counter()
    results = []
    names = list(GRID)
    for values in itertools.product(*GRID.values()):
        params = dataclasses.replace(base, **dict(zip(names, values, strict=True)))
        train, _ = score(params, scenarios, TRAIN_SEEDS)
        results.append((train, values, params))
        print(f"  {dict(zip(names, values, strict=True))}: train {train:.3f}", flush=True)
    results.sort(key=lambda r: -r[0])
    base_train, _ = score(base, scenarios, TRAIN_SEEDS)
    base_held, base_held_cams = score(base, scenarios, HELDOUT_SEEDS)
    print(f"defaults: train {base_train:.3f}, held-out {base_held:.3f} {base_held_cams}")
    for train, values, params in results[:3]:
        held, cams = score(params, scenarios, HELDOUT_SEEDS)
        setting = dict(zip(names, values, strict=True))
        print(f"{setting}: train {train:.3f}, held-out {held:.3f} {cams}")
    print(f"wall {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
