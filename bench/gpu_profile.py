"""Where TV-L1's time goes on a GPU: a kernel-by-kernel profile of one call with fixed iterations,
for the Triton kernels and for the torch.compile step.

    python bench/gpu_profile.py --json OUT.json [--size 224x224] [--batch 32]

Variants: ``triton`` (the pipeline's kernels), ``triton-network`` (the same with the median
by a selection network, shared/flow/median_network.py), ``compiled`` (the torch.compile step).
For each: the wall time of a call with CUDA graphs (the pipeline's path; after a
warm-up call), then one call without graphs under ``torch.profiler`` (so each kernel is seen
by name): the GPU time of each kernel name and its share, and the inner-iteration kernel's own
bandwidth, the bytes it must move (64 per pixel per iteration, bench/gpu_flow.py) over its GPU
time, against a device-to-device copy measured in the same run. Frames: real bikes.mp4 pairs
(bench/realframes.py), as in bench/gpu_flow.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.gpu_flow import copy_bandwidth, fixed_replays, inner_bytes, pairs, parse_size
from bench.realframes import load
from mofo.shared.flow.gray import rgb_to_gray
from mofo.shared.flow.tvl1 import clear_graph_cache, tvl1_flow
from mofo.shared.params import FlowParams

# name: (tvl1_flow's keyword arguments, the Triton median's method or None)
VARIANTS = {
    "triton": ({"fused": True}, "count"),
    "triton-network": ({"fused": True}, "network"),  # the median by a selection network
    "compiled": ({"compile": True}, None),
}
INNER_NAME = "_inner_kernel"  # the Triton inner iteration's kernel


def profile(i0: torch.Tensor, i1: torch.Tensor, variant: str, bandwidth: float) -> dict:
    kwargs, median = VARIANTS[variant]
    if median is None:
        return _profile(i0, i1, kwargs, bandwidth)
    from mofo.shared.flow import tvl1_triton

    before, tvl1_triton.MEDIAN_METHOD = tvl1_triton.MEDIAN_METHOD, median
    try:
        return _profile(i0, i1, kwargs, bandwidth)
    finally:
        tvl1_triton.MEDIAN_METHOD = before


def _profile(i0: torch.Tensor, i1: torch.Tensor, kwargs: dict, bandwidth: float) -> dict:
    clear_graph_cache()  # graphs hold the kernels they were captured with
    params = FlowParams(stopping="fixed")
    tvl1_flow(i0, i1, params, **kwargs)  # compile, capture
    torch.cuda.synchronize()
    start = time.perf_counter()
    tvl1_flow(i0, i1, params, **kwargs)
    torch.cuda.synchronize()
    graphs_s = time.perf_counter() - start
    tvl1_flow(i0, i1, params, cuda_graphs=False, **kwargs)  # warm the graph-free path
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        tvl1_flow(i0, i1, params, cuda_graphs=False, **kwargs)
        torch.cuda.synchronize()
        no_graphs_s = time.perf_counter() - start
    kernels = {}
    for event in prof.key_averages():
        gpu_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if gpu_us > 0 and event.count > 0:
            kernels[event.key] = {"gpu_ms": gpu_us / 1000, "launches": event.count}
    total_ms = sum(k["gpu_ms"] for k in kernels.values())
    ranked = dict(sorted(kernels.items(), key=lambda kv: -kv[1]["gpu_ms"])[:12])
    for row in ranked.values():
        row["share"] = row["gpu_ms"] / total_ms if total_ms else None
    batch, _, height, width = i0.shape
    moved = inner_bytes(fixed_replays(height, width, params), batch, params.inner_iterations)
    out = {
        "batch": batch,
        "size": [height, width],
        "graphs_call_s": graphs_s,
        "graphs_pairs_per_s": batch / graphs_s,
        "no_graphs_call_s": no_graphs_s,
        "kernel_gpu_ms_total": total_ms,
        "inner_bytes_GB": moved / 1e9,
        "whole_call_bandwidth_fraction": moved / graphs_s / bandwidth,
        "kernels": ranked,
    }
    inner = [row for key, row in kernels.items() if INNER_NAME in key]
    if inner:
        inner_s = sum(row["gpu_ms"] for row in inner) / 1000
        out["inner_kernel_gpu_s"] = inner_s
        out["inner_kernel_GBps"] = moved / inner_s / 1e9
        out["inner_kernel_bandwidth_fraction"] = moved / inner_s / bandwidth
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="224x224", help="H x W")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--variants", default="triton,triton-network,compiled")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("skipped: no CUDA")
        if args.json:
            args.json.write_text(json.dumps({"skipped": "no CUDA"}))
        return
    size = parse_size(args.size)
    key = f"{size[0]}x{size[1]}" if size[0] != size[1] else f"{size[0]}sq"
    gray = rgb_to_gray(torch.from_numpy(load(None, f"bikes_{key}"))).cuda()
    i0, i1 = pairs(gray, args.batch)
    bandwidth = copy_bandwidth()
    figures: dict[str, object] = {
        "device": torch.cuda.get_device_name(),
        "copy_bandwidth_Bps": bandwidth,
        "variants": {},
    }
    print(f"device-to-device copy: {bandwidth / 1e12:.2f} TB/s", flush=True)
    for variant in args.variants.split(","):
        row = profile(i0, i1, variant, bandwidth)
        clear_graph_cache()
        figures["variants"][variant] = row
        print(
            f"\n{variant}: B={row['batch']} {row['size'][0]}x{row['size'][1]} fixed: "
            f"{row['graphs_pairs_per_s']:.1f} pairs/s with graphs "
            f"({100 * row['whole_call_bandwidth_fraction']:.1f} % of bandwidth), "
            f"{row['no_graphs_call_s']:.2f} s/call without; kernels "
            f"{row['kernel_gpu_ms_total']:.0f} ms GPU time",
            flush=True,
        )
        if "inner_kernel_GBps" in row:
            print(
                f"  inner kernel alone: {row['inner_kernel_GBps']:.0f} GB/s "
                f"({100 * row['inner_kernel_bandwidth_fraction']:.1f} % of the copy's bandwidth)"
            )
        for name, k in row["kernels"].items():
            share = f"{100 * k['share']:5.1f} %"
            print(f"  {share}  {k['gpu_ms']:9.2f} ms  {k['launches']:6d}x  {name[:90]}")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
