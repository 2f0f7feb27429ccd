"""The job contract between the service and the workers (:mod:`mofo.shared.jobs`)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from mofo.shared.errors import ClipNotFound
from mofo.shared.jobs import JOB_FUNCTION, box_clips, limits_dict
from mofo.shared.params import DecodeLimits
from mofo.shared.record import BoxRecord


def _record(video: str) -> BoxRecord:
    return BoxRecord(
        video=video,
        params="0123456789abcdef",
        width=64,
        height=48,
        fps=25.0,
        frame_indices=[0, 1],
        frames=[[1, 2, 30, 40], [2, 3, 31, 41]],
        clip_box=[1, 2, 31, 41],
        fallback=False,
        own=[True, True],
        cuts=[],
    )


def test_a_failing_clip_is_recorded_and_the_others_go_on() -> None:
    seen: list[tuple[int, int, int]] = []

    def analyse(item: dict[str, Any]) -> BoxRecord:
        if item["video"] == "b.mp4":
            raise ClipNotFound("b.mp4: no such file under the data root")
        return _record(item["video"])

    items = [{"video": "a.mp4"}, {"video": "b.mp4"}, {"video": "c.mp4"}]
    outcomes = box_clips(items, analyse, lambda *counts: seen.append(counts))
    assert [o["video"] for o in outcomes] == ["a.mp4", "b.mp4", "c.mp4"]
    assert [o["ok"] for o in outcomes] == [True, False, True]
    assert outcomes[1]["error"] == "b.mp4: no such file under the data root"
    assert BoxRecord.from_dict(outcomes[2]["record"]) == _record("c.mp4")
    assert seen == [(1, 0, 3), (1, 1, 3), (2, 1, 3)]


def test_a_fault_outside_the_clips_fails_the_job() -> None:
    """Not a clip's fault (the cache unreachable): the whole job fails, so RQ can run it again."""

    def analyse(item: dict[str, Any]) -> BoxRecord:
        raise ConnectionError("redis went away")

    with pytest.raises(ConnectionError):
        box_clips([{"video": "a.mp4"}], analyse)


def test_the_job_named_is_the_workers_and_the_limits_round_trip() -> None:
    module, _, name = JOB_FUNCTION.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))
    limits = DecodeLimits(max_frames=10, max_width=640)
    assert DecodeLimits(**limits_dict(limits)) == limits
