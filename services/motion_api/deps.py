"""Route dependencies: the service, and the clip a request names (an upload or a path)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mofo.services.motion_api.problems import Problem
from mofo.services.motion_api.schemas import JobRequest, PathRequest
from mofo.services.motion_api.service import (
    ClipSource,
    MotionService,
    clip_under_root,
    content_id,
    spooled_name,
)

MAX_FORM_FIELDS = 8


def get_service(request: Request) -> MotionService:
    return request.app.state.service


Service = Annotated[MotionService, Depends(get_service)]


def _file_body_schema(description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary", "description": description}},
    }


def clip_body_openapi(json_model: type, upload_description: str) -> dict[str, Any]:
    """OpenAPI for a body that is either a multipart upload or JSON naming server paths."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": _file_body_schema(upload_description)},
                "application/json": {"schema": json_model.model_json_schema()},
            },
        }
    }


CLIP_BODY = clip_body_openapi(PathRequest, "The video file.")
JOB_BODY = clip_body_openapi(JobRequest, "One (long) video file.")


def _unsupported(content_type: str) -> Problem:
    return Problem(
        415,
        "unsupported-media-type",
        "Unsupported media type",
        f"send the clip as multipart/form-data with a 'file' field, or JSON naming a path under "
        f"the data root; got content type {content_type or 'none'!r}",
    )


# The longest number a JSON body may hold (the bodies hold strings; this bounds int() work).
MAX_JSON_DIGITS = 32


def _short(text: str) -> str:
    if len(text) > MAX_JSON_DIGITS:
        raise ValueError(f"a number of {len(text)} characters; at most {MAX_JSON_DIGITS}")
    return text


def _json_int(text: str) -> int:
    return int(_short(text))


def _json_float(text: str) -> float:
    return float(_short(text))


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes, max_bytes: int) -> Any:
    """A JSON body parsed within bounds: at most ``max_bytes``, numbers of at most
    MAX_JSON_DIGITS characters, nesting within the interpreter's recursion limit; else 413 or
    422 ``invalid-json``."""
    if len(raw) > max_bytes:
        raise Problem(
            413,
            "too-large",
            "Body too large",
            f"the JSON body is {len(raw)} bytes, over the limit of {max_bytes} bytes; "
            "send fewer paths per request, or upload the clip as multipart/form-data",
        )
    try:
        return json.loads(
            raw, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant
        )
    except RecursionError:
        why = "nested too deeply"
    except ValueError as exc:  # not JSON, not UTF-8, a number too long
        why = str(exc)
    raise Problem(422, "invalid-json", "Invalid JSON", f"body: not valid JSON ({why})")


async def _json_body(request: Request, model: type, max_bytes: int) -> Any:
    raw = await request.body()
    if not raw:
        raise Problem(422, "invalid-parameters", "Invalid parameters", "request: body is empty")
    data = parse_json(raw, max_bytes)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "body"
            parts.append(f"{where}: {err['msg']}")
        raise Problem(422, "invalid-parameters", "Invalid parameters", "; ".join(parts)) from None


async def _upload(request: Request) -> tuple[UploadFile, Any]:
    try:
        form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
    except Problem:  # the body refused while it streamed in (too large, too slow, busy)
        raise
    except Exception as exc:  # malformed multipart: the client's fault, say what went wrong
        raise Problem(
            400, "bad-multipart", "Malformed upload", f"cannot read the form: {exc}"
        ) from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise Problem(
            422,
            "no-file",
            "No file",
            "no file: send the clip as the multipart/form-data field 'file'",
        )
    return upload, form


async def _uploaded_clip(upload: UploadFile) -> ClipSource:
    name = spooled_name(upload.filename)
    if upload.size == 0:
        raise Problem(400, "empty-clip", "Empty clip", f"{name}: the upload is empty (0 bytes)")
    video_id = await run_in_threadpool(content_id, upload.file)
    return ClipSource(video_id=video_id, name=name, source=upload.file)


@asynccontextmanager
async def _named_clips(
    request: Request, service: Service, model: type[PathRequest] | type[JobRequest]
) -> AsyncIterator[list[ClipSource]]:
    """The clips a body names: one multipart upload (its temporary file closed on exit), or
    JSON paths under the data root (``model`` says which JSON shape the route takes)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        upload, form = await _upload(request)
        try:
            yield [await _uploaded_clip(upload)]
        finally:
            await form.close()
    elif content_type == "application/json":
        body = await _json_body(request, model, service.settings.max_json_bytes)
        paths = body.paths if isinstance(body, JobRequest) else [body.path]
        limit = service.settings.max_job_clips
        if len(paths) > limit:
            raise Problem(
                422,
                "invalid-parameters",
                "Invalid parameters",
                f"paths: {len(paths)} clips in one job, the limit is {limit}",
            )
        yield [clip_under_root(service.settings.data_root, p) for p in paths]
    else:
        raise _unsupported(content_type)


async def clip_source(request: Request, service: Service) -> AsyncIterator[ClipSource]:
    """The one clip a request names; an upload's temporary file is closed after the response."""
    async with _named_clips(request, service, PathRequest) as clips:
        yield clips[0]


Clip = Annotated[ClipSource, Depends(clip_source)]


async def job_sources(request: Request, service: Service) -> AsyncIterator[list[ClipSource]]:
    """The clips of a job: one uploaded clip, or paths under the data root."""
    async with _named_clips(request, service, JobRequest) as clips:
        yield clips


JobClips = Annotated[list[ClipSource], Depends(job_sources)]
