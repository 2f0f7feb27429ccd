"""``import mofo``: the library's front door, on the bundled sample clip (a real H.264 file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mofo
from mofo.shared.errors import ClipNotFound
from mofo.shared.params import preset_params
from mofo.shared.pipeline import analyse_clip

ROOT = Path(__file__).resolve().parents[2]


def test_every_public_name_is_there() -> None:
    assert sorted(mofo.__all__) == sorted(set(mofo.__all__))
    for name in mofo.__all__:
        assert getattr(mofo, name) is not None


def test_boxes_of_the_sample_are_the_pipelines_record() -> None:
    """mofo.boxes on CPU is analyse_clip with the balanced preset and OpenCV's TV-L1."""
    got = mofo.boxes(mofo.sample(), device="cpu", num_frames=6)
    want = analyse_clip(
        mofo.sample(), preset_params("balanced", backend="opencv", num_frames=6)
    ).record
    assert isinstance(got, mofo.BoxRecord)
    assert got.to_dict() == want.to_dict()
    assert len(got.frames) == 6 and got.width == 298 and got.height == 224
    x1, y1, x2, y2 = got.clip_box
    assert 0 <= x1 < x2 <= 298 and 0 <= y1 < y2 <= 224
    assert any(got.own)  # the sample's movers are found, not filled in


def test_a_preset_and_full_params_give_their_own_records() -> None:
    fast = mofo.boxes(mofo.sample(), quality="fast", device="cpu", num_frames=4)
    assert fast.params == preset_params("fast", backend="opencv", num_frames=4).hash()
    params = mofo.MotionParams(short_side=64, num_frames=4)
    assert mofo.boxes(mofo.sample(), params, device="cpu").params == params.hash()


def test_bad_calls_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either params or a quality preset"):
        mofo.boxes(mofo.sample(), mofo.MotionParams(), quality="fast")
    with pytest.raises(ValueError, match="quality must be one of"):
        mofo.boxes(mofo.sample(), quality="best", device="cpu")
    with pytest.raises(ClipNotFound) as missing:
        mofo.boxes(tmp_path / "nowhere.mp4", device="cpu")
    assert isinstance(missing.value, mofo.ClipError) and "nowhere.mp4" in str(missing.value)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(mofo.ClipError, match=r"notes\.mp4"):
        mofo.boxes(text, device="cpu")


def test_the_readme_line_runs_in_a_fresh_interpreter() -> None:
    """What the README shows a notebook user, in its own process."""
    code = (
        "import json, mofo; r = mofo.boxes(mofo.sample(), num_frames=4); "
        "print(json.dumps(r.clip_box))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    box = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(box) == 4 and box[0] < box[2] and box[1] < box[3]


def test_importing_mofo_leaves_torch_and_the_service_unloaded() -> None:
    """The command line imports the package first: ``mofo --help`` must stay quick."""
    code = (
        "import sys, mofo, mofo.cli; "
        "print(sorted(m for m in ('torch', 'mofo.services.motion_api.app', 'mofo.training.runs') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
