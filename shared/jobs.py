"""The contract between the motion service and the workers that box clips for it: the job the
service enqueues (by name: the service never imports the workers), its payload's limits, and the
loop that boxes a job's clips, shared by the service's in-process jobs and the RQ workers.

A clip that fails (corrupt, too long, missing) is recorded with its reason and the loop goes on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from mofo.shared.errors import ClipError
from mofo.shared.params import DecodeLimits
from mofo.shared.record import BoxRecord

# The RQ job the service enqueues for a worker (``workers/jobs.py``), by its import path.
JOB_FUNCTION = "mofo.workers.jobs.box_clips_job"

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


def limits_dict(limits: DecodeLimits) -> dict[str, Any]:
    """A job payload's decode limits."""
    return dataclasses.asdict(limits)
