"""VideoMAE's attention written out (``softmax(q·scale @ kᵀ) @ v``, the N × N weights
materialised): the reference the model's SDPA attention is checked against, in the tests and
before the pretraining benchmark times either."""

from __future__ import annotations

import torch

from mofo.training.models import Attention


def explicit_attention(self: Attention, x: torch.Tensor) -> torch.Tensor:
    """VideoMAE's attention over the same ``qkv`` and ``proj`` weights as ``Attention``."""
    b, n, d = x.shape
    q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    scale = (d // self.heads) ** -0.5
    attn = (q * scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
    attn = attn.softmax(dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
