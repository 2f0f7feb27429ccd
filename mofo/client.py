"""A Python client for the motion service (``mofo serve``): box records, pictures and jobs over
HTTP, with the service's problem documents raised as typed exceptions.

::

    from mofo.client import Client

    with Client("http://127.0.0.1:8000", api_key=None) as client:
        record = client.boxes("clip.mp4", quality="fast", num_frames=16)  # a BoxRecord
        job = client.submit_job(paths=["clips/a.mp4", "clips/b.mp4"])  # under the data root
        job = client.wait(job, on_progress=lambda j: print(j.progress.done, j.progress.total))

A local clip (a path, bytes or a binary file object) is uploaded; a clip already on the server is
named by its path under the server's data root (``path=`` / ``paths=``). Answers of 429 and of
503 with ``Retry-After`` are retried after the time the server asks for, the upload sent again
from its start. Importing this module loads neither torch nor the service.
"""

from __future__ import annotations

import email.utils
import io
import mimetypes
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from mofo.shared import errors
from mofo.shared.record import BoxRecord

PROBLEM_TYPE = "urn:mofo:problem:"  # the service's problem types: this prefix and a slug
DEFAULT_TIMEOUT_S = 150.0  # past the service's default deadline (120 s): its 504 arrives first
CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_RETRY_WAIT_S = 120.0  # the most a call waits in all for a busy server
DEFAULT_POLL_S = 0.5
ENDED = frozenset({"finished", "failed", "cancelled"})  # a job in one of these will not change
UPLOAD_NAME = "upload"  # how the server's messages call an upload given without a name

Upload = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]


# -- errors ------------------------------------------------------------------------------------


class MofoError(errors.MofoError):
    """A call the service refused or could not answer: its problem document (RFC 9457) as
    ``status``, ``type``, ``title``, ``detail`` and the whole ``problem``. Also a
    :class:`mofo.MofoError`, so one ``except`` catches the library's errors and the client's."""

    def __init__(
        self,
        status: int | None,
        type: str,
        title: str,
        detail: str,
        problem: dict[str, Any] | None = None,
    ):
        super().__init__(f"{status} {title}: {detail}" if status else f"{title}: {detail}")
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.problem = problem if problem is not None else {}

    @property
    def slug(self) -> str | None:
        """The service's name for the problem (``not-a-video``, ``too-long``, ``busy``)."""
        return self.type.removeprefix(PROBLEM_TYPE) if self.type.startswith(PROBLEM_TYPE) else None


class BadRequest(MofoError):
    """4xx: the request cannot be served as sent (400, and any 4xx without a class of its own),
    or a redirect, which the client does not follow."""


class TooLarge(BadRequest):
    """413: the upload or JSON body is over the server's limit."""


class UnsupportedMedia(BadRequest):
    """415: the upload is not a video (text, an image, audio only, random bytes)."""


class Unprocessable(BadRequest):
    """422: bad options, or a clip the server refuses (corrupt, too long, too much work)."""


class Unauthorized(MofoError):
    """401: the server needs an API key and none was sent."""


class Forbidden(MofoError):
    """403: a wrong API key, or a path leading out of the server's data root."""


class NotFound(MofoError):
    """404: no such job, cached record, clip under the data root, or endpoint."""


class Busy(MofoError):
    """429, or 503 with ``Retry-After``: the server is full for now; ``retry_after`` is how many
    seconds it asked the client to wait (None when it did not say)."""

    def __init__(self, *args: Any, retry_after: float | None = None):
        super().__init__(*args)
        self.retry_after = retry_after


class ServerError(MofoError):
    """5xx: the server failed, timed out (504) or lacks what it needs."""


class Unavailable(ServerError):
    """503 without ``Retry-After``: the box cache or job queue (Redis), or the device, is away."""


class ConnectionFailed(MofoError):
    """No answer: the server could not be reached, or the connection broke or timed out."""

    def __init__(self, detail: str):
        super().__init__(None, "", "Connection failed", detail)


class WaitTimeout(MofoError):
    """:meth:`Client.wait` gave up before the job ended; ``job`` is its last state."""

    def __init__(self, job: Job, timeout: float):
        super().__init__(
            None,
            "",
            "Job still running",
            f"job {job.id} is {job.status} after {timeout:g} s "
            f"({job.progress.done} of {job.progress.total} clips done)",
        )
        self.job = job


_BY_STATUS: dict[int, type[MofoError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: TooLarge,
    415: UnsupportedMedia,
    422: Unprocessable,
    429: Busy,
}
# Full for now whether or not a Retry-After made it through a proxy.
_BUSY_SLUGS = frozenset({"busy", "uploads-busy", "job-uploads-full"})


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); None if absent
    or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": a date in UTC
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_from_response(response: httpx.Response) -> MofoError:
    """The exception for a refused answer: its class by status (and by the problem's type where
    the status alone is ambiguous), its fields from the problem document. A body that is not one
    (a proxy's error page) is named by the status and its first 500 characters; a redirect (not
    followed: an upload cannot always be sent twice) names where it leads."""
    status = response.status_code
    if response.is_redirect:
        where = response.headers.get("Location", "elsewhere")
        detail = f"the server redirects to {where}; give the client that address as its base URL"
        return BadRequest(status, "about:blank", response.reason_phrase, detail)
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {
            "type": "about:blank",
            "title": response.reason_phrase or f"HTTP {status}",
            "status": status,
            "detail": response.text[:500].strip() or f"HTTP {status}",
        }
    type_ = str(problem.get("type") or "about:blank")
    title = str(problem.get("title") or response.reason_phrase or f"HTTP {status}")
    detail = str(problem.get("detail") or title)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    busy = retry_after is not None or type_.removeprefix(PROBLEM_TYPE) in _BUSY_SLUGS
    if status == 429 or (status == 503 and busy):
        return Busy(status, type_, title, detail, problem, retry_after=retry_after)
    if status == 503:
        cls: type[MofoError] = Unavailable
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, BadRequest)
    return cls(status, type_, title, detail, problem)


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxOptions:
    """The settings that change a record, as the service's query options (``quality``,
    ``short_side``, sampling, motion step, TV-L1 backend and stopping); None leaves a setting to
    the server's default. The server checks them (a bad one is :class:`Unprocessable`)."""

    quality: str | None = None
    short_side: int | None = None
    stride: int | None = None
    fps: float | None = None
    num_frames: int | None = None
    motion_step: int | None = None
    motion_step_s: float | None = None
    backend: str | None = None
    stopping: str | None = None

    def query(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class JobProgress:
    """Clips done and failed of ``total``; where the server reports them, the current clip's
    frame pairs (``pairs_done`` of ``pairs_total``) and an estimate of the seconds left."""

    total: int
    done: int = 0
    failed: int = 0
    pairs_done: int | None = None
    pairs_total: int | None = None
    eta_s: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobProgress:
        known = {k: data[k] for k in cls.__dataclass_fields__ if data.get(k) is not None}
        return cls(**{"total": 0, **known})


@dataclass(frozen=True)
class ClipOutcome:
    """One clip of a job: its record, or why it failed."""

    video: str
    ok: bool
    record: BoxRecord | None = None
    error: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipOutcome:
        record = data.get("record")
        return cls(
            video=data["video"],
            ok=bool(data["ok"]),
            record=BoxRecord.from_dict(record) if record is not None else None,
            error=data.get("error"),
        )


@dataclass(frozen=True)
class Job:
    """A job's state as the server gave it (``raw``: the whole answer, fields this client does
    not know included). ``status`` is ``queued``, ``running``, ``finished``, ``failed`` or
    ``cancelled``; ``result`` holds the clips' outcomes once the job has finished."""

    id: str
    status: str
    progress: JobProgress
    result: tuple[ClipOutcome, ...] | None
    error: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    status_url: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def records(self) -> list[BoxRecord]:
        """The records of the clips that succeeded, in the job's order."""
        return [o.record for o in self.result or () if o.record is not None]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        result = data.get("result")
        return cls(
            id=data["id"],
            status=str(data["status"]),
            progress=JobProgress.from_dict(data.get("progress") or {}),
            result=None if result is None else tuple(ClipOutcome.from_dict(o) for o in result),
            error=data.get("error"),
            created_at=data["created_at"],
            started_at=data.get("started_at"),
            ended_at=data.get("ended_at"),
            status_url=data.get("status_url", f"/v1/jobs/{data['id']}"),
            raw=data,
        )


# -- uploads -----------------------------------------------------------------------------------


class _Clip:
    """A clip to upload as the multipart field ``file``, sent again whole on a retry: a path is
    reopened, a file object rewound (httpx sends it from its start), a stream that cannot seek
    read into memory first."""

    def __init__(self, clip: Upload, name: str | None):
        self.path: Path | None = None
        self.data: bytes | IO[bytes]
        if isinstance(clip, str | os.PathLike):
            self.path = Path(clip)
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: no such file")
            default = self.path.name
        elif isinstance(clip, bytes | bytearray | memoryview):
            self.data = bytes(clip)
            default = UPLOAD_NAME
        elif hasattr(clip, "read"):
            if isinstance(clip, io.TextIOBase):
                raise TypeError("open the clip in binary mode ('rb'), not as text")
            seekable = getattr(clip, "seekable", lambda: False)()
            self.data = clip if seekable else clip.read()
            default = os.path.basename(str(getattr(clip, "name", "") or "")) or UPLOAD_NAME
        else:
            raise TypeError(
                f"a clip is a path, bytes or a binary file object, got {type(clip).__name__}"
            )
        self.name = name or default
        self.media_type = mimetypes.guess_type(self.name)[0] or "application/octet-stream"

    @contextmanager
    def files(self) -> Iterator[dict[str, tuple[str, Any, str]]]:
        with open(self.path, "rb") if self.path else nullcontext(self.data) as content:
            yield {"file": (self.name, content, self.media_type)}


# -- the client --------------------------------------------------------------------------------


class Client:
    """The motion service at ``base_url`` (a path prefix, if any, included).

    ``api_key``: sent as ``Authorization: Bearer KEY`` (servers with ``MOFO_API_KEYS``).
    ``timeout``: seconds for one answer. ``max_retries``: how many times a busy answer (429, or
    503 with ``Retry-After``) is retried after the time it asks for, within ``max_retry_wait``
    seconds in all; other errors are raised at once. ``sleep``: how the client waits (retries,
    polling); tests pass their own.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
        )
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- boxes and pictures --------------------------------------------------------------------

    def boxes(
        self,
        clip: Upload | None = None,
        *,
        path: str | None = None,
        name: str | None = None,
        refresh: bool = False,
        options: BoxOptions | None = None,
        **settings: Any,
    ) -> BoxRecord:
        """The box record of a clip: ``clip`` uploaded (``name``: its filename in the server's
        messages), or ``path`` under the server's data root. ``settings`` are
        :class:`BoxOptions` fields (over ``options``); ``refresh`` recomputes a cached record."""
        query = _options(options, settings).query()
        if refresh:
            query["refresh"] = True
        response = self._clip_call("/v1/boxes", clip, path, name, query)
        return BoxRecord.from_dict(response.json())

    def lookup(
        self,
        video_id: str,
        *,
        params: str | None = None,
        options: BoxOptions | None = None,
        **settings: Any,
    ) -> BoxRecord:
        """The cached record of ``video_id`` (an upload's ``sha256-...`` id or a path under the
        data root) under the settings, or the record whose settings hash is ``params``;
        :class:`NotFound` when there is none."""
        query = _options(options, settings).query()
        if params is not None:
            query["params"] = params
        response = self._call("GET", f"/v1/boxes/{quote(video_id)}", params=query)
        return BoxRecord.from_dict(response.json())

    def motion_map(
        self,
        clip: Upload | None = None,
        *,
        path: str | None = None,
        name: str | None = None,
        options: BoxOptions | None = None,
        **settings: Any,
    ) -> bytes:
        """A PNG strip: frames with their boxes above their motion-boundary maps."""
        query = _options(options, settings).query()
        return self._clip_call("/v1/motion-map", clip, path, name, query).content

    def preview(
        self,
        clip: Upload | None = None,
        *,
        path: str | None = None,
        name: str | None = None,
        format: str = "gif",
        options: BoxOptions | None = None,
        **settings: Any,
    ) -> bytes:
        """The clip at working size with its boxes drawn: an animated GIF or (``format="mp4"``)
        an H.264 MP4."""
        query = {**_options(options, settings).query(), "format": format}
        return self._clip_call("/v1/preview", clip, path, name, query).content

    # -- jobs ----------------------------------------------------------------------------------

    def submit_job(
        self,
        clip: Upload | None = None,
        *,
        paths: Sequence[str] | None = None,
        name: str | None = None,
        options: BoxOptions | None = None,
        **settings: Any,
    ) -> Job:
        """Box clips in the background: one uploaded ``clip`` (a long one), or ``paths`` under
        the server's data root. Jobs box every frame unless the settings sample."""
        if isinstance(clip, list | tuple):
            raise TypeError(
                "a job takes one uploaded clip, or paths=[...] under the server's data root; "
                "submit several uploads as several jobs"
            )
        if isinstance(paths, str):
            raise TypeError("paths is a list of paths under the data root, not one string")
        if (clip is None) == (paths is None):
            raise TypeError("give either a clip to upload or paths under the data root")
        query = _options(options, settings).query()
        if paths is not None:
            response = self._call("POST", "/v1/jobs", params=query, json={"paths": list(paths)})
        else:
            response = self._call("POST", "/v1/jobs", params=query, upload=_Clip(clip, name))
        return Job.from_dict(response.json())

    def job(self, job: Job | str) -> Job:
        """A job's state now."""
        return Job.from_dict(self._call("GET", _job_path(job)).json())

    def cancel(self, job: Job | str) -> Job:
        """Cancel a job: its state after, ``cancelled``, or as it ended if it had already."""
        return Job.from_dict(self._call("DELETE", _job_path(job)).json())

    def wait(
        self,
        job: Job | str,
        *,
        timeout: float = 600.0,
        poll: float = DEFAULT_POLL_S,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll a job every ``poll`` seconds until it has ended (finished, failed or
        cancelled) and return it; ``on_progress(job)`` is called whenever its status or
        progress changed. After ``timeout`` seconds, :class:`WaitTimeout`."""
        deadline = time.monotonic() + timeout
        seen: tuple[str, JobProgress] | None = None
        while True:
            state = self.job(job)
            if on_progress is not None and (state.status, state.progress) != seen:
                seen = (state.status, state.progress)
                on_progress(state)
            if state.ended:
                return state
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(state, timeout)
            self._sleep(min(poll, left))

    # -- the service ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``{"status": "ok"}`` while the server process is up."""
        return self._call("GET", "/healthz").json()

    def ready(self) -> dict[str, Any]:
        """The server's readiness (``ready``, ``device``, ``backend``, ``flow_warmed``, ``cache``,
        ``cache_reachable``, ``jobs``, ``detail``), ready or not."""
        try:
            return self._call("GET", "/readyz").json()
        except ServerError as exc:  # not ready: 503 with the same body
            if "ready" in exc.problem:
                return exc.problem
            raise

    # -- requests ------------------------------------------------------------------------------

    def _clip_call(
        self,
        route: str,
        clip: Upload | None,
        path: str | None,
        name: str | None,
        query: dict[str, Any],
    ) -> httpx.Response:
        if (clip is None) == (path is None):
            raise TypeError("give either a clip to upload or a path under the data root")
        if path is not None:
            return self._call("POST", route, params=query, json={"path": path})
        return self._call("POST", route, params=query, upload=_Clip(clip, name))

    def _call(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        upload: _Clip | None = None,
    ) -> httpx.Response:
        """One call, retried while the server is busy and says when to come back."""
        waited = 0.0
        attempt = 0
        while True:
            with upload.files() if upload else nullcontext(None) as files:
                try:
                    response = self._http.request(
                        method, url, params=params, json=json, files=files
                    )
                except httpx.TransportError as exc:
                    raise ConnectionFailed(
                        f"{method} {exc.request.url}: {exc or type(exc).__name__}"
                    ) from exc
            if response.is_success:
                return response
            error = error_from_response(response)
            wait = error.retry_after if isinstance(error, Busy) else None
            if wait is None or attempt >= self.max_retries or waited + wait > self.max_retry_wait:
                raise error
            self._sleep(wait)
            waited += wait
            attempt += 1


def _options(options: BoxOptions | None, settings: dict[str, Any]) -> BoxOptions:
    """``options`` with ``settings`` over it; an unknown setting is a TypeError naming it."""
    return replace(options or BoxOptions(), **settings)


def _job_path(job: Job | str) -> str:
    return "/v1/jobs/" + quote(job.id if isinstance(job, Job) else job, safe="")
