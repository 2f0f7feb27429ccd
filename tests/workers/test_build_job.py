"""The build job in this process, over a private ``redis-server``: the clips of one job share
flow calls, and a clip that keeps killing its worker is failed alone."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis

from mofo.shared.batcher import FlowBatcher
from mofo.shared.keys import box_key
from mofo.shared.params import FlowParams, MotionParams
from mofo.shared.pipeline import analyse_clip
from mofo.shared.record import BoxRecord
from mofo.shared.settings import Settings
from mofo.workers.build import MAX_ATTEMPTS, BuildState
from testkit.redis_server import start_redis
from tests.workers.conftest import run_job, small_clips

PARAMS = MotionParams(short_side=64, num_frames=6, backend="opencv")


@pytest.fixture
def server(tmp_path):
    srv = start_redis(tmp_path / "redis")
    yield srv
    srv.stop()


def test_the_clips_of_a_job_share_flow_calls(server, tmp_path):
    """Four clips of one working size, four at once: the torch backend gets batches holding the
    pairs of several clips, and each record equals the clip boxed alone."""
    names = small_clips(tmp_path, 4)  # all 96 x 64
    quick = FlowParams(scales=2, warps=2, inner_iterations=10, outer_iterations=2)
    params = MotionParams(short_side=32, num_frames=4, backend="torch", flow=quick)
    batches: list[int] = []
    settings = Settings(redis_url=server.url, device="cpu", worker_clip_threads=4)
    build = BuildState.for_dataset(redis.Redis.from_url(server.url), params.hash(), "batching")
    counts = run_job(
        settings,
        build.id,
        names,
        params,
        tmp_path,
        batcher=FlowBatcher(16, 0.2, on_batch=lambda pairs, waits: batches.append(pairs)),
    )
    assert counts == {"total": 4, "cached": 0, "done": 4, "failed": 0}
    assert sum(batches) == 4 * 4 and max(batches) > 4  # some call held pairs of several clips
    client = redis.Redis.from_url(server.url)
    for name in names:
        stored = BoxRecord.from_json(client.get(box_key(params.hash(), name)))
        assert stored == analyse_clip(tmp_path / name, params, name=name).record


def test_a_clip_that_keeps_killing_its_worker_fails_alone(server, tmp_path):
    """A clip whose earlier starts never ended (its worker died each time) is failed with that
    reason on the next start, and the rest of its job is boxed."""
    names = small_clips(tmp_path, 2)
    client = redis.Redis.from_url(server.url)
    state = BuildState.for_dataset(client, PARAMS.hash(), "crash")
    client.hset(state.attempts, "c1.mp4", MAX_ATTEMPTS)  # three starts, no outcome
    settings = Settings(redis_url=server.url, device="cpu")
    counts = run_job(settings, state.id, names, PARAMS, tmp_path)
    assert counts == {"total": 2, "cached": 0, "done": 1, "failed": 1}
    assert client.exists(box_key(PARAMS.hash(), "c0.mp4"))
    assert not client.exists(box_key(PARAMS.hash(), "c1.mp4"))
    reason = client.hget(state.failed, "c1.mp4").decode()
    assert reason.startswith("c1.mp4: started 3 times without an outcome")
    assert client.hlen(state.attempts) == 0
    assert np.isclose(client.zscore(state.done, "c0.mp4"), time.time(), atol=60)
