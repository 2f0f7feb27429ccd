"""One MAE pretraining step, ours against VideoMAE's recipe: clips/s for the same weights, batch
and masks, both in one run.

    PYTHONPATH=. .venv/bin/python bench/pretrain.py [--model NAME] [--batch N] [--steps N]
        [--warmup N] [--device auto|cpu|cuda] [--json OUT.json]

A step is forward + backward + AdamW (betas 0.9, 0.95, weight decay 0.05) + zero_grad, with fp32
master weights and tube masks at ratio 0.9; TF32 matmuls are allowed for both sides.

- **ours**: ``mofo.training.models.VideoMAE`` as it is (SDPA attention) under bf16 autocast.
- **reference**: the same model with VideoMAE's explicit attention (``softmax(q·scale @ kᵀ) @ v``,
  the N × N weights materialised) under fp16 autocast with a GradScaler, as VideoMAE trains.

Before timing, both attentions must agree in fp32 on a small input, or nothing is timed (exit 1).
Defaults: on CUDA VideoMAE's ViT-B/16 (16 × 224², 1568 tokens) at batch 32; on the CPU the tiny
32-px model at batch 8 (ours under bf16 autocast; the reference falls back to fp32 where CPU
autocast has no fp16). Figures are medians over the timed steps; peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the process's peak RSS increase on the CPU.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import re
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from bench.common import cpu_model
from mofo.training.masking import tube_mask
from mofo.training.models import Attention, VideoMAE, config
from testkit.attention import explicit_attention

MASK_RATIO = 0.9
AGREEMENT_ATOL = 1e-4  # fp32, unit-scale input: the two formulas differ by rounding only
DEFAULTS = {  # device type: (model, batch, warm-up steps, timed steps)
    "cuda": ("vit_base_patch16_tubelet2", 32, 3, 10),
    "cpu": ("vit_tiny_patch8_tubelet2_32px", 8, 2, 5),
}

AttentionForward = Callable[[Attention, torch.Tensor], torch.Tensor]


class AttentionMismatch(RuntimeError):
    """The explicit attention does not compute what the model's SDPA attention does."""


@dataclass(frozen=True)
class Variant:
    name: str
    attention: str  # "sdpa" (the model's own) or "explicit" (VideoMAE's)
    dtype: torch.dtype  # autocast dtype; float32 = no autocast
    grad_scaler: bool


VARIANTS = (
    Variant("ours", "sdpa", torch.bfloat16, grad_scaler=False),
    Variant("reference", "explicit", torch.float16, grad_scaler=True),
)


def with_attention(model: nn.Module, forward: AttentionForward) -> nn.Module:
    """``model`` with every ``Attention`` module's forward replaced by ``forward`` (in place)."""
    for module in model.modules():
        if isinstance(module, Attention):
            module.forward = types.MethodType(forward, module)
    return model


def attention_agreement(
    forward: AttentionForward = explicit_attention,
    device: torch.device | str = "cpu",
    width: int = 64,
    heads: int = 4,
    tokens: int = 50,
) -> dict[str, object]:
    """Max |SDPA − forward| in fp32 (TF32 off) on a random (2, tokens, width) input."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    attn = Attention(width, heads).to(device)
    x = torch.randn((2, tokens, width), generator=gen).to(device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            diff = (attn(x) - forward(attn, x)).abs().max().item()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    agree = math.isfinite(diff) and diff <= AGREEMENT_ATOL
    return {"max_abs_diff": diff, "atol": AGREEMENT_ATOL, "agree": agree}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


class PeakMemory:
    """Peak memory over a block: CUDA's max_memory_allocated, or on the CPU the rise of the
    process's peak RSS (VmHWM, reset through /proc/self/clear_refs); None where neither works."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start_kb: int | None = None

    @staticmethod
    def _status_kb(field: str) -> int:
        found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
        if not found:
            raise OSError(f"no {field} in /proc/self/status")
        return int(found.group(1))

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self.start_kb = self._status_kb("VmRSS")
        except OSError:
            self.start_kb = None

    def peak_mb(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.start_kb is None:
            return None
        return (self._status_kb("VmHWM") - self.start_kb) / 1024

    @property
    def kind(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated"
        if self.start_kb is None:
            return "n/a"
        return "peak RSS increase (rough: one-off growth lands on the first variant)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    video: torch.Tensor,
    mask: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Forward under autocast (none for fp32), backward (scaled where the scaler is on), step."""
    with torch.autocast(video.device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss, _ = model(video, mask)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def measure(
    base: VideoMAE,
    variant: Variant,
    video: torch.Tensor,
    mask: torch.Tensor,
    warmup: int,
    steps: int,
) -> dict[str, object]:
    """Time ``steps`` training steps after ``warmup`` on a fresh copy of ``base``'s weights."""
    device = video.device
    memory = PeakMemory(device)
    memory.reset()
    model = copy.deepcopy(base).to(device).train()
    if variant.attention == "explicit":
        with_attention(model, explicit_attention)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05
    )
    scaler = torch.amp.GradScaler(device.type, enabled=variant.grad_scaler)
    times, first_loss = [], math.nan
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = train_step(model, optimizer, scaler, video, mask, variant.dtype)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        if i == 0:
            first_loss = loss.item()
    final_loss = loss.item()
    step_s = statistics.median(times)
    return {
        "attention": variant.attention,
        "autocast": str(variant.dtype).removeprefix("torch."),
        "grad_scaler": variant.grad_scaler,
        "clips_per_s": video.shape[0] / step_s,
        "ms_per_step": step_s * 1e3,
        "step_ms": [t * 1e3 for t in times],
        "peak_memory_mb": memory.peak_mb(),
        "peak_memory_kind": memory.kind,
        "first_loss": first_loss,
        "final_loss": final_loss,
        "loss_finite": math.isfinite(final_loss),
        "grad_scale": scaler.get_scale() if variant.grad_scaler else None,
        "error": None,
        "note": None,
    }


def run_variant(base: VideoMAE, variant: Variant, video, mask, warmup, steps) -> dict:
    """``measure``, recording a failure (out of memory, say) instead of raising; on the CPU an
    fp16 autocast that fails falls back to fp32 without the scaler."""
    try:
        return measure(base, variant, video, mask, warmup, steps)
    except (RuntimeError, NotImplementedError, torch.OutOfMemoryError) as error:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        if video.device.type == "cpu" and variant.dtype == torch.float16:
            fallback = replace(variant, dtype=torch.float32, grad_scaler=False)
            result = measure(base, fallback, video, mask, warmup, steps)
            result["note"] = f"fp16 autocast failed on the CPU ({reason}); ran in fp32"
            return result
        return {"attention": variant.attention, "error": reason}
    finally:
        gc.collect()
        if video.device.type == "cuda":
            torch.cuda.empty_cache()


def resolve_device(name: str) -> torch.device:
    # Not shared.pipeline's: importing it pulls in kornia (flow), which the GPU image lacks
    # when only the training wheels are carried (gpu/check.sh with SKIP_TVL1).
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is false")
    return torch.device(name)


def benchmark(
    model: str | None = None,
    batch: int | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    device: str = "auto",
) -> dict[str, object]:
    """Both variants on one device, same weights, batch and masks; raises AttentionMismatch
    before timing anything when the explicit attention disagrees with SDPA."""
    dev = resolve_device(device)
    default = DEFAULTS["cuda" if dev.type == "cuda" else "cpu"]
    model = model or default[0]
    batch = batch or default[1]
    warmup = default[2] if warmup is None else warmup
    steps = steps or default[3]

    check = attention_agreement(explicit_attention, dev)
    if not check["agree"]:
        raise AttentionMismatch(
            f"explicit attention differs from SDPA by {check['max_abs_diff']:.3g} "
            f"(> {AGREEMENT_ATOL:g}) in fp32"
        )
    cfg = config(model)
    torch.manual_seed(0)
    base = VideoMAE(cfg)
    gen = torch.Generator().manual_seed(0)
    g = cfg.grid
    video = torch.randn((batch, cfg.channels, g.frames, g.height, g.width), generator=gen)
    mask = tube_mask(batch, g, MASK_RATIO, gen)
    video, mask = video.to(dev), mask.to(dev)

    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        variants = {v.name: run_variant(base, v, video, mask, warmup, steps) for v in VARIANTS}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    ours, ref = variants["ours"], variants["reference"]
    ratio = None
    if ours.get("error") is None and ref.get("error") is None:
        ratio = ours["clips_per_s"] / ref["clips_per_s"]
    return {
        "device": device_name(dev),
        "device_type": dev.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "model": model,
        "batch": batch,
        "tokens": g.tokens,
        "visible_tokens": int((~mask[0]).sum()),
        "mask_ratio": MASK_RATIO,
        "dtype": {name: v.get("autocast") for name, v in variants.items()},  # as run
        "master_weights": "float32",
        "tf32_matmul": True,
        "warmup": warmup,
        "steps": steps,
        "attention_check": check,
        "variants": variants,
        "ratio_ours_to_reference": ratio,
    }


def report(figures: dict) -> list[str]:
    """The readable table."""
    check = figures["attention_check"]
    lines = [
        f"device: {figures['device']} ({figures['device_type']}), torch {figures['torch']} "
        f"({figures['threads']} threads)",
        f"model {figures['model']}, batch {figures['batch']}, {figures['tokens']} tokens "
        f"({figures['visible_tokens']} visible, mask ratio {figures['mask_ratio']}), "
        f"{figures['warmup']} warm-up + {figures['steps']} timed steps (medians)",
        f"attention check (fp32): SDPA vs explicit max |diff| {check['max_abs_diff']:.2e} "
        f"(atol {check['atol']:g}): {'agree' if check['agree'] else 'DISAGREE'}",
        f"{'variant':10s} {'attention':9s} {'autocast':9s} {'scaler':6s} {'clips/s':>9s} "
        f"{'ms/step':>9s} {'peak MB':>9s} {'loss 1st':>9s} {'loss end':>9s}",
    ]
    for name, v in figures["variants"].items():
        if v.get("error"):
            lines.append(f"{name:10s} {v['attention']:9s} FAILED: {v['error']}")
            continue
        peak = "n/a" if v["peak_memory_mb"] is None else f"{v['peak_memory_mb']:.0f}"
        lines.append(
            f"{name:10s} {v['attention']:9s} {v['autocast']:9s} "
            f"{'yes' if v['grad_scaler'] else 'no':6s} {v['clips_per_s']:9.2f} "
            f"{v['ms_per_step']:9.2f} {peak:>9s} {v['first_loss']:9.4f} {v['final_loss']:9.4f}"
            + ("" if v["loss_finite"] else "  NON-FINITE LOSS")
        )
        if v.get("note"):
            lines.append(f"{'':10s} note: {v['note']}")
    kinds = {v.get("peak_memory_kind") for v in figures["variants"].values()} - {None}
    lines.append(f"peak memory: {', '.join(sorted(kinds))}")
    ratio = figures["ratio_ours_to_reference"]
    lines.append(
        "ours / reference: " + ("n/a (a variant failed)" if ratio is None else f"{ratio:.2f}x")
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a name from mofo.training.models.CONFIGS")
    parser.add_argument("--batch", type=int, default=None, help="32 on CUDA, 8 on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    try:
        figures = benchmark(args.model, args.batch, args.steps, args.warmup, args.device)
    except AttentionMismatch as error:
        raise SystemExit(f"refusing to report: {error}") from None
    lines = report(figures)
    print("\n".join(lines), flush=True)
    if args.json:
        args.json.write_text(json.dumps({**figures, "log": lines}, indent=1) + "\n")
    ours = figures["variants"]["ours"]
    if ours.get("error") or not ours["loss_finite"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
