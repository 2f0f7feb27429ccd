"""Work limits before decoding (working pixels x frames, the working long side), frame sizes that
change mid-stream, and files that are not files: in the library, and through ``mofo boxes`` as a
real process on the hostile corpus (one error line, no traceback, exit 1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mofo.shared.decode import WorkPlan, frames_held, plan_work, read_clip
from mofo.shared.errors import ClipNotFound, FrameSizeChanged, NotAVideo, WorkTooLarge
from mofo.shared.params import DecodeLimits, MotionParams
from mofo.shared.settings import masked_url
from testkit import badclips
from tests.hostile_corpus import write_corpus
from tests.mofo.test_cli import mofo


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(
        tmp_path_factory.mktemp("hostile"),
        ["long_tiny", "tiny", "wide", "tall", "huge", "size_change"],
    )


@pytest.mark.parametrize(
    ("count", "fps", "params", "held"),
    [
        (100, 25.0, MotionParams(), 100),  # every frame: partners are kept frames
        (100, 25.0, MotionParams(stride=10), 20),  # 10 kept, 10 partners
        (100, 25.0, MotionParams(num_frames=8), 16),
        (100, 25.0, MotionParams(fps=5), 42),  # 21 kept (0 to 4 s), 21 partners
        (9000, 15.0, MotionParams(fps=15), 9000),
        (3, 25.0, MotionParams(num_frames=64), 3),
    ],
)
def test_frames_held(count, fps, params, held):
    assert frames_held(count, fps, params) == held


def test_plan_work_from_the_header(corpus):
    params = MotionParams(num_frames=64)
    assert plan_work(corpus["long_tiny"], params) == WorkPlan(128, 128, 128)
    assert plan_work(corpus["tiny"], MotionParams(short_side=64)).pixels == 60 * 64 * 64


@pytest.mark.parametrize(
    ("name", "params", "limits", "message"),
    [
        (
            "long_tiny",
            MotionParams(),
            DecodeLimits(),
            "long_tiny_9000f_16x16.mp4: 9000 frames at working size 128x128 are 147456000 pixels "
            "of work, over the limit 64000000; sample fewer frames (stride, fps, num_frames) or "
            "lower short_side",
        ),
        (
            "tiny",
            MotionParams(short_side=448),
            DecodeLimits(max_work_pixels=10_000_000),
            "tiny_60f_16x16.mp4: 60 frames at working size 448x448 are 12042240 pixels of work, "
            "over the limit 10000000; sample fewer frames (stride, fps, num_frames) or lower "
            "short_side",
        ),
        (
            "wide",
            MotionParams(),
            DecodeLimits(),
            "wide_3840x2.mp4: aspect ratio 1920:1 (3840x2) gives a working size of 245760x128 at "
            "short side 128; the long side exceeds the limit 1024 px",
        ),
        (
            "tall",
            MotionParams(),
            DecodeLimits(max_work_side=4096),
            "tall_16x2160.mp4: aspect ratio 135:1 (16x2160) gives a working size of 128x17280 at "
            "short side 128; the long side exceeds the limit 4096 px",
        ),
    ],
    ids=["long_tiny", "tiny-448", "wide", "tall"],
)
def test_too_much_work_is_refused_before_decoding(corpus, name, params, limits, message):
    for refuse in (plan_work, read_clip):
        with pytest.raises(WorkTooLarge) as exc:
            refuse(corpus[name], params, limits)
        assert str(exc.value) == message


def test_a_stream_that_changes_frame_size_is_refused(corpus):
    with pytest.raises(FrameSizeChanged) as exc:
        read_clip(corpus["size_change"], MotionParams(short_side=32))
    assert str(exc.value) == (
        "size_change_64x64_128x32.ts: frame 15 is 128x32, the stream began at 64x64; clips whose "
        "frame size changes are not supported"
    )
    # The frames before the change are a clip like any other.
    clip = read_clip(corpus["size_change"], MotionParams(short_side=32), segment=(0, 15))
    assert clip.frames.shape == (15, 32, 32, 3)


def test_named_clips_never_show_a_server_path(tmp_path):
    with pytest.raises(ClipNotFound) as exc:
        read_clip(tmp_path / "gone.mp4", name="clips/gone.mp4")
    assert str(exc.value) == "clips/gone.mp4: no such file"
    with pytest.raises(ClipNotFound) as exc:
        read_clip(tmp_path, name="clips")
    assert str(exc.value) == "clips: is a directory, not a video file"
    with pytest.raises(ClipNotFound) as exc:  # the CLI's messages keep the path as given
        read_clip(tmp_path / "gone.mp4")
    assert str(exc.value) == f"gone.mp4: no such file: {tmp_path / 'gone.mp4'}"


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_special_files_say_what_they_are(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "clip.mp4"
        os.mkfifo(path)
        expected = f"clip.mp4: is a named pipe (FIFO), not a regular file: {path}"
    else:
        path = Path(kind)
        expected = "zero: is a character device, not a regular file: /dev/zero"
    with pytest.raises(NotAVideo) as exc:
        read_clip(path)
    assert str(exc.value) == expected


# -- the CLI on the hostile corpus --------------------------------------------------------------


def _one_error_line(run, message: str) -> None:
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.splitlines() == [f"error: {message}", "1 of 1 clips failed"]
    assert run.stdout == ""


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "long_tiny",
            [],
            "long_tiny_9000f_16x16.mp4: 9000 frames at working size 128x128 are 147456000 pixels "
            "of work, over the limit 64000000; sample fewer frames (stride, fps, num_frames) or "
            "lower short_side",
        ),
        (
            "tiny",
            ["--short-side", "2048"],
            "tiny_60f_16x16.mp4: aspect ratio 1:1 (16x16) gives a working size of 2048x2048 at "
            "short side 2048; the long side exceeds the limit 1024 px",
        ),
        (
            "wide",
            [],
            "wide_3840x2.mp4: aspect ratio 1920:1 (3840x2) gives a working size of 245760x128 at "
            "short side 128; the long side exceeds the limit 1024 px",
        ),
        (
            "tall",
            [],
            "tall_16x2160.mp4: aspect ratio 135:1 (16x2160) gives a working size of 128x17280 at "
            "short side 128; the long side exceeds the limit 1024 px",
        ),
        (
            "huge",
            ["--max-width", "3840", "--max-height", "2160"],
            "huge_4096x4096.mp4: resolution 4096x4096 exceeds the limit 3840x2160",
        ),
        (
            "size_change",
            [],
            "size_change_64x64_128x32.ts: frame 15 is 128x32, the stream began at 64x64; clips "
            "whose frame size changes are not supported",
        ),
    ],
    ids=["long_tiny", "tiny-2048", "wide", "tall", "huge", "size_change"],
)
def test_cli_refuses_the_hostile_corpus_in_one_line(corpus, name, options, message):
    _one_error_line(mofo("boxes", "--quiet", *options, corpus[name]), message)


def test_cli_says_what_a_fifo_or_dev_zero_is(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    run = mofo("boxes", "--quiet", fifo)  # nothing writes to it: it must not be opened
    _one_error_line(run, f"pipe.mp4: is a named pipe (FIFO), not a regular file: {fifo}")
    run = mofo("boxes", "--quiet", "/dev/zero")
    _one_error_line(run, "zero: is a character device, not a regular file: /dev/zero")


def test_cli_today_bad_inputs_stay_one_line(tmp_path):
    run = mofo("boxes", "--quiet", badclips.empty_file(tmp_path))
    _one_error_line(run, "empty.mp4: is empty (0 bytes)")


# -- a Redis URL's password is never printed ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@127.0.0.1:6379/0", "redis://user:***@127.0.0.1:6379/0"),
        ("redis://:s3cret@h:notaport/0", "redis://:***@h:notaport/0"),
        ("http://u:s3cret@x", "http://u:***@x"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
    ],
)
def test_masked_url(url, shown):
    assert masked_url(url) == shown


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://u:s3cret@x",
            "bad settings: redis_url: Value error, redis URL must start with "
            "redis://, rediss:// or unix://: 'http://u:***@x'",
        ),
        (
            "redis://u:s3cret@127.0.0.1:notaport/0",
            "bad settings: redis_url: Value error, redis "
            "URL 'redis://u:***@127.0.0.1:notaport/0' is not valid: Port could not be cast to "
            "integer value as 'notaport'",
        ),
    ],
)
def test_serve_with_a_bad_redis_url_hides_its_password(url, message):
    run = mofo("serve", "--redis", url)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"error: {message}"]
    assert "s3cret" not in run.stderr + run.stdout
