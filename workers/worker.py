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
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.worker import SimpleWorker, WorkerStatus

from shared.batcher import FlowBatcher
from shared.cache import RedisBoxCache, safe_url
from shared.errors import MofoError
from shared.pipeline import DEFAULT_BATCH, default_backend, resolve_device
from shared.settings import Settings

log = logging.getLogger("mofo.worker")


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
    def create(cls, settings: Settings, queue_connection=None) -> WorkerContext:
        """Device, batcher and cache (``settings.redis_url``, else the queue's Redis)."""
        settings.export_process_settings()
        device = resolve_device(settings.device)
        max_batch = settings.max_batch_pairs or DEFAULT_BATCH[device.type]
        batcher = FlowBatcher(max_batch, settings.max_wait_ms / 1000)
        if settings.redis_url:
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

    def __init__(self, *args, heartbeat_s: float = 10.0, abandon_s: int = 60, **kwargs):
        super().__init__(*args, **kwargs)
        self.heartbeat_s = heartbeat_s
        self.abandon_s = abandon_s
        self.burst_poll_s = 1.0

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        # How long a running job is trusted without news from its worker.
        return self.abandon_s

    def execute_job(self, job, queue) -> None:
        execution = self.prepare_execution(job)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception:  # Redis away for a moment: the next beat tries again
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
            if not self.outstanding():
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
    import redis
    from rq import Queue

    url = settings.queue_url
    if url is None:
        raise MofoError("the worker needs a Redis URL (MOFO_REDIS_URL or --redis)")
    connection = redis.Redis.from_url(url, socket_connect_timeout=10, health_check_interval=30)
    connection.ping()  # before the device and flow start: a wrong URL fails at once
    context = WorkerContext.create(settings, connection)
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
    )
    try:
        return worker.work(burst=burst, logging_level=log_level)
    finally:
        set_worker_context(None)
        context.close()
