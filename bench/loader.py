"""The pretraining loader, clips/s per CPU core: today's path against the alternatives, one run.

    PYTHONPATH=. .venv/bin/python bench/loader.py [--ssv2 12] [--epic 2] [--segments 8]
        [--rounds 3] [--work-dir bench-out/loader] [--json bench/results/loader.json]

A loader worker is one process on one core, so everything runs in this process with
``torch.set_num_threads(1)`` and ``cv2.setNumThreads(1)``, and rates are samples per second of
this process's CPU time (all its threads counted: a threaded decoder's helpers cost cores too);
wall-clock rates are reported beside them. Variants run interleaved, round by round, over the same
clips; each figure is the median over ``--rounds``.

Clips, generated once under ``--work-dir`` (PyAV):

- SSV2-like: ``--ssv2`` VP9 WebM clips, 428×240 at 12 fps, 24 to 48 frames (2-4 s), each a window
  panning over an enlarged scikit-image photo (real texture), libvpx-vp9 ``good``/cpu-used 4,
  CRF 30 (alternate reference frames on, as libvpx encodes by default);
- Epic-like: ``--epic`` H.264 MP4 videos, 456×256 at 30 fps, 40 s, libx264 ``fast`` CRF 23 with
  its default GOP (250 frames) and B-frames, and ``--segments`` action segments of 2-8 s each at
  random places, read by seeking.

Box records for every clip (a box on every 2nd frame, at the 224-short-side working size a cache
build uses) are written to a ``.jsonl.gz`` export file and read through :class:`CachedBoxes`, the
pretraining loader's cache reader, one ``get_many`` per batch of 8 samples.

Measured:

1. The pretraining sample (:class:`VideoClips`, 16 frames 2 apart for SSV2, 16 segment frames for
   Epic, multi-scale crop to 224, boxes moved, normalised), today's path (``read_frames`` and the
   crop resizing channels-last floats) against the new one (``read_training_frames`` and the
   crop made planar first), and whether the two give equal samples.
2. The decode stage alone, the sample's 16 frames as RGB at the source size: ``read_frames``;
   PyAV decoding the whole clip with ``thread_type`` AUTO (every core), FRAME with 2 threads, and
   one thread; stopping after the last frame needed; and skipping non-reference frames that are
   not needed (``skip_frame="NONREF"`` per packet).
3. The crop stage alone (16 frames → 3×16×224×224): channels-last floats (today), planar floats
   (new, equal values), uint8 resizing (changes values: max difference reported).
4. Frame conversion at a reduced size (a ``decode_short_side`` setting), 16 frames: PyAV's
   ``reformat`` to RGB at the source size, ``reformat`` scaling to short side 160, and
   ``to_ndarray`` then ``cv2.resize`` (INTER_AREA) to the same size.

torchcodec is not installed and torchvision's video reader is gone from the installed
torchvision, so neither is measured; decord is never used.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bench.common import one_thread
from mofo.shared.cache_files import write_records
from mofo.shared.decode import read_frames, read_training_frames, working_size
from mofo.shared.sources import ClipItem
from mofo.training.datasets import CachedBoxes, VideoClips
from mofo.training.transforms import (
    Crop,
    apply_crop,
    dense_indices,
    multi_scale_crop,
    segment_indices,
)
from testkit.loader import HASH, TodayClips, apply_crop_before, record, write_clip

BATCH = 8  # samples per __getitems__ call: one box lookup each


# --- clips and records --------------------------------------------------------------------------


def make_data(work: Path, ssv2: int, epic: int, segments: int) -> dict[str, list[ClipItem]]:
    """The clips, their items and an export file of their records under ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items: dict[str, list[ClipItem]] = {"ssv2": [], "epic": []}
    records = []
    for i in range(ssv2):
        frames = int(rng.integers(24, 49))
        path = work / f"ssv2_{i}.webm"
        write_clip(
            path,
            "libvpx-vp9",
            (428, 240),
            12,
            frames,
            i,
            {"deadline": "good", "cpu-used": "4", "crf": "30", "b": "0"},
        )
        items["ssv2"].append(ClipItem(str(i), path.name))
        records.append(record(str(i), (428, 240), range(0, frames, 2), rng))
    for v in range(epic):
        path = work / f"epic_{v}.mp4"
        write_clip(path, "libx264", (456, 256), 30, 1200, 10 + v, {"preset": "fast", "crf": "23"})
        for s in range(segments):
            length = int(rng.integers(60, 241))
            start = int(rng.integers(0, 1200 - length))
            video = f"P{v:02d}_{s:03d}"
            items["epic"].append(ClipItem(video, path.name, (start, start + length)))
            records.append(record(video, (456, 256), range(start, start + length, 2), rng))
    write_records(work / "boxes.jsonl.gz", records)
    return items


# --- crop variants (today's, apply_crop_before, is testkit.loader's) ----------------------------


def apply_crop_uint8(frames: torch.Tensor, crop: Crop) -> torch.Tensor:
    """The crop resized as uint8 (rounded to whole levels), then made floats: faster, not equal."""
    x = frames[:, crop.y : crop.y + crop.h, crop.x : crop.x + crop.w].permute(0, 3, 1, 2)
    x = F.interpolate(
        x.contiguous(memory_format=torch.channels_last),
        size=(crop.size, crop.size),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    if crop.flip:
        x = x.flip(-1)
    return (x.float() / 255.0).permute(1, 0, 2, 3).contiguous()


# --- decode variants ----------------------------------------------------------------------------


def pyav_all(path: Path, pick, segment, thread_type: str, threads: int) -> np.ndarray:
    """Every frame up to the segment's end (from a seek for a segment); RGB for those picked."""
    if segment is None:  # the count from the packets, as read_frames counts it
        with av.open(str(path)) as container:
            count = sum(1 for p in container.demux(video=0) if p.size)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = thread_type, threads
        fps = float(stream.average_rate)
        if segment is None:
            start, stop = 0, count
        else:
            start, stop = segment
            container.seek(int(start / fps / stream.time_base), stream=stream, backward=True)
        positions = [start + p for p in pick(stop - start)]
        wanted = set(positions)
        t0 = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        out: dict[int, np.ndarray] = {}
        for n, frame in enumerate(container.decode(stream)):
            index = n if segment is None else round((frame.time - t0) * fps)
            if index >= stop:
                break
            if index in wanted:  # converted as read_frames converts
                rgb = frame.reformat(format="rgb24", interpolation="AREA")
                out[index] = rgb.to_ndarray()
        stream.codec_context.flush_buffers()  # frame threads left busy can deadlock the close
    return np.stack([out[p] for p in positions])


def decode_variants() -> dict[str, Callable]:
    def today(path, pick, segment):
        return read_frames(path, pick, segment=segment).frames

    def stop(path, pick, segment):
        return read_training_frames(path, pick, segment=segment, skip=False).frames

    def skip(path, pick, segment):
        return read_training_frames(path, pick, segment=segment, skip=True).frames

    return {
        "read_frames (today)": today,
        "PyAV all frames, AUTO threads": lambda p, k, s: pyav_all(p, k, s, "AUTO", 0),
        "PyAV all frames, FRAME, 2 threads": lambda p, k, s: pyav_all(p, k, s, "FRAME", 2),
        "PyAV all frames, 1 thread": lambda p, k, s: pyav_all(p, k, s, "SLICE", 1),
        "1 thread, stop after last needed": stop,
        "+ skip unneeded non-ref (new)": skip,
    }


# --- measuring ----------------------------------------------------------------------------------


def timed(run: Callable[[], Any]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``run()``."""
    c, w = time.process_time(), time.perf_counter()
    run()
    return time.process_time() - c, time.perf_counter() - w


def rates(samples: int, times: list[tuple[float, float]]) -> dict[str, float]:
    return {
        "per_core": round(statistics.median(samples / c for c, _ in times), 2),
        "wall": round(statistics.median(samples / w for _, w in times), 2),
    }


def same_samples(a: list[dict], b: list[dict]) -> bool:
    return all(
        all(torch.equal(x[k], y[k]) for k in ("video", "boxes", "valid", "frame_indices"))
        for x, y in zip(a, b, strict=True)
    )


def bench_kind(kind: str, items: list[ClipItem], work: Path, rounds: int) -> dict[str, Any]:
    sampling = "segment" if kind == "epic" else "dense"
    boxes = CachedBoxes(str(work / "boxes.jsonl.gz"), HASH)
    options = dict(frames=16, rate=2, size=224, sampling=sampling, train=True, seed=0, flip=False)
    sets = {
        "today": TodayClips(items, work, boxes, **options),
        "new": VideoClips(items, work, boxes, **options),
    }
    batches = [list(range(i, min(i + BATCH, len(items)))) for i in range(0, len(items), BATCH)]

    def run(dataset):
        return [s for b in batches for s in dataset.__getitems__(b)]

    equal = same_samples(run(sets["today"]), run(sets["new"]))  # also warms up
    found = sum(s["box"] == "cached" for s in run(sets["new"]))
    sample_times: dict[str, list] = {k: [] for k in sets}
    for _ in range(rounds):
        for name, dataset in sets.items():
            sample_times[name].append(timed(lambda d=dataset: run(d)))
    sample = {k: rates(len(items), v) for k, v in sample_times.items()}

    # The decode stage alone, the same picks as the sample.
    picks = []
    for i, item in enumerate(items):
        rng = np.random.default_rng([0, 0, i])
        length = item.segment[1] - item.segment[0] if item.segment else None
        if sampling == "dense":
            picks.append(lambda c, r=rng.bit_generator.state: dense_indices(c, 16, 2, _rng(r)))
        else:
            picks.append(lambda c, r=rng.bit_generator.state: segment_indices(0, c, 16, _rng(r)))
        del length
    variants = decode_variants()
    reference = [
        variants["read_frames (today)"](work / it.path, pk, it.segment)
        for it, pk in zip(items, picks, strict=True)
    ]
    decode_times: dict[str, list] = {k: [] for k in variants}
    decode_equal = {}
    for name, fn in variants.items():
        got = [fn(work / it.path, pk, it.segment) for it, pk in zip(items, picks, strict=True)]
        decode_equal[name] = all(np.array_equal(a, b) for a, b in zip(reference, got, strict=True))
    for _ in range(rounds):
        for name, fn in variants.items():
            decode_times[name].append(
                timed(
                    lambda f=fn: [
                        f(work / it.path, pk, it.segment)
                        for it, pk in zip(items, picks, strict=True)
                    ]
                )
            )
    decode = {
        k: {**rates(len(items), v), "equal_to_today": decode_equal[k]}
        for k, v in decode_times.items()
    }

    # The crop stage and the reduced-size conversion, on the first clip's frames.
    frames = torch.from_numpy(reference[0])
    crops = [
        multi_scale_crop(frames.shape[2], frames.shape[1], 224, np.random.default_rng(s))
        for s in range(8)
    ]
    crop_fns = {
        "channels-last floats (today)": apply_crop_before,
        "planar floats (new)": apply_crop,
        "uint8 resize": apply_crop_uint8,
    }
    crop_times: dict[str, list] = {k: [] for k in crop_fns}
    diffs = {
        k: max(float((f(frames, c) - apply_crop_before(frames, c)).abs().max()) for c in crops)
        for k, f in crop_fns.items()
    }
    for _ in range(rounds):
        for name, fn in crop_fns.items():
            crop_times[name].append(timed(lambda f=fn: [f(frames, c) for c in crops]))
    crop = {k: {**rates(len(crops), v), "max_abs_diff": diffs[k]} for k, v in crop_times.items()}
    convert = convert_bench(work / items[0].path, rounds)
    return {
        "clips": len(items),
        "equal_samples": equal,
        "boxes_found": found,
        "sample": sample,
        "decode": decode,
        "crop": crop,
        "convert": convert,
    }


def _rng(state: dict) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


def convert_bench(path: Path, rounds: int) -> dict[str, dict[str, float]]:
    """16 decoded frames to RGB: at the source size, scaled by reformat, resized by OpenCV."""
    with av.open(str(path)) as container:
        decoded = [f for _, f in zip(range(16), container.decode(video=0), strict=False)]
    w, h = working_size(decoded[0].width, decoded[0].height, 160)
    fns = {
        "reformat rgb24, source size": lambda f: f.to_ndarray(format="rgb24"),
        "reformat rgb24 scaled to short side 160": lambda f: f.reformat(
            width=w, height=h, format="rgb24", interpolation="AREA"
        ).to_ndarray(),
        "to_ndarray then cv2.resize (AREA)": lambda f: cv2.resize(
            f.to_ndarray(format="rgb24"), (w, h), interpolation=cv2.INTER_AREA
        ),
    }
    out: dict[str, list] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            out[name].append(timed(lambda f=fn: [f(x) for x in decoded for _ in range(4)]))
    return {k: rates(16 * 4, v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssv2", type=int, default=12)
    parser.add_argument("--epic", type=int, default=2)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=Path("bench-out/loader"))
    parser.add_argument("--json", type=Path, default=Path("bench/results/loader.json"))
    args = parser.parse_args()
    one_thread()
    items = make_data(args.work_dir, args.ssv2, args.epic, args.segments)
    results: dict[str, Any] = {
        "machine": {
            "arch": platform.machine(),
            "cpus": len(__import__("os").sched_getaffinity(0)),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "av": av.__version__,
        },
        "rounds": args.rounds,
    }
    for kind in ("ssv2", "epic"):
        r = results[kind] = bench_kind(kind, items[kind], args.work_dir, args.rounds)
        base = r["sample"]["today"]["per_core"]
        print(
            f"\n{kind}: {r['clips']} clips, samples equal: {r['equal_samples']}, "
            f"records found: {r['boxes_found']}/{r['clips']}"
        )
        print("  sample (clips/s per core, wall, × today):")
        for name, v in r["sample"].items():
            print(
                f"    {name:40s} {v['per_core']:8.2f} {v['wall']:8.2f}  ×{v['per_core'] / base:.2f}"
            )
        base = r["decode"]["read_frames (today)"]["per_core"]
        print("  decode 16 frames (clips/s per core, wall, × today, equal):")
        for name, v in r["decode"].items():
            print(
                f"    {name:40s} {v['per_core']:8.2f} {v['wall']:8.2f}  "
                f"×{v['per_core'] / base:.2f}  {v['equal_to_today']}"
            )
        base = r["crop"]["channels-last floats (today)"]["per_core"]
        print("  crop 16 frames to 224 (crops/s per core, × today, max |diff|):")
        for name, v in r["crop"].items():
            print(
                f"    {name:40s} {v['per_core']:8.2f}  ×{v['per_core'] / base:.2f}  "
                f"{v['max_abs_diff']:.2e}"
            )
        print("  frame to RGB (frames/s per core):")
        for name, v in r["convert"].items():
            print(f"    {name:40s} {v['per_core']:8.1f}")
        r["gpu_640_loader_processes"] = {
            k: int(np.ceil(640 / v["per_core"])) for k, v in r["sample"].items()
        }
        print(f"  loader processes for 640 clips/s: {r['gpu_640_loader_processes']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
