"""The compose topology without Docker: Redis, the API, two workers and the trainer started as
processes from docker-compose.yml's own commands, environment and healthchecks (see
compose.py for what is mapped), on the CPU as the compose file's CPU override runs them.

A clip through the API gives boxes; a dataset built through the workers fills the cache, which
survives a Redis restart; the trainer reads the cache for one short epoch and writes a
checkpoint. Every service's healthcheck fails before it is up and passes once it is."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
import redis

from mofo.shared.sample import sample_clip
from testkit.server import MOFO, free_port
from tests.deploy.compose import (
    COMPOSE,
    CPU_OVERRIDE,
    Topology,
    load,
    merge,
    running,
    stop,
    wait_for,
)

pytestmark = pytest.mark.slow

MOTION = ["--short-side", "64"]  # the tiny config's [data] motion: they name its records
RUN = "compose-tiny"
TRAIN_ARGS = " ".join(
    [
        "--set data.source=/data/synth/train.json",  # a path in the containers, as a user writes it
        "--set model.name=vit_tiny_patch8_tubelet2_32px",
        "--set optim.epochs=1",
        "--set optim.batch_size=4",
        "--set optim.warmup_epochs=0",
        "--set data.workers=0",
        "--set run.images=2",
    ]
)


@pytest.fixture
def topology(tmp_path) -> Topology:
    data, runs = tmp_path / "data", tmp_path / "runs"
    data.mkdir()
    runs.mkdir()
    host_env = {  # what a user's .env would say
        "MOFO_DATA_DIR": str(data),
        "MOFO_RUNS_DIR": str(runs),
        "MOFO_DEVICE": "cpu",
        "MOFO_WORKER_CLIP_THREADS": "2",
        "MOFO_RUN_NAME": RUN,
        "MOFO_TRAIN_CONFIG": "training/configs/pretrain_tiny_cpu.toml",
        "MOFO_TRAIN_ARGS": TRAIN_ARGS,
    }
    compose = merge(load(COMPOSE, host_env), load(CPU_OVERRIDE, host_env))
    base_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    return Topology(
        compose, COMPOSE.parent, tmp_path / "volumes", free_port(), free_port(), base_env
    )


def healthy(topology: Topology, name: str) -> str | None:
    check = topology.health(name)
    return check.stdout or "ok" if check.returncode == 0 else None


def test_compose_services_as_processes(topology, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    data = Path(topology.localise("api", "/data"))
    assert data == tmp_path / "data"  # the services see the data folder where compose mounts it
    with running(logs) as processes:
        # Redis, from its compose command: append-only into its named volume.
        assert topology.health("redis").returncode != 0
        processes.append(redis_process := topology.start("redis", logs / "redis.log"))
        wait_for("redis healthy", lambda: healthy(topology, "redis"), 20)
        assert (tmp_path / "volumes" / "redis-data").is_dir()

        # The API and two workers; each healthcheck fails until its service is up.
        for name in ("api", "worker"):
            assert topology.health(name).returncode == 1, name
        processes.append(topology.start("api", logs / "api.log"))
        processes += [topology.start("worker", logs / f"worker{k}.log") for k in range(2)]
        wait_for("api healthy", lambda: healthy(topology, "api"), 180)
        two = wait_for(
            "2 workers healthy", lambda: "2 worker(s)" in (healthy(topology, "worker") or ""), 180
        )
        assert two

        # The dataset: written on the host into the data folder (read-only in the services).
        synth = subprocess.run(
            [MOFO, "synth", str(data / "synth"), "--clips", "20", "--frames", "8"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert synth.returncode == 0, synth.stderr
        train_ids = [c["id"] for c in json.loads((data / "synth" / "train.json").read_text())]

        # A clip through the API gives boxes (upload, then a job that the workers run).
        api = f"http://127.0.0.1:{topology.api_port}"
        with httpx.Client(base_url=api, timeout=120) as client:
            upload = client.post(
                "/v1/boxes",
                files={"file": ("sample.mp4", sample_clip().read_bytes())},
                params={"short_side": 64},
            )
            assert upload.status_code == 200, upload.text
            record = upload.json()
            assert record["width"] > 0 and record["clip_box"] is not None
            assert len(record["frames"]) == len(record["frame_indices"]) > 1
            clip = f"synth/videos/{train_ids[0]}.webm"
            job = client.post("/v1/jobs", json={"paths": [clip]}, params={"short_side": 64})
            assert job.status_code == 202, job.text
            status_url = job.json()["status_url"]

            def job_ended():
                status = client.get(status_url).json()
                return status if status["status"] in ("finished", "failed") else None

            done = wait_for("the API's job run by a worker", job_ended, 120)
            assert done["status"] == "finished" and done["progress"]["done"] == 1, done
            assert done["result"][0]["record"]["video"] == clip
            assert client.get(f"/v1/boxes/{clip}", params={"short_side": 64}).status_code == 200

        # A dataset through the workers fills the cache (`docker compose run --rm worker ...`).
        build = topology.run(
            "worker",
            ["mofo", "cache", "build", "/data/synth/train.json", *MOTION, "--chunk", "2", "--json"],
        )
        assert build.returncode == 0, build.stderr
        plan = json.loads(build.stdout)
        assert plan["enqueued"] == len(train_ids) and plan["root"] == str(data)

        def built():
            status = topology.run("worker", ["mofo", "cache", "status", "--json"])
            (state,) = [
                b for b in json.loads(status.stdout)["builds"] if b["params"] == plan["params"]
            ]
            return state if state["pending"] == 0 else None

        state = wait_for("the build", built, 300, every=2)
        assert (state["total"], state["done"], state["failed"]) == (
            len(train_ids),
            len(train_ids),
            0,
        )

        # The cache survives a restart of Redis (its append-only file on the volume).
        cache = redis.Redis(port=topology.redis_port)
        keys = set(cache.scan_iter(f"mofo:box:{plan['params']}:*"))
        # The build's clips and one more (the same settings hash); the upload, an interactive
        # request, is under its own (at most 64 frames spread over the clip).
        assert {f"mofo:box:{plan['params']}:{i}".encode() for i in train_ids} <= keys
        assert len(keys) == len(train_ids) + 1
        assert record["params"] != plan["params"]
        assert cache.exists(f"mofo:box:{record['params']}:{record['video']}")
        stop(redis_process)
        assert topology.health("redis").returncode != 0
        assert topology.health("worker").returncode == 1  # Redis unreachable
        processes.append(topology.start("redis", logs / "redis-2.log"))
        wait_for("redis healthy again", lambda: healthy(topology, "redis"), 20)
        assert set(cache.scan_iter(f"mofo:box:{plan['params']}:*")) == keys
        wait_for("workers healthy again", lambda: healthy(topology, "worker"), 60)
        wait_for("api ready again", lambda: healthy(topology, "api"), 60)

        # The trainer reads the cache for one short epoch and writes a checkpoint.
        runs = Path(topology.localise("trainer", f"/app/runs/{RUN}"))
        assert runs == tmp_path / "runs" / RUN
        assert topology.health("trainer").returncode == 1  # no log yet
        trainer = topology.start("trainer", logs / "trainer.log")
        processes.append(trainer)
        try:
            code = trainer.wait(900)
        except subprocess.TimeoutExpired:
            raise AssertionError((logs / "trainer.log").read_text()[-4000:]) from None
        assert code == 0, (logs / "trainer.log").read_text()[-4000:]
        lines = [json.loads(line) for line in (runs / "log.jsonl").read_text().splitlines()]
        start = next(e for e in lines if e.get("event") == "start")
        end = next(e for e in lines if e.get("event") == "end")
        assert start["config"]["data"]["boxes"] == topology.localise(
            "trainer", "redis://redis:6379/0"
        )
        assert end["step"] == start["steps"] > 0
        assert end["missing_boxes"] == 0  # every clip's boxes came from the cache
        assert sorted(p.name for p in (runs / "checkpoints").glob("step*")) == [
            f"step{end['step']:08d}"
        ]
        assert (runs / "model.pt").stat().st_size > 0
        assert healthy(topology, "trainer")  # its log was just written

        # The README's backup: an export through the trainer's container, into the runs folder.
        backup = topology.run("trainer", ["mofo", "cache", "export", "/app/runs/boxes.jsonl.gz"])
        assert backup.returncode == 0, backup.stderr
        with gzip.open(tmp_path / "runs" / "boxes.jsonl.gz", "rt") as f:
            exported = {(r["params"], r["video"]) for r in map(json.loads, f)}
        assert {(plan["params"], i) for i in train_ids} <= exported and len(exported) == len(
            keys
        ) + 1  # and the upload
