"""Optional API keys: with ``MOFO_API_KEYS`` set, every call but the open ones needs
``Authorization: Bearer KEY``. Checked before a request's body is read, so a stranger's upload
costs the server nothing; keys are compared in constant time.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from mofo.services.motion_api.problems import Problem, send_problem

# Open whatever the keys: liveness and readiness (the orchestrator's probes), the page and the
# API's documentation (they hold no data; the page asks for a key when the API needs one).
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/docs", "/openapi.json"})
OPEN_PREFIXES = ("/static/", "/docs-assets/")


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: frozenset[str], metrics_public: bool = True):
        self.app = app
        self.keys = [k.encode() for k in sorted(keys)]
        self.open_paths = OPEN_PATHS | ({"/metrics"} if metrics_public else set())

    def _is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(OPEN_PREFIXES)

    def _granted(self, given: bytes) -> bool:
        # every key compared, in constant time each: the answer's timing tells nothing
        matches = [hmac.compare_digest(given, key) for key in self.keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or self._is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            problem = Problem(
                401,
                "unauthorized",
                "API key needed",
                "this server needs an API key: send Authorization: Bearer KEY",
                headers={"WWW-Authenticate": 'Bearer realm="mofo"'},
            )
        elif not self._granted(token.strip()):
            problem = Problem(
                403, "forbidden", "Wrong API key", "the API key is not one of this server's"
            )
        else:
            await self.app(scope, receive, send)
            return
        await send_problem(send, problem, scope.get("path"))
