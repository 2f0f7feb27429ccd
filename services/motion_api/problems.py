"""Errors as ``application/problem+json`` (RFC 9457): every failure the service can name gets its
own status, ``type`` and a ``detail`` a user can act on; nothing else is lost when one happens."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mofo.shared.cache import CacheFull, CacheUnavailable, QueueFull, QueueUnavailable
from mofo.shared.errors import (
    ClipError,
    ClipNotFound,
    ClipTooLong,
    ClipTooShort,
    CorruptClip,
    DeviceError,
    EmptyClip,
    FileTooLarge,
    FrameSizeChanged,
    MofoError,
    NotAVideo,
    PathOutsideRoot,
    ResolutionTooHigh,
    WorkTooLarge,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "urn:mofo:problem:"

# Most specific class first: the first match names the problem.
_MOFO_ERRORS: list[tuple[type[MofoError], int, str, str]] = [
    (EmptyClip, 400, "empty-clip", "Empty clip"),
    (CorruptClip, 422, "corrupt-clip", "Corrupt clip"),
    (NotAVideo, 415, "not-a-video", "Not a video"),
    (FileTooLarge, 413, "too-large", "Clip too large"),
    (ClipTooLong, 422, "too-long", "Clip too long"),
    (ResolutionTooHigh, 422, "resolution-too-high", "Resolution over the limit"),
    (WorkTooLarge, 422, "too-much-work", "Too much work"),
    (FrameSizeChanged, 422, "frame-size-changed", "Frame size changes"),
    (ClipTooShort, 422, "too-short", "Clip too short"),
    (ClipNotFound, 404, "clip-not-found", "Clip not found"),
    (PathOutsideRoot, 403, "outside-data-root", "Path outside the data root"),
    (ClipError, 422, "bad-clip", "Clip cannot be used"),
    (DeviceError, 503, "device-unavailable", "Device unavailable"),
    (QueueFull, 503, "queue-full", "Job queue full"),
    (CacheFull, 503, "cache-full", "Box cache full"),
    (QueueUnavailable, 503, "queue-unavailable", "Job queue unavailable"),
    (CacheUnavailable, 503, "cache-unavailable", "Box cache unavailable"),
    (MofoError, 400, "bad-request", "Bad request"),
]


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers or {}
        self.extra = extra


def problem_body(status: int, slug: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": detail, **extra}


async def send_problem(send: Send, problem: Problem, instance: str | None = None) -> None:
    """Answer with ``problem`` straight from ASGI middleware (no route ran)."""
    body = problem_body(problem.status, problem.slug, problem.title, problem.detail)
    if instance:
        body["instance"] = instance
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in problem.headers.items()),
    ]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def problem_response(problem: Problem, instance: str | None = None) -> JSONResponse:
    body = problem_body(
        problem.status, problem.slug, problem.title, problem.detail, **problem.extra
    )
    if instance:
        body["instance"] = instance
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON
    )


def public_detail(exc: CacheUnavailable) -> str:
    """A Redis error as clients may read it: without the server's address (host, port, db) or
    the connection error after "unreachable"; the log keeps the whole message."""
    text = re.sub(r" at \S+", "", str(exc), count=1)
    head, unreachable, _ = text.partition(" unreachable")
    return head + unreachable if unreachable else text


def from_mofo_error(exc: MofoError) -> Problem:
    detail = str(exc)
    if isinstance(exc, CacheUnavailable):
        log.warning("%s", exc)
        detail = public_detail(exc)
    for cls, status, slug, title in _MOFO_ERRORS:
        if isinstance(exc, cls):
            return Problem(status, slug, title, detail)
    raise AssertionError("MofoError is in the table")  # pragma: no cover


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = []
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc) or "request"
        msg = err.get("msg", "invalid")
        parts.append(f"{where}: {msg}")
        errors.append({"field": where, "message": msg})
    return "; ".join(parts) or "invalid request", errors


# Standard HTTP errors raised by routing (unknown route, wrong method).
_HTTP_SLUGS = {404: "not-found", 405: "method-not-allowed", 413: "too-large", 400: "bad-request"}


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(MofoError)
    async def _mofo(request: Request, exc: MofoError) -> JSONResponse:
        return problem_response(from_mofo_error(exc), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = _validation_detail(exc)
        problem = Problem(422, "invalid-parameters", "Invalid parameters", detail, errors=errors)
        return problem_response(problem, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = _HTTP_SLUGS.get(exc.status_code, f"http-{exc.status_code}")
        title = slug.replace("-", " ").capitalize()
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        problem = Problem(exc.status_code, slug, title, detail, headers=dict(exc.headers or {}))
        return problem_response(problem, request.url.path)

    # Innermost of the middlewares added so far (app.py adds the body limit and metrics after).
    app.add_middleware(UnhandledErrors)


class UnhandledErrors:
    """A bug becomes a 500 problem, its traceback logged once, the connection kept.

    (A handler for ``Exception`` would run in Starlette's outermost middleware, which raises the
    error again after answering: the server then logs it a second time and drops the connection.)
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # nothing can be said now; the server closes the connection
                return
            problem = Problem(
                500, "internal-error", "Internal error", "the server failed; the error is logged"
            )
            await problem_response(problem, scope.get("path"))(scope, receive, send)
