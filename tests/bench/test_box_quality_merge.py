"""bench/box_quality.py's merge of a run that scored only some methods with an earlier run's
scores of the others (same clips), and the summary of such rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.box_quality import ClipScores, load_rows, summarise, with_baseline


def clip(scenario: str, seed: int, scores: dict) -> ClipScores:
    return ClipScores(scenario, "static", seed, scores, [], [], 1.0)


def test_missing_methods_come_from_the_baseline_and_ours_stays_this_runs(tmp_path: Path) -> None:
    every = lambda v: {"every": v}  # noqa: E731
    earlier = [
        clip("a", 2, {"ours": every(0.5), "previous": every(0.4), "paper": every(0.2)}),
        clip("a", 3, {"ours": every(0.7), "previous": every(0.6), "paper": every(0.3)}),
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"clips": [c.__dict__ for c in earlier]}))
    now = [clip("a", 3, {"ours": every(0.9)}), clip("a", 2, {"ours": every(0.8)})]
    merged = with_baseline(now, load_rows(path))
    assert [list(r.scores) for r in merged] == [["ours", "previous", "paper"]] * 2
    assert [r.scores["ours"]["every"] for r in merged] == [0.9, 0.8]
    assert [r.scores["previous"]["every"] for r in merged] == [0.6, 0.4]
    table = summarise(merged)["mean (all)"]
    assert table["ours"]["every"] == pytest.approx(0.85)
    assert table["paper"]["every"] == pytest.approx(0.25)
    with pytest.raises(SystemExit, match="no clip b seed 2"):
        with_baseline([clip("b", 2, {"ours": every(0.1)})], load_rows(path))
