"""API keys (``MOFO_API_KEYS``) on a real ``mofo serve``: the API needs a bearer key, the
probes, the page and the docs stay open, /metrics as configured, and the keys are checked."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from mofo.shared.sample import sample_clip
from testkit.server import MOFO, start_server

KEYS = ("first-key-0123456789abcdef", "second-key-0123456789abcdef")
PROBLEM_JSON = "application/problem+json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    started = start_server(
        tmp_path_factory.mktemp("auth"), device="cpu", api_keys=",".join(KEYS), metrics_public=False
    )
    yield started
    started.stop()


def _boxes(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    data = sample_clip().read_bytes()
    files = {"file": ("clip.mp4", data, "video/mp4")}
    params = {"num_frames": 3, "short_side": 32}
    return client.post("/v1/boxes", files=files, params=params, headers=headers)


def test_the_api_needs_one_of_the_keys(server) -> None:
    with server.client() as client:
        missing = _boxes(client, {})
        assert missing.status_code == 401
        assert missing.headers["content-type"] == PROBLEM_JSON
        assert missing.headers["www-authenticate"] == 'Bearer realm="mofo"'
        assert missing.json()["type"] == "urn:mofo:problem:unauthorized"
        for header in ({"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
            assert _boxes(client, header).status_code == 401
        wrong = _boxes(client, {"Authorization": "Bearer not-a-key-of-this-server"})
        assert wrong.status_code == 403 and wrong.json()["type"] == "urn:mofo:problem:forbidden"
        near = _boxes(client, {"Authorization": f"Bearer {KEYS[0][:-1]}"})  # one character off
        assert near.status_code == 403
        for key in KEYS:
            ok = _boxes(client, {"Authorization": f"bearer {key}"})
            assert ok.status_code == 200, ok.text
            assert ok.json()["schema"] == "mofo.box/2"
        assert client.get("/v1/jobs/" + "1" * 32).status_code == 401  # every /v1 route


def test_probes_page_and_docs_stay_open_and_metrics_follow_the_setting(server) -> None:
    with server.client() as client:
        for path in ("/healthz", "/readyz", "/", "/static/app.js", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        assert client.get("/metrics").status_code == 401  # metrics_public = false
        key = {"Authorization": f"Bearer {KEYS[1]}"}
        metrics = client.get("/metrics", headers=key)
        assert metrics.status_code == 200
        assert 'route="/v1/boxes",status="401"' in metrics.text  # refusals are counted


def test_a_short_key_stops_the_server_before_it_starts(tmp_path: Path) -> None:
    env = {"MOFO_API_KEYS": "short", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([MOFO, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "api_keys" in run.stderr and "at least 16 characters" in run.stderr
