"""Weights exported as ``model.safetensors`` + ``config.json``: the folder alone rebuilds the
model (the pretraining autoencoder or a finetuned classifier), every tensor equal and the same
outputs on the same input; the config says what the model is; broken folders and files that are
no model are refused in words. (Exports from real DeepSpeed runs: test_pretrain_deepspeed.py,
test_finetune.py.)"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mofo.shared.params import ALGORITHM_VERSION, MotionParams
from mofo.training.classifier import CONFIG_VERSION, ClassifierConfig, VideoClassifier
from mofo.training.datasets import MEAN, STD
from mofo.training.export import (
    ExportError,
    SavedModel,
    export,
    load_model,
    read_export,
    write_export,
)
from mofo.training.models import VideoMAE, config

TINY = config("vit_tiny_patch8_tubelet2_32px")
RUN_CONFIG = {"data": {"boxes": "redis://x", "params": "", "motion": {"short_side": 64}}}


def _inputs():
    generator = torch.Generator().manual_seed(4)
    video = torch.randn(2, 3, 4, 32, 32, generator=generator)
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[:, torch.randperm(32, generator=generator)[:24]] = True
    boxes = torch.tensor([[0.0, 0.0, 16.0, 32.0], [8.0, 8.0, 24.0, 24.0]])
    return video, mask, boxes, torch.ones(2, dtype=torch.bool)


def test_a_pretraining_model_rebuilds_from_its_folder(tmp_path):
    torch.manual_seed(0)
    model = VideoMAE(TINY).eval()
    saved = SavedModel("pretraining", TINY, model.state_dict(), {"step": 24, "config": RUN_CONFIG})
    folder = write_export(tmp_path / "export", saved)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    tensors = load_file(folder / "model.safetensors")
    assert set(tensors) == set(model.state_dict())
    assert all(torch.equal(tensors[k], v) for k, v in model.state_dict().items())
    about = json.loads((folder / "config.json").read_text())
    assert (about["format"], about["kind"], about["architecture"]) == (
        "mofo.model/1",
        "pretraining",
        "VideoMAE",
    )
    assert about["encoder"] == "vit_tiny_patch8_tubelet2_32px" and about["head"] == "pixel_decoder"
    assert about["model_config"] == TINY.to_dict()
    assert about["input"] == {"video": ["batch", 3, 4, 32, 32], "mean": list(MEAN),
                              "std": list(STD), "tokens": 32}  # fmt: skip
    assert about["versions"]["motion_algorithm"] == ALGORITHM_VERSION
    assert about["boxes"] == {"params": MotionParams(short_side=64).hash()}
    assert about["trained"] == {"step": 24}
    assert about["parameters"] == sum(p.numel() for p in model.parameters())

    rebuilt = load_model(folder)
    assert isinstance(rebuilt, VideoMAE) and not rebuilt.training
    video, mask, _, _ = _inputs()
    with torch.no_grad():
        loss, pred = model(video, mask)
        loss_again, pred_again = rebuilt(video, mask)
    assert torch.equal(pred, pred_again) and torch.equal(loss, loss_again)


def test_a_classifier_rebuilds_with_its_head_and_classes(tmp_path):
    torch.manual_seed(1)
    cfg = ClassifierConfig(TINY, {"verb": 97, "noun": 300}, head="mca", init_scale=1.0)
    model = VideoClassifier(cfg).eval()
    path = tmp_path / "best.pt"
    torch.save(
        {
            "classifier_config": cfg.to_dict(),
            "state_dict": model.state_dict(),
            "step": 30,
            "held_out": {"verb_top1": 40.0},
            "config": {"data": {"boxes": "none"}},
        },
        path,
    )
    folder = export(path, tmp_path / "export")
    about = json.loads((folder / "config.json").read_text())
    assert (about["kind"], about["head"], about["classes"]) == (
        "classifier",
        "mca",
        {"verb": 97, "noun": 300},
    )
    assert about["versions"]["classifier_config"] == CONFIG_VERSION
    assert about["boxes"] == {"params": None}  # trained without boxes
    assert about["trained"] == {"source": str(path), "step": 30, "held_out": {"verb_top1": 40.0}}
    assert "boxes" in about["input"]
    rebuilt = load_model(folder)
    assert isinstance(rebuilt, VideoClassifier) and rebuilt.cfg == cfg
    video, _, boxes, valid = _inputs()
    with torch.no_grad():
        out, again = model(video, boxes, valid), rebuilt(video, boxes, valid)
    assert all(torch.equal(out[t], again[t]) for t in ("verb", "noun"))
    assert read_export(folder).about["step"] == 30
    # An export exports again as itself.
    copy = export(folder, tmp_path / "copy")
    assert json.loads((copy / "config.json").read_text())["classifier_config"] == cfg.to_dict()


def test_an_encoder_without_token_norm_survives_the_round_trip(tmp_path):
    cfg = ClassifierConfig(config(TINY.name, token_norm=False), {"action": 8}, head="mean")
    model = VideoClassifier(cfg)
    assert "encoder.norm.weight" not in model.state_dict()
    folder = write_export(tmp_path / "e", SavedModel("classifier", cfg, model.state_dict()))
    assert load_model(folder).cfg.encoder.token_norm is False
    # Saved only when off: configs from before the setting existed stay equal to today's.
    assert "token_norm" not in TINY.to_dict() and cfg.encoder.to_dict()["token_norm"] is False


def test_what_is_not_a_model_is_refused(tmp_path):
    from mofo.cli import app

    with pytest.raises(ExportError, match="not an exported model"):
        read_export(tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    junk = CliRunner().invoke(app, ["export", str(tmp_path / "junk.pt"), str(tmp_path / "out")])
    assert junk.exit_code == 2 and "junk.pt: cannot be read" in junk.output
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ExportError, match="holds no model of mofo pretrain or finetune"):
        export(tmp_path / "other.pt", tmp_path / "out")
    folder = write_export(
        tmp_path / "e", SavedModel("pretraining", TINY, VideoMAE(TINY).state_dict())
    )
    about = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**about, "format": "mofo.model/9"}))
    with pytest.raises(ExportError, match=re.escape("this code reads 'mofo.model/1'")):
        load_model(folder)


def test_the_export_command(tmp_path):
    torch.save(
        {"model_config": TINY.to_dict(), "state_dict": VideoMAE(TINY).state_dict()},
        tmp_path / "model.pt",
    )
    from mofo.cli import app  # `mofo export`, as installed

    result = CliRunner().invoke(app, ["export", str(tmp_path / "model.pt"), str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "x" / "model.safetensors")
    assert isinstance(load_model(tmp_path / "x"), VideoMAE)
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "gone.pt"), str(tmp_path / "y")])
    assert missing.exit_code == 2 and "gone.pt: no such file or folder" in missing.output
