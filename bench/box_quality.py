"""Box quality on synthetic clips with exact ground truth: our pipeline, the previous defaults
and the paper's public-code pipeline, every frame and at sampled frames.

For every scenario (``--suite classic`` the eight 10-frame scenes of the first release,
``extended`` the harder 64–128-frame clips, ``all``) and every seed of the split (``train``:
seeds 0–1, what tuning may look at; ``heldout``: seeds 2–3, which tuning never sees), render the
clip and score each method by the mean per-frame IoU against the ground-truth union box of the
movers (frames without a visible mover are skipped; a missing box scores 0), at the frames each
sampling keeps:

- ``every``: every frame; ``num_frames=6`` and ``fps=4``: the frames ``mofo boxes --num-frames
  6`` / ``--fps 4`` would keep (clips are taken as 25 fps).
- ``ours``: ``analyse_frames`` with a quality preset (default ``balanced``, the library's
  defaults): each kept frame's motion measured to the next source frame.
- ``previous``: the first release's defaults (224 px, OpenCV's default TV-L1, its region stage,
  no refinement, no cut detection), and at sampled frames its flow between consecutive *kept*
  frames, as it was.
- ``paper``: the paper's public-code box pipeline (:mod:`bench.paper_pipeline`) on consecutive
  OpenCV flows, its boxes read at the kept frames.

    python bench/box_quality.py [--suite all] [--split heldout] [--quality balanced]
                                [--json OUT] [--png] [--only NAME ...] [--jobs N]

Prints a table per scenario and sampling, means per camera kind and overall, cut detection's
precision and recall on clips with a cut, and the wall time. Flows are cached under
``bench-out/flows/`` (keyed by clip, working size and TV-L1 settings; ``MOFO_FLOW_CACHE`` names
another folder), so a second run costs
only the region stage; ``bench/frontier.py`` measures speed in its own run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench import synthetic  # noqa: E402
from bench.common import cores_line, one_thread  # noqa: E402
from bench.paper_pipeline import opencv_flows, paper_boxes  # noqa: E402
from mofo.shared.decode import motion_partners, plan_frames, working_size  # noqa: E402
from mofo.shared.flow import exposure, optical_flow  # noqa: E402
from mofo.shared.params import FlowParams, MotionParams, preset_params  # noqa: E402
from mofo.shared.pipeline import FrameAnalysis, analyse_frames  # noqa: E402
from mofo.shared.record import box_iou, scale_box  # noqa: E402

Box = list[int]
TRAIN_SEEDS = (0, 1)
HELDOUT_SEEDS = (2, 3)
CLIP_FPS = 25.0  # the rate synthetic clips are taken to have, for --fps sampling
MODES: dict[str, dict] = {"every": {}, "num_frames=6": {"num_frames": 6}, "fps=4": {"fps": 4.0}}
METHODS = ("ours", "previous", "paper")
FLOW_CACHE = Path(os.environ.get("MOFO_FLOW_CACHE", ROOT / "bench-out" / "flows"))
OUT_DIR = ROOT / "bench-out" / "box_quality"


def previous_params() -> MotionParams:
    """The first release's defaults (algorithm version 1): 224 px, OpenCV's default TV-L1, its
    region stage, nothing refined, no cut detection."""
    return preset_params("paper", refine=False, cut_threshold=None)


def suite(name: str) -> tuple[synthetic.Scenario, ...]:
    return {
        "classic": synthetic.SCENARIOS,
        "extended": synthetic.EXTENDED,
        "all": synthetic.ALL,
    }[name]


def split_seeds(split: str) -> tuple[int, ...]:
    return {"train": TRAIN_SEEDS, "heldout": HELDOUT_SEEDS, "all": TRAIN_SEEDS + HELDOUT_SEEDS}[
        split
    ]


def kept_frames(count: int, mode: str) -> list[int]:
    """The frames a sampling keeps of a ``count``-frame clip at :data:`CLIP_FPS`."""
    return plan_frames(np.arange(count) / CLIP_FPS, MotionParams(**MODES[mode]), CLIP_FPS)


def to_working(frames: np.ndarray, short_side: int) -> tuple[np.ndarray, float, float]:
    """Frames resized as decoding resizes them; (frames, sx, sy) to map boxes back."""
    height, width = frames.shape[1:3]
    w, h = working_size(width, height, short_side)
    if (w, h) == (width, height):
        return frames, 1.0, 1.0
    small = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])
    return small, width / w, height / h


# --------------------------------------------------------------------------- cached flows


def _flow_key(
    clip: synthetic.SyntheticClip, size: tuple[int, int], flow: FlowParams, backend, step: int = 1
):
    fields = [clip.scenario.name, clip.seed, clip.scenario.frames, size]
    fields += [dataclasses.asdict(flow), backend]
    if flow.exposure == "gain":  # the matching tolerance changes which pairs are measured again
        fields.append(["exposure_tolerance", exposure.TOLERANCE])
    if step != 1:  # step 1 keeps the keys its flows were first saved under
        fields.append(["motion_step", step])
    text = json.dumps(fields)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class DenseFlows:
    """A clip's flows at one working size, TV-L1 setting and motion step: each frame's flow to
    its partner (:func:`motion_partners`), i.e. every kept frame's pair at that step."""

    flow: torch.Tensor  # (T, 2, h, w)
    seconds: float  # what computing them took (one thread)
    step: int = 1

    def pair(self, first: int, second: int) -> torch.Tensor | None:
        count = self.flow.shape[0]
        if second == motion_partners([first], count, self.step)[0]:
            return self.flow[first]
        return None


def dense_flows(
    clip: synthetic.SyntheticClip, work: np.ndarray, params: MotionParams
) -> DenseFlows:
    """The clip's dense flows at ``params``' size and TV-L1 setting, from the cache or computed."""
    size = tuple(work.shape[1:3])
    step = params.motion_step
    path = FLOW_CACHE / f"{_flow_key(clip, size, params.flow, params.backend, step)}.pt"
    if path.exists():
        saved = torch.load(path)
        return DenseFlows(saved["flow"], saved["seconds"], step)
    from mofo.shared.flow.gray import rgb_to_gray

    gray = rgb_to_gray(torch.from_numpy(work))
    count = len(work)
    first = list(range(count))
    second = motion_partners(first, count, step)
    start = time.perf_counter()
    flow = optical_flow(gray[first], gray[second], params.flow, params.backend)
    seconds = time.perf_counter() - start
    FLOW_CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")  # whole files only, whoever reads them
    torch.save({"flow": flow, "seconds": seconds}, partial)
    os.replace(partial, path)
    return DenseFlows(flow, seconds, step)


def cached_flow_fn(dense: DenseFlows):
    """A flow function for ``analyse_frames`` that takes pairs from ``dense`` when it has them."""

    def flow_fn(gray, first, second, params):
        out = []
        for a, b in zip(first, second, strict=True):
            cached = dense.pair(a, b)
            if cached is None:
                cached = optical_flow(gray[[a]], gray[[b]], params.flow, params.backend)[0]
            out.append(cached)
        return torch.stack(out)

    return flow_fn


# --------------------------------------------------------------------------- methods


@dataclass
class MethodResult:
    boxes: list[Box | None]  # per kept frame, clip pixels
    cuts: list[bool] = field(default_factory=list)
    regions_s: float = 0.0


def run_pipeline(
    clip: synthetic.SyntheticClip,
    params: MotionParams,
    kept: list[int],
    old_sampling: bool = False,
) -> MethodResult:
    """Our pipeline at ``params`` on the kept frames; with ``old_sampling`` the flow runs between
    consecutive kept frames, as the first release did."""
    work, sx, sy = to_working(clip.frames, params.short_side)
    height, width = clip.frames.shape[1:3]
    if old_sampling and len(kept) < len(work):
        analysis = analyse_frames(work[kept], params)
    else:
        dense = dense_flows(clip, work, params)
        partners = motion_partners(kept, len(work), params.motion_step)
        analysis = analyse_frames(
            work, params, kept=kept, partners=partners, flow_fn=cached_flow_fn(dense)
        )
    return _scaled(analysis, sx, sy, width, height)


def _scaled(analysis: FrameAnalysis, sx: float, sy: float, width: int, height: int):
    boxes = [scale_box(b, sx, sy, width, height) for b in analysis.boxes]
    return MethodResult(boxes, list(analysis.cuts), analysis.timings.get("regions", 0.0))


def run_paper(clip: synthetic.SyntheticClip, kept: list[int]) -> MethodResult:
    """The public-code pipeline on consecutive OpenCV flows (from the flow cache)."""
    dense = dense_flows(clip, clip.frames, previous_params())
    flows = dense.flow[:-1].permute(0, 2, 3, 1).numpy()  # (T-1, H, W, 2)
    if len(flows) == 0:
        flows = opencv_flows(clip.frames)
    boxes = paper_boxes(clip.frames, flows, "public")
    return MethodResult([boxes[k] for k in kept])


# --------------------------------------------------------------------------- scoring


def frame_ious(truth: Sequence[Box | None], pred: Sequence[Box | None]) -> list[float | None]:
    """IoU per frame; None where the ground truth has no box, 0 where the prediction has none."""
    return [
        None if g is None else (0.0 if p is None else box_iou(g, p))
        for g, p in zip(truth, pred, strict=True)
    ]


def mean_of(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


@dataclass
class ClipScores:
    scenario: str
    camera: str
    seed: int
    scores: dict[str, dict[str, float | None]]  # method → mode → mean IoU
    cuts_true: list[int]
    cuts_found: list[int]
    seconds: float


def score_clip(
    scenario: synthetic.Scenario,
    seed: int,
    params: MotionParams,
    png: Path | None,
    methods: Sequence[str] = METHODS,
) -> ClipScores:
    clip = synthetic.make_clip(scenario, seed)
    start = time.perf_counter()
    methods = list(dict.fromkeys(("ours", *methods)))  # ours always: its cuts are reported
    scores: dict[str, dict[str, float | None]] = {m: {} for m in methods}
    runs = {
        "ours": lambda kept: run_pipeline(clip, params, kept),
        "previous": lambda kept: run_pipeline(clip, previous_params(), kept, old_sampling=True),
        "paper": lambda kept: run_paper(clip, kept),
    }
    found: list[int] = []
    for mode in MODES:
        kept = kept_frames(len(clip.frames), mode)
        truth = [clip.boxes[k] for k in kept]
        results = {m: runs[m](kept) for m in methods}
        for method, result in results.items():
            scores[method][mode] = mean_of(frame_ious(truth, result.boxes))
        if mode == "every":
            found = [k for k, cut in zip(kept, results["ours"].cuts, strict=True) if cut]
            if png is not None:
                save_png(png, clip, {m: r.boxes for m, r in results.items()})
    return ClipScores(
        scenario=scenario.name,
        camera=scenario.camera,
        seed=seed,
        scores=scores,
        cuts_true=list(getattr(clip, "cuts", [])),
        cuts_found=found,
        seconds=time.perf_counter() - start,
    )


def _report(row: ClipScores) -> None:
    every = {m: row.scores[m]["every"] for m in row.scores}
    print(
        f"  {row.scenario} seed {row.seed}: "
        + " ".join(f"{m} {v:.3f}" for m, v in every.items() if v is not None)
        + f"  ({row.seconds:.0f} s)",
        file=sys.stderr,
        flush=True,
    )


def score_clips(jobs: Sequence[tuple], workers: int = 1) -> list[ClipScores]:
    """:func:`score_clip` for each job's arguments, in the jobs' order; with ``workers`` > 1 in
    that many processes, one thread each (a clip's scores are the same either way)."""
    if workers == 1 or len(jobs) < 2:
        rows = []
        for job in jobs:
            rows.append(score_clip(*job))
            _report(rows[-1])
        return rows
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    done: dict[int, ClipScores] = {}
    with ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=get_context("spawn"), initializer=one_thread
    ) as pool:
        futures = {pool.submit(score_clip, *job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            _report(done[futures[future]])
    return [done[i] for i in range(len(jobs))]


COLOURS = {"truth": (0, 200, 0), "ours": (255, 40, 40), "previous": (255, 220, 0)}
COLOURS["paper"] = (40, 90, 255)


def save_png(path: Path, clip: synthetic.SyntheticClip, boxes: dict[str, list]) -> None:
    """Up to 10 frames spread over the clip with every method's boxes (truth green, ours red,
    previous yellow, paper blue)."""
    count = len(clip.frames)
    picks = np.unique(np.linspace(0, count - 1, min(10, count)).round().astype(int))
    cells = []
    for t in picks:
        image = np.ascontiguousarray(clip.frames[t])
        drawn = {"truth": clip.boxes[t], **{m: b[t] for m, b in boxes.items()}}
        for name, box in drawn.items():
            if box is not None:
                width = 2 if name == "truth" else 1
                corner = (box[2] - 1, box[3] - 1)
                cv2.rectangle(image, (box[0], box[1]), corner, COLOURS[name], width)
        cv2.putText(image, str(t), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        cells.append(image)
    while len(cells) % 5:
        cells.append(np.zeros_like(cells[0]))
    grid = np.vstack([np.hstack(cells[i : i + 5]) for i in range(0, len(cells), 5)])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


# --------------------------------------------------------------------------- summary


def summarise(rows: list[ClipScores]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean IoU per group (each scenario, each camera kind, all) → method → mode."""
    groups: dict[str, list[ClipScores]] = {}
    for row in rows:
        groups.setdefault(row.scenario, []).append(row)
    for row in rows:
        groups.setdefault(f"camera {row.camera}", []).append(row)
    groups["mean (all)"] = rows
    table = {}
    for name, members in groups.items():
        table[name] = {
            method: {
                mode: float(np.mean([r.scores[method][mode] for r in members]))
                for mode in MODES
                if all(r.scores[method].get(mode) is not None for r in members)
            }
            for method in members[0].scores
        }
    return table


def load_rows(path: Path) -> list[ClipScores]:
    """The clips of an earlier run's ``--json`` file."""
    return [ClipScores(**clip) for clip in json.loads(path.read_text())["clips"]]


def with_baseline(rows: list[ClipScores], baseline: list[ClipScores]) -> list[ClipScores]:
    """``rows`` with the methods they lack read from ``baseline``'s same clip (scenario, seed);
    the methods a row has stay first, in its order, so ``ours`` is this run's."""
    earlier = {(b.scenario, b.seed): b for b in baseline}
    out = []
    for row in rows:
        base = earlier.get((row.scenario, row.seed))
        if base is None:
            raise SystemExit(f"--baseline has no clip {row.scenario} seed {row.seed}")
        extra = {m: v for m, v in base.scores.items() if m not in row.scores}
        out.append(dataclasses.replace(row, scores={**row.scores, **extra}))
    return out


def cut_detection(rows: list[ClipScores]) -> dict[str, float | int]:
    """Precision and recall of the cuts found (every frame) on the clips that have cuts."""
    tp = fp = fn = 0
    for row in rows:
        truth, found = set(row.cuts_true), set(row.cuts_found)
        tp += len(truth & found)
        fp += len(found - truth)
        fn += len(truth - found)
    return {
        "true_cuts": tp + fn,
        "found": tp + fp,
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
    }


def print_table(table: dict) -> None:
    """One row per group; per sampling, ours / previous / paper (those that were run)."""
    methods = list(next(iter(table.values())))
    width = 7 * len(methods) + 1
    print(f"{'':24s}" + "".join(f" | {mode:^{width}s}" for mode in MODES))
    print(f"{'group':24s}" + (" | " + " ".join(f"{m[:6]:6s}" for m in methods)) * len(MODES))
    for name, row in table.items():
        cells = []
        for mode in MODES:
            values = [row[method].get(mode) for method in methods]
            cells.append(" | " + " ".join("  n/a " if v is None else f"{v:6.3f}" for v in values))
        print(f"{name:24s}" + "".join(cells))


def parse_overrides(items: Sequence[str]) -> dict:
    """``FIELD=VALUE`` pairs as keyword arguments, each value read as JSON (else a string)."""
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"expected FIELD=VALUE, got {item!r}")
        try:
            out[name] = json.loads(text)
        except json.JSONDecodeError:
            out[name] = text
    return out


def with_overrides(params: MotionParams, overrides: dict) -> MotionParams:
    """``params`` with ``overrides`` set; ``flow.NAME`` keys set the TV-L1 settings."""
    flow = {k.removeprefix("flow."): v for k, v in overrides.items() if k.startswith("flow.")}
    rest = {k: v for k, v in overrides.items() if not k.startswith("flow.")}
    if flow:
        rest["flow"] = dataclasses.replace(params.flow, **flow)
    return dataclasses.replace(params, **rest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("classic", "extended", "all"), default="all")
    parser.add_argument("--split", choices=("train", "heldout", "all"), default="heldout")
    parser.add_argument("--quality", choices=("fast", "balanced", "paper"), default="balanced")
    parser.add_argument("--json", type=Path, default=None, help="write all scores here")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    parser.add_argument("--png", action="store_true", help="a PNG per scenario (first seed)")
    methods = "the methods to score (ours always runs: its cuts are reported)"
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=[*METHODS], help=methods)
    parser.add_argument(
        "--baseline",
        type=Path,
        nargs="*",
        default=[],
        help="--json files of earlier runs on the same clips: the methods not run "
        "here are read from them",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="MotionParams fields over the preset for ours (JSON values), e.g. refine_fraction=0.3",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="clips scored at once, each in its own process on one thread "
        "(the scores do not depend on it)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="*",
        default=[],
        help="tabulate these --json files (merged) instead of running",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    one_thread()

    scenarios = list(suite(args.suite))
    if args.only:
        unknown = set(args.only) - {s.name for s in scenarios}
        if unknown:
            parser.error(f"unknown scenarios {sorted(unknown)}")
        scenarios = [s for s in scenarios if s.name in args.only]
    seeds = split_seeds(args.split)
    try:
        params = with_overrides(preset_params(args.quality), parse_overrides(args.overrides))
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    print(
        f"{len(scenarios)} scenarios x seeds {list(seeds)}, ours = {args.quality}", file=sys.stderr
    )

    start = time.perf_counter()
    rows = [] if not args.from_json else [r for path in args.from_json for r in load_rows(path)]
    if not args.from_json:

        def png(scenario: synthetic.Scenario, seed: int) -> Path | None:
            return OUT_DIR / f"{scenario.name}.png" if args.png and seed == seeds[0] else None

        jobs = [
            (scenario, seed, params, png(scenario, seed), args.methods)
            for scenario in scenarios
            for seed in seeds
        ]
        rows = score_clips(jobs, args.jobs)
    wall = time.perf_counter() - start
    if args.baseline:
        rows = with_baseline(rows, [r for path in args.baseline for r in load_rows(path)])
    table = summarise(rows)
    print_table(table)
    cuts = cut_detection([r for r in rows if r.cuts_true])
    print(f"cut detection (clips with a cut, every frame): {cuts}")
    print(f"wall {wall:.0f} s on {cores_line()}; ours = preset {args.quality!r} ({params.hash()})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": " ".join(["python", "bench/box_quality.py", *(argv or sys.argv[1:])]),
            "seeds": list(seeds),
            "quality": args.quality,
            "params": dataclasses.asdict(params),
            "wall_s": wall,
            "summary": table,
            "cuts": cuts,
            "clips": [dataclasses.asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
