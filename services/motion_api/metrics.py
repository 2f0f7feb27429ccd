"""Prometheus metrics of one service instance (its own registry, so several apps can live in one
process, as in the tests), and the ASGI middleware that counts requests by route template."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mofo_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mofo_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "mofo_http_requests_in_flight", "HTTP requests in progress", registry=r
        )
        self.queue_wait = Histogram(
            "mofo_flow_queue_wait_seconds",
            "Time a request's frame pairs waited for a flow batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_pairs = Histogram(
            "mofo_flow_batch_pairs",
            "Frame pairs per flow call (the GPU batch size)",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "mofo_pending_requests", "Clip requests admitted and not finished", registry=r
        )
        self.cache = Counter(
            "mofo_cache_lookups",
            "Box cache lookups (hit, miss) and recent-analysis lookups (recent_hit, recent_miss)",
            ["result"],
            registry=r,
        )
        self.rejected = Counter(
            "mofo_rejected_requests", "Requests refused by load limits", ["reason"], registry=r
        )
        self.uploads = Gauge("mofo_uploads_in_flight", "Request bodies coming in now", registry=r)
        self.upload_bytes = Gauge(
            "mofo_upload_bytes",
            "Bytes of the bodies coming in (declared, else received)",
            registry=r,
        )

    def observe_batch(self, pairs: int, waits: list[float]) -> None:
        self.batch_pairs.observe(pairs)
        for wait in waits:
            self.queue_wait.observe(wait)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request by its route template (``/v1/jobs/{job_id}``, not the id),
    refusals that come before routing (a missing API key, a body too large) too; files of a
    mounted folder as ``/static/{path}``. ``templates`` gives the app's route templates, to name
    what no route ran (asked for once, at the first such answer)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, templates: Callable[[], list[str]] = list):
        self.app = app
        self.metrics = metrics
        self.templates = templates
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def _template(self, path: str) -> str:
        """The template of the route ``path`` would take, for answers given before routing."""
        if self._patterns is None:
            self._patterns = [(_pattern(t), t) for t in self.templates()]
        for pattern, template in self._patterns:
            if pattern.fullmatch(path):
                return template
        return "<unmatched>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()
        self.metrics.in_flight.inc()
        asked = scope["path"]  # as it came in: routing rewrites it for mounts
        counted = False

        def count() -> None:
            # Once the response's last byte is sent: a client that has read it and asks
            # /metrics next sees it counted, though the request's task may not have ended yet
            # (a file response closes its file after sending).
            nonlocal counted
            if counted:
                return
            counted = True
            self.metrics.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or self._template(asked)
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - start)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                count()

        try:
            await self.app(scope, receive, send_status)
        finally:
            count()  # no response, or one cut short


def _pattern(template: str) -> re.Pattern[str]:
    """``/v1/jobs/{job_id}`` → a pattern of such paths; a trailing ``{path}`` takes the rest."""
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join(
        (".+" if part == "{path}" else "[^/]+") if part.startswith("{") else re.escape(part)
        for part in parts
    )
    return re.compile(regex)
