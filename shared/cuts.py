"""Shot cuts: whether the two frames of a flow pair lie on different sides of a scene cut.

Flow across a cut is meaningless, so such a pair gets no motion box. A pair is compared twice,
once with ``second`` warped back onto ``first`` along the flow (motion must not look like a cut)
and once as it is (TV-L1 assumes constant brightness, so a lighting change can wreck the flow
while leaving the frames alike); the pair is as different as the better of the two comparisons.

Each comparison averages both frames down to a coarse grid (the short side in ``CELLS`` cells, so
small flow errors and noise wash out), then takes a correlation in every ``WINDOW`` × ``WINDOW``
window of cells: local correlation ignores any brightness and contrast change, global or not.
A window's dissimilarity is 1 − (cov + ε) / √((var₁ + ε)(var₂ + ε)), ε a noise floor, so a flat
window never matches a textured one; windows flat in both frames (letterbox bars, clear sky) are
left out. The score is the *median* over the windows: a cut changes the whole frame, while a fast
object, occlusion or motion blur changes a part of it.

Chosen on bikes.mp4 (five hard cuts, a blurred car crossing close to the camera), carphone and
synthetic pans, lighting changes and cuts between unrelated stills (bench/cuts.py). A global
correlation after warping, or a grey-histogram distance, scored some cut below some non-cut
(TV-L1 partly warps an unrelated image into the other one); the mean over windows kept them
apart by half the median's margin (lowest cut / highest non-cut 2.2 against 4.5), the fast car
spoiling a part of the frame. Limit: where TV-L1 itself fails (a pan of more than ~15 % of the
width a frame) the pair can look like a cut, and is flagged; its flow would be wrong anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CELLS = 28  # the short side is averaged down to about this many cells before comparing
WINDOW = 5  # the local correlation window, in cells (odd)
NOISE_VAR = 4.0  # ε: grey levels² on the coarse grid under which a window counts as flat
# Real cuts score 0.17–0.61 (bikes.mp4 at short side 64, 112 and 224), cuts between stills
# ≥ 0.24; pairs within a shot ≤ 0.043 (bikes' fast car), lighting changes ≤ 0.01 (bench/cuts.py).
CUT_THRESHOLD = 0.1


def _check(first: torch.Tensor, second: torch.Tensor, flow: torch.Tensor) -> None:
    if first.ndim != 4 or first.shape[1] != 1:
        raise ValueError(f"expected first of shape (P, 1, H, W), got {tuple(first.shape)}")
    if second.shape != first.shape:
        raise ValueError(
            f"expected second of shape {tuple(first.shape)} like first, got {tuple(second.shape)}"
        )
    expected = (first.shape[0], 2, *first.shape[2:])
    if tuple(flow.shape) != expected:
        raise ValueError(f"expected flow of shape {expected}, got {tuple(flow.shape)}")


def warp_back(second: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``second`` at x + flow(x): (P, 1, H, W) warped frame and (P, 1, H, W) float mask of
    the pixels whose target lies inside the frame (outside, border padding only repeats the edge).
    """
    height, width = flow.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(height, device=flow.device, dtype=flow.dtype),
        torch.arange(width, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    x = xs + flow[:, 0]  # (P, H, W)
    y = ys + flow[:, 1]
    grid = torch.stack(
        (x * (2.0 / max(width - 1, 1)) - 1.0, y * (2.0 / max(height - 1, 1)) - 1.0), dim=-1
    )
    warped = F.grid_sample(second, grid, mode="bilinear", padding_mode="border", align_corners=True)
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    return warped, inside.unsqueeze(1).to(second.dtype)


def _coarse(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean over square cells of about short side / CELLS pixels, and each cell's mask."""
    cell = max(1, min(image.shape[-2:]) // CELLS)
    weight = F.avg_pool2d(mask, cell)
    mean = F.avg_pool2d(image * mask, cell) / weight.clamp_min(1e-6)
    return mean, (weight >= 0.5).to(image.dtype)


def _median_dissimilarity(
    first: torch.Tensor, second: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """(P,) median over the windows where ``mask`` holds of 1 − local correlation."""
    a, cells = _coarse(first, mask)  # (P, 1, h, w)
    b, _ = _coarse(second, mask)
    # Centre both so the variances below lose no precision to large means.
    a = a - (a * cells).sum((1, 2, 3), keepdim=True) / cells.sum((1, 2, 3), keepdim=True).clamp(1)
    b = b - (b * cells).sum((1, 2, 3), keepdim=True) / cells.sum((1, 2, 3), keepdim=True).clamp(1)

    def local_mean(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, WINDOW, 1, WINDOW // 2, count_include_pad=False)

    weight = local_mean(cells)
    norm = weight.clamp_min(1e-6)
    mean_a, mean_b = local_mean(a * cells) / norm, local_mean(b * cells) / norm
    var_a = (local_mean(a * a * cells) / norm - mean_a.square()).clamp_min(0)
    var_b = (local_mean(b * b * cells) / norm - mean_b.square()).clamp_min(0)
    cov = local_mean(a * b * cells) / norm - mean_a * mean_b
    similarity = (cov + NOISE_VAR) / ((var_a + NOISE_VAR) * (var_b + NOISE_VAR)).sqrt()
    # Windows flat in both frames (a letterbox bar, a clear sky) say nothing either way.
    informative = (weight >= 0.5) & (torch.maximum(var_a, var_b) > NOISE_VAR)
    dissimilarity = torch.where(informative, 1.0 - similarity, torch.nan).flatten(1)
    return dissimilarity.nanquantile(0.5, dim=1)  # NaN where no window is left


def cut_scores(first: torch.Tensor, second: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """(P,) how unlike the same shot each pair is: about 0 for one shot, above ``CUT_THRESHOLD``
    across a cut (at most 2).

    ``first`` and ``second`` are (P, 1, H, W) grey frames in [0, 255]; ``flow`` (P, 2, H, W) is
    the flow from ``first`` to ``second`` in pixels, channel 0 the x displacement.
    """
    _check(first, second, flow)
    first, second, flow = first.float(), second.float(), flow.float()
    warped, inside = warp_back(second, flow)
    moved = _median_dissimilarity(first, warped, inside)
    still = _median_dissimilarity(first, second, torch.ones_like(inside))
    # fmin: where the flow sends every pixel out of the frame, the unwarped comparison decides;
    # frames with no structure at all (a fade through flat grey) show no cut.
    return torch.fmin(moved, still).nan_to_num(0.0)


def shot_cuts(
    first: torch.Tensor,
    second: torch.Tensor,
    flow: torch.Tensor,
    threshold: float = CUT_THRESHOLD,
) -> torch.Tensor:
    """(P,) bool: True where the pair straddles a scene cut (its flow gives no motion box)."""
    return cut_scores(first, second, flow) > threshold
