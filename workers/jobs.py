"""The RQ jobs that box many clips: the one the service enqueues when it runs with Redis
(:data:`mofo.shared.jobs.JOB_FUNCTION`, boxing with :func:`mofo.shared.jobs.box_clips`) and the
job of a cache build.

A clip that fails (corrupt, too long, missing) is recorded with its reason and the job goes on;
only a fault outside the clips (the cache unreachable) fails the whole job, so RQ can retry it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from mofo.shared.errors import ClipError
from mofo.shared.jobs import BoxJob, BuildChunk, JobClip, JobCounts, Outcome, box_clips
from mofo.shared.keys import job_cancel_key
from mofo.shared.record import BoxRecord

log = logging.getLogger("mofo.worker")


def box_clips_job(
    items: list[dict[str, Any]], params: dict[str, Any], limits: dict[str, Any]
) -> list[Outcome]:
    """RQ job from the API: box clips named by path (under the worker's data root) or uploaded
    into Redis, and write each record to the box cache; progress goes to the job's meta."""
    from rq import get_current_job

    from mofo.shared.cache import is_upload_id
    from mofo.shared.paths import resolve_under_root
    from mofo.shared.pipeline import analyse_clip
    from mofo.shared.uploads import JobUploads, UploadQuota
    from mofo.workers.worker import worker_context

    job = get_current_job()
    assert job is not None, "box_clips_job runs inside an RQ worker"
    ctx = worker_context(job.connection)
    work = BoxJob.from_args(items, params, limits)

    counts = JobCounts(len(work.clips))
    cancel = threading.Event()

    def flow(gray: Any, first: list[int], second: list[int], params: Any) -> Any:
        return ctx.batcher.flow(gray, first, second, params, cancel, counts.pairs)

    def analyse(clip: JobClip) -> BoxRecord:
        if clip.upload is not None:
            data = job.connection.get(clip.upload)
            if data is None:
                raise ClipError(f"{clip.name}: the uploaded clip expired before a worker ran")
            source: Any = data
        elif clip.path is None:
            raise ClipError(f"{clip.video}: the job names neither a path nor an upload")
        elif is_upload_id(clip.path):  # the uploads' id space: never a path's record
            raise ClipError(f"{clip.path}: the name of an uploaded clip's id, not a path")
        else:
            source = resolve_under_root(ctx.data_root(None), clip.path)[0]
        result = analyse_clip(
            source,
            work.params,
            work.limits,
            ctx.device,
            name=clip.video,
            label=clip.name,
            flow_fn=flow,
        )
        return ctx.cache.put(result.record)  # a stored record stays: it is the outcome

    with _watched(job, counts, cancel):
        outcomes = box_clips(work.clips, analyse, counts)
    # This job is done with its uploads; one that another job still needs stays for it.
    uploads = JobUploads(job.connection, UploadQuota(0, 0), ttl_s=0)
    for clip in work.clips:
        if clip.upload is not None:
            uploads.release(clip.upload, job.id)
    return outcomes


PUBLISH_S = 0.5  # how often a running job's progress is written and its cancel flag read


@contextmanager
def _watched(job: Any, counts: JobCounts, cancel: threading.Event) -> Iterator[None]:
    """While a job runs, a thread writes its progress (clips and the current clip's frame pairs)
    to the job's meta and sets ``cancel`` once its client has asked to cancel it; the last
    progress is written when it ends."""
    from mofo.workers.worker import tolerated

    stop = threading.Event()
    key = job_cancel_key(job.id)

    def publish(last: dict | None) -> dict:
        now = counts.as_dict()
        if now != last:
            job.meta["progress"] = now
            job.save_meta()
        return now

    def watch() -> None:
        last = None
        while not stop.wait(PUBLISH_S):
            with tolerated(f"progress of job {job.id} not written"):  # the next round writes it
                last = publish(last)
                if job.connection.exists(key):
                    cancel.set()

    watcher = threading.Thread(target=watch, name="mofo-job-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        with tolerated(f"progress of job {job.id} not written"):
            publish(None)


def build_chunk_job(
    build_id: str,
    items: list[dict[str, Any]],
    params: dict[str, Any],
    limits: dict[str, Any],
    root: str | None,
) -> dict[str, int]:
    """RQ job of a cache build: box a chunk of a dataset's clips, several at once.

    Clips that have a record by now are skipped. Each clip's outcome is stored the moment it is
    known (its record, or why it failed), so a job that dies half-way loses nothing done, and its
    rerun does only the rest. Faults outside the clips (the data root gone, Redis unreachable)
    fail the job, which RQ retries after a backoff.
    """
    from rq import get_current_job

    from mofo.shared.paths import resolve_under_root
    from mofo.shared.pipeline import analyse_clip
    from mofo.workers.build import MAX_ATTEMPTS, BuildState
    from mofo.workers.worker import worker_context

    job = get_current_job()
    ctx = worker_context(job.connection if job is not None else None)
    chunk = BuildChunk.from_args(build_id, items, params, limits, root)
    state = BuildState(ctx.cache.redis, chunk.build_id)
    data_root = ctx.data_root(chunk.root)  # before any clip: a missing share fails no clip

    already = state.cached([clip.video for clip in chunk.clips])
    state.mark_cached([clip.video for clip, c in zip(chunk.clips, already, strict=True) if c])
    todo = [clip for clip, c in zip(chunk.clips, already, strict=True) if not c]
    total = len(chunk.clips)
    counts = {"total": total, "cached": total - len(todo), "done": 0, "failed": 0}
    lock = threading.Lock()

    def one(clip: JobClip) -> None:
        video = clip.video
        starts = state.start_attempt(video)
        if starts > MAX_ATTEMPTS:
            outcome = "failed"
            state.fail(
                video,
                f"{video}: started {starts - 1} times without an outcome (its worker died or "
                "timed out each time); not tried again",
            )
        else:
            try:
                if clip.path is None:
                    raise ClipError(f"{video}: the build's job names no path for it")
                path = resolve_under_root(data_root, clip.path)[0]
                result = analyse_clip(
                    path,
                    chunk.params,
                    chunk.limits,
                    ctx.device,
                    name=video,
                    label=video,
                    flow_fn=ctx.batcher.flow,
                    segment=clip.segment,
                )
            except ClipError as exc:
                outcome = "failed"
                state.fail(video, str(exc))
                log.info("failed %s: %s", video, exc)
            else:
                outcome = "done"
                state.store(result.record)
                log.info("cached %s", video)
        with lock:
            counts[outcome] += 1
            if job is not None:
                job.meta["progress"] = dict(counts)
                job.save_meta()

    pool = ThreadPoolExecutor(ctx.settings.worker_clip_threads, thread_name_prefix="mofo-clip")
    try:
        for future in [pool.submit(one, clip) for clip in todo]:
            future.result()  # an error outside the clips (Redis, a bug) fails the job here
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return counts
