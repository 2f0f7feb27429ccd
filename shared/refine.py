"""Tight motion boxes: each region's box shrunk to the pixels that move against the camera.

The motion-boundary map (eq. 1) is high on a band each side of a mover's edge (TV-L1's
regularisation and median filter spread the flow's derivative, the smoothing spreads it more),
so the boxes of its regions are wider than the mover. The flow itself, less the camera's motion,
is high on the mover and low around it. :func:`dominant_motion` fits an affine model of each
frame's flow robustly (least squares reweighted with Tukey's biweight, so movers are outliers;
each pixel weighted by :func:`flow_confidence`, how well the frame pins its flow down, so flat sky
and walls, whose flow is TV-L1's guess, do not tilt it);
:func:`residual_flow` is the flow less that model; :func:`refine_regions` shrinks each region's
box to the pixels whose residual reaches a fraction of the region's own, pulls back the side the
mover moves towards (TV-L1 gives the mover's flow to the background it is about to cover) and
drops regions that hardly move against the camera.

A flow can move where nothing does: a shadow drifting over a still wall, light that changes,
compression blocks, noise on a zoom. The frames themselves tell: where something really moves
against the camera, the second frame warped back along the flow matches the first better than
warped back along the camera's motion alone; where the camera's motion explains the pixels as
well, the flow's own motion was not there. :func:`camera_evidence` measures that match as a local
normalised cross-correlation (blind to a change of brightness or contrast), and
:func:`refine_regions` drops a region whose moving pixels do not gain ``min_evidence`` from
their own motion, and cuts each kept box to the pixels that do (``pixel_evidence``). A region
too flat for the frames to tell either way keeps the benefit of the doubt only in a frame where
no region bore its motion out: beside a proven mover it is most likely flat sky or wall, whose
flow is TV-L1's guess.
The same evidence lets a box grow back to a mover's slow parts (``grow_evidence``): an arm
swinging from the shoulder moves fast at the hand and hardly at the shoulder, so a cut at half
the region's level keeps the forearm only, while the frames bear the upper arm's small motion
out as well as the forearm's. Growth takes no pixel moving less than a multiple of its
frame's median residual (``grow_noise``): with the camera taken out, that median is the flow's
own noise, near zero in a clean frame and high under heavy compression or flicker.

A box's sides need not sit on whole pixels: a mover's edge crosses the pixels it lies on, and
the flow there takes a part of the mover's motion. Each region is refined on a crop of its frame
read at several samples a pixel (the residual flow bilinearly), so a side falls where the flow
crosses the cut, to a fraction of a pixel, rather than at the first pixel past it; at the
working size (128 px) one pixel is nearly two of a 224-px source.

How the defaults were chosen, and what they gain: ``bench/tune_refine.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mofo.shared.cuts import warp_back
from mofo.shared.params import MotionParams
from mofo.shared.record import Box, union_box
from mofo.shared.regions import label_regions


def _check_flow(flow: torch.Tensor) -> None:
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"expected flow of shape (T, 2, H, W), got {tuple(flow.shape)}")


def _coords(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) pixel coordinates x, y as float32."""
    ys = torch.arange(height, dtype=torch.float32, device=device)
    xs = torch.arange(width, dtype=torch.float32, device=device)
    return xs.view(1, -1).expand(height, width), ys.view(-1, 1).expand(height, width)


def dominant_motion(
    flow: torch.Tensor,
    *,
    stride: int = 2,
    border: float = 0.05,
    iterations: int = 10,
    tukey: float = 4.685,
    min_scale: float = 0.05,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The camera's motion: an affine model of each frame's flow, (T, 2, H, W) → (T, 2, 3).

    ``A[t] @ [x, y, 1]`` is the modelled flow (u, v) at pixel (x, y). Fitted on every
    ``stride``-th pixel away from a ``border`` × short side margin, starting from the median
    flow, by least squares reweighted with Tukey's biweight (cut-off ``tukey`` × the robust
    residual scale, at least ``min_scale`` px), so movers count as outliers. ``weight``
    (T, H, W) in [0, 1], e.g. :func:`flow_confidence`, scales each pixel's say (the starting
    median is taken over pixels weighted ≥ 0.5); a frame with fewer than 2 % of its sampled
    pixels weighted ≥ 0.5 is fitted unweighted.
    """
    _check_flow(flow)
    t, _, height, width = flow.shape
    if weight is not None and weight.shape != (t, height, width):
        raise ValueError(
            f"expected weight of shape {(t, height, width)}, got {tuple(weight.shape)}"
        )
    margin = round(border * min(height, width))
    if min(height, width) - 2 * margin < 2:
        margin = 0
    sample = flow[:, :, margin : height - margin : stride, margin : width - margin : stride]
    xs, ys = _coords(height, width, flow.device)
    xs = xs[margin : height - margin : stride, margin : width - margin : stride].flatten()
    ys = ys[margin : height - margin : stride, margin : width - margin : stride].flatten()
    # normalised coordinates keep the 3 × 3 normal equations well conditioned
    cx, cy, scale = (width - 1) / 2, (height - 1) / 2, max(height, width) / 2
    design = torch.stack(((xs - cx) / scale, (ys - cy) / scale, torch.ones_like(xs)), dim=1)
    target = sample.flatten(2).transpose(1, 2).double()  # (T, N, 2)
    design = design.double()  # (N, 3)
    prior = torch.ones(t, target.shape[1], dtype=torch.float64, device=flow.device)
    if weight is not None:
        sampled = weight[:, margin : height - margin : stride, margin : width - margin : stride]
        sampled = sampled.flatten(1).double()  # (T, N)
        enough = (sampled >= 0.5).sum(dim=1) >= max(1, round(0.02 * sampled.shape[1]))
        prior = torch.where(enough[:, None], sampled, prior)

    theta = torch.zeros(t, 3, 2, dtype=torch.float64, device=flow.device)
    # start: the median translation of the pixels that count
    start = target.masked_fill((prior < 0.5)[..., None], float("nan"))
    theta[:, 2] = start.nanmedian(dim=1).values
    eye = 1e-9 * torch.eye(3, dtype=torch.float64, device=flow.device)
    for _ in range(iterations):
        resid = (target - design @ theta).square().sum(dim=2).sqrt()  # (T, N)
        spread = resid.masked_fill(prior < 0.5, float("nan")).nanmedian(dim=1).values
        sigma = (1.4826 * spread).clamp(min=min_scale)  # (T,), over the pixels that count
        z = resid / (tukey * sigma[:, None])
        robust = ((1 - z.square()).clamp(min=0)).square() * prior  # (T, N)
        wd = design * robust[..., None]  # (T, N, 3)
        normal = design.T @ wd + eye  # (T, 3, 3)
        theta = torch.linalg.solve(normal, wd.transpose(1, 2) @ target)  # (T, 3, 2)

    # back to pixel coordinates: u = a (x − cx)/s + b (y − cy)/s + c
    a, b, c = theta[:, 0] / scale, theta[:, 1] / scale, theta[:, 2]  # each (T, 2)
    offset = c - a * cx - b * cy
    return torch.stack((a, b, offset), dim=2).to(flow.dtype)  # (T, 2, 3)


def flow_confidence(gray: torch.Tensor, *, window: int = 5, scale: float = 2.0) -> torch.Tensor:
    """How well each pixel of (T, 1, H, W) gray frames pins its flow down: (T, H, W) in [0, 1].

    The square root of the smaller eigenvalue of the structure tensor (central-difference
    gradients averaged over ``window`` squares), in grey levels a pixel, over ``scale``, capped
    at 1. Flat sky and walls give TV-L1 nothing to measure, and an edge only the motion across
    it: there the flow is its smoothness term's guess, and both score about 0.
    """
    if gray.ndim != 4 or gray.shape[1] != 1:
        raise ValueError(f"expected gray frames of shape (T, 1, H, W), got {tuple(gray.shape)}")
    g = gray.float()
    pad = torch.nn.functional.pad
    gx = pad((g[..., 2:] - g[..., :-2]) / 2, (1, 1, 0, 0), mode="replicate")
    gy = pad((g[..., 2:, :] - g[..., :-2, :]) / 2, (0, 0, 1, 1), mode="replicate")
    xx, xy, yy = (_box_mean(v, window) for v in (gx * gx, gx * gy, gy * gy))
    smaller = (xx + yy) / 2 - (((xx - yy) / 2).square() + xy.square()).sqrt()
    return (smaller.clamp(min=0).sqrt() / scale).clamp(max=1.0)[:, 0]


def residual_flow(flow: torch.Tensor, affine: torch.Tensor | None = None) -> torch.Tensor:
    """flow − dominant motion, (T, 2, H, W) → (T, 2, H, W) in pixels per frame."""
    _check_flow(flow)
    if affine is None:
        affine = dominant_motion(flow)
    if affine.shape != (flow.shape[0], 2, 3):
        raise ValueError(f"expected affine of shape (T, 2, 3), got {tuple(affine.shape)}")
    xs, ys = _coords(*flow.shape[-2:], flow.device)
    grid = torch.stack((xs, ys, torch.ones_like(xs)))  # (3, H, W)
    model = torch.einsum("tij,jhw->tihw", affine.float(), grid)  # (T, 2, H, W)
    return flow.float() - model


def _bounds(mask: torch.Tensor) -> torch.Tensor:
    """(R, H, W) bool → (R, 4) exclusive bounding boxes; an empty mask gives x2 == x1."""
    _, height, width = mask.shape
    rows, cols = mask.any(dim=2).int(), mask.any(dim=1).int()  # (R, H), (R, W)
    y1 = rows.argmax(dim=1)
    y2 = height - rows.flip(1).argmax(dim=1)
    x1 = cols.argmax(dim=1)
    x2 = width - cols.flip(1).argmax(dim=1)
    x2 = torch.where(mask.flatten(1).any(dim=1), x2, x1)
    return torch.stack((x1, y1, x2, y2), dim=1)


def _box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(R, 4) exclusive boxes → (R, H, W) bool masks of their pixels."""
    xs = torch.arange(width, device=boxes.device)
    ys = torch.arange(height, device=boxes.device)
    inside_x = (xs >= boxes[:, :1]) & (xs < boxes[:, 2:3])  # (R, W)
    inside_y = (ys >= boxes[:, 1:2]) & (ys < boxes[:, 3:])  # (R, H)
    return inside_y[:, :, None] & inside_x[:, None, :]


def _widened(boxes: torch.Tensor, pixels: int, height: int, width: int) -> torch.Tensor:
    """(R, 4) exclusive boxes, each side moved out by ``pixels`` within the frame."""
    lo = (boxes[:, :2] - pixels).clamp(min=0)
    hi = torch.minimum(boxes[:, 2:] + pixels, torch.tensor([width, height], device=boxes.device))
    return torch.cat((lo, hi), dim=1)


def _joined_to(seed: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """``seed`` and the pixels of (R, H, W) ``allowed`` 8-connected to it through allowed
    pixels."""
    labels = label_regions(seed | allowed)
    hit = torch.zeros(int(labels.max()) + 1, dtype=torch.bool, device=labels.device)
    hit[labels[seed]] = True
    hit[0] = False
    return seed | hit[labels]


def _masked_quantile(values: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile of each (R, H, W) row's pixels under ``mask``, 0 where none is."""
    picked = values.masked_fill(~mask, float("nan")).flatten(1)
    return picked.nanquantile(q, dim=1).nan_to_num(0.0)


def _box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over the ``window`` × ``window`` square about each pixel of (B, 1, H, W), edges
    replicated."""
    pad = window // 2
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    return torch.nn.functional.avg_pool2d(padded, window, stride=1)


def _local_moments(x: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of (B, 1, H, W) ``x`` over ``window`` squares."""
    mean = _box_mean(x, window)
    return mean, (_box_mean(x * x, window) - mean.square()).clamp(min=0)


def _ncc(
    a: torch.Tensor, moments_a: tuple[torch.Tensor, torch.Tensor], b: torch.Tensor, window: int
) -> torch.Tensor:
    """:func:`local_ncc` with ``a``'s moments already computed (one ``a`` against several ``b``)."""
    mean_a, var_a = moments_a
    mean_b, var_b = _local_moments(b, window)
    cov = _box_mean(a * b, window) - mean_a * mean_b
    return (cov / (var_a * var_b).clamp(min=1e-6).sqrt()).clamp(-1.0, 1.0)


def local_ncc(a: torch.Tensor, b: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised cross-correlation of (B, 1, H, W) images over ``window`` squares, and the local
    standard deviation of ``a`` (grey levels); both (B, 1, H, W)."""
    moments_a = _local_moments(a, window)
    return _ncc(a, moments_a, b, window), moments_a[1].sqrt()


# The evidence's window for the region test, a fraction of the short side.
EVIDENCE_WINDOW = 0.03


def camera_evidence(
    first: torch.Tensor,
    second: torch.Tensor,
    flow: torch.Tensor,
    affine: torch.Tensor,
    *,
    window: float = EVIDENCE_WINDOW,
    min_texture: float = MotionParams.refine_texture,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """How much better each pixel's flow explains the frames than the camera's motion does.

    ``first``/``second`` (T, 1, H, W) gray in [0, 255], the frames of each pair; ``flow``
    (T, 2, H, W) from first to second; ``affine`` (T, 2, 3) the camera's motion
    (:func:`dominant_motion`). Returns (T, H, W): the local NCC of ``first`` with ``second``
    warped back along the flow, less that along the camera's motion, over squares of
    2 · round(``window`` × short side) + 1 pixels; NaN where ``first`` has no texture there (local
    standard deviation under ``min_texture`` grey levels) or either warp leaves the frame.
    ``residual``: :func:`residual_flow` of ``flow`` and ``affine`` when already computed.
    """
    return camera_evidence_maps(
        first, second, flow, affine, windows=(window,), min_texture=min_texture, residual=residual
    )[0]


def camera_evidence_maps(
    first: torch.Tensor,
    second: torch.Tensor,
    flow: torch.Tensor,
    affine: torch.Tensor,
    *,
    windows: Sequence[float],
    min_texture: float = MotionParams.refine_texture,
    residual: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """:func:`camera_evidence` over each of ``windows`` (fractions of the short side), from one
    pair of warps: a (T, H, W) map a window, in their order."""
    t, _, height, width = flow.shape
    if first.shape != (t, 1, height, width) or second.shape != first.shape:
        raise ValueError(
            f"expected frames of shape {(t, 1, height, width)}, got "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )
    if residual is None:
        residual = residual_flow(flow, affine)
    camera = flow.float() - residual
    along_flow, inside_flow = warp_back(second.float(), flow.float())
    along_camera, inside_camera = warp_back(second.float(), camera)
    inside = (inside_flow > 0) & (inside_camera > 0)
    first = first.float()
    maps = []
    for window in windows:
        size = 2 * max(1, round(window * min(height, width))) + 1
        moments = _local_moments(first, size)
        gain = _ncc(first, moments, along_flow, size) - _ncc(first, moments, along_camera, size)
        valid = inside & (moments[1].sqrt() >= min_texture)
        maps.append(gain.masked_fill(~valid, float("nan"))[:, 0])
    return maps


def refine_region_boxes(
    residual: torch.Tensor,
    frame: torch.Tensor,
    boxes: torch.Tensor,
    *,
    fraction: float = 0.5,
    quantile: float = 0.9,
    floor_quantile: float = 0.1,
    lead: float = 1.0,
    evidence: torch.Tensor | None = None,
    min_pixels: int = 16,
    pixel_evidence: float | None = None,
    grow_evidence: float | None = None,
    grow_fraction: float = 0.1,
    grow_margin: int = 0,
    grow_reach: int = 0,
    grow_noise: float | None = None,
    fine_evidence: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shrink R region boxes to the pixels that move against the camera, all at once.

    ``residual`` (T, 2, H, W) from :func:`residual_flow`; ``frame`` (R,) int64, the frame of each
    box; ``boxes`` (R, 4) int64 exclusive [x1, y1, x2, y2]. Inside a box, the region's *level* is
    the ``quantile`` of the residual's magnitude and its *floor* the ``floor_quantile`` (the
    background there); the refined box bounds the pixels at or above floor + ``fraction`` ×
    (level − floor). Its sides ahead of the mover then move back by ``lead`` × the median residual
    of those pixels. Returns the (R, 4) refined boxes (x2 == x1 where no pixel is left), the
    (R,) levels in pixels per frame and the (R,) mean ``evidence`` ((T, H, W), from
    :func:`camera_evidence`) over those pixels: +inf where fewer than ``min_pixels`` of them
    tell (no texture) or no evidence is given. With ``evidence`` and ``pixel_evidence``, the
    pixels whose own evidence is under ``pixel_evidence`` then leave the box, unless fewer than
    ``min_pixels`` would be left; those that cannot tell (no texture) stay among its pixels but
    do not set its sides when at least ``min_pixels`` pixels bear their motion out: flat sky or
    skin beside a mover takes the mover's flow from TV-L1 and nothing in the frames says
    otherwise, while a mover's own edges have texture against what lies behind. With
    ``evidence`` and
    ``grow_evidence``, the box's pixels moving at least floor + ``grow_fraction`` × (level −
    floor) whose evidence reaches ``grow_evidence`` join it (a slow part of a mover: an upper arm
    moving a third as fast as the forearm); the sides that grew then come back by
    ``grow_margin`` pixels, never inside what the first cut kept, since the evidence is a
    windowed correlation that reaches past the moving pixels. With ``grow_reach`` > 0 the
    growth may leave the box by up to that many pixels, through pixels 8-connected to what it
    kept that move that fast and either reach ``grow_evidence`` or cannot tell (a flat mover's
    middle); only the former join. With ``grow_noise``, growth also needs at least
    ``grow_noise`` × the median residual of the box's frame (the flow's noise once the camera is
    taken out), so a compressed or flickering frame grows only through clear motion; ``noise``
    (R,) gives that median when ``residual`` holds only part of each frame (a crop).
    ``fine_evidence`` (T, H, W): the
    evidence over a smaller window, for these pixel-level cuts (the region's mean, which keeps or
    drops it, stays on ``evidence``); default ``evidence``. Pixels whose residual is NaN (the
    padding of crops) belong to no cut.
    """
    if residual.ndim != 4 or residual.shape[1] != 2:
        raise ValueError(f"expected residual of shape (T, 2, H, W), got {tuple(residual.shape)}")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or frame.shape != boxes.shape[:1]:
        raise ValueError(
            f"expected boxes (R, 4) and frame (R,), got {tuple(boxes.shape)} {tuple(frame.shape)}"
        )
    height, width = residual.shape[-2:]
    inside = _box_masks(boxes, height, width)  # (R, H, W)
    vectors = residual[frame]  # (R, 2, H, W)
    values = vectors.square().sum(dim=1).sqrt()  # (R, H, W)
    level = _masked_quantile(values, inside, quantile)  # (R,)
    floor = _masked_quantile(values, inside, floor_quantile)
    cut = (floor + fraction * (level - floor)).view(-1, 1, 1)
    keep = inside & (values >= cut) & (level.view(-1, 1, 1) > 0)
    refined = _bounds(keep)
    gain = torch.full_like(level, float("inf"))
    if evidence is not None:
        own = evidence[frame]  # (R, H, W), NaN where it cannot tell
        telling = keep & ~own.isnan()
        count = telling.flatten(1).sum(dim=1)
        total = own.masked_fill(~telling, 0.0).flatten(1).sum(dim=1)
        gain = torch.where(count >= min_pixels, total / count.clamp(min=1), gain)
        if fine_evidence is not None:
            own = fine_evidence[frame]
        sides = keep  # the pixels that set the box's sides
        if pixel_evidence is not None:
            trimmed = keep & ~(own < pixel_evidence)  # NaN (cannot tell) stays
            enough = trimmed.flatten(1).sum(dim=1) >= min_pixels
            keep = torch.where(enough.view(-1, 1, 1), trimmed, keep)
            told = keep & (own >= pixel_evidence)
            enough = told.flatten(1).sum(dim=1) >= min_pixels
            sides = torch.where(enough.view(-1, 1, 1), told, keep)
            refined = _bounds(sides)
        if grow_evidence is not None:
            low = (floor + grow_fraction * (level - floor)).view(-1, 1, 1)
            if grow_noise is not None:  # the frame's own noise, camera taken out
                if noise is None:
                    noise = values.flatten(1).median(dim=1).values
                low = torch.maximum(low, grow_noise * noise.view(-1, 1, 1))
            moving = (values >= low) & (own >= grow_evidence)
            joined = inside & moving
            if grow_reach > 0:
                reach = _box_masks(_widened(boxes, grow_reach, height, width), height, width)
                # flat pixels (no evidence either way) carry the growth, told ones set the sides
                passable = reach & (values >= low) & (moving | own.isnan())
                joined = _joined_to(sides | joined, passable) & moving
            any_kept = keep.flatten(1).any(dim=1).view(-1, 1, 1)
            grown = torch.where(any_kept, keep | joined, keep)
            wide = _bounds(torch.where(any_kept, sides | joined, sides))
            # the evidence is a windowed correlation: it reaches grow_margin px past what moves
            lo = torch.minimum(refined[:, :2], wide[:, :2] + grow_margin)
            hi = torch.maximum(refined[:, 2:], wide[:, 2:] - grow_margin)
            refined = torch.cat((lo, hi), dim=1)
            keep = grown
    if lead > 0:
        shift = vectors.masked_fill(~keep[:, None], float("nan")).flatten(2).nanmedian(dim=2)
        shift = (lead * shift.values.nan_to_num(0.0)).round().long()  # (R, 2): dx, dy
        # moving left (dx < 0) the left side is ahead: x1 grows by −dx; moving right, x2 shrinks
        ahead = torch.cat(((-shift).clamp(min=0), -shift.clamp(min=0)), dim=1)  # (R, 4)
        moved = refined + ahead
        fits = (moved[:, 2:] > moved[:, :2]).all(dim=1, keepdim=True)
        refined = torch.where(fits, moved, refined)
    return refined, level, gain


# Pixels per chunk of regions refined at once: bounds memory, and nanquantile's input size.
_CHUNK_PIXELS = 1 << 22


def _like_sized_chunks(sizes: list[list[int]]) -> list[list[int]]:
    """Indices of crops of (w, h) ``sizes`` in chunks of like size, smallest first, each as
    many as fit ``_CHUNK_PIXELS`` on a grid as large as the chunk's largest crop."""
    order = sorted(range(len(sizes)), key=lambda k: sizes[k][0] * sizes[k][1])
    chunks: list[list[int]] = []
    grid = (0, 0)
    for k in order:
        wider = (max(grid[0], sizes[k][0]), max(grid[1], sizes[k][1]))
        if chunks and (len(chunks[-1]) + 1) * wider[0] * wider[1] <= _CHUNK_PIXELS:
            chunks[-1].append(k)
            grid = wider
        else:
            chunks.append([k])
            grid = (sizes[k][0], sizes[k][1])
    return chunks


def _crop_grid(
    crops: torch.Tensor, scale: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the (R, h, w) grid of ``scale`` samples a pixel over each (R, 4) crop lies: the
    samples' x and y in pixel-centre coordinates of the frame ((R, w), (R, h): sample j of a crop
    starting at pixel x0 covers [x0 + j / scale, x0 + (j + 1) / scale)), and which samples
    fall inside their own crop ((R, h, w) bool; a grid as large as the largest crop pads the
    others). ``scale`` 1 samples the pixels themselves."""
    size = crops[:, 2:] - crops[:, :2]  # (R, 2): w, h
    grid_w, grid_h = (int(v) * scale for v in size.max(dim=0).values.tolist())
    j = torch.arange(grid_w, device=crops.device)
    i = torch.arange(grid_h, device=crops.device)
    xs = crops[:, :1] + (j + 0.5) / scale - 0.5  # (R, w)
    ys = crops[:, 1:2] + (i + 0.5) / scale - 0.5  # (R, h)
    valid = (i < size[:, 1:] * scale)[:, :, None] & (j < size[:, :1] * scale)[:, None, :]
    return xs.clamp(0, width - 1), ys.clamp(0, height - 1), valid


def _sample_bilinear(
    maps: torch.Tensor, frame: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor
) -> torch.Tensor:
    """(T, C, H, W) ``maps`` read bilinearly at (R, w) × (R, h) points of frames (R,) →
    (R, C, h, w), rows first, then columns; at whole pixels the pixels' own values, exactly."""
    height, width = maps.shape[-2:]
    picked = maps[frame]  # (R, C, H, W)
    r, c = picked.shape[:2]
    y0, x0 = ys.floor().long(), xs.floor().long()
    y1, x1 = (y0 + 1).clamp(max=height - 1), (x0 + 1).clamp(max=width - 1)
    wy = (ys - y0).view(r, 1, -1, 1)
    wx = (xs - x0).view(r, 1, 1, -1)

    def rows(y: torch.Tensor) -> torch.Tensor:  # (R, C, h, W)
        return picked.gather(2, y.view(r, 1, -1, 1).expand(r, c, y.shape[1], width))

    blended = rows(y0) * (1 - wy) + rows(y1) * wy

    def cols(x: torch.Tensor) -> torch.Tensor:  # (R, C, h, w)
        return blended.gather(3, x.view(r, 1, 1, -1).expand(r, c, blended.shape[2], x.shape[1]))

    return cols(x0) * (1 - wx) + cols(x1) * wx


def _sample_nearest(
    maps: torch.Tensor, frame: torch.Tensor, crops: torch.Tensor, scale: int, shape: tuple[int, int]
) -> torch.Tensor:
    """(T, H, W) ``maps`` at the pixel under each sample of the (R, h, w) grid → (R, h, w)."""
    height, width = maps.shape[-2:]
    grid_h, grid_w = shape
    xs = (crops[:, :1] + torch.arange(grid_w, device=crops.device) // scale).clamp(max=width - 1)
    ys = (crops[:, 1:2] + torch.arange(grid_h, device=crops.device) // scale).clamp(max=height - 1)
    picked = maps[frame]  # (R, H, W)
    rows = picked.gather(1, ys[:, :, None].expand(-1, -1, width))  # (R, h, W)
    return rows.gather(2, xs[:, None, :].expand(-1, grid_h, -1))


def _evidence_crops(
    maps: torch.Tensor | None,
    frame: torch.Tensor,
    crops: torch.Tensor,
    scale: int,
    valid: torch.Tensor,
) -> torch.Tensor | None:
    """(T, H, W) evidence on the crops' (R, h, w) grid (:func:`_sample_nearest`), NaN (cannot
    tell) on the padding outside each crop; None stays None."""
    if maps is None:
        return None
    read = _sample_nearest(maps, frame, crops, scale, tuple(valid.shape[1:]))
    return read.masked_fill(~valid, float("nan"))


def refine_regions(
    flow: torch.Tensor,
    regions: list[list[Box]],
    *,
    fraction: float = 0.5,
    quantile: float = 0.9,
    floor_quantile: float = 0.1,
    lead: float = 1.0,
    min_motion: float = 0.004,
    affine: torch.Tensor | None = None,
    frames: tuple[torch.Tensor, torch.Tensor] | None = None,
    min_evidence: float | None = None,
    pixel_evidence: float | None = None,
    evidence: torch.Tensor | None = None,
    require_evidence: bool = False,
    grow_evidence: float | None = None,
    grow_fraction: float = 0.1,
    grow_margin: int = 0,
    grow_reach: int = 0,
    grow_noise: float | None = None,
    fine_evidence: torch.Tensor | None = None,
    subpixel: int = 1,
) -> list[list[Box]]:
    """Each frame's region boxes, shrunk to the pixels that move against the camera.

    ``flow`` (T, 2, H, W): ``flow[t]`` is the flow of frame t to its partner frame, at working
    size. ``regions[t]``: the boxes of frame t's regions ([x1, y1, x2, y2] working-size pixels,
    x2/y2 exclusive), possibly none. A region whose level (see :func:`refine_region_boxes`) is
    under ``min_motion`` × the short side (pixels per frame) moves with the camera and is dropped,
    as is one left with no pixel. ``affine`` (T, 2, 3): the camera's motion when already known,
    else :func:`dominant_motion` fits it. With ``frames`` (the pairs' first and second gray
    frames, (T, 1, H, W) each) and ``min_evidence``, a region whose moving pixels' mean
    :func:`camera_evidence` is under ``min_evidence`` is dropped too: the camera's motion explains
    its pixels as well as its own flow does; ``pixel_evidence`` then cuts each box to the pixels
    that gain that much (:func:`refine_region_boxes`). ``evidence`` (T, H, W): the pairs'
    :func:`camera_evidence` when already computed (then ``frames`` is not needed). With
    ``require_evidence``, a region too flat to be tested (fewer than 16 textured moving pixels)
    is dropped too; otherwise it is given the benefit of the doubt only in a frame where no
    region bore its motion out (a frame whose mover is proven needs no untested region beside
    it: flat sky and walls take whatever flow TV-L1 guesses for them). ``grow_evidence``,
    ``grow_fraction``, ``grow_margin``, ``grow_reach`` and ``grow_noise`` let boxes grow back to
    slow parts the evidence bears out (:func:`refine_region_boxes`), which cut on
    ``fine_evidence`` (T, H, W)
    when given: the evidence over a smaller window. Each region is refined on a crop of the frame
    (its box, widened by ``grow_reach``) read at ``subpixel`` samples a pixel: the residual flow
    bilinearly, the evidence from the pixel under each sample, so the cuts fall between pixels
    where the flow crosses them and the boxes' sides land on multiples of 1 / ``subpixel``
    pixel (floats when ``subpixel`` > 1; 1 gives whole pixels, as ints). Returns, per frame,
    the refined boxes of the regions kept, in their order.
    """
    _check_flow(flow)
    if len(regions) != flow.shape[0]:
        raise ValueError(f"expected regions for {flow.shape[0]} frames, got {len(regions)}")
    if subpixel < 1:
        raise ValueError(f"subpixel must be at least 1, got {subpixel}")
    pairs = [(t, box) for t, boxes in enumerate(regions) for box in boxes]
    out: list[list[Box]] = [[] for _ in regions]
    if not pairs:
        return out
    if any(len(box) != 4 for _, box in pairs):
        raise ValueError("expected region boxes [x1, y1, x2, y2]")
    if affine is None:
        affine = dominant_motion(flow)
    residual = residual_flow(flow, affine)  # (T, 2, H, W)
    if min_evidence is None:
        evidence = None
    elif evidence is None and frames is not None:
        evidence = camera_evidence(frames[0], frames[1], flow, affine, residual=residual)
    height, width = flow.shape[-2:]
    frame = torch.tensor([t for t, _ in pairs], device=flow.device)
    boxes = torch.tensor([box for _, box in pairs], dtype=torch.int64, device=flow.device)
    # each frame's noise for growth, over the whole frame (a crop would see only the mover)
    noise = residual.square().sum(dim=1).sqrt().flatten(1).median(dim=1).values * subpixel
    crops = _widened(boxes, grow_reach, height, width)  # nothing outside can join a box
    refined = torch.zeros_like(boxes, dtype=torch.float32 if subpixel > 1 else torch.int64)
    level = torch.zeros(len(pairs), device=flow.device)
    gain = torch.zeros(len(pairs), device=flow.device)
    for chunk in _like_sized_chunks(((crops[:, 2:] - crops[:, :2]) * subpixel).tolist()):
        part = torch.tensor(chunk, device=flow.device)
        xs, ys, valid = _crop_grid(crops[part], subpixel, height, width)
        inside = valid[:, None]
        # the residual in samples per frame, so the lead's shift is counted in samples
        sampled = _sample_bilinear(residual, frame[part], xs, ys) * subpixel
        sampled = sampled.masked_fill(~inside, float("nan"))
        origin = crops[part, :2].repeat(1, 2)
        r, lv, g = refine_region_boxes(
            sampled,
            torch.arange(len(part), device=flow.device),
            (boxes[part] - origin) * subpixel,
            fraction=fraction,
            quantile=quantile,
            floor_quantile=floor_quantile,
            lead=lead,
            evidence=_evidence_crops(evidence, frame[part], crops[part], subpixel, valid),
            min_pixels=16 * subpixel**2,
            pixel_evidence=pixel_evidence if evidence is not None else None,
            grow_evidence=grow_evidence if evidence is not None else None,
            grow_fraction=grow_fraction,
            grow_margin=grow_margin * subpixel,
            grow_reach=grow_reach * subpixel,
            grow_noise=grow_noise,
            fine_evidence=(
                _evidence_crops(fine_evidence, frame[part], crops[part], subpixel, valid)
                if evidence is not None
                else None
            ),
            noise=noise[frame[part]],
        )
        refined[part] = origin + r / subpixel if subpixel > 1 else origin + r
        level[part] = lv / subpixel
        gain[part] = g
    min_level = min_motion * min(flow.shape[-2:])
    ok = (refined[:, 2] > refined[:, 0]) & (level >= min_level)
    if evidence is not None:
        ok &= gain >= min_evidence
        told = ok & gain.isfinite()  # kept on the frames' word, not on the benefit of the doubt
        if require_evidence:
            ok = told
        else:  # the benefit of the doubt only in a frame where no region bore its motion out
            borne = torch.zeros(len(regions), dtype=torch.int64, device=flow.device)
            borne = borne.index_add_(0, frame, told.long()) > 0
            ok &= told | ~borne[frame]
    for (t, _), box, good in zip(pairs, refined.tolist(), ok.tolist(), strict=True):
        if good:
            out[t].append(box)
    return out


def refine_boxes(flow: torch.Tensor, regions: list[list[Box]], **settings: Any) -> list[Box | None]:
    """Each frame's motion box: the union of its regions refined by :func:`refine_regions` (same
    keyword settings), or None where none is left."""
    return [union_box(kept) for kept in refine_regions(flow, regions, **settings)]
