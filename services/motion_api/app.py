"""The motion API: ``create_app(settings)`` builds it; ``mofo serve`` runs it under uvicorn."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from mofo.services.motion_api import problems
from mofo.services.motion_api.auth import ApiKeyMiddleware
from mofo.services.motion_api.jobs import LocalJobs, RQJobs
from mofo.services.motion_api.limits import BodyLimitMiddleware
from mofo.services.motion_api.metrics import MetricsMiddleware
from mofo.services.motion_api.routes import boxes, health, images, jobs
from mofo.services.motion_api.service import MotionService
from mofo.shared.settings import Settings

STATIC = resources.files("mofo.services.motion_api") / "static"
# Swagger UI 5 (OpenAPI 3.1), shipped by the fastapi-offline package; only its assets are used.
DOCS_ASSETS = resources.files("fastapi_offline") / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Built now, not at start-up, so that a bad device or Redis URL fails before serving.
    service = MotionService(settings)
    service.jobs = (
        RQJobs(service, settings.queue_url, settings.queue_name, settings.job_ttl_s)
        if settings.redis_url
        else LocalJobs(service, settings.job_workers, settings.job_ttl_s)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.warmup:
            threading.Thread(target=service.warm_up, name="mofo-warmup", daemon=True).start()
        else:
            service.flow_warmed.set()
        yield
        service.jobs.close()
        service.close()

    app = FastAPI(
        title="MOFO motion API",
        version="1",
        summary="Motion boxes, motion-boundary maps and previews of video clips (TV-L1 flow).",
        lifespan=lifespan,
        docs_url=None,  # served below from local assets, so /docs works offline
        redoc_url=None,
    )
    app.state.service = service
    problems.install(app)
    for router in (boxes.router, images.router, jobs.router, health.router):
        app.include_router(router)

    index = (STATIC / "index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return index

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} — docs",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    mounts = {"/static": STATIC, "/docs-assets": DOCS_ASSETS}
    for path, folder in mounts.items():
        app.mount(path, StaticFiles(directory=str(folder)), name=path.strip("/"))
    # Outermost first: metrics see every answer, 413s included.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_upload_bytes,
        max_uploads=settings.max_uploads,
        max_per_client=settings.max_uploads_per_client,
        max_spool_bytes=settings.max_spool_bytes,
        timeout_s=settings.body_timeout_s,
        idle_s=settings.body_idle_s,
        metrics=service.metrics,
    )
    # Keys before bodies: a caller without one is answered before its upload is read.
    app.add_middleware(
        ApiKeyMiddleware, keys=settings.api_key_set(), metrics_public=settings.metrics_public
    )

    def templates() -> list[str]:  # every route's template, the mounted folders' too
        mounted = [f"{path}/{{path}}" for path in mounts]
        return [*app.openapi()["paths"], "/", "/docs", "/openapi.json", *mounted]

    app.add_middleware(MetricsMiddleware, metrics=service.metrics, templates=templates)
    return app
