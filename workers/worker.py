"""``mofo worker``: an RQ worker that keeps flow (and CUDA) in one long-lived process.

RQ's default worker forks a child per job; a CUDA context does not survive a fork, and building
one per job would cost seconds. :class:`MofoWorker` runs jobs in its own process instead, with
what that loses put back:

- heartbeats while a job runs (a thread), so a worker killed mid-job (SIGKILL, OOM, a lost host)
  is noticed after ``abandon_s`` and its job runs again on another worker;
- retries with backoff without RQ's scheduler process (another fork): due retries are moved to
  the queue by whichever worker does the periodic maintenance;
- ``--burst`` drains the work: it ends only when the queues are empty and no job is running
  elsewhere or waiting for a retry, so a job abandoned by a killed worker is not left behind.

The worker's :class:`WorkerContext` holds the device, one :class:`FlowBatcher` (several clips of a
job run at once and their frame pairs share flow calls) and the box cache.

A Redis outage is waited out: every Redis call of the worker (queue and cache) reconnects with
backoff for up to ``worker_redis_outage_s`` (:class:`PatientRetry`), so a job goes on where it
was when Redis is back. Past that, the step that needed Redis is given up, never the process: a
job left unrecorded runs again once its heartbeats are missed. SIGTERM (or SIGINT) ends the
waiting at once: the worker finishes its job if Redis lets it, else leaves the job to run again,
and exits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import torch
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq.exceptions import StopRequested
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.worker import SimpleWorker, WorkerStatus

from mofo.shared.batcher import FlowBatcher
from mofo.shared.cache import RedisBoxCache, refusal, safe_url
from mofo.shared.errors import MofoError
from mofo.shared.pipeline import DEFAULT_BATCH, default_backend, resolve_device
from mofo.shared.settings import Settings

log = logging.getLogger("mofo.worker")


REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)
FULL_PAUSE_S = 5.0  # after a job that a Redis refusing writes stopped: not a busy loop


def redis_trouble(exc: BaseException) -> str | None:
    """Why ``exc`` is Redis being away or refusing writes (the worker goes on), or None."""
    if isinstance(exc, REDIS_ERRORS):
        return "unreachable"
    if isinstance(exc, redis.ResponseError) and refusal(exc):
        return "refusing writes"
    return None


@contextmanager
def tolerated(what: str) -> Iterator[None]:
    """Log Redis being away or full during ``what`` instead of raising: a later round does it."""
    try:
        yield
    except redis.RedisError as exc:
        if redis_trouble(exc) is None:
            raise
        log.warning("%s: %s", what, exc)


BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.25, 5.0


class PatientRetry(Retry):
    """Redis calls that wait out an outage: reconnect after 0.25 s, doubling to 5 s, for up to
    ``patience_s``; then the error is raised. Once ``stopping`` is set (SIGTERM) no call waits.

    One instance is shared by every connection of the worker (redis-py copies a client's retry
    into each connection; the copy is this object), so one event stops all waiting at once."""

    def __init__(self, patience_s: float, stopping: threading.Event):
        super().__init__(NoBackoff(), retries=1 << 30)
        self.patience_s = patience_s
        self.stopping = stopping

    def __deepcopy__(self, memo) -> PatientRetry:
        return self

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        start = time.monotonic()
        failures = 0
        while True:
            try:
                result = do()
            except self._supported_errors as error:
                if is_retryable and not is_retryable(error):
                    raise
                failures += 1
                fail(error, failures) if with_failure_count else fail(error)
                waited = time.monotonic() - start
                if self.stopping.is_set() or waited >= self.patience_s:
                    raise
                if failures == 1:
                    log.warning(
                        "Redis unreachable (%s); retrying for up to %g s", error, self.patience_s
                    )
                pause = min(BACKOFF_FIRST_S * 2 ** (failures - 1), BACKOFF_MAX_S)
                self.stopping.wait(min(pause, self.patience_s - waited))
            else:
                if failures:
                    log.warning("Redis is back after %.1f s", time.monotonic() - start)
                return result


def patient_redis(
    url: str, retry: PatientRetry, socket_timeout: float | None = None
) -> redis.Redis:
    """A client of ``url`` whose calls wait out outages (and give up on stop) through ``retry``."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=5,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        retry=retry,
    )


class DataRootUnavailable(MofoError):
    """The dataset's folder is not there (an unmounted share): the job is retried later, and no
    clip is failed for it."""


@dataclass
class WorkerContext:
    """What every job of a worker process shares; built once, before the first job."""

    settings: Settings
    device: torch.device
    batcher: FlowBatcher
    cache: RedisBoxCache

    @classmethod
    def create(
        cls, settings: Settings, queue_connection=None, retry: PatientRetry | None = None
    ) -> WorkerContext:
        """Device, batcher and cache (``settings.redis_url``, else the queue's Redis; its calls
        wait out outages through ``retry`` when given)."""
        device = resolve_device(settings.device)
        max_batch = settings.max_batch_pairs or DEFAULT_BATCH[device.type]
        batcher = FlowBatcher(
            max_batch, settings.max_wait_ms / 1000, cuda_kernel=settings.tvl1_kernel
        )
        if settings.redis_url and retry is not None:
            client = patient_redis(settings.redis_url, retry, socket_timeout=30)
            cache = RedisBoxCache(client, settings.redis_url)
        elif settings.redis_url:
            cache = RedisBoxCache.from_url(settings.redis_url)
        elif queue_connection is not None:
            cache = RedisBoxCache(queue_connection, "the worker's queue Redis")
        else:
            raise MofoError("the worker needs a Redis URL (MOFO_REDIS_URL or --redis)")
        return cls(settings=settings, device=device, batcher=batcher, cache=cache)

    def warm_up(self) -> None:
        """One flow call on the device, so CUDA (and compiled kernels) start before any job."""
        self.batcher.warm_up(self.device, default_backend(self.device))

    def data_root(self, build_root: str | None) -> Path:
        """Where job paths are resolved: this worker's data root, else the build's root."""
        root = self.settings.data_root or (Path(build_root) if build_root else None)
        if root is None:
            raise MofoError("this worker has no data root (MOFO_DATA_ROOT) for path jobs")
        if not root.is_dir():
            raise DataRootUnavailable(f"data root {root} is not available on this worker")
        return root

    def close(self) -> None:
        self.batcher.stop()


_context: WorkerContext | None = None
_context_lock = threading.Lock()


def worker_context(queue_connection=None) -> WorkerContext:
    """This process's context: the one :class:`MofoWorker` built, or one built on first use (a
    plain ``rq worker`` running our jobs)."""
    global _context
    with _context_lock:
        if _context is None:
            _context = WorkerContext.create(Settings(), queue_connection)
        return _context


def set_worker_context(context: WorkerContext | None) -> None:
    global _context
    with _context_lock:
        _context = context


class MofoWorker(SimpleWorker):
    """A worker that runs jobs in its own process (see the module's notes)."""

    def __init__(
        self,
        *args,
        heartbeat_s: float = 10.0,
        abandon_s: int = 60,
        stopping: threading.Event | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.heartbeat_s = heartbeat_s
        self.abandon_s = abandon_s
        self.burst_poll_s = 1.0
        self.stopping = stopping or threading.Event()

    # -- stopping: SIGTERM ends any wait for Redis; Redis errors never end the process ----------

    def request_stop(self, signum, frame) -> None:
        self.stopping.set()  # before RQ's handler: its own Redis calls must not wait either
        super().request_stop(signum, frame)

    def set_shutdown_requested_date(self) -> None:
        with tolerated("stopping: could not note the shutdown in Redis"):  # in a signal handler
            super().set_shutdown_requested_date()

    def heartbeat(self, timeout=None, pipeline=None) -> None:
        with tolerated("worker heartbeat failed"):  # the next one tries again
            super().heartbeat(timeout, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        with tolerated("could not check for suspension"):
            super().check_for_suspension(burst)

    def teardown(self) -> None:
        with tolerated("could not deregister from Redis (its entry expires by itself)"):
            super().teardown()

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        # How long a running job is trusted without news from its worker.
        return self.abandon_s

    def execute_job(self, job, queue) -> None:
        """Run a job; a Redis outage longer than the patience, or a stop during one, leaves it
        unrecorded in Redis: it runs again once its heartbeats are missed."""
        try:
            self._execute_job(job, queue)
        except redis.RedisError as exc:
            trouble = redis_trouble(exc)
            if trouble is None:
                raise
            if self.stopping.is_set():
                log.warning("stopping: Redis %s; job %s runs again later", trouble, job.id)
                raise StopRequested() from None
            log.error("Redis %s during job %s (%s); it runs again later", trouble, job.id, exc)
            if trouble == "refusing writes":
                self.stopping.wait(FULL_PAUSE_S)

    def _execute_job(self, job, queue) -> None:
        execution = self.prepare_execution(job)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                try:
                    with tolerated(f"heartbeat for job {job.id} failed"):  # the next one tries
                        self.maintain_heartbeats(job, execution)
                except Exception:
                    log.warning("heartbeat for job %s failed", job.id, exc_info=True)

        beater = threading.Thread(target=beat, name="mofo-heartbeat", daemon=True)
        beater.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            beater.join()
        self.set_state(WorkerStatus.IDLE)

    def run_maintenance_tasks(self) -> None:
        with tolerated("registry maintenance skipped"):  # the next round does it
            super().run_maintenance_tasks()  # abandoned jobs: retried (or failed) here
            self.enqueue_due_retries()

    def enqueue_due_retries(self) -> None:
        """Move retries whose backoff has passed onto their queue (RQ's scheduler, in-process)."""
        # At WARNING: RQ's scheduler logs every lock it takes, i.e. every maintenance round.
        scheduler = RQScheduler(
            self.queues, connection=self.connection, logging_level=logging.WARNING
        )
        if scheduler.acquire_locks():
            try:
                scheduler.enqueue_scheduled_jobs()
            finally:
                scheduler.release_locks()

    def outstanding(self) -> int:
        """Jobs of this worker's queues that are queued, running or waiting for a retry."""
        total = 0
        for queue in self.queues:
            total += queue.count
            total += StartedJobRegistry(queue=queue).count
            total += ScheduledJobRegistry(queue=queue).count
        return total

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        while True:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            if result is not None or timeout is not None or self._stop_requested:
                return result
            # Burst: the queues are empty, but a job may still run elsewhere (and be abandoned)
            # or wait for a retry. Wait for those before calling the work done.
            outstanding = 1
            with tolerated("could not count outstanding jobs"):
                outstanding = self.outstanding()
            if not outstanding:
                return None
            time.sleep(self.burst_poll_s)
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()


def run_worker(
    settings: Settings,
    queues: list[str],
    burst: bool = False,
    name: str | None = None,
    log_level: str = "INFO",
) -> bool:
    """Build the context (device, batcher, cache; warm flow), then work; True if any job ran."""
    from rq import Queue

    url = settings.queue_url
    if url is None:
        raise MofoError("the worker needs a Redis URL (MOFO_REDIS_URL or --redis)")
    redis.Redis.from_url(url, socket_connect_timeout=10).ping()  # a wrong URL fails at once
    stopping = threading.Event()
    retry = PatientRetry(settings.worker_redis_outage_s, stopping)
    connection = patient_redis(url, retry)  # RQ sets its socket timeout above its BLPOP's
    context = WorkerContext.create(settings, connection, retry)
    context.warm_up()
    set_worker_context(context)
    log.info(
        "worker on %s, queues %s, device %s, %d clips at once",
        safe_url(url),
        ",".join(queues),
        context.device,
        settings.worker_clip_threads,
    )
    worker = MofoWorker(
        [Queue(q, connection=connection) for q in queues],
        connection=connection,
        name=name,
        heartbeat_s=settings.worker_heartbeat_s,
        abandon_s=settings.worker_abandon_s,
        maintenance_interval=settings.worker_maintenance_s,
        stopping=stopping,
    )
    try:
        return worker.work(burst=burst, logging_level=log_level)
    finally:
        set_worker_context(None)
        context.close()
