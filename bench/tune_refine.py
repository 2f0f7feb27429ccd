"""How the box refinement (shared/refine.py) was chosen: the halo measured, ways to remove it
compared, settings tuned on some seeds and reported on held-out ones.

    python bench/tune_refine.py [--tune-seeds 0 1] [--check-seeds 2 3] [--frames 10]

Clips from bench/synthetic.py at working short side 224 (as rendered) and 112 (frames resized
with INTER_AREA, ground truth scaled). Each frame's flow to its partner (the next frame; the last
frame's, to the one before, as the pipeline pairs them) is OpenCV TV-L1 with default settings,
cached under bench-out/refine-flows/. Regions come from today's map stage (motion_maps and the
region threshold with MotionParams defaults); the *baseline* box is the union of a frame's
regions, as the pipeline has it. Methods compared on the same regions:

- refine: mofo.shared.refine.refine_boxes (residual flow against the fitted camera motion);
- its ablations: without the lead pull-back, the floor, the drop of still regions, and refining
  the union box instead of each region;
- raw-map: each region's box shrunk to the pixels of the *unsmoothed* motion-boundary map at or
  above a fraction of its maximum in that box (a higher threshold near the region);
- shrink: each region's box shrunk by a fixed band (px at short side 224, scaled).

Score: mean per-frame IoU with the ground-truth union box, frames without ground truth skipped,
frames without a box of their own filled from neighbours as the pipeline does (missing = 0).
Halo factor: mean over frames of the box's width (height) over the ground truth's.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import one_thread
from bench.synthetic import SCENARIOS, make_clip, with_frames
from mofo.shared.flow import optical_flow
from mofo.shared.flow.gray import rgb_to_gray
from mofo.shared.motion_boundary import motion_boundary
from mofo.shared.params import FlowParams, MotionParams
from mofo.shared.pipeline import fill_from_neighbours
from mofo.shared.record import Box, box_iou, union_box
from mofo.shared.refine import dominant_motion, refine_boxes
from mofo.shared.regions import (
    clamp_outliers,
    label_regions,
    region_stats,
    smooth,
    suppress_border,
    threshold_masks,
)

CACHE = Path(__file__).resolve().parents[1] / "bench-out" / "refine-flows"
LOG = Path(__file__).resolve().parent / "results" / "tune_refine.log"
SIZES = (224, 112)

GRID = {
    "fraction": [0.4, 0.5, 0.6],
    "floor_quantile": [0.0, 0.1, 0.3],
    "lead": [0.0, 0.5, 1.0],
    "min_motion": [0.0, 0.002, 0.003, 0.004, 0.005],
}
RAW_FRACTIONS = [0.2, 0.3, 0.4, 0.5, 0.6]
SHRINK_PX = [1, 2, 3, 4, 5, 6, 8]


def _scale(box: list[int] | None, s: float, width: int, height: int) -> list[int] | None:
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return [
        max(0, math.floor(x1 * s)),
        max(0, math.floor(y1 * s)),
        min(width, math.ceil(x2 * s)),
        min(height, math.ceil(y2 * s)),
    ]


def frame_flows(gray: torch.Tensor) -> torch.Tensor:
    """Each frame's flow to its partner as the pipeline pairs them (the next frame; the last
    frame, the one before): (T, 1, H, W) → (T, 2, H, W), OpenCV TV-L1 with default settings."""
    first = torch.arange(gray.shape[0])
    second = torch.cat((first[1:], first[-2:-1]))
    pairs = zip(first.tolist(), second.tolist(), strict=True)
    return torch.cat(
        [optical_flow(gray[a : a + 1], gray[b : b + 1], FlowParams()) for a, b in pairs]
    )


def clip_data(scenario, seed: int, frames: int, short: int) -> dict:
    """Flows and ground truth of one clip at working short side ``short`` (cached on disk)."""
    path = CACHE / f"{scenario.name}-{seed}-{frames}-{short}.pt"
    if path.exists():
        data = torch.load(path)
        if data["flow"].shape[0] == len(data["truth"]) - 1:  # older cache: add the last frame's
            gray = rgb_to_gray(data["frames"][-2:].flip(0).contiguous())
            last = optical_flow(gray[:1], gray[1:], FlowParams())
            data["flow"] = torch.cat((data["flow"], last))
            torch.save(data, path)
        return data
    clip = make_clip(with_frames(scenario, frames), seed)
    rgb = clip.frames
    truth, movers = clip.boxes, clip.mover_boxes
    if short != rgb.shape[1]:
        s = short / rgb.shape[1]
        height, width = short, round(rgb.shape[2] * s)
        rgb = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in rgb])
        truth = [_scale(b, s, width, height) for b in truth]
        movers = [[_scale(b, s, width, height) for b in ms] for ms in movers]
    gray = rgb_to_gray(torch.from_numpy(np.ascontiguousarray(rgb)))
    flow = frame_flows(gray)
    data = {"flow": flow, "truth": truth, "movers": movers, "frames": torch.from_numpy(rgb)}
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


def boundary_maps(flow: torch.Tensor, params: MotionParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's map stage: (raw, smoothed) (T, 1, H, W) maps, raw = border-suppressed and
    clamped but not smoothed (a copy of mofo.shared.pipeline.motion_maps, window 1)."""
    short = min(flow.shape[-2:])
    raw = motion_boundary(flow)
    raw = suppress_border(raw, round(params.border * short))
    raw = clamp_outliers(raw, params.outlier_quantile)
    return raw, smooth(raw, params.sigma * short)


def region_boxes(maps: torch.Tensor, params: MotionParams) -> list[list[Box]]:
    """Each frame's strongest regions' boxes, before their union (mofo.shared.regions'
    strongest_region_boxes without the last step)."""
    frames, _, height, width = maps.shape
    labels = label_regions(threshold_masks(maps, params.threshold_rel, params.threshold_abs))
    out: list[list[Box]] = [[] for _ in range(frames)]
    if int(labels.max()) == 0:
        return out
    stats = region_stats(labels, maps[:, 0])[1:].numpy()
    stats = stats[stats[:, 1] >= max(1, round(params.min_region * height * width))]
    stats = stats[np.lexsort((-stats[:, 2], stats[:, 0]))]  # by frame, then mass descending
    strongest: dict[int, float] = {}
    for row in stats:
        t = int(row[0])
        strongest.setdefault(t, row[2])
        if len(out[t]) < params.regions and row[2] >= params.region_ratio * strongest[t]:
            out[t].append([int(v) for v in row[3:7]])
    return out


def raw_map_boxes(raw: torch.Tensor, regions: list[list[Box]], fraction: float) -> list[Box | None]:
    """Idea (b): each region shrunk to its unsmoothed map's pixels >= fraction × their max."""
    out = []
    for t, boxes in enumerate(regions):
        kept = []
        for x1, y1, x2, y2 in boxes:
            crop = raw[t, 0, y1:y2, x1:x2]
            if float(crop.max()) <= 0:
                continue
            ys, xs = torch.nonzero(crop >= fraction * crop.max(), as_tuple=True)
            x1, y1 = x1 + int(xs.min()), y1 + int(ys.min())
            kept.append(
                [x1, y1, x1 + int(xs.max() - xs.min()) + 1, y1 + int(ys.max() - ys.min()) + 1]
            )
        out.append(union_box(kept))
    return out


def shrunk_boxes(regions: list[list[Box]], band: int) -> list[Box | None]:
    """Idea (c): each region's box shrunk by ``band`` px per side (not below 1 px)."""
    out = []
    for boxes in regions:
        kept = []
        for x1, y1, x2, y2 in boxes:
            bx, by = min(band, (x2 - x1 - 1) // 2), min(band, (y2 - y1 - 1) // 2)
            kept.append([x1 + bx, y1 + by, x2 - bx, y2 - by])
        out.append(union_box(kept))
    return out


@dataclasses.dataclass
class Prepared:
    """One clip, ready to score: flow, ground truth, map regions, raw map, camera motion."""

    flow: torch.Tensor
    truth: list[Box | None]
    regions: list[list[Box]]
    raw: torch.Tensor
    affine: torch.Tensor


def prepare(data: dict, params: MotionParams) -> Prepared:
    raw, maps = boundary_maps(data["flow"], params)
    return Prepared(
        data["flow"], data["truth"], region_boxes(maps, params), raw, dominant_motion(data["flow"])
    )


def clip_score(boxes: list[Box | None], truth: list[Box | None]) -> tuple[float, list, list]:
    """Mean IoU over frames with ground truth, and the width / height ratios to it."""
    filled = fill_from_neighbours(boxes)
    pairs = [(b, gt) for b, gt in zip(filled, truth, strict=True) if gt]
    ious = [0.0 if b is None else box_iou(b, gt) for b, gt in pairs]
    wr = [(b[2] - b[0]) / (gt[2] - gt[0]) for b, gt in pairs if b]
    hr = [(b[3] - b[1]) / (gt[3] - gt[1]) for b, gt in pairs if b]
    return float(np.mean(ious)) if ious else float("nan"), wr, hr


Method = Callable[[Prepared], list[Box | None]]


def evaluate(clips: dict[str, list[Prepared]], method: Method) -> dict[str, dict[str, float]]:
    """Per scenario and overall: mean IoU, halo factors (mean width and height ratios)."""
    out = {}
    every: dict[str, list] = {"iou": [], "w": [], "h": []}
    for name, items in clips.items():
        acc: dict[str, list] = {"iou": [], "w": [], "h": []}
        for clip in items:
            iou, wr, hr = clip_score(method(clip), clip.truth)
            acc["iou"].append(iou)
            acc["w"] += wr
            acc["h"] += hr
        for key in acc:
            every[key] += acc[key]
        out[name] = {k: float(np.mean(v)) if v else float("nan") for k, v in acc.items()}
    out["all"] = {k: float(np.mean(v)) for k, v in every.items()}
    return out


def refine_with(**settings: float) -> Method:
    return lambda c: refine_boxes(c.flow, c.regions, affine=c.affine, **settings)


def baseline(clip: Prepared) -> list[Box | None]:
    return [union_box(r) for r in clip.regions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--check-seeds", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--log", type=Path, default=LOG)
    args = parser.parse_args()
    one_thread()
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    start = time.perf_counter()
    params = MotionParams()
    sets = {}
    for short in SIZES:
        for split, seeds in (("tune", args.tune_seeds), ("check", args.check_seeds)):
            sets[short, split] = {
                s.name: [prepare(clip_data(s, k, args.frames, short), params) for k in seeds]
                for s in SCENARIOS
            }
    say(f"flows and regions ready in {time.perf_counter() - start:.0f}s")
    say(f"tune seeds {args.tune_seeds}, held-out seeds {args.check_seeds}, {args.frames} frames")

    def tuned(method: Callable[..., Method], grid: dict[str, list]) -> tuple[dict, float]:
        """The setting with the best mean IoU over both sizes on the tuning seeds."""
        best: tuple[float, dict] = (-1.0, {})
        for values in itertools.product(*grid.values()):
            setting = dict(zip(grid, values, strict=True))
            m = method(**setting)
            score = np.mean([evaluate(sets[short, "tune"], m)["all"]["iou"] for short in SIZES])
            best = max(best, (float(score), setting), key=lambda b: b[0])
        return best[1], best[0]

    chosen, score = tuned(refine_with, GRID)
    say(
        f"refine: {len(list(itertools.product(*GRID.values())))} settings; best on tune seeds "
        f"(mean IoU over both sizes {score:.3f}): {chosen}"
    )
    raw_best, raw_score = tuned(
        lambda fraction: lambda c: raw_map_boxes(c.raw, c.regions, fraction),
        {"fraction": RAW_FRACTIONS},
    )
    say(f"raw-map: best fraction {raw_best['fraction']} (tune {raw_score:.3f})")

    def shrink(band: int) -> Method:
        return lambda c: shrunk_boxes(c.regions, round(band * min(c.flow.shape[-2:]) / 224))

    shrink_best, shrink_score = tuned(shrink, {"band": SHRINK_PX})
    say(f"shrink: best band {shrink_best['band']} px at 224 (tune {shrink_score:.3f})")

    methods: dict[str, Method] = {
        "baseline": baseline,
        "refine": refine_with(**chosen),
        "no lead": refine_with(**{**chosen, "lead": 0.0}),
        "no floor": refine_with(**{**chosen, "floor_quantile": 0.0}),
        "keep still": refine_with(**{**chosen, "min_motion": 0.0}),
        "union box": lambda c: refine_boxes(
            c.flow, [[b] if b else [] for b in baseline(c)], affine=c.affine, **chosen
        ),
        "raw-map": lambda c: raw_map_boxes(c.raw, c.regions, raw_best["fraction"]),
        "shrink": shrink(shrink_best["band"]),
    }
    for short in SIZES:
        for split in ("tune", "check"):
            seeds = args.tune_seeds if split == "tune" else args.check_seeds
            results = {name: evaluate(sets[short, split], m) for name, m in methods.items()}
            say()
            say(f"== short side {short}, {split} seeds {seeds}: mean IoU")
            names = [*sets[short, split], "all"]
            say(f"{'scenario':15s}" + "".join(f"{m:>11s}" for m in methods))
            for name in names:
                say(f"{name:15s}" + "".join(f"{results[m][name]['iou']:11.3f}" for m in methods))
            say("-- halo factor (box / truth), width x height: baseline -> refine")
            for name in names:
                b, r = results["baseline"][name], results["refine"][name]
                say(f"{name:15s} {b['w']:.2f} x {b['h']:.2f} -> {r['w']:.2f} x {r['h']:.2f}")
    for short in SIZES:
        clips = [c for items in sets[short, "check"].values() for c in items]
        t0 = time.perf_counter()
        for c in clips:
            refine_boxes(c.flow, c.regions, **chosen)  # camera fit included
        per_frame = (time.perf_counter() - t0) / sum(len(c.truth) for c in clips)
        say(f"refine_boxes at short side {short}: {1000 * per_frame:.1f} ms/frame (CPU, 1 thread)")
    say(f"\nwall {time.perf_counter() - start:.0f}s")
    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.log.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
