"""Hostile clips and requests against a real ``mofo serve``: clips inside every header limit that
would cost far more work than their size says, frame sizes that change mid-stream, malformed
JSON, and what a client must never learn (server paths, Redis addresses, a Host it sent).

Each refusal is a 4xx problem document with its exact detail; the server's peak memory
(VmHWM of its process) stays within the work budget it was given, and good requests are served
throughout. The clips come from :mod:`tests.hostile_corpus`.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mofo.shared.sample import sample_clip
from testkit.redis_server import start_redis
from testkit.server import Server, start_server
from tests.hostile_corpus import write_corpus
from tests.services.problems import PROBLEM, problem

MiB = 1024**2
# The test server's work limits: one clip at most 4 M working pixels x frames, all clips at once
# 6 M. Motion analysis peaks at about 100 bytes per pixel-frame (measured on the CPU backend:
# 75-90 B for every-frame clips), so the requests' memory stays under 6 M x 100 B = 600 MB.
MAX_WORK = 4_000_000
WORK_BUDGET = 6_000_000
BYTES_PER_WORK_PIXEL = 100
# Allowance over the idle server for what is not per pixel-frame: decoder and thread buffers,
# the recent-analysis store, Python objects of the requests.
SLACK_BYTES = 300 * MiB


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Server:
    """Default frame, duration and resolution limits (9000 frames, 600 s, 3840x2160); small
    work limits, so that the memory bound is measurable on a small machine."""
    srv = start_server(
        tmp_path_factory.mktemp("logs"),
        data_root=data_root,
        max_upload_bytes=16 * MiB,
        max_work_pixels=MAX_WORK,
        work_budget_pixels=WORK_BUDGET,
        max_json_bytes=4096,
    )
    yield srv
    srv.stop()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _upload(url: str, path: Path, timeout: float = 300, **params) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=timeout) as client:
        return client.post(
            "/v1/boxes", files={"file": (path.name, path.read_bytes())}, params=params
        )


# (corpus clip, query, status, problem type, detail) of every refusal; None: detail not checked.
REFUSALS = [
    (
        "long_tiny",
        {"fps": 15},
        422,
        "too-much-work",
        "long_tiny_9000f_16x16.mp4: 9000 frames at working size 128x128 are 147456000 pixels of "
        "work, over the limit 4000000; sample fewer frames (stride, fps, num_frames) or lower "
        "short_side",
    ),
    (
        "long_tiny",
        {"num_frames": 9000},
        422,
        "too-much-work",
        "long_tiny_9000f_16x16.mp4: 9000 frames at working size 128x128 are 147456000 pixels of "
        "work, over the limit 4000000; sample fewer frames (stride, fps, num_frames) or lower "
        "short_side",
    ),
    (
        "tiny",
        {"short_side": 1024},
        422,
        "invalid-parameters",
        "short_side: Input should be less than or equal to 448",
    ),
    (
        "tiny",
        {"short_side": 448},
        422,
        "too-much-work",
        "tiny_60f_16x16.mp4: 60 frames at working size 448x448 are 12042240 pixels of work, over "
        "the limit 4000000; sample fewer frames (stride, fps, num_frames) or lower short_side",
    ),
    (
        "wide",
        {},
        422,
        "too-much-work",
        "wide_3840x2.mp4: aspect ratio 1920:1 (3840x2) gives a working size of 245760x128 at "
        "short side 128; the long side exceeds the limit 1024 px",
    ),
    (
        "tall",
        {},
        422,
        "too-much-work",
        "tall_16x2160.mp4: aspect ratio 135:1 (16x2160) gives a working size of 128x17280 at "
        "short side 128; the long side exceeds the limit 1024 px",
    ),
    (
        "tall",
        {"quality": "paper"},
        422,
        "too-much-work",
        "tall_16x2160.mp4: aspect ratio 135:1 (16x2160) gives a working size of 224x30240 at "
        "short side 224; the long side exceeds the limit 1024 px",
    ),
    (
        "huge",
        {},
        422,
        "resolution-too-high",
        "huge_4096x4096.mp4: resolution 4096x4096 exceeds the limit 3840x2160",
    ),
    (
        "size_change",
        {},
        422,
        "frame-size-changed",
        "size_change_64x64_128x32.ts: frame 15 is 128x32, the stream began at 64x64; clips whose "
        "frame size changes are not supported",
    ),
    ("empty", {}, 400, "empty-clip", "empty.mp4: the upload is empty (0 bytes)"),
    ("random", {}, 415, "not-a-video", None),
    (
        "truncated",
        {},
        422,
        "corrupt-clip",
        "truncated_40_faststart.mp4: is truncated: the header promises 30 frames, only 7 could be "
        "decoded",
    ),
    ("picture", {}, 415, "not-a-video", "picture.png: is an image, not a video"),
    ("audio_only", {}, 415, "not-a-video", "tone.wav: has no video stream"),
    ("one_frame", {}, 422, "too-short", "one_frame.mp4: has 1 frame; motion needs at least 2"),
]


@pytest.mark.parametrize(
    ("name", "params", "status", "slug", "detail"),
    REFUSALS,
    ids=[f"{r[0]}-{'-'.join(map(str, r[1].values())) or 'default'}" for r in REFUSALS],
)
def test_hostile_clip_is_refused(server, corpus, name, params, status, slug, detail):
    body = problem(_upload(server.url, corpus[name], **params), status, slug)
    if detail is not None:
        assert body["detail"] == detail


def test_memory_stays_within_the_work_budget_under_hostile_and_good_load(server, corpus):
    """Hostile and good uploads at once: every hostile one refused, every good one served, and
    the server's peak RSS within its idle size plus the work budget."""
    pid = server.process.pid
    idle = _status_kib(pid, "VmRSS") * 1024
    good = [(corpus["long_tiny"], {}), (corpus["long_tiny"], {"stride": 300})] * 2
    good.append((sample_clip(), {"num_frames": 4}))
    hostile = [(corpus[name], params) for name, params, *_ in REFUSALS[:9]]
    jobs = [(p, q, True) for p, q in good] + [(p, q, False) for p, q in hostile]
    with ThreadPoolExecutor(4) as pool:  # the uploads one client may send at once
        responses = list(pool.map(lambda j: (_upload(server.url, j[0], **j[1]), j[2]), jobs))
    for response, ok in responses:
        if ok:
            assert response.status_code == 200, response.text
        else:
            assert 400 <= response.status_code < 500, response.text
    # 64 of the 9000 frames (the interactive default), each with its motion partner.
    first = responses[0][0].json()
    assert (first["width"], first["height"], len(first["frames"])) == (16, 16, 64)
    assert len(responses[1][0].json()["frames"]) == 30  # every 300th frame
    peak = _status_kib(pid, "VmHWM") * 1024
    budget = idle + WORK_BUDGET * BYTES_PER_WORK_PIXEL + SLACK_BYTES
    print(
        f"server RSS idle {idle / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, "
        f"budget {budget / MiB:.0f} MiB"
    )
    assert peak <= budget
    metrics = httpx.get(server.url + "/metrics").text
    assert _metric(metrics, "mofo_pending_requests") == 0
    assert "Traceback" not in server.log_text()


def test_a_job_refuses_a_clip_over_the_work_limit_and_boxes_the_others(server, corpus):
    """A job boxes every frame: the 9000-frame clip is over the work limit, the sample is not."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = client.post(
            "/v1/jobs", files={"file": (corpus["long_tiny"].name, corpus["long_tiny"].read_bytes())}
        )
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 120
        while (state := client.get(job.json()["status_url"]).json())["status"] not in (
            "finished",
            "failed",
        ):
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
    assert state["status"] == "finished"
    (outcome,) = state["result"]
    assert outcome["ok"] is False
    assert outcome["error"] == (
        "long_tiny_9000f_16x16.mp4: 9000 frames at working size 128x128 are 147456000 pixels of "
        "work, over the limit 4000000; sample fewer frames (stride, fps, num_frames) or lower "
        "short_side"
    )


# -- malformed requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "slug", "detail"),
    [
        (b"[" * 4000, 422, "invalid-json", "body: not valid JSON (nested too deeply)"),
        (
            b'{"path": ' + b"1" * 4000 + b"}",
            422,
            "invalid-json",
            "body: not valid JSON (a number of 4000 characters; at most 32)",
        ),
        (b'{"path": NaN}', 422, "invalid-json", "body: not valid JSON (NaN is not JSON)"),
        (
            b"{nope",
            422,
            "invalid-json",
            "body: not valid JSON (Expecting property name enclosed "
            "in double quotes: line 1 column 2 (char 1))",
        ),
        (b'{"path": 5}', 422, "invalid-parameters", "path: Input should be a valid string"),
        (
            b"[" * 100_000,
            413,
            "too-large",
            "the JSON body is 100000 bytes, over the limit of "
            "4096 bytes; send fewer paths per request, or upload the clip as multipart/form-data",
        ),
    ],
    ids=["deep", "long-number", "nan", "broken", "number-for-path", "too-large"],
)
def test_malformed_json_is_a_422_on_a_kept_connection(server, body, status, slug, detail):
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        for route in ("/v1/boxes", "/v1/jobs"):
            conn.request("POST", route, body, {"content-type": "application/json"})
            sock = conn.sock
            response = conn.getresponse()
            problem = json.loads(response.read())
            assert response.status == status
            assert response.getheader("content-type") == PROBLEM
            assert response.getheader("connection") != "close"
            assert problem["type"] == f"urn:mofo:problem:{slug}"
            if route == "/v1/boxes" or slug != "invalid-parameters":
                assert problem["detail"] == detail
            conn.request("GET", "/healthz")  # the same connection serves the next request
            assert conn.getresponse().read() == b'{"status":"ok"}'
            assert conn.sock is sock
    finally:
        conn.close()
    assert "Traceback" not in server.log_text()


# -- flow stops with its request --------------------------------------------------------------


@pytest.fixture(scope="module")
def deadline_server(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Server:
    srv = start_server(tmp_path_factory.mktemp("logs"), data_root=data_root, request_timeout_s=4)
    yield srv
    srv.stop()


def _settled(server: Server) -> str:
    """/metrics once no request is pending (each pending request's flow has stopped by then)."""
    deadline = time.monotonic() + 60
    while True:
        metrics = httpx.get(server.url + "/metrics").text
        if _metric(metrics, "mofo_pending_requests") == 0:
            return metrics
        assert time.monotonic() < deadline, "a request stayed pending"
        time.sleep(0.1)


def _pairs_then_one_request(server: Server) -> float:
    """Flow pairs run from now on to the end of one 3-frame request (3 pairs of its own)."""
    before = _metric(_settled(server), "mofo_flow_batch_pairs_sum")
    ok = httpx.post(
        server.url + "/v1/boxes",
        files={"file": ("s.mp4", sample_clip().read_bytes())},
        params={"num_frames": 3, "refresh": "true"},
        timeout=60,
    )
    assert ok.status_code == 200, ok.text
    return _metric(_settled(server), "mofo_flow_batch_pairs_sum") - before


def test_flow_stops_when_its_request_times_out(deadline_server):
    slow = httpx.post(
        deadline_server.url + "/v1/boxes",
        json={"path": "clips/bikes.mp4"},
        params={"refresh": "true", "num_frames": 250},
        timeout=120,
    )
    body = problem(slow, 504, "timeout")
    assert body["detail"] == "the clip took longer than 4 s; use POST /v1/jobs for long clips"
    # Once pending is 0 no pair of the abandoned clip runs: the next request's 3 pairs are all.
    assert _pairs_then_one_request(deadline_server) == 3


def test_flow_stops_when_its_client_disconnects(deadline_server):
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
        httpx.post(
            deadline_server.url + "/v1/boxes",
            json={"path": "clips/bikes.mp4"},
            params={"refresh": "true", "num_frames": 250},
            timeout=httpx.Timeout(60, read=1.0),
        )
    deadline = time.monotonic() + 60
    while True:
        metrics = httpx.get(deadline_server.url + "/metrics").text
        if _metric(metrics, 'mofo_rejected_requests_total{reason="disconnected"}') == 1:
            break
        assert time.monotonic() < deadline, "the disconnect was not noticed"
        time.sleep(0.1)
    assert _metric(metrics, 'mofo_rejected_requests_total{reason="timeout"}') <= 1
    assert _pairs_then_one_request(deadline_server) == 3


# -- what clients must not learn --------------------------------------------------------------


def test_job_location_is_relative_whatever_the_host_header(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = client.post(
            "/v1/jobs",
            files={"file": ("s.mp4", sample_clip().read_bytes())},
            params={"num_frames": 3},
            headers={"host": "evil.example:666"},
        )
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        assert job.headers["location"] == f"/v1/jobs/{job_id}"
        assert job.json()["status_url"] == f"/v1/jobs/{job_id}"
        state = client.get(f"/v1/jobs/{job_id}", headers={"host": "evil.example"}).json()
        assert state["status_url"] == f"/v1/jobs/{job_id}"
        assert "evil" not in job.text + json.dumps(state)


def test_redis_address_is_not_in_503_bodies_or_readyz(tmp_path_factory, data_root):
    redis_server = start_redis(tmp_path_factory.mktemp("redis"))
    api = start_server(
        tmp_path_factory.mktemp("logs"), redis_url=redis_server.url, data_root=data_root
    )
    port = redis_server.url.rsplit(":", 1)[1].split("/")[0]
    try:
        redis_server.stop()
        with api.client() as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["detail"] == "box cache unreachable"
            lookup = client.get("/v1/boxes/clips/sample.mp4")
            assert problem(lookup, 503, "cache-unavailable")["detail"] == "box cache unreachable"
            job = client.post("/v1/jobs", json={"paths": ["clips/sample.mp4"]})
            assert problem(job, 503, "queue-unavailable")["detail"] == "job queue unreachable"
            for response in (ready, lookup, job):
                assert port not in response.text and "127.0.0.1" not in response.text
        assert port in api.log_text()  # the operator's log says where
    finally:
        api.stop()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "mofo.shared.errors.DataRootUnavailable: data root /srv/data/epic is not available on "
            "this worker",
            "mofo.shared.errors.DataRootUnavailable: data root <path> is not available "
            "on this worker",
        ),
        (
            "box cache at redis://:***@10.0.0.5:6379/2 unreachable: Error 111 connecting to "
            "10.0.0.5:6379. Connection refused.",
            "box cache at <url> unreachable: Error 111 "
            "connecting to <address>. Connection refused.",
        ),
        (
            "clips/a.mp4: frame 15 is 128x32, the stream began at 64x64",
            "clips/a.mp4: frame 15 is 128x32, the stream began at 64x64",
        ),
    ],
)
def test_job_errors_show_no_server_paths_or_addresses(text, shown):
    from mofo.services.motion_api.routes.jobs import public_error

    assert public_error(text) == shown
