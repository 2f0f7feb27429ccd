"""The masked autoencoder on every device (CUDA ones marked ``gpu``; ``gpu/check.sh``
runs them): a bf16-autocast step keeps fp32's loss and gradients on the CPU, and SDPA attention
equals VideoMAE's explicit formula in fp32 and under bf16 autocast."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mofo.training.masking import tube_mask
from mofo.training.models import Attention, VideoMAE, config
from testkit.attention import explicit_attention

TINY = config("vit_tiny_patch8_tubelet2_32px")


def _loss_and_grads(
    model: VideoMAE, video: torch.Tensor, mask: torch.Tensor, autocast: bool
) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast(video.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss, _ = model(video, mask)
    loss.backward()
    return loss.item(), {n: p.grad.float().cpu() for n, p in model.named_parameters()}


def test_bf16_autocast_keeps_the_fp32_loss_and_gradients(device):
    torch.manual_seed(0)
    model = VideoMAE(TINY)
    g = TINY.grid
    gen = torch.Generator().manual_seed(0)
    video = torch.randn((4, 3, g.frames, g.height, g.width), generator=gen)
    mask = tube_mask(4, g, 0.75, gen)
    loss_fp32, grads_fp32 = _loss_and_grads(model, video, mask, autocast=False)  # on the CPU

    on_device = copy.deepcopy(model).to(device)
    loss, grads = _loss_and_grads(on_device, video.to(device), mask.to(device), autocast=True)

    assert loss == pytest.approx(loss_fp32, rel=1e-2)
    assert grads.keys() == grads_fp32.keys()
    flat, flat_fp32 = (torch.cat([t.flatten() for t in d.values()]) for d in (grads, grads_fp32))
    assert torch.isfinite(flat).all()
    assert (flat - flat_fp32).norm() / flat_fp32.norm() < 0.03
    for name, grad in grads.items():
        if grads_fp32[name].norm() > 0:
            cosine = F.cosine_similarity(grad.flatten(), grads_fp32[name].flatten(), dim=0)
            assert cosine > 0.995, name


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.bfloat16, 5e-3)])
def test_sdpa_attention_equals_videomaes_explicit_attention(device, dtype, atol):
    torch.manual_seed(0)
    attn = Attention(256, 4).to(device)  # head width 64, as in ViT-B
    x = torch.randn((2, 300, 256), generator=torch.Generator().manual_seed(1)).to(device)
    # outputs reach ~0.15: bf16 rounding leaves ~1e-3, a wrong formula far more
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            reference = explicit_attention(attn, x)  # fp32
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                sdpa, explicit = attn(x), explicit_attention(attn, x)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    assert sdpa.dtype == explicit.dtype == dtype
    torch.testing.assert_close(sdpa.float(), reference, atol=atol, rtol=0)
    torch.testing.assert_close(explicit.float(), reference, atol=atol, rtol=0)
