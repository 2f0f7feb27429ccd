"""The queue dashboard of docker-compose.yml (profile "ops") as a process, from the compose file's
own command, environment and healthcheck (see compose.py for what is mapped), against the
compose Redis holding the jobs of a real `mofo cache build`: the queue and its jobs are listed,
nothing is shown without the credentials, nothing can be deleted, and without a password the
dashboard does not start."""

from __future__ import annotations

import os

import httpx
import pytest
import redis
from rq import Queue

from testkit import badclips
from testkit.server import free_port
from tests.deploy.compose import COMPOSE, Topology, load, running, wait_for

pytestmark = pytest.mark.slow

USER, PASSWORD = "ops", "a-dashboard-password-for-tests"
BUILD_QUEUE = "mofo-build"  # the queue `mofo cache build` fills (Settings.build_queue)


def topology(tmp_path, password: str = PASSWORD) -> Topology:
    host_env = {  # what a user's .env would say
        "MOFO_DATA_DIR": str(tmp_path / "data"),
        "MOFO_DASHBOARD_USER": USER,
        "MOFO_DASHBOARD_PASSWORD": password,
    }
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RQ_DASHBOARD_")}
    return Topology(
        load(COMPOSE, host_env),
        COMPOSE.parent,
        tmp_path / "volumes",
        free_port(),
        free_port(),
        base_env,
        dashboard_port=free_port(),
    )


def test_the_dashboard_lists_the_queue_and_its_jobs_to_its_user_only(tmp_path):
    (tmp_path / "data" / "clips").mkdir(parents=True)
    for frames in (4, 5):
        badclips.small_clip(tmp_path / "data" / "clips", frames=frames)
    compose = topology(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    with running(logs) as processes:
        processes.append(compose.start("redis", logs / "redis.log"))
        wait_for("redis healthy", lambda: compose.health("redis").returncode == 0, 20)

        # Jobs of ours: a build of two clips, one per job, with no worker to take them.
        build = compose.run(
            "worker",
            ["mofo", "cache", "build", "/data/clips", "--short-side", "32", "--chunk", "1"],
        )
        assert build.returncode == 0, build.stderr
        connection = redis.Redis(port=compose.redis_port)
        job_ids = Queue(BUILD_QUEUE, connection=connection).job_ids
        assert len(job_ids) == 2

        assert compose.health("dashboard").returncode != 0  # not up yet
        processes.append(compose.start("dashboard", logs / "dashboard.log"))
        wait_for("dashboard healthy", lambda: compose.health("dashboard").returncode == 0, 30)

        url = f"http://127.0.0.1:{compose.dashboard_port}"
        with httpx.Client(base_url=url, timeout=30) as anonymous:
            for path in ("/", "/0/data/queues.json", f"/0/data/job/{job_ids[0]}.json"):
                refused = anonymous.get(path)
                assert refused.status_code == 401, path
                assert refused.headers["www-authenticate"].startswith("Basic ")
                assert job_ids[0] not in refused.text
            wrong = anonymous.get("/0/data/queues.json", auth=(USER, PASSWORD + "x"))
            assert wrong.status_code == 401

        with httpx.Client(base_url=url, timeout=30, auth=(USER, PASSWORD)) as client:
            page = client.get("/")
            assert page.status_code == 200 and "<title>RQ dashboard</title>" in page.text
            (queue,) = client.get("/0/data/queues.json").json()["queues"]
            assert (queue["name"], queue["count"]) == (BUILD_QUEUE, 2)

            listed = client.get(f"/0/data/jobs/{BUILD_QUEUE}/queued/8/asc/1.json").json()
            assert [job["id"] for job in listed["jobs"]] == job_ids
            assert all(job["description"].startswith("clips: ") for job in listed["jobs"])
            job = client.get(f"/0/data/job/{job_ids[0]}.json").json()
            assert (job["id"], job["status"], job["origin"]) == (job_ids[0], "queued", BUILD_QUEUE)
            view = client.get(f"/0/view/jobs/{BUILD_QUEUE}/queued/8/asc/1")
            assert view.status_code == 200

            # Looked at, not deleted (--disable-delete).
            deleted = client.post(f"/job/{job_ids[0]}/delete")
            assert deleted.json() == {"status": "DISABLED"}
            emptied = client.post(f"/queue/{BUILD_QUEUE}/queued/empty")
            assert emptied.json() == {"status": "DISABLED"}
            assert Queue(BUILD_QUEUE, connection=connection).job_ids == job_ids


@pytest.mark.parametrize("password", ["", "short"])
def test_the_dashboard_does_not_start_without_a_password(tmp_path, password):
    compose = topology(tmp_path, password)
    run = compose.run("dashboard", None, timeout=30)
    assert run.returncode == 1
    assert run.stderr == (
        "dashboard: set MOFO_DASHBOARD_PASSWORD (16 characters or more) in .env\n"
    )
    assert "RQ Dashboard version" not in run.stdout  # rq-dashboard never ran
