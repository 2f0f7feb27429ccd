"""Merge what the sections of ``gpu/check.sh`` wrote into one JSON of figures, and print the
short summary that ends the run's log (where a caller that reads only the log's end finds it).

    python gpu/report.py WORK OUT/gpu_figures.json

WORK holds: versions.json (setup), sections.tsv (name, exit status, seconds, note per section),
gpu_flow.json, gpu_profile.json, gpu_pipeline.json, api_load.json, pretrain.json, gpu-tests.xml
(pytest's JUnit report), smoke.log and smoke/ (the smoke runs' logs and results). Whatever is
missing is left out: the script calls this after every section, so a run cut short keeps what
it measured.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def read_json(path: Path) -> object | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_sections(path: Path) -> dict[str, dict]:
    """sections.tsv → {name: {rc, seconds, note}}, in run order."""
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        name, rc, seconds, note = [*line.split("\t"), "", "", ""][:4]
        out[name] = {
            "rc": int(rc) if rc.lstrip("-").isdigit() else None,
            "seconds": int(seconds) if seconds.isdigit() else None,
            "note": note,
        }
    return out


def junit_summary(path: Path) -> dict | None:
    """Counts and the failing tests' ids from pytest's JUnit XML."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors")}
    counts["skipped"] = sum(int(s.get("skipped", 0)) for s in suites)
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failing = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failing.append(f"{case.get('classname')}::{case.get('name')}")
    counts["failing"] = failing
    return counts


def smoke_summary(log: Path, folder: Path) -> dict | None:
    """Whether the pretraining and finetuning smoke runs passed (their log), and what they wrote
    into folder."""
    if not log.exists():
        return None
    text = log.read_text(errors="replace")
    out: dict[str, object] = {
        "pretrain_ok": "\nsmoke: ok" in f"\n{text}",
        "finetune_evaluate_ok": "finetune smoke: ok" in text,
    }
    steps = folder / "pretrain-smoke-log.jsonl"
    if steps.exists():
        lines = [json.loads(x) for x in steps.read_text().splitlines() if x.strip()]
        out["pretrain_steps"] = [
            {k: x.get(k) for k in ("step", "loss", "clips_per_s", "missing_boxes")}
            for x in lines
            if "loss" in x
        ]
    results = read_json(folder / "evaluate-smoke-results.json")
    if isinstance(results, dict):
        out["evaluate"] = {k: results.get(k) for k in ("views", "clips", "scored", "failed")}
    return out


def api_summary(data: object) -> dict | None:
    """The levels of each configuration, without the bulky settings."""
    if not isinstance(data, dict):
        return None
    configs = []
    for cfg in data.get("configs", []):
        configs.append(
            {
                "config": cfg.get("config"),
                "levels": cfg.get("levels"),
                "ratios": cfg.get("ratios"),
                "server_log_errors": cfg.get("server_log_errors"),
            }
        )
    return {"machine": data.get("machine"), "configs": configs, "failures": data.get("failures")}


def merge(work: Path) -> dict:
    versions = read_json(work / "versions.json") or {}
    flow = read_json(work / "gpu_flow.json")
    figures: dict[str, object] = {
        "device": versions.get("device"),
        "nvidia_smi": versions.get("nvidia_smi"),
        "date": versions.get("date"),
        "versions": versions.get("packages"),
        "sections": read_sections(work / "sections.tsv"),
        "tvl1": flow,
        "tvl1_profile": read_json(work / "gpu_profile.json"),
        "regions_and_pipeline": read_json(work / "gpu_pipeline.json"),
        "api": api_summary(read_json(work / "api_load.json")),
        "pretrain": read_json(work / "pretrain.json"),
        "gpu_tests": junit_summary(work / "gpu-tests.xml"),
        "smoke": smoke_summary(work / "smoke.log", work / "smoke"),
    }
    return {k: v for k, v in figures.items() if v is not None}


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


def _fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def summary_lines(figures: dict) -> list[str]:
    """A short table of the figures the issue asks for."""
    lines = [f"== summary: {figures.get('device')} ({figures.get('nvidia_smi')})"]
    flow = figures.get("tvl1")
    if isinstance(flow, dict) and "sizes" in flow:
        bw = flow.get("copy_bandwidth_Bps")
        lines.append(f"copy bandwidth {_fmt(bw and bw / 1e12, '.2f')} TB/s")
        for label, size in flow["sizes"].items():
            ocv = size.get("opencv_cpu", {})
            agree = size.get("agreement", {})
            epes = ", ".join(
                f"{clip} {_fmt(row.get('epsilon_epe_vs_opencv_px'), '.3f')}/"
                f"{_fmt(row.get('fixed_epe_vs_opencv_px'), '.3f')}"
                for clip, row in agree.items()
            )
            lines.append(
                f"TV-L1 {label}: OpenCV best {_fmt(ocv.get('best'), '.2f')} pairs/s on "
                f"{ocv.get('cpu_cores')} cores; EPE vs OpenCV px (eps/fixed): {epes}"
            )
            for name, per in size.get("pairs_per_s", {}).items():
                cells = []
                for batch, row in per.items():
                    if "pairs_per_s" not in row:
                        cells.append(f"B{batch} {row.get('skipped', '?')}")
                        continue
                    frac = row.get("bandwidth_fraction")
                    cells.append(
                        f"B{batch} {row['pairs_per_s']:.1f} ({row['x_opencv']:.1f}x"
                        + (f", {100 * frac:.1f}%bw)" if frac is not None else ")")
                    )
                lines.append(f"  {name}: " + "; ".join(cells))
    elif isinstance(flow, dict) and flow.get("skipped"):
        lines.append(f"TV-L1: skipped ({flow['skipped']})")
    prof = figures.get("tvl1_profile")
    if isinstance(prof, dict):
        for name, v in prof.get("variants", {}).items():
            top = max(v.get("kernels", {}).items(), key=lambda kv: kv[1]["gpu_ms"], default=None)
            whole = _percent(v.get("whole_call_bandwidth_fraction"))
            inner = _percent(v.get("inner_kernel_bandwidth_fraction"))
            lines.append(
                f"TV-L1 profile {name} B={v.get('batch')} fixed: "
                f"{_fmt(v.get('graphs_pairs_per_s'), '.1f')} pairs/s, whole call "
                f"{_fmt(whole, '.1f')}% bw, inner kernel {_fmt(inner, '.1f')}% bw; top kernel "
                + (f"{top[0][:40]} {100 * (top[1].get('share') or 0):.0f}%" if top else "-")
            )
    pipe = figures.get("regions_and_pipeline")
    if isinstance(pipe, dict):
        for batch, row in pipe.get("regions", {}).items():
            cuda, cpu = row.get("cuda", {}), row.get("cpu", {})
            same = row.get("cuda_labels_equal_cpu_labels_same_maps", {})
            path = row.get("cuda_path_vs_cpu_path", {})
            lines.append(
                f"regions+boxes {batch} frames: CUDA {_fmt(cuda.get('total_ms'), '.1f')} ms, "
                f"CPU {_fmt(cpu.get('total_ms'), '.1f')} ms; boxes equal (same maps) "
                f"{same.get('equal', '-')}/{same.get('frames', '-')}, "
                f"(whole paths) {path.get('equal', '-')}/{path.get('frames', '-')}"
            )
        run = pipe.get("pipeline", {})
        clips = ", ".join(f"{c['clip']} {c['frames_per_s']:.1f}" for c in run.get("clips", []))
        lines.append(
            f"mofo boxes ({run.get('device')}): {_fmt(run.get('frames_per_s'), '.1f')} frames/s "
            f"overall; per clip frames/s: {clips}"
        )
    api = figures.get("api")
    if isinstance(api, dict):
        for cfg in api.get("configs", []):
            levels = "; ".join(
                f"c={lv['concurrency']} {lv['clips_per_s']:.2f} clips/s "
                f"{lv.get('pairs_per_s', 0):.1f} pairs/s "
                f"({_fmt(lv.get('mean_pairs_per_call'), '.1f')} pairs/call)"
                for lv in cfg.get("levels") or []
            )
            cname = (cfg.get("config") or {}).get("label", "")
            lines.append(f"API {cname}: {levels}; ratios {cfg.get('ratios')}")
    pre = figures.get("pretrain")
    if isinstance(pre, dict):
        parts = []
        for name, v in pre.get("variants", {}).items():
            if v.get("error"):
                parts.append(f"{name} FAILED")
            else:
                parts.append(
                    f"{name} {v['clips_per_s']:.0f} clips/s {_fmt(v['peak_memory_mb'], '.0f')} MB"
                )
        lines.append(
            f"pretrain {pre.get('model')} batch {pre.get('batch')}: {', '.join(parts)}; "
            f"ratio {_fmt(pre.get('ratio_ours_to_reference'), '.2f')}"
        )
    tests = figures.get("gpu_tests")
    if isinstance(tests, dict):
        lines.append(
            f"gpu tests: {tests['passed']} passed, {tests['failures']} failed, "
            f"{tests['errors']} errors, {tests['skipped']} skipped"
            + (f"; failing: {', '.join(tests['failing'][:8])}" if tests["failing"] else "")
        )
    smoke = figures.get("smoke")
    if isinstance(smoke, dict):
        lines.append(
            f"smoke: pretrain+resume {'ok' if smoke['pretrain_ok'] else 'FAILED'}, "
            f"finetune+evaluate {'ok' if smoke['finetune_evaluate_ok'] else 'FAILED'}"
        )
    for name, sec in figures.get("sections", {}).items():
        lines.append(f"  {name:10s} rc={sec['rc']!s:4s} {sec['seconds']!s:>4s} s  {sec['note']}")
    return lines


def main() -> None:
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    figures = merge(work)
    out.write_text(json.dumps(figures, indent=1, default=str) + "\n")
    if "--print" in sys.argv:
        print("\n".join(summary_lines(figures)))


if __name__ == "__main__":
    main()
