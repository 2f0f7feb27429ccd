"""Tube and MOFO masking (the paper's §2.2): exact counts, the inside share, the remainder drawn
anywhere (the default: the box hidden at least as much as the clip) or only outside the box, the
box on the token grid (x is columns), per-frame boxes, the edge cases, and fresh masks for every
sample and call."""

from __future__ import annotations

import math

import pytest
import torch

from mofo.training.masking import (
    TokenGrid,
    box_cells,
    hidden_shares,
    masked_per_slot,
    mofo_mask,
    tube_mask,
)

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


BOXES = pytest.mark.parametrize(
    ("box", "expected_inside"),
    [
        ([50, 60, 150, 160], 36),
        ([0, 0, 224, 224], 196),
        ([100, 100, 105, 104], 1),
        ([0, 0, 224, 208], 182),
    ],
    ids=["box", "everything", "less-than-a-patch", "most-of-the-frame"],
)


@BOXES
def test_outside_rule_hides_the_inside_share_and_the_rest_outside(box, expected_inside):
    inside = _inside([box] * 16)
    masks = mofo_mask(inside, GRID, 0.9, 0.75, _gen(), remainder="outside").view(16, 8, 196)
    n_in = inside.sum(-1)
    assert (n_in == expected_inside).all()
    hidden_in = (masks & inside).sum(-1)
    hidden_out = (masks & ~inside).sum(-1)
    want_in = max(math.ceil(0.75 * expected_inside), 176 - (196 - expected_inside))
    assert (hidden_in == min(want_in, 176)).all()  # exactly: the quota, more only if need be
    assert (hidden_in + hidden_out == 176).all()  # exact count per slot


@BOXES
def test_anywhere_rule_hides_at_least_the_quota_and_the_box_at_least_the_ratio(
    box, expected_inside
):
    inside = _inside([box] * 64)
    masks = mofo_mask(inside, GRID, 0.9, 0.75, _gen()).view(64, 8, 196)
    n_in = int(inside.sum(-1)[0, 0])
    assert n_in == expected_inside
    hidden_in = (masks & inside).sum(-1)
    assert (masks.sum(-1) == 176).all()  # exact count per slot
    assert (hidden_in >= min(math.ceil(0.75 * n_in), 176)).all()  # the quota, always
    # The remainder comes from every cell not yet hidden: the box's share of it is its share of
    # those cells, so the box is hidden at least as much as the clip (in expectation, exactly:
    # quota + (I - quota) * rest / (196 - quota) of the I cells).
    quota = min(math.ceil(0.75 * n_in), 176)
    expected = (quota + (n_in - quota) * (176 - quota) / (196 - quota)) / n_in
    assert expected >= 176 / 196
    share = float(hidden_in.float().mean()) / n_in
    assert share == pytest.approx(expected, abs=0.02)
    assert share >= 176 / 196 - 0.01


def test_the_two_rules_for_a_typical_box():
    """A 6 x 6 box of 196 cells: 27 of 36 hidden by quota; the outside rule fills the rest of
    the 176 from the 160 outside cells (149: 93 %), leaving the box at 75 %; the anywhere rule
    spreads the 149 over the 169 cells left, 9 of them inside the box on average (97.9 %)."""
    inside = _inside([[50, 60, 150, 160]] * 500)
    shares = {}
    for rule in ("outside", "anywhere"):
        masks = mofo_mask(inside, GRID, 0.9, 0.75, _gen(1), remainder=rule)
        counts = hidden_shares(masks, inside)
        assert counts["tokens_inside"] == 500 * 8 * 36 and counts["tokens_outside"] == 500 * 8 * 160
        assert counts["hidden_inside"] + counts["hidden_outside"] == 500 * 8 * 176
        shares[rule] = counts["hidden_inside"] / counts["tokens_inside"]
    assert shares["outside"] == 27 / 36
    assert shares["anywhere"] == pytest.approx((27 + 9 * 149 / 169) / 36, abs=0.005)


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
    outside = mofo_mask(inside, GRID, 0.9, 0.75, _gen(3), remainder="outside")
    slots = outside.view(4, 8, 196)
    assert (slots.sum(-1) == 176).all() and (slots == slots[:, :1]).all()
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


@pytest.mark.parametrize("rule", ["anywhere", "outside"])
def test_a_moving_box_moves_the_inside_share(rule):
    boxes = torch.zeros(8, 16, 4)
    for f in range(16):  # a 64 px box sliding right by 8 px a frame
        boxes[:, f] = torch.tensor([8.0 * f, 80, 8.0 * f + 64, 144])
    inside = box_cells(boxes, torch.ones(8, 16, dtype=torch.bool), GRID)
    masks = mofo_mask(inside, GRID, 0.9, 0.75, _gen(), remainder=rule).view(8, 8, 196)
    assert not (inside[:, 0] == inside[:, -1]).all()  # the box moved between slots
    n_in = inside.sum(-1)
    hidden_in = (masks & inside).sum(-1)
    if rule == "outside":
        assert (hidden_in == torch.ceil(0.75 * n_in).long()).all()
    else:
        assert (hidden_in >= torch.ceil(0.75 * n_in).long()).all()
    assert (masks.sum(-1) == 176).all()


@pytest.mark.parametrize("rule", ["anywhere", "outside"])
def test_masks_differ_across_samples_and_calls_and_repeat_with_the_seed(rule):
    inside = _inside([[50, 60, 150, 160]] * 32)
    gen = _gen(7)
    first = mofo_mask(inside, GRID, generator=gen, remainder=rule)
    second = mofo_mask(inside, GRID, generator=gen, remainder=rule)
    assert len({tuple(m.nonzero().flatten().tolist()) for m in first}) == 32
    assert not torch.equal(first, second)  # the next epoch draws new masks
    again = mofo_mask(inside, GRID, generator=_gen(7), remainder=rule)
    assert torch.equal(first, again)  # reproducible


def test_inside_share_of_every_inside_cell_is_met_on_average():
    """Outside rule: every inside cell is hidden with probability ceil(0.75 I) / I, outside ones
    evenly. Anywhere: inside cells 27/36 + 9/36 · 149/169, outside ones 149/169, evenly."""
    inside = _inside([[50, 60, 150, 160]] * 2000)
    cells = inside[0, 0]
    for rule, p_in, p_out in (
        ("outside", 27 / 36, 149 / 160),
        ("anywhere", (27 + 9 * 149 / 169) / 36, 149 / 169),
    ):
        masks = mofo_mask(inside, GRID, generator=_gen(1), remainder=rule)
        first = masks.view(2000, 8, 196)[:, 0].float()
        assert torch.allclose(first[:, cells].mean(0), torch.full((36,), p_in), atol=0.05), rule
        assert torch.allclose(first[:, ~cells].mean(0), torch.full((160,), p_out), atol=0.05)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="divide"):
        TokenGrid(frames=15)
    with pytest.raises(ValueError, match="ratio"):
        masked_per_slot(GRID, 1.0)
    with pytest.raises(ValueError, match="boxes must be"):
        box_cells(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), GRID)
    with pytest.raises(ValueError, match="inside_ratio"):
        mofo_mask(torch.zeros(1, 8, 196, dtype=torch.bool), GRID, inside_ratio=1.5)
    with pytest.raises(ValueError, match="remainder must be one of anywhere, outside"):
        mofo_mask(torch.zeros(1, 8, 196, dtype=torch.bool), GRID, remainder="inside")
