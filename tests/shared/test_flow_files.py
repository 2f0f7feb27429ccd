"""A clip's flow and motion maps written by ``mofo boxes --maps`` and read back: equal to the
flow computed in memory (exactly in float32, within float16's rounding in float16)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import mofo
from mofo.shared.flow_files import FORMAT, read_flow_file, write_flow_file
from mofo.shared.params import preset_params
from mofo.shared.pipeline import analyse_clip
from mofo.shared.sample import sample_clip
from testkit.server import MOFO

SAMPLE = sample_clip()
ARGS = ["--device", "cpu", "--num-frames", "4", "--short-side", "64"]


@pytest.fixture(scope="module")
def in_memory():
    params = preset_params("balanced", backend="opencv", num_frames=4, short_side=64)
    return analyse_clip(SAMPLE, params, keep_flow=True)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_written_flow_is_the_flow_in_memory(tmp_path: Path, in_memory, dtype: str) -> None:
    run = subprocess.run(
        [MOFO, "boxes", SAMPLE, *ARGS, "--maps", tmp_path, "--maps-dtype", dtype],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    got = mofo.read_flow_file(tmp_path / "sample.npz")
    flow = in_memory.analysis.flow.numpy()
    maps = in_memory.analysis.motion
    assert got.flow.dtype == np.dtype(dtype) and got.flow.shape == flow.shape == (4, 2, 64, 86)
    assert got.meta["format"] == FORMAT and got.meta["params"] == in_memory.record.params
    assert (got.meta["width"], got.meta["height"]) == (86, 64)
    assert got.frames.tolist() == in_memory.record.frame_indices
    assert got.partners.tolist() == in_memory.clip.partner_indices
    if dtype == "float32":
        np.testing.assert_array_equal(got.flow, flow)
        np.testing.assert_array_equal(got.maps, maps)
    else:  # float16: relative 2^-11 (0.05 %), and below 2 px within 0.001 px
        np.testing.assert_allclose(got.flow.astype(np.float32), flow, rtol=2**-11, atol=1e-3)
        np.testing.assert_allclose(got.maps.astype(np.float32), maps, rtol=2**-11, atol=1e-3)
    assert np.abs(flow).max() > 0.5  # the sample moves: the comparison is not of zeros


def test_bad_calls_and_foreign_files_are_refused(tmp_path: Path) -> None:
    flow = np.zeros((2, 2, 4, 5), np.float32)
    with pytest.raises(ValueError, match="dtype must be one of"):
        write_flow_file(tmp_path / "a.npz", flow, flow[:, 0], [0, 1], [1, 2], {}, "uint8")
    with pytest.raises(ValueError, match=r"flow must be \(3, 2, H, W\)"):
        write_flow_file(tmp_path / "a.npz", flow, flow[:, 0], [0, 1, 2], [1, 2, 3], {})
    np.savez(tmp_path / "other.npz", flow=flow)
    with pytest.raises(ValueError, match=r"not a mofo\.flow/1 file"):
        read_flow_file(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match=r"not a mofo\.flow/1 file"):
        read_flow_file(tmp_path / "text.npz")
    run = subprocess.run(
        [MOFO, "boxes", SAMPLE, "--maps", tmp_path / "nowhere"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "no such folder" in run.stderr
