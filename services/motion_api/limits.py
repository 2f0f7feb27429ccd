"""Request bodies, bounded while they stream in, before anything parses them: size, time, and
how many at once.

A POST body streams through this middleware to its route, which spools an upload once (the
form's temporary file: memory up to 1 MiB, then disk). On the way it is counted:

- over ``max_bytes``, declared or sent: 413 without the rest being read or kept. Uvicorn then
  reads and drops what the client still sends, so a client that sends its whole body before
  reading the answer (httpx, requests) still gets the 413, not a reset;
- ``max_uploads`` bodies still coming in (``max_per_client`` of them from the same client
  address), or the bytes of the bodies of all requests in progress (declared, else as they
  arrive; held until the answer has gone, as the spooled files are) past ``max_spool_bytes``:
  503 ``uploads-busy`` with ``Retry-After``, before a byte of it is read; the connection is
  closed;
- a body not complete within ``timeout_s``, or silent for ``idle_s``: 408 ``body-timeout``, and
  the connection is closed, so neither a stalled nor a dripping client holds a slot for long.

The refusals found while reading are raised from ``receive()`` as :class:`BodyRefused` (a
:class:`Problem`), so the route's own error handling answers them as problem documents.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mofo.services.motion_api.metrics import Metrics
from mofo.services.motion_api.problems import Problem, send_problem

BODY_METHODS = ("POST", "PUT", "PATCH")
UPLOADS_RETRY_S = 5  # Retry-After of a busy answer: uploads end (or are cut) within seconds


class BodyRefused(Problem):
    """A request body refused while it streams in (raised from the wrapped ``receive``)."""


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_uploads: int = 16,
        max_per_client: int = 0,
        max_spool_bytes: int | None = None,
        timeout_s: float = 300.0,
        idle_s: float = 20.0,
        metrics: Metrics | None = None,
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.max_uploads = max_uploads
        self.max_per_client = max_per_client  # 0: no limit per client
        self.max_spool_bytes = max_spool_bytes if max_spool_bytes is not None else 4 * max_bytes
        self.timeout_s = timeout_s
        self.idle_s = idle_s
        self.metrics = metrics
        self.uploads = 0  # bodies coming in now (one event loop: no lock needed)
        self.spooled = 0  # bytes of the requests in progress: declared, or received so far
        self.by_client: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._answer(send, self._too_large(f"declared {declared} bytes"), scope)
            return
        if self.uploads >= self.max_uploads:
            await self._answer(send, self._busy(f"{self.uploads} uploads are coming in"), scope)
            return
        client = (scope.get("client") or ("?", 0))[0]
        if self.max_per_client and self.by_client[client] >= self.max_per_client:
            mine = self._busy(
                f"{self.by_client[client]} uploads from your address are coming in",
                "the most this server takes from one client at once",
            )
            await self._answer(send, mine, scope)
            return
        if declared is not None and self.spooled + declared > self.max_spool_bytes:
            busy = self._busy(f"uploads in progress hold {self.spooled} bytes")
            await self._answer(send, busy, scope)
            return
        reader = _BodyReader(self, receive, declared or 0, client)
        self.uploads += 1
        self.by_client[client] += 1
        self.spooled += reader.reserved
        self._gauge()
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, reader.receive, send_tracked)
        except BodyRefused as refused:  # not answered inside the app (no route read it)
            if started:
                raise
            await self._answer(send, refused, scope)
        finally:
            reader.done_coming_in()
            self.spooled -= reader.reserved
            self._gauge()

    def body_complete(self, client: str) -> None:
        """A body has come in whole (or its request ended): its slot is free for another."""
        self.uploads -= 1
        self.by_client[client] -= 1
        if not self.by_client[client]:
            del self.by_client[client]
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.uploads.set(self.uploads)
            self.metrics.upload_bytes.set(self.spooled)

    def refused(self, reason: str, problem: BodyRefused) -> BodyRefused:
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()
        return problem

    def _too_large(self, what: str) -> BodyRefused:
        return self.refused(
            "too_large",
            BodyRefused(
                413,
                "too-large",
                "Upload too large",
                f"the request body exceeds the upload limit of {self.max_bytes} bytes ({what})",
            ),
        )

    def _busy(self, what: str, most: str = "the most this server takes at once") -> BodyRefused:
        return self.refused(
            "uploads_busy",
            BodyRefused(
                503,
                "uploads-busy",
                "Too many uploads",
                f"{what}, {most}; retry in {UPLOADS_RETRY_S} s",
                headers={"Retry-After": str(UPLOADS_RETRY_S), "Connection": "close"},
            ),
        )

    def _timeout(self, what: str) -> BodyRefused:
        return self.refused(
            "body_timeout",
            BodyRefused(
                408,
                "body-timeout",
                "Request body too slow",
                what,
                headers={"Connection": "close"},
            ),
        )

    async def _answer(self, send: Send, problem: Problem, scope: Scope) -> None:
        await send_problem(send, problem, scope.get("path"))


class _BodyReader:
    """One request's ``receive``, with the size, time and spool bounds applied."""

    def __init__(self, gate: BodyLimitMiddleware, receive: Receive, declared: int, client: str):
        self.gate = gate
        self._receive = receive
        self.client = client
        self.reserved = declared  # counted in the gate's spooled bytes
        self.received = 0
        self.complete = False
        self.deadline = time.monotonic() + gate.timeout_s

    def done_coming_in(self) -> None:
        if not self.complete:
            self.complete = True
            self.gate.body_complete(self.client)

    async def receive(self) -> Message:
        if self.complete:
            return await self._receive()  # only a disconnect can come now
        gate = self.gate
        left = self.deadline - time.monotonic()
        wait = min(gate.idle_s, left)
        try:
            message = await asyncio.wait_for(self._receive(), max(wait, 0.001))
        except TimeoutError:
            if wait < gate.idle_s:
                what = f"the body did not arrive within {gate.timeout_s:g} s"
            else:
                what = f"no part of the body came for {gate.idle_s:g} s"
            raise gate._timeout(
                f"{what} ({self.received} bytes received); send it at once, or faster"
            ) from None
        if message["type"] != "http.request":
            return message
        self.received += len(message.get("body", b""))
        if self.received > gate.max_bytes:
            raise gate._too_large(f"more than {gate.max_bytes} bytes sent")
        if self.received > self.reserved:  # no Content-Length (or a short one): count as it comes
            gate.spooled += self.received - self.reserved
            self.reserved = self.received
            gate._gauge()
            if gate.spooled > gate.max_spool_bytes:
                raise gate._busy(f"uploads in progress hold {gate.spooled} bytes")
        if not message.get("more_body", False):
            self.done_coming_in()
        return message


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
