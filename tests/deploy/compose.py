"""docker-compose.yml read as Compose reads it, and its services run as plain processes.

There is no Docker engine on the test machines, so the tests take the compose file itself:
YAML with merge keys and Compose's ``!reset`` tag, ``${NAME:-default}`` interpolation from an
environment (as from a ``.env`` file), then each service's ``command``, ``environment`` and
``healthcheck`` run on this host. What a container would isolate is mapped, and only that:

- its mounts: a container path under a service's volume becomes the host folder of that volume
  (bind mounts as written, named volumes as folders of their own), and the image's working
  folder ``/app`` is this repository (the image copies it there);
- its network: ``redis://redis:6379`` becomes the test's Redis on 127.0.0.1 and a free port,
  and the API and the dashboard listen on 127.0.0.1 and a free port instead of 0.0.0.0:8000
  and 0.0.0.0:9181;
- its image: ``mofo`` and ``python`` are this virtual environment's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "docker" / "compose.cpu.yml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
WORKDIR = "/app"  # the images' WORKDIR, where they copy the repository
BIN = str(Path(sys.executable).parent)


class Reset:
    """Compose's ``!reset``: in an override file, drop the value of the files before."""

    def __init__(self, value: Any) -> None:
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    pass


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> Reset:
    if isinstance(node, yaml.MappingNode):
        return Reset(loader.construct_mapping(node))
    if isinstance(node, yaml.SequenceNode):
        return Reset(loader.construct_sequence(node))
    return Reset(loader.construct_scalar(node))


ComposeLoader.add_constructor("!reset", _reset)

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt},
# ${NAME+alt}, $NAME; $$ is a literal $.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's interpolation of every string in ``value`` (keys are left as they are)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, Reset):
        return Reset(interpolate(value.value, env))
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        set_ = current is not None and (current != "" or not (op or "").startswith(":"))
        if op in (":-", "-"):
            return current if set_ else interpolate(arg, env)
        if op in (":?", "?"):
            if not set_:
                raise ValueError(f"${{{name}}} is required: {arg}")
            return current
        if op in (":+", "+"):
            return interpolate(arg, env) if set_ else ""
        return current or ""

    return VARIABLE.sub(substitute, value)


def load(path: Path, env: Mapping[str, str]) -> dict:
    """One compose file, parsed and interpolated (``!reset`` values stay wrapped)."""
    return interpolate(yaml.load(path.read_text(), Loader=ComposeLoader), env)


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file: mappings merge key by key, ``!reset`` drops the
    value below (a ``!reset {}`` or ``!reset []`` leaves the key out), anything else replaces."""
    if isinstance(override, Reset):
        return None
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            merged = merge(base.get(key), value)
            if merged is None and isinstance(value, Reset):
                out.pop(key, None)
            else:
                out[key] = merged
        return out
    return override


def unwrap(value: Any) -> Any:
    """A loaded file with its ``!reset`` markers taken as plain values (for the schema check of
    an override file by itself)."""
    if isinstance(value, Reset):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def environment(service: dict) -> dict[str, str]:
    """A service's ``environment``, list or mapping form, as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def mounts(service: dict, project: Path, volumes_dir: Path) -> dict[str, Path]:
    """Container path → host path of a service's volumes (short syntax): bind mounts relative to
    the project folder, named volumes as folders under ``volumes_dir``."""
    out = {}
    for spec in service.get("volumes") or []:
        source, target = spec.split(":")[:2]
        if source.startswith((".", "/", "~")):
            host = (project / source).expanduser().resolve()
        else:
            host = volumes_dir / source
            host.mkdir(parents=True, exist_ok=True)
        out[target] = host
    return out


@dataclass
class Topology:
    """The compose file's services as processes on this host."""

    compose: dict
    project: Path  # the folder of the compose file (bind mounts are relative to it)
    volumes_dir: Path  # named volumes live here
    redis_port: int
    api_port: int
    base_env: dict[str, str] = field(default_factory=dict)
    dashboard_port: int = 0

    def service(self, name: str) -> dict:
        return self.compose["services"][name]

    def localise(self, name: str, text: str) -> str:
        """A string of service ``name`` as this host sees it: mounts, then the network."""
        paths = dict(mounts(self.service(name), self.project, self.volumes_dir))
        paths.setdefault(WORKDIR, ROOT)
        for target in sorted(paths, key=len, reverse=True):  # /app/runs before /app
            text = re.sub(rf"(?<![\w./-]){re.escape(target)}(?=/|\b|$)", str(paths[target]), text)
        return text.replace("redis://redis:6379", f"redis://127.0.0.1:{self.redis_port}")

    def env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in self.base_env.items() if not k.startswith("MOFO_")}
        env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
        env.update({k: self.localise(name, v) for k, v in environment(self.service(name)).items()})
        if name == "api":  # its own network namespace in a container; a free port here
            env.update(MOFO_HOST="127.0.0.1", MOFO_PORT=str(self.api_port))
        if name == "dashboard":
            env.update(RQ_DASHBOARD_BIND="127.0.0.1", RQ_DASHBOARD_PORT=str(self.dashboard_port))
        return env

    def argv(self, name: str, command: list[str] | str | None = None) -> list[str]:
        """The service's command (or ``command`` run in its container, as `docker compose run`
        does), localised."""
        command = self.service(name).get("command") if command is None else command
        if isinstance(command, str):
            command = ["sh", "-c", command]
        argv = [self.localise(name, part) for part in command]
        if name == "redis":
            argv += ["--port", str(self.redis_port), "--bind", "127.0.0.1"]
        return argv

    def healthcheck(self, name: str) -> list[str]:
        test = self.service(name)["healthcheck"]["test"]
        if isinstance(test, str):
            argv = ["sh", "-c", test]
        elif test[0] == "CMD-SHELL":
            argv = ["sh", "-c", test[1]]
        elif test[0] == "CMD":
            argv = list(test[1:])
        else:
            raise ValueError(f"{name}: healthcheck test {test!r}")
        argv = [self.localise(name, part) for part in argv]
        if argv[0] == "redis-cli":
            argv[1:1] = ["-p", str(self.redis_port)]
        return argv

    def start(self, name: str, log: Path, command=None) -> subprocess.Popen:
        with open(log, "wb") as out:
            return subprocess.Popen(
                self.argv(name, command),
                env=self.env(name),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def run(self, name: str, command, timeout: float = 300) -> subprocess.CompletedProcess:
        """A one-off command in a service's container: `docker compose run --rm NAME COMMAND`."""
        return self._once(name, self.argv(name, command), timeout)

    def health(self, name: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run the service's healthcheck once, as Docker does inside its container."""
        return self._once(name, self.healthcheck(name), timeout)

    def _once(self, name: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv,
            env=self.env(name),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def wait_for(what: str, probe, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s")
        time.sleep(every)


def stop(process: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def running(logs: Path) -> Iterator[list[subprocess.Popen]]:
    """A list for the processes a test starts: stopped, newest first, when the block ends; on
    a failure the tail of every log under ``logs`` is printed first."""
    processes: list[subprocess.Popen] = []
    try:
        yield processes
    except BaseException:
        for log in sorted(logs.glob("*.log")):
            print(f"===== {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        for process in reversed(processes):
            stop(process)
