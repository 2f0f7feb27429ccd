"""Redis outages under a real ``mofo worker``: Redis stopped in the middle of a cache build and
started again 6 s later on the same port (its append-only file brings the queue and the records
back); the worker waits it out and finishes the build. SIGTERM during an outage stops the worker
at once, and the build finishes on another worker: nothing stored is lost."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import redis

from mofo.shared.keys import BOX_PREFIX
from testkit.datasets import mofo_env
from testkit.redis_server import RedisServer, start_redis
from tests.workers.conftest import FAST_WORKER, PARAMS_ARGS, mofo, small_clips

CLIPS = 24


@pytest.fixture
def server(tmp_path):
    srv = start_redis(tmp_path / "redis")
    yield srv
    srv.stop()


@pytest.fixture
def clips(tmp_path) -> Path:
    small_clips(tmp_path / "clips", CLIPS)
    return tmp_path / "clips"


def _build(env: dict[str, str], clips: Path) -> str:
    """A build of ``clips`` in jobs of 4, retried 1 s after a failure; its id."""
    built = mofo(
        "cache",
        "build",
        str(clips),
        *PARAMS_ARGS,
        "--chunk",
        "4",
        "--retry-after",
        "1,1,1",
        "--json",
        env=env,
    )
    assert built.returncode == 0, built.stderr
    return json.loads(built.stdout)["build_id"]


def _done(server: RedisServer, build_id: str) -> int:
    return redis.Redis.from_url(server.url).zcard(f"mofo:build:{build_id}:done")


def _wait_for_a_clip(server: RedisServer, build_id: str, worker) -> int:
    """Block until the build has its first record; the count of done clips then."""
    deadline = time.monotonic() + 120
    while (done := _done(server, build_id)) == 0:
        assert worker.process.poll() is None, worker.text()
        assert time.monotonic() < deadline, f"no clip done in 120 s:\n{worker.text()}"
        time.sleep(0.05)
    return done


def _finished(server: RedisServer, build_id: str) -> None:
    """Every clip has its record and is counted done once; none failed."""
    client = redis.Redis.from_url(server.url)
    params = build_id.split(":")[0]
    records = list(client.scan_iter(match=f"{BOX_PREFIX}:{params}:*"))
    assert len(records) == CLIPS
    assert client.zcard(f"mofo:build:{build_id}:done") == CLIPS
    assert client.hlen(f"mofo:build:{build_id}:failed") == 0
    assert int(client.hget(f"mofo:build:{build_id}", "written")) == CLIPS


def test_a_worker_rides_out_a_redis_outage(server, clips, spawn_worker):
    env = mofo_env(
        MOFO_REDIS_URL=server.url,
        **{**FAST_WORKER, "MOFO_WORKER_ABANDON_S": "30"},  # the outage is no abandonment
        MOFO_WORKER_REDIS_OUTAGE_S="120",
    )
    build_id = _build(env, clips)
    worker = spawn_worker("patient", env)  # burst: it exits 0 when the build is done
    done_before = _wait_for_a_clip(server, build_id, worker)
    server.stop()
    time.sleep(6)
    server.start()  # same port and folder
    assert worker.process.wait(300) == 0, worker.text()
    assert done_before < CLIPS  # it was stopped mid-build
    _finished(server, build_id)
    log = worker.text()
    assert "Redis unreachable" in log and "Redis is back after" in log
    assert "unhandled exception" not in log and "Traceback" not in log


def test_sigterm_stops_a_worker_during_an_outage(server, clips, spawn_worker):
    env = mofo_env(MOFO_REDIS_URL=server.url, **FAST_WORKER, MOFO_WORKER_REDIS_OUTAGE_S="600")
    build_id = _build(env, clips)
    worker = spawn_worker("stopped", env, burst=False)
    _wait_for_a_clip(server, build_id, worker)
    server.stop()
    time.sleep(1)  # the worker is waiting for Redis now (for up to 600 s)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(30) == 0, worker.text()
    assert "Traceback" not in worker.text()

    server.start()
    # The stopped worker's job is abandoned (no heartbeats), retried, and done by another.
    other = spawn_worker("other", env)
    assert other.process.wait(300) == 0, other.text()
    _finished(server, build_id)


def test_sigterm_stops_an_idle_worker_during_an_outage(server, spawn_worker):
    env = mofo_env(MOFO_REDIS_URL=server.url, **FAST_WORKER, MOFO_WORKER_REDIS_OUTAGE_S="600")
    worker = spawn_worker("idle", env, burst=False)
    deadline = time.monotonic() + 120
    while "Listening on" not in worker.text():
        assert worker.process.poll() is None and time.monotonic() < deadline, worker.text()
        time.sleep(0.1)
    server.stop()
    time.sleep(2)  # waiting for Redis, between jobs
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(30) == 0, worker.text()
    assert "Traceback" not in worker.text()


def test_a_full_redis_stops_no_worker(server, clips, spawn_worker):
    """Redis refusing writes for a while (full under noeviction): the job that met it runs again
    afterwards, the worker goes on, and the build ends with every clip once."""
    env = mofo_env(MOFO_REDIS_URL=server.url, **FAST_WORKER)
    build_id = _build(env, clips)
    worker = spawn_worker("full", env)
    done_before = _wait_for_a_clip(server, build_id, worker)
    client = redis.Redis.from_url(server.url)
    client.config_set("maxmemory", 1)
    try:
        time.sleep(3)
        assert worker.process.poll() is None, worker.text()
    finally:
        client.config_set("maxmemory", 0)
    assert worker.process.wait(300) == 0, worker.text()
    assert done_before < CLIPS
    _finished(server, build_id)
    assert "refusing writes" in worker.text()
    assert "unhandled exception" not in worker.text()
