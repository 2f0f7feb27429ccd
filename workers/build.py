"""Cache builds: a dataset's clips cut into RQ jobs, and the build's state in the cache's Redis.

A build is named ``{params_hash}:{name}``. Its state lives beside the box records (the same,
persistent Redis), under ``mofo:build:{params_hash}:{name}``:

- ``…`` (hash): what was built: source, kind, root, settings, total, times, job counters;
- ``…:done`` (sorted set): clips with a record, scored by when (0: cached before this build);
- ``…:failed`` (hash): clip → why it failed (corrupt, too long, missing, ...);
- ``…:queued`` (hash): clip → the job it waits in, so a second build skips work in flight;
- ``…:attempts`` (hash): clip → times a worker started it without finishing, so a clip that kills
  its worker every time is failed with that reason instead of taking its job down for ever.

A clip's record and its state change together in one Lua script, so a record is written exactly
once (``SET NX``) and counted once, whatever worker died where.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mofo.shared.jobs import BUILD_FUNCTION, BuildChunk
from mofo.shared.keys import (
    BOX_PREFIX,
    BUILD_FAILURE_TTL_S,
    BUILD_RESULT_TTL_S,
    BUILDS,
    box_key,
    build_key,
)
from mofo.shared.params import DecodeLimits, MotionParams
from mofo.shared.record import BoxRecord
from mofo.shared.sources import ClipItem, Dataset

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
PIPELINE_CHUNK = 1000
MAX_ATTEMPTS = 3  # starts of one clip without an outcome before it is failed as a crasher
ALIVE = frozenset({"queued", "started", "scheduled", "deferred", "created", "ready_to_enqueue"})

# KEYS: record key, done, failed, queued, attempts, meta. ARGV: record JSON, video, time.
_STORE = """
local written = redis.call('SET', KEYS[1], ARGV[1], 'NX')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
redis.call('HDEL', KEYS[5], ARGV[2])
if written then
  redis.call('HINCRBY', KEYS[6], 'written', 1)
  return 1
end
redis.call('HINCRBY', KEYS[6], 'found_cached', 1)
return 0
"""


def safe_name(name: str) -> str:
    """A build name from any text: runs of other characters become ``-``."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:100]
    return cleaned or "dataset"


class BuildState:
    """One build's keys, over a ``redis.Redis`` client of the cache's server."""

    def __init__(self, client, build_id: str):
        params_hash, _, name = build_id.partition(":")
        if not params_hash or not NAME_PATTERN.match(name):
            raise ValueError(f"bad build id {build_id!r}: expected PARAMS_HASH:NAME")
        self.redis = client
        self.id = build_id
        self.params_hash = params_hash
        self.name = name
        self.meta = build_key(build_id)
        self.done = f"{self.meta}:done"
        self.failed = f"{self.meta}:failed"
        self.queued = f"{self.meta}:queued"
        self.attempts = f"{self.meta}:attempts"
        self._store = client.register_script(_STORE)

    @classmethod
    def for_dataset(cls, client, params_hash: str, name: str) -> BuildState:
        return cls(client, f"{params_hash}:{name}")

    def cached(self, videos: Sequence[str], prefix: str = BOX_PREFIX) -> list[bool]:
        """Which clips already have a record for this build's settings (pipelined EXISTS)."""
        out: list[bool] = []
        for start in range(0, len(videos), PIPELINE_CHUNK):
            pipe = self.redis.pipeline(transaction=False)
            for video in videos[start : start + PIPELINE_CHUNK]:
                pipe.exists(box_key(self.params_hash, video, prefix))
            out.extend(bool(n) for n in pipe.execute())
        return out

    def start_attempt(self, video: str) -> int:
        """Count a start of ``video``; the count since its last outcome."""
        return int(self.redis.hincrby(self.attempts, video, 1))

    def store(self, record: BoxRecord, prefix: str = BOX_PREFIX) -> bool:
        """Write a clip's record unless one exists, and mark it done; True when written."""
        keys = [
            box_key(record.params, record.video, prefix),
            self.done,
            self.failed,
            self.queued,
            self.attempts,
            self.meta,
        ]
        return bool(self._store(keys=keys, args=[record.to_json(), record.video, time.time()]))

    def mark_cached(self, videos: Sequence[str]) -> None:
        """Clips found with a record (written by another build or the API): done."""
        if not videos:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.done, {v: time.time() for v in videos}, nx=True)
        for key in (self.failed, self.queued, self.attempts):
            pipe.hdel(key, *videos)
        pipe.execute()

    def fail(self, video: str, reason: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.failed, video, reason)
        pipe.hdel(self.queued, video)
        pipe.hdel(self.attempts, video)
        pipe.execute()


@dataclass
class BuildPlan:
    """What ``mofo cache build`` found and did."""

    build_id: str
    total: int
    cached: int = 0
    failed_before: int = 0  # skipped: failed in an earlier build (see --retry-failed)
    in_flight: int = 0  # skipped: already waiting in a live job
    enqueued: int = 0
    jobs: int = 0
    job_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out.pop("job_ids")
        return out


def enqueue_build(
    cache_redis,
    queue,
    dataset: Dataset,
    params: MotionParams,
    limits: DecodeLimits,
    name: str | None = None,
    chunk: int = 16,
    retry_failed: bool = False,
    retry_after_s: Sequence[int] = (10, 60, 300),
    job_timeout_s: int | None = None,
    dry_run: bool = False,
) -> BuildPlan:
    """Enqueue the clips of ``dataset`` that have no record yet, ``chunk`` clips per job.

    Idempotent: clips with a record are only marked done, clips waiting in a live job are left
    to it, clips that failed before are skipped unless ``retry_failed``. Each job retries up to
    ``len(retry_after_s)`` times after those delays (an error outside the clips, a worker killed
    mid-job). ``cache_redis`` holds records and build state, ``queue`` is the RQ queue.
    """
    from rq import Queue, Retry
    from rq.job import Job

    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    name = safe_name(name or dataset.name)
    params_hash = params.hash()
    state = BuildState.for_dataset(cache_redis, params_hash, name)
    items = dataset.items
    plan = BuildPlan(build_id=state.id, total=len(items))

    videos = [item.video for item in items]
    cached = state.cached(videos)
    failed = set() if retry_failed else {v.decode() for v in cache_redis.hkeys(state.failed)}
    queued = {k.decode(): v.decode() for k, v in cache_redis.hgetall(state.queued).items()}
    alive = _live_jobs(set(queued.values()), queue.connection, Job)

    todo: list[ClipItem] = []
    newly_cached: list[str] = []
    for item, is_cached in zip(items, cached, strict=True):
        if is_cached:
            plan.cached += 1
            newly_cached.append(item.video)
        elif item.video in failed:
            plan.failed_before += 1
        elif queued.get(item.video) in alive:
            plan.in_flight += 1
        else:
            todo.append(item)
    if dry_run:
        plan.enqueued = len(todo)
        plan.jobs = -(-len(todo) // chunk)
        return plan

    now = time.time()
    pipe = cache_redis.pipeline(transaction=False)
    pipe.hsetnx(state.meta, "created_at", now)
    pipe.hset(
        state.meta,
        mapping={
            "name": name,
            "kind": dataset.kind,
            "source": str(dataset.source),
            "root": str(dataset.root),
            "params": json.dumps(params.to_dict(), sort_keys=True),
            "total": len(items),
            "queue": queue.name,
            "updated_at": now,
        },
    )
    pipe.sadd(BUILDS, state.id)
    for start in range(0, len(newly_cached), PIPELINE_CHUNK):
        # Records already there: done, timed 0 so they do not count towards this build's rate.
        pipe.zadd(state.done, {v: 0 for v in newly_cached[start : start + PIPELINE_CHUNK]}, nx=True)
    if retry_failed:
        pipe.delete(state.failed)
    pipe.execute()

    timeout = job_timeout_s or max(600, 120 * chunk)
    retry = Retry(max=len(retry_after_s), interval=list(retry_after_s)) if retry_after_s else None
    for start in range(0, len(todo), PIPELINE_CHUNK * chunk):
        batch = todo[start : start + PIPELINE_CHUNK * chunk]
        job_datas = []
        assignments: dict[str, str] = {}
        for k in range(0, len(batch), chunk):
            part = batch[k : k + chunk]
            job_id = uuid.uuid4().hex
            job_datas.append(
                Queue.prepare_data(
                    BUILD_FUNCTION,
                    args=BuildChunk(
                        state.id, tuple(i.to_job() for i in part), params, limits, str(dataset.root)
                    ).args(),
                    timeout=timeout,
                    result_ttl=BUILD_RESULT_TTL_S,
                    failure_ttl=BUILD_FAILURE_TTL_S,
                    description=f"{name}: {len(part)} clips from {part[0].video}",
                    job_id=job_id,
                    retry=retry,
                )
            )
            assignments.update({i.video: job_id for i in part})
        # Record where each clip waits before its job can start, so a status never loses it.
        cache_redis.hset(state.queued, mapping=assignments)
        jobs = queue.enqueue_many(job_datas)
        plan.job_ids.extend(j.id for j in jobs)
        plan.enqueued += len(batch)
    plan.jobs = len(plan.job_ids)
    cache_redis.hincrby(state.meta, "jobs", plan.jobs)
    return plan


def _live_jobs(job_ids: Iterable[str], connection, job_class) -> set[str]:
    """The ids among ``job_ids`` of jobs still queued, running or waiting for a retry."""
    ids = list(job_ids)
    alive: set[str] = set()
    for start in range(0, len(ids), PIPELINE_CHUNK):
        part = ids[start : start + PIPELINE_CHUNK]
        pipe = connection.pipeline(transaction=False)
        for job_id in part:
            pipe.hget(job_class.key_for(job_id), "status")
        for job_id, status in zip(part, pipe.execute(), strict=True):
            if status is not None and status.decode() in ALIVE:
                alive.add(job_id)
    return alive


@dataclass
class BuildStatus:
    """Where a build stands: counts, the recent rate, and (when asked) each failure's reason."""

    build_id: str
    name: str
    params: str
    kind: str
    source: str
    total: int
    done: int
    failed: int
    queued: int
    written: int
    rate: float  # clips per second over the last minute (or since the first clip)
    eta_s: float | None
    created_at: float
    updated_at: float
    stalled: int = 0  # queued clips whose job is gone or failed for good (build again)
    failures: dict[str, str] | None = None
    failed_jobs: dict[str, str] | None = None  # job id → its error, for stalled clips

    @property
    def pending(self) -> int:
        return max(0, self.total - self.done - self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "pending": self.pending}


RATE_WINDOW_S = 60.0


def build_status(
    cache_redis, build_id: str, failures: bool = False, queue_connection=None
) -> BuildStatus | None:
    """The status of one build, or None when there is no such build.

    With ``queue_connection`` (the queue's Redis), queued clips whose job is no longer alive
    are counted as stalled, and with ``failures`` their jobs' errors are listed.
    """
    state = BuildState(cache_redis, build_id)
    now = time.time()
    pipe = cache_redis.pipeline(transaction=False)
    pipe.hgetall(state.meta)
    pipe.zcard(state.done)
    pipe.hlen(state.failed)
    pipe.hlen(state.queued)
    pipe.zrangebyscore(state.done, "(0", "+inf", start=0, num=1, withscores=True)
    pipe.zcount(state.done, now - RATE_WINDOW_S, "+inf")
    meta_raw, done, failed, queued, first, recent = pipe.execute()
    if not meta_raw:
        return None
    meta = {k.decode(): v.decode() for k, v in meta_raw.items()}
    total = int(meta.get("total", 0))
    window = min(RATE_WINDOW_S, now - first[0][1]) if first else 0.0
    rate = recent / window if window > 1.0 else 0.0
    pending = max(0, total - done - failed)
    status = BuildStatus(
        build_id=build_id,
        name=meta.get("name", state.name),
        params=state.params_hash,
        kind=meta.get("kind", "?"),
        source=meta.get("source", "?"),
        total=total,
        done=done,
        failed=failed,
        queued=queued,
        written=int(meta.get("written", 0)),
        rate=rate,
        eta_s=pending / rate if rate > 0 else (0.0 if pending == 0 else None),
        created_at=float(meta.get("created_at", 0)),
        updated_at=float(meta.get("updated_at", 0)),
    )
    if failures:
        status.failures = {
            k.decode(): v.decode() for k, v in sorted(cache_redis.hgetall(state.failed).items())
        }
    if queue_connection is not None and queued:
        from rq.job import Job

        waiting = [v.decode() for v in cache_redis.hvals(state.queued)]
        alive = _live_jobs(set(waiting), queue_connection, Job)
        status.stalled = sum(1 for job_id in waiting if job_id not in alive)
        if failures:
            status.failed_jobs = _job_errors(
                sorted({j for j in waiting if j not in alive}), queue_connection, Job
            )
    return status


def _job_errors(job_ids: Sequence[str], connection, job_class) -> dict[str, str]:
    """The last line of each job's error (or why it is gone)."""
    errors = {}
    for job_id, job in zip(job_ids, job_class.fetch_many(job_ids, connection), strict=True):
        if job is None:
            errors[job_id] = "the job is gone (expired or deleted)"
            continue
        latest = job.latest_result()
        text = (latest.exc_string if latest is not None else None) or str(job.get_status())
        errors[job_id] = text.strip().splitlines()[-1]
    return errors


def list_builds(cache_redis) -> list[str]:
    return sorted(b.decode() for b in cache_redis.smembers(BUILDS))
