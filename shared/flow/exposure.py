"""Exposure matching for TV-L1: a pair whose exposure changed is measured again at one exposure.

TV-L1 assumes a point keeps its brightness, so a global exposure change between the two frames
of a pair (mains flicker, auto-exposure, a cloud) reads as motion at every textured edge and the
motion map lights up everywhere. The change is measured *along the flow*: the median, over the
pixels whose flow lands inside the frame and that are neither dark nor saturated in either
frame, of ``first / second`` warped back onto ``first``. Where that gain departs from 1 by more
than ``TOLERANCE``, the brighter frame of the pair is scaled by it (rounded, so that both flow
backends see the same whole grey levels; the darker frame is never brightened, so nothing
saturates) and the pair's flow is computed again. A flow hurt by the change underestimates it
(a 20 % step on carphone measures 8 % along the first flow; flicker on a still scene gives a
flow of 10–25 px where nothing moves), so the first gain applied is the ratio at the same pixel
(exact where the camera is still), and each new flow of the matched frames measures what is
left, at most ``ROUNDS`` flows, until it stays within ``TOLERANCE``: gain and flow solved in
turn, as an illumination term in TV-L1's energy would be. A pair whose exposure did not change
costs one gain measurement and nothing more.

Whether a pair is matched at all is decided along its flow, never from the frames alone: a
gain taken from the frames (the ratio of their medians) is biased wherever content enters or
leaves the frame (a pan, a shake) and then *adds* a brightness change where there was none (on
the tuning seeds of the synthetic suite it cost a shaky-camera scene 0.91 → 0.49 mean IoU).
Decided along the flow, a pair in steady light keeps its flow exactly; the same-pixel first
guess is only used once a change is found, and the rounds after it correct its bias.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mofo.shared.cuts import warp_back

# A gain within 0.5 % of 1 is left alone: no second flow. 2 % let small flicker steps through,
# and a 2-3 % step still reads as motion over flat sky and walls (BENCHMARKS.md, version 7).
TOLERANCE = 0.005
DARK, BRIGHT = 16.0, 240.0  # grey levels outside which a ratio says little (noise, clipping)
MIN_SHARE = 0.05  # fewer usable pixels than this share of the frame: gain 1
MAX_GAIN = 2.0  # a gain is clamped to [1 / MAX_GAIN, MAX_GAIN]
ROUNDS = 3  # at most this many flows again per pair


def exposure_gain(first: torch.Tensor, second: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Per pair, the gain ``g`` with ``first ≈ g · second`` along ``flow``: (P, 1, H, W) gray
    in [0, 255] twice and (P, 2, H, W) flow → (P,) (1 where too few pixels tell)."""
    warped, inside = warp_back(second, flow)
    usable = (inside > 0) & (first > DARK) & (first < BRIGHT) & (warped > DARK) & (warped < BRIGHT)
    ratio = (first / warped.clamp(min=1.0)).masked_fill(~usable, float("nan")).flatten(1)
    gain = ratio.nanmedian(dim=1).values
    enough = usable.flatten(1).float().mean(1) >= MIN_SHARE
    gain = torch.where(enough & torch.isfinite(gain), gain, torch.ones_like(gain))
    return gain.clamp(1.0 / MAX_GAIN, MAX_GAIN)


def apply_gain(
    first: torch.Tensor, second: torch.Tensor, gain: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs at one exposure: ``second · g`` where ``g < 1``, else ``first / g``, rounded;
    (P, 1, H, W) twice and (P,) → (P, 1, H, W) twice."""
    g = gain.view(-1, 1, 1, 1).to(first.dtype)
    darken_second = g < 1.0
    new_second = torch.where(darken_second, (second * g).round(), second)
    new_first = torch.where(darken_second, first, (first / g).round())
    return new_first, new_second


def needs_matching(gain: torch.Tensor) -> torch.Tensor:
    """(P,) bool: the pairs whose exposure changed by more than ``TOLERANCE``."""
    return (gain - 1.0).abs() > TOLERANCE


def exposure_matched_flow(
    i0: torch.Tensor, i1: torch.Tensor, flow: torch.Tensor, tvl1: Callable[..., torch.Tensor]
) -> torch.Tensor:
    """``flow`` (of ``i0 → i1``, (P, 2, H, W)) with every pair whose exposure changed measured
    again at one exposure, ``tvl1(first, second)`` computing a batch's flow; a new tensor."""
    moved = needs_matching(exposure_gain(i0, i1, flow))
    if not bool(moved.any()):
        return flow
    flow = flow.clone()
    todo = moved.nonzero()[:, 0]
    # First guess: the ratio at the same pixel (exact for a still camera; the flow that said
    # the exposure changed is itself hurt by the change); then corrected along each new flow.
    gain = torch.ones(i0.shape[0], dtype=i0.dtype, device=i0.device)
    gain[todo] = exposure_gain(i0[todo], i1[todo], torch.zeros_like(flow[todo]))
    for round_ in range(ROUNDS):
        first, second = apply_gain(i0[todo], i1[todo], gain[todo])
        flow[todo] = tvl1(first, second)
        if round_ == ROUNDS - 1:
            break
        step = exposure_gain(first, second, flow[todo])
        moved = needs_matching(step)
        if not bool(moved.any()):
            break
        todo = todo[moved]
        gain[todo] = (gain[todo] * step[moved]).clamp(1.0 / MAX_GAIN, MAX_GAIN)
    return flow
