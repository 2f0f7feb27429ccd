"""Cache builds of the real dataset formats, and the faults a build must ride out, with a private
``redis-server`` and real ``mofo worker`` processes:

- an Epic-Kitchens-100 CSV: segments of a long video, one running past its end;
- a Something-Something V2 label file over WebM videos, one of them missing;
- the data root gone (an unmounted share): the job is retried after its backoff, no clip fails;
- a job that fails for good: its clips wait, counted as stalled, for the next build.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from fractions import Fraction

import av
import pytest
import redis
from rq import Queue
from rq.registry import ScheduledJobRegistry

from mofo.shared.keys import BOX_PREFIX
from mofo.shared.params import MotionParams
from mofo.shared.record import BoxRecord
from testkit import badclips
from testkit.datasets import mofo_env
from testkit.redis_server import start_redis
from tests.workers.conftest import FAST_WORKER, PARAMS_ARGS, mofo, small_clips

PARAMS = MotionParams(short_side=64, num_frames=6, backend="opencv")
EPIC_HEADER = [
    "narration_id",
    "participant_id",
    "video_id",
    "narration_timestamp",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "narration",
    "verb",
    "verb_class",
    "noun",
    "noun_class",
    "all_nouns",
    "all_noun_classes",
]


@pytest.fixture
def server(tmp_path):
    srv = start_redis(tmp_path / "redis")
    yield srv
    srv.stop()


def _state(client: redis.Redis, build_id: str) -> tuple[dict[str, BoxRecord], dict[str, str]]:
    """(records by clip, failure reasons by clip) of a build."""
    params = build_id.split(":")[0]
    keys = [k.decode() for k in client.scan_iter(match=f"{BOX_PREFIX}:{params}:*")]
    records = {k.split(":", 3)[3]: BoxRecord.from_json(client.get(k)) for k in keys}
    failed = client.hgetall(f"mofo:build:{build_id}:failed")
    return records, {k.decode(): v.decode() for k, v in failed.items()}


def _build(env, *args: str) -> dict:
    built = mofo("cache", "build", *args, *PARAMS_ARGS, "--json", env=env)
    assert built.returncode == 0, built.stderr
    return json.loads(built.stdout)


def _drain(spawn_worker, env) -> None:
    worker = spawn_worker("w", env)
    assert worker.process.wait(300) == 0, worker.text()


def test_epic_kitchens_segments_are_boxed_within_their_frames(
    server, tmp_path, bikes, spawn_worker
):
    videos = tmp_path / "EPIC-KITCHENS"
    (videos / "P01" / "videos").mkdir(parents=True)
    shutil.copy(bikes, videos / "P01" / "videos" / "P01_01.MP4")  # 250 frames at 25 fps
    rows = [  # 1-based inclusive frames, as the dataset gives them
        ("P01_01_0", 8, 60, "['bike']"),
        ("P01_01_1", 100, 180, "['bike', 'road']"),
        ("P01_01_2", 230, 300, "['road']"),  # runs past the video's end
    ]
    annotations = tmp_path / "EPIC_100_train.csv"
    with annotations.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(EPIC_HEADER)
        for narration, start, stop, nouns in rows:
            times = ["00:00:01.00", "00:00:00.32", "00:00:02.40"]
            out.writerow(
                [
                    narration,
                    "P01",
                    "P01_01",
                    *times,
                    start,
                    stop,
                    "ride bike",
                    "ride",
                    40,
                    "bike",
                    12,
                    nouns,
                    "[12]",
                ]
            )
    env = mofo_env(MOFO_REDIS_URL=server.url, **FAST_WORKER)
    plan = _build(env, str(annotations), "--videos", str(videos))
    assert (plan["kind"], plan["total"], plan["enqueued"]) == ("epic", 3, 3)
    assert plan["build_id"].endswith(":epic-EPIC_100_train")
    _drain(spawn_worker, env)

    records, failed = _state(redis.Redis.from_url(server.url), plan["build_id"])
    assert sorted(records) == ["P01_01_0", "P01_01_1"]
    for narration, start, stop, _ in rows[:2]:
        indices = records[narration].frame_indices
        assert len(indices) == 6 and indices[0] == start - 1 and indices[-1] == stop - 1
        assert (records[narration].width, records[narration].height) == (640, 272)
    assert list(failed) == ["P01_01_2"]
    assert failed["P01_01_2"].startswith("P01_01_2: ") and "end" in failed["P01_01_2"]


def _webm(path, frames: int = 12) -> None:
    """A VP9 WebM of a textured square moving across a gradient, as SSV2 ships its clips."""
    rgb = badclips._textured_square_frames(frames, (96, 64))
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx-vp9", rate=12)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i, image in enumerate(rgb):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 12)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_something_something_v2_clips_keep_the_dataset_ids(server, tmp_path, spawn_worker):
    videos = tmp_path / "ssv2" / "20bn-something-something-v2"
    videos.mkdir(parents=True)
    for video in ("78687", "42326"):
        _webm(videos / f"{video}.webm")
    (videos / "55555.webm").write_bytes(b"")  # an empty file
    labels = [
        {
            "id": "78687",
            "label": "pushing a cup from left to right",
            "template": "Pushing [something] from left to right",
            "placeholders": ["a cup"],
        },
        {
            "id": "42326",
            "label": "moving a pen up",
            "template": "Moving [something] up",
            "placeholders": ["a pen"],
        },
        {
            "id": "1999",
            "label": "dropping a box",
            "template": "Dropping [something]",
            "placeholders": ["a box"],
        },
        {
            "id": "55555",
            "label": "opening a jar",
            "template": "Opening [something]",
            "placeholders": ["a jar"],
        },
    ]
    label_file = tmp_path / "ssv2" / "train.json"
    label_file.write_text(json.dumps(labels))
    env = mofo_env(MOFO_REDIS_URL=server.url, **FAST_WORKER)
    plan = _build(env, str(label_file))
    assert (plan["kind"], plan["total"], plan["build_id"].split(":")[1]) == (
        "ssv2",
        4,
        "ssv2-train",
    )
    _drain(spawn_worker, env)

    records, failed = _state(redis.Redis.from_url(server.url), plan["build_id"])
    assert sorted(records) == ["42326", "78687"]
    assert records["78687"].video == "78687" and records["78687"].width == 96
    assert sorted(failed) == ["1999", "55555"] and "no such file" in failed["1999"]
    assert failed["55555"] == "55555: is empty (0 bytes)"


def test_a_missing_data_root_is_retried_after_its_backoff_and_fails_no_clip(
    server, tmp_path, spawn_worker
):
    root = tmp_path / "share"
    small_clips(root, 3)
    env = mofo_env(MOFO_REDIS_URL=server.url, **FAST_WORKER)
    plan = _build(env, str(root), "--retry-after", "2,2")
    away = tmp_path / "share-unmounted"
    root.rename(away)  # the share goes away before any worker runs

    worker = spawn_worker("w", env)
    client = redis.Redis.from_url(server.url)
    scheduled = ScheduledJobRegistry(queue=Queue("mofo-build", connection=client))
    deadline = time.monotonic() + 60
    while "is not available on this worker" not in worker.text():
        assert time.monotonic() < deadline, worker.text()
        time.sleep(0.1)
    assert scheduled.count == 1  # waiting for its retry, not failed
    assert client.hlen(f"mofo:build:{plan['build_id']}:failed") == 0
    away.rename(root)  # back again

    assert worker.process.wait(120) == 0, worker.text()
    records, failed = _state(client, plan["build_id"])
    assert sorted(records) == ["c0.mp4", "c1.mp4", "c2.mp4"] and not failed
    from rq.job import Job

    job = Job.fetch(plan_job(client, plan), connection=client)
    assert job.get_status() == "finished" and job.retries_left == 1


def plan_job(client: redis.Redis, plan: dict) -> str:
    """The id of the only job a one-job build enqueued (from the queue's finished registry)."""
    from rq.registry import FinishedJobRegistry

    (job_id,) = FinishedJobRegistry(queue=Queue("mofo-build", connection=client)).get_job_ids()
    return job_id


def test_clips_of_a_job_that_failed_for_good_wait_for_the_next_build(
    server, tmp_path, spawn_worker
):
    root = tmp_path / "share"
    small_clips(root, 2)
    env = mofo_env(MOFO_REDIS_URL=server.url, **FAST_WORKER)
    plan = _build(env, str(root), "--retry-after", "")  # no retries
    root.rename(tmp_path / "away")
    _drain(spawn_worker, env)  # the job fails; the burst worker has nothing left and quits

    shown = mofo("cache", "status", "--json", "--failed", env=env)
    status = json.loads(shown.stdout)["builds"][0]
    assert (status["done"], status["failed"], status["pending"], status["stalled"]) == (0, 0, 2, 2)
    (reason,) = status["failed_jobs"].values()
    assert "is not available on this worker" in reason
    text = mofo("cache", "status", "--failed", env=env).stdout
    assert "2 queued clips are in failed or lost jobs" in text

    (tmp_path / "away").rename(root)
    again = _build(env, str(root))
    assert (again["build_id"], again["enqueued"], again["in_flight"]) == (plan["build_id"], 2, 0)
    _drain(spawn_worker, env)
    records, failed = _state(redis.Redis.from_url(server.url), plan["build_id"])
    assert sorted(records) == ["c0.mp4", "c1.mp4"] and not failed


def test_without_redis_the_commands_say_so_and_exit(tmp_path):
    """No Redis configured: a usage error (2). Redis unreachable: exit 3 (what the command
    needs is not there, not a clip's fault), one line, no traceback, for the build, the worker
    and the status."""
    small_clips(tmp_path / "clips", 1)
    unset = mofo("cache", "build", str(tmp_path / "clips"), env=mofo_env())
    assert unset.returncode == 2 and "set MOFO_REDIS_URL" in unset.stderr
    env = mofo_env(MOFO_REDIS_URL="redis://127.0.0.1:1/0", MOFO_DEVICE="cpu")
    for args in (
        ["cache", "build", str(tmp_path / "clips")],
        ["worker", "--burst"],
        ["cache", "status"],
    ):
        done = mofo(*args, env=env, timeout=60)
        assert done.returncode == 3, (args, done.stderr)
        assert "unreachable" in done.stderr and "Traceback" not in done.stderr, args
