"""Hostile uploads against a real ``mofo serve``: stalled and dripping bodies, more uploads than
the server takes at once, many large bodies at once; each upload is stored once.

Raw sockets play the slow clients (httpx cannot stall half-way); the server's memory is its
peak RSS (``VmHWM``) and its spooled bytes are the deleted temporary files it holds open.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
import redis

from mofo.services.motion_api.service import content_id
from mofo.shared.keys import box_key
from mofo.shared.sample import sample_clip
from testkit.datasets import mofo_env
from testkit.redis_server import start_redis
from testkit.server import Server, start_server
from tests.workers.conftest import mofo

PROBLEM = "application/problem+json"
FAST = {"num_frames": 3, "short_side": 64}
MAX_UPLOAD = 4_000_000
PREAMBLE = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
MiB = 1024**2


@pytest.fixture(scope="module")
def spool_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spool")


@pytest.fixture(scope="module")
def server(tmp_path_factory, spool_dir: Path):
    """Small bounds, so that a test reaches each of them quickly: 3 uploads at once (2 from one
    address), 8 MB of them, a body within 5 s and no gap over 2 s; temporary files in
    ``spool_dir``."""
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(spool_dir)
    try:
        srv = start_server(
            tmp_path_factory.mktemp("logs"),
            max_upload_bytes=MAX_UPLOAD,
            max_uploads=3,
            max_uploads_per_client=2,
            max_spool_bytes=8_000_000,
            body_timeout_s=5,
            body_idle_s=2,
        )
    finally:
        if old is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = old
    yield srv
    srv.stop()


def _address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _open_upload(
    server: Server, declared: int | None, first: bytes = b"", source: str = "127.0.0.1"
) -> socket.socket:
    """A multipart upload of ``declared`` bytes (None: chunked, no length) from the address
    ``source`` (any of 127/8) that has sent only its headers, the form's preamble and ``first``."""
    body = PREAMBLE + first
    if declared is None:
        length = "Transfer-Encoding: chunked\r\n"
        body = f"{len(body):x}\r\n".encode() + body + b"\r\n"
    else:
        length = f"Content-Length: {declared}\r\n"
    head = (
        "POST /v1/boxes HTTP/1.1\r\nHost: test\r\n"
        f"Content-Type: multipart/form-data; boundary=xyz\r\n{length}\r\n"
    ).encode()
    sock = socket.create_connection(_address(server), timeout=60, source_address=(source, 0))
    sock.sendall(head + body)
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], dict, bool]:
    """(status, headers, JSON body, closed by the server after it) of a raw request."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    try:
        closed = sock.recv(1) == b""
    except ConnectionResetError:
        closed = True
    sock.close()
    return status, headers, json.loads(body), closed


def _metric(server: Server, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _vm_hwm(pid: int) -> int:
    """Peak resident memory of a process, in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", text, re.M).group(1)) * 1024


def _spooled_bytes(pid: int, folder: Path) -> int:
    """Bytes of the temporary files in ``folder`` that the process holds open."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith(str(folder)):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except FileNotFoundError:  # closed meanwhile
            continue
    return total


def _good_upload(server: Server) -> httpx.Response:
    files = {"file": ("s.mp4", sample_clip().read_bytes())}
    return httpx.post(server.url + "/v1/boxes", files=files, params=FAST, timeout=120)


def test_a_stalled_body_is_cut_and_its_connection_closed(server):
    sock = _open_upload(server, 1_000_000, b"\0" * 1000)
    status, headers, body, closed = _answer(sock)
    assert status == 408 and headers["content-type"] == PROBLEM and closed
    assert body == {
        "type": "urn:mofo:problem:body-timeout",
        "title": "Request body too slow",
        "status": 408,
        "detail": f"no part of the body came for 2 s ({len(PREAMBLE) + 1000} bytes received); "
        "send it at once, or faster",
        "instance": "/v1/boxes",
    }
    assert _good_upload(server).status_code == 200


def test_a_dripping_body_is_cut_at_the_body_deadline(server):
    sock = _open_upload(server, 1_000_000)
    sent = len(PREAMBLE)
    try:
        while True:  # a byte a second: never silent for 2 s, never done
            time.sleep(1)
            sock.sendall(b"\0")
            sent += 1
    except OSError:  # the server answered and closed while this client was still dripping
        pass
    status, _, body, closed = _answer(sock)
    assert status == 408 and closed
    match = re.fullmatch(
        r"the body did not arrive within 5 s \((\d+) bytes received\); send it at once, or faster",
        body["detail"],
    )
    assert match and len(PREAMBLE) < int(match.group(1)) <= sent


def test_uploads_past_the_count_are_refused_before_their_body(server):
    stalled = [_open_upload(server, 1_000_000, b"\0" * 100, f"127.0.0.{k}") for k in (2, 3, 4)]
    _wait_for(lambda: _metric(server, "mofo_uploads_in_flight") == 3, "3 uploads coming in")
    refused = httpx.post(
        server.url + "/v1/boxes", files={"file": ("big.mp4", b"\0" * 3_000_000)}, timeout=60
    )
    assert refused.status_code == 503
    assert refused.headers["content-type"] == PROBLEM
    assert refused.headers["retry-after"] == "5"
    assert refused.headers["connection"] == "close"
    assert refused.json() == {
        "type": "urn:mofo:problem:uploads-busy",
        "title": "Too many uploads",
        "status": 503,
        "detail": "3 uploads are coming in, the most this server takes at once; retry in 5 s",
        "instance": "/v1/boxes",
    }
    assert httpx.get(server.url + "/healthz").status_code == 200  # the rest is served
    for sock in stalled:
        assert _answer(sock)[0] == 408
    assert _good_upload(server).status_code == 200


def test_uploads_from_one_address_past_its_share_are_refused(server):
    stalled = [_open_upload(server, 1_000_000, b"\0" * 100, "127.0.0.2") for _ in range(2)]
    _wait_for(lambda: _metric(server, "mofo_uploads_in_flight") == 2, "2 uploads coming in")
    status, headers, body, closed = _answer(_open_upload(server, 1_000_000, source="127.0.0.2"))
    assert (status, headers["retry-after"], closed) == (503, "5", True)
    assert body["detail"] == (
        "2 uploads from your address are coming in, the most this server takes from one client "
        "at once; retry in 5 s"
    )
    assert _good_upload(server).status_code == 200  # another address is served meanwhile
    for sock in stalled:
        assert _answer(sock)[0] == 408


def test_declared_bytes_past_the_spool_are_refused(server):
    stalled = [_open_upload(server, 3_500_000, b"\0" * 100, f"127.0.0.{k}") for k in (2, 3)]
    _wait_for(lambda: _metric(server, "mofo_upload_bytes") == 7_000_000, "7 MB declared")
    sock = _open_upload(server, 2_000_000)
    status, headers, body, closed = _answer(sock)
    assert (status, headers["retry-after"], closed) == (503, "5", True)
    assert body["detail"] == (
        "uploads in progress hold 7000000 bytes, the most this server takes at once; retry in 5 s"
    )
    chunked = _open_upload(server, None, b"\0" * 1_500_000)  # no length: counted as it comes
    status, _, body, _ = _answer(chunked)
    assert status == 503 and body["detail"].startswith("uploads in progress hold 8")
    for sock in stalled:
        assert _answer(sock)[0] == 408


def test_an_upload_is_stored_once(server, spool_dir):
    sent = 3 * MiB
    sock = _open_upload(server, MAX_UPLOAD, b"\1" * sent)
    pid = server.process.pid
    # The form's parser holds back at most a boundary's length; the rest is on disk once.
    _wait_for(lambda: _spooled_bytes(pid, spool_dir) >= sent - 100, "the upload spooled")
    assert _spooled_bytes(pid, spool_dir) <= sent
    assert _answer(sock)[0] == 408
    _wait_for(lambda: _spooled_bytes(pid, spool_dir) == 0, "the spool emptied")


def test_many_large_bodies_at_once_stay_within_the_memory_budget(server, spool_dir):
    """40 clients each sending 3.5 MB at once (140 MB): two fit the 8 MB spool and are taken,
    the others are refused before their body; the server's peak RSS grows by less than 48 MiB."""
    pid = server.process.pid
    assert _good_upload(server).status_code == 200  # flow and decoding warmed up first
    before = _vm_hwm(pid)
    answers: list[int] = []

    def client() -> None:
        sock = _open_upload(server, 3_500_000)
        with contextlib.suppress(OSError):  # refused: closed while the body was still going
            sock.sendall(b"\2" * 3_400_000)  # all but the end: the taken ones stall then
        answers.append(_answer(sock)[0])

    threads = [threading.Thread(target=client) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    grown = _vm_hwm(pid) - before
    assert sorted(answers) == [408] * 2 + [503] * 38
    print(f"peak RSS grew by {grown / MiB:.1f} MiB")
    assert grown < 48 * MiB, f"peak RSS grew by {grown / MiB:.1f} MiB"
    assert _metric(server, 'mofo_rejected_requests_total{reason="uploads_busy"}') >= 38
    _wait_for(lambda: _spooled_bytes(pid, spool_dir) == 0, "the spool emptied")
    assert _good_upload(server).status_code == 200
    assert server.alive()


# -- With Redis: the job-upload quota, shared uploads, a full Redis, the id spaces ---------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    srv = start_redis(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def root(tmp_path_factory, carphone: Path) -> Path:
    """A data root with the sample clip, and (at its top) another clip under the name of the
    sample's upload id."""
    root = tmp_path_factory.mktemp("root")
    (root / "clips").mkdir()
    shutil.copy(sample_clip(), root / "clips" / "sample.mp4")
    with open(sample_clip(), "rb") as f:
        shutil.copy(carphone, root / content_id(f))
    return root


@pytest.fixture(scope="module")
def api(tmp_path_factory, redis_server, root: Path):
    srv = start_server(
        tmp_path_factory.mktemp("logs"),
        redis_url=redis_server.url,
        data_root=root,
        queue_name="hostile",
        max_upload_bytes=MAX_UPLOAD,
        max_job_uploads=3,
        max_job_upload_bytes=5_000_000,
    )
    yield srv
    srv.stop()


def _job_upload(api: Server, data: bytes) -> httpx.Response:
    files = {"file": ("clip.mp4", data)}
    return httpx.post(api.url + "/v1/jobs", files=files, params=FAST, timeout=60)


def _status(api: Server, created: httpx.Response) -> dict:
    """The job that a 202 created, as its status URL (its Location) tells now."""
    return httpx.get(urljoin(api.url + "/", created.headers["location"])).json()


def _uploads(client: redis.Redis) -> dict[str, int]:
    """The job uploads waiting in Redis: key → bytes."""
    keys = [k.decode() for k in client.keys("mofo:upload:*")]
    return {k: client.strlen(k) for k in keys if not k.endswith(":jobs")}


def _worker(redis_server, root: Path):
    env = mofo_env(MOFO_DATA_ROOT=str(root), MOFO_REDIS_URL=redis_server.url, MOFO_DEVICE="cpu")
    done = mofo("worker", "--burst", "--queues", "hostile", env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_job_uploads_have_a_quota_and_a_shared_clip_is_stored_once(api, redis_server, root):
    client = redis.Redis.from_url(redis_server.url)
    sample = sample_clip().read_bytes()
    rng = random.Random(0)
    first = _job_upload(api, sample)
    assert first.status_code == 202
    assert _job_upload(api, rng.randbytes(3_000_000)).status_code == 202
    over_bytes = _job_upload(api, rng.randbytes(3_000_000))
    assert over_bytes.status_code == 503 and over_bytes.headers["retry-after"] == "60"
    assert over_bytes.json()["type"] == "urn:mofo:problem:job-uploads-full"
    assert over_bytes.json()["detail"] == (
        "job uploads waiting would pass 5000000 bytes, the most this server keeps for workers; "
        "retry in 60 s, or name clips under the data root instead"
    )
    assert _job_upload(api, rng.randbytes(1_000_000)).status_code == 202
    over_count = _job_upload(api, rng.randbytes(100_000))
    assert over_count.status_code == 503
    assert over_count.json()["detail"].startswith("3 job uploads are waiting, the most this")
    again = _job_upload(api, sample)  # the same clip for a second job: no new bytes
    assert again.status_code == 202
    held = _uploads(client)
    with open(sample_clip(), "rb") as f:
        sample_key = "mofo:upload:" + content_id(f)
    assert sorted(held.values()) == [len(sample), 1_000_000, 3_000_000]
    assert client.scard(sample_key + ":jobs") == 2

    _worker(redis_server, root)
    jobs = [_status(api, r) for r in (first, again)]
    assert [j["status"] for j in jobs] == ["finished", "finished"]
    assert jobs[0]["result"][0]["ok"] and jobs[1]["result"] == jobs[0]["result"]
    assert _uploads(client) == {} and client.zcard("mofo:uploads") == 0
    assert _job_upload(api, rng.randbytes(100_000)).status_code == 202  # room again
    _worker(redis_server, root)
    assert _uploads(client) == {}


def test_a_path_named_like_an_upload_id_is_refused(api, redis_server):
    with open(sample_clip(), "rb") as f:
        upload_id = content_id(f)
    refused = httpx.post(api.url + "/v1/boxes", json={"path": upload_id}, params=FAST)
    assert refused.status_code == 422
    assert refused.json()["type"] == "urn:mofo:problem:reserved-name"
    assert refused.json()["detail"] == (
        f"path {upload_id!r} is named like an uploaded clip's id (sha256- and 32 hex digits); "
        "rename the file or upload it"
    )
    job = httpx.post(api.url + "/v1/jobs", json={"paths": [upload_id]}, params=FAST)
    assert job.status_code == 422 and job.json()["type"] == "urn:mofo:problem:reserved-name"
    uploaded = _good_upload(api).json()  # the sample's own record: its own size, not carphone's
    by_path = httpx.post(api.url + "/v1/boxes", json={"path": "clips/sample.mp4"}, params=FAST)
    assert uploaded["video"] == upload_id
    assert {k: v for k, v in uploaded.items() if k != "video"} == {
        k: v for k, v in by_path.json().items() if k != "video"
    }


def test_a_stored_record_is_never_overwritten_but_refresh_replaces_it(api, redis_server, root):
    client = redis.Redis.from_url(redis_server.url)
    record = httpx.post(api.url + "/v1/boxes", json={"path": "clips/sample.mp4"}, params=FAST)
    key = box_key(record.json()["params"], "clips/sample.mp4")
    marked = {**record.json(), "clip_box": [0, 0, 1, 1]}  # differs from any recompute
    client.set(key, json.dumps(marked))
    job = httpx.post(api.url + "/v1/jobs", json={"paths": ["clips/sample.mp4"]}, params=FAST)
    assert job.status_code == 202
    _worker(redis_server, root)
    done = _status(api, job)
    assert done["status"] == "finished" and done["result"][0]["record"] == marked
    assert json.loads(client.get(key)) == marked  # the worker kept the stored record
    fresh = httpx.post(
        api.url + "/v1/boxes", json={"path": "clips/sample.mp4"}, params={**FAST, "refresh": True}
    )
    assert fresh.json() == record.json()
    assert json.loads(client.get(key)) == record.json()  # asked for: replaced


def test_a_full_redis_answers_503_and_readyz_says_so(api, redis_server, root):
    client = redis.Redis.from_url(redis_server.url)
    stored = httpx.post(api.url + "/v1/boxes", json={"path": "clips/sample.mp4"}, params=FAST)
    assert stored.status_code == 200
    client.config_set("maxmemory", 1)  # noeviction (the default): every write is refused
    full = "refuses writes: it is full (used memory over its maxmemory, and it evicts nothing)"
    try:
        put = httpx.post(
            api.url + "/v1/boxes",
            files={"file": ("s.mp4", sample_clip().read_bytes())},
            params={"num_frames": 4, "short_side": 64},
            timeout=120,
        )
        assert put.status_code == 503 and put.headers["content-type"] == PROBLEM
        assert put.json()["type"] == "urn:mofo:problem:cache-full"
        assert put.json()["detail"].endswith(full)
        lookup = httpx.get(api.url + "/v1/boxes/clips/sample.mp4", params=FAST)
        assert lookup.status_code == 200 and lookup.json() == stored.json()  # reads go on
        for job in (
            _job_upload(api, sample_clip().read_bytes()),
            httpx.post(api.url + "/v1/jobs", json={"paths": ["clips/sample.mp4"]}, params=FAST),
        ):
            assert job.status_code == 503, job.text
            assert job.json()["type"] == "urn:mofo:problem:queue-full"
            assert job.json()["detail"].endswith(full)
        ready = httpx.get(api.url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False and ready.json()["cache_reachable"] is True
        assert ready.json()["detail"].endswith(full)
        env = mofo_env(MOFO_REDIS_URL=redis_server.url, MOFO_DATA_ROOT=str(root))
        build = mofo("cache", "build", str(root / "clips"), "--num-frames", "6", env=env)
        assert build.returncode == 3  # Redis, not a clip, failed
        assert build.stderr.count("\n") == 1 and "Traceback" not in build.stderr
        assert build.stderr.startswith("error: ") and build.stderr.strip().endswith(full)
    finally:
        client.config_set("maxmemory", 0)
    assert httpx.get(api.url + "/readyz").status_code == 200
    again = httpx.get(api.url + "/v1/boxes/clips/sample.mp4", params=FAST)
    assert again.json() == stored.json()
    assert _uploads(client) == {}
    assert api.alive()
