"""Fixtures for the cache-build tests: a dataset folder of real and synthetic clips (two of them
corrupt; testkit.datasets makes it), and helpers that run the real ``mofo`` commands and workers
as processes (their environment: testkit.datasets.mofo_env)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit import badclips
from testkit.datasets import DatasetDir, make_dataset
from testkit.server import MOFO

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


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> DatasetDir:
    return make_dataset(tmp_path_factory.mktemp("dataset"))
