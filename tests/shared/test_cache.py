"""The box cache: the in-process LRU and the Redis client (a real, private redis-server)."""

from __future__ import annotations

import pytest

from mofo.shared.cache import (
    MGET_CHUNK,
    CacheUnavailable,
    MemoryBoxCache,
    RedisBoxCache,
    box_key,
)
from mofo.shared.params import MotionParams
from mofo.shared.record import BoxRecord
from testkit.redis_server import start_redis


def _record(video: str, params: str = "0123456789abcdef", x: int = 1) -> BoxRecord:
    return BoxRecord(
        video=video,
        params=params,
        width=64,
        height=48,
        fps=25.0,
        frame_indices=[0, 1],
        frames=[[x, 2, 30, 40], [x + 1, 2, 31, 40]],
        clip_box=[x, 2, 31, 40],
        fallback=False,
    )


def test_key_carries_prefix_params_and_video():
    assert box_key("0123456789abcdef", "clips/a.mp4") == "mofo:box:0123456789abcdef:clips/a.mp4"


def test_memory_cache_round_trip_settings_apart_and_lru():
    cache = MemoryBoxCache(max_entries=2)
    a, b = _record("a"), _record("b")
    cache.put(a)
    cache.put(b)
    assert cache.get("a", a.params) == a
    assert cache.get("a", "fedcba9876543210") is None  # other settings never mix
    cache.put(_record("c"))  # evicts b: a was used more recently
    assert cache.get_many(["a", "b", "c"], a.params) == [a, None, _record("c")]
    assert len(cache) == 2
    with pytest.raises(ValueError, match="max_entries must be >= 1, got 0"):
        MemoryBoxCache(0)


@pytest.fixture(scope="module")
def redis_cache(tmp_path_factory):
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield RedisBoxCache.from_url(server.url), server
    server.stop()


def test_redis_round_trip_many_and_missing(redis_cache):
    cache, _ = redis_cache
    params = MotionParams().hash()
    records = [_record(f"v{k}", params, x=k % 7) for k in range(MGET_CHUNK + 50)]
    cache.put_many(records)
    cache.put(_record("single", params))
    ids = [r.video for r in records] + ["missing", "single"]
    got = cache.get_many(ids, params)  # two MGET chunks
    assert got[: len(records)] == records
    assert got[-2] is None and got[-1] == _record("single", params)
    assert cache.get("v3", "ffffffffffffffff") is None
    raw = cache.redis.get(box_key(params, "v3"))
    assert BoxRecord.from_json(raw) == records[3]  # the value is the record's compact JSON
    cache.ping()


def test_redis_unreachable_is_a_clear_error(redis_cache):
    _, server = redis_cache
    cache = RedisBoxCache.from_url(f"redis://:secret@127.0.0.1:{server.port + 1}/0", timeout_s=0.5)
    with pytest.raises(CacheUnavailable, match=r"box cache at redis://:\*\*\*@127\.0\.0\.1:\d+/0"):
        cache.get("a", "0123456789abcdef")
    with pytest.raises(CacheUnavailable):
        cache.ping()
