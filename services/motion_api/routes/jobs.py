"""Background jobs: a long clip, or many clips under the data root, boxed into the cache."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from mofo.services.motion_api.deps import JOB_BODY, JobClips, Service
from mofo.services.motion_api.jobs import JOB_ID
from mofo.services.motion_api.problems import Problem
from mofo.services.motion_api.routes.boxes import PROBLEMS
from mofo.services.motion_api.schemas import BoxOptions, JobOut, JobState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


# Server addresses in a message (a Redis URL; an absolute path: a data root, a spool file):
# clients see where they stood, not what they were.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"]+", re.IGNORECASE)
_SERVER_PATH = re.compile(r"(?<![\w.~-])/(?:[\w.@%+=,~-]+/?)+")
_ADDRESS = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|\blocalhost:\d+\b")


def public_error(text: str | None) -> str | None:
    """A job's or clip's error as clients may read it: URLs, server paths and IP addresses
    replaced by ``<url>``, ``<path>`` and ``<address>``."""
    if text is None:
        return None
    text = _SERVER_PATH.sub("<path>", _URL.sub("<url>", text))
    return _ADDRESS.sub("<address>", text)


def eta_s(state: dict, now: float) -> float | None:
    """Seconds a running job has left, were the rest to go as fast as what is done: its share
    done is its clips ended plus the current clip's share of frame pairs."""
    progress, started = state["progress"], state.get("started_at")
    if state["status"] is not JobState.running or not started or not progress.get("total"):
        return None
    share = progress.get("done", 0) + progress.get("failed", 0)
    if progress.get("pairs_total"):
        share += progress.get("pairs_done", 0) / progress["pairs_total"]
    share /= progress["total"]
    if share <= 0:
        return None
    return round((now - started) * (1 - share) / share, 1)


def _job_out(request: Request, state: dict) -> dict:
    """A job's state for clients; its URL is relative to this server (never built from the
    request's Host header) and its errors show no server paths."""
    status_url = request.scope.get("root_path", "") + request.app.url_path_for(
        "get_job", job_id=state["id"]
    )
    result = state.get("result")
    if result:
        result = [{**o, "error": public_error(o.get("error"))} for o in result]
    return {
        **state,
        "progress": {**state["progress"], "eta_s": eta_s(state, time.time())},
        "result": result,
        "error": public_error(state.get("error")),
        "status_url": status_url,
    }


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    openapi_extra=JOB_BODY,
    responses=PROBLEMS,
    summary="Box a long clip or a list of clips in the background",
)
async def create_job(
    clips: JobClips,
    service: Service,
    options: Annotated[BoxOptions, Query()],
    request: Request,
    response: Response,
) -> dict:
    params = service.params(options, interactive=False)
    job_id = await run_in_threadpool(service.jobs.submit, clips, params)
    state = await run_in_threadpool(service.jobs.get, job_id)
    out = _job_out(request, state)
    response.headers["Location"] = out["status_url"]
    return out


JobId = Annotated[str, Path(max_length=64)]


async def _job_state(job_id: str, fetch: Callable[[str], dict | None]) -> dict:
    """``fetch(job_id)`` off the event loop; an id that is not one, or unknown: 404."""
    state = None
    if re.fullmatch(JOB_ID, job_id):
        state = await run_in_threadpool(fetch, job_id)
    if state is None:
        raise Problem(404, "job-not-found", "Unknown job", f"no job {job_id!r} (or it expired)")
    return state


@router.get("/{job_id}", response_model=JobOut, responses=PROBLEMS, summary="A job's status")
async def get_job(job_id: JobId, service: Service, request: Request) -> dict:
    return _job_out(request, await _job_state(job_id, service.jobs.get))


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    responses=PROBLEMS,
    summary="Cancel a job",
    description="A queued job never starts; a running one stops at its next frame pairs (the "
    "clips boxed before stay in its result and in the cache); an ended one is left as it is. "
    "Answers the job's state once it has stopped, or after a few seconds.",
)
async def cancel_job(job_id: JobId, service: Service, request: Request) -> dict:
    return _job_out(request, await _job_state(job_id, service.jobs.cancel))
