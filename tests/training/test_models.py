"""The masked autoencoder: ViT-B's sizes, attention equal to the explicit formula, the encoder
seeing only visible tokens, VideoMAE's per-tubelet targets, and a tiny model that learns."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from mofo.training.masking import tube_mask
from mofo.training.models import (
    Attention,
    MAEConfig,
    VideoMAE,
    config,
    parameter_count,
    patchify,
    sinusoid_positions,
)

TINY = config("vit_tiny_patch8_tubelet2_32px")


def _video(batch: int, cfg: MAEConfig, seed: int = 0) -> torch.Tensor:
    g = cfg.grid
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, 3, g.frames, g.height, g.width), generator=gen)


def test_vit_b16_is_videomaes_base_model():
    torch.manual_seed(0)
    cfg = config("vit_base_patch16_tubelet2")
    model = VideoMAE(cfg)
    assert cfg.grid.tokens == 1568 and model.pixels_per_token == 2 * 16 * 16 * 3
    encoder = sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder."))
    assert 85e6 < encoder < 87e6  # ViT-B/16 with a tubelet embedding: ~86 M
    assert 90e6 < parameter_count(model) < 96e6  # with the 384-wide, 4-deep decoder
    mask = tube_mask(1, cfg.grid, 0.9, torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss, pred = model(_video(1, cfg), mask)
    assert pred.shape == (1, 1408, 1536) and math.isfinite(loss.item())


def test_sdpa_attention_equals_the_explicit_formula():
    torch.manual_seed(0)
    attn = Attention(64, 4)
    x = torch.randn(2, 10, 64)
    q, k, v = attn.qkv(x).view(2, 10, 3, 4, 16).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(16), dim=-1)
    explicit = attn.proj((weights @ v).transpose(1, 2).reshape(2, 10, 64))
    assert torch.allclose(attn(x), explicit, atol=1e-5)


def test_the_encoder_sees_only_visible_tokens():
    torch.manual_seed(0)
    model = VideoMAE(TINY).eval()
    video = _video(2, TINY)
    mask = tube_mask(2, TINY.grid, 0.75, torch.Generator().manual_seed(1))
    changed = video.clone()
    g = TINY.grid
    t, h, w = g.shape
    hidden = mask[0].view(t, h, w).nonzero()[0].tolist()  # one hidden token of sample 0
    ti, hi, wi = hidden
    region = (
        0,
        slice(None),
        slice(ti * 2, ti * 2 + 2),
        slice(hi * 8, hi * 8 + 8),
        slice(wi * 8, wi * 8 + 8),
    )
    changed[region] = torch.rand_like(changed[region])  # new content (a shift would normalise out)
    with torch.no_grad():
        assert torch.equal(model.encode(video, mask), model.encode(changed, mask))
        assert not torch.equal(model(video, mask)[0], model(changed, mask)[0])  # its target moved


def test_targets_are_pixels_normalised_per_tubelet_and_channel():
    model = VideoMAE(TINY)
    video = _video(2, TINY) * 3 + 1
    targets = model.targets(video).view(2, TINY.grid.tokens, -1, 3)  # (B, N, pixels, C)
    assert torch.allclose(targets.mean(-2), torch.zeros(2, TINY.grid.tokens, 3), atol=1e-5)
    assert torch.allclose(targets.std(-2), torch.ones(2, TINY.grid.tokens, 3), atol=1e-4)
    # The same targets from a per-channel affine change of the input (e.g. ImageNet norm).
    scale, shift = torch.tensor([0.2, 0.5, 2.0]), torch.tensor([-1.0, 0.0, 3.0])
    affine = video * scale.view(1, 3, 1, 1, 1) + shift.view(1, 3, 1, 1, 1)
    assert torch.allclose(model.targets(affine), model.targets(video), atol=1e-3)
    # Token n's target holds the pixels of tubelet n (time, row, column order).
    first = video[0, :, 0:2, 0:8, 8:16]  # token 1: slot 0, row 0, column 1
    raw = first.permute(1, 2, 3, 0).reshape(-1, 3)
    expected = (raw - raw.mean(0)) / (raw.std(0) + 1e-6)
    assert torch.allclose(model.targets(video)[0, 1].view(-1, 3), expected, atol=1e-5)


def test_positions_are_sinusoids():
    table = sinusoid_positions(10, 8)
    assert torch.allclose(table[0], torch.tensor([0.0, 1.0] * 4))
    assert torch.allclose(table[3, 0], torch.sin(torch.tensor(3.0)))
    assert torch.allclose(table[3, 3], torch.cos(torch.tensor(3.0 / 10_000 ** (2 / 8))))


def _smooth_video(batch: int, cfg: MAEConfig) -> torch.Tensor:
    """Drifting sinusoid gratings, one per sample and channel: hidden tubelets can be told from
    their visible neighbours."""
    g = cfg.grid
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(g.frames).view(1, 1, -1, 1, 1)
    y = torch.arange(g.height).view(1, 1, 1, -1, 1)
    x = torch.arange(g.width).view(1, 1, 1, 1, -1)
    fx, fy, phase = (torch.rand((3, batch, 3, 1, 1, 1), generator=gen) * 0.3).unbind(0)
    return torch.sin(fx * x + fy * y + 0.5 * t + 20 * phase)


def test_a_tiny_model_learns_to_reconstruct():
    torch.manual_seed(0)
    model = VideoMAE(TINY)
    video = _smooth_video(4, TINY)
    gen = torch.Generator().manual_seed(0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss, _ = model(video, tube_mask(4, TINY.grid, 0.75, gen))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10  # 1.03 -> 0.49


def test_configs_round_trip_and_refuse_unknown_names():
    assert MAEConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown model"):
        config("vit_huge")
    with pytest.raises(ValueError, match="mask must be"):
        VideoMAE(TINY)(_video(1, TINY), torch.zeros(1, 5, dtype=torch.bool))


def test_raw_pixel_targets_when_not_normalised():
    video = _video(2, TINY)
    raw = VideoMAE(replace(TINY, norm_targets=False)).targets(video)
    tokens = patchify(video, TINY.grid)  # (B, N, pixels, C)
    assert torch.equal(raw, tokens.flatten(2))
    normalised = VideoMAE(TINY).targets(video).view(tokens.shape)
    assert torch.allclose(normalised.mean(dim=2), torch.zeros(()), atol=1e-5)
    assert torch.allclose(normalised.var(dim=2), torch.ones(()), atol=1e-3)
