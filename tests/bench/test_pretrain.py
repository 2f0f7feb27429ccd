"""bench/pretrain.py on the CPU with the tiny model: both variants report, and the attention check
refuses a wrong attention before anything is timed."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from bench import pretrain
from mofo.training.models import Attention

TINY = "vit_tiny_patch8_tubelet2_32px"


def unscaled_attention(self: Attention, x: torch.Tensor) -> torch.Tensor:
    """A plausible mistake: VideoMAE's attention without the 1/sqrt(d) scale."""
    b, n, d = x.shape
    q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


def test_json_has_both_variants_with_rates_and_finite_losses(tmp_path, monkeypatch, capsys):
    out = tmp_path / "pretrain.json"
    argv = [
        "pretrain.py",
        "--device",
        "cpu",
        "--model",
        TINY,
        "--batch",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--json",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    pretrain.main()
    figures = json.loads(out.read_text())
    assert figures["model"] == TINY and figures["batch"] == 2 and figures["device_type"] == "cpu"
    assert figures["device"] and figures["torch"] == torch.__version__
    assert figures["attention_check"]["agree"]
    assert set(figures["variants"]) == {"ours", "reference"}
    for variant in figures["variants"].values():
        assert variant["error"] is None
        assert variant["clips_per_s"] > 0 and len(variant["step_ms"]) == 2
        assert variant["loss_finite"] and math.isfinite(variant["final_loss"])
    # Same weights, batch and masks: the first losses differ only by the autocast dtypes.
    ours, ref = figures["variants"]["ours"], figures["variants"]["reference"]
    assert ours["first_loss"] == pytest.approx(ref["first_loss"], rel=0.05)
    assert figures["ratio_ours_to_reference"] > 0
    assert "ours / reference" in capsys.readouterr().out


def test_the_explicit_attention_agrees_with_sdpa():
    check = pretrain.attention_agreement()
    assert check["agree"] and check["max_abs_diff"] <= pretrain.AGREEMENT_ATOL


def test_the_check_catches_a_wrong_attention():
    check = pretrain.attention_agreement(unscaled_attention)
    assert not check["agree"] and check["max_abs_diff"] > pretrain.AGREEMENT_ATOL


def test_a_wrong_attention_is_refused_before_timing(monkeypatch):
    monkeypatch.setattr(pretrain, "explicit_attention", unscaled_attention)
    monkeypatch.setattr(pretrain, "measure", lambda *a: pytest.fail("timed a wrong attention"))
    with pytest.raises(pretrain.AttentionMismatch, match="differs from SDPA"):
        pretrain.benchmark(TINY, batch=2, steps=1, warmup=0, device="cpu")


def test_with_attention_swaps_every_attention_module():
    torch.manual_seed(0)
    model = pretrain.with_attention(pretrain.VideoMAE(pretrain.config(TINY)), unscaled_attention)
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attentions) == 3  # 2 encoder blocks + 1 decoder block
    assert all(m.forward.__func__ is unscaled_attention for m in attentions)


def _tiny_inputs():
    torch.manual_seed(0)
    cfg = pretrain.config(TINY)
    g = cfg.grid
    video = torch.randn((2, 3, g.frames, g.height, g.width))
    return pretrain.VideoMAE(cfg), video, pretrain.tube_mask(2, g, pretrain.MASK_RATIO)


def test_a_failing_variant_is_recorded_not_raised(monkeypatch):
    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(pretrain, "measure", out_of_memory)
    base, video, mask = _tiny_inputs()
    result = pretrain.run_variant(base, pretrain.VARIANTS[0], video, mask, 0, 1)
    assert result["error"].startswith("OutOfMemoryError: CUDA out of memory")


def test_fp16_autocast_failing_on_the_cpu_falls_back_to_fp32(monkeypatch):
    measure = pretrain.measure

    def no_cpu_fp16(base, variant, *args):
        if variant.dtype == torch.float16:
            raise RuntimeError("autocast: float16 is not supported on this CPU")
        return measure(base, variant, *args)

    monkeypatch.setattr(pretrain, "measure", no_cpu_fp16)
    base, video, mask = _tiny_inputs()
    result = pretrain.run_variant(base, pretrain.VARIANTS[1], video, mask, 0, 1)
    assert result["error"] is None and result["autocast"] == "float32"
    assert not result["grad_scaler"] and "ran in fp32" in result["note"]
