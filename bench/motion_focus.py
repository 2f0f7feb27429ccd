"""Does motion focus help where it can? Tube against MOFO pretraining × mean pooling, the MCA
block and the literal MCA, on clips where the action is a small actor's motion amid a moving
camera, meaningless movers and a scene that gives the class away in training but not in testing.

The dataset (``--clips`` clips, ``--size`` px, ``--frames`` frames, Something-Something V2's
layout so every ``mofo`` command takes it):

- the **actor**, a textured patch a quarter of the frame wide, whose motion pattern is the
  class (8 patterns, not only directions): right, left, circle clockwise, circle
  anticlockwise, shaking sideways, shaking up and down, growing, shrinking;
- a **moving camera**: the background is a window sliding over a real photo (scikit-image's
  bundled photographs: astronaut, coffee, cat, rocket, brick, grass, gravel, camera);
- two **distractors**, other textured patches on random walks, the same for every class;
- **scene bias**: the photo is a *kind* per class (class c on photo c) for ``--bias`` of the
  training clips (the rest on another photo), while the evaluation split ``validation.json``
  draws the photo independently of the class (``matched.json``: a second evaluation split
  biased as training, to measure how much a model reads the scene). 60 % of the clips train
  (10 % of those held out for model selection), 20 % are shuffled, 20 % matched.

Boxes come from our pipeline through the real cache, as a user gets them: a private
``redis-server``, ``mofo cache build`` of every split, ``mofo worker --burst``, ``mofo cache
export``; training reads the export. Their agreement with the actor's true box is reported.

The grid, each run a ``mofo pretrain`` / ``finetune`` / ``evaluate`` with the tiny CPU configs
(one process each, ``--nproc 1``, no loader workers: the least CPU per run), ``--jobs`` runs at
a time:

1. main: {tube, MOFO (inside 0.75)} pretraining × {mean, mca, mca_literal} finetuning, one
   pretraining per seed, ``--seeds`` (≥ 5 for the report); it runs first, seed by seed;
2. the paper's Fig. 3 sweep: MOFO pretraining at inside ratio 0.5 and 0.9 (0.75 is in 1),
   finetuned with mca, ``--sweep-seeds``;
3. the paper's Table 2: mca with 1 or 3 heads × depth 1 or 2 on MOFO pretraining (3 × 1 is in
   1), ``--sweep-seeds``.

Every finished run is skipped on a rerun (a killed pretraining or finetuning resumes from its
checkpoint), so one command resumes the whole grid; ``--report`` only tabulates what is done.
``--only SETTING ...`` runs part of the grid (settings named as the report names them), and
``--merge JSON`` reports this run's rows with an earlier results file's (same clips and
budget), so a part run later joins the table it belongs to.
Each finetuned model is scored once on both evaluation splits together (one ``mofo evaluate``
of ``evaluation.json``), split by clip afterwards. Results: per run a row (top-1 on the
shuffled and the matched split, wall and CPU seconds), per setting mean ± std and n, paired
tests by seed (t and Wilcoxon; the main one MOFO+mca against tube+mean), ``--json`` and a dot
plot ``--plot``, all rewritten after every run.

Sizes (``Look`` and the options; BENCHMARKS.md §13 has the figures). The first design (an
11-px actor moving a third of a 64-px frame, camera and distractors as fast as the actor, 500
clips, the 64-px tiny ViT for 15 epochs) learnt no motion at all: even with a still camera and
still distractors, 270 training clips left the held-out split at chance. What made the motion
learnable was clips, not epochs (scene-free probes, tube + mean from scratch, top-1 on the
shuffled split): 270 clips × 30 epochs at 64 px 11 %, × 100 epochs at 32 px with nothing else
moving 25 %, 810 clips × 40 epochs at 32 px with the camera and distractors moving 40 %
(chance 12.5 %). Hence the defaults: the actor a quarter of the frame, moving half of it,
camera and distractors 1/50 of the frame a frame, 1500 clips, the 32-px tiny ViT (4 frames 4
apart, 32 tokens; about 5× cheaper a clip than the 64-px one), 20 + 30 epochs, scene bias 0.7,
boxes at the ``fast`` preset (0.85 CPU-s a clip at 64 px against 2.0 for ``balanced``, clip-box
IoU with the actor's 0.49 against 0.50 on 24 clips).

Costs at the defaults (x86_64, 2 cores, CPU = user + sys of each command and its children,
from ``wait4``): the clips about 180 CPU-s; their boxes through the cache 1,276 CPU-s (one
worker, 1,320 s wall); a pretraining 100 CPU-s; a finetuning 172-175 (mean), 184-186 (mca),
163-165 (mca_literal); an evaluation of both splits 9-13. A seed of the main comparison is
about 1,300 CPU-s; the control (``--control``: the scene drawn independently of the class,
tube + mean, no boxes) about 460 CPU-s with its clips.

    PYTHONPATH=. .venv/bin/python bench/motion_focus.py --smoke      # the whole chain, ~3 min
    PYTHONPATH=. .venv/bin/python bench/motion_focus.py              # the grid, resumable
    PYTHONPATH=. .venv/bin/python bench/motion_focus.py --report     # the table of what is done
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

MOFO = str(Path(sys.executable).with_name("mofo"))
CONFIGS = Path(__file__).resolve().parent.parent / "training" / "configs"
PATTERNS = (
    "right",
    "left",
    "circle clockwise",
    "circle anticlockwise",
    "shaking sideways",
    "shaking up and down",
    "growing",
    "shrinking",
)
TEMPLATE = "Something {}"
PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "brick.png",
    "grass.png",
    "gravel.png",
    "camera.png",
)
CHANCE = 100.0 / len(PATTERNS)
SPLITS = ("validation", "matched")  # the shuffled-scene and the scene-matched evaluation splits
MAIN = "mofo0.75 + mca", "tube + mean"  # the paired test the report leads with
# Per run, besides the splits' top-1: answers naming the scene's class on the shuffled split,
# top-1 on the clips whose scene is another class's (see scene_figures).
SCENE = ("validation_reads_scene", "validation_top1_scene_differs", "matched_top1_scene_differs")


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


@dataclass(frozen=True)
class Look:
    """How big and how fast things are, as shares of the frame's side: the actor's side, its
    motion's amplitude (a straight move spans ``span``, circles and shaking have radius
    ``radius``), the camera's largest pan and the distractors' random-walk step, per frame."""

    actor: float = 1 / 4
    span: float = 1 / 2
    radius: float = 1 / 5
    pan: float = 1 / 50
    walk: float = 1 / 50


def actor_path(pattern: int, frames: int, size: int, rng: np.random.Generator, look: Look = Look()):
    """Per frame: the actor's centre (x, y) and side, for motion pattern ``pattern``."""
    side0 = size * look.actor
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    t = np.arange(frames) / max(1, frames - 1)
    x, y, side = np.full(frames, cx), np.full(frames, cy), np.full(frames, side0)
    span, radius, phase = size * look.span, size * look.radius, rng.uniform(0, 2 * math.pi)
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
    look: Look = Look()


def class_and_photo(spec: Spec, rng: np.random.Generator) -> tuple[int, int]:
    """The clip's class (its motion pattern) and its background photo: the class's own photo
    for ``bias`` of the training and matched clips (another photo for the rest), any photo,
    independent of the class, in the shuffled split."""
    pattern = int(rng.integers(len(PATTERNS)))
    biased = spec.split != "validation" and rng.random() < spec.bias
    photo = pattern if biased else int(rng.integers(len(PHOTOS)))
    if spec.split != "validation" and not biased and photo == pattern:
        photo = (photo + 1 + int(rng.integers(len(PHOTOS) - 1))) % len(PHOTOS)
    return pattern, photo


def clip_rng(spec: Spec) -> np.random.Generator:
    """Each clip's own generator: the same clip for the same (seed, index), whatever the rest."""
    return np.random.default_rng([spec.seed, spec.index])


def make_clip(spec: Spec, backgrounds: list[np.ndarray]) -> tuple[str, int, np.ndarray, list]:
    """One clip: (id, class, frames (T, S, S, 3) uint8, the actor's box per frame)."""
    rng = clip_rng(spec)
    pattern, photo = class_and_photo(spec, rng)
    bg = backgrounds[photo].astype(np.float32)
    s, t = spec.size, spec.frames
    room_y, room_x = bg.shape[0] - s, bg.shape[1] - s
    start = rng.uniform(0.2, 0.8, 2) * (room_x, room_y)
    pan = rng.uniform(-1, 1, 2) * s * spec.look.pan  # px per frame: a slow camera
    actor = texture(rng, 32)
    ax, ay, aside = actor_path(pattern, t, s, rng, spec.look)
    movers = [(texture(rng, 32), rng.uniform(0.15, 0.85, 2) * s) for _ in range(2)]
    steps = [rng.normal(0, s * spec.look.walk, (t, 2)).cumsum(0) for _ in movers]
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
    from mofo.training.synth import write_webm

    video, pattern, frames, boxes = make_clip(spec, photos(spec.size))
    write_webm(Path(folder) / "videos" / f"{video}.webm", frames)
    return {"id": video, "pattern": pattern, "split": spec.split, "boxes": boxes}


def split_of(index: int) -> str:
    """Every fifth clip is shuffled-scene evaluation, the next matched, the other three train."""
    return "validation" if index % 5 == 0 else "matched" if index % 5 == 1 else "train"


def write_dataset(
    out: Path, clips: int, size: int, frames: int, bias: float, seed: int, look: Look = Look()
) -> None:
    """The clips, a label file per split (and ``evaluation.json``, both evaluation splits),
    labels.json, the truth (class and the actor's box per frame)."""
    if not (out / "labels.json").exists():
        (out / "videos").mkdir(parents=True, exist_ok=True)
        names = [TEMPLATE.format(p) for p in PATTERNS]
        specs = [Spec(i, split_of(i), size, frames, bias, seed, look) for i in range(clips)]
        with ProcessPoolExecutor(2) as pool:
            rows = list(pool.map(_write, specs, [str(out)] * clips, chunksize=8))
        for split in ("train", *SPLITS):
            entries = [
                {
                    "id": r["id"],
                    "label": names[r["pattern"]].lower(),
                    "template": names[r["pattern"]],
                    "placeholders": [],
                }
                for r in rows
                if r["split"] == split
            ]
            (out / f"{split}.json").write_text(json.dumps(entries, indent=1))
        with open(out / "truth.jsonl", "w") as f:
            for r in rows:
                truth = {"video": r["id"], "label": r["pattern"], "frames": r["boxes"]}
                f.write(json.dumps(truth) + "\n")
        (out / "labels.json").write_text(json.dumps({n: str(k) for k, n in enumerate(names)}))
    if not (out / "evaluation.json").exists():
        both = [e for split in SPLITS for e in json.loads((out / f"{split}.json").read_text())]
        (out / "evaluation.json").write_text(json.dumps(both, indent=1))


# --- the commands -------------------------------------------------------------------------------


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("MOFO_", "RANK", "WORLD_"))}
    return {**out, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **extra}


def mofo(*args: str, log: Path | None = None, **extra: str) -> tuple[float, float]:
    """Run a mofo command, its output to ``log``: (wall, CPU) seconds, the CPU time user + sys
    of the command and the children it waited for."""
    t0 = time.perf_counter()
    sink = open(log, "a") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        child = subprocess.Popen(
            [MOFO, *args], env=env(**extra), stdout=sink, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            sink.close()
    if child.returncode != 0:
        tail = log.read_text()[-3000:] if log else ""
        raise RuntimeError(f"mofo {' '.join(args[:2])} failed ({child.returncode}):\n{tail}")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def area(box: list[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def covers(box: list[float], actor: list[float]) -> float:
    """Share of the actor's box (over the clip) inside the pipeline's box."""
    inter = [
        max(box[0], actor[0]),
        max(box[1], actor[1]),
        min(box[2], actor[2]),
        min(box[3], actor[3]),
    ]
    return area(inter) / area(actor) if area(actor) > 0 else 0.0


def cached_boxes(out: Path, data: Path, size: int, quality: str) -> tuple[Path, str, dict]:
    """Every split's boxes through a private Redis, exported to a file: (file, params hash,
    agreement with the truth: IoU of the clip boxes, the share of the actor's
    path inside the box, the box's share of the frame; and the cost)."""
    from mofo.shared.cache_files import read_records
    from mofo.shared.record import box_iou, union_box

    export, cost = out / "boxes.jsonl.gz", out / "boxes-cost.json"
    if not export.exists():
        from testkit.redis_server import start_redis

        server = start_redis(out / "redis")
        wall = cpu = 0.0
        try:
            steps = [
                (
                    "cache",
                    "build",
                    str(data / f"{split}.json"),
                    "--short-side",
                    str(size),
                    "--quality",
                    quality,
                    "--redis",
                    server.url,
                )
                for split in ("train", *SPLITS)
            ]
            for step in steps:
                w, c = mofo(*step, log=out / "boxes.log")
                wall, cpu = wall + w, cpu + c
            w, c = mofo(
                "worker",
                "--burst",
                log=out / "boxes.log",
                MOFO_REDIS_URL=server.url,
                MOFO_DEVICE="cpu",
            )
            w2, c2 = mofo(
                "cache", "export", str(export), "--redis", server.url, log=out / "boxes.log"
            )
            wall, cpu = wall + w + w2, cpu + c + c2
        finally:
            server.stop()
        cost.write_text(json.dumps({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}))
        print(f"boxes: {wall:.0f} s, {cpu:.0f} CPU-s through the cache", flush=True)
    records = {r.video: r for r in read_records(export)}
    truth = [json.loads(line) for line in (data / "truth.jsonl").read_text().splitlines()]
    found = [t for t in truth if t["video"] in records and not records[t["video"]].fallback]
    pairs = [(records[t["video"]].clip_box, union_box(t["frames"])) for t in found]
    ious = [box_iou(box, actor) for box, actor in pairs]
    covered = [covers(box, actor) for box, actor in pairs]
    agreement = {
        "clips": len(truth),
        "records": len(records),
        "fallback": sum(r.fallback for r in records.values()),
        "clip_box_iou_mean": round(statistics.mean(ious), 3) if ious else None,
        "actor_covered_mean": round(statistics.mean(covered), 3) if covered else None,
        "box_area_mean": round(statistics.mean(area(b) for b, _ in pairs) / size**2, 3)
        if pairs
        else None,
        **(json.loads(cost.read_text()) if cost.exists() else {}),
    }
    return export, next(iter(records.values())).params, agreement


# --- the runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finetuning:
    head: str
    heads: int = 3
    depth: int = 1


@dataclass(frozen=True)
class Chain:
    """One pretraining and the finetunings that start from it."""

    kind: str  # tube or mofo
    inside: float
    seed: int
    finetunings: tuple[Finetuning, ...]

    @property
    def name(self) -> str:
        return f"{self.kind}{'' if self.kind == 'tube' else self.inside}"


HEADS = ("mean", "mca", "mca_literal")


def grid(
    seeds: list[int],
    sweep_seeds: list[int],
    smoke: bool = False,
    control: bool = False,
    heads_run: tuple[str, ...] = HEADS,
) -> list[Chain]:
    """The runs in the order they go: the main comparison seed by seed (each pretraining
    finetuned with ``heads_run``), then the sweeps."""
    heads = {"tube": heads_run, "mofo": heads_run}
    if smoke:  # the two ends of the main comparison
        heads = {"tube": ("mean",), "mofo": ("mca",)}
    if control:  # no boxes: tube + mean only
        return [Chain("tube", 0.75, seed, (Finetuning("mean"),)) for seed in seeds]
    chains = [
        Chain(kind, 0.75, seed, tuple(Finetuning(h) for h in heads[kind]))
        for seed in seeds
        for kind in ("tube", "mofo")
    ]
    for seed in sweep_seeds:
        chains += [Chain("mofo", inside, seed, (Finetuning("mca"),)) for inside in (0.5, 0.9)]
        chains.append(
            Chain(
                "mofo",
                0.75,
                seed,
                tuple(Finetuning("mca", h, d) for h, d in ((1, 1), (1, 2), (3, 2))),
            )
        )
    return chains


def run_setting(chain: Chain, finetuning: Finetuning) -> str:
    """The report's name of one run's setting (as :func:`setting` names its row)."""
    return setting(
        {
            "pretraining": chain.name,
            "head": finetuning.head,
            "heads": finetuning.heads,
            "depth": finetuning.depth,
        }
    )


def only(chains: list[Chain], names: list[str]) -> list[Chain]:
    """The grid cut to the runs whose setting is one of ``names``; chains left empty go."""
    unknown = set(names) - {run_setting(c, f) for c in chains for f in c.finetunings}
    if unknown:
        raise SystemExit(f"--only: no run in the grid is {sorted(unknown)}")
    kept = [
        replace(c, finetunings=tuple(f for f in c.finetunings if run_setting(c, f) in names))
        for c in chains
    ]
    return [c for c in kept if c.finetunings]


def merged(earlier: list[dict], rows: list[dict]) -> list[dict]:
    """An earlier results file's rows with this run's; a row of this run replaces an earlier
    one of the same setting and seed."""
    mine = {(setting(r), r["seed"]) for r in rows}
    return [r for r in earlier if (setting(r), r["seed"]) not in mine] + rows


class Runner:
    """Runs chains (at most ``jobs`` at a time), each pretraining once even when two chains
    share it, and keeps every finished run's row."""

    def __init__(
        self,
        out: Path,
        data: Path,
        common: list[str],
        args: argparse.Namespace,
        on_row: Callable[[], None],
    ):
        self.out, self.data, self.common, self.args = out, data, common, args
        self.on_row = on_row
        self.locks: dict[str, threading.Lock] = {}
        self.guard = threading.Lock()
        self.failures: list[str] = []

    def pretrain(self, chain: Chain) -> Path:
        run = self.out / f"pretrain-{chain.name}-seed{chain.seed}"
        with self.guard:
            lock = self.locks.setdefault(run.name, threading.Lock())
        with lock:
            if not (run / "model.pt").exists():
                a = self.args
                run.mkdir(parents=True, exist_ok=True)
                wall, cpu = mofo(
                    "pretrain",
                    "--config",
                    str(CONFIGS / "pretrain_tiny_cpu.toml"),
                    "--nproc",
                    str(a.nproc),
                    *self.common,
                    "--set",
                    f"masking.kind={chain.kind}",
                    "--set",
                    f"masking.inside_ratio={chain.inside}",
                    "--set",
                    f"run.seed={chain.seed}",
                    "--set",
                    f"optim.epochs={a.pretrain_epochs}",
                    "--set",
                    f"optim.batch_size={a.batch}",
                    "--set",
                    "run.images_every=0",
                    "--set",
                    f"data.rate={a.rate}",
                    "--set",
                    f"run.out={run}",
                    *a.pretrain_set,
                    log=run / "command.log",
                )
                (run / "cost.json").write_text(
                    json.dumps({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)})
                )
                print(f"{run.name}: {wall:.0f} s, {cpu:.0f} CPU-s", flush=True)
        return run

    def finetune(self, chain: Chain, pretrained: Path, f: Finetuning) -> dict:
        a, data = self.args, self.data
        run = self.out / f"finetune-{chain.name}-seed{chain.seed}-{f.head}-h{f.heads}d{f.depth}"
        if (run / "row.json").exists():
            return json.loads((run / "row.json").read_text())
        run.mkdir(parents=True, exist_ok=True)
        command = [
            "--config",
            str(CONFIGS / "finetune_tiny_cpu.toml"),
            *self.common,
            "--set",
            f"model.pretrained={pretrained / 'model.pt'}",
            "--set",
            f"model.head={f.head}",
            "--set",
            f"model.mca_heads={f.heads}",
            "--set",
            f"model.mca_depth={f.depth}",
            "--set",
            f"run.seed={chain.seed}",
            "--set",
            f"optim.epochs={a.epochs}",
            "--set",
            f"optim.batch_size={a.batch}",
            "--set",
            f"run.out={run}",
            "--set",
            "evaluate.clips=2",
            "--set",
            "evaluate.crops=1",
            "--set",
            "evaluate.saliency=0",
            *a.finetune_set,
        ]
        log, wall, cpu = run / "command.log", 0.0, 0.0
        if not (run / "model.pt").exists():  # else finished, its evaluation killed
            wall, cpu = mofo("finetune", "--nproc", str(a.nproc), *command, log=log)
        where = run / "eval"
        eval_wall, eval_cpu = mofo(
            "evaluate",
            *command,
            "--set",
            f"evaluate.source={data / 'evaluation.json'}",
            "--set",
            f"evaluate.out={where}",
            log=log,
        )
        result = json.loads((where / "results.json").read_text())
        pretrain_cost = (
            json.loads((pretrained / "cost.json").read_text())
            if (pretrained / "cost.json").exists()
            else {}
        )
        row = {
            "pretraining": chain.name,
            "head": f.head,
            "heads": f.heads,
            "depth": f.depth,
            "seed": chain.seed,
            **split_top1(where / "predictions.jsonl", data),
            "held_out_top1": result["held_out"].get("action_top1"),
            "finetune_wall_s": round(wall, 1),
            "finetune_cpu_s": round(cpu, 1),
            "evaluate_wall_s": round(eval_wall, 1),
            "evaluate_cpu_s": round(eval_cpu, 1),
            "pretrain_cpu_s": pretrain_cost.get("cpu_s"),
            "run": str(run),
        }
        (run / "row.json").write_text(json.dumps(row, indent=1))
        print(json.dumps(row), flush=True)
        return row

    def chain(self, chain: Chain) -> None:
        try:
            pretrained = self.pretrain(chain)
            for f in chain.finetunings:
                self.finetune(chain, pretrained, f)
                self.on_row()
        except RuntimeError as exc:  # the other chains go on; a rerun retries this one
            with self.guard:
                self.failures.append(f"{chain}: {exc}")
            print(f"FAILED {chain}: {exc}", file=sys.stderr, flush=True)


def split_top1(predictions: Path, data: Path) -> dict[str, float]:
    """Top-1 % of each evaluation split from one evaluation of both (a clip that was not scored
    counts as wrong)."""
    top = {}
    for line in predictions.read_text().splitlines():
        p = json.loads(line)
        top[p["video"]] = p["action"][0][0] == p["labels"]["action"]
    out = {}
    for split in SPLITS:
        ids = [e["id"] for e in json.loads((data / f"{split}.json").read_text())]
        out[f"{split}_top1"] = round(100.0 * sum(top.get(i, False) for i in ids) / len(ids), 2)
    return out


def scene_figures(predictions: Path, data: Path, bias: float) -> dict[str, float]:
    """How much a model reads the scene: on the shuffled split, the share of its answers that
    name the class whose photo the clip shows (chance 12.5 %; a pure scene reader scores its
    matched top-1 there), and top-1 % on the clips whose photo is another class's (motion
    alone), on both splits."""
    answers = {}
    for line in predictions.read_text().splitlines():
        p = json.loads(line)
        answers[p["video"]] = p["action"][0][0]
    out = {}
    for split in SPLITS:
        scenes = {}
        for e in json.loads((data / f"{split}.json").read_text()):
            spec = Spec(int(e["id"]) - 200000, split, 0, 0, bias, 0)
            scenes[e["id"]] = class_and_photo(spec, clip_rng(spec))
        differs = [i for i, (pattern, photo) in scenes.items() if pattern != photo]
        right = sum(answers.get(i) == scenes[i][0] for i in differs)
        out[f"{split}_top1_scene_differs"] = round(100.0 * right / max(1, len(differs)), 2)
        if split == "validation":
            reads = sum(answers.get(i) == photo for i, (_, photo) in scenes.items())
            out["validation_reads_scene"] = round(100.0 * reads / len(scenes), 2)
    return out


def finished_rows(out: Path, chains: list[Chain], bias: float) -> list[dict]:
    """The rows of the grid's finished finetunings, in grid order, with their scene figures."""
    rows = []
    for c in chains:
        for f in c.finetunings:
            run = out / f"finetune-{c.name}-seed{c.seed}-{f.head}-h{f.heads}d{f.depth}"
            if (run / "row.json").exists():
                row = json.loads((run / "row.json").read_text())
                predictions = run / "eval" / "predictions.jsonl"
                rows.append({**row, **scene_figures(predictions, out / "data", bias)})
    return rows


# --- the report ---------------------------------------------------------------------------------


def setting(row: dict) -> str:
    plain = row["head"] == "mean" or (row["heads"], row["depth"]) == (3, 1)
    extra = "" if plain else f" h{row['heads']}d{row['depth']}"
    return f"{row['pretraining']} + {row['head']}{extra}"


def paired(rows: list[dict], a: str, b: str, split: str = "validation") -> dict:
    """Setting ``a`` against ``b`` on ``split``, paired by seed: mean difference, t and Wilcoxon."""
    from scipy import stats

    by_seed: dict[int, dict[str, float]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[setting(r)] = r[f"{split}_top1"]
    pairs = [(v[a], v[b]) for v in by_seed.values() if a in v and b in v]
    test: dict = {"a": a, "b": b, "split": split, "pairs": len(pairs)}
    if len(pairs) >= 2:
        diff = [x - y for x, y in pairs]
        test["mean_difference"] = round(statistics.mean(diff), 2)
        test["std_difference"] = round(statistics.stdev(diff), 2)
        if statistics.stdev(diff) > 0:
            test["t_pvalue"] = round(float(stats.ttest_rel(*zip(*pairs, strict=True)).pvalue), 4)
        if any(diff):
            test["wilcoxon_pvalue"] = round(float(stats.wilcoxon(diff).pvalue), 4)
    return test


def summary(rows: list[dict]) -> dict:
    """Mean ± std and n per setting on both splits; the paired tests (the main one first)."""
    table = {}
    for name in dict.fromkeys(setting(r) for r in rows):
        mine = [r for r in rows if setting(r) == name]
        cell: dict = {"n": len(mine), "seeds": [r["seed"] for r in mine]}
        for key in (*SPLITS, *SCENE):
            values = [r[key if key in SCENE else f"{key}_top1"] for r in mine]
            cell[key] = {
                "mean": round(statistics.mean(values), 2),
                "std": round(statistics.stdev(values), 2) if len(values) > 1 else None,
                "values": values,
            }
        table[name] = cell
    tests = [paired(rows, *MAIN), paired(rows, *MAIN, split="matched")]
    for head in ("mean", "mca", "mca_literal"):
        tests.append(paired(rows, f"mofo0.75 + {head}", f"tube + {head}"))
    for kind in ("tube", "mofo0.75"):
        tests.append(paired(rows, f"{kind} + mca", f"{kind} + mean"))
        tests.append(paired(rows, f"{kind} + mca", f"{kind} + mca_literal"))
    return {"settings": table, "paired": [t for t in tests if t["pairs"]]}


def table_text(report: dict, title: str) -> str:
    """The settings as a text table (mean ± std over the seeds done, n) and the paired tests."""
    lines = [
        title,
        f"  {'setting':26s} {'n':>2}  {'shuffled scene':>15}  {'matched scene':>15}  "
        f"{'reads scene':>15}  {'motion alone':>15}",
    ]

    def cell(v: dict) -> str:
        return (
            f"{v['mean']:6.1f} ± {v['std']:5.1f}"
            if v["std"] is not None
            else f"{v['mean']:6.1f}  ±   -  "
        )

    for name, c in report["settings"].items():
        lines.append(
            f"  {name:26s} {c['n']:>2}  {cell(c['validation']):>15}  "
            f"{cell(c['matched']):>15}  {cell(c['validation_reads_scene']):>15}  "
            f"{cell(c['validation_top1_scene_differs']):>15}"
        )
    for t in report["paired"]:
        g = {
            k: t.get(k, "-")
            for k in ("mean_difference", "std_difference", "t_pvalue", "wilcoxon_pvalue")
        }
        lines.append(
            f"  paired ({t['split']}): {t['a']} − {t['b']}: n {t['pairs']}, "
            f"mean {g['mean_difference']} ± {g['std_difference']}, "
            f"t p {g['t_pvalue']}, Wilcoxon p {g['wilcoxon_pvalue']}"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Top-1 per setting: one dot per seed on the shuffled-scene split (blue, the mean a black
    bar), the scene-matched split's mean a grey bar; chance a red line."""
    from PIL import Image, ImageDraw

    names = list(dict.fromkeys(setting(r) for r in rows))
    w, h, left, top = 120 + 100 * len(names), 380, 60, 20
    image = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(image)
    y_of = lambda v: top + (100 - v) * (h - top - 70) / 100  # noqa: E731
    for v in range(0, 101, 20):
        draw.line([(left, y_of(v)), (w - 10, y_of(v))], fill=(225, 225, 225))
        draw.text((10, y_of(v) - 6), f"{v} %", fill="black")
    draw.line([(left, y_of(CHANCE)), (w - 10, y_of(CHANCE))], fill=(200, 80, 80))
    draw.text((w - 220, 4), "dots/black: shuffled scene; grey: matched", fill="black")
    for i, name in enumerate(names):
        x = left + 50 + 100 * i
        mine = [r for r in rows if setting(r) == name]
        values = [r["validation_top1"] for r in mine]
        for j, v in enumerate(values):
            cx = x - 12 + 24 * j / max(1, len(values) - 1)
            draw.ellipse([cx - 3, y_of(v) - 3, cx + 3, y_of(v) + 3], fill=(40, 90, 200))
        m = statistics.mean(values)
        draw.line([(x - 20, y_of(m)), (x + 20, y_of(m))], fill="black", width=2)
        matched = statistics.mean(r["matched_top1"] for r in mine)
        draw.line([(x - 20, y_of(matched)), (x + 20, y_of(matched))], fill=(150, 150, 150), width=2)
        draw.text((x - 45, h - 60 + 12 * (i % 3)), f"{name} (n {len(values)})", fill="black")
    image.save(path)


def write_report(
    args: argparse.Namespace, out: Path, chains: list[Chain], agreement: dict, started: float
) -> str:
    """The table, the JSON and the plot of every finished run so far; the table's text."""
    rows = finished_rows(out, chains, args.bias)
    if args.merge:
        rows = merged(json.loads(args.merge.read_text())["rows"], rows)
    if not rows:
        return "no finished runs yet"
    report = summary(rows)
    title = (
        f"{args.model}, {args.clips} clips of {args.size} px × {args.frames} frames, scene "
        f"bias {args.bias}, {args.pretrain_epochs} + {args.epochs} epochs; top-1 % "
        f"(chance {CHANCE:.1f} %), mean ± std over the seeds done"
    )
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    total = sum(len(c.finetunings) for c in chains)
    cpu = sum((r["finetune_cpu_s"] + r["evaluate_cpu_s"]) for r in rows) + sum(
        json.loads(p.read_text())["cpu_s"] for p in out.glob("pretrain-*/cost.json")
    )
    progress = {
        "finetunings_done": len(rows),
        "finetunings_in_grid": total,
        "pretrainings_done": len(list(out.glob("pretrain-*/model.pt"))),
        "runs_cpu_s": round(cpu, 1),
        "wall_s_this_invocation": round(time.perf_counter() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    document = {
        **settings,
        "chance": CHANCE,
        "boxes": agreement,
        "progress": progress,
        **report,
        "rows": rows,
    }
    args.json.write_text(json.dumps(document, indent=1))
    plot(rows, args.plot)
    return table_text(report, title) + f"\n  {json.dumps(progress)}"


def look(args: argparse.Namespace) -> Look:
    return Look(**{name: getattr(args, name) for name in vars(Look())})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/motion_focus"))
    parser.add_argument("--clips", type=int, default=1500)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument(
        "--bias", type=float, default=0.7, help="share of training clips on their class's photo"
    )
    for name, value in vars(Look()).items():
        parser.add_argument(
            f"--{name}", type=float, default=value, help="share of the frame's side (see Look)"
        )
    parser.add_argument("--model", default="vit_tiny_patch8_tubelet2_32px")
    parser.add_argument("--rate", type=int, default=4, help="pretraining's frame rate (dense)")
    parser.add_argument("--quality", default="fast", help="the boxes' preset (mofo cache build)")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30, help="finetuning epochs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--nproc", type=int, default=1, help="processes per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--sweep-seeds", type=int, nargs="*", default=[0])
    parser.add_argument(
        "--heads",
        nargs="+",
        choices=HEADS,
        default=list(HEADS),
        help="the main comparison's finetuning heads",
    )
    parser.add_argument("--pretrain-set", nargs="*", default=[], help="more --set for pretraining")
    parser.add_argument("--finetune-set", nargs="*", default=[], help="more --set for finetuning")
    smoke = "the whole chain at the smallest size (~3 min): 1 seed, 2 runs"
    parser.add_argument("--smoke", action="store_true", help=smoke)
    control = (
        "the scene-free control: the photo drawn independently of the class (bias 1/8), "
        "tube + mean only, no boxes: can this budget learn the motion at all?"
    )
    parser.add_argument("--control", action="store_true", help=control)
    parser.add_argument("--report", action="store_true", help="tabulate finished runs only")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SETTING",
        default=[],
        help="run only these settings of the grid, as the report names them "
        '(e.g. "mofo0.75 + mca h3d2")',
    )
    parser.add_argument(
        "--merge",
        type=Path,
        default=None,
        metavar="JSON",
        help="report with the rows of an earlier results file of the same "
        "clips (this run's rows replace its rows of the same setting and "
        "seed)",
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/motion_focus.json"))
    parser.add_argument("--plot", type=Path, default=Path("bench/results/motion_focus.png"))
    args = parser.parse_args()
    loader = ["data.workers=0"]  # one process per run: the least CPU time
    args.pretrain_set = [x for s in loader + args.pretrain_set for x in ("--set", s)]
    args.finetune_set = [x for s in loader + args.finetune_set for x in ("--set", s)]
    if args.control:
        args.out = args.out.with_name(args.out.name + "-control")
        args.bias, args.sweep_seeds = 1 / len(PATTERNS), []
        args.json, args.plot = args.out / "results.json", args.out / "plot.png"
    if args.smoke:
        args.out = args.out.with_name(args.out.name + "-smoke")
        args.clips, args.size, args.frames, args.model = 20, 32, 8, "vit_tiny_patch8_tubelet2_32px"
        args.pretrain_epochs = args.epochs = 1
        args.rate = 2
        args.batch, args.nproc, args.seeds, args.sweep_seeds = 4, 1, [0], []
        args.json, args.plot = args.out / "results.json", args.out / "plot.png"
    started = time.perf_counter()
    out = args.out.resolve()
    data = out / "data"
    chains = grid(args.seeds, args.sweep_seeds, args.smoke, args.control, tuple(args.heads))
    if args.only:
        chains = only(chains, args.only)
    if args.merge:
        earlier = json.loads(args.merge.read_text())
        same = ("clips", "size", "frames", "bias", "model", "pretrain_epochs", "epochs")
        if any(earlier.get(k) != getattr(args, k) for k in same):
            raise SystemExit(
                f"--merge: {args.merge} was run with other clips or budget "
                f"({', '.join(same)} must match)"
            )
    if not args.report:
        write_dataset(data, args.clips, args.size, args.frames, args.bias, seed=0, look=look(args))
    boxes, params, agreement = (
        ("none", "", {}) if args.control else cached_boxes(out, data, args.size, args.quality)
    )
    print(f"boxes: {json.dumps(agreement)}", flush=True)
    lock = threading.Lock()

    def on_row() -> None:
        with lock:
            write_report(args, out, chains, agreement, started)

    failures: list[str] = []
    if not args.report:
        common = [
            f"data.source={data / 'train.json'}",
            f"data.boxes={boxes}",
            f"model.name={args.model}",
        ]
        common += [f"data.params={params}"] if params else []
        common = [x for s in common for x in ("--set", s)]
        runner = Runner(out, data, common, args, on_row)
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(runner.chain, chains))
        failures = runner.failures
    print("\n" + write_report(args, out, chains, agreement, started))
    print(f"{time.perf_counter() - started:.0f} s; {args.json}, {args.plot}")
    if failures:
        raise SystemExit(f"{len(failures)} chain(s) failed; a rerun retries them")


if __name__ == "__main__":
    main()
