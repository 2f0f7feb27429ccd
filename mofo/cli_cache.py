"""``mofo worker`` and ``mofo cache build|status|export|import``: filling the Redis box cache for
whole datasets, watching it, and moving it as one file."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.text import Text

from mofo.cli_options import (
    _LIMITS,
    EXIT_INFRA,
    Backend,
    BackendOpt,
    FpsOpt,
    MaxBytesOpt,
    MaxDurationOpt,
    MaxFramesOpt,
    MaxHeightOpt,
    MaxWidthOpt,
    MotionStepOpt,
    MotionStepSOpt,
    NumFramesOpt,
    Quality,
    QualityOpt,
    ShortSideOpt,
    Stopping,
    StoppingOpt,
    StrideOpt,
    err,
    fail,
    load_settings,
    motion_settings,
    sampling_options,
)
from mofo.shared.cache import CacheUnavailable, unavailable_as
from mofo.shared.errors import MofoError

cache_app = typer.Typer(
    help="The Redis box cache: fill it for a dataset, follow a build, export and import it.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
out = Console(soft_wrap=True)

RedisOpt = Annotated[
    str | None, typer.Option("--redis", help="Redis URL of the box cache [env MOFO_REDIS_URL].")
]
EXIT_FAILED = 1


def _redis_settings(**overrides):
    settings = load_settings(**overrides)
    if not settings.redis_url:
        raise fail("no Redis: set MOFO_REDIS_URL or pass --redis redis://HOST:6379/0")
    return settings


@contextmanager
def _redis_errors(url: str):
    """Redis unreachable (exit 3) or a source/file problem (exit 2): one line on stderr."""
    try:
        with unavailable_as(CacheUnavailable, "Redis", url):
            yield
    except CacheUnavailable as exc:
        raise fail(str(exc), EXIT_INFRA) from None
    except MofoError as exc:
        raise fail(str(exc)) from None


def worker(
    burst: Annotated[
        bool,
        typer.Option(
            "--burst",
            help="Quit when the queues are drained (jobs running elsewhere and retries included).",
        ),
    ] = False,
    redis: RedisOpt = None,
    queue_redis: Annotated[
        str | None,
        typer.Option(
            help="Redis URL of the job queue, if not the cache's [env MOFO_QUEUE_REDIS_URL]."
        ),
    ] = None,
    queues: Annotated[
        str | None,
        typer.Option(help="Queues to work on, in priority order (default: API jobs, then builds)."),
    ] = None,
    data_root: Annotated[
        Path | None, typer.Option(help="Where clip paths are resolved [env MOFO_DATA_ROOT].")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda[:N] [env MOFO_DEVICE].")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Worker name (default: random).")] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Run an RQ worker that boxes clips for the cache (flow and CUDA stay in this process)."""
    import logging

    settings = _redis_settings(
        redis_url=redis, queue_redis_url=queue_redis, data_root=data_root, device=device
    )
    names = [q.strip() for q in queues.split(",")] if queues else []
    names = [q for q in names if q] or [settings.queue_name, settings.build_queue]
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    from mofo.workers.worker import run_worker

    with _redis_errors(settings.queue_url):
        run_worker(settings, names, burst=burst, name=name, log_level=log_level.upper())


@cache_app.command()
def build(
    source: Annotated[
        Path,
        typer.Argument(
            help="A folder of clips, an SSV2 label file (.json) or an Epic-Kitchens-100 CSV.",
            show_default=False,
        ),
    ],
    videos: Annotated[
        Path | None, typer.Option(help="The label file's video folder (SSV2, Epic).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Build name (default: from the source's name).")
    ] = None,
    redis: RedisOpt = None,
    data_root: Annotated[
        Path | None,
        typer.Option(help="Paths are kept relative to this folder [env MOFO_DATA_ROOT]."),
    ] = None,
    chunk: Annotated[int, typer.Option(help="Clips per job.")] = 16,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Try again the clips that failed before.")
    ] = False,
    retry_after: Annotated[
        str, typer.Option(help="Seconds before each retry of a failed job, comma separated.")
    ] = "10,60,300",
    job_timeout: Annotated[
        int | None, typer.Option(help="Seconds a job may run (default 120 per clip, >= 600).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be enqueued; enqueue nothing.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="The summary as JSON.")] = False,
    device: Annotated[
        str, typer.Option(help="Device whose backend 'auto' picks (the workers' device).")
    ] = "auto",
    backend: BackendOpt = Backend.auto,
    quality: QualityOpt = Quality.balanced,
    short_side: ShortSideOpt = None,
    stride: StrideOpt = 1,
    fps: FpsOpt = None,
    num_frames: NumFramesOpt = None,
    motion_step: MotionStepOpt = 1,
    motion_step_s: MotionStepSOpt = None,
    stopping: StoppingOpt = Stopping.epsilon,
    max_frames: MaxFramesOpt = _LIMITS.max_frames,
    max_duration: MaxDurationOpt = _LIMITS.max_duration_s,
    max_width: MaxWidthOpt = _LIMITS.max_width,
    max_height: MaxHeightOpt = _LIMITS.max_height,
    max_bytes: MaxBytesOpt = _LIMITS.max_bytes,
) -> None:
    """Enqueue the clips of a dataset that have no box record yet (run `mofo worker` to do them).

    A second build of the same source and settings enqueues only what is missing: clips with a
    record, clips waiting in a live job and clips that failed (unless --retry-failed) are skipped.
    """
    import redis as redis_lib
    from rq import Queue

    from mofo.shared.sources import open_source
    from mofo.workers.build import enqueue_build

    settings = _redis_settings(redis_url=redis, data_root=data_root)
    sampling = sampling_options(short_side, stride, fps, num_frames, motion_step, motion_step_s)
    _, params, limits = motion_settings(
        device,
        backend,
        stopping,
        sampling,
        (max_bytes, max_frames, max_duration, max_width, max_height),
        quality,
    )
    try:
        delays = [int(s) for s in retry_after.split(",") if s.strip()]
    except ValueError:
        raise fail(
            f"--retry-after {retry_after!r}: expected whole seconds, e.g. 10,60,300"
        ) from None
    with _redis_errors(settings.redis_url):
        dataset = open_source(source, videos, settings.data_root)
        cache_redis = redis_lib.Redis.from_url(settings.redis_url, socket_timeout=30)
        queue_redis = redis_lib.Redis.from_url(settings.queue_url, socket_timeout=30)
        queue = Queue(settings.build_queue, connection=queue_redis)
        plan = enqueue_build(
            cache_redis,
            queue,
            dataset,
            params,
            limits,
            name=name,
            chunk=chunk,
            retry_failed=retry_failed,
            retry_after_s=delays,
            job_timeout_s=job_timeout,
            dry_run=dry_run,
        )
    summary = {
        **plan.to_dict(),
        "kind": dataset.kind,
        "root": str(dataset.root),
        "params": params.hash(),
        "backend": params.backend,
        "queue": queue.name,
        "dry_run": dry_run,
    }
    if json_out:
        typer.echo(json.dumps(summary))
        return
    verb = "would enqueue" if dry_run else "enqueued"
    typer.echo(
        f"{plan.build_id}: {plan.total} clips ({dataset.kind}, backend {params.backend}); "
        f"{plan.cached} cached, {plan.failed_before} failed before, {plan.in_flight} in flight; "
        f"{verb} {plan.enqueued} in {plan.jobs} jobs on queue {queue.name}"
    )


def _find_builds(cache_redis, build: str | None) -> list[str]:
    from mofo.workers.build import list_builds

    builds = list_builds(cache_redis)
    if build is None:
        return builds
    chosen = [b for b in builds if b == build or b.partition(":")[2] == build]
    if not chosen:
        known = ", ".join(b.partition(":")[2] for b in builds) or "none yet"
        raise fail(f"no build named {build!r} (builds: {known})")
    return chosen


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _render(statuses, jobs: dict[str, int] | None) -> Group:
    parts = []
    for s in statuses:
        share = (s.done + s.failed) / s.total if s.total else 1.0
        parts.append(Text(f"{s.name}  (params {s.params}, {s.kind}: {s.source})", style="bold"))
        parts.append(ProgressBar(total=max(s.total, 1), completed=s.done + s.failed, width=60))
        line = Text(f"{share:6.1%}  done {s.done:,}  failed {s.failed:,}  pending {s.pending:,}")
        line.append(f" (queued {s.queued:,})" if s.queued else "")
        parts.append(line)
        if s.stalled:
            parts.append(
                Text(
                    f"  {s.stalled:,} queued clips are in failed or lost jobs: run the "
                    "build again to enqueue them",
                    style="yellow",
                )
            )
        parts.append(Text(f"  rate {s.rate:.2f} clips/s   ETA {_duration(s.eta_s)}"))
        for video, reason in (s.failures or {}).items():
            parts.append(Text(f"  failed {video}: {reason}", style="red"))
        for job_id, reason in (s.failed_jobs or {}).items():
            parts.append(Text(f"  failed job {job_id}: {reason}", style="yellow"))
    if jobs is not None:
        parts.append(Text(", ".join(f"{QUEUE_LABELS[k]} {v}" for k, v in jobs.items())))
    return Group(*parts)


# The queue's counts: keys of `cache status --json`, and how the text shows them.
QUEUE_LABELS = {
    "queued": "jobs queued",
    "running": "running",
    "retrying": "waiting to retry",
    "failed": "failed",
    "workers": "workers",
}


def _queue_counts(queue) -> dict[str, int]:
    from rq import Worker
    from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

    return {
        "queued": queue.count,
        "running": StartedJobRegistry(queue=queue).count,
        "retrying": ScheduledJobRegistry(queue=queue).count,
        "failed": FailedJobRegistry(queue=queue).count,
        "workers": Worker.count(queue=queue),
    }


@cache_app.command()
def status(
    build: Annotated[
        str | None, typer.Argument(help="A build's name (or PARAMS:NAME); default: all builds.")
    ] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="List each failed clip with its reason.")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh every 2 s until nothing is pending.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="The status as JSON.")] = False,
    redis: RedisOpt = None,
) -> None:
    """Done / failed / pending clips of each build, with its rate and ETA; exit 1 if any failed."""
    import redis as redis_lib
    from rq import Queue

    from mofo.workers.build import build_status

    settings = _redis_settings(redis_url=redis)
    with _redis_errors(settings.redis_url):
        cache_redis = redis_lib.Redis.from_url(settings.redis_url, socket_timeout=30)
        queue = Queue(
            settings.build_queue,
            connection=redis_lib.Redis.from_url(settings.queue_url, socket_timeout=30),
        )
        ids = _find_builds(cache_redis, build)

        def snapshot():
            found = [build_status(cache_redis, b, failed, queue.connection) for b in ids]
            return [s for s in found if s is not None]

        statuses = snapshot()
        if json_out:
            typer.echo(
                json.dumps(
                    {
                        "builds": [s.to_dict() for s in statuses],
                        "queue": {queue.name: _queue_counts(queue)},
                    }
                )
            )
        elif watch and out.is_terminal:
            with Live(_render(statuses, _queue_counts(queue)), console=out) as live:
                while any(s.pending for s in statuses):
                    time.sleep(2)
                    statuses = snapshot()
                    live.update(_render(statuses, _queue_counts(queue)))
        elif watch:  # not a terminal (a log, a pipe): wait quietly, then print the end
            while any(s.pending for s in statuses):
                time.sleep(2)
                statuses = snapshot()
            out.print(_render(statuses, _queue_counts(queue)))
        else:
            if not statuses:
                err.print("no builds yet: start one with `mofo cache build SOURCE`")
            out.print(_render(statuses, _queue_counts(queue)))
    if any(s.failed for s in statuses):
        raise typer.Exit(EXIT_FAILED)


@cache_app.command("export")
def export_(
    file: Annotated[Path, typer.Argument(help="OUT.parquet or OUT.jsonl.gz.", show_default=False)],
    params: Annotated[
        str | None, typer.Option(help="Only the records of this params hash.")
    ] = None,
    redis: RedisOpt = None,
) -> None:
    """Write every box record in the cache to one file (for offline training and backups)."""
    from mofo.shared.cache import RedisBoxCache
    from mofo.shared.cache_files import export_cache, file_format

    settings = _redis_settings(redis_url=redis)
    with _redis_errors(settings.redis_url):
        file_format(file)
        n = export_cache(RedisBoxCache.from_url(settings.redis_url, timeout_s=60), file, params)
    err.print(f"exported {n} records to {file}", highlight=False, markup=False)


@cache_app.command("import")
def import_(
    file: Annotated[
        Path, typer.Argument(help="A .parquet or .jsonl.gz export.", show_default=False)
    ],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace records that are already in the cache.")
    ] = False,
    redis: RedisOpt = None,
) -> None:
    """Load an export into the cache; the file is checked whole before anything is written."""
    from mofo.shared.cache import RedisBoxCache
    from mofo.shared.cache_files import import_cache

    settings = _redis_settings(redis_url=redis)
    with _redis_errors(settings.redis_url):
        written, skipped = import_cache(
            RedisBoxCache.from_url(settings.redis_url, timeout_s=60), file, overwrite
        )
    err.print(
        f"imported {written} records from {file}; {skipped} already there were kept",
        highlight=False,
    )
