"""Classification heads over the encoder's tokens (the paper's §2.3 and Appendix B).

- :class:`MotionCrossAttentionHead` (``mca``): the inside tokens (those that overlap the motion
  box) cross-attend to the outside tokens in pre-norm transformer blocks, the reading of the
  authors' released code: with x the inside tokens and y the outside ones,
  ``x = x + CA(LN(x), LN(y))``, then ``x = x + MLP(LN(x))``, ``depth`` times (y stays the
  encoder's); then the mean of x, a norm and the classifier. CA is the paper's multi-head
  cross-attention: every head ``d_model`` wide (``d_q = d_k = d_v = d_model``, eq. 4), heads
  concatenated and projected by W^O (eq. 5); 3 heads and depth 1 by default (Table 2). W^O and
  the MLP's last layer start at zero, so at initialisation the head is exactly mean pooling over
  the inside tokens (VideoMAE's head, on the motion area), and training adds the context.
- :class:`MotionCrossAttentionLiteralHead` (``mca_literal``): eqs. 3–6 read literally, no
  residual and no MLP: the fused embedding is only the attention-weighted values of the outside
  tokens (the inside tokens reach the classifier only through the attention weights). Depth d
  applies eq. 5 d times, each layer's fused tokens the next layer's queries, the keys always the
  encoder's outside tokens. Kept for ablation and for checkpoints finetuned with it.
- :class:`MeanPoolHead` (``mean``): the average of all tokens, then the classifier (VideoMAE's
  head, and the paper's MOFO* without the MCA).

Batched without a loop over samples: every token is a query and a key, and an attention mask
lets a query see only the keys outside its sample's box; pooling averages only the inside
queries. Samples whose box covers no token (no motion box) use every token as a query; those
whose box covers every token use every token as a key and value. Both are documented choices
where the paper is silent; the first makes the head plain attention over the whole clip for
clips without motion, the second keeps a box over the whole frame from attending to nothing.

Classifiers start as VideoMAE's: truncated normal (std 0.02) scaled by ``init_scale`` (0.001),
bias zero, so the first logits are near zero whatever the pretraining left.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
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
    """One multi-head cross-attention (eqs. 3–5), each of its ``heads`` ``head_width`` wide."""

    def __init__(self, width: int, heads: int = 3, head_width: int | None = None):
        super().__init__()
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        self.heads = heads
        self.head_width = head_width or width  # the paper: d_q = d_k = d_v = d_model
        inner = heads * self.head_width
        self.q = nn.Linear(width, inner)
        self.k = nn.Linear(width, inner)
        self.v = nn.Linear(width, inner)
        self.out = nn.Linear(inner, width)  # W^O

    def forward(self, x: torch.Tensor, y: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Queries from ``x``, keys and values from ``y`` (B, N, D each); ``keys`` (B, N) bool:
        which rows of ``y`` may be attended to → (B, N, D), every row of ``x`` fused (only the
        query rows mean anything)."""
        b, n, _ = x.shape
        split = (b, n, self.heads, self.head_width)
        q = self.q(x).view(split).transpose(1, 2)
        k, v = (f(y).view(split).transpose(1, 2) for f in (self.k, self.v))
        allowed = keys[:, None, None, :].expand(b, 1, n, n)  # (B, 1, N_q, N_k)
        fused = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, h, N, d)
        return self.out(fused.transpose(1, 2).reshape(b, n, -1))


class MotionCrossAttentionBlock(nn.Module):
    """``x = x + CA(LN(x), LN(y)); x = x + MLP(LN(x))``, one LayerNorm for x and y as the
    formula writes it; W^O and the MLP's output layer zero when ``zero_init``."""

    def __init__(
        self,
        width: int,
        heads: int = 3,
        head_width: int | None = None,
        mlp_ratio: float = 4.0,
        zero_init: bool = True,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = MotionCrossAttention(width, heads, head_width)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))
        for layer in (
            self.attn.q,
            self.attn.k,
            self.attn.v,
            self.attn.out,
            self.mlp.fc1,
            self.mlp.fc2,
        ):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        if zero_init:
            nn.init.zeros_(self.attn.out.weight)
            nn.init.zeros_(self.mlp.fc2.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), self.norm1(y), keys)
        return x + self.mlp(self.norm2(x))


def masked_mean(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """The mean over dim 1 of the rows ``where`` (B, N) says, (B, D)."""
    weights = where.to(x.dtype)[..., None]
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)


def classifiers(width: int, classes: dict[str, int], init_scale: float) -> nn.ModuleDict:
    """One linear classifier per task, VideoMAE's init: trunc-normal std 0.02 × ``init_scale``,
    bias 0."""
    out = nn.ModuleDict({t: nn.Linear(width, c) for t, c in classes.items()})
    for layer in out.values():
        nn.init.trunc_normal_(layer.weight, std=0.02)
        with torch.no_grad():
            layer.weight.mul_(init_scale)
        nn.init.zeros_(layer.bias)
    return out


class _Classifying(nn.Module):
    """The part every head shares: a norm over the pooled embedding, dropout, classifiers."""

    def __init__(self, width: int, classes: dict[str, int], dropout: float, init_scale: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.classifiers = classifiers(width, classes, init_scale)

    def pooled(self, tokens: torch.Tensor, inside: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, tokens: torch.Tensor, inside: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """(B, N, D) tokens, (B, N) bool inside the box → ``{task: (B, classes) logits}``."""
        pooled = self.dropout(self.pooled(tokens, inside))
        return {task: head(pooled) for task, head in self.classifiers.items()}


class MotionCrossAttentionHead(_Classifying):
    """``mca``: pre-norm cross-attention blocks, inside tokens querying outside ones, the
    inside tokens averaged, normalised and classified (one classifier per task: ``classes``
    maps a task name, e.g. ``"verb"``, to its class count)."""

    def __init__(
        self,
        width: int,
        classes: dict[str, int],
        heads: int = 3,
        depth: int = 1,
        head_width: int | None = None,
        dropout: float = 0.0,
        mlp_ratio: float = 4.0,
        init_scale: float = 0.001,
        zero_init: bool = True,
    ):
        super().__init__(width, classes, dropout, init_scale)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.blocks = nn.ModuleList(
            MotionCrossAttentionBlock(width, heads, head_width, mlp_ratio, zero_init)
            for _ in range(depth)
        )

    def pooled(self, tokens: torch.Tensor, inside: torch.Tensor | None) -> torch.Tensor:
        """(B, N, D) tokens, (B, N) inside the box → (B, D) normalised mean of the fused
        inside tokens."""
        queries, keys = token_roles(_inside_or_none(tokens, inside))
        x = tokens
        for block in self.blocks:  # x: the queries, updated; y: the encoder's tokens
            x = block(x, tokens, keys)
        return self.norm(masked_mean(x, queries))


class MotionCrossAttentionLiteralHead(_Classifying):
    """``mca_literal``: eqs. 3–6 with no residual (see the module notes); the parameter names
    (``layers.i.q/k/v/out``, ``norm``, ``classifiers``) are those of checkpoints finetuned
    before the ``mca`` head became the block."""

    def __init__(
        self,
        width: int,
        classes: dict[str, int],
        heads: int = 3,
        depth: int = 1,
        head_width: int | None = None,
        dropout: float = 0.0,
        init_scale: float = 0.001,
    ):
        super().__init__(width, classes, dropout, init_scale)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.layers = nn.ModuleList(
            MotionCrossAttention(width, heads, head_width) for _ in range(depth)
        )

    def pooled(self, tokens: torch.Tensor, inside: torch.Tensor | None) -> torch.Tensor:
        """(B, N, D) tokens, (B, N) inside the box → (B, D): e_fused averaged, normalised."""
        queries, keys = token_roles(_inside_or_none(tokens, inside))
        x = tokens
        for layer in self.layers:  # e_fused of one layer queries the same keys in the next
            x = layer(x, tokens, keys)
        return self.norm(masked_mean(x, queries))


class MeanPoolHead(_Classifying):
    """``mean``: all tokens averaged, normalised, then a linear classifier per task
    (VideoMAE's head)."""

    def __init__(
        self, width: int, classes: dict[str, int], dropout: float = 0.0, init_scale: float = 0.001
    ):
        super().__init__(width, classes, dropout, init_scale)

    def pooled(self, tokens: torch.Tensor, inside: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(tokens.mean(1))


def _inside_or_none(tokens: torch.Tensor, inside: torch.Tensor | None) -> torch.Tensor:
    """No ``inside`` given: no box for any sample."""
    if inside is None:
        return torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return inside
