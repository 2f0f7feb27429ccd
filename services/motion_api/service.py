"""The service's state and its one way of working on a clip: admit the request (429 when the
service is full), run decoding and analysis on a request thread with the flow going through the
batcher, give up at the deadline (504), and keep the record in the box cache."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import torch
from starlette.concurrency import run_in_threadpool

from mofo.services.motion_api.metrics import Metrics
from mofo.services.motion_api.problems import Problem
from mofo.shared.batcher import FlowBatcher
from mofo.shared.cache import BoxCache, MemoryBoxCache, RedisBoxCache, is_upload_id
from mofo.shared.decode import plan_work
from mofo.shared.errors import Cancelled
from mofo.shared.params import MotionParams
from mofo.shared.paths import resolve_under_root
from mofo.shared.pipeline import (
    DEFAULT_BATCH,
    ClipResult,
    analyse_clip,
    default_backend,
    resolve_device,
)
from mofo.shared.record import BoxRecord
from mofo.shared.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
# How often a request waiting for its clip checks that its client is still connected (s).
DISCONNECT_POLL_S = 0.5
HASH_CHUNK = 1 << 20
UPLOAD_ID_PREFIX = "sha256-"


@dataclass
class ClipSource:
    """A clip to work on: what the record calls it, what messages call it, and its bytes."""

    video_id: str  # cache key and the record's ``video``
    name: str  # for messages: the upload's filename or the path under the data root
    source: str | IO[bytes]  # a server path or a seekable file


def content_id(file: IO[bytes]) -> str:
    """An upload's id: ``sha256-`` and the first 32 hex digits of its content's SHA-256."""
    digest = hashlib.sha256()
    file.seek(0)
    while chunk := file.read(HASH_CHUNK):
        digest.update(chunk)
    file.seek(0)
    return UPLOAD_ID_PREFIX + digest.hexdigest()[:32]


def clip_under_root(root: Path | None, relative: str) -> ClipSource:
    """A path request's clip; path errors go out as their problems (403, 404)."""
    if root is None:
        raise Problem(
            400,
            "no-data-root",
            "Path requests are off",
            "this server has no data root (MOFO_DATA_ROOT); upload the clip instead",
        )
    path, rel = resolve_under_root(root, relative)
    if is_upload_id(rel):  # its record would be an upload's: keep the two id spaces apart
        raise Problem(
            422,
            "reserved-name",
            "Reserved name",
            f"path {rel!r} is named like an uploaded clip's id (sha256- and 32 hex digits); "
            "rename the file or upload it",
        )
    return ClipSource(video_id=rel, name=rel, source=str(path))


class RecentResults:
    """The last analyses (frames and motion maps), so that a page asking for a clip's boxes,
    then its motion map and preview, runs the flow once. Bounded by bytes; thread-safe."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._items: OrderedDict[tuple[str, str], tuple[ClipResult, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _size(result: ClipResult) -> int:
        extra = result.clip.motion_frames
        held = result.clip.frames.nbytes + (0 if extra is None else extra.nbytes)
        return held + result.analysis.maps.numel() * 4

    def get(self, video_id: str, params_hash: str) -> ClipResult | None:
        with self._lock:
            item = self._items.get((video_id, params_hash))
            if item is None:
                return None
            self._items.move_to_end((video_id, params_hash))
            return item[0]

    def put(self, result: ClipResult) -> None:
        size = self._size(result)
        if size > self.budget // 4:  # a long clip would push out everything else
            return
        key = (result.record.video, result.record.params)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (result, size)
            self._bytes += size
            while self._bytes > self.budget:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped


class WorkBudget:
    """Working pixels x frames that the clips being worked on may hold together
    (``MOFO_WORK_BUDGET_PIXELS``): each clip reserves its plan before decoding and waits for
    room, so memory stays bounded however many requests are admitted. Thread-safe."""

    def __init__(self, total: int):
        self.total = total
        self.used = 0
        self._room = threading.Condition()

    @contextmanager
    def reserve(self, pixels: int, cancel: threading.Event) -> Iterator[None]:
        """Hold ``pixels`` (at most ``total``) for the block; waiting ends when ``cancel`` is set
        (:class:`Cancelled`)."""
        pixels = min(pixels, self.total)
        with self._room:
            while self.used + pixels > self.total:
                if cancel.is_set():
                    raise Cancelled()
                self._room.wait(0.1)
            self.used += pixels
        try:
            yield
        finally:
            with self._room:
                self.used -= pixels
                self._room.notify_all()


class MotionService:
    """Everything the routes share: settings, device, batcher, cache, metrics, admission."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.backend = (
            default_backend(self.device) if settings.backend == "auto" else settings.backend
        )
        self.limits = settings.decode_limits()
        self.metrics = Metrics()
        max_batch = settings.max_batch_pairs or DEFAULT_BATCH[self.device.type]
        self.batcher = FlowBatcher(
            max_batch, settings.max_wait_ms / 1000, self.metrics.observe_batch, settings.tvl1_kernel
        )
        self.cache: BoxCache = (
            RedisBoxCache.from_url(settings.redis_url)
            if settings.redis_url
            else MemoryBoxCache(settings.cache_entries)
        )
        self.recent = RecentResults(settings.recent_bytes)
        self.work = WorkBudget(settings.work_budget_pixels)
        self.flow_warmed = threading.Event()
        self.warmup_error: str | None = None
        self._executor = ThreadPoolExecutor(settings.max_pending, thread_name_prefix="mofo-clip")
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._recent_s = 1.0  # moving average of request work time, for Retry-After

    def close(self) -> None:
        self.batcher.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- start-up ----------------------------------------------------------------------------

    def warm_up(self) -> None:
        """One flow call through the batcher at the default working size (compiles on CUDA)."""
        try:
            self.batcher.warm_up(self.device, self.backend)
            self.flow_warmed.set()
        except Exception as exc:  # readiness reports it; the process keeps serving health
            self.warmup_error = f"flow warm-up failed: {exc}"
            log.exception("flow warm-up failed")

    # -- per request ---------------------------------------------------------------------------

    def params(self, options, interactive: bool = True) -> MotionParams:
        """A request's settings; an interactive one that sets no sampling boxes at most
        ``interactive_frames`` frames spread over the clip (jobs box every frame)."""
        frames = self.settings.interactive_frames if interactive else 0
        try:
            return options.motion_params(self.backend, frames)
        except ValueError as exc:
            raise Problem(422, "invalid-parameters", "Invalid parameters", str(exc)) from None

    def analyse(
        self,
        clip: ClipSource,
        params: MotionParams,
        cancel: threading.Event,
        progress: Callable[[int, int], None] | None = None,
    ) -> ClipResult:
        """Decode and analyse one clip on the calling thread, flow through the batcher.

        Its work is planned from the header first (a clip over the work limits is refused before
        decoding) and reserved from the server's work budget until the analysis is done.
        ``progress`` is told (frame pairs done, pairs in all) as the flow goes.
        """

        def flow_fn(
            gray: torch.Tensor, first: list[int], second: list[int], p: MotionParams
        ) -> torch.Tensor:
            if cancel.is_set():
                raise Cancelled()
            return self.batcher.flow(gray, first, second, p, cancel, progress)

        if cancel.is_set():
            raise Cancelled()
        plan = plan_work(clip.source, params, self.limits, name=clip.name)
        with self.work.reserve(plan.pixels, cancel):
            if cancel.is_set():
                raise Cancelled()
            result = analyse_clip(
                clip.source,
                params,
                self.limits,
                self.device,
                name=clip.video_id,
                flow_fn=flow_fn,
                label=clip.name,
            )
        self.cache.put(result.record)
        self.recent.put(result)
        return result

    def analysis(
        self, clip: ClipSource, params: MotionParams, cancel: threading.Event
    ) -> ClipResult:
        """A clip's full analysis (frames and maps for pictures): a recent one, or a new one."""
        recent = self.recent.get(clip.video_id, params.hash())
        self.metrics.cache.labels("recent_hit" if recent else "recent_miss").inc()
        return recent if recent is not None else self.analyse(clip, params, cancel)

    async def cached(self, video_id: str, params_hash: str) -> BoxRecord | None:
        """The cached record, read off the event loop (Redis is network I/O)."""
        record = await run_in_threadpool(self.cache.get, video_id, params_hash)
        self.metrics.cache.labels("hit" if record else "miss").inc()
        return record

    async def run(
        self,
        work: Callable[[threading.Event], T],
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> T:
        """Run ``work(cancel)`` on a request thread under the load limits.

        ``cancel`` is set at the deadline (504) and when ``disconnected()`` says the client has
        gone: the flow stops at its next frame pair, and the request counts as pending until
        its thread has ended.
        """
        with self._pending_lock:
            if self._pending >= self.settings.max_pending:
                self.metrics.rejected.labels("queue_full").inc()
                retry = max(1, math.ceil(self._recent_s))
                raise Problem(
                    429,
                    "busy",
                    "Too many requests",
                    f"{self._pending} clips are being worked on, the most this server takes; "
                    f"retry in {retry} s",
                    headers={"Retry-After": str(retry)},
                )
            self._pending += 1
            self.metrics.pending.set(self._pending)
        cancel = threading.Event()
        start = time.perf_counter()

        def release(_future) -> None:  # when the thread ends, not when the client gives up
            with self._pending_lock:
                self._pending -= 1
                self.metrics.pending.set(self._pending)
                self._recent_s = 0.8 * self._recent_s + 0.2 * (time.perf_counter() - start)

        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, work, cancel)
        future.add_done_callback(release)
        deadline = loop.time() + self.settings.request_timeout_s
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({future}, timeout=min(left, DISCONNECT_POLL_S))
                if done:
                    return future.result()
                if disconnected is not None and await disconnected():
                    cancel.set()
                    self.metrics.rejected.labels("disconnected").inc()
                    raise Problem(
                        499,
                        "client-closed",
                        "Client closed the request",
                        "the client disconnected before the clip was done",
                    )
        except TimeoutError:
            cancel.set()
            self.metrics.rejected.labels("timeout").inc()
            raise Problem(
                504,
                "timeout",
                "Request timed out",
                f"the clip took longer than {self.settings.request_timeout_s:g} s; "
                "use POST /v1/jobs for long clips",
            ) from None
        except asyncio.CancelledError:  # client went away
            cancel.set()
            raise
        except Cancelled:
            raise Problem(
                504, "timeout", "Request timed out", "the request was cancelled"
            ) from None


def spooled_name(filename: str | None) -> str:
    """How messages call an upload: its base filename, or ``<upload>``."""
    base = os.path.basename(filename or "").strip()
    return base[:200] or "<upload>"
