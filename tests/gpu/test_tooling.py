"""The GPU check's tooling: the merged report of its sections (gpu/report.py) and the library
stubs that make the packages it installs small (gpu/pack.py)."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpu.report import junit_summary, merge, read_sections, summary_lines

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
    from gpu.pack import dynamic_symbols, soname, write_stub

    source = tmp_path / "real.c"
    source.write_text("int answer(void) { return 42; }\nint table[8] = {1};\n")
    (tmp_path / "real.map").write_text("REAL_1 { global: answer; table; local: *; };\n")
    lib = tmp_path / "libreal.so.1"
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-o",
            str(lib),
            str(source),
            "-Wl,-soname,libreal.so.1",
            f"-Wl,--version-script={tmp_path / 'real.map'}",
        ],
        check=True,
    )
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
