"""``python -m mofo.shared.health``: the containers' healthchecks, each shown failing and passing on
real parts (an HTTP server, a Redis server, a run folder). The real API and workers pass theirs
in test_pipeline.py."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import redis

from mofo.shared.health import check_api, check_trainer, check_worker, main
from testkit.redis_server import start_redis
from testkit.server import free_port


class Ready(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        body = json.dumps({"detail": "flow backend warming up"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/problem+json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_api_check_follows_readyz():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/readyz"
    try:
        assert check_api(url)[0] == 0
        Ready.status = 503
        code, message = check_api(url)
        assert code == 1 and "503 flow backend warming up" in message
    finally:
        Ready.status = 200
        server.shutdown()
    code, message = check_api(f"http://127.0.0.1:{free_port()}/readyz")  # nothing listens
    assert code == 1 and "refused" in message.lower()
    code, message = check_api("127.0.0.1/readyz")  # no scheme
    assert code == 1 and message.startswith("bad URL")


def test_api_check_reads_the_port_from_mofo_port(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("MOFO_PORT", str(server.server_port))
        code, message = check_api(None)
        assert code == 0 and f":{server.server_port}/readyz" in message
    finally:
        server.shutdown()


def test_worker_check_wants_a_live_registered_worker_of_this_host(tmp_path):
    server = start_redis(tmp_path)
    try:
        client = redis.Redis.from_url(server.url)
        assert check_worker(server.url, "box1") == (
            1,
            "no live worker of host 'box1' is registered in Redis",
        )
        # As RQ registers a worker: the name in rq:workers, a hash with hostname and pid.
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        client.sadd("rq:workers", "rq:worker:w1", "rq:worker:w2", "rq:worker:gone")
        client.hset(
            "rq:worker:w1", mapping={"hostname": "box1", "pid": sleeper.pid, "state": "idle"}
        )
        client.hset(
            "rq:worker:w2", mapping={"hostname": "box2", "pid": os.getpid(), "state": "busy"}
        )
        code, message = check_worker(server.url, "box1")
        assert code == 0 and message == "1 worker(s) on box1: w1 (idle)"
        assert check_worker(server.url, "box3")[0] == 1  # another host's worker is not ours
        sleeper.kill()
        sleeper.wait()
        assert check_worker(server.url, "box1")[0] == 1  # registered, but its process is gone
    finally:
        server.stop()
    code, message = check_worker(server.url, "box1")  # Redis down
    assert code == 1 and message.startswith("Redis unreachable")
    assert check_worker(None)[0] == 1
    code, message = check_worker("http://127.0.0.1:6379/0")  # a wrong scheme: said, not raised
    assert code == 1 and message.startswith("bad Redis URL")


def test_trainer_check_wants_a_recent_log(tmp_path):
    code, message = check_trainer(tmp_path, 60)
    assert code == 1 and "does not exist yet" in message
    log = tmp_path / "log.jsonl"
    log.write_text('{"event": "start"}\n')
    assert check_trainer(tmp_path, 60)[0] == 0
    old = time.time() - 120
    os.utime(log, (old, old))
    code, message = check_trainer(tmp_path, 60)
    assert code == 1 and "last written 120 s ago" in message


def test_command_line_exit_codes(tmp_path, capsys):
    assert main(["trainer", str(tmp_path)]) == 1
    assert capsys.readouterr().out.startswith("unhealthy: ")
    (tmp_path / "log.jsonl").write_text("{}\n")
    assert main(["trainer", str(tmp_path), "--max-age", "30"]) == 0
    assert capsys.readouterr().out.startswith("healthy: ")
    with pytest.raises(SystemExit) as exit_:
        main(["database"])
    assert exit_.value.code == 2


def test_the_check_imports_neither_torch_nor_the_service():
    """A healthcheck runs every 15-60 s in each container: it must stay light."""
    heavy = "('torch', 'cv2', 'fastapi', 'rq')"
    code = f"import sys, mofo.shared.health; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
