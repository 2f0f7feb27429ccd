"""TV-L1 on a GPU: agreement with the CPU paths, and pairs/s at 224² for batches 1…64 against
OpenCV's TV-L1 on the same machine's CPU cores, all in one run.

    python bench/gpu_flow.py --frames .gpu-data/frames.npz --json OUT.json

Variants: eager PyTorch; each level's outer iteration replayed as a CUDA graph; the inner iteration
fused by torch.compile and replayed as a graph. Each with OpenCV's epsilon stopping (per pair on
the device, one host sync per outer iteration) and with fixed iterations (no syncs).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from bench.realframes import load
from shared.flow.gray import rgb_to_gray
from shared.flow.opencv_backend import opencv_tvl1
from shared.flow.tvl1 import clear_graph_cache, tvl1_flow
from shared.params import FlowParams, MotionParams

VARIANTS = {
    # name: (cuda_graphs, compile, stopping)
    "eager/epsilon": (False, False, "epsilon"),
    "graphs/epsilon": (True, False, "epsilon"),
    "compiled+graphs/epsilon": (True, True, "epsilon"),
    "graphs/fixed": (True, False, "fixed"),
    "compiled+graphs/fixed": (True, True, "fixed"),
}


def epe(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).norm(dim=1).mean())


def pairs(gray: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` consecutive pairs, cycling through the frames when there are fewer."""
    n = gray.shape[0] - 1
    idx = torch.arange(batch) % n
    return gray[idx], gray[idx + 1]


def time_variant(gray_cuda: torch.Tensor, batch: int, variant: str, reps: int) -> float:
    graphs, compiled, stopping = VARIANTS[variant]
    params = FlowParams(stopping=stopping)
    i0, i1 = pairs(gray_cuda, batch)
    tvl1_flow(i0, i1, params, cuda_graphs=graphs, compile=compiled)  # warm-up / capture
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        tvl1_flow(i0, i1, params, cuda_graphs=graphs, compile=compiled)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


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
    start = time.perf_counter()
    for a, b in jobs[: max(4, count // 4)]:
        algo.calc(a, b, None)
    threaded = max(4, count // 4) / (time.perf_counter() - start)
    cores = os.cpu_count() or 1
    with mp.get_context("spawn").Pool(cores) as pool:
        pool.map(_opencv_worker, jobs[:cores])  # warm the workers
        start = time.perf_counter()
        pool.map(_opencv_worker, jobs, chunksize=1)
        per_core = count / (time.perf_counter() - start)
    return {"opencv_threads": threaded, "opencv_processes": per_core, "cpu_cores": cores}


def agreement(frames: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean EPE between the CUDA variants, the CPU torch path and OpenCV on real 224² pairs."""
    out = {}
    gray = rgb_to_gray(torch.from_numpy(frames["carphone_224sq"][:3]))
    i0, i1 = gray[:-1], gray[1:]
    cpu = tvl1_flow(i0, i1, FlowParams())
    ref = opencv_tvl1(i0, i1, FlowParams())
    out["cpu_torch_vs_opencv"] = epe(cpu, ref)
    for variant, (graphs, compiled, stopping) in VARIANTS.items():
        params = FlowParams(stopping=stopping)
        flow = tvl1_flow(i0.cuda(), i1.cuda(), params, cuda_graphs=graphs, compile=compiled)
        out[f"cuda_{variant}_vs_cpu_torch"] = epe(flow, cpu)
        out[f"cuda_{variant}_vs_opencv"] = epe(flow, ref)
    return out


def pipeline_on_gpu(frames: np.ndarray) -> dict[str, object]:
    """End to end on CUDA (torch flow, CuPy labels) vs CPU labelling of the same maps."""
    from shared.pipeline import analyse_frames, boxes_from_maps

    params = MotionParams(backend="torch")
    analyse_frames(frames[:3], params, device="cuda")  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = analyse_frames(frames, params, device="cuda")  # default batch (16 on CUDA)
    wall = time.perf_counter() - start
    maps = torch.from_numpy(result.motion).unsqueeze(1)
    cpu_boxes = boxes_from_maps(maps, params)
    gpu_boxes = boxes_from_maps(maps.cuda(), params)
    try:
        import cupy  # noqa: F401

        labels = "cupy"
    except ImportError:
        labels = "opencv (no cupy)"
    return {
        "frames": int(frames.shape[0]),
        "wall_s": wall,
        "pairs_per_s": (frames.shape[0] - 1) / wall,
        "timings": result.timings,
        "labels_backend": labels,
        "cuda_labels_equal_cpu": cpu_boxes == gpu_boxes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=Path, default=None, help="npz from bench/realframes.py")
    parser.add_argument("--batches", default="1,2,4,8,16,32,64")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--opencv-pairs", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")

    frames = {k: load(args.frames, k) for k in ("bikes_224sq", "carphone_224sq")}
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    figures: dict[str, object] = {
        "device": torch.cuda.get_device_name(),
        "nvidia_smi": smi,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"device: {figures['device']} ({smi}), torch {torch.__version__}", flush=True)

    figures["agreement_epe_px"] = agreement(frames)
    for key, value in figures["agreement_epe_px"].items():
        print(f"  EPE {key}: {value:.4f} px", flush=True)

    gray = rgb_to_gray(torch.from_numpy(frames["bikes_224sq"]))  # (33, 1, 224, 224)
    gray_np = gray[:, 0].numpy().astype(np.uint8)
    ocv = opencv_rates(gray_np, args.opencv_pairs)
    figures["opencv_cpu"] = ocv
    best_cpu = max(ocv["opencv_threads"], ocv["opencv_processes"])
    print(
        f"OpenCV TV-L1 on {ocv['cpu_cores']} CPU cores: {ocv['opencv_threads']:.1f} pairs/s "
        f"(1 process, OpenCV threads), {ocv['opencv_processes']:.1f} pairs/s (1 process/core)",
        flush=True,
    )

    gray_cuda = gray.cuda()
    rates: dict[str, dict[int, float]] = {}
    batches = [int(b) for b in args.batches.split(",")]
    for variant in args.variants.split(","):
        rates[variant] = {}
        for batch in batches:
            if variant.startswith("eager") and batch not in (1, 8, 64):
                continue  # eager is slow; three points show its trend
            rate = time_variant(gray_cuda, batch, variant, args.reps)
            rates[variant][batch] = rate
            print(
                f"  {variant:26s} B={batch:3d}: {rate:8.1f} pairs/s "
                f"({rate / best_cpu:5.2f}x OpenCV)",
                flush=True,
            )
        clear_graph_cache()
        torch.cuda.empty_cache()
    figures["pairs_per_s_224sq"] = rates
    figures["ratio_to_best_opencv_cpu"] = {
        v: {b: r / best_cpu for b, r in per.items()} for v, per in rates.items()
    }
    figures["pipeline_cuda"] = pipeline_on_gpu(frames["bikes_224sq"])
    print(f"pipeline on CUDA: {figures['pipeline_cuda']}", flush=True)

    print("\npairs/s at 224x224 (ratio to the best OpenCV CPU figure)")
    print("variant".ljust(26) + "".join(f"B={b:<9d}" for b in batches))
    for variant, per in rates.items():
        cells = "".join(
            f"{per[b]:6.0f}({per[b] / best_cpu:4.1f}x)"[:11].ljust(11) if b in per else " " * 11
            for b in batches
        )
        print(variant.ljust(26) + cells)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
