"""Job uploads waiting in Redis for a worker: stored once per content, shared by the jobs that
name it, counted against a quota, deleted when the last of those jobs is done with it.

Keys, beside the job queue (:mod:`mofo.shared.keys`; one uploaded clip is
``mofo:upload:<video id>``):

- ``mofo:upload:<id>`` (string): the clip's bytes, expiring with the jobs (``ttl_s``);
- ``mofo:upload:<id>:jobs`` (set): the jobs that still need it (its reference count);
- ``mofo:uploads`` (sorted set): every upload, scored by when it expires, and
  ``mofo:uploads:bytes`` (hash): each upload's size; together they make the quota.

A second job of the same clip adds itself to the set and extends the expiry; the bytes are not
sent again. Claims and releases are Lua scripts, so the count, the bytes and the sets change
together whatever runs at the same time. An upload whose jobs all died expires with its TTL and
leaves the quota at the next claim.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import IO

from mofo.shared.keys import UPLOADS_BYTES, UPLOADS_INDEX, upload_key

WRITE_CHUNK = 8 * 1024**2  # bytes per APPEND: the server never holds a whole upload in memory

# KEYS: upload, its jobs, index, sizes. ARGV: job, size, ttl, now, max count, max bytes.
# Returns 1 (stored: shared), 0 (send the bytes: new, or another job is still sending them),
# -1 (count full), -2 (bytes full).
_CLAIM = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
for _, key in ipairs(expired) do
  redis.call('ZREM', KEYS[3], key)
  redis.call('HDEL', KEYS[4], key)
  redis.call('DEL', key, key .. ':jobs')
end
local ttl = tonumber(ARGV[3])
local until_ = tonumber(ARGV[4]) + ttl
if redis.call('ZSCORE', KEYS[3], KEYS[1]) then
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('ZADD', KEYS[3], until_, KEYS[1])
  return redis.call('EXISTS', KEYS[1])
end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return -1 end
local total = 0
for _, size in ipairs(redis.call('HVALS', KEYS[4])) do total = total + tonumber(size) end
if total + tonumber(ARGV[2]) > tonumber(ARGV[6]) then return -2 end
redis.call('ZADD', KEYS[3], until_, KEYS[1])
redis.call('HSET', KEYS[4], KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ttl)
return 0
"""

# KEYS: upload, its jobs, index, sizes. ARGV: job. Returns 1 when the upload was deleted.
_RELEASE = """
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], KEYS[1])
redis.call('HDEL', KEYS[4], KEYS[1])
return 1
"""


class UploadQuotaFull(Exception):
    """No room for one more job upload now; ``what`` says which limit (clips or bytes)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class UploadQuota:
    max_uploads: int
    max_bytes: int


class JobUploads:
    """The job uploads in one Redis (the job queue's), over a ``redis.Redis`` client."""

    def __init__(self, client, quota: UploadQuota, ttl_s: int):
        self.redis = client
        self.quota = quota
        self.ttl_s = ttl_s
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def _keys(key: str) -> list[str]:
        return [key, f"{key}:jobs", UPLOADS_INDEX, UPLOADS_BYTES]

    def store(self, video_id: str, file: IO[bytes], size: int, job_id: str) -> str:
        """Hold ``file`` for ``job_id`` (sent only if no other job holds the same clip); its key.

        Raises :class:`UploadQuotaFull` when the quota has no room for it."""
        key = upload_key(video_id)
        args = [job_id, size, self.ttl_s, time.time(), self.quota.max_uploads, self.quota.max_bytes]
        claimed = int(self._claim(keys=self._keys(key), args=args))
        if claimed == -1:
            raise UploadQuotaFull(f"{self.quota.max_uploads} job uploads are waiting")
        if claimed == -2:
            raise UploadQuotaFull(f"job uploads waiting would pass {self.quota.max_bytes} bytes")
        if claimed == 0:
            try:
                self._send(key, file, job_id)
            except BaseException:
                self.release(key, job_id)
                raise
        return key

    def _send(self, key: str, file: IO[bytes], job_id: str) -> None:
        """The bytes in chunks to a key of this job's, renamed whole: a reader sees all or none."""
        partial = f"{key}:partial:{job_id}"
        file.seek(0)
        self.redis.delete(partial)
        while chunk := file.read(WRITE_CHUNK):
            pipe = self.redis.pipeline(transaction=False)
            pipe.append(partial, chunk)
            pipe.expire(partial, self.ttl_s)
            pipe.execute()
        self.redis.rename(partial, key)

    def release(self, key: str, job_id: str) -> bool:
        """``job_id`` no longer needs the upload; True when it was the last (and it is gone)."""
        return bool(self._release(keys=self._keys(key), args=[job_id]))

    def usage(self) -> tuple[int, int]:
        """(uploads, bytes) held now, expired ones included until the next claim drops them."""
        sizes = self.redis.hvals(UPLOADS_BYTES)
        return len(sizes), sum(int(s) for s in sizes)
