"""A box record's boxes for the frames a training sample takes: the nearest recorded frame's
box, scaled to the decoded size; no box for fallback records or frames without one."""

from __future__ import annotations

import torch

from mofo.shared.record import BoxRecord
from mofo.training.boxes import boxes_for_frames


def _record(**changes) -> BoxRecord:
    fields = dict(
        video="78687",
        params="p",
        width=400,
        height=200,
        fps=12.0,
        frame_indices=[0, 10, 20],
        frames=[[0, 0, 40, 20], None, [200, 100, 400, 200]],
        clip_box=[0, 0, 400, 200],
        fallback=False,
    )
    fields.update(changes)
    return BoxRecord(**fields)


def test_each_frame_takes_the_nearest_recorded_box_scaled():
    boxes, valid = boxes_for_frames(_record(), [0, 4, 5, 6, 14, 16, 30], width=200, height=100)
    # 4 -> 0; 5 is a tie between 0 and 10 -> the earlier; 6 -> 10 (no box); 14 -> 10; 16 -> 20
    assert valid.tolist() == [True, True, True, False, False, True, True]
    assert boxes[0].tolist() == [0, 0, 20, 10]  # half size
    assert boxes[5].tolist() == [100, 50, 200, 100]
    assert boxes[6].tolist() == boxes[5].tolist()  # past the last recorded frame


def test_unsorted_and_single_frame_records():
    shuffled = _record(
        frame_indices=[20, 0, 10], frames=[[200, 100, 400, 200], [0, 0, 40, 20], None]
    )
    boxes, valid = boxes_for_frames(shuffled, [1, 19], 400, 200)
    assert boxes.tolist() == [[0, 0, 40, 20], [200, 100, 400, 200]] and valid.all()
    single = _record(frame_indices=[5], frames=[[10, 10, 50, 50]])
    boxes, valid = boxes_for_frames(single, [0, 99], 400, 200)
    assert valid.all() and boxes[1].tolist() == [10, 10, 50, 50]


def test_a_fallback_record_gives_no_boxes():
    boxes, valid = boxes_for_frames(_record(fallback=True), [0, 10], 200, 100)
    assert not valid.any() and torch.equal(boxes, torch.zeros(2, 4))
