"""Jobs that box many clips: the loop shared by the service's in-process jobs and RQ workers, and
the RQ job function the service enqueues when it runs with Redis.

A clip that fails (corrupt, too long, missing) is recorded with its reason and the job goes on;
only a fault outside the clips (the cache unreachable) fails the whole job, so RQ can retry it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from shared.errors import ClipError, MofoError
from shared.params import DecodeLimits, MotionParams
from shared.record import BoxRecord

UPLOAD_KEY_PREFIX = "mofo:upload:"
JOB_FUNCTION = "workers.jobs.box_clips_job"

Progress = Callable[[int, int, int], None]  # (done, failed, total)


def box_clips(
    items: Sequence[dict[str, Any]],
    analyse: Callable[[dict[str, Any]], BoxRecord],
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Box each item (``{"video": id, ...}``) in turn; one outcome per item, in order."""
    outcomes: list[dict[str, Any]] = []
    done = failed = 0
    for item in items:
        try:
            record = analyse(item)
        except ClipError as exc:
            failed += 1
            outcomes.append({"video": item["video"], "ok": False, "error": str(exc)})
        else:
            done += 1
            outcomes.append({"video": item["video"], "ok": True, "record": record.to_dict()})
        if progress is not None:
            progress(done, failed, len(items))
    return outcomes


def box_clips_job(
    items: list[dict[str, Any]], params: dict[str, Any], limits: dict[str, Any]
) -> list[dict[str, Any]]:
    """RQ job: box clips named by path (under the worker's data root) or uploaded into Redis,
    and write each record to the box cache; progress goes to the job's meta."""
    from rq import get_current_job

    from shared.cache import RedisBoxCache
    from shared.paths import resolve_under_root
    from shared.pipeline import analyse_clip, resolve_device
    from shared.settings import Settings

    job = get_current_job()
    assert job is not None, "box_clips_job runs inside an RQ worker"
    settings = Settings()
    motion = MotionParams.from_dict(params)
    decode_limits = DecodeLimits(**limits)
    device = resolve_device(settings.device)
    cache = (
        RedisBoxCache.from_url(settings.redis_url)
        if settings.redis_url
        else RedisBoxCache(job.connection, "the RQ worker's Redis")
    )

    def analyse(item: dict[str, Any]) -> BoxRecord:
        if "upload" in item:
            data = job.connection.get(item["upload"])
            if data is None:
                raise ClipError(f"{item['name']}: the uploaded clip expired before a worker ran")
            source: Any = data
        else:
            if settings.data_root is None:
                raise MofoError("this worker has no data root (MOFO_DATA_ROOT) for path jobs")
            source = resolve_under_root(settings.data_root, item["path"])[0]
        result = analyse_clip(
            source, motion, decode_limits, device, name=item["video"], label=item.get("name")
        )
        cache.put(result.record)
        return result.record

    def progress(done: int, failed: int, total: int) -> None:
        job.meta["progress"] = {"done": done, "failed": failed, "total": total}
        job.save_meta()

    outcomes = box_clips(items, analyse, progress)
    uploads = [item["upload"] for item in items if "upload" in item]
    if uploads:
        job.connection.delete(*uploads)
    return outcomes


def limits_dict(limits: DecodeLimits) -> dict[str, Any]:
    return dataclasses.asdict(limits)
