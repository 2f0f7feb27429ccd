"""Background jobs for long clips and lists of paths: in-process threads by default, RQ on the
service's Redis when one is configured (then any ``rq`` worker with this project installed runs
them, on this host or another)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Protocol

from mofo.services.motion_api.problems import Problem
from mofo.services.motion_api.schemas import JobState
from mofo.services.motion_api.service import ClipSource, MotionService
from mofo.shared.cache import QueueUnavailable, unavailable_as
from mofo.shared.jobs import (
    JOB_FUNCTION,
    JOB_RETRY_AFTER_S,
    BoxJob,
    JobClip,
    JobCounts,
    box_clips,
)
from mofo.shared.keys import job_cancel_key
from mofo.shared.params import MotionParams
from mofo.shared.record import BoxRecord
from mofo.shared.uploads import JobUploads, UploadQuota, UploadQuotaFull

JOB_ID = r"^[0-9a-f]{32}$"
QUOTA_RETRY_S = 60  # Retry-After of a full job-upload quota: jobs take minutes, not seconds
CANCEL_WAIT_S = 5.0  # how long a cancel request waits for a running job to stop
ENDED = (JobState.finished, JobState.failed, JobState.cancelled)


def _wait_ended(get: Any, job_id: str, timeout_s: float) -> dict[str, Any] | None:
    """The job's state once it has ended, or as it is after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    state = get(job_id)
    while state is not None and state["status"] not in ENDED and time.monotonic() < deadline:
        time.sleep(0.05)
        state = get(job_id)
    return state


def quota_problem(what: str) -> Problem:
    return Problem(
        503,
        "job-uploads-full",
        "Job uploads full",
        f"{what}, the most this server keeps for workers; retry in {QUOTA_RETRY_S} s, "
        "or name clips under the data root instead",
        headers={"Retry-After": str(QUOTA_RETRY_S)},
    )


def _size(file: IO[bytes]) -> int:
    file.seek(0, os.SEEK_END)
    size = file.tell()
    file.seek(0)
    return size


def _take_over(file: IO[bytes]) -> IO[bytes]:
    """A handle of its own on a request's spooled upload, so the job reads the one stored copy
    after the request has closed its file (the data stays while a handle is open)."""
    fd = os.dup(file.fileno())  # fileno() moves a small in-memory spool to its temporary file
    handle = os.fdopen(fd, "rb")
    handle.seek(0)
    return handle


class Jobs(Protocol):
    kind: str

    def submit(self, clips: list[ClipSource], params: MotionParams) -> str: ...

    def get(self, job_id: str) -> dict[str, Any] | None: ...

    def cancel(self, job_id: str) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


def _job_clips(clips: list[ClipSource]) -> list[JobClip]:
    """The clips of a job of this process's threads: it holds their sources itself."""
    return [JobClip(c.video_id, name=c.name) for c in clips]


class LocalJobs:
    """Jobs on threads of this process, through the service's batcher; kept ``ttl_s`` after."""

    kind = "local"

    def __init__(
        self, service: MotionService, workers: int, ttl_s: float, quota: UploadQuota | None = None
    ):
        self.service = service
        self.ttl_s = ttl_s
        self.quota = quota or UploadQuota(
            service.settings.max_job_uploads, service.settings.max_job_upload_bytes
        )
        self._jobs: dict[str, dict[str, Any]] = {}
        self._cancels: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="mofo-job")
        self._held = [0, 0]  # uploads and bytes that queued or running jobs hold

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _reserve(self, sizes: list[int]) -> None:
        with self._lock:
            count, held = self._held
            if count + len(sizes) > self.quota.max_uploads:
                raise quota_problem(f"{self.quota.max_uploads} job uploads are waiting")
            if held + sum(sizes) > self.quota.max_bytes:
                raise quota_problem(f"job uploads waiting would pass {self.quota.max_bytes} bytes")
            self._held = [count + len(sizes), held + sum(sizes)]

    def _unreserve(self, sizes: list[int]) -> None:
        with self._lock:
            self._held = [self._held[0] - len(sizes), self._held[1] - sum(sizes)]

    def _prune(self) -> None:
        now = time.time()
        with self._lock:
            for job_id in [
                j
                for j, s in self._jobs.items()
                if s["ended_at"] and now - s["ended_at"] > self.ttl_s
            ]:
                del self._jobs[job_id]
                del self._cancels[job_id]

    def submit(self, clips: list[ClipSource], params: MotionParams) -> str:
        """Take the clips: an upload's spooled file is kept open for the job (not copied), and
        counts against the job-upload quota until the job ends."""
        self._prune()
        job_id = uuid.uuid4().hex
        sizes = [_size(c.source) for c in clips if not isinstance(c.source, str)]
        self._reserve(sizes)
        sources: list[str | IO[bytes]] = []
        try:
            for clip in clips:
                sources.append(
                    clip.source if isinstance(clip.source, str) else _take_over(clip.source)
                )
        except BaseException:
            self._unreserve(sizes)
            for source in sources:
                if not isinstance(source, str):
                    source.close()
            raise
        state = {
            "id": job_id,
            "status": JobState.queued,
            "progress": JobCounts(len(clips)),
            "result": None,
            "error": None,
            "created_at": time.time(),
            "started_at": None,
            "ended_at": None,
        }
        cancel = threading.Event()
        with self._lock:
            self._jobs[job_id] = state
            self._cancels[job_id] = cancel
        self._executor.submit(self._run, state, clips, sources, sizes, params, cancel)
        return job_id

    def _run(
        self,
        state: dict[str, Any],
        clips: list[ClipSource],
        sources: list[str | IO[bytes]],
        sizes: list[int],
        params: MotionParams,
        cancel: threading.Event,
    ) -> None:
        with self._lock:  # a job cancelled while queued has ended already: it never starts
            if not cancel.is_set():
                state["started_at"] = time.time()
                state["status"] = JobState.running
        if cancel.is_set() and state["started_at"] is None:
            self._release(sources, sizes)
            return
        by_video = {c.video_id: (c, s) for c, s in zip(clips, sources, strict=True)}
        counts: JobCounts = state["progress"]

        def analyse(job_clip: JobClip) -> BoxRecord:
            clip, source = by_video[job_clip.video]
            named = ClipSource(video_id=clip.video_id, name=clip.name, source=source)
            return self.service.analyse(named, params, cancel, counts.pairs).record

        try:
            state["result"] = box_clips(_job_clips(clips), analyse, counts)
            state["status"] = JobState.cancelled if cancel.is_set() else JobState.finished
        except Exception as exc:  # outside the clips (e.g. the cache): the job fails, says why
            state["error"] = str(exc)
            state["status"] = JobState.failed
        finally:
            state["ended_at"] = time.time()
            self._release(sources, sizes)

    def _release(self, sources: list[str | IO[bytes]], sizes: list[int]) -> None:
        for source in sources:
            if not isinstance(source, str):
                source.close()
        self._unreserve(sizes)

    def get(self, job_id: str) -> dict[str, Any] | None:
        self._prune()
        with self._lock:
            state = self._jobs.get(job_id)
            if state is None:
                return None
            return {**state, "progress": state["progress"].as_dict()}

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Stop a job: a queued one never starts, a running one stops at its next frame pairs
        (the clips boxed before stay in its result and the cache); an ended one is left as it
        is. Waits up to :data:`CANCEL_WAIT_S` for a running job to stop."""
        with self._lock:
            state = self._jobs.get(job_id)
            if state is None:
                return None
            if state["status"] not in ENDED:
                self._cancels[job_id].set()
            if state["status"] is JobState.queued:
                state["status"] = JobState.cancelled
                state["ended_at"] = time.time()
        return _wait_ended(self.get, job_id, CANCEL_WAIT_S)


_RQ_STATES = {
    "created": JobState.queued,
    "queued": JobState.queued,
    "deferred": JobState.queued,
    "scheduled": JobState.queued,
    "ready_to_enqueue": JobState.queued,
    "rate_limited": JobState.queued,
    "started": JobState.running,
    "finished": JobState.finished,
    "failed": JobState.failed,
    "stopped": JobState.cancelled,
    "canceled": JobState.cancelled,
}


class RQJobs:
    """Jobs on an RQ queue in the service's Redis; uploads wait in Redis until a worker runs."""

    kind = "rq"

    def __init__(self, service: MotionService, redis_url: str, queue_name: str, ttl_s: int):
        import redis
        from rq import Queue

        self.service = service
        self.ttl_s = ttl_s
        self.url = redis_url
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.queue = Queue(queue_name, connection=self.redis)
        settings = service.settings
        quota = UploadQuota(settings.max_job_uploads, settings.max_job_upload_bytes)
        self.uploads = JobUploads(self.redis, quota, ttl_s)

    def close(self) -> None:
        self.redis.close()

    def submit(self, clips: list[ClipSource], params: MotionParams) -> str:
        with unavailable_as(QueueUnavailable, "job queue", self.url):
            return self._submit(clips, params)

    def get(self, job_id: str) -> dict[str, Any] | None:
        with unavailable_as(QueueUnavailable, "job queue", self.url):
            return self._get(job_id)

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        with unavailable_as(QueueUnavailable, "job queue", self.url):
            return self._cancel(job_id)

    def _submit(self, clips: list[ClipSource], params: MotionParams) -> str:
        job_id = uuid.uuid4().hex
        items: list[JobClip] = []
        stored: list[str] = []
        try:
            for clip in clips:
                if isinstance(clip.source, str):  # relative to the data root, for the worker
                    items.append(JobClip(clip.video_id, path=clip.video_id, name=clip.name))
                else:
                    size = _size(clip.source)
                    key = self.uploads.store(clip.video_id, clip.source, size, job_id)
                    stored.append(key)
                    items.append(JobClip(clip.video_id, upload=key, name=clip.name))
            return self._enqueue(job_id, BoxJob(tuple(items), params, self.service.limits))
        except BaseException as exc:
            for key in stored:  # not enqueued: the uploads are not needed for this job
                self.uploads.release(key, job_id)
            if isinstance(exc, UploadQuotaFull):
                raise quota_problem(exc.what) from None
            raise

    def _enqueue(self, job_id: str, work: BoxJob) -> str:
        from rq import Retry

        job = self.queue.enqueue(
            JOB_FUNCTION,
            *work.args(),
            job_timeout=work.timeout_s(),
            result_ttl=self.ttl_s,
            failure_ttl=self.ttl_s,
            retry=Retry(max=len(JOB_RETRY_AFTER_S), interval=list(JOB_RETRY_AFTER_S)),
            meta={"progress": {"total": len(work.clips), "done": 0, "failed": 0}},
            job_id=job_id,
        )
        return job.id

    def _job(self, job_id: str) -> Any:
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            return Job.fetch(job_id, connection=self.redis)
        except NoSuchJobError:
            return None

    def _cancel(self, job_id: str) -> dict[str, Any] | None:
        """A queued job is cancelled in RQ (it never runs) and its uploads let go; a running one
        is flagged, and its worker stops at its next frame pairs (waited for up to
        :data:`CANCEL_WAIT_S`); an ended one is left as it is."""
        job = self._job(job_id)
        if job is None:
            return None
        status = _RQ_STATES.get(str(job.get_status(refresh=True).value), JobState.queued)
        if status is JobState.queued:
            job.cancel()
            work = BoxJob.from_args(*job.args)
            for clip in work.clips:
                if clip.upload is not None:
                    self.uploads.release(clip.upload, job_id)
        elif status is JobState.running:
            self.redis.set(job_cancel_key(job_id), 1, ex=self.ttl_s)
        return _wait_ended(self._get, job_id, CANCEL_WAIT_S)

    def _get(self, job_id: str) -> dict[str, Any] | None:
        job = self._job(job_id)
        if job is None:
            return None
        status = _RQ_STATES.get(str(job.get_status(refresh=True).value), JobState.queued)
        if status is JobState.finished and self.redis.exists(job_cancel_key(job_id)):
            status = JobState.cancelled  # it stopped early, as asked: its result is partial
        ended = status in (JobState.finished, JobState.cancelled)
        result = job.return_value() if ended else None
        error = None
        if status is JobState.failed:
            latest = job.latest_result()
            text = (latest.exc_string if latest is not None else None) or "the job failed"
            error = text.strip().splitlines()[-1]
        return {
            "id": job.id,
            "status": status,
            "progress": job.get_meta(refresh=False).get("progress", {"total": 0}),
            "result": result,
            "error": error,
            "created_at": job.created_at.timestamp() if job.created_at else time.time(),
            "started_at": job.started_at.timestamp() if job.started_at else None,
            "ended_at": job.ended_at.timestamp() if job.ended_at else None,
        }
