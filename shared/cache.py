"""The box cache: one record per (settings, video), read by the API, filled by the workers,
read in batches by training.

Keys are ``{prefix}:{params_hash}:{video_id}`` so two settings never mix; values are the record's
compact JSON. :class:`RedisBoxCache` is the shared one; :class:`MemoryBoxCache` is the embedded
default of a service started without Redis (bounded, least recently used goes first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from shared.errors import MofoError
from shared.record import BoxRecord

KEY_PREFIX = "mofo:box"
MGET_CHUNK = 1000  # keys per MGET: large enough to amortise round trips, small enough to not block


class CacheUnavailable(MofoError):
    """The cache's Redis server cannot be reached."""


class QueueUnavailable(CacheUnavailable):
    """The job queue's Redis server cannot be reached."""


@contextmanager
def unavailable_as(error: type[CacheUnavailable], what: str, url: str) -> Iterator[None]:
    """Turn Redis connection failures inside the block into ``error`` naming ``what``."""
    import redis

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise error(f"{what} at {safe_url(url)} unreachable: {exc}") from None


def box_key(params_hash: str, video_id: str, prefix: str = KEY_PREFIX) -> str:
    return f"{prefix}:{params_hash}:{video_id}"


class BoxCache(Protocol):
    def get(self, video_id: str, params_hash: str) -> BoxRecord | None: ...

    def get_many(self, video_ids: Sequence[str], params_hash: str) -> list[BoxRecord | None]: ...

    def put(self, record: BoxRecord) -> None: ...

    def ping(self) -> None:
        """Raise :class:`CacheUnavailable` when the cache cannot be used."""


class MemoryBoxCache:
    """In-process cache for the embedded service: at most ``max_entries`` records."""

    def __init__(self, max_entries: int = 10_000):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, video_id: str, params_hash: str) -> BoxRecord | None:
        return self.get_many([video_id], params_hash)[0]

    def get_many(self, video_ids: Sequence[str], params_hash: str) -> list[BoxRecord | None]:
        out: list[BoxRecord | None] = []
        with self._lock:
            for video_id in video_ids:
                key = box_key(params_hash, video_id)
                value = self._items.get(key)
                if value is not None:
                    self._items.move_to_end(key)
                out.append(None if value is None else BoxRecord.from_json(value))
        return out

    def put(self, record: BoxRecord) -> None:
        key = box_key(record.params, record.video)
        with self._lock:
            self._items[key] = record.to_json()
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def ping(self) -> None:
        return None


class RedisBoxCache:
    """The shared cache in Redis. Reads of many clips go out as chunked MGETs."""

    def __init__(self, client, url: str, prefix: str = KEY_PREFIX):
        """Over an existing ``redis.Redis`` client (e.g. an RQ job's connection); ``url`` names
        the server in messages (its password is masked)."""
        self.redis = client
        self.url = url
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = KEY_PREFIX, timeout_s: float = 5.0) -> RedisBoxCache:
        import redis  # only services that use Redis need the client

        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        return cls(client, url, prefix)

    def _call(self, fn, *args):
        with unavailable_as(CacheUnavailable, "box cache", self.url):
            return fn(*args)

    def get(self, video_id: str, params_hash: str) -> BoxRecord | None:
        return self.get_many([video_id], params_hash)[0]

    def get_many(self, video_ids: Sequence[str], params_hash: str) -> list[BoxRecord | None]:
        keys = [box_key(params_hash, v, self.prefix) for v in video_ids]
        values: list[bytes | None] = []
        for start in range(0, len(keys), MGET_CHUNK):
            values.extend(self._call(self.redis.mget, keys[start : start + MGET_CHUNK]))
        return [None if v is None else BoxRecord.from_json(v) for v in values]

    def put(self, record: BoxRecord) -> None:
        self._call(
            self.redis.set, box_key(record.params, record.video, self.prefix), record.to_json()
        )

    def put_many(self, records: Iterable[BoxRecord]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for record in records:
            pipe.set(box_key(record.params, record.video, self.prefix), record.to_json())
        self._call(pipe.execute)

    def ping(self) -> None:
        self._call(self.redis.ping)


def safe_url(url: str) -> str:
    """A Redis URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
