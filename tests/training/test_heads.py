"""The classification heads: batched with attention masks, each equals a per-sample reference
built from torch's MultiheadAttention (the paper's eqs. 3–5) at depth 1 and 2, for any number of
tokens inside the box in one batch, and for boxes covering every token or none. The ``mca``
block keeps the inside tokens (its output depends on them when every outside token is the
same; the literal head's does not) and starts as mean pooling over them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mofo.training.heads import (
    MeanPoolHead,
    MotionCrossAttention,
    MotionCrossAttentionHead,
    MotionCrossAttentionLiteralHead,
    masked_mean,
    token_roles,
)

WIDTH, TOKENS = 24, 10


def _attend(layer: MotionCrossAttention, queries: torch.Tensor, keys: torch.Tensor):
    """Concat(head_1..h) W^O for one sample: one MultiheadAttention per head, d_model wide."""
    outputs = []
    for h in range(layer.heads):
        part = slice(h * WIDTH, (h + 1) * WIDTH)
        mha = nn.MultiheadAttention(WIDTH, num_heads=1, batch_first=True)
        with torch.no_grad():
            mha.in_proj_weight.copy_(
                torch.cat([layer.q.weight[part], layer.k.weight[part], layer.v.weight[part]])
            )
            mha.in_proj_bias.copy_(
                torch.cat([layer.q.bias[part], layer.k.bias[part], layer.v.bias[part]])
            )
            mha.out_proj.weight.copy_(torch.eye(WIDTH))  # the heads' own outputs
            mha.out_proj.bias.zero_()
        out, _ = mha(queries[None], keys[None], keys[None])
        outputs.append(out[0])
    return layer.out(torch.cat(outputs, dim=-1))


def _roles(x: torch.Tensor, ins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    queries = x[ins] if ins.any() else x  # no box: every token queries
    keys = x[~ins] if (~ins).any() else x  # box over everything: every token is a key
    return queries, keys


def literal_reference(head: MotionCrossAttentionLiteralHead, tokens, inside):
    """Eq. 5 applied layer after layer to the inside tokens, keys the outside ones, averaged."""
    pooled = []
    for x, ins in zip(tokens, inside, strict=True):
        queries, keys = _roles(x, ins)
        for layer in head.layers:
            queries = _attend(layer, queries, keys)
        pooled.append(head.norm(queries.mean(0)))
    return torch.stack(pooled)


def block_reference(head: MotionCrossAttentionHead, tokens, inside):
    """x = x + CA(LN(x), LN(y)); x = x + MLP(LN(x)) per block, then mean, norm."""
    pooled = []
    for x, ins in zip(tokens, inside, strict=True):
        queries, keys = _roles(x, ins)
        for block in head.blocks:
            queries = queries + _attend(block.attn, block.norm1(queries), block.norm1(keys))
            queries = queries + block.mlp(block.norm2(queries))
        pooled.append(head.norm(queries.mean(0)))
    return torch.stack(pooled)


def _inside() -> torch.Tensor:
    inside = torch.zeros(5, TOKENS, dtype=torch.bool)
    inside[0, :3] = True  # 3 inside
    inside[1, [1, 4, 5, 6, 9]] = True  # 5 inside, scattered
    inside[2, 7] = True  # 1 inside
    inside[3] = True  # the box covers every token
    return inside  # sample 4: no box at all


def _randomise(module: nn.Module) -> None:
    """Weights away from the zero init, so every path of the block counts."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.2)


@pytest.mark.parametrize("depth", [1, 2])
def test_batched_literal_mca_equals_the_per_sample_reference(depth):
    torch.manual_seed(0)
    head = MotionCrossAttentionLiteralHead(WIDTH, {"action": 5}, heads=3, depth=depth)
    tokens, inside = torch.randn(5, TOKENS, WIDTH), _inside()
    with torch.no_grad():
        batched = head.pooled(tokens, inside)
        expected = literal_reference(head, tokens, inside)
    assert torch.allclose(batched, expected, atol=1e-5), (batched - expected).abs().max()
    logits = head(tokens, inside)
    assert set(logits) == {"action"} and logits["action"].shape == (5, 5)


@pytest.mark.parametrize("depth", [1, 2])
def test_batched_mca_block_equals_the_per_sample_reference(depth):
    torch.manual_seed(1)
    head = MotionCrossAttentionHead(WIDTH, {"action": 5}, heads=3, depth=depth)
    _randomise(head)
    tokens, inside = torch.randn(5, TOKENS, WIDTH), _inside()
    with torch.no_grad():
        batched = head.pooled(tokens, inside)
        expected = block_reference(head, tokens, inside)
    assert torch.allclose(batched, expected, atol=1e-4), (batched - expected).abs().max()


def test_mca_starts_as_mean_pooling_of_the_inside_tokens():
    torch.manual_seed(2)
    head = MotionCrossAttentionHead(WIDTH, {"verb": 7, "noun": 4}, heads=3, depth=2)
    tokens, inside = torch.randn(5, TOKENS, WIDTH), _inside()
    with torch.no_grad():
        queries, _ = token_roles(inside)
        pooled = head.norm(masked_mean(tokens, queries))
        out = head(tokens, inside)
        for task, classifier in head.classifiers.items():
            assert torch.equal(out[task], classifier(pooled)), task
        # The inside mean, not all tokens: sample 0's mean is over its first 3 tokens.
        assert torch.allclose(head.pooled(tokens, inside)[0], head.norm(tokens[0, :3].mean(0)))


def test_mca_depends_on_the_inside_tokens_when_every_outside_token_is_equal():
    torch.manual_seed(3)
    inside = torch.zeros(2, TOKENS, dtype=torch.bool)
    inside[:, :4] = True
    tokens = torch.randn(1, TOKENS, WIDTH).repeat(2, 1, 1)
    tokens[:, 4:] = torch.randn(WIDTH)  # every outside token the same vector
    tokens[1, :4] = torch.randn(4, WIDTH)  # the two clips differ only inside the box
    block = MotionCrossAttentionHead(WIDTH, {"a": 3})
    literal = MotionCrossAttentionLiteralHead(WIDTH, {"a": 3})
    _randomise(block)
    with torch.no_grad():
        ours = block(tokens, inside)["a"]
        theirs = literal(tokens, inside)["a"]
    assert (ours[0] - ours[1]).abs().max() > 1e-2
    # Eqs. 3-5 literally: a convex mix of equal values is that value, whatever the queries.
    assert torch.allclose(theirs[0], theirs[1], atol=1e-5)


def test_each_head_is_d_model_wide_and_heads_are_concatenated():
    for head in (
        MotionCrossAttentionLiteralHead(WIDTH, {"verb": 97, "noun": 300}, heads=3),
        MotionCrossAttentionHead(WIDTH, {"verb": 97, "noun": 300}, heads=3),
    ):
        layer = head.layers[0] if hasattr(head, "layers") else head.blocks[0].attn
        assert layer.q.weight.shape == (3 * WIDTH, WIDTH)
        assert layer.out.weight.shape == (WIDTH, 3 * WIDTH)
        out = head(torch.randn(2, TOKENS, WIDTH), torch.zeros(2, TOKENS, dtype=torch.bool))
        assert out["verb"].shape == (2, 97) and out["noun"].shape == (2, 300)


@pytest.mark.parametrize("kind", [MotionCrossAttentionHead, MotionCrossAttentionLiteralHead])
def test_samples_do_not_see_each_other_and_only_inside_tokens_are_pooled(kind):
    torch.manual_seed(4)
    head = kind(WIDTH, {"a": 3})
    _randomise(head)
    tokens = torch.randn(2, TOKENS, WIDTH)
    inside = torch.zeros(2, TOKENS, dtype=torch.bool)
    inside[:, :4] = True
    with torch.no_grad():
        before = head.pooled(tokens, inside)
        changed = tokens.clone()
        changed[1] += 5.0  # another sample
        assert torch.allclose(head.pooled(changed, inside)[0], before[0], atol=1e-6)
        # An inside token is a query only: moving it changes its own fused row, not the others'.
        _, keys = token_roles(inside)
        layer = head.layers[0] if hasattr(head, "layers") else head.blocks[0]
        moved = tokens.clone()
        moved[0, 0] += 5.0
        a, b = layer(tokens, tokens, keys), layer(moved, tokens, keys)
        assert torch.allclose(a[0, 1:4], b[0, 1:4], atol=1e-6)
        assert not torch.allclose(a[0, 0], b[0, 0])


def test_token_roles_fall_back_for_empty_and_full_boxes():
    inside = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    queries, keys = token_roles(inside)
    assert queries.tolist() == [[True, False, False], [True, True, True], [True, True, True]]
    assert keys.tolist() == [[False, True, True], [True, True, True], [True, True, True]]
    with pytest.raises(ValueError, match=r"inside must be \(B, N\) bool, got \(3,\)"):
        token_roles(torch.zeros(3, dtype=torch.bool))


@pytest.mark.parametrize("kind", [MotionCrossAttentionHead, MotionCrossAttentionLiteralHead])
def test_depth_two_trains_every_parameter(kind):
    torch.manual_seed(5)
    head = kind(WIDTH, {"a": 4}, heads=2, depth=2)
    _randomise(head)
    inside = torch.zeros(3, TOKENS, dtype=torch.bool)
    inside[0, :2] = True
    inside[2] = True
    out = head(torch.randn(3, TOKENS, WIDTH, requires_grad=True), inside)["a"]
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    with pytest.raises(ValueError, match="depth must be >= 1"):
        kind(WIDTH, {"a": 4}, depth=0)


def test_classifiers_start_as_videomae_small_and_unbiased():
    torch.manual_seed(6)
    head = MeanPoolHead(384, {"action": 174})
    weight = head.classifiers["action"].weight.detach()
    assert torch.equal(head.classifiers["action"].bias, torch.zeros(174))
    # timm's / torch's trunc_normal_ cuts at +-2 (absolute), so std 0.02 is a plain normal.
    assert 0.019e-3 < float(weight.std()) < 0.021e-3 and abs(float(weight.mean())) < 1e-6


def test_mean_pool_head_and_masked_mean():
    torch.manual_seed(7)
    head = MeanPoolHead(WIDTH, {"action": 7})
    tokens = torch.randn(2, TOKENS, WIDTH)
    with torch.no_grad():
        expected = head.classifiers["action"](head.norm(tokens.mean(1)))
        assert torch.allclose(head(tokens)["action"], expected)
    where = torch.tensor([[True] * 2 + [False] * (TOKENS - 2), [False] * TOKENS])
    means = masked_mean(tokens, where)
    assert torch.allclose(means[0], tokens[0, :2].mean(0))
    assert torch.equal(means[1], torch.zeros(WIDTH))
