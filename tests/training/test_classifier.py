"""The finetuning model: the pretrained encoder's weights load exactly (and refuse another
architecture), the box picks the tokens the MCA head queries with, and both heads classify."""

from __future__ import annotations

import pytest
import torch

from mofo.training.classifier import EPIC_CLASSES, ClassifierConfig, VideoClassifier
from mofo.training.models import VideoMAE, config
from mofo.training.pretrained import load_pretrained

TINY = config("vit_tiny_patch8_tubelet2_32px")  # 4 frames of 32 x 32: 2 x 4 x 4 tokens


def _batch(size: int = 2):
    video = torch.randn(size, 3, 4, 32, 32)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 32.0]]).repeat(size, 1)  # the left half
    return video, boxes, torch.ones(size, dtype=torch.bool)


@pytest.mark.parametrize("head", ["mca", "mca_literal", "mean"])
def test_both_heads_classify_every_task(head):
    torch.manual_seed(0)
    model = VideoClassifier(ClassifierConfig(TINY, dict(EPIC_CLASSES), head=head))
    video, boxes, valid = _batch(3)
    out = model(video, boxes, valid)
    assert out["verb"].shape == (3, 97) and out["noun"].shape == (3, 300)
    sum(o.sum() for o in out.values()).backward()
    assert model.encoder.patch_embed.weight.grad.abs().sum() > 0  # trained end to end


def test_the_box_picks_the_query_tokens():
    model = VideoClassifier(ClassifierConfig(TINY))
    _, boxes, valid = _batch(1)
    inside = model.inside(boxes, valid).view(2, 4, 4)  # (T', rows, columns)
    assert inside[:, :, :2].all() and not inside[:, :, 2:].any()  # x runs along columns
    none = model.inside(boxes, torch.zeros(1, dtype=torch.bool))
    assert not none.any()


def test_pretrained_encoder_weights_load_exactly(tmp_path):
    torch.manual_seed(1)
    pretrained = VideoMAE(TINY)
    path = tmp_path / "model.pt"
    torch.save({"model_config": TINY.to_dict(), "state_dict": pretrained.state_dict()}, path)
    torch.manual_seed(2)
    model = VideoClassifier(ClassifierConfig(TINY))
    assert load_pretrained(model, path) == []
    for name, weight in model.encoder.state_dict().items():
        assert torch.equal(weight, pretrained.encoder.state_dict()[name]), name
    cfg = ClassifierConfig.from_dict(model.cfg.to_dict())
    assert cfg == model.cfg


def test_another_architecture_is_refused(tmp_path):
    small = config("vit_tiny_patch8_tubelet2_64px")
    path = tmp_path / "model.pt"
    torch.save({"model_config": small.to_dict(), "state_dict": VideoMAE(small).state_dict()}, path)
    model = VideoClassifier(ClassifierConfig(TINY))
    with pytest.raises(ValueError, match="does not fit this encoder"):
        load_pretrained(model, path)


def test_an_old_checkpoint_of_the_literal_head_loads_as_mca_literal():
    torch.manual_seed(3)
    old = VideoClassifier(ClassifierConfig(TINY, head="mca_literal"))
    saved = old.cfg.to_dict()
    # What a checkpoint of the first format held: no version, no init_scale, "mca" literal.
    for key in ("version", "init_scale", "mca_mlp_ratio"):
        del saved[key]
    saved["head"] = "mca"
    cfg = ClassifierConfig.from_dict(saved)
    assert cfg.head == "mca_literal" and cfg.version == 2
    model = VideoClassifier(cfg)
    model.load_state_dict(old.state_dict())  # the same parameter names
    video, boxes, valid = _batch()
    with torch.no_grad():
        assert torch.equal(model(video, boxes, valid)["action"], old(video, boxes, valid)["action"])
    # Today's configs keep their head, and a newer format is refused in words.
    assert ClassifierConfig.from_dict(ClassifierConfig(TINY).to_dict()).head == "mca"
    with pytest.raises(ValueError, match="version 3 is newer than this code reads"):
        ClassifierConfig.from_dict({**ClassifierConfig(TINY).to_dict(), "version": 3})


def test_bad_configs():
    with pytest.raises(ValueError, match="2 or more classes"):
        VideoClassifier(ClassifierConfig(TINY, {"action": 1}))
    with pytest.raises(ValueError, match="head must be"):
        VideoClassifier(ClassifierConfig(TINY, head="cls"))


def test_layer_wise_lr_decay_groups():
    from mofo.training.classifier import param_groups

    model = VideoClassifier(ClassifierConfig(TINY))  # 2 blocks
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.75)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    decay = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert scale["encoder.patch_embed.weight"] == pytest.approx(0.75**3)
    assert scale["encoder.blocks.0.attn.qkv.weight"] == pytest.approx(0.75**2)
    assert scale["encoder.blocks.1.mlp.fc1.weight"] == pytest.approx(0.75)
    assert scale["head.classifiers.action.weight"] == 1.0 and scale["encoder.norm.weight"] == 1.0
    assert (
        decay["encoder.blocks.1.mlp.fc1.weight"] == 0.05
        and decay["encoder.blocks.1.norm1.bias"] == 0
    )
    named = {n for g in groups for n in g["names"]}
    assert named == {n for n, _ in model.named_parameters()}  # every parameter, once
