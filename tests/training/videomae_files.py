"""Checkpoints in the layout of VideoMAE's released weights (MCG-NJU/VideoMAE), made from random
tensors, and VideoMAE's forward pass written from its released code (``modeling_pretrain.py``,
``modeling_finetune.py``) as plain functions over such a state dict: what a mapped model of
ours must compute.

The released ViT-B: ``patch_embed.proj`` a Conv3d (768, 3, 2, 16, 16); 12 blocks, each with a
bias-free ``attn.qkv`` (2304, 768) plus ``q_bias`` and ``v_bias`` (768,), ``attn.proj``,
``norm1``, ``norm2``, ``mlp.fc1`` (3072, 768), ``mlp.fc2``; ``norm``. Pretraining adds
``encoder_to_decoder`` (384, 768) with no bias, ``mask_token`` (1, 1, 384), 4 decoder blocks of
384 and ``decoder.head`` (1536, 384); finetuning names the encoder without ``encoder.`` and adds
``fc_norm`` and ``head``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

VIT_B = {"width": 768, "depth": 12, "tubelet": 2, "patch": 16, "decoder_width": 384,
         "decoder_depth": 4}  # fmt: skip
TINY = {"width": 64, "depth": 2, "tubelet": 2, "patch": 8, "decoder_width": 32, "decoder_depth": 1}


def _block(prefix: str, width: int, rand) -> dict[str, torch.Tensor]:
    hidden = 4 * width
    return {
        f"{prefix}.norm1.weight": 1 + rand(width),
        f"{prefix}.norm1.bias": rand(width),
        f"{prefix}.attn.q_bias": rand(width),
        f"{prefix}.attn.v_bias": rand(width),
        f"{prefix}.attn.qkv.weight": rand(3 * width, width),
        f"{prefix}.attn.proj.weight": rand(width, width),
        f"{prefix}.attn.proj.bias": rand(width),
        f"{prefix}.norm2.weight": 1 + rand(width),
        f"{prefix}.norm2.bias": rand(width),
        f"{prefix}.mlp.fc1.weight": rand(hidden, width),
        f"{prefix}.mlp.fc1.bias": rand(hidden),
        f"{prefix}.mlp.fc2.weight": rand(width, hidden),
        f"{prefix}.mlp.fc2.bias": rand(width),
    }


def _random(seed: int, std: float):
    generator = torch.Generator().manual_seed(seed)
    return lambda *shape: torch.randn(*shape, generator=generator) * std


def encoder_state(shape: dict, seed: int = 0, prefix: str = "", std: float = 0.02) -> dict:
    """The encoder's weights as VideoMAE names them (``prefix`` ``encoder.`` when pretraining)."""
    rand = _random(seed, std)
    w, t, p = shape["width"], shape["tubelet"], shape["patch"]
    out = {
        f"{prefix}patch_embed.proj.weight": rand(w, 3, t, p, p),
        f"{prefix}patch_embed.proj.bias": rand(w),
    }
    for i in range(shape["depth"]):
        out.update(_block(f"{prefix}blocks.{i}", w, rand))
    return out


def pretraining_checkpoint(shape: dict, seed: int = 0, tokens: int | None = None) -> dict:
    """A pretraining checkpoint as VideoMAE's ``run_mae_pretraining.py`` saves it: ``{"model":
    ..., "epoch": ...}``; ``tokens``: include the fixed ``pos_embed`` of that many tokens."""
    rand = _random(seed + 1, 0.02)
    w, d = shape["width"], shape["decoder_width"]
    pixels = 3 * shape["tubelet"] * shape["patch"] ** 2
    state = encoder_state(shape, seed, "encoder.")
    state["encoder.norm.weight"] = 1 + rand(w)
    state["encoder.norm.bias"] = rand(w)
    state["encoder_to_decoder.weight"] = rand(d, w)
    state["mask_token"] = rand(1, 1, d)
    for i in range(shape["decoder_depth"]):
        state.update(_block(f"decoder.blocks.{i}", d, rand))
    state["decoder.norm.weight"] = 1 + rand(d)
    state["decoder.norm.bias"] = rand(d)
    state["decoder.head.weight"] = rand(pixels, d)
    state["decoder.head.bias"] = rand(pixels)
    if tokens is not None:
        state["pos_embed"] = sinusoid_table(tokens, d)  # the decoder's, as the released model
    return {"model": state, "epoch": 799}


def finetuned_checkpoint(shape: dict, classes: int, seed: int = 0, std: float = 0.02) -> dict:
    """A finetuned (mean pooling) checkpoint: ``{"module": ...}``, as some released files are."""
    rand = _random(seed + 2, std)
    state = encoder_state(shape, seed, "", std)
    state["fc_norm.weight"] = 1 + rand(shape["width"])
    state["fc_norm.bias"] = rand(shape["width"])
    state["head.weight"] = rand(classes, shape["width"])
    state["head.bias"] = rand(classes)
    return {"module": state}


def sinusoid_table(count: int, width: int) -> torch.Tensor:
    """VideoMAE's ``get_sinusoid_encoding_table`` (NumPy, as released): (1, count, width)."""
    position = np.arange(count)[:, None] / np.power(10000, 2 * (np.arange(width) // 2) / width)
    position[:, 0::2] = np.sin(position[:, 0::2])
    position[:, 1::2] = np.cos(position[:, 1::2])
    return torch.tensor(position, dtype=torch.float)[None]


def _reference_block(x: torch.Tensor, state: dict, prefix: str, heads: int) -> torch.Tensor:
    """VideoMAE's ``Block`` with its ``Attention`` (q/v bias, zero key bias, scaled softmax)."""

    def ln(y, name):
        return F.layer_norm(y, y.shape[-1:], state[f"{name}.weight"], state[f"{name}.bias"], 1e-6)

    b, n, c = x.shape
    q_bias, v_bias = state[f"{prefix}.attn.q_bias"], state[f"{prefix}.attn.v_bias"]
    qkv_bias = torch.cat((q_bias, torch.zeros_like(v_bias), v_bias))
    qkv = F.linear(ln(x, f"{prefix}.norm1"), state[f"{prefix}.attn.qkv.weight"], qkv_bias)
    q, k, v = qkv.reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    attn = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(b, n, -1)
    x = x + F.linear(out, state[f"{prefix}.attn.proj.weight"], state[f"{prefix}.attn.proj.bias"])
    h = F.linear(ln(x, f"{prefix}.norm2"), state[f"{prefix}.mlp.fc1.weight"],
                 state[f"{prefix}.mlp.fc1.bias"])  # fmt: skip
    h = F.linear(F.gelu(h), state[f"{prefix}.mlp.fc2.weight"], state[f"{prefix}.mlp.fc2.bias"])
    return x + h


def _reference_tokens(state: dict, video: torch.Tensor, prefix: str, heads: int, mask=None):
    w = state[f"{prefix}patch_embed.proj.weight"]
    x = F.conv3d(video, w, state[f"{prefix}patch_embed.proj.bias"], stride=w.shape[2:])
    x = x.flatten(2).transpose(1, 2)
    x = x + sinusoid_table(x.shape[1], x.shape[2])
    if mask is not None:
        x = x[~mask].reshape(x.shape[0], -1, x.shape[2])
    start = f"{prefix}blocks."
    depth = len({k[len(start) :].split(".")[0] for k in state if k.startswith(start)})
    for i in range(depth):
        x = _reference_block(x, state, f"{prefix}blocks.{i}", heads)
    return x


def reference_encoder(state: dict, video: torch.Tensor, mask: torch.Tensor, heads: int):
    """VideoMAE's ``PretrainVisionTransformerEncoder.forward_features``: the visible tokens."""
    x = _reference_tokens(state, video, "encoder.", heads, mask)
    n = "encoder.norm"
    return F.layer_norm(x, x.shape[-1:], state[f"{n}.weight"], state[f"{n}.bias"], 1e-6)


def reference_classifier(state: dict, video: torch.Tensor, heads: int) -> torch.Tensor:
    """VideoMAE's finetuned ``VisionTransformer`` with mean pooling: the logits."""
    x = _reference_tokens(state, video, "", heads).mean(1)
    x = F.layer_norm(x, x.shape[-1:], state["fc_norm.weight"], state["fc_norm.bias"], 1e-6)
    return F.linear(x, state["head.weight"], state["head.bias"])
