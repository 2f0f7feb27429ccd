"""`bench/box_quality.py --set`: MotionParams fields over the preset, TV-L1 ones as flow.NAME."""

from __future__ import annotations

import pytest

from bench.box_quality import main, parse_overrides, with_overrides
from mofo.shared.params import preset_params


def test_overrides_set_motion_and_flow_fields_and_keep_the_rest() -> None:
    base = preset_params("balanced")
    params = with_overrides(
        base, parse_overrides(["refine_fraction=0.3", "flow.exposure=off", "short_side=96"])
    )
    assert (params.refine_fraction, params.short_side) == (0.3, 96)
    assert params.flow.exposure == "off" and base.flow.exposure == "gain"
    assert params.flow.warps == base.flow.warps == 3
    assert params.threshold_rel == base.threshold_rel


def test_values_are_json_else_strings() -> None:
    assert parse_overrides(["refine=false", "fps=null", "backend=opencv"]) == {
        "refine": False,
        "fps": None,
        "backend": "opencv",
    }


@pytest.mark.parametrize(
    "item", ["refine_fraction=-1", "no_such_field=1", "flow.warps=0", "missing-equals"]
)
def test_a_bad_override_is_a_usage_error(item: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--only", "static-1mover", "--split", "train", "--set", item])
    assert stop.value.code == 2
    assert "error:" in capsys.readouterr().err
