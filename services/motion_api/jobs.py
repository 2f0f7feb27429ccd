"""Background jobs for long clips and lists of paths: in-process threads by default, RQ on the
service's Redis when one is configured (then any ``rq`` worker with this project installed runs
them, on this host or another)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from services.motion_api.schemas import JobState
from services.motion_api.service import ClipSource, MotionService
from shared.cache import QueueUnavailable, unavailable_as
from shared.params import MotionParams
from shared.record import BoxRecord
from workers.jobs import JOB_FUNCTION, UPLOAD_KEY_PREFIX, box_clips, limits_dict

JOB_ID = r"^[0-9a-f]{32}$"


class Jobs(Protocol):
    kind: str

    def submit(self, clips: list[ClipSource], params: MotionParams) -> str: ...

    def get(self, job_id: str) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


def _items(clips: list[ClipSource]) -> list[dict[str, Any]]:
    return [{"video": c.video_id, "name": c.name} for c in clips]


class LocalJobs:
    """Jobs on threads of this process, through the service's batcher; kept ``ttl_s`` after."""

    kind = "local"

    def __init__(self, service: MotionService, workers: int, ttl_s: float):
        self.service = service
        self.ttl_s = ttl_s
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="mofo-job")
        self._spool = tempfile.mkdtemp(prefix="mofo-jobs-")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._spool, ignore_errors=True)

    def _prune(self) -> None:
        now = time.time()
        with self._lock:
            for job_id in [
                j
                for j, s in self._jobs.items()
                if s["ended_at"] and now - s["ended_at"] > self.ttl_s
            ]:
                del self._jobs[job_id]

    def submit(self, clips: list[ClipSource], params: MotionParams) -> str:
        """Take the clips (uploads are copied: the request's file closes with the response)."""
        self._prune()
        job_id = uuid.uuid4().hex
        sources: list[str] = []
        for clip in clips:
            if isinstance(clip.source, str):
                sources.append(clip.source)
                continue
            path = os.path.join(self._spool, f"{job_id}-{len(sources)}")
            clip.source.seek(0)
            with open(path, "wb") as out:
                shutil.copyfileobj(clip.source, out)
            sources.append(path)
        state = {
            "id": job_id,
            "status": JobState.queued,
            "progress": {"total": len(clips), "done": 0, "failed": 0},
            "result": None,
            "error": None,
            "created_at": time.time(),
            "started_at": None,
            "ended_at": None,
        }
        with self._lock:
            self._jobs[job_id] = state
        self._executor.submit(self._run, state, clips, sources, params)
        return job_id

    def _run(
        self,
        state: dict[str, Any],
        clips: list[ClipSource],
        sources: list[str],
        params: MotionParams,
    ) -> None:
        state["status"] = JobState.running
        state["started_at"] = time.time()
        by_video = {c.video_id: (c, s) for c, s in zip(clips, sources, strict=True)}
        never = threading.Event()

        def analyse(item: dict[str, Any]) -> BoxRecord:
            clip, source = by_video[item["video"]]
            named = ClipSource(video_id=clip.video_id, name=clip.name, source=source)
            return self.service.analyse(named, params, never).record

        def progress(done: int, failed: int, total: int) -> None:
            state["progress"] = {"total": total, "done": done, "failed": failed}

        try:
            state["result"] = box_clips(_items(clips), analyse, progress)
            state["status"] = JobState.finished
        except Exception as exc:  # outside the clips (e.g. the cache): the job fails, says why
            state["error"] = str(exc)
            state["status"] = JobState.failed
        finally:
            state["ended_at"] = time.time()
            for source in sources:
                if source.startswith(self._spool):
                    os.unlink(source)

    def get(self, job_id: str) -> dict[str, Any] | None:
        self._prune()
        with self._lock:
            state = self._jobs.get(job_id)
            return None if state is None else dict(state)


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
    "stopped": JobState.failed,
    "canceled": JobState.failed,
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

    def close(self) -> None:
        self.redis.close()

    def submit(self, clips: list[ClipSource], params: MotionParams) -> str:
        with unavailable_as(QueueUnavailable, "job queue", self.url):
            return self._submit(clips, params)

    def get(self, job_id: str) -> dict[str, Any] | None:
        with unavailable_as(QueueUnavailable, "job queue", self.url):
            return self._get(job_id)

    def _submit(self, clips: list[ClipSource], params: MotionParams) -> str:
        from rq import Retry

        items = []
        for clip in clips:
            item: dict[str, Any] = {"video": clip.video_id, "name": clip.name}
            if isinstance(clip.source, str):
                item["path"] = clip.video_id  # relative to the data root, resolved by the worker
            else:
                key = UPLOAD_KEY_PREFIX + clip.video_id
                clip.source.seek(0)
                self.redis.set(key, clip.source.read(), ex=self.ttl_s)
                item["upload"] = key
            items.append(item)
        job = self.queue.enqueue(
            JOB_FUNCTION,
            items,
            params.to_dict(),
            limits_dict(self.service.limits),
            job_timeout=max(600, 60 * len(items)),
            result_ttl=self.ttl_s,
            failure_ttl=self.ttl_s,
            retry=Retry(max=2, interval=[5, 30]),
            meta={"progress": {"total": len(items), "done": 0, "failed": 0}},
            job_id=uuid.uuid4().hex,
        )
        return job.id

    def _get(self, job_id: str) -> dict[str, Any] | None:
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            job = Job.fetch(job_id, connection=self.redis)
        except NoSuchJobError:
            return None
        status = _RQ_STATES.get(str(job.get_status(refresh=True).value), JobState.queued)
        result = job.return_value() if status is JobState.finished else None
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
