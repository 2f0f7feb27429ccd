"""Batching the frame pairs of many clips onto the flow backend (the API's requests, a worker's
clips).

One thread owns flow: clip threads hand it the frame pairs of their clip and wait. The thread
takes the oldest waiting work, waits up to ``max_wait_s`` for more work of the same shape and
settings, and runs up to ``max_batch`` pairs from all of them in one :func:`optical_flow` call, so
on a GPU throughput grows with concurrency. A long clip is served in slices and shares each batch
with the others, so it does not hold short requests back. Keeping flow on one thread also keeps
CUDA graphs and compiled kernels in one place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from dataclasses import dataclass, field

import torch

from mofo.shared.errors import Cancelled
from mofo.shared.flow import optical_flow
from mofo.shared.params import CudaKernel, FlowParams, MotionParams

log = logging.getLogger(__name__)

BatchKey = tuple[int, int, FlowParams, str]  # (H, W, flow settings, backend)


@dataclass(eq=False)
class _Work:
    """The pairs of one request: its gray frames, which pairs of them, and where flows go."""

    gray: torch.Tensor  # (N, 1, H, W)
    first: list[int]  # pair p is gray[first[p]] → gray[second[p]]
    second: list[int]
    key: BatchKey
    enqueued: float
    progress: Callable[[int, int], None] | None = None
    future: Future = field(default_factory=Future)
    next_pair: int = 0  # first pair not yet handed to a batch
    parts: list[torch.Tensor] = field(default_factory=list)
    done_pairs: int = 0
    started: bool = False
    # Clear while the flow thread computes some of its pairs: a cancelled request waits for it,
    # so that when its thread ends no flow of it is running (the pending count stays true).
    idle: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def pairs(self) -> int:
        return len(self.first)


class FlowBatcher:
    def __init__(
        self,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int, list[float]], None] | None = None,
        cuda_kernel: CudaKernel | None = None,
    ):
        """``cuda_kernel``: this process's TV-L1 kernel on CUDA (its ``tvl1_kernel`` setting),
        set on every flow it runs whatever the params say; None keeps the params' own."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch  # (pairs in the batch, queue waits of new works in seconds)
        self.cuda_kernel = cuda_kernel
        self._inbox: queue.Queue[_Work | None] = queue.Queue()
        self._waiting: list[_Work] = []  # taken from the inbox, not finished
        self._thread = threading.Thread(target=self._run, name="mofo-flow", daemon=True)
        self._stopped = threading.Event()
        self._thread.start()

    # -- request side -------------------------------------------------------------------------

    def flow(
        self,
        gray: torch.Tensor,
        first: list[int],
        second: list[int],
        params: MotionParams,
        cancel: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Flow of the pairs ``gray[first[p]] → gray[second[p]]`` of (N, 1, H, W) gray frames →
        (P, 2, H, W); blocks. ``progress`` is told (pairs done, pairs in all) from the flow
        thread as batches finish.

        Raises :class:`Cancelled` when ``cancel`` is set before the flow is done.
        """
        if self._stopped.is_set():
            raise RuntimeError("the flow batcher is stopped")
        if gray.ndim != 4 or gray.shape[1] != 1 or gray.shape[0] < 2:
            raise ValueError(f"expected (N >= 2, 1, H, W) gray frames, got {tuple(gray.shape)}")
        if not first or len(first) != len(second):
            raise ValueError(
                f"expected as many first as second frames, got {len(first)}, {len(second)}"
            )
        work = _Work(
            gray=gray,
            first=list(first),
            second=list(second),
            key=(gray.shape[-2], gray.shape[-1], params.flow, params.backend),
            enqueued=time.perf_counter(),
            progress=progress,
        )
        self._inbox.put(work)
        while True:
            try:
                return work.future.result(timeout=0.05 if cancel is not None else None)
            except TimeoutError:
                if cancel is not None and cancel.is_set():
                    work.future.cancel()  # the flow thread drops it at its next pair or batch
                    work.idle.wait()
                    raise Cancelled() from None
            except CancelledError:
                raise Cancelled() from None

    def warm_up(self, device: torch.device, backend: str, size: int = 224) -> None:
        """One flow call on a ``size``² pair, so the backend (CUDA, compiled kernels, graphs for
        that size) starts before the first clip."""
        gray = torch.rand((2, 1, size, size), generator=torch.Generator().manual_seed(0)) * 255
        self.flow(gray.to(device), [0], [1], MotionParams(backend=backend))

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        self._inbox.put(None)
        self._thread.join(timeout)

    # -- flow thread --------------------------------------------------------------------------

    def _take(self, block: bool, timeout: float | None = None) -> bool:
        """Move one work from the inbox to the waiting list; False when none came."""
        try:
            work = self._inbox.get(block=block, timeout=timeout)
        except queue.Empty:
            return False
        if work is None:  # stop
            return False
        self._waiting.append(work)
        return True

    def _gather(self) -> list[_Work]:
        """Works of the oldest work's kind, after waiting up to max_wait_s for the batch to fill."""
        self._waiting = [w for w in self._waiting if not w.future.cancelled()]
        while not self._waiting:
            if self._stopped.is_set() or not self._take(block=True):
                return []
            self._waiting = [w for w in self._waiting if not w.future.cancelled()]
        key = self._waiting[0].key
        deadline = time.perf_counter() + self.max_wait_s

        def ready() -> list[_Work]:
            return [w for w in self._waiting if w.key == key and not w.future.cancelled()]

        while sum(w.pairs - w.next_pair for w in ready()) < self.max_batch:
            left = deadline - time.perf_counter()
            if left <= 0 or not self._take(block=True, timeout=left):
                break
        while self._take(block=False):  # whatever else already arrived
            pass
        return ready()

    def _plan(self, works: list[_Work]) -> list[tuple[_Work, int, int]]:
        """Slices (work, first pair, end pair) for one batch: fair shares, oldest first."""
        slices: list[tuple[_Work, int, int]] = []
        room = self.max_batch
        cursor = {id(w): w.next_pair for w in works}
        while room > 0:
            open_works = [w for w in works if cursor[id(w)] < w.pairs]
            if not open_works:
                break
            share = max(1, room // len(open_works))
            for w in open_works:
                if room == 0:
                    break
                take = min(share, w.pairs - cursor[id(w)], room)
                slices.append((w, cursor[id(w)], cursor[id(w)] + take))
                cursor[id(w)] += take
                room -= take
        return slices

    def _run(self) -> None:
        while not self._stopped.is_set():
            works = self._gather()
            if not works:
                continue
            slices = self._plan(works)
            waits = []
            now = time.perf_counter()
            for w, _, _ in slices:
                if not w.started:
                    w.started = True
                    waits.append(now - w.enqueued)
            busy = list({id(w): w for w, _, _ in slices}.values())
            for w in busy:
                w.idle.clear()
            ran = 0
            try:
                ran = self._run_batch(slices)
            except Exception as exc:  # a backend failure fails the works in this batch, not us
                log.exception("flow batch failed")
                for w in busy:
                    self._finish(w, error=exc)
            finally:
                for w in busy:
                    w.idle.set()
            if self.on_batch is not None:
                self.on_batch(ran, waits)

    def _run_batch(self, slices: list[tuple[_Work, int, int]]) -> int:
        """Run the slices' pairs (those of cancelled works skipped): how many ran."""
        _, _, flow_params, backend = slices[0][0].key
        ran = 0
        if backend == "opencv":
            # OpenCV goes pair by pair anyway: run each pair on its own, so a request cancelled
            # meanwhile stops at its next pair instead of holding the others up.
            for w, a, b in slices:
                for p in range(a, b):
                    if w.future.cancelled():
                        break
                    self._deliver(
                        [(w, p, p + 1)], self._flow([(w, p, p + 1)], flow_params, backend)
                    )
                    ran += 1
        else:
            self._deliver(slices, self._flow(slices, flow_params, backend))
            ran = sum(b - a for _, a, b in slices)
        return ran

    def _flow(self, slices: list[tuple[_Work, int, int]], flow_params: FlowParams, backend: str):
        if self.cuda_kernel is not None:
            flow_params = dataclasses.replace(flow_params, cuda_kernel=self.cuda_kernel)
        device = slices[0][0].gray.device
        i0 = torch.cat([w.gray[w.first[a:b]].to(device) for w, a, b in slices])
        i1 = torch.cat([w.gray[w.second[a:b]].to(device) for w, a, b in slices])
        return optical_flow(i0, i1, flow_params, backend)  # (P, 2, H, W)

    def _deliver(self, slices: list[tuple[_Work, int, int]], flow: torch.Tensor) -> None:
        offset = 0
        for w, a, b in slices:
            part = flow[offset : offset + (b - a)]
            offset += b - a
            w.next_pair = b
            w.parts.append(part)
            w.done_pairs += b - a
            if w.progress is not None:
                try:
                    w.progress(w.done_pairs, w.pairs)
                except Exception:  # a caller's progress display must not fail the batch
                    log.exception("progress callback failed")
            if w.done_pairs == w.pairs:
                self._finish(w, result=torch.cat(w.parts) if len(w.parts) > 1 else w.parts[0])

    def _finish(
        self, work: _Work, result: torch.Tensor | None = None, error: BaseException | None = None
    ) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(work)
        with contextlib.suppress(InvalidStateError):  # cancelled by its request meanwhile
            if error is not None:
                work.future.set_exception(error)
            else:
                work.future.set_result(result)
