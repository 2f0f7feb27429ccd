"""Background jobs: a long clip, or many clips under the data root, boxed into the cache."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from services.motion_api.deps import JOB_BODY, JobClips, Service
from services.motion_api.jobs import JOB_ID
from services.motion_api.problems import Problem
from services.motion_api.routes.boxes import PROBLEMS
from services.motion_api.schemas import BoxOptions, JobOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _job_out(request: Request, state: dict) -> dict:
    return {**state, "status_url": str(request.url_for("get_job", job_id=state["id"]))}


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


@router.get("/{job_id}", response_model=JobOut, responses=PROBLEMS, summary="A job's status")
async def get_job(
    job_id: Annotated[str, Path(max_length=64)], service: Service, request: Request
) -> dict:
    state = None
    if re.fullmatch(JOB_ID, job_id):
        state = await run_in_threadpool(service.jobs.get, job_id)
    if state is None:
        raise Problem(404, "job-not-found", "Unknown job", f"no job {job_id!r} (or it expired)")
    return _job_out(request, state)
