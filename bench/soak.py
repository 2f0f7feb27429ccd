"""Soak: good and hostile clients together against one ``mofo serve`` on loopback.

    python -m bench.soak [--seconds 60] [--good 2] [--hostile 8] [--json OUT]

Two phases of ``--seconds`` each on the same server: good clients alone, then good clients
beside hostile ones. A good client posts the sample clip (``refresh=true``, 3 frames at 64 px)
again and again from 127.0.0.1. The hostile clients come from 127.0.0.2 (one hostile host,
whose uploads the server takes at most ``MOFO_MAX_UPLOADS_PER_CLIENT`` at once); each cycles
through: a body that stalls, a body that drips a byte a second, a body over the upload limit,
random bytes, a truncated MP4, an empty upload, bad parameters, a path outside the data root,
12 uploads opened at once, and a slow JSON body. Reported: requests served, 5xx answers (must
be 0; the 503 ``uploads-busy`` refusals of hostile bodies are counted apart), transport errors
of good clients, the server's peak RSS (``VmHWM``) and the p50/p95 latency of the good clients
in each phase. Exits 1 on a 5xx or a good client's transport error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from mofo.shared.sample import sample_clip
from testkit import badclips
from testkit.server import Server, start_server

FAST = {"num_frames": 3, "short_side": 64, "refresh": "true"}
MAX_UPLOAD = 8_000_000
SERVER = {  # small body bounds, so the soak sees cuts within its minute
    "max_upload_bytes": MAX_UPLOAD,
    "body_idle_s": 3,
    "body_timeout_s": 10,
    "device": "cpu",
}
HOSTILE_ADDRESS = "127.0.0.2"
PREAMBLE = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="h.mp4"\r\n\r\n'


def _status_memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


class Tally:
    """What the clients of one phase saw (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.good_latency: list[float] = []
        self.good_errors = 0
        self.server_errors: list[str] = []

    def add(self, who: str, status: int, slug: str = "", latency: float | None = None) -> None:
        with self.lock:
            self.statuses[f"{who} {status}"] += 1
            if latency is not None:
                self.good_latency.append(latency)
            if status >= 500 and not (who == "hostile" and slug == "uploads-busy"):
                self.server_errors.append(f"{who} {status} {slug}")


def _slug(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return response.json().get("type", "").rsplit(":", 1)[-1]
    return ""


def good_client(url: str, data: bytes, stop: threading.Event, tally: Tally) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                r = client.post("/v1/boxes", files={"file": ("s.mp4", data)}, params=FAST)
            except httpx.TransportError:
                with tally.lock:
                    tally.good_errors += 1
                continue
            tally.add("good", r.status_code, _slug(r), time.perf_counter() - start)


def _raw_upload(address: tuple[str, int], declared: int) -> socket.socket:
    sock = socket.create_connection(address, timeout=60, source_address=(HOSTILE_ADDRESS, 0))
    sock.sendall(
        b"POST /v1/boxes HTTP/1.1\r\nHost: soak\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n"
        + f"Content-Length: {declared}\r\n\r\n".encode()
        + PREAMBLE
    )
    return sock


def _raw_status(sock: socket.socket) -> tuple[int, str]:
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if data:
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += sock.recv(65536)
            sock.close()
            return int(data.split()[1]), json.loads(body).get("type", "").rsplit(":", 1)[-1]
    sock.close()
    return 0, "closed without an answer"


def hostile_client(
    url: str, corpus: dict[str, bytes], stop: threading.Event, tally: Tally, seed: int
) -> None:
    rng = random.Random(seed)
    host, port = url.removeprefix("http://").split(":")
    address = (host, int(port))
    kinds = [
        "stall",
        "drip",
        "too_large",
        "random",
        "truncated",
        "empty",
        "bad_params",
        "outside_root",
        "many_at_once",
        "slow_json",
    ]
    rng.shuffle(kinds)
    transport = httpx.HTTPTransport(local_address=HOSTILE_ADDRESS)
    with httpx.Client(base_url=url, timeout=120, transport=transport) as client:
        k = 0
        while not stop.is_set():
            kind = kinds[k % len(kinds)]
            k += 1
            if kind == "stall":
                sock = _raw_upload(address, 1_000_000)
                sock.sendall(b"\0" * 10_000)
                tally.add("hostile", *_raw_status(sock))
            elif kind == "drip":
                sock = _raw_upload(address, 1_000_000)
                with contextlib.suppress(OSError):
                    while not stop.is_set():
                        sock.sendall(b"\0")
                        time.sleep(1)
                tally.add("hostile", *_raw_status(sock))
            elif kind == "many_at_once":
                socks = [_raw_upload(address, 500_000) for _ in range(12)]
                for sock in socks:
                    tally.add("hostile", *_raw_status(sock))
            elif kind == "slow_json":
                sock = socket.create_connection(
                    address, timeout=60, source_address=(HOSTILE_ADDRESS, 0)
                )
                sock.sendall(
                    b"POST /v1/boxes HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 40\r\n\r\n{"path": '
                )
                tally.add("hostile", *_raw_status(sock))
            elif kind == "bad_params":
                r = client.post(
                    "/v1/boxes",
                    files={"file": ("s.mp4", corpus["sample"])},
                    params={"short_side": -1},
                )
                tally.add("hostile", r.status_code, _slug(r))
            elif kind == "outside_root":
                r = client.post("/v1/boxes", json={"path": "../../etc/passwd"})
                tally.add("hostile", r.status_code, _slug(r))
            else:
                try:
                    r = client.post("/v1/boxes", files={"file": ("h.mp4", corpus[kind])})
                except httpx.TransportError:
                    tally.add("hostile", 0, "transport error")
                    continue
                tally.add("hostile", r.status_code, _slug(r))


def run_phase(server: Server, seconds: float, good: int, hostile: int) -> dict:
    corpus = {"sample": sample_clip().read_bytes()}
    with tempfile.TemporaryDirectory() as tmp:
        corpus["truncated"] = badclips.truncated_mp4(tmp).read_bytes()
        corpus["random"] = badclips.random_bytes(tmp, n=256 * 1024).read_bytes()
    corpus["empty"] = b""
    corpus["too_large"] = os.urandom(MAX_UPLOAD + 1_000_000)
    tally = Tally()
    stop = threading.Event()
    threads = [
        threading.Thread(target=good_client, args=(server.url, corpus["sample"], stop, tally))
        for _ in range(good)
    ] + [
        threading.Thread(target=hostile_client, args=(server.url, corpus, stop, tally, k))
        for k in range(hostile)
    ]
    pid = server.process.pid
    peak_rss = 0
    for thread in threads:
        thread.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak_rss = max(peak_rss, _status_memory(pid)[0])
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(180)
    latency = sorted(tally.good_latency)
    return {
        "seconds": seconds,
        "good_clients": good,
        "hostile_clients": hostile,
        "requests": sum(tally.statuses.values()),
        "good_requests": len(latency),
        "statuses": dict(sorted(tally.statuses.items())),
        "server_errors": len(tally.server_errors),
        "server_error_kinds": dict(Counter(tally.server_errors)),
        "good_transport_errors": tally.good_errors,
        "good_p50_s": round(statistics.median(latency), 3) if latency else None,
        "good_p95_s": round(latency[int(0.95 * (len(latency) - 1))], 3) if latency else None,
        "peak_rss_sampled_mib": round(peak_rss / 2**20, 1),
        "vm_hwm_mib": round(_status_memory(pid)[1] / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per phase")
    parser.add_argument("--good", type=int, default=2, help="good clients")
    parser.add_argument("--hostile", type=int, default=8, help="hostile clients")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mofo-soak-") as logs:
        server = start_server(Path(logs), **SERVER)
        try:
            phases = {
                "good only": run_phase(server, args.seconds, args.good, 0),
                "good + hostile": run_phase(server, args.seconds, args.good, args.hostile),
            }
            alive = server.alive()
        finally:
            server.stop()
    for name, phase in phases.items():
        print(
            f"{name:>15}: {phase['requests']} requests ({phase['good_requests']} good), "
            f"5xx {phase['server_errors']}, good transport errors "
            f"{phase['good_transport_errors']}, good p50 {phase['good_p50_s']} s "
            f"p95 {phase['good_p95_s']} s, RSS peak {phase['peak_rss_sampled_mib']} MiB "
            f"(VmHWM {phase['vm_hwm_mib']} MiB)"
        )
        print(f"{'':>17}{phase['statuses']}")
    report = {"phases": phases, "server_alive": alive, "settings": SERVER}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    bad = any(p["server_errors"] or p["good_transport_errors"] for p in phases.values())
    return 1 if bad or not alive else 0


if __name__ == "__main__":
    sys.exit(main())
