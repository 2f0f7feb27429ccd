"""Every Redis key MOFO writes, and how long each kind lives, named in one place.

The box cache's Redis (persistent, ``appendonly``):

- ``mofo:box:{params_hash}:{video}`` (string): a clip's box record as JSON, written once, kept
  for ever (:mod:`mofo.shared.cache`).
- ``mofo:build:{params_hash}:{name}`` (hash) and its ``:done`` / ``:failed`` / ``:queued`` /
  ``:attempts`` companions: a cache build's state; ``mofo:builds`` (set) lists the builds
  (:mod:`mofo.workers.build`). Kept until deleted.
- ``mofo:ready:probe`` (string): the readiness check's write test, expiring after
  :data:`PROBE_TTL_S`.

The job queue's Redis (the cache's unless ``MOFO_QUEUE_REDIS_URL`` names another):

- ``mofo:upload:{video}`` (string) and its ``:jobs`` set: an uploaded clip's bytes and the jobs
  that need them, expiring with those jobs (the ``job_ttl_s`` setting); ``mofo:uploads`` (sorted
  set) and ``mofo:uploads:bytes`` (hash) count them against the upload quota
  (:mod:`mofo.shared.uploads`).
- ``mofo:job:{id}:cancel`` (string): a running API job's client asked to cancel it; the worker
  stops at its next frame pairs. Expires with the job (``job_ttl_s``).
- RQ's own ``rq:*`` keys: jobs of the API queue are kept ``job_ttl_s`` after they end; a cache
  build's jobs :data:`BUILD_RESULT_TTL_S` when done, :data:`BUILD_FAILURE_TTL_S` when failed.
"""

from __future__ import annotations

BOX_PREFIX = "mofo:box"
BUILD_PREFIX = "mofo:build"
BUILDS = "mofo:builds"  # set of "{params_hash}:{name}"
READY_PROBE = "mofo:ready:probe"
UPLOAD_PREFIX = "mofo:upload:"
UPLOADS_INDEX = "mofo:uploads"
UPLOADS_BYTES = "mofo:uploads:bytes"
JOB_PREFIX = "mofo:job:"

PROBE_TTL_S = 60
BUILD_RESULT_TTL_S = 3600  # a job hash per chunk of a build: an hour, not RQ's default day
BUILD_FAILURE_TTL_S = 30 * 24 * 3600  # failed build jobs stay for `mofo cache status --failed`


def box_key(params_hash: str, video_id: str, prefix: str = BOX_PREFIX) -> str:
    """The key of a clip's record under one setting of the parameters."""
    return f"{prefix}:{params_hash}:{video_id}"


def upload_key(video_id: str) -> str:
    """The key of an uploaded clip's bytes while jobs wait for them."""
    return UPLOAD_PREFIX + video_id


def build_key(build_id: str) -> str:
    """The hash of a build ``{params_hash}:{name}``; its companions add ``:done`` and so on."""
    return f"{BUILD_PREFIX}:{build_id}"


def job_cancel_key(job_id: str) -> str:
    """Set when a running API job is to stop (its worker polls it)."""
    return f"{JOB_PREFIX}{job_id}:cancel"
