"""Motion boxes: compute for a clip (cached by content or path + settings), or read the cache."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from mofo.services.motion_api.deps import CLIP_BODY, Clip, Service
from mofo.services.motion_api.problems import Problem
from mofo.services.motion_api.schemas import BoxRecordOut, ComputeOptions, LookupOptions, ProblemOut

router = APIRouter(prefix="/v1/boxes", tags=["boxes"])

PROBLEMS = {
    code: {"model": ProblemOut, "content": {"application/problem+json": {}}}
    for code in (400, 403, 404, 413, 415, 422, 429, 503, 504)
}


def _location(video_id: str, params_hash: str) -> str:
    return f"/v1/boxes/{quote(video_id)}?params={params_hash}"


@router.post(
    "",
    response_model=BoxRecordOut,
    response_model_by_alias=True,
    openapi_extra=CLIP_BODY,
    responses=PROBLEMS,
    summary="Motion boxes of an uploaded clip or of a clip under the data root",
)
async def post_boxes(
    clip: Clip,
    service: Service,
    options: Annotated[ComputeOptions, Query()],
    request: Request,
    response: Response,
) -> dict:
    params = service.params(options)
    record = None if options.refresh else await service.cached(clip.video_id, params.hash())
    response.headers["X-Mofo-Cache"] = "hit" if record else "miss"
    if record is None:
        result = await service.run(
            lambda cancel: service.analyse(clip, params, cancel), request.is_disconnected
        )
        record = result.record
        if options.refresh:  # asked for: the new record replaces a stored one
            await run_in_threadpool(service.cache.replace, record)
        else:  # records are written once: a request that raced ours may have stored first
            record = await service.cached(clip.video_id, params.hash()) or record
    response.headers["Content-Location"] = _location(record.video, record.params)
    return record.to_dict()


@router.get(
    "/{video_id:path}",
    response_model=BoxRecordOut,
    response_model_by_alias=True,
    responses=PROBLEMS,
    summary="The cached box record of a video under the given settings",
    description="Without sampling options, the interactive record (at most "
    "MOFO_INTERACTIVE_FRAMES frames) or else the every-frame one a build or job wrote.",
)
async def get_boxes(
    video_id: str, service: Service, options: Annotated[LookupOptions, Query()]
) -> dict:
    params_hash = options.params or service.params(options).hash()
    record = await service.cached(video_id, params_hash)
    if record is None and options.params is None:  # every frame, as a build or a job boxed it
        every = service.params(options, interactive=False).hash()
        if every != params_hash:
            record = await service.cached(video_id, every)
    if record is None:
        raise Problem(
            404,
            "record-not-found",
            "No cached record",
            f"no record for video {video_id!r} under settings {params_hash}; "
            "POST /v1/boxes computes one",
        )
    return record.to_dict()
