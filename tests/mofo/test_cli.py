"""Tests for the ``mofo`` command line, run as real processes (the console script next to the
interpreter), on tiny clips at ``--short-side 32`` so each run stays within a few seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from mofo.shared.sample import sample_clip
from testkit import badclips
from testkit.server import MOFO as MOFO_SCRIPT

MOFO = Path(MOFO_SCRIPT)
SAMPLE = sample_clip()

RECORD_KEYS = {
    "schema",
    "video",
    "params",
    "width",
    "height",
    "fps",
    "frame_indices",
    "frames",
    "clip_box",
    "fallback",
    "own",
    "cuts",
}
FAST = ["--short-side", "32"]


def mofo(
    *args: str | Path, cwd: Path | None = None, terminal: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``mofo ARGS`` with a plain environment (no forced colours or terminal width); with
    ``terminal``, stderr is treated as a terminal (Rich's TTY_COMPATIBLE)."""
    plain = ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")
    env = {k: v for k, v in os.environ.items() if k not in plain}
    if terminal:
        env["TTY_COMPATIBLE"] = "1"
    return subprocess.run(
        [str(MOFO), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def check_clean_failure(run: subprocess.CompletedProcess[str], code: int) -> None:
    assert run.returncode == code, run.stderr
    assert "error:" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two valid 96×64 mp4s of a moving textured square: 6 and 5 frames."""
    d = tmp_path_factory.mktemp("clips")
    return badclips.small_clip(d, frames=6), badclips.small_clip(d, frames=5)


def check_record(rec: dict, path: Path, frames: int) -> None:
    assert set(rec) == RECORD_KEYS
    assert rec["schema"] == "mofo.box/2"
    assert rec["video"] == str(path)
    assert (rec["width"], rec["height"]) == (96, 64)
    assert rec["fps"] == pytest.approx(25.0)
    assert rec["frame_indices"] == list(range(frames))
    assert len(rec["frames"]) == frames
    assert isinstance(rec["params"], str) and len(rec["params"]) == 16
    assert isinstance(rec["fallback"], bool)
    for box in [*rec["frames"], rec["clip_box"]]:
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= 96
        assert 0 <= y1 < y2 <= 64


# --------------------------------------------------------------------------- good runs


def test_json_one_line_per_clip(clips: tuple[Path, Path]) -> None:
    run = mofo("boxes", clips[0], "--json", *FAST)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout.endswith("\n")
    (rec,) = records(run.stdout)
    check_record(rec, clips[0], 6)
    assert rec["fallback"] is False


def test_two_clips_two_lines_in_order(clips: tuple[Path, Path]) -> None:
    run = mofo("boxes", clips[1], clips[0], "--json", *FAST, "--quiet")
    assert run.returncode == 0, run.stderr
    first, second = records(run.stdout)
    check_record(first, clips[1], 5)
    check_record(second, clips[0], 6)
    assert first["params"] == second["params"]


def test_plain_output(clips: tuple[Path, Path]) -> None:
    run = mofo("boxes", clips[0], *FAST)
    assert run.returncode == 0, run.stderr
    (line,) = run.stdout.splitlines()
    assert line.split("\t")[:3] == [str(clips[0]), "96x64", "6 frames"]
    assert "clip_box=[" in line


def test_preview_and_motion_map_files(clips: tuple[Path, Path], tmp_path: Path) -> None:
    gif, png = tmp_path / "out.gif", tmp_path / "out.png"
    run = mofo("boxes", clips[0], "--json", *FAST, "--preview", gif, "--motion-map", png)
    assert run.returncode == 0, run.stderr
    assert len(records(run.stdout)) == 1
    with Image.open(gif) as im:
        assert im.format == "GIF"
        assert im.n_frames == 6
    with Image.open(png) as im:
        assert im.format == "PNG"
        assert im.width > 0 and im.height > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gif", "out.png"]


def test_two_clips_name_their_outputs(clips: tuple[Path, Path], tmp_path: Path) -> None:
    gif, png = tmp_path / "out.gif", tmp_path / "m.png"
    run = mofo("boxes", *clips, *FAST, "--preview", gif, "--motion-map", png)
    assert run.returncode == 0, run.stderr
    stems = [c.stem for c in clips]
    expected = sorted([*(f"out-{s}.gif" for s in stems), *(f"m-{s}.png" for s in stems)])
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    for path in tmp_path.iterdir():
        with Image.open(path) as im:
            assert im.format == ("GIF" if path.suffix == ".gif" else "PNG")


# --------------------------------------------------------------------------- bad clips


def text_file(d: Path) -> Path:
    path = d / "notes.txt"
    path.write_text("hello, this is not a video\n")
    return path


def missing(d: Path) -> Path:
    return d / "missing.mp4"


BAD = {
    "empty": badclips.empty_file,
    "random": badclips.random_bytes,
    "png": badclips.image_file,
    "text": text_file,
    "missing": missing,
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_clip_fails_cleanly(kind: str, tmp_path: Path) -> None:
    bad = BAD[kind](tmp_path)
    run = mofo("boxes", bad, "--json", *FAST)
    check_clean_failure(run, 1)
    assert bad.name in run.stderr
    assert run.stdout == ""
    assert "1 of 1 clips failed" in run.stderr


def test_good_clips_still_printed_around_a_bad_one(
    clips: tuple[Path, Path], tmp_path: Path
) -> None:
    bad = badclips.random_bytes(tmp_path)
    run = mofo("boxes", clips[0], bad, clips[1], "--json", *FAST)
    check_clean_failure(run, 1)
    assert bad.name in run.stderr
    first, second = records(run.stdout)
    check_record(first, clips[0], 6)
    check_record(second, clips[1], 5)
    assert "1 of 3 clips failed" in run.stderr


def test_every_bad_input_fails_alone(clips: tuple[Path, Path], tmp_path: Path) -> None:
    """The issue's list of bad inputs, in one multi-clip run between two good clips: each bad one
    gets one error line naming it and saying why; the good ones are still printed."""
    bad = {
        badclips.empty_file(tmp_path): "is empty",
        badclips.random_bytes(tmp_path): "is not a readable video",
        badclips.truncated_mp4(tmp_path, keep=0.4): "truncated",
        badclips.image_file(tmp_path): "is an image, not a video",
        badclips.audio_only(tmp_path): "has no video stream",
        badclips.one_frame_clip(tmp_path): "has 1 frame; motion needs at least 2",
        badclips.huge_resolution_clip(tmp_path, size=(320, 240)): "exceeds the limit 200x200",
    }
    limits = ("--max-width", "200", "--max-height", "200")
    run = mofo("boxes", clips[0], *bad, clips[1], "--json", *FAST, *limits)
    check_clean_failure(run, 1)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad)
    for (path, why), line in zip(bad.items(), errors, strict=True):
        assert line.startswith(f"error: {path.name}: "), line
        assert why in line, line
    first, second = records(run.stdout)
    check_record(first, clips[0], 6)
    check_record(second, clips[1], 5)
    assert f"{len(bad)} of {len(bad) + 2} clips failed" in run.stderr


def test_long_clip_name_stays_on_one_line(tmp_path: Path) -> None:
    bad = tmp_path / ("a_long_descriptive_clip_name_" * 4 + "end.mp4")
    bad.write_bytes(b"")
    run = mofo("boxes", bad, "--json", *FAST)
    check_clean_failure(run, 1)
    assert f"error: {bad.name}: is empty" in run.stderr


# --------------------------------------------------------------------------- usage errors


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_device_cuda_without_cuda(clips: tuple[Path, Path]) -> None:
    run = mofo("boxes", clips[0], "--json", *FAST, "--device", "cuda")
    check_clean_failure(run, 2)
    assert "CUDA is not available" in run.stderr
    assert run.stdout == ""


def test_missing_output_folder_fails_before_any_work(
    clips: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "no-such-folder" / "out.png"
    run = mofo("boxes", clips[0], "--json", *FAST, "--motion-map", out)
    check_clean_failure(run, 2)
    assert "does not exist" in run.stderr and "no-such-folder" in run.stderr
    assert run.stdout == ""
    assert not out.parent.exists()


def test_bad_preview_suffix(clips: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    run = mofo("boxes", clips[0], "--json", *FAST, "--preview", out)
    check_clean_failure(run, 2)
    assert "out.txt" in run.stderr and ".gif or .mp4" in run.stderr
    assert run.stdout == ""
    assert not out.exists()


def test_fixed_stopping_needs_torch_backend(clips: tuple[Path, Path]) -> None:
    run = mofo("boxes", clips[0], *FAST, "--backend", "opencv", "--stopping", "fixed")
    check_clean_failure(run, 2)
    assert "--stopping fixed" in run.stderr
    assert run.stdout == ""


def test_short_side_too_small(clips: tuple[Path, Path]) -> None:
    run = mofo("boxes", clips[0], "--short-side", "16")
    check_clean_failure(run, 2)
    assert "short_side" in run.stderr


def test_sample_prints_a_path() -> None:
    run = mofo("sample")
    assert run.returncode == 0, run.stderr
    (line,) = run.stdout.splitlines()
    path = Path(line)
    assert path.is_absolute()
    assert path.name == "sample.mp4"
    assert path.parent.name == "data"
    bundled = Path(__file__).resolve().parents[2] / "shared" / "data" / "sample.mp4"
    if not bundled.exists():
        pytest.skip("shared/data/sample.mp4 is not there yet")
    assert path.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data-root", "/no/such/folder"], "bad settings: data_root: Value error, data root "),
        (["--redis", "http://x"], "bad settings: redis_url: Value error, redis URL must start"),
        (["--port", "70000"], "bad settings: port: Input should be less than or equal to 65535"),
        (["--device", "cuda"], "device 'cuda' asked for, but CUDA is not available here"),
    ],
)
def test_serve_refuses_bad_settings(args: list[str], message: str) -> None:
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    run = mofo("serve", *args)
    check_clean_failure(run, 2)
    assert message in run.stderr


@pytest.mark.parametrize(
    "command",
    [["serve"], ["worker", "--redis", "redis://127.0.0.1:1/0"], ["boxes", str(SAMPLE)]],
    ids=["serve", "worker", "boxes"],
)
def test_a_bad_tvl1_kernel_stops_serve_worker_and_boxes_at_start(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MOFO_TVL1_KERNEL is checked before anything starts (the worker never reaches its Redis,
    here a port where none listens; boxes decodes nothing), not at the first flow call on a
    GPU; serve and worker read it as a setting, boxes as the same variable."""
    monkeypatch.setenv("MOFO_TVL1_KERNEL", "cudnn")
    run = mofo(*command)
    check_clean_failure(run, 2)
    assert "bad settings: tvl1_kernel: Input should be 'triton' or 'compiled'" in run.stderr


def test_one_clip_shows_its_frame_pairs_on_a_terminal(clips: tuple[Path, Path]) -> None:
    """A single long clip shows how many of its frame pairs are done, on a terminal only."""
    shown = mofo("boxes", clips[0], *FAST, terminal=True)
    assert shown.returncode == 0, shown.stderr
    assert "frame pairs" in shown.stderr and "6/6" in shown.stderr
    assert "motion boxes" not in shown.stderr  # the per-clip bar is for several clips
    piped = mofo("boxes", clips[0], *FAST)
    assert piped.returncode == 0 and piped.stderr == ""
    quiet = mofo("boxes", clips[0], *FAST, "-q", terminal=True)
    assert "frame pairs" not in quiet.stderr


def test_version_names_the_package_and_the_algorithm() -> None:
    from importlib.metadata import version

    from mofo.shared.params import ALGORITHM_VERSION

    run = mofo("--version")
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"mofo {version('mofo')} (algorithm version {ALGORITHM_VERSION})\n"


@pytest.mark.parametrize(
    ("command", "text"),
    [
        (["serve", "--help"], "Bind address [env MOFO_HOST]."),
        (["evaluate", "--help"], "([evaluate] of the finetuning config)"),
        (["cache", "export", "--help"], "[env MOFO_REDIS_URL]"),
        (["--help"], "--show-completion <bash|zsh|fish|powershell|pwsh>"),
        (["flow", "--help"], "OUT/STEM.npz in the format mofo.flow/1"),
    ],
)
def test_help_is_plain_text_that_keeps_its_brackets(command: list[str], text: str) -> None:
    """Help is read in terminals, logs and pipes: brackets are text (not markup), flags show
    no type, and no box-drawing characters frame it."""
    run = mofo(*command)
    assert run.returncode == 0, run.stderr
    flat = " ".join(run.stdout.split())
    assert text in flat
    assert "<bool>" not in run.stdout
    assert not set("╭╮╰╯│─") & set(run.stdout)


def test_a_folder_stands_for_its_clips_as_cache_build_finds_them(tmp_path: Path) -> None:
    """``mofo boxes DIR`` boxes the video files under DIR (recursively, sorted, other files
    and hidden ones left out), as ``mofo cache build DIR`` would; an empty folder is exit 2."""
    (tmp_path / "clips" / "b").mkdir(parents=True)
    for name in ("a.mp4", "b/c.mp4", ".hidden.mp4"):
        (tmp_path / "clips" / name).write_bytes(SAMPLE.read_bytes())
    (tmp_path / "clips" / "notes.txt").write_text("not a clip")
    run = mofo("boxes", tmp_path / "clips", "--json", "--num-frames", "3", *FAST)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    clips = tmp_path / "clips"
    assert [r["video"] for r in records] == [str(clips / "a.mp4"), str(clips / "b" / "c.mp4")]
    assert records[0]["clip_box"] == records[1]["clip_box"]  # the same clip twice
    (tmp_path / "empty").mkdir()
    empty = mofo("boxes", tmp_path / "empty")
    check_clean_failure(empty, 2)
    assert "no video files" in empty.stderr


def test_standard_input_is_a_clip_named_dash() -> None:
    """``mofo boxes -`` reads one clip's bytes from standard input: the same record as the file
    (named ``-``), refused past --max-bytes and when not a video, and named at most once."""

    def piped(*args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(MOFO), "boxes", *args], input=data, capture_output=True, timeout=120
        )

    flags = ["--json", "--num-frames", "3", *FAST]
    from_file = records(mofo("boxes", SAMPLE, *flags).stdout)[0]
    run = piped("-", *flags, data=SAMPLE.read_bytes())
    assert run.returncode == 0, run.stderr
    from_stdin = json.loads(run.stdout)
    assert from_stdin["video"] == "-"
    assert {**from_stdin, "video": from_file["video"]} == from_file
    big = piped("-", "--max-bytes", "1000", data=SAMPLE.read_bytes())
    assert big.returncode == 1 and b"standard input is over 1000 bytes" in big.stderr
    text = piped("-", data=b"not a video\n")
    assert text.returncode == 1 and b"-: is not a readable video" in text.stderr
    twice = piped("-", "-", data=b"")
    assert twice.returncode == 2 and b"can be named once" in twice.stderr


# --------------------------------------------------------------------------- shell completion


def completions(words: str, env: dict[str, str] | None = None) -> list[str]:
    """What ``mofo`` offers for the last of ``words``, asked as the bash script asks it."""
    line = words.split(" ")
    run = subprocess.run(
        [str(MOFO)],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "_MOFO_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(line) - 1),
            **(env or {}),
        },
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def test_completion_offers_commands_options_and_choices() -> None:
    assert completions("mofo bo") == ["boxes"]
    assert completions("mofo fl") == ["flow"]
    assert "--quality" in completions("mofo boxes --qu")
    assert completions("mofo boxes --quality ") == ["fast", "balanced", "paper"]
    assert completions("mofo flow clip.mp4 --dt") == ["--dtype"]
    assert completions("mofo cache st") == ["status"]


@pytest.mark.parametrize(
    ("shell", "text"),
    [
        ("bash", "complete -o default -F _mofo_completion mofo"),
        ("zsh", "compdef _mofo_completion mofo"),
        ("fish", "complete --command mofo"),
    ],
)
def test_show_completion_prints_the_named_shells_script(shell: str, text: str) -> None:
    """The shell is named, never guessed from the parent processes (there may be none: a
    container, a script)."""
    run = mofo("--show-completion", shell)
    assert run.returncode == 0, run.stderr
    assert text in run.stdout
    assert "_MOFO_COMPLETE=complete_" in run.stdout


def test_the_bash_script_completes_in_bash(tmp_path: Path) -> None:
    """The printed script, loaded into a real bash, completes a command and an option."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    script = tmp_path / "mofo.bash"
    script.write_text(mofo("--show-completion", "bash").stdout)
    ask = (
        'source "$1"; COMP_WORDS=($2); COMP_CWORD=$3; _mofo_completion mofo; echo "${COMPREPLY[*]}"'
    )
    path = f"{MOFO.parent}{os.pathsep}{os.environ['PATH']}"  # the script runs `mofo` by name

    def complete(words: str) -> str:
        cword = str(len(words.split()) - (0 if words.endswith(" ") else 1))
        run = subprocess.run(
            [bash, "-c", ask, "bash", str(script), words, cword],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PATH": path},
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    assert complete("mofo bo") == "boxes"
    assert complete("mofo boxes --qual") == "--quality"


def test_install_completion_writes_the_script_and_loads_it_from_bashrc(tmp_path: Path) -> None:
    run = subprocess.run(
        [str(MOFO), "--install-completion", "bash"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr
    script = tmp_path / ".bash_completions" / "mofo.sh"
    assert "complete -o default -F _mofo_completion mofo" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()


def test_completion_needs_a_shell_named() -> None:
    run = mofo("--show-completion")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "Option '--show-completion' requires an argument" in run.stderr
    wrong = mofo("--show-completion", "tcsh")
    assert wrong.returncode == 2 and "'tcsh' is not one of 'bash', 'zsh'" in wrong.stderr
