"""The motion cross-attention head: batched with attention masks, it equals a per-sample reference
built from torch's MultiheadAttention (the paper's eq. 3-6), for any number of tokens inside the
box in one batch, and for boxes covering every token or none."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.heads import MeanPoolHead, MotionCrossAttentionHead, masked_mean, token_roles

WIDTH, TOKENS = 24, 10


def reference(head: MotionCrossAttentionHead, tokens: torch.Tensor, inside: torch.Tensor):
    """One sample at a time: the inside tokens query the outside ones through one
    MultiheadAttention per head (d_q = d_k = d_v = d_model), heads concatenated, W^O, averaged."""
    layer = head.layers[0]
    pooled = []
    for x, ins in zip(tokens, inside, strict=True):
        queries = x[ins] if ins.any() else x  # no box: every token queries
        keys = x[~ins] if (~ins).any() else x  # box over everything: every token is a key
        outputs = []
        for h in range(layer.heads):
            part = slice(h * WIDTH, (h + 1) * WIDTH)
            mha = nn.MultiheadAttention(WIDTH, num_heads=1, batch_first=True)
            with torch.no_grad():
                mha.in_proj_weight.copy_(torch.cat([layer.q.weight[part], layer.k.weight[part],
                                                    layer.v.weight[part]]))  # fmt: skip
                mha.in_proj_bias.copy_(torch.cat([layer.q.bias[part], layer.k.bias[part],
                                                  layer.v.bias[part]]))  # fmt: skip
                mha.out_proj.weight.copy_(torch.eye(WIDTH))  # the heads' own outputs
                mha.out_proj.bias.zero_()
            out, _ = mha(queries[None], keys[None], keys[None])
            outputs.append(out[0])
        fused = layer.out(torch.cat(outputs, dim=-1))  # Concat(head_1..h) W^O
        pooled.append(head.norm(fused.mean(0)))
    return torch.stack(pooled)


def test_batched_mca_equals_the_per_sample_reference():
    torch.manual_seed(0)
    head = MotionCrossAttentionHead(WIDTH, {"action": 5}, heads=3, depth=1)
    tokens = torch.randn(5, TOKENS, WIDTH)
    inside = torch.zeros(5, TOKENS, dtype=torch.bool)
    inside[0, :3] = True  # 3 inside
    inside[1, [1, 4, 5, 6, 9]] = True  # 5 inside, scattered
    inside[2, 7] = True  # 1 inside
    inside[3] = True  # the box covers every token
    # sample 4: no box at all
    with torch.no_grad():
        batched = head.pooled(tokens, inside)
        expected = reference(head, tokens, inside)
    assert torch.allclose(batched, expected, atol=1e-5), (batched - expected).abs().max()
    logits = head(tokens, inside)
    assert set(logits) == {"action"} and logits["action"].shape == (5, 5)


def test_each_head_is_d_model_wide_and_heads_are_concatenated():
    head = MotionCrossAttentionHead(WIDTH, {"verb": 97, "noun": 300}, heads=3)
    layer = head.layers[0]
    assert layer.q.weight.shape == (3 * WIDTH, WIDTH) and layer.out.weight.shape == (
        WIDTH,
        3 * WIDTH,
    )
    out = head(torch.randn(2, TOKENS, WIDTH), torch.zeros(2, TOKENS, dtype=torch.bool))
    assert out["verb"].shape == (2, 97) and out["noun"].shape == (2, 300)


def test_samples_do_not_see_each_other_and_queries_are_not_keys():
    torch.manual_seed(1)
    head = MotionCrossAttentionHead(WIDTH, {"a": 3})
    tokens = torch.randn(2, TOKENS, WIDTH)
    inside = torch.zeros(2, TOKENS, dtype=torch.bool)
    inside[:, :4] = True
    with torch.no_grad():
        before = head.pooled(tokens, inside)
        changed = tokens.clone()
        changed[1] += 5.0  # another sample
        assert torch.allclose(head.pooled(changed, inside)[0], before[0], atol=1e-6)
        # Inside token 0 is a query only: moving it changes only its own row of fused tokens,
        # which the pooled mean sees, but the other queries' rows stay as they were.
        layer = head.layers[0]
        queries, keys = token_roles(inside)
        moved = tokens.clone()
        moved[0, 0] += 5.0
        a, b = layer(tokens, queries, keys), layer(moved, queries, keys)
        assert torch.allclose(a[0, 1:4], b[0, 1:4], atol=1e-6) and not torch.allclose(
            a[0, 0], b[0, 0]
        )


def test_token_roles_fall_back_for_empty_and_full_boxes():
    inside = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    queries, keys = token_roles(inside)
    assert queries.tolist() == [[True, False, False], [True, True, True], [True, True, True]]
    assert keys.tolist() == [[False, True, True], [True, True, True], [True, True, True]]
    with pytest.raises(ValueError, match=r"inside must be \(B, N\) bool, got \(3,\)"):
        token_roles(torch.zeros(3, dtype=torch.bool))


def test_depth_two_runs_and_keeps_the_keys_as_they_were():
    torch.manual_seed(2)
    head = MotionCrossAttentionHead(WIDTH, {"a": 4}, heads=2, depth=2)
    inside = torch.zeros(3, TOKENS, dtype=torch.bool)
    inside[0, :2] = True
    inside[2] = True
    out = head(torch.randn(3, TOKENS, WIDTH, requires_grad=True), inside)["a"]
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_mean_pool_head_and_masked_mean():
    torch.manual_seed(3)
    head = MeanPoolHead(WIDTH, {"action": 7})
    tokens = torch.randn(2, TOKENS, WIDTH)
    with torch.no_grad():
        expected = head.classifiers["action"](head.norm(tokens.mean(1)))
        assert torch.allclose(head(tokens)["action"], expected)
    where = torch.tensor([[True] * 2 + [False] * (TOKENS - 2), [False] * TOKENS])
    means = masked_mean(tokens, where)
    assert torch.allclose(means[0], tokens[0, :2].mean(0)) and torch.equal(
        means[1], torch.zeros(WIDTH)
    )
