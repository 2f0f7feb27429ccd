"""``mofo finetune`` as users run it: real DeepSpeed on the CPU, the tiny encoder loaded from a
pretraining ``model.pt``, the motion cross-attention head, synthetic clips with their classes and
boxes (an export file), RandAugment, random erasing and Mixup/CutMix; model selection on the
held-out part of the training split after every epoch, the figures in TensorBoard too, the
selected model exported as safetensors with its config; a second run resumes and goes on; a run
stopped after a checkpoint resumes exactly as the whole run went on, drop path and dropout on; a
run starts from a checkpoint in VideoMAE's released layout."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mofo.shared.cache_files import write_records
from mofo.training.classifier import ClassifierConfig, VideoClassifier
from mofo.training.config import ConfigError
from mofo.training.data import sampling_of, task_classes
from mofo.training.export import load_model
from mofo.training.finetune import soft_cross_entropy, split_holdout
from mofo.training.finetune_config import load_config
from mofo.training.models import VideoMAE, config
from mofo.training.synth import truth_records, write_dataset
from tests.training.boards import as_stored, event_files, read_board
from tests.training.commands import mofo
from tests.training.videomae_files import TINY as TINY_SHAPE
from tests.training.videomae_files import pretraining_checkpoint

pytestmark = pytest.mark.slow

TINY = config("vit_tiny_patch8_tubelet2_32px")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    write_dataset(root / "synth", clips=30, size=64, frames=12, seed=2)  # 24 training clips
    write_records(root / "truth.jsonl.gz", truth_records(root / "synth"))
    torch.manual_seed(0)
    torch.save(
        {"model_config": TINY.to_dict(), "state_dict": VideoMAE(TINY).state_dict()},
        root / "pretrained.pt",
    )
    return root


def write_config(folder: Path, root: Path, **lines: str) -> Path:
    text = f"""
[model]
name = "vit_tiny_patch8_tubelet2_32px"
pretrained = "{root / "pretrained.pt"}"
[data]
source = "{root / "synth" / "train.json"}"
boxes = "{root / "truth.jsonl.gz"}"
params = "truth"
holdout = 0.25
workers = 1
[optim]
batch_size = 6
base_lr = 0.05
warmup_epochs = 1
epochs = 2
[run]
out = "{folder / "run"}"
precision = "fp32"
log_every = 1
save_every = 3
"""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "finetune.toml"
    path.write_text(text + "".join(f"{v}\n" for v in lines.values()))
    return path


def run(config_path: Path, *args: str, command: str = "finetune") -> subprocess.CompletedProcess:
    return mofo(command, config_path, *args)


def log_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_finetune_selects_on_the_held_out_part_and_resumes(labelled, tmp_path):
    config_path = write_config(tmp_path, labelled)
    result = run(config_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    lines = log_lines(run_dir)
    start = lines[0]
    assert start["event"] == "start" and start["classes"] == {"action": 8}
    assert (start["clips"], start["held_out"]) == (18, 6)  # a quarter of 24 held out
    assert start["steps_per_epoch"] == 3 and start["steps"] == 6
    held = [line for line in lines if line.get("event") == "held_out"]
    assert [h["step"] for h in held] == [3, 6]  # after every epoch
    assert all(0 <= h["action_top1"] <= h["action_top5"] <= 100 for h in held)
    steps = [line for line in lines if "loss" in line]
    assert all(s["missing_boxes"] == 0 and s["loss"] > 0 for s in steps)
    best = torch.load(run_dir / "best.pt", weights_only=False)
    assert best["held_out"]["action_top1"] == max(h["action_top1"] for h in held)
    model = VideoClassifier(ClassifierConfig.from_dict(best["classifier_config"]))
    model.load_state_dict(best["state_dict"])
    assert model.cfg.head == "mca" and model.cfg.classes == {"action": 8}
    assert (run_dir / "model.pt").exists() and "best held-out action top-1" in result.stderr

    # TensorBoard: every step's figures as the log has them, the held-out scores per epoch.
    assert len(event_files(run_dir / "tensorboard")) == 1
    board = read_board(run_dir / "tensorboard")
    assert [step for step, _ in board["train/loss"]] == list(range(1, 7))
    assert [v for _, v in board["train/loss"]] == [as_stored(s["loss"]) for s in steps]
    assert [v for _, v in board["train/lr"]] == [as_stored(s["lr"]) for s in steps]
    assert [step for step, _ in board["train/clips_per_s"]] == list(range(1, 7))
    assert board["held_out/action_top1"] == [(h["step"], as_stored(h["action_top1"])) for h in held]
    assert "masking/hidden_in_box" not in board  # finetuning hides nothing

    # The export: best.pt's weights and classifier config, rebuilt from the folder alone.
    exported = load_model(run_dir / "export")
    assert exported.cfg == model.cfg
    state = exported.state_dict()
    assert all(torch.equal(state[k], v) for k, v in best["state_dict"].items())
    video = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    boxes, valid = torch.tensor([[0.0, 0.0, 16.0, 32.0]] * 2), torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(
            exported(video, boxes, valid)["action"], model.eval()(video, boxes, valid)["action"]
        )

    # mofo evaluate on the evaluation split from the same config: best.pt, the held-out figures
    split = labelled / "synth" / "validation.json"
    evaluated = run(
        config_path,
        "--set",
        f"evaluate.source={split}",
        "--set",
        "evaluate.crops=1",
        command="evaluate",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert results["held_out"] == best["held_out"] and results["finetuned_steps"] == best["step"]
    assert results["scored"] == 6 and results["missing_boxes"] == 0  # mofo synth's 20 % of 30
    assert 0 <= results["views"]["action_top1"] <= results["views"]["action_top5"] <= 100
    board = read_board(run_dir / "tensorboard")  # beside the held-out scores, at best's step
    assert board["eval/action_top1"] == [(best["step"], as_stored(results["views"]["action_top1"]))]

    again = run(config_path, "--set", "optim.epochs=3")
    assert again.returncode == 0, again.stderr[-3000:]
    after = log_lines(run_dir)[len(lines) :]
    assert after[0]["event"] == "resume" and after[0]["step"] == 6
    assert [h["step"] for h in after if h.get("event") == "held_out"] == [9]


def test_a_resumed_run_with_drop_path_equals_the_whole_run(labelled, tmp_path):
    """Two processes, 3 steps an epoch, 4 epochs; drop path 0.5 and dropout 0.5 make every step
    draw from torch's generators. The whole run, then a copy of its folder as a run killed
    right after its checkpoint at step 5 (mid-epoch) would leave it, started again."""
    settings = [
        "--nproc",
        "2",
        "--set",
        "model.drop_path=0.5",
        "--set",
        "model.dropout=0.5",
        "--set",
        "optim.batch_size=3",
        "--set",
        "optim.epochs=4",
        "--set",
        "run.save_every=5",
        "--set",
        "run.keep_checkpoints=5",
    ]
    config_path = write_config(tmp_path / "whole", labelled)
    whole = run(config_path, *settings)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run_dir = tmp_path / "whole" / "run"
    lines = log_lines(run_dir)
    assert lines[0]["steps"] == 12 and lines[0]["steps_per_epoch"] == 3
    losses = {line["step"]: line["loss"] for line in lines if "loss" in line}
    assert sorted(losses) == list(range(1, 13))

    # What a kill right after the step-5 checkpoint leaves: that checkpoint as the latest, the
    # log up to it, no later checkpoint and no final weights.
    stopped = tmp_path / "stopped" / "run"
    shutil.copytree(run_dir, stopped)
    for later in ("step00000010", "step00000012"):
        shutil.rmtree(stopped / "checkpoints" / later)
    (stopped / "checkpoints" / "latest").write_text("step00000005")
    cut = next(
        i for i, line in enumerate(lines) if line.get("event") == "checkpoint" and line["step"] == 5
    )
    (stopped / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[: cut + 1]))
    for name in ("model.pt", "best.pt"):
        (stopped / name).unlink()
    config_path = write_config(tmp_path / "stopped", labelled)
    resumed = run(config_path, *settings)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = log_lines(stopped)[cut + 1 :]
    assert after[0]["event"] == "resume" and after[0]["step"] == 5
    again = {line["step"]: line["loss"] for line in after if "loss" in line}
    assert sorted(again) == list(range(6, 13))
    for step, loss in again.items():  # the same batches, Mixup, drop path and dropout
        assert loss == pytest.approx(losses[step], rel=1e-4, abs=1e-6), (step, loss, losses[step])
    held = [h["action_top1"] for h in lines if h.get("event") == "held_out" and h["step"] > 5]
    assert [h["action_top1"] for h in after if h.get("event") == "held_out"] == held


def test_finetuning_starts_from_a_videomae_checkpoint(labelled, tmp_path):
    """A checkpoint in the layout of VideoMAE's released pretraining weights (the tiny model's
    shapes), named by --init: every encoder weight placed, the decoder dropped, then trained."""
    saved = pretraining_checkpoint(TINY_SHAPE, seed=7)
    path = tmp_path / "checkpoint-799.pth"
    torch.save(saved, path)
    config_path = write_config(tmp_path, labelled)
    result = run(
        config_path,
        "--init",
        str(path),
        "--tensorboard",
        str(tmp_path / "tb"),
        "--set",
        "optim.epochs=1",
        "--set",
        "optim.base_lr=0.005",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = log_lines(tmp_path / "run")
    decoder = [k for k in saved["model"] if not k.startswith("encoder.")]
    assert lines[0]["init"] == {
        "path": str(path),
        "source": "videomae",
        "layout": "pretraining",
        "tensors": 2 + 2 * 12 + 2,  # patch embedding, 2 blocks (q/v biases joined), norm
        "unplaced": [],
        "dropped": len(decoder) - 1,  # the decoder block's q/v biases joined
        "missing": [],
    }
    assert "encoder weights not in it" not in result.stderr
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert best["classifier_config"]["encoder"]["name"] == TINY.name
    # Three steps at a small lr: still the file's weights, nudged (a fresh start differs by 100 %).
    for ours, theirs in [
        ("encoder.patch_embed.weight", "encoder.patch_embed.proj.weight"),
        ("encoder.blocks.1.attn.qkv.weight", "encoder.blocks.1.attn.qkv.weight"),
        ("encoder.norm.bias", "encoder.norm.bias"),
    ]:
        change = (best["state_dict"][ours] - saved["model"][theirs]).abs().mean()
        assert change < 0.1 * saved["model"][theirs].abs().mean(), ours
    assert [s for s, _ in read_board(tmp_path / "tb")["train/loss"]] == [1, 2, 3]
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_an_unlabelled_split_and_bad_settings_are_refused(labelled, tmp_path):
    (labelled / "synth" / "test.json").write_text(json.dumps([{"id": "100000"}]))
    config_path = write_config(tmp_path, labelled)
    config_path.write_text(config_path.read_text().replace("train.json", "test.json"))
    result = run(config_path)
    assert result.returncode == 2 and "have no class" in result.stderr
    assert "Traceback" not in result.stderr
    bad = run(write_config(tmp_path / "b", labelled), "--set", "data.holdout=1.5")
    assert bad.returncode == 2 and "holdout must be in (0, 1)" in bad.stderr
    missing = run(write_config(tmp_path / "c", labelled), "--init", "gone.pt")
    assert missing.returncode == 2 and "pretrained gone.pt: no such file" in missing.stderr
    # Weights that cannot be read, or do not fit the encoder, are refused before the two
    # processes start: one message, no process started.
    (tmp_path / "junk.pth").write_bytes(b"junk")
    two = ("--nproc", "2")
    junk = run(write_config(tmp_path / "d", labelled), "--init", str(tmp_path / "junk.pth"), *two)
    assert junk.returncode == 2 and junk.stderr.count("junk.pth: cannot be read") == 1
    assert "Traceback" not in junk.stderr
    small = config("vit_small_patch16_tubelet2")
    weights = {"model_config": small.to_dict(), "state_dict": VideoMAE(small).state_dict()}
    torch.save(weights, tmp_path / "small.pt")
    other = run(write_config(tmp_path / "e", labelled), "--init", str(tmp_path / "small.pt"), *two)
    assert other.returncode == 2 and other.stderr.count("does not fit this encoder") == 1


def test_parts():
    train, held = split_holdout(20, 0.2, seed=3)
    assert len(held) == 4 and not set(train) & set(held) and len(train) + len(held) == 20
    assert split_holdout(20, 0.2, seed=3) == (train, held) != split_holdout(20, 0.2, seed=4)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    one_hot = torch.eye(2)
    assert soft_cross_entropy(logits, one_hot) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])))
    )
    assert task_classes("epic", Path("x.csv")) == {"verb": 97, "noun": 300}
    d = load_config(None, ["data.source=x.json"]).data
    kinds = ("ssv2", "epic", "folder")
    assert [sampling_of(d, k) for k in kinds] == ["segment", "segment", "dense"]
    cfg = load_config(None, ["data.source=x.json", "model.head=mean"])
    assert cfg.optim.layer_decay == 0.75 and cfg.model.drop_path == 0.1 and cfg.model.head == "mean"
    assert cfg.augment.smoothing == 0.1 and cfg.augment.mixup == 0.8 and cfg.augment.cutmix == 1.0
    # VideoMAE's SSV2 recipe: lr, erasing, RandAugment's coin, crops, classifier init.
    assert cfg.optim.base_lr == 5e-4 and cfg.augment.erasing == 0.25 and cfg.augment.prob == 0.5
    assert cfg.data.crop == "resized" and cfg.model.init_scale == 0.001
    assert cfg.data.sampling is None and cfg.data.flip is None  # segment sampling; no SSV2 flips
    assert load_config(None, ["data.source=x.json", "model.head=mca_literal"]).model.head == (
        "mca_literal"
    )
    with pytest.raises(ConfigError, match="is not one of 'mca', 'mca_literal', 'mean'"):
        load_config(None, ["data.source=x.json", "model.head=cls"])


@pytest.mark.parametrize(
    "name",
    sorted(
        p.name for p in (Path(__file__).parents[2] / "training" / "configs").glob("finetune_*.toml")
    ),
)
def test_shipped_finetune_configs_load(name):
    from mofo.training.evaluate import load_config as load_evaluate_config

    path = Path(__file__).parents[2] / "training" / "configs" / name
    cfg = load_config(path)
    assert cfg.model.head == "mca" and cfg.data.source and cfg.model.pretrained
    assert load_evaluate_config(path).evaluate.source != cfg.data.source  # never the training split
