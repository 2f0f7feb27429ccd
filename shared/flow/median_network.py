"""Selection networks for the k×k median: Batcher's odd–even merge sort on the next power of two,
with the spare inputs +inf and everything that cannot reach the middle output pruned away.

A network is a list of operations on numbered values ``v0 … v{n-1}``:
``("cx", i, j)`` (compare-exchange: ``vi, vj = min, max``), ``("min", i, j)`` (only the smaller
one is still needed, in ``vi``) and ``("max", i, j)`` (only the larger, in ``vj``). The median ends
in ``v{result}``. ``render_triton`` writes one as the body of a Triton function;
``shared/flow/tvl1_triton.py`` holds that text for 3×3 and 5×5 (a test keeps the two equal), so
the kernel needs no lists: 25 values stay in registers.
"""

from __future__ import annotations

from dataclasses import dataclass


def batcher_comparators(n: int) -> list[tuple[int, int]]:
    """Batcher's odd–even merge sort for n a power of two: (i, j), i < j, min to i."""
    if n & (n - 1):
        raise ValueError(f"n must be a power of two, got {n}")
    out = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        out.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return out


@dataclass(frozen=True)
class Network:
    inputs: int
    ops: tuple[tuple[str, int, int], ...]
    result: int  # the value that holds the median at the end


def median_network(inputs: int) -> Network:
    """The pruned network that leaves the median (rank inputs // 2) of ``inputs`` values."""
    size = 1 << (inputs - 1).bit_length()
    # wire → the value it holds (a variable index) or None for a spare +inf
    wires: list[int | None] = [k if k < inputs else None for k in range(size)]
    steps = []  # (variable at the min side, variable at the max side), in order
    for a, b in batcher_comparators(size):
        va, vb = wires[a], wires[b]
        if va is None:  # +inf at the min side: the values trade places, no work
            wires[a], wires[b] = vb, va
        elif vb is not None:
            steps.append((va, vb))
        # a real value at the min side and +inf at the max side: nothing moves
    result = wires[inputs // 2]
    assert result is not None
    # backwards: keep what can reach the result, and only the side that is read later
    needed = {result}
    ops = []
    for low, high in reversed(steps):
        want_low, want_high = low in needed, high in needed
        if not (want_low or want_high):
            continue
        kind = "cx" if want_low and want_high else ("min" if want_low else "max")
        ops.append((kind, low, high))
        needed |= {low, high}
    return Network(inputs, tuple(reversed(ops)), result)


def run(network: Network, values: list[float]) -> float:
    """The network applied to plain numbers (for tests)."""
    v = list(values)
    for kind, i, j in network.ops:
        lo, hi = min(v[i], v[j]), max(v[i], v[j])
        if kind in ("cx", "min"):
            v[i] = lo
        if kind in ("cx", "max"):
            v[j] = hi
    return v[network.result]


def render_triton(ksize: int, name: str) -> str:
    """A Triton function ``name(src, y, x, height, width, mask)`` that loads a ksize×ksize window
    (replicated borders) around each pixel of a block and returns its median."""
    network = median_network(ksize * ksize)
    radius = ksize // 2
    lines = [
        "@triton.jit",
        f"def {name}(src, y, x, height, width, mask):  # generated: shared/flow/median_network.py",
    ]
    for dy in range(-radius, radius + 1):
        row = f"tl.minimum(tl.maximum(y + {dy}, 0), height - 1)"
        lines.append(f"    r{dy + radius} = {row} * width")
    for dx in range(-radius, radius + 1):
        lines.append(f"    c{dx + radius} = tl.minimum(tl.maximum(x + {dx}, 0), width - 1)")
    for k in range(ksize * ksize):
        row, col = divmod(k, ksize)
        lines.append(f"    v{k} = tl.load(src + r{row} + c{col}, mask=mask, other=0.0)")
    for kind, i, j in network.ops:
        if kind == "cx":
            lines.append(f"    v{i}, v{j} = tl.minimum(v{i}, v{j}), tl.maximum(v{i}, v{j})")
        elif kind == "min":
            lines.append(f"    v{i} = tl.minimum(v{i}, v{j})")
        else:
            lines.append(f"    v{j} = tl.maximum(v{i}, v{j})")
    lines.append(f"    return v{network.result}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # print the functions tvl1_triton.py holds
    print(render_triton(3, "_median3x3"))
    print()
    print(render_triton(5, "_median5x5"))
