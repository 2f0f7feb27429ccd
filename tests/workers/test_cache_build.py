"""A dataset through the box cache, end to end, with real processes: a private ``redis-server``
with append-only persistence, ``mofo cache build``, two ``mofo worker`` processes (one killed
with SIGKILL in the middle of a job), a Redis restart, and export / import into an empty Redis."""

from __future__ import annotations

import gzip
import json
import os
import signal
import time

import pytest
import redis
from rq.job import Job
from rq.worker import Worker

from mofo.shared.keys import BOX_PREFIX
from mofo.shared.params import DecodeLimits, MotionParams
from mofo.shared.pipeline import analyse_clip
from mofo.shared.record import BoxRecord
from testkit.datasets import mofo_env
from testkit.redis_server import start_redis
from tests.workers.conftest import FAST_WORKER, PARAMS_ARGS, mofo

PARAMS = MotionParams(short_side=64, num_frames=6, backend="opencv")


def _records(client: redis.Redis, params: str) -> dict[str, bytes]:
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{BOX_PREFIX}:{params}:*"))
    return dict(zip(keys, client.mget(keys), strict=True)) if keys else {}


def _kill_mid_job(client: redis.Redis, worker, timeout: float = 120) -> str:
    """SIGKILL ``worker`` once it is inside a job with some of its clips done and some not;
    the job's id."""
    key = Worker.redis_worker_namespace_prefix + worker.name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.process.poll() is None, f"worker ended early:\n{worker.text()}"
        found = Worker.find_by_key(key, connection=client)
        job_id = found.get_current_job_id() if found is not None else None
        if job_id:
            progress = Job.fetch(job_id, connection=client).get_meta(refresh=True)
            p = progress.get("progress", {})
            finished = p.get("cached", 0) + p.get("done", 0) + p.get("failed", 0)
            if p.get("done", 0) >= 1 and finished < p.get("total", 0):
                os.kill(worker.process.pid, signal.SIGKILL)
                worker.process.wait(10)
                return job_id
        time.sleep(0.01)
    raise AssertionError(f"never saw {worker.name} mid-job:\n{worker.text()}")


@pytest.mark.slow
def test_build_survives_a_killed_worker_a_redis_restart_and_moves_as_a_file(
    dataset, tmp_path, spawn_worker
):
    server = start_redis(tmp_path / "redis")
    empty = start_redis(tmp_path / "redis2")
    try:
        env = mofo_env(MOFO_REDIS_URL=server.url, **FAST_WORKER)
        client = redis.Redis.from_url(server.url)
        n_good, n_all = len(dataset.good), len(dataset.good) + len(dataset.corrupt)
        assert n_all >= 20

        built = mofo(
            "cache",
            "build",
            str(dataset.root),
            *PARAMS_ARGS,
            "--chunk",
            "3",
            "--retry-after",
            "1,1,1",
            "--json",
            env=env,
        )
        assert built.returncode == 0, built.stderr
        plan = json.loads(built.stdout)
        assert plan["params"] == PARAMS.hash()
        assert (plan["total"], plan["enqueued"], plan["jobs"], plan["cached"]) == (
            n_all,
            n_all,
            -(-n_all // 3),
            0,
        )

        # Two workers; one is killed with some clips of its job done and others not.
        workers = [spawn_worker(n, env) for n in ("wa", "wb")]
        killed_job = _kill_mid_job(client, workers[0])
        # The other drains the queue, including the killed worker's job once it is abandoned.
        assert workers[1].process.wait(180) == 0, workers[1].text()

        # Every good clip cached exactly once, each corrupt clip failed with its reason.
        records = _records(client, PARAMS.hash())
        assert sorted(k.split(":", 3)[3] for k in records) == dataset.good
        for key, value in records.items():
            record = BoxRecord.from_json(value)
            assert key == f"{BOX_PREFIX}:{record.params}:{record.video}"
            assert len(record.frame_indices) == 6
        meta = {
            k.decode(): v.decode()
            for k, v in client.hgetall(f"mofo:build:{plan['build_id']}").items()
        }
        assert int(meta["written"]) == n_good  # one write per clip, though one job ran twice
        state = f"mofo:build:{plan['build_id']}"
        assert client.zcard(f"{state}:done") == n_good
        assert client.hlen(f"{state}:queued") == 0 and client.hlen(f"{state}:attempts") == 0
        failed = {k.decode(): v.decode() for k, v in client.hgetall(f"{state}:failed").items()}
        assert sorted(failed) == dataset.corrupt
        assert failed["bad/truncated.mp4"].startswith("bad/truncated.mp4: ")
        assert (
            "corrupt" in failed["bad/truncated.mp4"] or "truncated" in failed["bad/truncated.mp4"]
        )
        assert "not a readable video" in failed["bad/garbage.mp4"]

        # The killed job ran again (one retry used) and skipped what was done before the kill.
        job = Job.fetch(killed_job, connection=client)
        assert job.get_status() == "finished"
        assert job.retries_left == 2
        assert job.return_value()["cached"] >= 1

        # Records equal the library's, computed here.
        for video in ("real/bikes.mp4", "real/sample.mp4", "synth/s03.mp4"):
            mine = analyse_clip(dataset.root / video, PARAMS, DecodeLimits(), "cpu", name=video)
            stored = BoxRecord.from_json(records[f"{BOX_PREFIX}:{PARAMS.hash()}:{video}"])
            assert stored == mine.record

        # The status says so: done, failed with reasons, nothing pending; exit 1 (failures).
        shown = mofo("cache", "status", "--json", "--failed", env=env)
        assert shown.returncode == 1, shown.stderr
        status = json.loads(shown.stdout)["builds"][0]
        assert (status["done"], status["failed"], status["pending"]) == (n_good, 2, 0)
        assert status["failures"] == failed
        assert status["rate"] > 0 and status["eta_s"] == 0  # clips/s over the last minute
        assert status["written"] == n_good and status["stalled"] == 0
        (counts,) = json.loads(shown.stdout)["queue"].values()  # keys are identifiers
        assert set(counts) == {"queued", "running", "retrying", "failed", "workers"}
        assert counts["queued"] == counts["running"] == 0
        text = mofo("cache", "status", "--failed", env=env).stdout
        assert "jobs queued 0" in text and "waiting to retry" in text  # words for people
        assert "done 20" in text and "failed 2" in text and "pending 0" in text
        assert failed["bad/garbage.mp4"] in text and "clips/s" in text and "ETA" in text
        watched = mofo("cache", "status", "--watch", env=env, timeout=30)  # nothing pending: ends
        assert watched.returncode == 1 and "pending 0" in watched.stdout

        # A second build enqueues nothing.
        again = mofo("cache", "build", str(dataset.root), *PARAMS_ARGS, "--json", env=env)
        second = json.loads(again.stdout)
        assert (second["cached"], second["failed_before"], second["enqueued"]) == (n_good, 2, 0)

        # Redis restarts from its append-only file with every record intact.
        server.stop()
        server.start()
        client = redis.Redis.from_url(server.url)
        assert _records(client, PARAMS.hash()) == records

        # Export in both formats, import each into an empty Redis: identical records.
        for name in ("boxes.parquet", "boxes.jsonl.gz"):
            path = tmp_path / name
            exported = mofo("cache", "export", str(path), env=env)
            assert exported.returncode == 0, exported.stderr
            assert f"exported {n_good} records" in exported.stderr
            empty_client = redis.Redis.from_url(empty.url)
            empty_client.flushall()
            imported = mofo("cache", "import", str(path), "--redis", empty.url, env=env)
            assert imported.returncode == 0, imported.stderr
            assert _records(empty_client, PARAMS.hash()) == records
        lines = gzip.decompress((tmp_path / "boxes.jsonl.gz").read_bytes()).splitlines()
        assert lines == [records[k] for k in sorted(records)]
    finally:
        server.stop()
        empty.stop()
