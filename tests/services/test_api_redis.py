"""The API with Redis: the box cache and the job queue live in a real (private) redis-server;
jobs run in a real RQ worker process; the cache outlives API restarts; a Redis outage is a
clear 503, not a crash."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import redis

from mofo.shared.keys import box_key
from mofo.shared.sample import sample_clip
from testkit.datasets import mofo_env
from testkit.redis_server import RedisServer, start_redis
from testkit.server import start_server
from tests.workers.conftest import mofo, start_worker

FAST = {"num_frames": 6}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory, redis_server: RedisServer, data_root: Path):
    srv = start_server(
        tmp_path_factory.mktemp("logs"),
        redis_url=redis_server.url,
        data_root=data_root,
        queue_name="mofo-test",
    )
    yield srv
    srv.stop()


def _env(redis_server: RedisServer, data_root: Path) -> dict[str, str]:
    return mofo_env(
        MOFO_DATA_ROOT=str(data_root), MOFO_REDIS_URL=redis_server.url, MOFO_DEVICE="cpu"
    )


def _run_worker(redis_server: RedisServer, data_root: Path) -> subprocess.CompletedProcess:
    """A real `mofo worker` process in burst mode on the API's queue: runs what is queued and
    what is waiting for a retry, then exits."""
    return mofo(
        "worker",
        "--burst",
        "--queues",
        "mofo-test",
        env=_env(redis_server, data_root),
        timeout=300,
    )


def test_records_go_to_redis_and_outlive_an_api_restart(api, redis_server, data_root, tmp_path):
    with api.client() as client:
        assert client.get("/readyz").json()["cache"] == "redis"
        record = client.post(
            "/v1/boxes", files={"file": ("s.mp4", sample_clip().read_bytes())}, params=FAST
        ).json()
    stored = redis.Redis.from_url(redis_server.url).get(box_key(record["params"], record["video"]))
    assert json.loads(stored) == record

    second = start_server(tmp_path, redis_url=redis_server.url)  # a fresh process, same Redis
    try:
        with second.client() as client:
            again = client.get(f"/v1/boxes/{record['video']}", params=FAST)
            assert again.status_code == 200 and again.json() == record
    finally:
        second.stop()


def test_jobs_run_on_an_rq_worker(api, redis_server, data_root):
    r = redis.Redis.from_url(redis_server.url)
    with api.client() as client:
        paths = client.post(
            "/v1/jobs",
            json={"paths": ["clips/sample.mp4", "clips/truncated_40_faststart.mp4"]},
            params=FAST,
        )
        upload = client.post(
            "/v1/jobs", files={"file": ("s.mp4", sample_clip().read_bytes())}, params=FAST
        )
        assert paths.status_code == upload.status_code == 202
        assert paths.json()["status"] == "queued"  # no worker yet
        assert r.keys("mofo:upload:*")  # the upload waits in Redis for a worker

        worker = _run_worker(redis_server, data_root)
        assert worker.returncode == 0, worker.stderr[-3000:]

        done = client.get(paths.json()["status_url"]).json()
        assert done["status"] == "finished", done
        assert done["progress"] == {
            "total": 2,
            "done": 1,
            "failed": 1,
            "pairs_done": None,
            "pairs_total": None,
            "eta_s": None,
        }  # the last clip failed before its flow began
        ok, broken = done["result"]
        assert ok["ok"] and ok["video"] == "clips/sample.mp4"
        assert not broken["ok"] and "truncated" in broken["error"]
        assert client.get("/v1/boxes/clips/sample.mp4", params=FAST).json() == ok["record"]

        up = client.get(upload.json()["status_url"]).json()
        assert up["status"] == "finished"
        assert up["result"][0]["record"]["frames"] == ok["record"]["frames"]
        assert not r.keys("mofo:upload:*")  # cleaned up after the job
        assert done["ended_at"] >= done["started_at"]


def test_cancel_a_queued_and_a_running_rq_job(api, redis_server, data_root, tmp_path):
    """Queued: RQ never runs it and its upload is let go. Running: the worker sees the flag
    within half a second and stops at its next frame pairs; the job ends cancelled with the
    clips boxed before, the worker takes the next job, and no retry runs it again."""
    r = redis.Redis.from_url(redis_server.url)
    with api.client() as client:
        queued = client.post(
            "/v1/jobs", files={"file": ("s.mp4", sample_clip().read_bytes())}, params=FAST
        ).json()
        assert r.keys("mofo:upload:*")
        gone = client.delete(queued["status_url"]).json()
        assert gone["status"] == "cancelled" and gone["result"] is None
        assert not r.keys("mofo:upload:*")  # nothing left waiting for a worker

        every = {"short_side": 160}
        paths = ["clips/sample.mp4", "clips/carphone.mp4"]
        job = client.post("/v1/jobs", json={"paths": paths}, params=every).json()
        after = client.post("/v1/jobs", json={"paths": paths[:1]}, params=FAST).json()
        worker = start_worker(
            "cancel", _env(redis_server, data_root), tmp_path, "--queues", "mofo-test"
        )
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                state = client.get(job["status_url"]).json()
                if state["progress"]["done"] == 1 and (state["progress"]["pairs_done"] or 0):
                    break
                assert state["status"] in ("queued", "running"), state
                time.sleep(0.05)
            started = time.monotonic()
            state = client.delete(job["status_url"]).json()
            assert time.monotonic() - started < 5
            assert state["status"] == "cancelled", state
            (sample,) = state["result"]
            assert sample["ok"] and sample["video"] == "clips/sample.mp4"
            assert 0 < state["progress"]["pairs_done"] < state["progress"]["pairs_total"] == 120
            assert worker.process.wait(120) == 0, worker.text()[-3000:]
        finally:
            worker.stop()
        assert client.get(after["status_url"]).json()["status"] == "finished"
        assert client.get(job["status_url"]).json()["status"] == "cancelled"  # not run again
        missing = client.get("/v1/boxes/clips/carphone.mp4", params=every)
        assert missing.status_code == 404


def test_the_api_serves_what_a_cache_build_filled(api, redis_server, data_root):
    """`mofo cache build` over the API's data root, run by `mofo worker`: the API finds the
    records under the same ids (paths under the root) and settings hash."""
    env = _env(redis_server, data_root)
    small = {**FAST, "short_side": 64}
    with api.client() as client:
        assert client.get("/v1/boxes/clips/carphone.mp4", params=small).status_code == 404
        built = mofo(
            "cache",
            "build",
            str(data_root / "clips"),
            "--num-frames",
            "6",
            "--short-side",
            "64",
            "--name",
            "api-root",
            "--json",
            env=env,
        )
        assert built.returncode == 0, built.stderr
        plan = json.loads(built.stdout)
        assert plan["root"] == str(data_root)  # ids are paths under the API's data root
        worker = mofo("worker", "--burst", env=env, timeout=300)
        assert worker.returncode == 0, worker.stderr[-3000:]
        found = client.get("/v1/boxes/clips/carphone.mp4", params=small)
        assert found.status_code == 200, found.text
        assert found.json()["params"] == plan["params"]
        direct = client.post("/v1/boxes", json={"path": "clips/carphone.mp4"}, params=small)
        assert direct.headers["X-Mofo-Cache"] == "hit"
        assert direct.json() == found.json()


def test_redis_outage_is_a_503_and_recovers(api, redis_server):
    with api.client() as client:
        record = client.post("/v1/boxes", json={"path": "clips/sample.mp4"}, params=FAST).json()
        redis_server.stop()
        try:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            body = ready.json()
            assert body["ready"] is False and body["cache_reachable"] is False
            assert body["detail"] == "box cache unreachable"  # no Redis address for clients
            lookup = client.get("/v1/boxes/clips/sample.mp4", params=FAST)
            assert lookup.status_code == 503
            assert lookup.json()["type"] == "urn:mofo:problem:cache-unavailable"
            job = client.post("/v1/jobs", json={"paths": ["clips/sample.mp4"]}, params=FAST)
            assert job.status_code == 503
            assert job.json()["type"] == "urn:mofo:problem:queue-unavailable"
            assert job.json()["detail"] == "job queue unreachable"
            status = client.get("/v1/jobs/" + "0" * 32)
            assert status.status_code == 503
            assert client.get("/healthz").status_code == 200
        finally:
            redis_server.start()  # same folder: the append-only file brings the records back
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get("/readyz").status_code == 200
        again = client.get("/v1/boxes/clips/sample.mp4", params=FAST)
        assert again.status_code == 200 and again.json() == record
        assert api.alive()
