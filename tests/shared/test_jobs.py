"""The queue's contract between the service, the cache builds and the workers
(:mod:`mofo.shared.jobs`), and the Redis keys named in one place (:mod:`mofo.shared.keys`)."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from mofo.shared.errors import Cancelled, ClipNotFound
from mofo.shared.jobs import (
    BUILD_FUNCTION,
    JOB_FUNCTION,
    BoxJob,
    BuildChunk,
    JobClip,
    JobCounts,
    box_clips,
)
from mofo.shared.params import DecodeLimits, MotionParams, preset_params
from mofo.shared.record import BoxRecord
from mofo.shared.sources import ClipItem

ROOT = Path(__file__).resolve().parents[2]


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
    seen: list[dict] = []
    counts = JobCounts(3)

    def analyse(clip: JobClip) -> BoxRecord:
        seen.append(counts.as_dict())
        counts.pairs(4, 8)  # as the flow thread tells it, half-way through the clip's pairs
        if clip.video == "b.mp4":
            raise ClipNotFound("b.mp4: no such file under the data root")
        return _record(clip.video)

    clips = [JobClip("a.mp4"), JobClip("b.mp4"), JobClip("c.mp4")]
    outcomes = box_clips(clips, analyse, counts)
    assert [o["video"] for o in outcomes] == ["a.mp4", "b.mp4", "c.mp4"]
    assert [o["ok"] for o in outcomes] == [True, False, True]
    assert outcomes[1]["error"] == "b.mp4: no such file under the data root"
    assert BoxRecord.from_dict(outcomes[2]["record"]) == _record("c.mp4")
    # Each clip starts with its pairs unknown; the counts before it are what clients saw.
    assert [(s["done"], s["failed"], s["pairs_done"]) for s in seen] == [
        (0, 0, None),
        (1, 0, None),
        (1, 1, None),
    ]
    assert counts.as_dict() == {
        "total": 3,
        "done": 2,
        "failed": 1,
        "pairs_done": 4,
        "pairs_total": 8,
    }


def test_a_cancelled_clip_ends_the_loop_with_the_outcomes_before_it() -> None:
    def analyse(clip: JobClip) -> BoxRecord:
        if clip.video == "b.mp4":
            raise Cancelled()
        return _record(clip.video)

    counts = JobCounts(3)
    clips = [JobClip("a.mp4"), JobClip("b.mp4"), JobClip("c.mp4")]
    outcomes = box_clips(clips, analyse, counts)
    assert [o["video"] for o in outcomes] == ["a.mp4"]
    assert (counts.done, counts.failed) == (1, 0)


def test_a_fault_outside_the_clips_fails_the_job() -> None:
    """Not a clip's fault (the cache unreachable): the whole job fails, so RQ can run it again."""

    def analyse(clip: JobClip) -> BoxRecord:
        raise ConnectionError("redis went away")

    with pytest.raises(ConnectionError):
        box_clips([JobClip("a.mp4")], analyse)


def test_a_clip_goes_on_the_wire_as_plain_values_and_comes_back_equal() -> None:
    clips = [
        JobClip("sha256-00", upload="mofo:upload:sha256-00", name="my clip.mp4"),
        JobClip("a/b.mp4", path="a/b.mp4"),
        JobClip("P01_01_0", path="P01/videos/P01_01.MP4", segment=(7, 202)),
    ]
    payloads = [c.to_payload() for c in clips]
    assert payloads == [
        {"video": "sha256-00", "upload": "mofo:upload:sha256-00", "name": "my clip.mp4"},
        {"video": "a/b.mp4", "path": "a/b.mp4"},
        {"video": "P01_01_0", "path": "P01/videos/P01_01.MP4", "segment": [7, 202]},
    ]
    assert [JobClip.from_payload(p) for p in payloads] == clips


def test_a_clip_payload_the_contract_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown fields \['uri'\]"):
        JobClip.from_payload({"video": "a.mp4", "uri": "s3://bucket/a.mp4"})
    with pytest.raises(ValueError, match="a path or an upload, not both"):
        JobClip("a.mp4", path="a.mp4", upload="mofo:upload:x")
    with pytest.raises(ValueError, match="needs its video id"):
        JobClip.from_payload({"video": ""})


def test_jobs_round_trip_through_their_rq_arguments_and_fit_the_workers() -> None:
    """What the service and the builds enqueue is what the workers' functions take and read."""
    params = preset_params("fast", num_frames=6)
    limits = DecodeLimits(max_frames=10, max_width=640)
    job = BoxJob(
        (JobClip("a.mp4", path="a.mp4"), JobClip("b", upload="k", name="b.mp4")), params, limits
    )
    chunk = BuildChunk(
        "0123456789abcdef:ssv2", (ClipItem("v", "v.webm").to_job(),), params, limits, "/data/ssv2"
    )
    assert BoxJob.from_args(*job.args()) == job
    assert BuildChunk.from_args(*chunk.args()) == chunk
    assert BoxJob.from_args(*job.args()).params.hash() == params.hash()
    assert (
        job.timeout_s() == 600 and BoxJob((JobClip("x"),) * 20, params, limits).timeout_s() == 1200
    )
    for name, work in ((JOB_FUNCTION, job), (BUILD_FUNCTION, chunk)):
        module, _, function = name.rpartition(".")
        worker_function = getattr(importlib.import_module(module), function)
        inspect.signature(worker_function).bind(*work.args())  # the arguments fit
    assert MotionParams.from_dict(job.args()[1]) == params


def test_every_redis_key_is_named_in_the_keys_module(tmp_path: Path) -> None:
    """No product module spells a ``mofo:`` key of its own: they all come from mofo.shared.keys
    (shown able to fail on a planted module)."""

    def spelled(path: Path) -> list[str]:
        tree = ast.parse(path.read_text())
        return [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("mofo:")
        ]

    keys_module = ROOT / "shared" / "keys.py"
    product = [
        p
        for folder in ("mofo", "shared", "services", "workers", "training")
        for p in (ROOT / folder).rglob("*.py")
        if p != keys_module
    ]
    assert {p.name: spelled(p) for p in product if spelled(p)} == {}
    assert "mofo:box" in spelled(keys_module)
    planted = tmp_path / "planted.py"
    planted.write_text(
        'def f(redis):\n    return redis.get(f"mofo:queue:{1}") or redis.get("mofo:x")\n'
    )
    assert sorted(spelled(planted)) == ["mofo:queue:", "mofo:x"]  # f-strings' text counts too
