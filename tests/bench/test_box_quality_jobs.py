"""bench/box_quality.py scores clips in several processes: the same scores, in the same order,
as one process, and a flow cache of whole files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import box_quality
from bench.box_quality import main, score_clips, suite
from mofo.shared.params import preset_params


def test_clips_scored_in_two_processes_match_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "flows"
    monkeypatch.setenv("MOFO_FLOW_CACHE", str(cache))  # the worker processes read it at import
    monkeypatch.setattr(box_quality, "FLOW_CACHE", cache)
    scenes = {s.name: s for s in suite("classic")}
    params = preset_params("fast", short_side=48)
    jobs = [(scenes[name], 0, params, None, ["ours"]) for name in ("pan-1mover", "static-1mover")]
    parallel = score_clips(jobs, workers=2)  # computes and saves the flows
    serial = score_clips(jobs, workers=1)  # reads them back
    assert [(r.scenario, r.seed) for r in parallel] == [("pan-1mover", 0), ("static-1mover", 0)]
    assert [r.scores for r in parallel] == [r.scores for r in serial]
    assert all(0.0 < r.scores["ours"]["every"] <= 1.0 for r in parallel)
    assert len(list(cache.glob("*.pt"))) == 2
    assert not list(cache.glob("*.tmp"))


def test_jobs_below_one_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--jobs", "0"])
    assert exit_info.value.code == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err
