"""Run the real service for tests and benchmarks: ``mofo serve`` in its own process on a free
port, configured through MOFO_* variables as a user would, stopped (and its log kept) after."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

# The `mofo` script of this interpreter's environment, or the one on PATH where the project is
# not installed beside the interpreter (the GPU machine: gpu/check.sh puts one there).
MOFO = str(Path(sys.executable).with_name("mofo"))
if not Path(MOFO).exists():
    MOFO = shutil.which("mofo") or MOFO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 120), **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(log_dir: Path, ready_timeout: float = 60.0, **settings: object) -> Server:
    """Start ``mofo serve`` with ``MOFO_<NAME>`` set from ``settings``; wait for /readyz 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOFO_")}
    env.update({f"MOFO_{k.upper()}": str(v) for k, v in settings.items()})
    env["MOFO_PORT"] = str(port)
    log = Path(log_dir) / f"server-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [MOFO, "serve", "--log-level", "warning"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mofo serve exited with {process.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"mofo serve not ready after {ready_timeout} s:\n{server.log_text()}")
