"""``mofo evaluate`` as users run it: a finetuned tiny classifier (a ``best.pt`` as finetuning
writes it) scored on the synthetic dataset's evaluation split over 2 x 3 views, in one process
and in two; its figures checked against the model run here on the same views; a corrupt clip
left out and named; a checkpoint in VideoMAE's released finetuned layout scored as VideoMAE's
own code scores it, the figures in TensorBoard; bad settings refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mofo.shared.cache_files import write_records
from mofo.shared.sources import open_source
from mofo.training.classifier import ClassifierConfig, VideoClassifier
from mofo.training.datasets import CachedBoxes, VideoClips, collate
from mofo.training.metrics import average_views
from mofo.training.models import config
from mofo.training.synth import TRUTH_PARAMS, truth_records, write_dataset
from testkit.badclips import random_bytes
from tests.training.boards import as_stored, read_board
from tests.training.commands import mofo
from tests.training.videomae_files import TINY as TINY_SHAPE
from tests.training.videomae_files import finetuned_checkpoint, reference_classifier

pytestmark = pytest.mark.slow

TINY = config("vit_tiny_patch8_tubelet2_32px")


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """The synthetic dataset (8 evaluation clips), its true boxes, and a classifier's best.pt."""
    root = tmp_path_factory.mktemp("evaluate")
    write_dataset(root / "synth", clips=32, size=64, frames=12, seed=3, validation=0.25)
    write_records(root / "truth.jsonl.gz", truth_records(root / "synth"))
    torch.manual_seed(0)
    # Classifiers at std 0.02 (not x 0.001, VideoMAE's): distinct logits, a stable top-5 order.
    model = VideoClassifier(
        ClassifierConfig(encoder=TINY, classes={"action": 8}, head="mca", init_scale=1.0)
    )
    (root / "run").mkdir()
    saved = {
        "classifier_config": model.cfg.to_dict(),
        "state_dict": model.state_dict(),
        "step": 30,
        "held_out": {"action_top1": 50.0},
    }
    torch.save(saved, root / "run" / "best.pt")
    return root


def write_config(folder: Path, root: Path, saliency: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "finetune.toml"
    path.write_text(
        f"""
[model]
name = "vit_tiny_patch8_tubelet2_32px"
[data]
source = "{root / "synth" / "train.json"}"
boxes = "{root / "truth.jsonl.gz"}"
params = "{TRUTH_PARAMS}"
workers = 1
[run]
out = "{root / "run"}"
precision = "fp32"
[evaluate]
source = "{root / "synth" / "validation.json"}"
out = "{folder / "eval"}"
clips = 2
crops = 3
batch_size = 3
saliency = {saliency}
"""
    )
    return path


def evaluate(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    return mofo("evaluate", config_path, *args)


def view_batch(root: Path, label_file: Path) -> dict:
    """Every clip of the split over the same 2 x 3 views as the evaluation, as one batch."""
    source = open_source(label_file)
    boxes = CachedBoxes(str(root / "truth.jsonl.gz"), TRUTH_PARAMS)
    clips = VideoClips(
        source.items,
        source.root,
        boxes,
        frames=4,
        rate=2,
        size=32,
        train=False,
        sampling="segment",
        views=(2, 3),
    )
    return collate(clips.__getitems__(list(range(len(clips)))))


def expected_probabilities(root: Path, label_file: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier run here on the same 2 x 3 views: mean softmax per clip, and the labels."""
    saved = torch.load(root / "run" / "best.pt", weights_only=False)
    model = VideoClassifier(ClassifierConfig.from_dict(saved["classifier_config"]))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    batch = view_batch(root, label_file)
    with torch.no_grad():
        logits = model(
            batch["video"].flatten(0, 1), batch["boxes"].flatten(0, 1), batch["valid"].flatten(0, 1)
        )["action"]
    return average_views(logits, 6).exp(), batch["labels"]["action"]


def test_evaluate_scores_every_clip_over_its_views(finetuned, tmp_path):
    result = evaluate(write_config(tmp_path, finetuned))
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "eval"
    figures = json.loads((out / "results.json").read_text())
    probs, labels = expected_probabilities(finetuned, finetuned / "synth" / "validation.json")
    top1 = 100 * float((probs.argmax(1) == labels).float().mean())
    top5 = 100 * float((probs.topk(5).indices == labels[:, None]).any(1).float().mean())
    assert (figures["clips"], figures["scored"], figures["failed"]) == (8, 8, [])
    assert figures["views"]["action_top1"] == pytest.approx(top1)
    assert figures["views"]["action_top5"] == pytest.approx(top5)
    assert figures["missing_boxes"] == 0 and figures["held_out"] == {"action_top1": 50.0}
    task = figures["tasks"]["action"]
    confusion = np.array(task["confusion"])
    assert confusion.shape == (8, 8) and confusion.sum() == 8
    assert np.trace(confusion) == round(top1 * 8 / 100)
    assert confusion.sum(1).tolist() == [int((labels == c).sum()) for c in range(8)]
    rows = task["per_class"]
    assert [r["clips"] for r in rows] == confusion.sum(1).tolist()
    assert rows[0]["name"] == "Moving something right"  # from labels.json
    assert all((r["top1"] is None) == (r["clips"] == 0) for r in rows)

    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    items = open_source(finetuned / "synth" / "validation.json").items
    assert [line["video"] for line in lines] == [i.video for i in items]
    for line, p, label in zip(lines, probs, labels, strict=True):
        assert line["labels"] == {"action": int(label)}
        assert [c for c, _ in line["action"]] == p.topk(5).indices.tolist()
        assert [q for _, q in line["action"]] == pytest.approx(p.topk(5).values.tolist(), abs=1e-4)

    with Image.open(out / "confusion_action.png") as image:
        assert image.height == 8 * (640 // 8) and image.width > image.height
    shown = json.loads((out / "saliency.json").read_text())
    assert [s["video"] for s in shown] == [i.video for i in items[:2]]
    for s, item in zip(shown, items, strict=False):
        assert (s["task"], s["layer"], s["true"]) == ("action", 2, item.labels["action"])
        assert 0 <= s["predicted"] < 8
        with Image.open(s["image"]) as image:
            assert image.width > image.height > 64  # two rows of 32-px frames
    stdout = json.loads(result.stdout.strip().splitlines()[-1])
    assert stdout["action_top1"] == pytest.approx(top1)
    assert "evaluated 8 of 8 clips (2 x 3 views)" in result.stderr


def test_a_videomae_finetuned_checkpoint_is_scored_as_videomae_scores_it(finetuned, tmp_path):
    """A classifier in the layout of VideoMAE's released finetuned weights (mean pooling,
    fc_norm, head; the tiny model's shapes), named by --weights: its figures are those of
    VideoMAE's own forward pass (tests/training/videomae_files.py) on the same views."""
    saved = finetuned_checkpoint(TINY_SHAPE, classes=8, seed=9, std=0.2)
    path = tmp_path / "videomae-finetuned.pth"
    torch.save(saved, path)
    result = evaluate(
        write_config(tmp_path, finetuned, saliency=1),
        "--weights",
        str(path),
        "--tensorboard",
        str(tmp_path / "tb"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "eval" / "results.json").read_text())
    batch = view_batch(finetuned, finetuned / "synth" / "validation.json")
    with torch.no_grad():
        logits = reference_classifier(saved["module"], batch["video"].flatten(0, 1), heads=2)
    probs, labels = average_views(logits, 6).exp(), batch["labels"]["action"]
    top1 = 100 * float((probs.argmax(1) == labels).float().mean())
    top5 = 100 * float((probs.topk(5).indices == labels[:, None]).any(1).float().mean())
    assert (figures["weights"], figures["scored"]) == (str(path), 8)
    assert figures["views"]["action_top1"] == pytest.approx(top1)
    assert figures["views"]["action_top5"] == pytest.approx(top5)
    assert figures["held_out"] == {} and figures["finetuned_steps"] is None
    lines = [
        json.loads(x) for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    ]
    for line, p in zip(lines, probs, strict=True):
        assert [c for c, _ in line["action"]] == p.topk(5).indices.tolist()
        assert [q for _, q in line["action"]] == pytest.approx(p.topk(5).values.tolist(), abs=1e-4)
    assert len(json.loads((tmp_path / "eval" / "saliency.json").read_text())) == 1
    board = read_board(tmp_path / "tb")
    assert board["eval/action_top1"] == [(0, as_stored(top1))]  # no finetuning step: 0
    assert board["eval/action_top5"] == [(0, as_stored(top5))]


def test_two_processes_give_the_results_of_one(finetuned, tmp_path):
    one = evaluate(write_config(tmp_path / "one", finetuned, saliency=0))
    two = evaluate(write_config(tmp_path / "two", finetuned, saliency=0), "--nproc", "2")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    a, b = (
        json.loads((tmp_path / n / "eval" / "results.json").read_text()) for n in ("one", "two")
    )
    assert a["views"] == b["views"] and a["tasks"] == b["tasks"] and b["scored"] == 8
    predictions = [
        (tmp_path / n / "eval" / "predictions.jsonl").read_text() for n in ("one", "two")
    ]
    assert predictions[0] == predictions[1]
    assert not (tmp_path / "one" / "eval" / "saliency.json").exists()


def test_a_corrupt_clip_is_left_out_and_named(finetuned, tmp_path):
    synth = finetuned / "synth"
    entries = json.loads((synth / "validation.json").read_text())
    random_bytes(tmp_path, seed=1).rename(synth / "videos" / "999.webm")
    broken = synth / "broken.json"
    broken.write_text(json.dumps([*entries[:3], {**entries[0], "id": "999"}, *entries[3:]]))
    config_path = write_config(tmp_path, finetuned, saliency=0)
    config_path.write_text(config_path.read_text().replace("validation.json", "broken.json"))
    result = evaluate(config_path)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert (figures["clips"], figures["scored"]) == (9, 8)
    assert len(figures["failed"]) == 1 and figures["failed"][0].startswith("999: ")
    assert "1 clips could not be decoded" in result.stderr
    probs, labels = expected_probabilities(finetuned, synth / "validation.json")
    assert figures["views"]["action_top1"] == pytest.approx(
        100 * float((probs.argmax(1) == labels).float().mean())
    )


def test_bad_settings_are_refused_before_any_work(finetuned, tmp_path):
    gone = evaluate(write_config(tmp_path / "a", finetuned), "--set", "evaluate.weights=gone.pt")
    assert gone.returncode == 2 and "weights gone.pt: no such file" in gone.stderr
    config_path = write_config(tmp_path / "b", finetuned)
    config_path.write_text(
        config_path.read_text().replace(
            'source = "' + str(finetuned / "synth" / "validation.json") + '"', ""
        )
    )
    unset = evaluate(config_path)
    assert unset.returncode == 2 and "[evaluate] source is required" in unset.stderr
    views = evaluate(write_config(tmp_path / "c", finetuned), "--set", "evaluate.crops=0")
    assert views.returncode == 2 and "clips and crops must be >= 1" in views.stderr
    torch.save(
        {
            "classifier_config": ClassifierConfig(TINY, {"action": 5}).to_dict(),
            "state_dict": VideoClassifier(ClassifierConfig(TINY, {"action": 5})).state_dict(),
        },
        tmp_path / "five.pt",
    )
    other = evaluate(
        write_config(tmp_path / "d", finetuned), "--set", f"evaluate.weights={tmp_path / 'five.pt'}"
    )
    assert other.returncode == 2 and "are not the model's" in other.stderr
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    junk = evaluate(
        write_config(tmp_path / "e", finetuned), "--set", f"evaluate.weights={tmp_path / 'junk.pt'}"
    )
    assert junk.returncode == 2 and "not a finetuned classifier" in junk.stderr
    torch.save(finetuned_checkpoint(TINY_SHAPE, classes=5), tmp_path / "videomae5.pth")
    five = evaluate(
        write_config(tmp_path / "f", finetuned), "--weights", str(tmp_path / "videomae5.pth")
    )
    assert five.returncode == 2 and "has 5 classes; the split has {'action': 8}" in five.stderr
    assert all("Traceback" not in r.stderr for r in (gone, unset, views, other, junk, five))
