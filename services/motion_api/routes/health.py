"""Liveness, readiness (flow warmed, Redis reachable) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from mofo.services.motion_api.deps import Service
from mofo.services.motion_api.problems import public_detail
from mofo.services.motion_api.schemas import Health, Readiness
from mofo.shared.cache import CacheFull, CacheUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready; `detail` says why"}},
    summary="Ready to serve: flow warmed up, and Redis reachable and taking writes when configured",
)
async def readyz(service: Service):
    detail = None
    reachable = True
    writable = True
    try:
        await run_in_threadpool(service.cache.ping)  # a write: a full Redis is not ready
    except CacheFull as exc:
        writable, detail = False, public_detail(exc)
    except CacheUnavailable as exc:
        reachable, detail = False, public_detail(exc)
    warmed = service.flow_warmed.is_set()
    if not warmed:
        detail = service.warmup_error or "flow backend warming up"
    body = Readiness(
        ready=warmed and reachable and writable,
        device=str(service.device),
        backend=service.backend,
        flow_warmed=warmed,
        cache="redis" if service.settings.redis_url else "memory",
        cache_reachable=reachable,
        jobs=service.jobs.kind,
        detail=detail,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    summary="Prometheus metrics",
)
async def metrics(service: Service) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
