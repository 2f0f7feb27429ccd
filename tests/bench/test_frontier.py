"""bench/frontier.py: the speed probe alone, on real frame pairs."""

from __future__ import annotations

import re

import pytest

from bench.frontier import main, print_speeds


def test_speed_only_measures_each_setting_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--speed-only", "--only", "fast", "balanced", "--speed-pairs", "2"]) == 0
    out = capsys.readouterr().out
    rates = dict(re.findall(r"^(\w+)\s+([\d.]+) pairs/s", out, flags=re.M))
    assert set(rates) == {"fast", "balanced"}
    assert all(float(v) > 0 for v in rates.values())
    assert "x paper" not in out  # no reference measured


def test_speeds_are_given_against_paper(capsys: pytest.CaptureFixture[str]) -> None:
    print_speeds({"paper": 0.5, "fast": 6.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["paper", "0.50", "pairs/s", "1.00x", "paper"]
    assert lines[1].split() == ["fast", "6.00", "pairs/s", "12.00x", "paper"]
