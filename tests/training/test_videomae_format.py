"""VideoMAE's released checkpoints read into our models: a file in the exact layout of the
released ViT-B (pretraining and finetuned) places every encoder weight, none missing and none
left over, each where it belongs; a mapped model computes what VideoMAE's code computes; what
cannot be placed is named; a file of another shape is refused in words."""

from __future__ import annotations

import re

import pytest
import torch

from mofo.training.classifier import ClassifierConfig, VideoClassifier
from mofo.training.models import VideoEncoder, VideoMAE, config
from mofo.training.pretrained import (
    WeightsError,
    load_encoder,
    load_pretrained,
    read_encoder,
    videomae_classifier,
)
from mofo.training.videomae_format import from_videomae, read_videomae, unwrap
from tests.training.videomae_files import (
    TINY,
    VIT_B,
    finetuned_checkpoint,
    pretraining_checkpoint,
    reference_classifier,
    reference_encoder,
    sinusoid_table,
)

BASE = config("vit_base_patch16_tubelet2")
TINY_CFG = config("vit_tiny_patch8_tubelet2_32px")


@pytest.fixture(scope="module")
def vit_b_pretraining(tmp_path_factory):
    """The released ViT-B pretraining layout (1568 tokens' pos_embed included), saved."""
    path = tmp_path_factory.mktemp("videomae") / "checkpoint-799.pth"
    saved = pretraining_checkpoint(VIT_B, seed=0, tokens=1568)
    torch.save(saved, path)
    return path, saved["model"]


@pytest.mark.slow  # ViT-B: 94 M parameters built, saved and loaded
def test_the_released_vit_b_pretraining_layout_fills_our_model_exactly(vit_b_pretraining):
    path, state = vit_b_pretraining
    assert state["encoder.blocks.0.attn.qkv.weight"].shape == (2304, 768)
    assert state["encoder.patch_embed.proj.weight"].shape == (768, 3, 2, 16, 16)
    assert state["decoder.head.weight"].shape == (1536, 384)
    assert not any(k.endswith("qkv.bias") for k in state)
    weights = read_videomae(path)
    assert weights.layout == "pretraining" and weights.unplaced == []
    model = VideoMAE(BASE)
    result = model.load_state_dict(weights.state_dict, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert len(weights.state_dict) == len(state) - 12 * 2 + 12 - 4 * 2 + 4 - 1  # q/v, pos_embed
    ours = model.state_dict()
    # Values where they belong: every block, encoder and decoder, and the renamed parts.
    for i in range(12):
        file = f"encoder.blocks.{i}"
        assert torch.equal(ours[f"{file}.attn.qkv.weight"], state[f"{file}.attn.qkv.weight"])
        assert torch.equal(ours[f"{file}.mlp.fc2.bias"], state[f"{file}.mlp.fc2.bias"])
        q, v = state[f"{file}.attn.q_bias"], state[f"{file}.attn.v_bias"]
        assert torch.equal(ours[f"{file}.attn.qkv.bias"], torch.cat([q, torch.zeros(768), v]))
    assert torch.equal(ours["encoder.patch_embed.weight"], state["encoder.patch_embed.proj.weight"])
    assert torch.equal(ours["encoder.norm.bias"], state["encoder.norm.bias"])
    assert torch.equal(ours["to_decoder.weight"], state["encoder_to_decoder.weight"])
    assert torch.equal(ours["mask_token"], state["mask_token"])
    assert torch.equal(
        ours["decoder_blocks.3.attn.proj.weight"], state["decoder.blocks.3.attn.proj.weight"]
    )
    assert torch.equal(ours["decoder_norm.weight"], state["decoder.norm.weight"])
    assert torch.equal(ours["head.weight"], state["decoder.head.weight"])


@pytest.mark.slow  # ViT-B: 94 M parameters built, saved and loaded
def test_finetuning_takes_the_vit_b_encoder_and_drops_the_decoder(vit_b_pretraining):
    path, state = vit_b_pretraining
    init = read_encoder(path)
    assert (init.source, init.layout, init.unplaced) == ("videomae", "pretraining", [])
    assert set(init.encoder) == set(VideoEncoder(BASE).state_dict())  # nothing missing or extra
    assert init.dropped[:2] == [
        "decoder_blocks.0.attn.proj.bias",
        "decoder_blocks.0.attn.proj.weight",
    ]
    assert len(init.dropped) == len([k for k in state if not k.startswith("encoder.")]) - 1 - 4
    model = VideoClassifier(ClassifierConfig(BASE, {"action": 174}))
    assert load_pretrained(model, path) == []
    strict = model.encoder.load_state_dict(init.encoder, strict=True)  # the same, strictly
    assert strict.missing_keys == [] and strict.unexpected_keys == []
    assert torch.equal(
        model.encoder.blocks[7].attn.qkv.weight, state["encoder.blocks.7.attn.qkv.weight"]
    )


@pytest.mark.slow  # ViT-B: 94 M parameters built, saved and loaded
def test_the_released_vit_b_finetuned_layout_is_a_mean_pooling_classifier(tmp_path):
    saved = finetuned_checkpoint(VIT_B, classes=174, seed=3)
    state = saved["module"]
    assert "norm.weight" not in state and state["fc_norm.weight"].shape == (768,)
    path = tmp_path / "checkpoint.pth"
    torch.save(saved, path)
    init = read_encoder(path)
    assert (init.layout, init.unplaced, init.dropped) == (
        "finetuned",
        [],
        ["classifier.bias", "classifier.weight"],
    )
    assert not init.token_norm and set(init.head_norm) == {"weight", "bias"}
    encoder = VideoEncoder(config("vit_base_patch16_tubelet2", token_norm=False))
    strict = encoder.load_state_dict(init.encoder, strict=True)
    assert strict.missing_keys == [] and strict.unexpected_keys == []
    weights = read_videomae(path)
    model = videomae_classifier(weights, BASE, {"action": 174}, str(path))
    assert model.cfg.head == "mean" and not model.cfg.encoder.token_norm
    assert isinstance(model.encoder.norm, torch.nn.Identity)
    assert torch.equal(model.head.classifiers["action"].weight, state["head.weight"])
    assert torch.equal(model.head.norm.bias, state["fc_norm.bias"])
    assert torch.equal(model.encoder.blocks[11].mlp.fc1.weight, state["blocks.11.mlp.fc1.weight"])


def test_a_mapped_model_computes_what_videomae_computes():
    torch.manual_seed(0)
    video = torch.randn(2, 3, 4, 32, 32)  # the tiny grid: 2 x 4 x 4 tokens
    state = pretraining_checkpoint(TINY, seed=5)["model"]
    model = VideoMAE(TINY_CFG)
    model.load_state_dict(from_videomae(state).state_dict, strict=True)
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[:, torch.randperm(32)[:24]] = True  # the same count hidden in each sample
    with torch.no_grad():
        ours = model.encode(video, mask)
    theirs = reference_encoder(state, video, mask, heads=TINY_CFG.heads)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)

    finetuned = finetuned_checkpoint(TINY, classes=8, seed=6, std=0.2)["module"]
    classifier = videomae_classifier(from_videomae(finetuned), TINY_CFG, {"action": 8}, "file")
    boxes, valid = torch.zeros(2, 4), torch.zeros(2, dtype=torch.bool)
    with torch.no_grad():
        logits = classifier(video, boxes, valid)["action"]
    torch.testing.assert_close(
        logits, reference_classifier(finetuned, video, 2), rtol=1e-5, atol=1e-5
    )


def test_our_sinusoid_table_is_videomaes():
    from mofo.training.models import sinusoid_positions

    torch.testing.assert_close(sinusoid_positions(1568, 768), sinusoid_table(1568, 768)[0])


def test_what_cannot_be_placed_is_named(tmp_path):
    state = pretraining_checkpoint(TINY, seed=1)["model"]
    state["encoder.blocks.1.gamma_1"] = torch.ones(64)  # layer scale: no such parameter here
    state["pos_embed"] = torch.randn(1, 32, 32)  # learnt positions
    del state["encoder.blocks.0.attn.v_bias"]
    state["encoder.head.weight"] = torch.zeros(10, 64)
    weights = from_videomae(state)
    assert weights.unplaced == [
        "encoder.blocks.0.attn.q_bias",
        "encoder.blocks.1.gamma_1",
        "encoder.head.weight",
        "pos_embed",
    ]
    assert "encoder.blocks.0.attn.qkv.bias" not in weights.state_dict
    path = tmp_path / "odd.pth"
    torch.save({"model": state}, path)
    model = VideoClassifier(ClassifierConfig(TINY_CFG))
    init = read_encoder(path)
    assert load_encoder(model, init) == ["blocks.0.attn.qkv.bias"]  # named, not invented


def test_wrappers_and_prefixes_are_unwrapped():
    state = finetuned_checkpoint(TINY, classes=8)["module"]
    wrapped = {f"module.{k}": v for k, v in state.items()}  # a DDP wrapper's names
    for saved in (state, {"model": state}, {"module": state}, {"model": wrapped}):
        assert set(unwrap(saved)) == set(state)


def test_another_shape_and_other_files_are_refused(tmp_path):
    path = tmp_path / "base.pth"
    torch.save(finetuned_checkpoint(TINY, classes=8), path)
    model = VideoClassifier(ClassifierConfig(config("vit_tiny_patch8_tubelet2_64px")))
    with pytest.raises(WeightsError, match=re.escape("width 64 (model: 96), depth 2 (model: 3)")):
        load_pretrained(model, path)
    with pytest.raises(WeightsError, match="has 8 classes; the split has"):
        videomae_classifier(read_videomae(path), TINY_CFG, {"action": 5}, str(path))
    pretraining = tmp_path / "pre.pth"
    torch.save(pretraining_checkpoint(TINY), pretraining)
    with pytest.raises(WeightsError, match="pretraining checkpoint has no classifier"):
        videomae_classifier(read_videomae(pretraining), TINY_CFG, {"action": 8}, "pre.pth")
    other = tmp_path / "other.pth"
    torch.save({"model": {"conv.weight": torch.zeros(3)}}, other)
    with pytest.raises(WeightsError, match="nor a VideoMAE checkpoint"):
        read_encoder(other)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="cannot be read"):
        read_encoder(tmp_path / "junk.pth")
