"""How the region defaults were chosen: a grid search on synthetic clips, checked on held-out seeds.

    python bench/tune_regions.py [--tune-seeds 0 1] [--check-seeds 2 3] [--frames 10]

OpenCV TV-L1 flows of every clip are computed once (cached under bench-out/); each setting of the
region stage (smoothing, border, outlier clamp, threshold, second-region ratio, temporal window)
is then scored by mean per-frame IoU against the ground truth, like bench/box_quality.py. The best
setting on the tuning seeds is reported with its score on the held-out seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from bench.synthetic import SCENARIOS, make_clip, with_frames
from mofo.shared.decode import motion_partners
from mofo.shared.flow.gray import rgb_to_gray
from mofo.shared.params import MotionParams
from mofo.shared.pipeline import boxes_from_maps, fill_from_neighbours, flow_pairs, motion_maps
from mofo.shared.record import box_iou

CACHE = Path(__file__).resolve().parents[1] / "bench-out" / "tune-flows"

# Second round; the first (sigma 0.015–0.03, border 0.02/0.05, quantile 1/0.995/0.98, ratio
# 0–0.5, window 1/3) put every top setting at its smallest sigma.
GRID = {
    "sigma": [0.005, 0.0075, 0.01, 0.015],
    "threshold_rel": [0.3, 0.4, 0.5],
    "threshold_abs": [0.02, 0.05],
    "border": [0.03, 0.05, 0.08],
    "outlier_quantile": [0.99, 0.995],
    "region_ratio": [0.0, 0.15],
}


def clip_flows(scenario, seed: int, frames: int) -> tuple[torch.Tensor, list]:
    clip = make_clip(with_frames(scenario, frames), seed)
    path = CACHE / f"{scenario.name}-{seed}-{frames}-pairs.pt"  # one pair per frame
    if path.exists():
        return torch.load(path), clip.boxes
    gray = rgb_to_gray(torch.from_numpy(clip.frames))
    count = gray.shape[0]
    kept = list(range(count))
    flow = flow_pairs(gray, kept, motion_partners(kept, count, 1), MotionParams(), batch_size=16)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(flow, path)
    return flow, clip.boxes


def score(flow: torch.Tensor, truth: list, params: MotionParams) -> float:
    maps = motion_maps(flow, params)
    boxes = fill_from_neighbours(boxes_from_maps(maps, params, None))  # as the pipeline does
    ious = [0.0 if b is None else box_iou(b, gt) for b, gt in zip(boxes, truth, strict=True) if gt]
    return float(np.mean(ious)) if ious else float("nan")


def evaluate(data: dict, params: MotionParams) -> dict[str, float]:
    per = {name: [score(f, t, params) for f, t in clips] for name, clips in data.items()}
    out = {name: float(np.mean(v)) for name, v in per.items()}
    out["all"] = float(np.mean([v for vs in per.values() for v in vs]))
    out["shaky"] = float(np.mean([v for n, vs in per.items() if "shaky" in n for v in vs]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--check-seeds", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--frames", type=int, default=10)
    args = parser.parse_args()
    start = time.perf_counter()
    tune = {s.name: [clip_flows(s, k, args.frames) for k in args.tune_seeds] for s in SCENARIOS}
    check = {s.name: [clip_flows(s, k, args.frames) for k in args.check_seeds] for s in SCENARIOS}
    print(f"flows ready in {time.perf_counter() - start:.0f}s", flush=True)

    base = MotionParams()
    results = []
    for values in itertools.product(*GRID.values()):
        params = dataclasses.replace(base, **dict(zip(GRID, values, strict=True)))
        s = evaluate(tune, params)
        results.append((s["all"] + s["shaky"], s, params))
    results.sort(key=lambda r: -r[0])
    print(f"defaults: tune {evaluate(tune, base)}\n          check {evaluate(check, base)}")
    for _, s, params in results[:5]:
        chosen = {k: getattr(params, k) for k in GRID}
        c = evaluate(check, params)
        print(
            f"{chosen}\n  tune all {s['all']:.3f} shaky {s['shaky']:.3f} | "
            f"check all {c['all']:.3f} shaky {c['shaky']:.3f}\n  check per scenario "
            + " ".join(f"{k}={v:.2f}" for k, v in c.items() if k not in ("all", "shaky"))
        )
    print(f"wall {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
