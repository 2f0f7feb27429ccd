"""Does motion focus help where it can? Tube against MOFO pretraining × mean pooling, the MCA
block and the literal MCA, on clips where the action is a small actor's motion amid a moving
camera, meaningless movers and a scene that gives the class away in training but not in testing.

The dataset (``--clips`` clips, ``--size`` px, ``--frames`` frames, Something-Something V2's
layout so every ``mofo`` command takes it):

- the **actor**, a small textured patch, whose motion pattern is the class (8 patterns, not only
  directions): right, left, circle clockwise, circle anticlockwise, shaking sideways, shaking
  up and down, growing, shrinking;
- a **moving camera**: the background is a window sliding over a real photo (scikit-image's
  bundled photographs: astronaut, coffee, cat, rocket, brick, grass, gravel, camera);
- two **distractors**, other textured patches on random walks, the same for every class;
- **scene bias**: the photo is a *kind* per class (class c on photo c) for ``--bias`` of the
  training clips (the rest on another photo), while the evaluation split ``validation.json``
  draws the photo independently of the class (``matched.json``: a second evaluation split
  biased as training, to measure how much a model reads the scene).

Boxes come from our pipeline through the real cache, as a user gets them: a private
``redis-server``, ``mofo cache build`` of every split, ``mofo worker --burst``, ``mofo cache
export``; training reads the export. Their agreement with the actor's true box is reported.

The grid, each run a ``mofo pretrain`` / ``finetune`` / ``evaluate`` with the tiny CPU configs:

1. main: {tube, MOFO (inside 0.75)} pretraining × {mean, mca, mca_literal} finetuning, one
   pretraining per seed, ``--seeds`` (≥ 5 for the report);
2. the paper's Fig. 3 sweep: MOFO pretraining at inside ratio 0.5 and 0.9 (0.75 is in 1),
   finetuned with mca, ``--sweep-seeds``;
3. the paper's Table 2: mca with 1 or 3 heads × depth 1 or 2 on MOFO pretraining (3 × 1 is in
   1), ``--sweep-seeds``.

Every finished run is skipped on a rerun (a killed finetuning resumes from its checkpoint), so
one command resumes the whole grid. Results: per run a row (top-1 on the shuffled and the
matched split), per setting mean ± std, a paired test (t and Wilcoxon, by seed) of MOFO+mca
against tube+mean, ``--json`` and a dot plot ``--plot``.

    PYTHONPATH=. .venv/bin/python bench/motion_focus.py --smoke      # the whole chain, < 3 min
    PYTHONPATH=. .venv/bin/python bench/motion_focus.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

MOFO = str(Path(sys.executable).with_name("mofo"))
CONFIGS = Path(__file__).resolve().parent.parent / "training" / "configs"
PATTERNS = ("right", "left", "circle clockwise", "circle anticlockwise", "shaking sideways",
            "shaking up and down", "growing", "shrinking")  # fmt: skip
TEMPLATE = "Something {}"
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "brick.png", "grass.png",
          "gravel.png", "camera.png")  # fmt: skip
CHANCE = 100.0 / len(PATTERNS)


# --- the clips ----------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def photos(size: int) -> list[np.ndarray]:
    """The background photos, RGB uint8, short side 2 × ``size`` (room for the camera to pan)."""
    import cv2
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    out = []
    for name in PHOTOS:
        image = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)[:, :, ::-1]
        scale = 2 * size / min(image.shape[:2])
        out.append(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    return out


def texture(rng: np.random.Generator, side: int) -> np.ndarray:
    """A patch of smoothed noise in two random saturated colours, (side, side, 3) float."""
    import cv2

    noise = cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (0, 0), 1.0)
    noise = (noise - noise.min()) / max(1e-6, float(noise.max() - noise.min()))
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return noise[..., None] * a + (1 - noise[..., None]) * b


def actor_path(pattern: int, frames: int, size: int, rng: np.random.Generator):
    """Per frame: the actor's centre (x, y) and side, for motion pattern ``pattern``."""
    side0 = size / 6
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    t = np.arange(frames) / max(1, frames - 1)
    x, y, side = np.full(frames, cx), np.full(frames, cy), np.full(frames, side0)
    span, radius, phase = size / 3, size / 7, rng.uniform(0, 2 * math.pi)
    if pattern in (0, 1):  # right, left
        x = cx + (t - 0.5) * span * (1 if pattern == 0 else -1)
    elif pattern in (2, 3):  # circles (y grows downwards: +angle is clockwise on screen)
        angle = phase + (1 if pattern == 2 else -1) * 1.5 * math.pi * t
        x, y = cx + radius * np.cos(angle), cy + radius * np.sin(angle)
    elif pattern == 4:
        x = cx + radius * np.sin(phase + 4 * math.pi * t)
    elif pattern == 5:
        y = cy + radius * np.sin(phase + 4 * math.pi * t)
    else:  # growing, shrinking
        side = side0 * (0.6 + t if pattern == 6 else 1.6 - t)
    return x, y, side


def paste(frame: np.ndarray, patch: np.ndarray, cx: float, cy: float, side: float) -> list[int]:
    """``patch`` resized to ``side`` and centred at (cx, cy); its box, clipped to the frame."""
    import cv2

    s = max(2, round(side))
    resized = cv2.resize(patch.astype(np.float32), (s, s), interpolation=cv2.INTER_LINEAR)
    h, w = frame.shape[:2]
    x1, y1 = round(cx - s / 2), round(cy - s / 2)
    fx1, fy1, fx2, fy2 = max(0, x1), max(0, y1), min(w, x1 + s), min(h, y1 + s)
    if fx2 > fx1 and fy2 > fy1:
        frame[fy1:fy2, fx1:fx2] = resized[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1]
    return [fx1, fy1, max(fx1, fx2), max(fy1, fy2)]


@dataclass(frozen=True)
class Spec:
    index: int
    split: str  # train, validation (scene shuffled), matched (scene biased as training)
    size: int
    frames: int
    bias: float
    seed: int


def make_clip(spec: Spec, backgrounds: list[np.ndarray]) -> tuple[str, int, np.ndarray, list]:
    """One clip: (id, class, frames (T, S, S, 3) uint8, the actor's box per frame)."""
    rng = np.random.default_rng([spec.seed, spec.index])
    pattern = int(rng.integers(len(PATTERNS)))
    biased = spec.split != "validation" and rng.random() < spec.bias
    photo = pattern if biased else int(rng.integers(len(PHOTOS)))
    if spec.split != "validation" and not biased and photo == pattern:
        photo = (photo + 1 + int(rng.integers(len(PHOTOS) - 1))) % len(PHOTOS)
    bg = backgrounds[photo].astype(np.float32)
    s, t = spec.size, spec.frames
    room_y, room_x = bg.shape[0] - s, bg.shape[1] - s
    start = rng.uniform(0.2, 0.8, 2) * (room_x, room_y)
    pan = rng.uniform(-1, 1, 2) * s / 24  # px per frame: a slow camera
    actor = texture(rng, 32)
    ax, ay, aside = actor_path(pattern, t, s, rng)
    movers = [(texture(rng, 32), rng.uniform(0.15, 0.85, 2) * s) for _ in range(2)]
    steps = [rng.normal(0, s / 24, (t, 2)).cumsum(0) for _ in movers]
    video, boxes = np.zeros((t, s, s, 3), np.uint8), []
    for f in range(t):
        x0, y0 = np.clip(start + pan * f, 0, (room_x, room_y)).round().astype(int)
        frame = bg[y0 : y0 + s, x0 : x0 + s].copy()
        for (patch, where), walk in zip(movers, steps, strict=True):
            cx, cy = np.clip(where + walk[f], 0, s)
            paste(frame, patch, cx, cy, s / 7)
        boxes.append(paste(frame, actor, ax[f], ay[f], aside[f]))
        video[f] = np.clip(frame + rng.normal(0, 2.0, frame.shape), 0, 255).astype(np.uint8)
    return f"{200000 + spec.index}", pattern, video, boxes


def _write(spec: Spec, folder: str) -> dict:
    from training.synth import write_webm

    video, pattern, frames, boxes = make_clip(spec, photos(spec.size))
    write_webm(Path(folder) / "videos" / f"{video}.webm", frames)
    return {"id": video, "pattern": pattern, "split": spec.split, "boxes": boxes}


def write_dataset(out: Path, clips: int, size: int, frames: int, bias: float, seed: int) -> None:
    """The clips (60 % training, 20 % each evaluation split), labels.json, the truth."""
    if (out / "labels.json").exists():
        return
    (out / "videos").mkdir(parents=True, exist_ok=True)
    names = [TEMPLATE.format(p) for p in PATTERNS]
    splits = ["validation" if i % 5 == 0 else "matched" if i % 5 == 1 else "train"
              for i in range(clips)]  # fmt: skip
    specs = [Spec(i, splits[i], size, frames, bias, seed) for i in range(clips)]
    with ProcessPoolExecutor(2) as pool:
        rows = list(pool.map(_write, specs, [str(out)] * clips, chunksize=8))
    for split in ("train", "validation", "matched"):
        entries = [{"id": r["id"], "label": names[r["pattern"]].lower(),
                    "template": names[r["pattern"]], "placeholders": []}
                   for r in rows if r["split"] == split]  # fmt: skip
        (out / f"{split}.json").write_text(json.dumps(entries, indent=1))
    with open(out / "truth.jsonl", "w") as f:
        for r in rows:
            truth = {"video": r["id"], "label": r["pattern"], "frames": r["boxes"]}
            f.write(json.dumps(truth) + "\n")
    (out / "labels.json").write_text(json.dumps({n: str(k) for k, n in enumerate(names)}))


# --- the boxes, through the cache ---------------------------------------------------------------


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("MOFO_", "RANK", "WORLD_"))}
    return {**out, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **extra}


def mofo(*args: str, **extra: str) -> float:
    """Run a mofo command (its output to the log); its wall time in seconds."""
    t0 = time.perf_counter()
    done = subprocess.run([MOFO, *args], env=env(**extra), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mofo {' '.join(args[:2])} failed ({done.returncode}):\n"
                         f"{done.stderr[-3000:]}")  # fmt: skip
    return time.perf_counter() - t0


def cached_boxes(out: Path, data: Path, size: int) -> tuple[Path, str, dict]:
    """Every split's boxes through a private Redis, exported to a file: (file, params hash,
    agreement with the truth)."""
    from shared.cache_files import read_records
    from shared.record import box_iou, union_box

    export = out / "boxes.jsonl.gz"
    if not export.exists():
        from tests.redis_server import start_redis

        server = start_redis(out / "redis")
        try:
            t0 = time.perf_counter()
            for split in ("train", "validation", "matched"):
                mofo("cache", "build", str(data / f"{split}.json"), "--short-side", str(size),
                     "--redis", server.url)  # fmt: skip
            mofo("worker", "--burst", MOFO_REDIS_URL=server.url, MOFO_DEVICE="cpu")
            mofo("cache", "export", str(export), "--redis", server.url)
            print(f"boxes: {time.perf_counter() - t0:.0f} s through the cache", flush=True)
        finally:
            server.stop()
    records = {r.video: r for r in read_records(export)}
    truth = [json.loads(line) for line in (data / "truth.jsonl").read_text().splitlines()]
    found = [t for t in truth if t["video"] in records and not records[t["video"]].fallback]
    ious = [box_iou(records[t["video"]].clip_box, union_box(t["frames"])) for t in found]
    agreement = {
        "clips": len(truth), "records": len(records),
        "fallback": sum(r.fallback for r in records.values()),
        "clip_box_iou_mean": round(statistics.mean(ious), 3) if ious else None,
    }  # fmt: skip
    return export, next(iter(records.values())).params, agreement


# --- the runs -----------------------------------------------------------------------------------


def data_sets(data: Path, boxes: Path, params: str, model: str) -> list[str]:
    return ["--set", f"data.source={data / 'train.json'}", "--set", f"data.boxes={boxes}",
            "--set", f"data.params={params}", "--set", f"model.name={model}"]  # fmt: skip


def pretrain(out: Path, common: list[str], kind: str, inside: float, seed: int, args) -> Path:
    run = out / f"pretrain-{kind}{'' if kind == 'tube' else inside}-seed{seed}"
    if not (run / "model.pt").exists():
        seconds = mofo("pretrain", "--config", str(CONFIGS / "pretrain_tiny_cpu.toml"),
                       "--nproc", str(args.nproc), *common, "--set", f"masking.kind={kind}",
                       "--set", f"masking.inside_ratio={inside}", "--set", f"run.seed={seed}",
                       "--set", f"optim.epochs={args.pretrain_epochs}",
                       "--set", f"optim.batch_size={args.batch}", "--set", "run.images_every=0",
                       "--set", f"run.out={run}", *args.pretrain_set)  # fmt: skip
        print(f"{run.name}: {seconds:.0f} s", flush=True)
    return run


def finetune(out: Path, common: list[str], data: Path, pretrained: Path, head: str,
             heads: int, depth: int, seed: int, args) -> dict:  # fmt: skip
    run = out / f"finetune-{pretrained.name.removeprefix('pretrain-')}-{head}-h{heads}d{depth}"
    command = ["--config", str(CONFIGS / "finetune_tiny_cpu.toml"), *common,
               "--set", f"model.pretrained={pretrained / 'model.pt'}",
               "--set", f"model.head={head}", "--set", f"model.mca_heads={heads}",
               "--set", f"model.mca_depth={depth}", "--set", f"run.seed={seed}",
               "--set", f"optim.epochs={args.epochs}", "--set", f"optim.batch_size={args.batch}",
               "--set", f"run.out={run}", "--set", "evaluate.clips=2",
               "--set", "evaluate.crops=1", "--set", "evaluate.saliency=0",
               *args.finetune_set]  # fmt: skip
    seconds = 0.0
    if not (run / "model.pt").exists():
        seconds = mofo("finetune", "--nproc", str(args.nproc), *command)
    row = {"pretraining": pretrained.name.removeprefix("pretrain-").rsplit("-seed", 1)[0],
           "head": head, "heads": heads, "depth": depth, "seed": seed,
           "finetune_s": round(seconds, 1), "run": str(run)}  # fmt: skip
    for split in ("validation", "matched")[: 1 + args.matched]:
        where = run / f"eval-{split}"
        if not (where / "results.json").exists():
            mofo("evaluate", *command, "--set", f"evaluate.source={data / f'{split}.json'}",
                 "--set", f"evaluate.out={where}")  # fmt: skip
        result = json.loads((where / "results.json").read_text())
        row[f"{split}_top1"] = result["views"]["action_top1"]
        row["held_out_top1"] = result["held_out"].get("action_top1")
    print(json.dumps(row), flush=True)
    return row


# --- the report ---------------------------------------------------------------------------------


def setting(row: dict) -> str:
    extra = (
        ""
        if (row["heads"], row["depth"]) == (3, 1) or row["head"] == "mean"
        else (f" h{row['heads']}d{row['depth']}")
    )
    return f"{row['pretraining']} + {row['head']}{extra}"


def summary(rows: list[dict], a: str, b: str) -> dict:
    """Mean ± std per setting, and the paired test of setting ``a`` against ``b`` by seed."""
    from scipy import stats

    table = {}
    for name in sorted({setting(r) for r in rows}):
        mine = [r for r in rows if setting(r) == name]
        cell = {"seeds": [r["seed"] for r in mine]}
        for split in ("validation", "matched"):
            values = [r[f"{split}_top1"] for r in mine if f"{split}_top1" in r]
            if values:
                cell[split] = {"mean": round(statistics.mean(values), 2),
                               "std": round(statistics.stdev(values), 2) if len(values) > 1
                               else None, "values": values}  # fmt: skip
        table[name] = cell
    by_seed = {s: {setting(r): r["validation_top1"] for r in rows if r["seed"] == s}
               for s in {r["seed"] for r in rows}}  # fmt: skip
    pairs = [(v[a], v[b]) for v in by_seed.values() if a in v and b in v]
    test: dict = {"a": a, "b": b, "pairs": len(pairs)}
    if len(pairs) >= 2:
        diff = [x - y for x, y in pairs]
        test["mean_difference"] = round(statistics.mean(diff), 2)
        test["t_pvalue"] = float(stats.ttest_rel(*zip(*pairs, strict=True)).pvalue)
        if any(diff):
            test["wilcoxon_pvalue"] = float(stats.wilcoxon(diff).pvalue)
    return {"settings": table, "paired": test}


def plot(rows: list[dict], path: Path) -> None:
    """Top-1 on the shuffled-scene split per setting: one dot per seed, the mean as a bar."""
    from PIL import Image, ImageDraw

    names = sorted({setting(r) for r in rows})
    w, h, left, top = 120 + 90 * len(names), 360, 60, 20
    image = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(image)
    y_of = lambda v: top + (100 - v) * (h - top - 60) / 100  # noqa: E731
    for v in range(0, 101, 20):
        draw.line([(left, y_of(v)), (w - 10, y_of(v))], fill=(225, 225, 225))
        draw.text((10, y_of(v) - 6), f"{v} %", fill="black")
    draw.line([(left, y_of(CHANCE)), (w - 10, y_of(CHANCE))], fill=(200, 80, 80))
    for i, name in enumerate(names):
        x = left + 45 + 90 * i
        values = [r["validation_top1"] for r in rows if setting(r) == name]
        for j, v in enumerate(values):
            cx = x - 12 + 24 * j / max(1, len(values) - 1)
            draw.ellipse([cx - 3, y_of(v) - 3, cx + 3, y_of(v) + 3], fill=(40, 90, 200))
        m = statistics.mean(values)
        draw.line([(x - 20, y_of(m)), (x + 20, y_of(m))], fill="black", width=2)
        draw.text((x - 40, h - 50 + 12 * (i % 2)), name, fill="black")
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/motion_focus"))
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--bias", type=float, default=0.9,
                        help="share of training clips on their class's photo")  # fmt: skip
    parser.add_argument("--model", default="vit_tiny_patch8_tubelet2_64px")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20, help="finetuning epochs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--sweep-seeds", type=int, nargs="*", default=[0, 1])
    parser.add_argument("--matched", type=int, choices=[0, 1], default=1,
                        help="also evaluate on the scene-matched split")  # fmt: skip
    parser.add_argument("--pretrain-set", nargs="*", default=[], help="more --set for pretraining")
    parser.add_argument("--finetune-set", nargs="*", default=[], help="more --set for finetuning")
    smoke = "the whole chain at the smallest size (< 3 min): 1 seed, 2 runs"
    parser.add_argument("--smoke", action="store_true", help=smoke)
    parser.add_argument("--json", type=Path, default=Path("bench/results/motion_focus.json"))
    parser.add_argument("--plot", type=Path, default=Path("bench/results/motion_focus.png"))
    args = parser.parse_args()
    args.pretrain_set = [x for s in args.pretrain_set for x in ("--set", s)]
    args.finetune_set = [x for s in args.finetune_set for x in ("--set", s)]
    if args.smoke:
        args.out = args.out.with_name(args.out.name + "-smoke")
        args.clips, args.size, args.frames, args.model = 20, 32, 8, "vit_tiny_patch8_tubelet2_32px"
        args.pretrain_epochs = args.epochs = 1
        args.batch, args.nproc, args.seeds, args.sweep_seeds, args.matched = 4, 1, [0], [], 0
        args.json, args.plot = args.out / "results.json", args.out / "plot.png"
    started = time.perf_counter()
    out = args.out.resolve()
    data = out / "data"
    write_dataset(data, args.clips, args.size, args.frames, args.bias, seed=0)
    boxes, params, agreement = cached_boxes(out, data, args.size)
    print(f"boxes: {json.dumps(agreement)}", flush=True)
    common = data_sets(data, boxes, params, args.model)

    rows = []
    main_grid = (
        [("tube", "mean"), ("mofo", "mca")]
        if args.smoke
        else [(k, h) for k in ("tube", "mofo") for h in ("mean", "mca", "mca_literal")]
    )
    for seed in args.seeds:
        for kind, head in main_grid:
            source = pretrain(out, common, kind, 0.75, seed, args)
            rows.append(finetune(out, common, data, source, head, 3, 1, seed, args))
    for seed in args.sweep_seeds:
        for inside in (0.5, 0.9):
            source = pretrain(out, common, "mofo", inside, seed, args)
            rows.append(finetune(out, common, data, source, "mca", 3, 1, seed, args))
        source = pretrain(out, common, "mofo", 0.75, seed, args)
        for heads, depth in ((1, 1), (1, 2), (3, 2)):
            rows.append(finetune(out, common, data, source, "mca", heads, depth, seed, args))

    report = summary(rows, "mofo0.75 + mca", "tube + mean")
    print(f"\n{args.model}, {args.clips} clips of {args.size} px, scene bias {args.bias}; "
          f"top-1 % on the shuffled-scene split (chance {CHANCE:.1f} %)")  # fmt: skip
    for name, cell in report["settings"].items():
        v = cell["validation"]
        print(f"  {name:28s} {v['mean']:6.1f} ± {v['std'] if v['std'] is not None else '-':>5} "
              f"seeds {cell['seeds']}")  # fmt: skip
    print(f"paired: {json.dumps(report['paired'])}")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**settings, "chance": CHANCE, "boxes": agreement,
                                     "wall_s": round(time.perf_counter() - started, 1),
                                     **report, "rows": rows}, indent=1))  # fmt: skip
    plot(rows, args.plot)
    print(f"{time.perf_counter() - started:.0f} s; {args.json}, {args.plot}")


if __name__ == "__main__":
    main()
