"""TV-L1 on a GPU, all in one run: pairs/s at 224×224 and 320×240 for batches 1…128, with
epsilon stopping and with fixed iterations; the fraction of the memory-bandwidth bound reached;
the ratio to OpenCV's TV-L1 on the same machine's CPU cores; agreement with OpenCV's flow on
real clips.

    python bench/gpu_flow.py --json OUT.json [--sizes 224x224,240x320] [--batches 1,8,32,128]
        [--variants triton+graphs,compiled+graphs] [--stopping epsilon,fixed] [--budget 150]

Variants: ``triton+graphs`` (the median filter and each inner iteration as one hand-written Triton
kernel, shared/flow/tvl1_triton.py), ``compiled+graphs`` (the inner step fused by torch.compile),
both with each pyramid level's outer iteration replayed as a CUDA graph; ``graphs`` (graphs,
eager step) and ``eager`` (no graphs; slow, so timed at B ≤ 8 only). Frames: 33 consecutive
frames of bikes.mp4, centre crops; a batch cycles through their 32 pairs. Each figure is the
median of ``--reps`` timed calls after an untimed one (compilation and graph capture stay out);
a call longer than ``--long-call`` seconds is timed once. Points left when ``--budget`` seconds
minus ``--tail`` have passed are skipped (and say so), so the run ends in time.

Bandwidth bound. One inner iteration (``_iterate`` and ``_step`` in shared/flow/tvl1.py) must at
least read, per pixel, u (2 float32 channels), px (2), py (2), grad_i (2), grad_sq (1) and rho_c
(1), and write the new u, px and py (6): 16 floats, 64 bytes (the divergence's and forward
gradient's neighbours are re-read from cache; ``active`` is one flag per pair). With epsilon
stopping a pair that has converged is still computed (``torch.where`` keeps its old state), so
every replay of a level's graph costs ``inner_iterations`` iterations over the whole batch (the
Triton kernels copy a stopped pair's 6 floats through instead: 48 bytes, so their epsilon figures
overstate the bytes moved; read their share from the fixed-iteration rows).
Moved bytes = Σ over levels of replays × inner_iterations × B × h × w × 64, with the replays
counted on the captured graphs during the timed call (fixed: warps × outer_iterations per level).
Fraction of the bound = moved bytes / call time / bandwidth, the bandwidth measured in the same
run (a device-to-device copy, bytes read + written; the nominal figure is printed beside it).
What the count leaves out (the median filter once per replay, warping and pyramid once per warp)
makes the fraction a lower bound of how busy the memory is, and 1 / fraction the most a kernel
that moves only those bytes could gain.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.realframes import load
from mofo.shared.flow import tvl1 as tvl1_module
from mofo.shared.flow.gray import rgb_to_gray
from mofo.shared.flow.opencv_backend import opencv_tvl1
from mofo.shared.flow.tvl1 import clear_graph_cache, pyramid_sizes, tvl1_flow
from mofo.shared.params import FlowParams

VARIANTS = {  # name: (cuda_graphs, compile, fused)
    "triton+graphs": (True, False, True),
    "compiled+graphs": (True, True, False),
    "graphs": (True, False, False),
    "eager": (False, False, False),
}
EAGER_MAX_BATCH = 8
# Bytes one inner iteration must move per pixel (module docstring): 10 float32 read, 6 written.
INNER_FLOATS_READ = 2 + 2 + 2 + 2 + 1 + 1  # u, px, py, grad_i, grad_sq, rho_c
INNER_FLOATS_WRITTEN = 2 + 2 + 2  # u, px, py
INNER_BYTES_PER_PIXEL = 4 * (INNER_FLOATS_READ + INNER_FLOATS_WRITTEN)
# Datasheet memory bandwidth, bytes/s (name fragments as torch.cuda.get_device_name gives them).
NOMINAL_BANDWIDTH = [
    ("H200", 4.8e12),
    ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),  # SXM (HBM3)
    ("A100-SXM4-80GB", 2.039e12),
    ("A100", 1.555e12),
]
CLIPS = ("bikes", "carphone")


def parse_size(text: str) -> tuple[int, int]:
    """'224x224' or '240x320' → (height, width)."""
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def size_label(size: tuple[int, int]) -> str:
    """(240, 320) → '320x240' (width × height, as video sizes are written)."""
    return f"{size[1]}x{size[0]}"


def nominal_bandwidth(device_name: str) -> float | None:
    """The datasheet memory bandwidth of a device, bytes/s, or None when not known."""
    for fragment, bandwidth in NOMINAL_BANDWIDTH:
        if fragment in device_name:
            return bandwidth
    return None


def inner_bytes(replays: dict[tuple[int, int], int], batch: int, inner_iterations: int) -> int:
    """Bytes the inner iterations must move: Σ replays × inner × B × h × w × 64 (docstring)."""
    return sum(
        count * inner_iterations * batch * h * w * INNER_BYTES_PER_PIXEL
        for (h, w), count in replays.items()
    )


def fixed_replays(height: int, width: int, params: FlowParams) -> dict[tuple[int, int], int]:
    """Graph replays per level with fixed iterations: warps × outer_iterations at every level."""
    sizes = pyramid_sizes(height, width, params.scales, params.scale_step)
    return {size: params.warps * params.outer_iterations for size in sizes}


def epe(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean end-point difference between two (B, 2, H, W) flows, pixels."""
    return float((a.float().cpu() - b.float().cpu()).norm(dim=1).mean())


def pairs(gray: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` consecutive pairs, cycling through the frames when there are fewer."""
    n = gray.shape[0] - 1
    idx = torch.arange(batch) % n
    return gray[idx], gray[idx + 1]


class _CountingGraph:
    """Stands in for a level's captured CUDA graph and counts its replays."""

    def __init__(self, graph: torch.cuda.CUDAGraph, counter: Counter, key: tuple[int, int]):
        self.graph, self.counter, self.key = graph, counter, key

    def replay(self) -> None:
        self.counter[self.key] += 1
        self.graph.replay()


def count_replays(batch: int, params: FlowParams, compiled: bool, fused: bool) -> Counter:
    """Wrap the captured graphs of (batch, params, compiled, fused) so that their replays are
    counted per level (h, w). Reads tvl1's graph cache: a benchmark's look inside, not an API."""
    counter: Counter = Counter()
    for key, solver in tvl1_module._GRAPHS.items():
        b, h, w, p, _, comp, fus = key
        if (b, p, comp, fus) == (batch, params, compiled, fused) and solver.graph is not None:
            graph = solver.graph.graph if isinstance(solver.graph, _CountingGraph) else solver.graph
            solver.graph = _CountingGraph(graph, counter, (h, w))
    return counter


@dataclass
class Point:
    pairs_per_s: float
    seconds_per_call: list[float]
    replays: dict[str, int] | None  # per level "hxw", counted in the last timed call
    moved_bytes: int | None


def time_point(
    gray: torch.Tensor, batch: int, variant: str, stopping: str, reps: int, long_call: float
) -> Point:
    """Pairs/s of one (batch, variant, stopping) after one untimed call."""
    graphs, compiled, fused = VARIANTS[variant]
    params = FlowParams(stopping=stopping)
    i0, i1 = pairs(gray, batch)
    start = time.perf_counter()
    tvl1_flow(i0, i1, params, cuda_graphs=graphs, compile=compiled, fused=fused)  # compile, capture
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    reps = 1 if first > long_call else reps
    times, counter = [], Counter()
    for _ in range(reps):
        counter = count_replays(batch, params, compiled, fused) if graphs else Counter()
        start = time.perf_counter()
        tvl1_flow(i0, i1, params, cuda_graphs=graphs, compile=compiled, fused=fused)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    replays = dict(counter) if counter else None
    moved = inner_bytes(replays, batch, params.inner_iterations) if replays else None
    return Point(
        pairs_per_s=batch / statistics.median(times),
        seconds_per_call=times,
        replays={f"{h}x{w}": n for (h, w), n in replays.items()} if replays else None,
        moved_bytes=moved,
    )


def copy_bandwidth(nbytes: int = 2**30, reps: int = 10) -> float:
    """Device-to-device copy, bytes read + written per second (median of reps, CUDA events)."""
    src = torch.empty(nbytes // 4, device="cuda").uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / statistics.median(times)


def _opencv_worker(args: tuple[np.ndarray, np.ndarray]) -> None:
    import cv2

    cv2.setNumThreads(1)
    a, b = args
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    algo.calc(a, b, None)


def opencv_rates(gray: np.ndarray, count: int) -> dict[str, float]:
    """OpenCV TV-L1 pairs/s on this machine's CPUs: one process with OpenCV's own threads, and
    one single-threaded process per core."""
    import cv2

    jobs = [(gray[k % (len(gray) - 1)], gray[k % (len(gray) - 1) + 1]) for k in range(count)]
    cv2.setNumThreads(-1)
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    threaded_pairs = max(2, count // 8)
    start = time.perf_counter()
    for a, b in jobs[:threaded_pairs]:
        algo.calc(a, b, None)
    threaded = threaded_pairs / (time.perf_counter() - start)
    cores = os.cpu_count() or 1
    with mp.get_context("spawn").Pool(cores) as pool:
        pool.map(_opencv_worker, jobs[:cores])  # warm the workers
        start = time.perf_counter()
        pool.map(_opencv_worker, jobs, chunksize=1)
        per_core = count / (time.perf_counter() - start)
    return {
        "opencv_threads": threaded,
        "opencv_processes": per_core,
        "best": max(threaded, per_core),
        "cpu_cores": cores,
        "pairs": count,
    }


def agreement(
    frames: dict[str, np.ndarray], pairs_per_clip: int, variants: list[str]
) -> dict[str, dict]:
    """Mean EPE against OpenCV's flow on real pairs of each clip, both stoppings, for the first
    of ``variants`` (``{stopping}_epe_vs_opencv_px``) and for each of them by name
    (``{variant}/{stopping}_epe_vs_opencv_px``), and between the first two
    (``{stopping}_epe_between_variants_px``); with OpenCV's mean |flow| for scale."""
    out = {}
    for clip, rgb in frames.items():
        gray = rgb_to_gray(torch.from_numpy(rgb[: pairs_per_clip + 1]))
        i0, i1 = gray[:-1], gray[1:]
        ref = opencv_tvl1(i0, i1, FlowParams())
        row = {"pairs": int(i0.shape[0]), "opencv_mean_flow_px": float(ref.norm(dim=1).mean())}
        for stopping in ("epsilon", "fixed"):
            flows = []
            for variant in variants:
                graphs, compiled, fused = VARIANTS[variant]
                flow = tvl1_flow(
                    i0.cuda(),
                    i1.cuda(),
                    FlowParams(stopping=stopping),
                    cuda_graphs=graphs,
                    compile=compiled,
                    fused=fused,
                )
                row[f"{variant}/{stopping}_epe_vs_opencv_px"] = epe(flow, ref)
                flows.append(flow)
            row[f"{stopping}_epe_vs_opencv_px"] = epe(flows[0], ref)
            if len(flows) > 1:
                row[f"{stopping}_epe_between_variants_px"] = epe(flows[0], flows[1])
        out[clip] = row
    clear_graph_cache()
    return out


def device_figures() -> dict[str, object]:
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        smi = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
    except OSError as error:
        smi = f"nvidia-smi: {error}"
    name = torch.cuda.get_device_name()
    return {
        "device": name,
        "nvidia_smi": smi,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "nominal_bandwidth_Bps": nominal_bandwidth(name),
    }


def sweep(
    args: argparse.Namespace, gray: torch.Tensor, best_cpu: float, bandwidth: float, deadline: float
) -> dict[str, dict[str, dict]]:
    """All (variant, stopping, batch) points at one size; {variant/stopping: {B: figures}}."""
    out: dict[str, dict[str, dict]] = {}
    for variant in args.variants.split(","):
        for stopping in args.stopping.split(","):
            name = f"{variant}/{stopping}"
            out[name] = {}
            for batch in args.batches:
                if variant == "eager" and batch > EAGER_MAX_BATCH:
                    continue
                if time.monotonic() > deadline:
                    out[name][str(batch)] = {"skipped": "budget"}
                    print(f"  {name:26s} B={batch:3d}: skipped (budget)", flush=True)
                    continue
                point = time_point(gray, batch, variant, stopping, args.reps, args.long_call)
                row: dict[str, object] = {
                    "pairs_per_s": point.pairs_per_s,
                    "x_opencv": point.pairs_per_s / best_cpu,
                    "seconds_per_call": point.seconds_per_call,
                    "replays": point.replays,
                }
                note = ""
                if point.moved_bytes is not None:
                    seconds = statistics.median(point.seconds_per_call)
                    row["moved_GB"] = point.moved_bytes / 1e9
                    row["achieved_GBps"] = point.moved_bytes / seconds / 1e9
                    row["bandwidth_fraction"] = point.moved_bytes / seconds / bandwidth
                    note = f", {100 * row['bandwidth_fraction']:5.1f} % of bandwidth"
                out[name][str(batch)] = row
                print(
                    f"  {name:26s} B={batch:3d}: {point.pairs_per_s:8.1f} pairs/s "
                    f"({point.pairs_per_s / best_cpu:5.2f}x OpenCV){note}",
                    flush=True,
                )
            clear_graph_cache()
            torch.cuda.empty_cache()
    return out


def print_table(label: str, rates: dict[str, dict[str, dict]], batches: list[int]) -> None:
    print(f"\npairs/s at {label} (× best OpenCV CPU figure; % of memory bandwidth)")
    print("variant".ljust(26) + "".join(f"B={b:<21d}" for b in batches))
    for name, per in rates.items():
        cells = []
        for b in batches:
            row = per.get(str(b), {})
            if "pairs_per_s" not in row:
                cells.append((row.get("skipped", "") or "").ljust(23))
                continue
            frac = row.get("bandwidth_fraction")
            text = f"{row['pairs_per_s']:7.1f} ({row['x_opencv']:4.1f}x"
            text += f"; {100 * frac:4.1f}%)" if frac is not None else ")"
            cells.append(text.ljust(23))
        print(name.ljust(26) + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=Path, default=None, help="npz from bench/realframes.py")
    parser.add_argument("--sizes", default="224x224,240x320", help="H x W, comma-separated")
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument(
        "--variants", default="triton+graphs,compiled+graphs", help=f"of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--stopping", default="epsilon,fixed")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--long-call", type=float, default=3.0, help="seconds: time such once")
    parser.add_argument("--opencv-pairs", type=int, default=32, help="per size")
    parser.add_argument("--agreement-pairs", type=int, default=3, help="per clip and size")
    parser.add_argument("--budget", type=float, default=180, help="seconds this run may take")
    parser.add_argument("--tail", type=float, default=30, help="of which kept after the sweep")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    t0 = time.monotonic()
    deadline = t0 + args.budget - args.tail  # points after it are skipped
    if not torch.cuda.is_available():
        print("skipped: no CUDA")
        if args.json:
            args.json.write_text(json.dumps({"skipped": "no CUDA"}))
        return

    figures: dict[str, object] = device_figures()
    print(f"device: {figures['device']} ({figures['nvidia_smi']}), torch {torch.__version__}")
    bandwidth = copy_bandwidth()
    figures["copy_bandwidth_Bps"] = bandwidth
    nominal = figures["nominal_bandwidth_Bps"]
    print(
        f"device-to-device copy: {bandwidth / 1e12:.2f} TB/s (read + write); nominal "
        + (f"{nominal / 1e12:.2f} TB/s" if nominal else "unknown"),
        flush=True,
    )
    figures["inner_bytes_per_pixel"] = INNER_BYTES_PER_PIXEL
    figures["sizes"] = {}
    for text in args.sizes.split(","):
        size = parse_size(text)
        label = size_label(size)
        key = f"{size[0]}x{size[1]}" if size[0] != size[1] else f"{size[0]}sq"
        frames = {clip: load(args.frames, f"{clip}_{key}") for clip in CLIPS}
        per_size: dict[str, object] = {"height": size[0], "width": size[1]}
        figures["sizes"][label] = per_size
        print(f"\n== {label}", flush=True)
        variants = args.variants.split(",")
        per_size["agreement"] = agreement(frames, args.agreement_pairs, variants)
        for clip, row in per_size["agreement"].items():
            between = ""
            if len(variants) > 1:
                between = (
                    f"; {variants[0]} vs {variants[1]} {row['epsilon_epe_between_variants_px']:.4f}"
                    f" / {row['fixed_epe_between_variants_px']:.4f} px"
                )
            epsilon, fixed = row["epsilon_epe_vs_opencv_px"], row["fixed_epe_vs_opencv_px"]
            print(
                f"  {clip}: mean EPE vs OpenCV ({variants[0]}) {epsilon:.4f} px (epsilon), "
                f"{fixed:.4f} px (fixed){between}; OpenCV mean |flow| "
                f"{row['opencv_mean_flow_px']:.2f} px over {row['pairs']} pairs",
                flush=True,
            )
        gray = rgb_to_gray(torch.from_numpy(frames["bikes"]))  # (33, 1, H, W)
        ocv = opencv_rates(gray[:, 0].numpy().astype(np.uint8), args.opencv_pairs)
        per_size["opencv_cpu"] = ocv
        print(
            f"  OpenCV TV-L1 on {ocv['cpu_cores']} CPU cores: {ocv['opencv_threads']:.2f} pairs/s"
            f" (1 process, OpenCV threads), {ocv['opencv_processes']:.2f} pairs/s "
            f"(1 process/core)",
            flush=True,
        )
        per_size["pairs_per_s"] = sweep(args, gray.cuda(), ocv["best"], bandwidth, deadline)
        if args.json:  # after each size: a later hang loses nothing measured
            args.json.write_text(json.dumps(figures, indent=2, default=str))
    for label, per_size in figures["sizes"].items():
        print_table(label, per_size["pairs_per_s"], args.batches)
    figures["seconds"] = time.monotonic() - t0
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
