"""Pictures of a clip's motion: a PNG strip of frames over their motion maps, and the clip
(at working size) with its boxes drawn, as GIF or MP4."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from mofo.services.motion_api.deps import CLIP_BODY, Clip, Service
from mofo.services.motion_api.routes.boxes import PROBLEMS
from mofo.services.motion_api.schemas import BoxOptions, PreviewOptions
from mofo.shared.render import motion_map_png, preview_bytes, sampled_fps

router = APIRouter(prefix="/v1", tags=["images"])

MEDIA_TYPES = {"gif": "image/gif", "mp4": "video/mp4", "png": "image/png"}


@router.post(
    "/motion-map",
    openapi_extra=CLIP_BODY,
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **PROBLEMS},
    summary="PNG strip: frames with their boxes above their motion-boundary maps",
)
async def motion_map(
    clip: Clip, service: Service, options: Annotated[BoxOptions, Query()], request: Request
):
    params = service.params(options)

    def work(cancel) -> bytes:
        result = service.analysis(clip, params, cancel)
        analysis = result.analysis
        return motion_map_png(
            result.clip.frames, analysis.motion, analysis.boxes, fallback=analysis.fallback
        )

    png = await service.run(work, request.is_disconnected)
    return Response(png, media_type=MEDIA_TYPES["png"])


@router.post(
    "/preview",
    openapi_extra=CLIP_BODY,
    response_class=Response,
    responses={200: {"content": {"image/gif": {}, "video/mp4": {}}}, **PROBLEMS},
    summary="The clip at working size with its motion boxes drawn (GIF or MP4)",
)
async def preview(
    clip: Clip, service: Service, options: Annotated[PreviewOptions, Query()], request: Request
):
    params = service.params(options)

    def work(cancel) -> bytes:
        result = service.analysis(clip, params, cancel)
        record = result.record
        return preview_bytes(
            result.clip.frames,
            result.analysis.boxes,
            fps=sampled_fps(record.fps, record.frame_indices),
            kind=options.format,
            fallback=result.analysis.fallback,
        )

    data = await service.run(work, request.is_disconnected)
    return Response(data, media_type=MEDIA_TYPES[options.format])
