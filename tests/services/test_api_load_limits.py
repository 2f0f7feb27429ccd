"""Load behaviour over real HTTP: concurrent requests share flow batches; a full server answers
429 with Retry-After; a request past its deadline answers 504 and its work stops; the server
recovers from both."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mofo.shared.sample import sample_clip
from testkit.server import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_root) -> Server:
    srv = start_server(
        tmp_path_factory.mktemp("logs"),
        data_root=data_root,
        max_pending=4,
        request_timeout_s=10,
        max_wait_ms=300,
        max_batch_pairs=16,
        # six requests at once from one address: the per-client upload share (4 bodies still
        # coming in) is not what these tests are about, and on a loaded machine it answered 503
        max_uploads_per_client=0,
    )
    yield srv
    srv.stop()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


def _post_many(url: str, requests: list[dict]) -> list[httpx.Response]:
    def post(kwargs: dict) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=60) as client:
            return client.post("/v1/boxes", **kwargs)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(post, requests))


def test_concurrent_requests_are_batched_together(server):
    before = httpx.get(server.url + "/metrics").text
    data = sample_clip().read_bytes()
    requests = [
        {
            "files": {"file": (f"{k}.mp4", data)},
            "params": {"num_frames": 3, "short_side": 112, "refresh": "true"},
        }
        for k in range(4)
    ]
    responses = _post_many(server.url, requests)
    assert [r.status_code for r in responses] == [200] * 4
    assert len({r.text for r in responses}) == 1  # same clip, same record
    after = httpx.get(server.url + "/metrics").text
    calls = _metric(after, "mofo_flow_batch_pairs_count") - _metric(
        before, "mofo_flow_batch_pairs_count"
    )
    pairs = _metric(after, "mofo_flow_batch_pairs_sum") - _metric(
        before, "mofo_flow_batch_pairs_sum"
    )
    assert pairs == 12  # 4 requests x 3 frames, a pair each
    assert calls < 4, f"{calls} flow calls for 4 concurrent requests: nothing was batched"


def test_full_server_429_then_deadline_504_then_recovery(server):
    slow = {"json": {"path": "clips/bikes.mp4"}, "params": {"refresh": "true"}}  # 250 pairs
    responses = _post_many(server.url, [slow] * 6)
    codes = sorted(r.status_code for r in responses)
    assert codes == [429, 429, 504, 504, 504, 504], codes
    for r in responses:
        body = r.json()
        assert r.headers["content-type"] == "application/problem+json"
        if r.status_code == 429:
            assert body["type"] == "urn:mofo:problem:busy"
            assert int(r.headers["retry-after"]) >= 1
            assert body["detail"].startswith("4 clips are being worked on, the most this server")
        else:
            assert body["type"] == "urn:mofo:problem:timeout"
            assert body["detail"] == (
                "the clip took longer than 10 s; use POST /v1/jobs for long clips"
            )
    # The abandoned work stops (at its next flow batch), freeing the server.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _metric(httpx.get(server.url + "/metrics").text, "mofo_pending_requests") == 0:
            break
        time.sleep(0.2)
    metrics = httpx.get(server.url + "/metrics").text
    assert _metric(metrics, "mofo_pending_requests") == 0
    assert _metric(metrics, 'mofo_rejected_requests_total{reason="queue_full"}') == 2
    assert _metric(metrics, 'mofo_rejected_requests_total{reason="timeout"}') == 4
    ok = httpx.post(
        server.url + "/v1/boxes",
        files={"file": ("s.mp4", sample_clip().read_bytes())},
        params={"num_frames": 3, "short_side": 112},
        timeout=60,
    )
    assert ok.status_code == 200
    assert server.alive()
