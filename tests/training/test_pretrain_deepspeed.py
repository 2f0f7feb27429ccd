"""``mofo pretrain`` as users run it: real DeepSpeed processes on the CPU (``DS_ACCELERATOR=cpu``,
gloo), the tiny model, synthetic clips decoded from disk and their motion boxes read from a real
Redis. Two processes train; the loss falls; rank 0 alone writes the log's figures to TensorBoard;
the weights are exported as safetensors with their config (at the end, and from a DeepSpeed
checkpoint); a run killed mid-way resumes from its last checkpoint at the same step and goes on
exactly as the run that was never stopped, TensorBoard holding each step once."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from mofo.shared.cache import RedisBoxCache
from mofo.shared.params import MotionParams
from mofo.shared.pipeline import analyse_clip
from mofo.shared.sources import open_source
from mofo.training.export import export, load_model
from mofo.training.masking import tube_mask
from mofo.training.models import MAEConfig, VideoMAE
from mofo.training.runs import learning_rate
from mofo.training.synth import write_dataset
from testkit.redis_server import start_redis
from tests.training.boards import as_stored, event_files, read_board
from tests.training.commands import MOFO, env, mofo

pytestmark = pytest.mark.slow

MOTION = MotionParams(short_side=64, stride=2)  # the "cache build" settings of these tests
STEPS, SAVE_EVERY = 24, 5
KILL_AFTER = 15  # a checkpoint in the middle of an epoch (2 steps each)


@pytest.fixture(scope="module")
def cached_synth(tmp_path_factory):
    """A synthetic dataset (16 training clips) and a Redis holding each clip's box record, as
    `mofo cache build` leaves it."""
    root = tmp_path_factory.mktemp("pretrain")
    write_dataset(root / "synth", clips=20, size=64, frames=12, seed=1)
    server = start_redis(root / "redis")
    cache = RedisBoxCache.from_url(server.url)
    source = open_source(root / "synth" / "train.json")
    cache.put_many(
        analyse_clip(source.root / item.path, MOTION, name=item.video).record
        for item in source.items
    )
    yield root / "synth", server.url, len(source.items)
    server.stop()


def write_config(folder: Path, data: Path, boxes: str) -> Path:
    text = f"""
[model]
name = "vit_tiny_patch8_tubelet2_32px"
[data]
source = "{data / "train.json"}"
boxes = "{boxes}"
motion = {{ short_side = {MOTION.short_side}, stride = {MOTION.stride} }}
workers = 1
[masking]
ratio = 0.75
[optim]
batch_size = 4
base_lr = 0.2
warmup_epochs = 1
epochs = 100
max_steps = {STEPS}
[run]
out = "{folder / "run"}"
precision = "fp32"
save_every = {SAVE_EVERY}
log_every = 1
images_every = 12
"""
    path = folder / "pretrain.toml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def pretrain(config: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return mofo("pretrain", config, *args, timeout=timeout)


def log_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def step_losses(lines: list[dict]) -> dict[int, float]:
    return {line["step"]: line["loss"] for line in lines if "loss" in line}


def test_two_processes_learn_checkpoint_and_resume_where_they_stopped(cached_synth, tmp_path):
    data, url, clips = cached_synth

    # An uninterrupted run of two processes.
    config = write_config(tmp_path / "whole", data, url)
    done = pretrain(config, "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "whole" / "run"
    lines = log_lines(run)
    start = lines[0]
    assert start["event"] == "start" and start["world"] == 2 and start["steps"] == STEPS
    assert start["global_batch"] == 8 and start["steps_per_epoch"] == clips // 8
    assert start["peak_lr"] == pytest.approx(0.2 * 8 / 256)
    losses = step_losses(lines)
    assert sorted(losses) == list(range(1, STEPS + 1))
    last = sum(losses[s] for s in range(STEPS - 3, STEPS + 1)) / 4
    # It learns: from the random start (about 1.14) to below 1.0, the loss of predicting each
    # tubelet's mean, which is about all 24 steps can learn of these clips (see BENCHMARKS.md).
    assert last < 0.9 * losses[1], losses
    steps = [line for line in lines if "loss" in line]
    assert all(s["missing_boxes"] == 0 and s["replaced_clips"] == 0 for s in steps)
    assert all(s["clips_per_s"] > 0 for s in steps)
    # The hidden shares each line logs: the box's quota (ceil(0.75 I) of I cells) is always
    # hidden, so the box's share is never below 0.75, here the overall ratio too.
    assert all(1.0 >= s["hidden_in_box"] >= 0.75 for s in steps), steps
    assert all(0.0 < s["hidden_outside_box"] <= 0.75 for s in steps)
    assert steps[0]["lr"] < steps[1]["lr"] and steps[-1]["lr"] < max(s["lr"] for s in steps)

    # Checkpoints from every rank, each carrying the model config and the step; two kept.
    checkpoints = run / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == f"step{STEPS:08d}"
    assert sorted(p.name for p in checkpoints.glob("step*")) == ["step00000020", "step00000024"]
    last_dir = checkpoints / "step00000024"
    assert {p.name for p in last_dir.glob("zero_pp_rank_*_optim_states.pt")} == {
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    }
    state = torch.load(last_dir / "mp_rank_00_model_states.pt", weights_only=False)
    assert (
        state["step"] == STEPS and state["model_config"]["name"] == "vit_tiny_patch8_tubelet2_32px"
    )

    # The final weights rebuild the model from the file alone.
    saved = torch.load(run / "model.pt", weights_only=False)
    model = VideoMAE(MAEConfig.from_dict(saved["model_config"]))
    model.load_state_dict(saved["state_dict"])
    weight = saved["state_dict"]["encoder.patch_embed.weight"]
    assert torch.equal(model.encoder.patch_embed.weight, weight)
    images = sorted(p.name for p in (run / "reconstructions").glob("*.png"))
    assert images == ["step00000012.png", "step00000024.png"]
    assert "pretrained 24 steps" in done.stderr

    # TensorBoard (run.out/tensorboard by default): one writer, rank 0, with the log's figures
    # at every step; the lr follows the schedule; the box is hidden more than the rest.
    assert len(event_files(run / "tensorboard")) == 1
    board = read_board(run / "tensorboard")
    assert set(board) == {
        "train/loss",
        "train/lr",
        "train/clips_per_s",
        "masking/hidden_in_box",
        "masking/hidden_outside_box",
        "data/missing_boxes",
        "data/replaced_clips",
    }
    by_step = {s["step"]: s for s in steps}
    for tag, key in [
        ("train/loss", "loss"),
        ("train/lr", "lr"),
        ("train/clips_per_s", "clips_per_s"),
        ("masking/hidden_in_box", "hidden_in_box"),
        ("masking/hidden_outside_box", "hidden_outside_box"),
    ]:
        assert [step for step, _ in board[tag]] == list(range(1, STEPS + 1)), tag
        assert [v for _, v in board[tag]] == [as_stored(by_step[s][key]) for s in by_step], tag
    peak, warmup = 0.2 * 8 / 256, start["steps_per_epoch"]  # warmup_epochs = 1
    schedule = [learning_rate(s - 1, peak, 1e-5, warmup, STEPS) for s in range(1, STEPS + 1)]
    assert [v for _, v in board["train/lr"]] == pytest.approx(schedule, rel=1e-6)
    inside, outside = board["masking/hidden_in_box"], board["masking/hidden_outside_box"]
    assert all(i > o for (_, i), (_, o) in zip(inside, outside, strict=True))

    # The export (run.out/export): the final weights and their config rebuild the model alone;
    # the same from the last DeepSpeed checkpoint (ZeRO-1 shards gathered in fp32).
    exported = load_model(run / "export")
    video = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = tube_mask(2, model.cfg.grid, 0.75, torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        expected = model(video, mask)
        assert all(torch.equal(a, b) for a, b in zip(exported(video, mask), expected, strict=True))
    from_checkpoint = load_model(export(last_dir, tmp_path / "from_checkpoint"))
    for folder in (exported, from_checkpoint):
        mine = folder.state_dict()
        assert all(torch.equal(mine[k], v) for k, v in saved["state_dict"].items())
    about = json.loads((run / "export" / "config.json").read_text())
    assert about["kind"] == "pretraining" and about["trained"]["step"] == STEPS
    assert about["boxes"]["params"] == MOTION.hash()

    # The same run, killed once its checkpoint at step 15 is written (half-way through an
    # epoch), then started again.
    config = write_config(tmp_path / "killed", data, url)
    killed_run = tmp_path / "killed" / "run"
    process = subprocess.Popen(
        [MOFO, "pretrain", "--config", str(config), "--nproc", "2"],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            log = killed_run / "log.jsonl"
            if log.exists() and any(
                line.get("event") == "checkpoint" and line["step"] == KILL_AFTER
                for line in log_lines(killed_run)
            ):
                break
            time.sleep(0.05)
    finally:  # the machine goes away: every process of the run dies at once
        tree = [process.pid] + [c.pid for c in psutil.Process(process.pid).children(recursive=True)]
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
    before = log_lines(killed_run)
    assert not any(line.get("event") == "end" for line in before), "finished before the kill"
    assert not (killed_run / "model.pt").exists()

    resumed = pretrain(config, "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = log_lines(killed_run)[len(before) :]
    assert after[0]["event"] == "resume" and after[0]["step"] == KILL_AFTER
    again = step_losses(after)
    assert sorted(again) == list(range(KILL_AFTER + 1, STEPS + 1))
    for s, loss in again.items():  # the same batches, masks and weights as the whole run
        assert loss == pytest.approx(losses[s], rel=1e-4, abs=1e-6), (s, loss, losses[s])
    assert after[-1]["event"] == "end" and (killed_run / "model.pt").exists()
    # TensorBoard: a file per process that wrote (the killed one, the resumed one); the steps
    # after the checkpoint that the killed run logged are dropped, as the resumed run ran them
    # again: each step once, the resumed run's figure after the checkpoint.
    assert len(event_files(killed_run / "tensorboard")) == 2
    losses_seen = read_board(killed_run / "tensorboard")["train/loss"]
    assert [step for step, _ in losses_seen] == list(range(1, STEPS + 1))
    first = step_losses(before)
    assert [v for _, v in losses_seen] == [
        as_stored(again[s] if s > KILL_AFTER else first[s]) for s in range(1, STEPS + 1)
    ]


def test_missing_boxes_and_corrupt_clips_are_reported(cached_synth, tmp_path):
    data, url, _ = cached_synth
    copy = tmp_path / "synth"
    shutil.copytree(data, copy)
    bad = sorted((copy / "videos").glob("*.webm"))
    ids = {e["id"] for e in json.loads((copy / "train.json").read_text())}
    broken = next(p for p in bad if p.stem in ids)
    broken.write_bytes(os.urandom(3000))
    # Other motion settings: no clip has a cached record for them.
    config = write_config(tmp_path, copy, url)
    config.write_text(config.read_text().replace("short_side = 64", "short_side = 96"))
    result = pretrain(config, "--set", "optim.max_steps=4", "--set", "run.save_every=4")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = log_lines(tmp_path / "run")
    steps = [line for line in lines if "loss" in line]
    assert steps[-1]["missing_boxes"] == 4 * 4  # every sample of the 4 steps
    bad_lines = [line for line in lines if line.get("event") == "bad_clip"]
    assert bad_lines and all(line["clip"].startswith(f"{broken.stem}: ") for line in bad_lines)
    assert steps[-1]["replaced_clips"] == len(bad_lines)
    assert "16 of 16 samples had no cached motion box" in result.stderr
    assert "could not be decoded and were replaced" in result.stderr


def test_bad_config_fails_before_any_process_starts(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[data]\nsource = "x.json"\n[optim]\nepoch = 3\n')
    result = pretrain(config, "--nproc", "2", timeout=60)
    assert result.returncode == 2
    assert "unknown key 'epoch'" in result.stderr and "Traceback" not in result.stderr


def test_an_unreachable_box_cache_is_one_clear_error(cached_synth, tmp_path):
    data, _, _ = cached_synth
    config = write_config(tmp_path, data, "redis://127.0.0.1:1/0")
    result = pretrain(config, timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]  # the cache, not the run, failed
    assert "redis://127.0.0.1:1/0" in result.stderr and "Traceback" not in result.stderr


def test_a_missing_source_fails_before_any_process_starts(tmp_path):
    config = tmp_path / "missing.toml"
    config.write_text(f'[data]\nsource = "{tmp_path / "nope.json"}"\n[masking]\nkind = "tube"\n')
    result = pretrain(config, "--nproc", "2", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "nope.json: no such file or folder" in result.stderr and "Traceback" not in result.stderr
