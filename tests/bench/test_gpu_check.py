"""The GPU check's pure helpers: byte counts and bandwidth names (bench/gpu_flow.py), box
comparison (bench/gpu_pipeline.py), crops of real frames (bench/realframes.py), the merged report
(bench/gpu_report.py) and the library stubs that make its packages fit (bench/gpu_pack.py)."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.gpu_flow import (
    INNER_BYTES_PER_PIXEL,
    fixed_replays,
    inner_bytes,
    nominal_bandwidth,
    parse_size,
    size_label,
)
from bench.gpu_pipeline import box_difference
from bench.gpu_report import junit_summary, merge, read_sections, summary_lines
from bench.realframes import centre_crop, cover_short_side
from mofo.shared.flow.tvl1 import pyramid_sizes
from mofo.shared.params import FlowParams


def test_inner_iteration_moves_16_floats_per_pixel() -> None:
    # read u, px, py, grad_i (2 channels each), grad_sq, rho_c; write u, px, py
    assert INNER_BYTES_PER_PIXEL == 4 * (10 + 6)


def test_inner_bytes_sums_levels_times_replays() -> None:
    replays = {(10, 20): 3, (8, 16): 5}
    expected = (3 * 10 * 20 + 5 * 8 * 16) * 30 * 4 * INNER_BYTES_PER_PIXEL
    assert inner_bytes(replays, batch=4, inner_iterations=30) == expected
    assert inner_bytes({}, batch=4, inner_iterations=30) == 0


def test_fixed_replays_are_warps_times_outer_at_every_level() -> None:
    params = FlowParams(stopping="fixed")
    replays = fixed_replays(224, 224, params)
    assert list(replays) == pyramid_sizes(224, 224, params.scales, params.scale_step)
    assert set(replays.values()) == {params.warps * params.outer_iterations}


@pytest.mark.parametrize(
    ("name", "bandwidth"),
    [
        ("NVIDIA H200", 4.8e12),
        ("NVIDIA H100 80GB HBM3", 3.35e12),
        ("NVIDIA H100 PCIe", 2.0e12),
        ("NVIDIA H100 NVL", 3.9e12),
        ("Tesla T4", None),
    ],
)
def test_nominal_bandwidth(name: str, bandwidth: float | None) -> None:
    assert nominal_bandwidth(name) == bandwidth


def test_sizes_are_height_by_width_and_labelled_width_first() -> None:
    assert parse_size("240x320") == (240, 320)
    assert size_label((240, 320)) == "320x240"


def test_box_difference_counts_equal_frames_and_worst_coordinate() -> None:
    a = [[0, 0, 10, 10], None, [5, 5, 9, 9]]
    b = [[0, 0, 10, 12], None, [5, 5, 9, 9]]
    assert box_difference(a, b) == {"equal": 2, "frames": 3, "max_coordinate_diff": 2}
    assert box_difference([None], [[0, 0, 1, 1]])["max_coordinate_diff"] == 10**6


def test_cover_short_side_then_centre_crop() -> None:
    # carphone is 176x144: to cover 320x240 its short side must become 262 (width 320 + 2)
    short = cover_short_side(144, 176, 240, 320)
    assert short == 262 and round(176 * short / 144) >= 320
    assert cover_short_side(272, 640, 224, 224) == 224
    frames = np.arange(2 * 6 * 8 * 3).reshape(2, 6, 8, 3).astype(np.uint8)
    crop = centre_crop(frames, 4, 4)
    assert crop.shape == (2, 4, 4, 3) and crop.flags.c_contiguous
    assert (crop == frames[:, 1:5, 2:6]).all()
    with pytest.raises(ValueError, match="cannot crop 6x8 frames to 7x4"):
        centre_crop(frames, 7, 4)


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1"
failures="1" skipped="2" tests="6"><testcase classname="tests.a" name="test_ok"/>
<testcase classname="tests.a" name="test_bad"><failure message="x"/></testcase>
<testcase classname="tests.b" name="test_broken"><error message="y"/></testcase>
</testsuite></testsuites>"""


def test_junit_summary(tmp_path: Path) -> None:
    (tmp_path / "t.xml").write_text(JUNIT)
    summary = junit_summary(tmp_path / "t.xml")
    assert summary == {
        "tests": 6,
        "failures": 1,
        "errors": 1,
        "skipped": 2,
        "passed": 2,
        "failing": ["tests.a::test_bad", "tests.b::test_broken"],
    }
    assert junit_summary(tmp_path / "missing.xml") is None


def test_merge_keeps_what_exists_and_summarises(tmp_path: Path) -> None:
    (tmp_path / "sections.tsv").write_text(
        "setup\t0\t9\tok\nflow\t124\t190\ttimed out after 190 s\n"
    )
    (tmp_path / "versions.json").write_text(json.dumps({"device": "NVIDIA H200", "date": "d"}))
    flow = {
        "copy_bandwidth_Bps": 4.3e12,
        "sizes": {
            "224x224": {
                "opencv_cpu": {"best": 5.0, "cpu_cores": 16},
                "agreement": {
                    "bikes": {"epsilon_epe_vs_opencv_px": 0.02, "fixed_epe_vs_opencv_px": 0.1}
                },
                "pairs_per_s": {
                    "compiled+graphs/fixed": {
                        "1": {"pairs_per_s": 10.0, "x_opencv": 2.0, "bandwidth_fraction": 0.01},
                        "128": {"skipped": "budget"},
                    }
                },
            }
        },
    }
    (tmp_path / "gpu_flow.json").write_text(json.dumps(flow))
    (tmp_path / "gpu-tests.xml").write_text(JUNIT)
    (tmp_path / "smoke.log").write_text("step 2 loss 1.0\nsmoke: ok\n")
    figures = merge(tmp_path)
    assert figures["device"] == "NVIDIA H200"
    assert figures["sections"]["flow"] == {
        "rc": 124,
        "seconds": 190,
        "note": "timed out after 190 s",
    }
    assert figures["tvl1"] == flow
    assert figures["smoke"] == {"pretrain_ok": True, "finetune_evaluate_ok": False}
    assert "api" not in figures and "pretrain" not in figures
    text = "\n".join(summary_lines(figures))
    assert "B1 10.0 (2.0x, 1.0%bw); B128 budget" in text
    assert "gpu tests: 2 passed, 1 failed, 1 errors, 2 skipped" in text
    assert "finetune+evaluate FAILED" in text
    assert read_sections(tmp_path / "none.tsv") == {}


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("readelf")), reason="needs gcc")
@pytest.mark.parametrize("calls", ["null", "trap"])
def test_stub_library_exports_the_same_versioned_symbols(tmp_path: Path, calls: str) -> None:
    from bench.gpu_pack import dynamic_symbols, soname, write_stub

    source = tmp_path / "real.c"
    source.write_text("int answer(void) { return 42; }\nint table[8] = {1};\n")
    (tmp_path / "real.map").write_text("REAL_1 { global: answer; table; local: *; };\n")
    lib = tmp_path / "libreal.so.1"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(lib), str(source), "-Wl,-soname,libreal.so.1",
         f"-Wl,--version-script={tmp_path / 'real.map'}"],
        check=True,
    )  # fmt: skip
    before = dynamic_symbols(lib)
    assert {(n, k, v) for n, k, _, v in before} == {
        ("answer", "FUNC", "REAL_1"),
        ("table", "OBJECT", "REAL_1"),
    }
    work = tmp_path / "work"
    work.mkdir()
    assert write_stub(lib, work, calls) == len(before)
    after = dynamic_symbols(lib)
    assert {(n, k, v) for n, k, _, v in after} == {(n, k, v) for n, k, _, v in before}
    assert dict((n, s) for n, k, s, _ in after if k == "OBJECT")["table"] == 32
    assert soname(lib) == "libreal.so.1"
    if calls == "null":
        assert ctypes.CDLL(str(lib)).answer() == 0
    else:
        probe = f"import ctypes; ctypes.CDLL({str(lib)!r}).answer()"
        run = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=False
        )
        assert run.returncode == -4  # SIGILL
        assert "stub called: answer (libreal.so.1)" in run.stderr


def test_regions_figures_compare_two_devices() -> None:
    """The CUDA branch's bookkeeping, with the CPU standing in for the GPU."""
    import torch

    from bench.gpu_pipeline import regions_figures

    flow = torch.zeros(3, 2, 48, 48)
    flow[:, 0, 16:32, 16:32] = 3.0  # a moving square
    out = regions_figures(flow, [4], reps=1, fast=torch.device("cpu"))
    row = out["4"]
    assert row["frames"] == 4 and row["size"] == [48, 48]
    assert row["cuda"]["frames_with_box"] == row["cpu"]["frames_with_box"] == 4
    assert row["cuda_labels_equal_cpu_labels_same_maps"]["equal"] == 4
    assert row["cuda_path_vs_cpu_path"] == {"equal": 4, "frames": 4, "max_coordinate_diff": 0}
    assert row["maps_max_abs_diff"] == 0.0
