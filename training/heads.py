"""Classification heads over the encoder's tokens (the paper's §2.3 and Appendix B).

- :class:`MotionCrossAttentionHead` (MCA): the tokens that overlap the motion box are the
  queries, the other tokens the keys and values, of a multi-head cross-attention whose every
  head is ``d_model`` wide (``d_q = d_k = d_v = d_model``, eq. 4) and whose heads are concatenated
  and projected back to ``d_model`` (eq. 5); the fused query tokens are averaged and classified.
  The paper uses 3 heads and depth 1; with depth > 1 each layer's fused tokens, added to the
  queries, query the same keys again.
- :class:`MeanPoolHead`: the average of all tokens, then the classifier (VideoMAE's head, and the
  paper's MOFO* without the MCA).

Batched without a loop over samples: every token is a query and a key, and an attention mask
lets a query see only the keys outside its sample's box; pooling averages only the inside
queries. Samples whose box covers no token (no motion box) use every token as a query; those
whose box covers every token use every token as a key and value. Both are documented choices
where the paper is silent; the first makes the head plain attention pooling for clips without
motion, the second keeps a box over the whole frame from attending to nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def token_roles(inside: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which tokens query and which are keys, (B, N) bool each, from the tokens inside the
    box: inside ones query, outside ones are keys, with the fallbacks of the module notes."""
    if inside.ndim != 2:
        raise ValueError(f"inside must be (B, N) bool, got {tuple(inside.shape)}")
    inside = inside.to(torch.bool)
    queries = torch.where(inside.any(1, keepdim=True), inside, torch.ones_like(inside))
    keys = torch.where((~inside).any(1, keepdim=True), ~inside, torch.ones_like(inside))
    return queries, keys


class MotionCrossAttention(nn.Module):
    """One multi-head cross-attention layer, each of its ``heads`` ``head_width`` wide."""

    def __init__(self, width: int, heads: int = 3, head_width: int | None = None):
        super().__init__()
        self.heads = heads
        self.head_width = head_width or width  # the paper: d_q = d_k = d_v = d_model
        inner = heads * self.head_width
        self.q = nn.Linear(width, inner)
        self.k = nn.Linear(width, inner)
        self.v = nn.Linear(width, inner)
        self.out = nn.Linear(inner, width)  # W^O

    def forward(self, x: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``x`` (B, N, D) tokens; ``queries``, ``keys`` (B, N) bool → (B, N, D): each query
        token's fused embedding (rows of non-query tokens are computed but mean nothing)."""
        b, n, _ = x.shape
        split = (b, n, self.heads, self.head_width)
        q, k, v = (f(x).view(split).transpose(1, 2) for f in (self.q, self.k, self.v))
        allowed = keys[:, None, None, :].expand(b, 1, n, n)  # (B, 1, N_q, N_k)
        fused = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, h, N, d)
        return self.out(fused.transpose(1, 2).reshape(b, n, -1))


def masked_mean(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """The mean over dim 1 of the rows ``where`` (B, N) says, (B, D)."""
    weights = where.to(x.dtype)[..., None]
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)


class MotionCrossAttentionHead(nn.Module):
    """MCA over the encoder's tokens, the fused query tokens averaged, then a linear classifier
    (one per task: ``classes`` maps a task name, e.g. ``"verb"``, to its class count)."""

    def __init__(
        self,
        width: int,
        classes: dict[str, int],
        heads: int = 3,
        depth: int = 1,
        head_width: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            MotionCrossAttention(width, heads, head_width) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.classifiers = nn.ModuleDict({t: nn.Linear(width, c) for t, c in classes.items()})

    def pooled(self, tokens: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tokens, (B, N) inside the box → (B, D) fused, averaged embedding."""
        queries, keys = token_roles(inside)
        x = tokens
        for i, layer in enumerate(self.layers):
            fused = layer(x, queries, keys)
            x = fused if i == 0 else x + fused
            if i + 1 < len(self.layers):  # later layers: queries updated, keys as they were
                x = torch.where(queries[..., None], x, tokens)
        return self.norm(masked_mean(x, queries))

    def forward(self, tokens: torch.Tensor, inside: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.dropout(self.pooled(tokens, inside))
        return {task: head(pooled) for task, head in self.classifiers.items()}


class MeanPoolHead(nn.Module):
    """All tokens averaged, normalised, then a linear classifier per task (VideoMAE's head)."""

    def __init__(self, width: int, classes: dict[str, int], dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.classifiers = nn.ModuleDict({t: nn.Linear(width, c) for t, c in classes.items()})

    def forward(
        self, tokens: torch.Tensor, inside: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        pooled = self.dropout(self.norm(tokens.mean(1)))
        return {task: head(pooled) for task, head in self.classifiers.items()}
