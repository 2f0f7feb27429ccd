"""Which video tokens the masked autoencoder hides: VideoMAE's tube masking, and MOFO's masking
that always hides a share of the tubes in the motion box (the paper's §2.2).

Tokens are the cells of a (T', H', W') grid: T' = frames / tubelet, H' = height / patch,
W' = width / patch, flattened in that order (what a Conv3d patch embedding gives). A *tube* is one
spatial cell (h, w); masking a tube hides it in every time slot.

- **Tube masking** (VideoMAE): each sample hides ``int(ratio · H'W')`` tubes drawn at random.
- **MOFO masking**: of the ``I`` cells inside the motion box, ``ceil(inside_ratio · I)`` are
  always hidden (at most ``int(ratio · H'W')``); the rest of the ``int(ratio · H'W')`` come from
  the cells not yet hidden, by ``remainder``:

  - ``"anywhere"`` (the default, as the authors' released code): drawn from every cell not yet
    hidden, inside the box or outside it. The box is then hidden at least as much as the clip
    (a box of 6 × 6 of 14 × 14 cells: 97 % of it at ratio 0.9 and inside ratio 0.75, 88 % of
    the rest), the paper's "focusing more on masking 3D patches on the motion area".
  - ``"outside"`` (the paper's abstract read literally: "the remainder from outside"): drawn
    only outside the box; when there are too few outside cells (a box over most of the frame),
    the rest comes from inside. A box is then hidden *less* than the rest of the frame (the
    same box: 75 % against 93 %), less than tube masking's 90 %.

  Either way the count per time slot is always ``int(ratio · H'W')``.

The box is mapped onto the grid by overlap: a cell is inside when the box covers at least
``min_overlap`` (default half) of its area; x runs along columns (w), y along rows (h), and
``x2``/``y2`` are exclusive, as in the box record. A non-empty box that covers no cell that much
(smaller than a patch, or straddling cells) marks the cell holding its centre, so a motion box
never vanishes. A sample without a box (its record was the centre fallback, or no motion) gets
plain tube masking.

With one box per clip the inside cells are the same in every time slot, so the masks are tubes.
With one box per frame, a time slot's box is the union of its tubelet's frames' boxes; every
sample draws one random order of the cells, shared by its time slots, so a mask stays a tube where
the box stays put and follows the box where it moves. Everything is batched over samples (no
Python loop), on the device of the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

REMAINDERS = ("anywhere", "outside")


@dataclass(frozen=True)
class TokenGrid:
    """The token grid of a video input: frames × height × width pixels, cut into tubelets of
    ``tubelet`` frames and ``patch`` × ``patch`` pixels."""

    frames: int = 16
    height: int = 224
    width: int = 224
    patch: int = 16
    tubelet: int = 2

    def __post_init__(self) -> None:
        if self.frames % self.tubelet or self.height % self.patch or self.width % self.patch:
            raise ValueError(
                f"{self.frames}x{self.height}x{self.width} does not divide into tubelets of "
                f"{self.tubelet}x{self.patch}x{self.patch}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.frames // self.tubelet, self.height // self.patch, self.width // self.patch

    @property
    def cells(self) -> int:
        """Spatial cells (tubes) per time slot."""
        return self.shape[1] * self.shape[2]

    @property
    def tokens(self) -> int:
        return self.shape[0] * self.cells


def masked_per_slot(grid: TokenGrid, ratio: float) -> int:
    """Cells hidden per time slot: ``int(ratio · H'W')``, VideoMAE's count."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    return int(ratio * grid.cells)


def box_cells(
    boxes: torch.Tensor,
    valid: torch.Tensor,
    grid: TokenGrid,
    min_overlap: float = 0.5,
) -> torch.Tensor:
    """Which cells each time slot's box covers: (B, T', H'W') bool.

    ``boxes`` are pixel boxes ``[x1, y1, x2, y2]`` of the model's input (after cropping and
    resizing), either one per clip, (B, 4), or one per frame, (B, frames, 4); ``valid`` (B,) or
    (B, frames) says which are boxes at all (False: no motion box, e.g. the centre fallback).
    """
    if not 0.0 < min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
    slots, rows, cols = grid.shape
    boxes = boxes.to(torch.float32)
    valid = valid.to(torch.bool)
    if boxes.ndim == 2:  # one box per clip: the same for every time slot
        boxes, valid = boxes[:, None].expand(-1, slots, 4), valid[:, None].expand(-1, slots)
    elif boxes.ndim == 3 and boxes.shape[1] == grid.frames:
        # A time slot's box: the union of its tubelet's frames' boxes (frames without a box
        # take no part; a slot with none has no box).
        b, t = boxes.shape[0], grid.tubelet
        per = boxes.reshape(b, slots, t, 4)
        ok = valid.reshape(b, slots, t)
        inf = torch.tensor(float("inf"), device=boxes.device)
        lo = torch.where(ok[..., None], per[..., :2], inf).amin(dim=2)
        hi = torch.where(ok[..., None], per[..., 2:], -inf).amax(dim=2)
        boxes, valid = torch.cat([lo, hi], dim=-1), ok.any(dim=2)
        boxes = torch.where(valid[..., None], boxes, torch.zeros_like(boxes))
    else:
        raise ValueError(f"boxes must be (B, 4) or (B, {grid.frames}, 4), got {tuple(boxes.shape)}")
    p = grid.patch
    x1, y1, x2, y2 = boxes.unbind(-1)  # (B, T')
    starts_x = torch.arange(cols, device=boxes.device, dtype=torch.float32) * p
    starts_y = torch.arange(rows, device=boxes.device, dtype=torch.float32) * p
    # Covered length of each column / row: (B, T', W') and (B, T', H').
    cover_x = torch.minimum(x2[..., None], starts_x + p) - torch.maximum(x1[..., None], starts_x)
    cover_y = torch.minimum(y2[..., None], starts_y + p) - torch.maximum(y1[..., None], starts_y)
    area = cover_y.clamp(min=0)[..., :, None] * cover_x.clamp(min=0)[..., None, :]  # (B,T',H',W')
    inside = (area >= min_overlap * p * p) & valid[..., None, None]

    # A real box that covers no cell enough: the cell holding its centre.
    nonempty = valid & (x2 > x1) & (y2 > y1)
    lost = nonempty & ~inside.flatten(2).any(-1)
    cx = ((x1 + x2) / 2 / p).floor().clamp(0, cols - 1).long()
    cy = ((y1 + y2) / 2 / p).floor().clamp(0, rows - 1).long()
    centre = torch.zeros_like(inside)
    centre.view(-1, rows, cols)[
        torch.arange(centre.shape[0] * slots, device=boxes.device), cy.flatten(), cx.flatten()
    ] = True
    inside |= centre & lost[..., None, None]
    return inside.flatten(2)


def clip_boxes(boxes: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One box per clip from per-frame boxes (B, T, 4): the union of its valid frames' boxes, as
    the public code masks with the clip's box; (B, 4) boxes and (B,) valid."""
    valid = valid.to(torch.bool)
    boxes = boxes.to(torch.float32)
    inf = torch.tensor(float("inf"), device=boxes.device)
    lo = torch.where(valid[..., None], boxes[..., :2], inf).amin(dim=1)
    hi = torch.where(valid[..., None], boxes[..., 2:], -inf).amax(dim=1)
    any_valid = valid.any(dim=1)
    union = torch.where(any_valid[:, None], torch.cat([lo, hi], dim=-1), 0.0)
    return union, any_valid


def mofo_mask(
    inside: torch.Tensor,
    grid: TokenGrid,
    ratio: float = 0.9,
    inside_ratio: float = 0.75,
    generator: torch.Generator | None = None,
    remainder: Literal["anywhere", "outside"] = "anywhere",
) -> torch.Tensor:
    """MOFO masks from the cells inside each slot's box, ``inside`` (B, T', H'W') bool: (B, N)
    bool, True = hidden, with exactly ``T' · int(ratio · H'W')`` hidden tokens per sample.

    With no cell inside, this is tube masking; see the module's notes for the counts and the
    ``remainder`` rules.
    """
    if not 0.0 <= inside_ratio <= 1.0:
        raise ValueError(f"inside_ratio must be in [0, 1], got {inside_ratio}")
    if remainder not in REMAINDERS:
        raise ValueError(f"remainder must be one of {', '.join(REMAINDERS)}, got {remainder!r}")
    b, slots, cells = inside.shape
    if (slots, cells) != (grid.shape[0], grid.cells):
        raise ValueError(f"inside must be (B, {grid.shape[0]}, {grid.cells}), got {inside.shape}")
    per_slot = masked_per_slot(grid, ratio)
    n_in = inside.sum(-1)  # (B, T')
    n_out = cells - n_in
    take_in = torch.ceil(inside_ratio * n_in.to(torch.float64)).long().clamp(max=per_slot)
    if remainder == "outside":
        take_in = torch.maximum(take_in, per_slot - n_out)  # too few outside: more from inside
    rest = per_slot - take_in

    # One random order of the cells per sample, shared by its time slots (masks stay tubes
    # where the box stays put): walking it, take the first take_in inside cells ...
    order = torch.rand((b, cells), generator=generator, device=inside.device).argsort(dim=-1)
    order = order[:, None].expand(b, slots, cells)
    walked = inside.gather(-1, order)  # inside, in the sample's random order
    seen_in = walked.cumsum(-1)
    if remainder == "outside":  # ... and the first `rest` outside ones
        seen_out = (~walked).cumsum(-1)
        take = torch.where(walked, seen_in <= take_in[..., None], seen_out <= rest[..., None])
        hidden = torch.empty_like(inside).scatter_(-1, order, take)
        return hidden.reshape(b, slots * cells)
    quota = torch.empty_like(inside).scatter_(-1, order, walked & (seen_in <= take_in[..., None]))
    # ... then `rest` of the cells not yet hidden, inside or out, in a second random order (the
    # first one's inside cells left over are those late in it: walking it again would favour
    # outside cells).
    keys = torch.rand((b, cells), generator=generator, device=inside.device)
    keys = torch.where(quota, 2.0, keys[:, None].expand(b, slots, cells))  # hidden ones last
    second = keys.argsort(dim=-1)
    rank = torch.empty_like(second).scatter_(
        -1, second, torch.arange(cells, device=inside.device).expand(b, slots, cells)
    )
    hidden = quota | (rank < rest[..., None])
    return hidden.reshape(b, slots * cells)


def hidden_shares(mask: torch.Tensor, inside: torch.Tensor) -> dict[str, float]:
    """Counts for the share of tokens hidden inside the box and outside it: ``mask`` (B, N),
    ``inside`` (B, T', H'W') → hidden and total tokens inside and outside, over the batch."""
    inside = inside.reshape(mask.shape).to(torch.bool)
    return {
        "hidden_inside": float((mask & inside).sum()),
        "tokens_inside": float(inside.sum()),
        "hidden_outside": float((mask & ~inside).sum()),
        "tokens_outside": float((~inside).sum()),
    }


def tube_mask(
    batch: int,
    grid: TokenGrid,
    ratio: float = 0.9,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """VideoMAE's tube masks: (batch, N) bool, ``T' · int(ratio · H'W')`` hidden per sample."""
    inside = torch.zeros((batch, grid.shape[0], grid.cells), dtype=torch.bool, device=device)
    return mofo_mask(inside, grid, ratio, 0.0, generator)
