"""Tube and MOFO masking (the paper's §2.2): exact counts, the inside share, the box on the token
grid (x is columns), per-frame boxes, the edge cases, and fresh masks for every sample and call."""

from __future__ import annotations

import math

import pytest
import torch

from training.masking import TokenGrid, box_cells, masked_per_slot, mofo_mask, tube_mask

GRID = TokenGrid()  # 16 x 224 x 224, tubelet 2, patch 16: 8 x 14 x 14 tokens
SMALL = TokenGrid(frames=4, height=64, width=96, patch=16, tubelet=2)  # 2 x 4 x 6


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inside(boxes, grid=GRID, valid=None):
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    if valid is None:
        valid = torch.ones(boxes.shape[:-1], dtype=torch.bool)
    return box_cells(boxes, torch.as_tensor(valid), grid)


def test_tube_masks_hide_exactly_the_ratio_in_tubes():
    masks = tube_mask(64, GRID, 0.9, _gen())
    assert masks.shape == (64, 1568) and masks.dtype == torch.bool
    assert (masks.sum(1) == 8 * 176).all()  # int(0.9 * 196) = 176 per slot
    slots = masks.view(64, 8, 196)
    assert (slots == slots[:, :1]).all()  # tubes: the same cells in every time slot


def test_box_maps_x_to_columns_and_y_to_rows():
    left_strip = _inside([[0, 0, 32, 224]])[0, 0].view(14, 14)
    assert left_strip[:, :2].all() and not left_strip[:, 2:].any()
    top_strip = _inside([[0, 0, 224, 32]])[0, 0].view(14, 14)
    assert top_strip[:2, :].all() and not top_strip[2:, :].any()


def test_a_cell_is_inside_when_the_box_covers_half_of_it():
    # x 50..150: columns 3 (50-64: 14 px) to 8 (128-144); column 9 (144-150: 6 px) is out.
    # y 60..160: row 3 (60-64: 4 px) is out; rows 4 to 9 (144-160) are in.
    cells = _inside([[50, 60, 150, 160]])[0, 0].view(14, 14)
    rows, cols = torch.nonzero(cells, as_tuple=True)
    assert sorted(set(cols.tolist())) == list(range(3, 9))
    assert sorted(set(rows.tolist())) == list(range(4, 10))
    assert cells.sum() == 36


@pytest.mark.parametrize(
    ("box", "expected_inside"),
    [([50, 60, 150, 160], 36), ([0, 0, 224, 224], 196), ([100, 100, 105, 104], 1)],
    ids=["box", "everything", "less-than-a-patch"],
)
def test_mofo_hides_the_inside_share_and_the_rest_outside(box, expected_inside):
    inside = _inside([box] * 16)
    masks = mofo_mask(inside, GRID, 0.9, 0.75, _gen()).view(16, 8, 196)
    n_in = inside.sum(-1)
    assert (n_in == expected_inside).all()
    hidden_in = (masks & inside).sum(-1)
    hidden_out = (masks & ~inside).sum(-1)
    want_in = max(math.ceil(0.75 * expected_inside), 176 - (196 - expected_inside))
    assert (hidden_in == min(want_in, 176)).all()
    assert (hidden_in >= torch.ceil(0.75 * n_in)).all()  # at least the inside share
    assert (hidden_in + hidden_out == 176).all()  # exact count per slot


def test_a_box_smaller_than_a_patch_marks_the_cell_of_its_centre():
    cells = _inside([[100, 100, 105, 104]])[0, 0].view(14, 14)  # centre (102.5, 102) -> (6, 6)
    assert cells.sum() == 1 and cells[6, 6]
    straddling = _inside([[28, 28, 36, 36]])[0, 0].view(14, 14)  # 4 px in each of 4 cells
    assert straddling.sum() == 1 and straddling[2, 2]


def test_no_box_or_a_fallback_is_plain_tube_masking():
    inside = _inside([[50, 60, 150, 160]] * 4, valid=[False] * 4)
    assert not inside.any()
    ours = mofo_mask(inside, GRID, 0.9, 0.75, _gen(3))
    assert torch.equal(ours, tube_mask(4, GRID, 0.9, _gen(3)))
    empty = _inside([[10, 10, 10, 50]])  # zero width: no box
    assert not empty.any()


def test_per_frame_boxes_take_the_union_of_a_tubelets_frames():
    frames = torch.zeros(1, 4, 4)
    frames[0, 0] = torch.tensor([0, 0, 16, 16])  # slot 0: frames 0 and 1
    frames[0, 1] = torch.tensor([32, 16, 48, 32])
    frames[0, 2] = torch.tensor([80, 48, 96, 64])  # slot 1: frame 2 only (frame 3 has none)
    valid = torch.tensor([[True, True, True, False]])
    cells = box_cells(frames, valid, SMALL).view(2, 4, 6)
    assert cells[0, :2, :3].all() and cells[0].sum() == 6  # union x 0..48, y 0..32
    assert cells[1, 3, 5] and cells[1].sum() == 1


def test_a_moving_box_moves_the_inside_share():
    boxes = torch.zeros(8, 16, 4)
    for f in range(16):  # a 64 px box sliding right by 8 px a frame
        boxes[:, f] = torch.tensor([8.0 * f, 80, 8.0 * f + 64, 144])
    inside = box_cells(boxes, torch.ones(8, 16, dtype=torch.bool), GRID)
    masks = mofo_mask(inside, GRID, 0.9, 0.75, _gen()).view(8, 8, 196)
    assert not (inside[:, 0] == inside[:, -1]).all()  # the box moved between slots
    n_in = inside.sum(-1)
    assert ((masks & inside).sum(-1) == torch.ceil(0.75 * n_in).long()).all()
    assert (masks.sum(-1) == 176).all()


def test_masks_differ_across_samples_and_calls_and_repeat_with_the_seed():
    inside = _inside([[50, 60, 150, 160]] * 32)
    gen = _gen(7)
    first, second = mofo_mask(inside, GRID, generator=gen), mofo_mask(inside, GRID, generator=gen)
    assert len({tuple(m.nonzero().flatten().tolist()) for m in first}) == 32
    assert not torch.equal(first, second)  # the next epoch draws new masks
    assert torch.equal(first, mofo_mask(inside, GRID, generator=_gen(7)))  # reproducible


def test_inside_share_of_every_inside_cell_is_met_on_average():
    """Every inside cell is hidden with probability ceil(0.75 I) / I, outside ones evenly."""
    inside = _inside([[50, 60, 150, 160]] * 2000)
    masks = mofo_mask(inside, GRID, generator=_gen(1)).view(2000, 8, 196)[:, 0].float()
    cells = inside[0, 0]
    assert torch.allclose(masks[:, cells].mean(0), torch.full((36,), 27 / 36), atol=0.05)
    assert torch.allclose(masks[:, ~cells].mean(0), torch.full((160,), 149 / 160), atol=0.05)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="divide"):
        TokenGrid(frames=15)
    with pytest.raises(ValueError, match="ratio"):
        masked_per_slot(GRID, 1.0)
    with pytest.raises(ValueError, match="boxes must be"):
        box_cells(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), GRID)
    with pytest.raises(ValueError, match="inside_ratio"):
        mofo_mask(torch.zeros(1, 8, 196, dtype=torch.bool), GRID, inside_ratio=1.5)
