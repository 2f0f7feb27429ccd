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


def test_masks_and_the_cache_file_reader_load_when_first_used(tmp_path: Path) -> None:
    """The names a training notebook needs come from the front door too, loaded on first use."""
    import torch

    from mofo.shared.cache_files import write_records

    grid = mofo.TokenGrid()
    boxes = torch.tensor([[32.0, 48.0, 160.0, 176.0], [0.0, 0.0, 0.0, 0.0]])
    inside = mofo.box_cells(boxes, torch.tensor([True, False]), grid)
    hidden = mofo.mofo_mask(inside, grid, ratio=0.9, inside_ratio=0.75)
    tokens = grid.frames // grid.tubelet * (grid.height // grid.patch) * (grid.width // grid.patch)
    assert hidden.shape == (2, tokens) and hidden.dtype == torch.bool
    per_slot = int(0.9 * (224 // 16) ** 2)
    assert hidden.sum(dim=1).tolist() == [8 * per_slot, 8 * per_slot]
    assert mofo.tube_mask(2, grid, 0.9).shape == (2, tokens)
    record = mofo.boxes(mofo.sample(), device="cpu", num_frames=4)
    write_records(tmp_path / "boxes.jsonl.gz", [record])
    cache = mofo.open_box_cache(str(tmp_path / "boxes.jsonl.gz"))
    assert cache.get(record.video, record.params) == record
    with pytest.raises(AttributeError, match="no attribute 'mask'"):
        mofo.mask  # noqa: B018
