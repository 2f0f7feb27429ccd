"""The box cache: one record per (settings, video), read by the API, filled by the workers,
read in batches by training.

Keys are ``mofo:box:{params_hash}:{video_id}`` (:mod:`mofo.shared.keys`) so two settings never
mix; values are the record's compact JSON. :class:`RedisBoxCache` is the shared one;
:class:`MemoryBoxCache` is the embedded default of a service started without Redis (bounded,
least recently used goes first).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from mofo.shared.errors import MofoError
from mofo.shared.keys import BOX_PREFIX, PROBE_TTL_S, READY_PROBE, box_key
from mofo.shared.record import BoxRecord

log = logging.getLogger(__name__)

UPLOAD_ID = re.compile(r"^sha256-[0-9a-f]{32}$")  # the id of an uploaded clip (its content)

# A record is written once: SET NX, else the stored record comes back to be compared.
_PUT_NX = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return false end
return redis.call('GET', KEYS[1])
"""
MGET_CHUNK = 1000  # keys per MGET: large enough to amortise round trips, small enough to not block


class CacheUnavailable(MofoError):
    """The cache's Redis server cannot be reached."""


class CacheFull(CacheUnavailable):
    """The cache's Redis server answers but refuses writes: full under ``noeviction``, a read-only
    replica, or persistence failing (``MISCONF``)."""


class QueueUnavailable(CacheUnavailable):
    """The job queue's Redis server cannot be reached."""


class QueueFull(QueueUnavailable):
    """The job queue's Redis server answers but refuses writes (see :class:`CacheFull`)."""


def refusal(exc: Exception) -> str | None:
    """Why a Redis error means the server takes no writes now (and may again later), or None."""
    import redis

    text = str(exc)
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or text.startswith("OOM"):
        return "it is full (used memory over its maxmemory, and it evicts nothing)"
    if isinstance(exc, redis.exceptions.ReadOnlyError) or text.startswith("READONLY"):
        return "it is a read-only replica"
    if text.startswith("MISCONF"):
        return "it cannot save to disk (MISCONF)"
    return None


@contextmanager
def unavailable_as(error: type[CacheUnavailable], what: str, url: str) -> Iterator[None]:
    """Turn Redis connection failures inside the block into ``error`` naming ``what``, and
    refused writes (a full Redis) into its ``…Full`` kind."""
    import redis

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise error(f"{what} at {safe_url(url)} unreachable: {exc}") from None
    except redis.ResponseError as exc:
        why = refusal(exc)
        if why is None:
            raise
        full = QueueFull if issubclass(error, QueueUnavailable) else CacheFull
        raise full(f"{what} at {safe_url(url)} refuses writes: {why}") from None


class BoxCache(Protocol):
    def get(self, video_id: str, params_hash: str) -> BoxRecord | None: ...

    def get_many(self, video_ids: Sequence[str], params_hash: str) -> list[BoxRecord | None]: ...

    def put(self, record: BoxRecord) -> BoxRecord:
        """Store ``record`` unless one is stored for its clip and settings; the stored one."""
        ...

    def replace(self, record: BoxRecord) -> None:
        """Store ``record`` over any stored one (an explicit recompute: ``refresh``)."""
        ...

    def ping(self) -> None:
        """Raise :class:`CacheUnavailable` when the cache cannot be read or written."""


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

    def put(self, record: BoxRecord) -> BoxRecord:
        key = box_key(record.params, record.video)
        with self._lock:
            stored = self._items.get(key)
            if stored is None:
                self._store(key, record.to_json())
                return record
        return _kept(BoxRecord.from_json(stored), record)

    def replace(self, record: BoxRecord) -> None:
        with self._lock:
            self._store(box_key(record.params, record.video), record.to_json())

    def _store(self, key: str, value: str) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def ping(self) -> None:
        return None


class RedisBoxCache:
    """The shared cache in Redis. Reads of many clips go out as chunked MGETs."""

    def __init__(self, client, url: str, prefix: str = BOX_PREFIX):
        """Over an existing ``redis.Redis`` client (e.g. an RQ job's connection); ``url`` names
        the server in messages (its password is masked)."""
        self.redis = client
        self.url = url
        self.prefix = prefix
        self._script = None

    @classmethod
    def from_url(cls, url: str, prefix: str = BOX_PREFIX, timeout_s: float = 5.0) -> RedisBoxCache:
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

    def put(self, record: BoxRecord) -> BoxRecord:
        key = box_key(record.params, record.video, self.prefix)
        stored = self._call(self._put_nx, [key], [record.to_json()])
        return record if stored is None else _kept(BoxRecord.from_json(stored), record)

    def replace(self, record: BoxRecord) -> None:
        key = box_key(record.params, record.video, self.prefix)
        self._call(self.redis.set, key, record.to_json())

    def put_many(self, records: Iterable[BoxRecord]) -> None:
        """Store the records not stored yet (a stored one stays, as with :meth:`put`)."""
        pipe = self.redis.pipeline(transaction=False)
        for record in records:
            pipe.set(box_key(record.params, record.video, self.prefix), record.to_json(), nx=True)
        self._call(pipe.execute)

    def ping(self) -> None:
        """Reachable and taking writes: a full Redis (``noeviction``) still answers PING."""
        self._call(self.redis.set, READY_PROBE, b"1", PROBE_TTL_S)

    @property
    def _put_nx(self):
        if self._script is None:
            self._script = self.redis.register_script(_PUT_NX)
        return lambda keys, args: self._script(keys=keys, args=args)


def is_upload_id(video_id: str) -> bool:
    """Whether ``video_id`` is in the uploads' id space (paths and dataset ids must not be)."""
    return UPLOAD_ID.match(video_id) is not None


def _kept(stored: BoxRecord, computed: BoxRecord) -> BoxRecord:
    """The stored record stays; a recompute that differs from it is logged, not written."""
    if stored != computed:
        log.warning(
            "kept the stored record of %s (settings %s); a new computation differs from it "
            "(refresh=true replaces it)",
            computed.video,
            computed.params,
        )
    return stored


def safe_url(url: str) -> str:
    """A Redis URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
