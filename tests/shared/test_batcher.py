"""The request batcher: concurrent requests' pairs share flow calls, and each request gets exactly
the flow it would get alone, in order; fair slices, cancellation and failures stay per request."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from mofo.shared.batcher import Cancelled, FlowBatcher
from mofo.shared.flow import optical_flow
from mofo.shared.params import FlowParams, MotionParams


def _gray(frames: int, seed: int, size: tuple[int, int] = (32, 40)) -> torch.Tensor:
    """Frames of a textured pattern shifting right by one pixel per frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[0], size[1] + frames)).astype(np.float32)
    base = (base + np.roll(base, 1, 0) + np.roll(base, 1, 1)) / 3  # some smoothness
    stack = [base[:, frames - k : frames - k + size[1]] for k in range(frames)]
    return torch.from_numpy(np.stack(stack))[:, None].contiguous()


def _pairs(gray: torch.Tensor) -> tuple[list[int], list[int]]:
    """Every consecutive pair of a clip's frames, as first and second positions."""
    return list(range(gray.shape[0] - 1)), list(range(1, gray.shape[0]))


def _alone(gray: torch.Tensor, params: MotionParams) -> torch.Tensor:
    return optical_flow(gray[:-1], gray[1:], params.flow, params.backend)


PARAMS = MotionParams(backend="torch", flow=FlowParams(stopping="fixed", scales=2, warps=2))


@pytest.fixture
def batches() -> list[int]:
    return []


@pytest.fixture
def batcher(batches: list[int]):
    b = FlowBatcher(
        max_batch=8, max_wait_s=0.3, on_batch=lambda pairs, waits: batches.append(pairs)
    )
    yield b
    b.stop()


def _concurrently(batcher: FlowBatcher, grays: list[torch.Tensor], params: MotionParams):
    out: list[torch.Tensor | BaseException | None] = [None] * len(grays)

    def run(k: int) -> None:
        try:
            out[k] = batcher.flow(grays[k], *_pairs(grays[k]), params)
        except BaseException as exc:  # handed back to the test thread
            out[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(grays))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_concurrent_requests_share_batches_and_get_their_own_flow(batcher, batches, device):
    grays = [_gray(4, seed).to(device) for seed in range(3)]  # 3 pairs each, batches of <= 8
    out = _concurrently(batcher, grays, PARAMS)
    for gray, flow in zip(grays, out, strict=True):
        assert isinstance(flow, torch.Tensor) and flow.shape == (3, 2, 32, 40)
        assert flow.device == gray.device
        # Fixed iterations: the batched flow equals the flow computed alone.
        torch.testing.assert_close(flow, _alone(gray, PARAMS), atol=1e-4, rtol=0)
    assert sum(batches) == 9
    assert max(batches) > 3, f"no batch mixed requests: {batches}"
    assert max(batches) <= 8


def test_long_clip_is_sliced_and_reassembled_in_order(batcher, batches):
    gray = _gray(20, 5)  # 19 pairs > max_batch
    flow = batcher.flow(gray, *_pairs(gray), PARAMS)
    torch.testing.assert_close(flow, _alone(gray, PARAMS), atol=1e-4, rtol=0)
    assert batches == [8, 8, 3]


def test_plan_gives_each_waiting_request_a_share(batcher):
    from mofo.shared.batcher import _Work

    long_gray, short_gray = _gray(30, 0), _gray(3, 1)
    long = _Work(long_gray, *_pairs(long_gray), key=(32, 40, PARAMS.flow, "torch"), enqueued=0.0)
    short = _Work(short_gray, *_pairs(short_gray), key=long.key, enqueued=0.0)
    plan = batcher._plan([long, short])
    taken = {id(w): sum(b - a for ww, a, b in plan if ww is w) for w in (long, short)}
    assert taken[id(short)] == 2  # all its pairs in the first batch, despite the long clip first
    assert taken[id(long)] == 6
    assert sum(taken.values()) == batcher.max_batch


def test_different_sizes_and_settings_never_share_a_batch(batcher, batches):
    other = MotionParams(backend="torch", flow=FlowParams(stopping="fixed", scales=1, warps=1))
    grays = [_gray(3, 0), _gray(3, 1, size=(24, 40)), _gray(3, 2)]
    params = [PARAMS, PARAMS, other]
    out: list = [None] * 3

    def run(k: int) -> None:
        out[k] = batcher.flow(grays[k], *_pairs(grays[k]), params[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k in range(3):
        torch.testing.assert_close(out[k], _alone(grays[k], params[k]), atol=1e-4, rtol=0)
    assert sorted(batches) == [2, 2, 2]


def test_a_failing_request_fails_alone(batcher):
    bad = MotionParams(backend="opencv", flow=FlowParams(stopping="fixed"))  # opencv refuses it
    out = _concurrently(batcher, [_gray(3, 0), _gray(3, 1)], bad)
    assert all(isinstance(o, ValueError) for o in out)
    good = batcher.flow(_gray(3, 2), *_pairs(_gray(3, 2)), PARAMS)  # the thread survived
    assert good.shape == (2, 2, 32, 40)


def test_cancelled_request_is_dropped():
    batcher = FlowBatcher(max_batch=4, max_wait_s=0.0)
    try:
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(Cancelled):
            batcher.flow(_gray(3, 0), *_pairs(_gray(3, 0)), PARAMS, cancel)
        # Cancelled while waiting: raises within the polling interval.
        slow = _gray(40, 1, size=(96, 96))
        cancel2 = threading.Event()
        threading.Timer(0.1, cancel2.set).start()
        start = time.perf_counter()
        with pytest.raises(Cancelled):
            batcher.flow(slow, *_pairs(slow), MotionParams(backend="torch"), cancel2)
        assert time.perf_counter() - start < 5
        assert batcher.flow(_gray(3, 2), *_pairs(_gray(3, 2)), PARAMS).shape == (2, 2, 32, 40)
    finally:
        batcher.stop()


def test_any_pairs_of_frames_and_progress(batcher, batches):
    """Pairs need not be consecutive (a sampled clip's frames and their motion partners): each
    flow is the flow of its own two frames, and progress counts the pairs as batches finish."""
    gray = _gray(12, 3)
    first, second = [0, 5, 11, 2] * 3, [1, 6, 10, 9] * 3  # 12 pairs: two batches of <= 8
    told: list[tuple[int, int]] = []
    flow = batcher.flow(gray, first, second, PARAMS, progress=lambda d, t: told.append((d, t)))
    alone = optical_flow(gray[first], gray[second], PARAMS.flow, PARAMS.backend)
    torch.testing.assert_close(flow, alone, atol=1e-4, rtol=0)
    assert told == [(8, 12), (12, 12)]
    assert batches == [8, 4]


def test_bad_input_is_refused_before_queueing(batcher):
    with pytest.raises(ValueError, match=r"expected \(N >= 2, 1, H, W\) gray frames, got \(1, 1"):
        batcher.flow(torch.zeros(1, 1, 8, 8), [0], [0], PARAMS)
    with pytest.raises(ValueError, match="as many first as second frames, got 2, 1"):
        batcher.flow(torch.zeros(3, 1, 8, 8), [0, 1], [2], PARAMS)
