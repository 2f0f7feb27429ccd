"""Health checks of the services, for container healthchecks and orchestrators' probes.

    python -m mofo.shared.health api [--url URL]          # /readyz answers 200
    python -m mofo.shared.health worker                   # a live `mofo worker` of this host is
                                                     # registered in Redis
    python -m mofo.shared.health trainer RUN_DIR [--max-age S]   # the run's log.jsonl is recent

Exit 0 when healthy, 1 when not, with one line on stdout saying why (Docker keeps it in
`docker inspect`). Only the standard library and redis are imported, so a check costs tens of
milliseconds, not the seconds of importing torch. Settings come from the same ``MOFO_*``
variables the services read (``MOFO_PORT``, ``MOFO_REDIS_URL``, ``MOFO_QUEUE_REDIS_URL``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HEALTHY, UNHEALTHY = 0, 1


def check_api(url: str | None, timeout: float = 5.0) -> tuple[int, str]:
    """The API is healthy when ``/readyz`` answers 200: flow warmed up and Redis reachable."""
    if url is None:
        url = f"http://127.0.0.1:{os.environ.get('MOFO_PORT') or 8000}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return HEALTHY, f"{url}: {response.status}"
    except urllib.error.HTTPError as exc:  # 503 with a problem+json detail
        detail = exc.read(500).decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):  # not JSON: the text as it is
            detail = json.loads(detail).get("detail", detail)
        return UNHEALTHY, f"{url}: {exc.code} {detail}"
    except (urllib.error.URLError, OSError) as exc:
        return UNHEALTHY, f"{url}: {getattr(exc, 'reason', exc)}"
    except ValueError as exc:  # not an http:// URL
        return UNHEALTHY, f"bad URL: {exc}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def check_worker(redis_url: str | None, hostname: str | None = None) -> tuple[int, str]:
    """Healthy when Redis answers and at least one RQ worker registered from this host has a
    live process here. RQ refreshes a worker's registration at least every ``worker_ttl`` (420 s)
    and lets it expire 60 s later, so a hung or killed worker drops out within 8 minutes; in a
    container (one worker, its own hostname) this is that worker's health."""
    import redis

    if not redis_url:
        return UNHEALTHY, "no Redis URL: set MOFO_QUEUE_REDIS_URL or MOFO_REDIS_URL"
    hostname = hostname or socket.gethostname()
    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
    except ValueError as exc:  # not a redis://, rediss:// or unix:// URL
        return UNHEALTHY, f"bad Redis URL: {exc}"
    try:
        keys = sorted(k.decode() for k in client.smembers("rq:workers"))
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "hostname", "pid", "state")
            fields = pipe.execute()
    except redis.RedisError as exc:
        return UNHEALTHY, f"Redis unreachable: {exc}"
    live = []
    for key, (host, pid, state) in zip(keys, fields, strict=True):
        if host is None or host.decode() != hostname or pid is None:
            continue  # another host's, or expired (the set keeps names until RQ cleans it)
        if pid_alive(int(pid)):
            live.append(f"{key.removeprefix('rq:worker:')} ({(state or b'?').decode()})")
    if not live:
        return UNHEALTHY, f"no live worker of host {hostname!r} is registered in Redis"
    return HEALTHY, f"{len(live)} worker(s) on {hostname}: {', '.join(live)}"


def check_trainer(run_dir: Path, max_age_s: float) -> tuple[int, str]:
    """Healthy while the run's ``log.jsonl`` (a line per logged step, checkpoints, events) was
    written within ``max_age_s``. Set ``max_age_s`` above the slowest stretch between two lines
    (``log_every`` steps, or a checkpoint); the container's start period covers start-up."""
    log = Path(run_dir) / "log.jsonl"
    try:
        age = time.time() - log.stat().st_mtime
    except FileNotFoundError:
        return UNHEALTHY, f"{log} does not exist yet"
    if age > max_age_s:
        return UNHEALTHY, f"{log} last written {age:.0f} s ago (more than {max_age_s:g} s)"
    return HEALTHY, f"{log} written {age:.0f} s ago"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mofo.shared.health", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="service", required=True)
    api = sub.add_parser("api", help="GET /readyz")
    api.add_argument("--url", help="default http://127.0.0.1:$MOFO_PORT/readyz (port 8000)")
    worker = sub.add_parser("worker", help="a live worker of this host in Redis")
    worker.add_argument("--redis", help="default $MOFO_QUEUE_REDIS_URL or $MOFO_REDIS_URL")
    trainer = sub.add_parser("trainer", help="the run's log.jsonl was written lately")
    trainer.add_argument("run_dir", type=Path, help="the run's folder (run.out)")
    trainer.add_argument("--max-age", type=float, default=600.0, help="seconds (600)")
    args = parser.parse_args(argv)
    if args.service == "api":
        code, message = check_api(args.url)
    elif args.service == "worker":
        url = (
            args.redis or os.environ.get("MOFO_QUEUE_REDIS_URL") or os.environ.get("MOFO_REDIS_URL")
        )
        code, message = check_worker(url)
    else:
        code, message = check_trainer(args.run_dir, args.max_age)
    print(("healthy: " if code == HEALTHY else "unhealthy: ") + message)
    return code


if __name__ == "__main__":
    sys.exit(main())
