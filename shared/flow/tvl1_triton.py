"""TV-L1's inner loop as hand-written Triton kernels: one launch per inner iteration, one for the
median filter at the start of each outer iteration.

``torch.compile``'s fusion of the inner step (``tvl1._step``) left the solver at about
7 % of an H200's memory bandwidth (BENCHMARKS.md §11): the step is several kernels, each reading
the state again, plus a reduction. Here one program computes a block of pixels of one pair and
does the whole iteration:

- the new flow u at the pixel and at its right and lower neighbours (recomputed, not stored: the
  forward gradient needs them, and the re-reads hit the cache), from u, the duals px and py, the
  warped gradient, its squared norm and the constant part of the residual;
- the new duals from the forward gradient of the new u;
- with epsilon stopping, the pair's squared update, summed into ``err[k, b]`` with one atomic
  add per program.

The state ping-pongs between two sets of buffers (a Jacobi step reads its neighbours' old
values). A pair that has stopped copies its state through, so the last buffer written always
holds every pair. Whether pair b still runs at iteration k is read on the device: it ran into the
outer iteration (``active[b]``) and every earlier update of this outer iteration was over
``scaled_eps``, which is OpenCV's per-warp rule that ``_step`` implements with ``torch.where``.

The arithmetic follows ``_iterate`` operation for operation, so the two agree to float rounding
(the compiler may contract a multiply and an add). Without CUDA, Triton's interpreter runs these
kernels on CPU tensors (slowly; tests use it): set ``TRITON_INTERPRET=1`` in the environment
before the process starts (the test suite's conftest does). Importing this module changes no
setting; without CUDA and without the interpreter it refuses to import, saying so.
"""

from __future__ import annotations

import os

import torch


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# Without CUDA the kernels run only in Triton's interpreter, which must be chosen before triton
# is first imported (triton's own library functions are made then): by the environment.
if not torch.cuda.is_available() and not _interpreting():
    raise ImportError(
        "the Triton TV-L1 kernels need CUDA or Triton's interpreter: set TRITON_INTERPRET=1 in "
        "the environment before the process starts"
    )

import triton  # noqa: E402 (after the check)
import triton.language as tl  # noqa: E402

_FLT_EPSILON = tl.constexpr(1.1920928955078125e-07)  # float32's epsilon, as in tvl1._FLT_EPSILON
INTERPRETED = _interpreting()
# pixels per program; the interpreter's cost is per program, so it gets big blocks
INNER_BLOCK = 4096 if INTERPRETED else 256
MEDIAN_BLOCK = 1024 if INTERPRETED else 64


@triton.jit
def _new_u(
    u_ptr,
    px_ptr,
    py_ptr,
    gi_ptr,
    gsq_ptr,
    rhoc_ptr,
    off,
    plane,
    width,
    has_left,
    has_up,
    mask,
    l_t,
    theta,
):
    """The thresholded, dual-corrected flow (both channels) at flat offsets ``off`` of one pair;
    ``plane`` = H·W, pointers at the pair's first element (``_iterate``'s first half)."""
    u0 = tl.load(u_ptr + off, mask=mask, other=0.0)
    u1 = tl.load(u_ptr + plane + off, mask=mask, other=0.0)
    g0 = tl.load(gi_ptr + off, mask=mask, other=0.0)
    g1 = tl.load(gi_ptr + plane + off, mask=mask, other=0.0)
    gsq = tl.load(gsq_ptr + off, mask=mask, other=0.0)
    rho = tl.load(rhoc_ptr + off, mask=mask, other=0.0) + (g0 * u0 + g1 * u1)
    bound = l_t * gsq
    step = tl.where(
        rho < -bound,
        l_t,
        tl.where(
            rho > bound,
            -l_t,
            tl.where(gsq > _FLT_EPSILON, -rho / tl.maximum(gsq, _FLT_EPSILON), 0.0),
        ),
    )
    left = mask & has_left
    up = mask & has_up
    div0 = (
        tl.load(px_ptr + off, mask=mask, other=0.0)
        - tl.load(px_ptr + off - 1, mask=left, other=0.0)
        + tl.load(py_ptr + off, mask=mask, other=0.0)
        - tl.load(py_ptr + off - width, mask=up, other=0.0)
    )
    div1 = (
        tl.load(px_ptr + plane + off, mask=mask, other=0.0)
        - tl.load(px_ptr + plane + off - 1, mask=left, other=0.0)
        + tl.load(py_ptr + plane + off, mask=mask, other=0.0)
        - tl.load(py_ptr + plane + off - width, mask=up, other=0.0)
    )
    return u0 + step * g0 + theta * div0, u1 + step * g1 + theta * div1


# Sizes and the iteration index are not specialised on: a new frame size or batch must not cost a
# compile (the API meets many), and the index only picks a row.
@triton.jit(do_not_specialize=["k", "batch", "height", "width"])
def _inner_kernel(
    u_in,
    px_in,
    py_in,
    gi,
    gsq,
    rhoc,
    u_out,
    px_out,
    py_out,
    err,
    active,
    k,
    batch,
    height,
    width,
    l_t,
    theta,
    taut,
    scaled_eps,
    GATE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One primal–dual iteration of pair ``program_id(1)`` over a block of its pixels."""
    b = tl.program_id(1)
    plane = height * width
    off = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = off < plane
    y = off // width
    x = off - y * width
    base2 = b.to(tl.int64) * 2 * plane  # (B, 2, H, W) tensors
    base1 = b.to(tl.int64) * plane  # (B, 1, H, W) tensors
    u_in += base2
    px_in += base2
    py_in += base2
    gi += base2
    gsq += base1
    rhoc += base1
    u_out += base2
    px_out += base2
    py_out += base2

    alive = True
    if GATE:
        alive = tl.load(active + b) != 0
        for j in range(k):
            alive = alive & (tl.load(err + j * batch + b) > scaled_eps)

    u0 = tl.load(u_in + off, mask=mask, other=0.0)
    u1 = tl.load(u_in + plane + off, mask=mask, other=0.0)
    px0 = tl.load(px_in + off, mask=mask, other=0.0)
    px1 = tl.load(px_in + plane + off, mask=mask, other=0.0)
    py0 = tl.load(py_in + off, mask=mask, other=0.0)
    py1 = tl.load(py_in + plane + off, mask=mask, other=0.0)
    if alive:
        has_left = x > 0
        has_up = y > 0
        has_right = x < width - 1
        has_down = y < height - 1
        n0, n1 = _new_u(
            u_in,
            px_in,
            py_in,
            gi,
            gsq,
            rhoc,
            off,
            plane,
            width,
            has_left,
            has_up,
            mask,
            l_t,
            theta,
        )
        r0, r1 = _new_u(
            u_in,
            px_in,
            py_in,
            gi,
            gsq,
            rhoc,
            off + 1,
            plane,
            width,
            True,
            has_up,
            mask & has_right,
            l_t,
            theta,
        )
        d0, d1 = _new_u(
            u_in,
            px_in,
            py_in,
            gi,
            gsq,
            rhoc,
            off + width,
            plane,
            width,
            has_left,
            True,
            mask & has_down,
            l_t,
            theta,
        )
        ux0 = tl.where(has_right, r0 - n0, 0.0)
        ux1 = tl.where(has_right, r1 - n1, 0.0)
        uy0 = tl.where(has_down, d0 - n0, 0.0)
        uy1 = tl.where(has_down, d1 - n1, 0.0)
        norm0 = 1.0 + taut * tl.sqrt(ux0 * ux0 + uy0 * uy0)
        norm1 = 1.0 + taut * tl.sqrt(ux1 * ux1 + uy1 * uy1)
        tl.store(u_out + off, n0, mask=mask)
        tl.store(u_out + plane + off, n1, mask=mask)
        tl.store(px_out + off, (px0 + taut * ux0) / norm0, mask=mask)
        tl.store(px_out + plane + off, (px1 + taut * ux1) / norm1, mask=mask)
        tl.store(py_out + off, (py0 + taut * uy0) / norm0, mask=mask)
        tl.store(py_out + plane + off, (py1 + taut * uy1) / norm1, mask=mask)
        if GATE:
            e0 = n0 - u0
            e1 = n1 - u1
            sq = tl.where(mask, e0 * e0 + e1 * e1, 0.0)
            tl.atomic_add(err + k * batch + b, tl.sum(sq, axis=0))
    else:  # stopped: carry the state into the buffers this iteration writes
        tl.store(u_out + off, u0, mask=mask)
        tl.store(u_out + plane + off, u1, mask=mask)
        tl.store(px_out + off, px0, mask=mask)
        tl.store(px_out + plane + off, px1, mask=mask)
        tl.store(py_out + off, py0, mask=mask)
        tl.store(py_out + plane + off, py1, mask=mask)


@triton.jit(do_not_specialize=["channels", "height", "width"])
def _median_kernel(
    src,
    dst,
    active,
    channels,
    height,
    width,
    GATE: tl.constexpr,
    KSIZE: tl.constexpr,
    TAPS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """KSIZE×KSIZE median of one channel (``program_id(1)`` = pair · channels + channel) with
    replicated borders; with GATE, a stopped pair keeps its values.

    A selection by counting, not a sort: the window's taps sit in a (BLOCK, TAPS) tile (TAPS =
    KSIZE² rounded up to a power of two, the spare taps +inf), and the median is the tap with at
    most KSIZE²//2 taps below it and more than that at or below it (ties included).

    On an H200 this is about as slow as the 30 inner iterations it precedes (45 % of the GPU time
    at B=32, BENCHMARKS.md §12). A (TAPS, BLOCK) tile with one rank count per tap, tried next,
    was slower still (52 %). ``_median_network_kernel`` (a selection network over 25 registers)
    is the alternative, not yet timed on a GPU."""
    index = tl.program_id(1)
    plane = height * width
    src += index.to(tl.int64) * plane
    dst += index.to(tl.int64) * plane
    off = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = off < plane
    y = off // width
    x = off - y * width
    tap = tl.arange(0, TAPS)
    radius: tl.constexpr = KSIZE // 2
    half: tl.constexpr = (KSIZE * KSIZE) // 2
    ty = tl.minimum(tl.maximum(y[:, None] + (tap[None, :] // KSIZE - radius), 0), height - 1)
    tx = tl.minimum(tl.maximum(x[:, None] + (tap[None, :] % KSIZE - radius), 0), width - 1)
    real = mask[:, None] & (tap[None, :] < KSIZE * KSIZE)
    window = tl.load(src + ty * width + tx, mask=real, other=float("inf"))
    median = tl.zeros((BLOCK,), dtype=tl.float32)
    for t in tl.static_range(KSIZE * KSIZE):
        cy = tl.minimum(tl.maximum(y + (t // KSIZE - radius), 0), height - 1)
        cx = tl.minimum(tl.maximum(x + (t % KSIZE - radius), 0), width - 1)
        candidate = tl.load(src + cy * width + cx, mask=mask, other=0.0)
        below = tl.sum((window < candidate[:, None]).to(tl.int32), axis=1)
        at_or_below = tl.sum((window <= candidate[:, None]).to(tl.int32), axis=1)
        median = tl.where((below <= half) & (at_or_below > half), candidate, median)
    if GATE:  # noqa: SIM102 (a compile-time test, then a run-time one)
        if tl.load(active + index // channels) == 0:
            median = tl.load(src + off, mask=mask, other=0.0)
    tl.store(dst + off, median, mask=mask)


# The selection networks, as shared/flow/median_network.py renders them (a test keeps them equal).
# fmt: off
@triton.jit
def _median3x3(src, y, x, height, width, mask):  # generated: shared/flow/median_network.py
    r0 = tl.minimum(tl.maximum(y + -1, 0), height - 1) * width
    r1 = tl.minimum(tl.maximum(y + 0, 0), height - 1) * width
    r2 = tl.minimum(tl.maximum(y + 1, 0), height - 1) * width
    c0 = tl.minimum(tl.maximum(x + -1, 0), width - 1)
    c1 = tl.minimum(tl.maximum(x + 0, 0), width - 1)
    c2 = tl.minimum(tl.maximum(x + 1, 0), width - 1)
    v0 = tl.load(src + r0 + c0, mask=mask, other=0.0)
    v1 = tl.load(src + r0 + c1, mask=mask, other=0.0)
    v2 = tl.load(src + r0 + c2, mask=mask, other=0.0)
    v3 = tl.load(src + r1 + c0, mask=mask, other=0.0)
    v4 = tl.load(src + r1 + c1, mask=mask, other=0.0)
    v5 = tl.load(src + r1 + c2, mask=mask, other=0.0)
    v6 = tl.load(src + r2 + c0, mask=mask, other=0.0)
    v7 = tl.load(src + r2 + c1, mask=mask, other=0.0)
    v8 = tl.load(src + r2 + c2, mask=mask, other=0.0)
    v0, v1 = tl.minimum(v0, v1), tl.maximum(v0, v1)
    v2, v3 = tl.minimum(v2, v3), tl.maximum(v2, v3)
    v4, v5 = tl.minimum(v4, v5), tl.maximum(v4, v5)
    v6, v7 = tl.minimum(v6, v7), tl.maximum(v6, v7)
    v0, v2 = tl.minimum(v0, v2), tl.maximum(v0, v2)
    v1, v3 = tl.minimum(v1, v3), tl.maximum(v1, v3)
    v4, v6 = tl.minimum(v4, v6), tl.maximum(v4, v6)
    v5, v7 = tl.minimum(v5, v7), tl.maximum(v5, v7)
    v1, v2 = tl.minimum(v1, v2), tl.maximum(v1, v2)
    v5, v6 = tl.minimum(v5, v6), tl.maximum(v5, v6)
    v0, v4 = tl.minimum(v0, v4), tl.maximum(v0, v4)
    v1, v5 = tl.minimum(v1, v5), tl.maximum(v1, v5)
    v2, v6 = tl.minimum(v2, v6), tl.maximum(v2, v6)
    v3 = tl.minimum(v3, v7)
    v2, v4 = tl.minimum(v2, v4), tl.maximum(v2, v4)
    v3, v5 = tl.minimum(v3, v5), tl.maximum(v3, v5)
    v2 = tl.maximum(v1, v2)
    v3, v4 = tl.minimum(v3, v4), tl.maximum(v3, v4)
    v5 = tl.minimum(v5, v6)
    v8 = tl.maximum(v0, v8)
    v4 = tl.minimum(v4, v8)
    v4 = tl.maximum(v2, v4)
    v3 = tl.minimum(v3, v5)
    v4 = tl.maximum(v3, v4)
    return v4


@triton.jit
def _median5x5(src, y, x, height, width, mask):  # generated: shared/flow/median_network.py
    r0 = tl.minimum(tl.maximum(y + -2, 0), height - 1) * width
    r1 = tl.minimum(tl.maximum(y + -1, 0), height - 1) * width
    r2 = tl.minimum(tl.maximum(y + 0, 0), height - 1) * width
    r3 = tl.minimum(tl.maximum(y + 1, 0), height - 1) * width
    r4 = tl.minimum(tl.maximum(y + 2, 0), height - 1) * width
    c0 = tl.minimum(tl.maximum(x + -2, 0), width - 1)
    c1 = tl.minimum(tl.maximum(x + -1, 0), width - 1)
    c2 = tl.minimum(tl.maximum(x + 0, 0), width - 1)
    c3 = tl.minimum(tl.maximum(x + 1, 0), width - 1)
    c4 = tl.minimum(tl.maximum(x + 2, 0), width - 1)
    v0 = tl.load(src + r0 + c0, mask=mask, other=0.0)
    v1 = tl.load(src + r0 + c1, mask=mask, other=0.0)
    v2 = tl.load(src + r0 + c2, mask=mask, other=0.0)
    v3 = tl.load(src + r0 + c3, mask=mask, other=0.0)
    v4 = tl.load(src + r0 + c4, mask=mask, other=0.0)
    v5 = tl.load(src + r1 + c0, mask=mask, other=0.0)
    v6 = tl.load(src + r1 + c1, mask=mask, other=0.0)
    v7 = tl.load(src + r1 + c2, mask=mask, other=0.0)
    v8 = tl.load(src + r1 + c3, mask=mask, other=0.0)
    v9 = tl.load(src + r1 + c4, mask=mask, other=0.0)
    v10 = tl.load(src + r2 + c0, mask=mask, other=0.0)
    v11 = tl.load(src + r2 + c1, mask=mask, other=0.0)
    v12 = tl.load(src + r2 + c2, mask=mask, other=0.0)
    v13 = tl.load(src + r2 + c3, mask=mask, other=0.0)
    v14 = tl.load(src + r2 + c4, mask=mask, other=0.0)
    v15 = tl.load(src + r3 + c0, mask=mask, other=0.0)
    v16 = tl.load(src + r3 + c1, mask=mask, other=0.0)
    v17 = tl.load(src + r3 + c2, mask=mask, other=0.0)
    v18 = tl.load(src + r3 + c3, mask=mask, other=0.0)
    v19 = tl.load(src + r3 + c4, mask=mask, other=0.0)
    v20 = tl.load(src + r4 + c0, mask=mask, other=0.0)
    v21 = tl.load(src + r4 + c1, mask=mask, other=0.0)
    v22 = tl.load(src + r4 + c2, mask=mask, other=0.0)
    v23 = tl.load(src + r4 + c3, mask=mask, other=0.0)
    v24 = tl.load(src + r4 + c4, mask=mask, other=0.0)
    v0, v1 = tl.minimum(v0, v1), tl.maximum(v0, v1)
    v2, v3 = tl.minimum(v2, v3), tl.maximum(v2, v3)
    v4, v5 = tl.minimum(v4, v5), tl.maximum(v4, v5)
    v6, v7 = tl.minimum(v6, v7), tl.maximum(v6, v7)
    v8, v9 = tl.minimum(v8, v9), tl.maximum(v8, v9)
    v10, v11 = tl.minimum(v10, v11), tl.maximum(v10, v11)
    v12, v13 = tl.minimum(v12, v13), tl.maximum(v12, v13)
    v14, v15 = tl.minimum(v14, v15), tl.maximum(v14, v15)
    v16, v17 = tl.minimum(v16, v17), tl.maximum(v16, v17)
    v18, v19 = tl.minimum(v18, v19), tl.maximum(v18, v19)
    v20, v21 = tl.minimum(v20, v21), tl.maximum(v20, v21)
    v22, v23 = tl.minimum(v22, v23), tl.maximum(v22, v23)
    v0, v2 = tl.minimum(v0, v2), tl.maximum(v0, v2)
    v1, v3 = tl.minimum(v1, v3), tl.maximum(v1, v3)
    v4, v6 = tl.minimum(v4, v6), tl.maximum(v4, v6)
    v5, v7 = tl.minimum(v5, v7), tl.maximum(v5, v7)
    v8, v10 = tl.minimum(v8, v10), tl.maximum(v8, v10)
    v9, v11 = tl.minimum(v9, v11), tl.maximum(v9, v11)
    v12, v14 = tl.minimum(v12, v14), tl.maximum(v12, v14)
    v13, v15 = tl.minimum(v13, v15), tl.maximum(v13, v15)
    v16, v18 = tl.minimum(v16, v18), tl.maximum(v16, v18)
    v17, v19 = tl.minimum(v17, v19), tl.maximum(v17, v19)
    v20, v22 = tl.minimum(v20, v22), tl.maximum(v20, v22)
    v21, v23 = tl.minimum(v21, v23), tl.maximum(v21, v23)
    v1, v2 = tl.minimum(v1, v2), tl.maximum(v1, v2)
    v5, v6 = tl.minimum(v5, v6), tl.maximum(v5, v6)
    v9, v10 = tl.minimum(v9, v10), tl.maximum(v9, v10)
    v13, v14 = tl.minimum(v13, v14), tl.maximum(v13, v14)
    v17, v18 = tl.minimum(v17, v18), tl.maximum(v17, v18)
    v21, v22 = tl.minimum(v21, v22), tl.maximum(v21, v22)
    v0, v4 = tl.minimum(v0, v4), tl.maximum(v0, v4)
    v1, v5 = tl.minimum(v1, v5), tl.maximum(v1, v5)
    v2, v6 = tl.minimum(v2, v6), tl.maximum(v2, v6)
    v3, v7 = tl.minimum(v3, v7), tl.maximum(v3, v7)
    v8, v12 = tl.minimum(v8, v12), tl.maximum(v8, v12)
    v9, v13 = tl.minimum(v9, v13), tl.maximum(v9, v13)
    v10, v14 = tl.minimum(v10, v14), tl.maximum(v10, v14)
    v11, v15 = tl.minimum(v11, v15), tl.maximum(v11, v15)
    v16, v20 = tl.minimum(v16, v20), tl.maximum(v16, v20)
    v17, v21 = tl.minimum(v17, v21), tl.maximum(v17, v21)
    v18, v22 = tl.minimum(v18, v22), tl.maximum(v18, v22)
    v19, v23 = tl.minimum(v19, v23), tl.maximum(v19, v23)
    v2, v4 = tl.minimum(v2, v4), tl.maximum(v2, v4)
    v3, v5 = tl.minimum(v3, v5), tl.maximum(v3, v5)
    v10, v12 = tl.minimum(v10, v12), tl.maximum(v10, v12)
    v11, v13 = tl.minimum(v11, v13), tl.maximum(v11, v13)
    v18, v20 = tl.minimum(v18, v20), tl.maximum(v18, v20)
    v19, v21 = tl.minimum(v19, v21), tl.maximum(v19, v21)
    v1, v2 = tl.minimum(v1, v2), tl.maximum(v1, v2)
    v3, v4 = tl.minimum(v3, v4), tl.maximum(v3, v4)
    v5, v6 = tl.minimum(v5, v6), tl.maximum(v5, v6)
    v9, v10 = tl.minimum(v9, v10), tl.maximum(v9, v10)
    v11, v12 = tl.minimum(v11, v12), tl.maximum(v11, v12)
    v13, v14 = tl.minimum(v13, v14), tl.maximum(v13, v14)
    v17, v18 = tl.minimum(v17, v18), tl.maximum(v17, v18)
    v19, v20 = tl.minimum(v19, v20), tl.maximum(v19, v20)
    v21, v22 = tl.minimum(v21, v22), tl.maximum(v21, v22)
    v0, v8 = tl.minimum(v0, v8), tl.maximum(v0, v8)
    v1, v9 = tl.minimum(v1, v9), tl.maximum(v1, v9)
    v2, v10 = tl.minimum(v2, v10), tl.maximum(v2, v10)
    v3, v11 = tl.minimum(v3, v11), tl.maximum(v3, v11)
    v4, v12 = tl.minimum(v4, v12), tl.maximum(v4, v12)
    v5, v13 = tl.minimum(v5, v13), tl.maximum(v5, v13)
    v6, v14 = tl.minimum(v6, v14), tl.maximum(v6, v14)
    v7 = tl.minimum(v7, v15)
    v16, v24 = tl.minimum(v16, v24), tl.maximum(v16, v24)
    v4, v8 = tl.minimum(v4, v8), tl.maximum(v4, v8)
    v5, v9 = tl.minimum(v5, v9), tl.maximum(v5, v9)
    v6, v10 = tl.minimum(v6, v10), tl.maximum(v6, v10)
    v7, v11 = tl.minimum(v7, v11), tl.maximum(v7, v11)
    v20, v24 = tl.minimum(v20, v24), tl.maximum(v20, v24)
    v2, v4 = tl.minimum(v2, v4), tl.maximum(v2, v4)
    v3, v5 = tl.minimum(v3, v5), tl.maximum(v3, v5)
    v6, v8 = tl.minimum(v6, v8), tl.maximum(v6, v8)
    v7, v9 = tl.minimum(v7, v9), tl.maximum(v7, v9)
    v10, v12 = tl.minimum(v10, v12), tl.maximum(v10, v12)
    v11, v13 = tl.minimum(v11, v13), tl.maximum(v11, v13)
    v18, v20 = tl.minimum(v18, v20), tl.maximum(v18, v20)
    v19, v21 = tl.minimum(v19, v21), tl.maximum(v19, v21)
    v22, v24 = tl.minimum(v22, v24), tl.maximum(v22, v24)
    v1, v2 = tl.minimum(v1, v2), tl.maximum(v1, v2)
    v3, v4 = tl.minimum(v3, v4), tl.maximum(v3, v4)
    v5, v6 = tl.minimum(v5, v6), tl.maximum(v5, v6)
    v7, v8 = tl.minimum(v7, v8), tl.maximum(v7, v8)
    v9, v10 = tl.minimum(v9, v10), tl.maximum(v9, v10)
    v11, v12 = tl.minimum(v11, v12), tl.maximum(v11, v12)
    v13 = tl.minimum(v13, v14)
    v17, v18 = tl.minimum(v17, v18), tl.maximum(v17, v18)
    v19, v20 = tl.minimum(v19, v20), tl.maximum(v19, v20)
    v21, v22 = tl.minimum(v21, v22), tl.maximum(v21, v22)
    v23, v24 = tl.minimum(v23, v24), tl.maximum(v23, v24)
    v16 = tl.maximum(v0, v16)
    v17 = tl.maximum(v1, v17)
    v18 = tl.maximum(v2, v18)
    v19 = tl.maximum(v3, v19)
    v20 = tl.maximum(v4, v20)
    v21 = tl.maximum(v5, v21)
    v6 = tl.minimum(v6, v22)
    v7 = tl.minimum(v7, v23)
    v8 = tl.minimum(v8, v24)
    v16 = tl.maximum(v8, v16)
    v17 = tl.maximum(v9, v17)
    v10 = tl.minimum(v10, v18)
    v11 = tl.minimum(v11, v19)
    v12 = tl.minimum(v12, v20)
    v13 = tl.minimum(v13, v21)
    v10 = tl.maximum(v6, v10)
    v11 = tl.maximum(v7, v11)
    v12 = tl.minimum(v12, v16)
    v13 = tl.minimum(v13, v17)
    v12 = tl.maximum(v10, v12)
    v11 = tl.minimum(v11, v13)
    v12 = tl.maximum(v11, v12)
    return v12
# fmt: on


@triton.jit(do_not_specialize=["channels", "height", "width"])
def _median_network_kernel(
    src,
    dst,
    active,
    channels,
    height,
    width,
    GATE: tl.constexpr,
    KSIZE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The same median as ``_median_kernel`` through a selection network: the window's values
    in registers, 113 compare-exchanges (202 min/max) for 5×5 instead of 25 counts over 32."""
    index = tl.program_id(1)
    plane = height * width
    src += index.to(tl.int64) * plane
    dst += index.to(tl.int64) * plane
    off = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = off < plane
    y = off // width
    x = off - y * width
    if KSIZE == 5:
        median = _median5x5(src, y, x, height, width, mask)
    else:
        median = _median3x3(src, y, x, height, width, mask)
    if GATE:  # noqa: SIM102 (a compile-time test, then a run-time one)
        if tl.load(active + index // channels) == 0:
            median = tl.load(src + off, mask=mask, other=0.0)
    tl.store(dst + off, median, mask=mask)


# How median_blur selects: "count" (``_median_kernel``, measured on an H200, BENCHMARKS.md §12)
# or "network" (``_median_network_kernel``, not yet measured on a GPU; bench/gpu_profile.py's
# triton-network variant times it). Read at each call; captured graphs keep what they captured.
MEDIAN_METHOD = "count"
MEDIAN_METHODS = ("count", "network")


def median_blur(
    src: torch.Tensor,
    dst: torch.Tensor,
    ksize: int,
    active: torch.Tensor | None,
    method: str | None = None,
) -> None:
    """``dst`` = ksize×ksize median of (B, C, H, W) ``src`` per channel (OpenCV's ``medianBlur``,
    replicated borders); pairs with ``active`` (B, 1, 1, 1) false keep ``src``. ``method``:
    of ``MEDIAN_METHODS``, default ``MEDIAN_METHOD``."""
    method = method or MEDIAN_METHOD
    if method not in MEDIAN_METHODS or ksize not in (3, 5):
        raise ValueError(
            f"median: method of {MEDIAN_METHODS} and ksize 3 or 5, got {method!r}, {ksize}"
        )
    batch, channels, height, width = src.shape
    grid = (triton.cdiv(height * width, MEDIAN_BLOCK), batch * channels)
    if method == "network":
        kernel, extra = _median_network_kernel, {}
    else:
        kernel, extra = _median_kernel, {"TAPS": triton.next_power_of_2(ksize * ksize)}
    kernel[grid](
        src,
        dst,
        src if active is None else active,
        channels,
        height,
        width,
        GATE=active is not None,
        KSIZE=ksize,
        BLOCK=MEDIAN_BLOCK,
        **extra,
    )


def inner_iteration(
    state_in: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    state_out: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    grad_i: torch.Tensor,
    grad_sq: torch.Tensor,
    rho_c: torch.Tensor,
    coef: tuple[float, float, float],
    k: int,
    err: torch.Tensor | None,
    active: torch.Tensor | None,
    scaled_eps: float,
) -> None:
    """Iteration ``k`` of an outer iteration: (u, px, py) ``state_in`` → ``state_out``.

    All tensors contiguous float32 on one device: u, px, py, grad_i (B, 2, H, W); grad_sq, rho_c
    (B, 1, H, W). With ``err`` ((inner_iterations, B), zeroed at the start of the outer
    iteration) and ``active`` ((B, 1, 1, 1) bool, the pairs running into it), pairs stop as
    ``_step`` stops them and ``err[k]`` gets each pair's squared update; without, every pair
    runs (fixed iterations)."""
    (u_in, px_in, py_in), (u_out, px_out, py_out) = state_in, state_out
    batch, _, height, width = u_in.shape
    gate = err is not None
    l_t, theta, taut = coef
    grid = (triton.cdiv(height * width, INNER_BLOCK), batch)
    _inner_kernel[grid](
        u_in,
        px_in,
        py_in,
        grad_i,
        grad_sq,
        rho_c,
        u_out,
        px_out,
        py_out,
        err if gate else u_in,
        active if gate else u_in,
        k,
        batch,
        height,
        width,
        l_t,
        theta,
        taut,
        scaled_eps,
        GATE=gate,
        BLOCK=INNER_BLOCK,
    )
