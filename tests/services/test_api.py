"""The motion API over real HTTP: a real ``mofo serve`` process, real clips, httpx.

Every endpoint, and every error the API names, with its status, problem type and exact detail;
after each error the server keeps serving.
"""

from __future__ import annotations

import io
import re
import time

import av
import httpx
import pytest
from PIL import Image

from mofo.shared.params import FlowParams, MotionParams, preset_params
from mofo.shared.pipeline import analyse_clip
from mofo.shared.record import BoxRecord
from mofo.shared.render import strip_size
from mofo.shared.sample import sample_clip
from testkit import badclips
from testkit.server import Server
from tests.services.problems import problem

FAST = {"num_frames": 6}  # six frames: enough motion, quick on two cores


def _sample_bytes() -> bytes:
    return sample_clip().read_bytes()


def _upload(client: httpx.Client, route: str, data: bytes, name: str = "clip.mp4", **params):
    return client.post(route, files={"file": (name, data, "video/mp4")}, params=params)


@pytest.fixture(scope="module")
def client(server: Server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def expected() -> BoxRecord:
    """What the library computes for the sample with the same settings (CPU, OpenCV)."""
    params = MotionParams(num_frames=6, backend="opencv")
    return analyse_clip(sample_clip(), params).record


# -- POST /v1/boxes ------------------------------------------------------------------------------


def test_upload_gives_the_librarys_record_then_a_cache_hit(client, expected):
    first = _upload(client, "/v1/boxes", _sample_bytes(), **FAST)
    assert first.status_code == 200, first.text
    record = first.json()
    assert re.fullmatch(r"sha256-[0-9a-f]{32}", record["video"])
    assert record["params"] == expected.params
    for key in ("width", "height", "fps", "frame_indices", "frames", "clip_box", "fallback"):
        assert record[key] == getattr(expected, key), key
    assert record["schema"] == "mofo.box/2"
    assert first.headers["x-mofo-cache"] in ("miss", "hit")  # an earlier test may have cached it
    again = _upload(client, "/v1/boxes", _sample_bytes(), name="other-name.mp4", **FAST)
    assert again.headers["x-mofo-cache"] == "hit"  # same content, same settings
    assert again.json() == record
    location = again.headers["content-location"]
    assert location == f"/v1/boxes/{record['video']}?params={record['params']}"
    fresh = _upload(client, "/v1/boxes", _sample_bytes(), refresh="true", **FAST)
    assert fresh.headers["x-mofo-cache"] == "miss"
    assert fresh.json() == record


def test_path_under_the_data_root(client, expected):
    response = client.post("/v1/boxes", json={"path": "clips/sample.mp4"}, params=FAST)
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["video"] == "clips/sample.mp4"
    assert record["frames"] == expected.frames
    # "./" and ".." inside the root name the same clip, the same id
    same = client.post("/v1/boxes", json={"path": "clips/../clips/./sample.mp4"}, params=FAST)
    assert same.json()["video"] == "clips/sample.mp4"
    assert same.headers["x-mofo-cache"] == "hit"


def test_options_change_the_settings_hash_and_the_frames(client):
    response = _upload(client, "/v1/boxes", _sample_bytes(), stride=5)
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["frame_indices"] == [0, 5, 10, 15]
    assert record["params"] == MotionParams(stride=5, backend="opencv").hash()


def test_torch_backend_on_request(client):
    response = _upload(
        client,
        "/v1/boxes",
        _sample_bytes(),
        backend="torch",
        stopping="fixed",
        num_frames=3,
        short_side=64,
    )
    assert response.status_code == 200, response.text
    flow = FlowParams(warps=3, stopping="fixed", exposure="gain")
    params = MotionParams(num_frames=3, short_side=64, backend="torch", flow=flow)
    assert response.json()["params"] == params.hash()


# -- GET /v1/boxes/{video_id} --------------------------------------------------------------------


def test_get_cached_record_by_options_or_params_hash(client):
    posted = client.post("/v1/boxes", json={"path": "clips/sample.mp4"}, params=FAST).json()
    by_options = client.get("/v1/boxes/clips/sample.mp4", params=FAST)
    assert by_options.status_code == 200
    assert by_options.json() == posted
    by_hash = client.get("/v1/boxes/clips/sample.mp4", params={"params": posted["params"]})
    assert by_hash.json() == posted
    other = client.get("/v1/boxes/clips/sample.mp4", params={"num_frames": 7})
    body = problem(other, 404, "record-not-found")
    hash7 = MotionParams(num_frames=7, backend="opencv").hash()
    assert body["detail"] == (
        f"no record for video 'clips/sample.mp4' under settings {hash7}; "
        "POST /v1/boxes computes one"
    )
    problem(client.get("/v1/boxes/never-seen"), 404, "record-not-found")
    problem(client.get("/v1/boxes/x", params={"params": "not-a-hash"}), 422, "invalid-parameters")


# -- pictures ------------------------------------------------------------------------------------


def test_motion_map_png(client, expected):
    response = _upload(client, "/v1/motion-map", _sample_bytes(), **FAST)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    # six frames at the default working size 170x128: frames above their maps
    assert image.size == strip_size(6, 128, 170)


def _recent_hits(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    found = re.search(r'^mofo_cache_lookups_total\{result="recent_hit"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_pictures_of_a_clip_just_boxed_reuse_its_analysis(client):
    data = _sample_bytes()
    _upload(client, "/v1/boxes", data, refresh="true", num_frames=4)
    before = _recent_hits(client)
    assert _upload(client, "/v1/motion-map", data, num_frames=4).status_code == 200
    assert _upload(client, "/v1/preview", data, num_frames=4).status_code == 200
    assert _recent_hits(client) == before + 2  # no second flow run for either picture


def test_preview_gif_and_mp4(client):
    gif = _upload(client, "/v1/preview", _sample_bytes(), **FAST)
    assert gif.status_code == 200, gif.text
    assert gif.headers["content-type"] == "image/gif"
    image = Image.open(io.BytesIO(gif.content))
    assert image.format == "GIF" and image.size == (170, 128) and image.n_frames >= 2
    mp4 = _upload(client, "/v1/preview", _sample_bytes(), format="mp4", **FAST)
    assert mp4.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(mp4.content)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (128, 170, 3)
    problem(
        _upload(client, "/v1/preview", _sample_bytes(), format="webm"), 422, "invalid-parameters"
    )


# -- jobs ----------------------------------------------------------------------------------------


def _wait_for_job(client: httpx.Client, url: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(url).json()
        if state["status"] in ("finished", "failed", "cancelled"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"job not done after {timeout} s: {state}")


def test_job_over_paths_keeps_each_clips_outcome(client, expected):
    paths = ["clips/sample.mp4", "clips/truncated_40_faststart.mp4", "clips/carphone.mp4"]
    response = client.post("/v1/jobs", json={"paths": paths}, params=FAST)
    assert response.status_code == 202, response.text
    job = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", job["id"])
    assert job["status"] in ("queued", "running", "finished")
    assert job["progress"]["total"] == 3
    assert response.headers["location"] == job["status_url"]
    assert job["status_url"].endswith(f"/v1/jobs/{job['id']}")
    done = _wait_for_job(client, job["status_url"])
    assert done["status"] == "finished"
    # the last clip's six frame pairs are done; an ended job has no time left to estimate
    assert done["progress"] == {
        "total": 3,
        "done": 2,
        "failed": 1,
        "pairs_done": 6,
        "pairs_total": 6,
        "eta_s": None,
    }
    sample, broken, carphone = done["result"]
    assert sample["ok"] and sample["record"]["frames"] == expected.frames
    assert not broken["ok"] and broken["video"] == "clips/truncated_40_faststart.mp4"
    assert broken["error"].startswith("clips/truncated_40_faststart.mp4: is ")
    assert "truncated" in broken["error"]
    assert carphone["ok"] and carphone["record"]["width"] == 176
    # the job filled the cache
    cached = client.get("/v1/boxes/clips/carphone.mp4", params=FAST)
    assert cached.json() == carphone["record"]
    assert done["ended_at"] >= done["started_at"] >= done["created_at"]


def test_interactive_requests_box_a_spread_of_frames_and_jobs_every_frame(client):
    """A request that sets no sampling boxes at most 64 frames spread over the clip (the
    server's interactive_frames), named by that setting's hash; a job boxes every frame. Both
    measure each frame's motion to the next source frame, so their boxes agree."""
    small = {"short_side": 48}
    spread = client.post("/v1/boxes", json={"path": "clips/carphone.mp4"}, params=small)
    assert spread.status_code == 200, spread.text
    record = spread.json()
    assert record["frame_indices"] == [round(k * 119 / 63) for k in range(64)]
    assert record["params"] == preset_params(short_side=48, num_frames=64).hash()
    job = client.post("/v1/jobs", json={"paths": ["clips/carphone.mp4"]}, params=small)
    done = _wait_for_job(client, job.json()["status_url"])
    (outcome,) = done["result"]
    every = outcome["record"]
    assert every["frame_indices"] == list(range(120))
    assert every["params"] == preset_params(short_side=48).hash()
    for index, box, own in zip(
        record["frame_indices"], record["frames"], record["own"], strict=True
    ):
        assert own == every["own"][index]
        if own:
            assert box == every["frames"][index], index


def test_job_for_an_uploaded_clip(client, expected):
    response = _upload(client, "/v1/jobs", _sample_bytes(), **FAST)
    assert response.status_code == 202, response.text
    done = _wait_for_job(client, response.json()["status_url"])
    assert done["status"] == "finished"
    (outcome,) = done["result"]
    assert outcome["ok"] and outcome["record"]["frames"] == expected.frames


def _watch_job(client: httpx.Client, url: str, until, timeout: float = 120) -> list[dict]:
    """The job's states, polled every 20 ms, up to the first one ``until`` accepts."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(client.get(url).json())
        if until(seen[-1]):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"no such job state after {timeout} s: {seen[-3:]}")


def test_a_running_job_tells_its_frame_pairs_and_time_left(client):
    """Every frame of carphone (120 frame pairs) at 48 px: the job's progress counts the clip's
    pairs as their flow finishes, and estimates the time left from them."""
    job = client.post("/v1/jobs", json={"paths": ["clips/carphone.mp4"]}, params={"short_side": 48})
    url = job.json()["status_url"]
    seen = _watch_job(client, url, lambda s: s["status"] == "finished")
    flowing = [s["progress"] for s in seen if s["progress"]["pairs_done"]]
    assert flowing, seen[-1]
    assert all(p["pairs_total"] == 120 for p in flowing)
    partial = [p for p in flowing if p["pairs_done"] < 120]
    assert partial, "no state seen half-way through the clip's pairs"
    assert all(p["eta_s"] is not None and p["eta_s"] >= 0 for p in partial)  # 0.0 near the end
    assert partial[0]["eta_s"] > 0
    done = [p["pairs_done"] for p in flowing]
    assert done == sorted(done)  # pairs only go up
    assert seen[-1]["progress"]["pairs_done"] == 120 and seen[-1]["progress"]["eta_s"] is None


def test_cancel_stops_a_running_job_and_keeps_what_it_finished(client, expected):
    """Every frame of two clips at 160 px: the sample is boxed, then carphone is cancelled
    mid-flow. The job ends cancelled with the sample's outcome; carphone's record never reaches
    the cache; the server goes on serving."""
    paths = ["clips/sample.mp4", "clips/carphone.mp4"]
    every = {"short_side": 160}
    job = client.post("/v1/jobs", json={"paths": paths}, params=every).json()
    # a second job waits behind it (one job thread): cancelled while queued, it never starts
    queued = client.post("/v1/jobs", json={"paths": ["clips/carphone.mp4"]}).json()
    gone = client.delete(queued["status_url"])
    assert gone.status_code == 200, gone.text
    assert gone.json()["status"] == "cancelled" and gone.json()["started_at"] is None
    assert gone.json()["result"] is None

    def in_second_clip(state: dict) -> bool:
        return state["progress"]["done"] == 1 and (state["progress"]["pairs_done"] or 0) > 0

    _watch_job(client, job["status_url"], in_second_clip)
    started = time.monotonic()
    cancelled = client.delete(job["status_url"])
    assert time.monotonic() - started < 5
    state = cancelled.json()
    assert state["status"] == "cancelled", state
    (sample,) = state["result"]
    assert sample["ok"] and sample["video"] == "clips/sample.mp4"
    assert sample["record"]["frame_indices"] == list(range(len(sample["record"]["frames"])))
    progress = state["progress"]
    assert (progress["done"], progress["failed"], progress["eta_s"]) == (1, 0, None)
    assert 0 < progress["pairs_done"] < progress["pairs_total"] == 120
    problem(client.get("/v1/boxes/clips/carphone.mp4", params=every), 404, "record-not-found")
    assert client.get("/v1/boxes/clips/sample.mp4", params=every).status_code == 200
    assert client.get(job["status_url"]).json()["status"] == "cancelled"
    assert client.get(queued["status_url"]).json()["status"] == "cancelled"

    # cancelling an ended job changes nothing; an unknown one is not found
    finished = _wait_for_job(
        client, client.post("/v1/jobs", json={"paths": paths[:1]}, params=FAST).json()["status_url"]
    )
    again = client.delete(finished["status_url"]).json()
    assert again["status"] == "finished" and again["result"] == finished["result"]
    problem(client.delete("/v1/jobs/" + "0" * 32), 404, "job-not-found")
    ok = _upload(client, "/v1/boxes", _sample_bytes(), **FAST)
    assert ok.status_code == 200 and ok.json()["frames"] == expected.frames


def test_unknown_job(client):
    body = problem(client.get("/v1/jobs/" + "0" * 32), 404, "job-not-found")
    assert body["detail"] == f"no job '{'0' * 32}' (or it expired)"
    problem(client.get("/v1/jobs/not-an-id"), 404, "job-not-found")


def test_job_errors(client):
    problem(client.post("/v1/jobs", json={"paths": []}), 422, "invalid-parameters")
    problem(client.post("/v1/jobs", json={"paths": ["../secret.mp4"]}), 403, "outside-data-root")
    problem(client.post("/v1/jobs", json={"paths": ["clips/nope.mp4"]}), 404, "clip-not-found")


# -- health, metrics, docs -----------------------------------------------------------------------


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "device": "cpu",
        "backend": "opencv",
        "flow_warmed": True,
        "cache": "memory",
        "cache_reachable": True,
        "jobs": "local",
        "detail": None,
    }


def test_metrics_count_requests_by_route_and_batches(client):
    _upload(client, "/v1/boxes", _sample_bytes(), **FAST)
    client.get("/v1/jobs/" + "1" * 32)
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/no/such/page").status_code == 404
    text = client.get("/metrics").text
    # the page's files count under their folder, a path nothing serves as unmatched
    assert re.search(r'requests_total\{method="GET",route="/static/\{path\}",status="200"\}', text)
    assert re.search(r'requests_total\{method="GET",route="<unmatched>",status="404"\}', text)
    assert 'route="<unmatched>",status="200"' not in text
    assert re.search(
        r'mofo_http_requests_total\{method="POST",route="/v1/boxes",status="200"\} [1-9]', text
    )
    assert re.search(
        r'mofo_http_requests_total\{method="GET",route="/v1/jobs/\{job_id\}",status="404"\} [1-9]',
        text,
    )
    assert re.search(
        r'mofo_http_request_duration_seconds_bucket\{le="\+Inf",route="/v1/boxes"\}', text
    )
    assert "mofo_http_requests_in_flight 1.0" in text  # this very request
    count = float(re.search(r"^mofo_flow_batch_pairs_count (\S+)", text, re.M).group(1))
    pairs = float(re.search(r"^mofo_flow_batch_pairs_sum (\S+)", text, re.M).group(1))
    assert count >= 1 and pairs >= count
    assert re.search(r"^mofo_flow_queue_wait_seconds_count [1-9]", text, re.M)
    assert re.search(r'^mofo_cache_lookups_total\{result="hit"\} [1-9]', text, re.M)


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/boxes",
        "/v1/boxes/{video_id}",
        "/v1/motion-map",
        "/v1/preview",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    body = spec["paths"]["/v1/boxes"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "cdn" not in docs.text  # works offline: the assets are ours
    for asset in re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', docs.text):
        assert client.get(asset).status_code == 200, asset
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text


def test_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text.lower()


# -- errors: each with its status, type and detail; the server keeps serving ----------------------


def test_no_file(client):
    response = client.post("/v1/boxes", files={"other": ("a.mp4", b"x")})
    body = problem(response, 422, "no-file")
    assert body["detail"] == "no file: send the clip as the multipart/form-data field 'file'"


def test_empty_upload(client):
    body = problem(_upload(client, "/v1/boxes", b"", name="e.mp4"), 400, "empty-clip")
    assert body["detail"] == "e.mp4: the upload is empty (0 bytes)"


def test_not_a_video(client, tmp_path):
    text = _upload(client, "/v1/boxes", b"hello, this is text\n" * 50, name="notes.txt")
    assert problem(text, 415, "not-a-video")["detail"].startswith("notes.txt: is not a readable")
    png = badclips.image_file(tmp_path).read_bytes()
    body = problem(_upload(client, "/v1/boxes", png, name="p.png"), 415, "not-a-video")
    assert body["detail"] == "p.png: is an image, not a video"
    wav = badclips.audio_only(tmp_path).read_bytes()
    body = problem(_upload(client, "/v1/boxes", wav, name="t.wav"), 415, "not-a-video")
    assert body["detail"] == "t.wav: has no video stream"


def test_corrupt_clip(client, tmp_path):
    data = badclips.truncated_mp4(tmp_path).read_bytes()
    body = problem(_upload(client, "/v1/boxes", data, name="cut.mp4"), 422, "corrupt-clip")
    assert body["detail"].startswith("cut.mp4: is ") and "truncated" in body["detail"]


def test_too_short(client, tmp_path):
    data = badclips.one_frame_clip(tmp_path).read_bytes()
    body = problem(_upload(client, "/v1/boxes", data, name="one.mp4"), 422, "too-short")
    assert body["detail"] == "one.mp4: has 1 frame; motion needs at least 2"


def test_upload_too_large_is_refused_while_streaming(client, server):
    big = b"\0" * 2_500_000  # the server's limit is 2,000,000 bytes
    declared = _upload(client, "/v1/boxes", big)
    body = problem(declared, 413, "too-large")
    assert body["detail"].startswith("the request body exceeds the upload limit of 2000000 bytes")

    def chunks():  # no Content-Length: the limit must bite while the body streams
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="b.mp4"\r\n\r\n'
        for _ in range(50):
            yield b"\0" * 100_000
        yield b"\r\n--xyz--\r\n"

    streamed = client.post(
        "/v1/boxes",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    body = problem(streamed, 413, "too-large")
    assert body["detail"] == (
        "the request body exceeds the upload limit of 2000000 bytes (more than 2000000 bytes sent)"
    )
    assert server.alive()


def test_too_long_and_too_many_frames(client, tmp_path):
    slow = badclips.slow_clip(tmp_path, frames=40, fps=1.0).read_bytes()  # 40 s > 30 s
    body = problem(_upload(client, "/v1/boxes", slow, name="slow.mp4"), 422, "too-long")
    assert body["detail"] == "slow.mp4: duration 40 s exceeds the limit 30 s"
    many = badclips.small_clip(tmp_path, frames=450, size=(32, 32)).read_bytes()  # 18 s, 450 > 400
    body = problem(_upload(client, "/v1/boxes", many, name="many.mp4"), 422, "too-long")
    assert body["detail"] == "many.mp4: frame count 450 exceeds the limit 400"


def test_resolution_over_the_cap(client, tmp_path):
    wide = badclips.huge_resolution_clip(tmp_path, size=(2000, 32)).read_bytes()
    body = problem(_upload(client, "/v1/boxes", wide, name="w.mp4"), 422, "resolution-too-high")
    assert body["detail"] == "w.mp4: resolution 2000x32 exceeds the limit 1920x1080"


@pytest.mark.parametrize(
    "path",
    ["../secret.mp4", "/etc/passwd", "clips/../../secret.mp4", "clips/escape.mp4", "C:/x.mp4"],
)
def test_paths_outside_the_data_root(client, path):
    body = problem(client.post("/v1/boxes", json={"path": path}), 403, "outside-data-root")
    assert repr(path) in body["detail"]
    assert "/tmp" not in body["detail"].replace(repr(path), "")  # no server paths leak


def test_missing_path(client):
    body = problem(client.post("/v1/boxes", json={"path": "clips/nope.mp4"}), 404, "clip-not-found")
    assert body["detail"] == "clips/nope.mp4: no such file under the data root"
    problem(client.post("/v1/boxes", json={"path": "clips"}), 404, "clip-not-found")


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"short_side": 5}, "short_side: Input should be greater than or equal to 32"),
        ({"stride": 0}, "stride: Input should be greater than or equal to 1"),
        ({"fps": -1}, "fps: Input should be greater than 0"),
        ({"backend": "cuda"}, "backend: Input should be 'auto', 'opencv' or 'torch'"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        (
            {"backend": "opencv", "stopping": "fixed"},
            "stopping=fixed needs backend=torch (OpenCV only stops on epsilon)",
        ),
    ],
)
def test_bad_parameters(client, params, detail):
    response = _upload(client, "/v1/boxes", _sample_bytes(), **params)
    assert problem(response, 422, "invalid-parameters")["detail"] == detail


def test_bad_bodies(client):
    body = problem(
        client.post("/v1/boxes", content=b"x", headers={"content-type": "text/plain"}),
        415,
        "unsupported-media-type",
    )
    assert "multipart/form-data" in body["detail"]
    not_json = client.post(
        "/v1/boxes", content=b"{nope", headers={"content-type": "application/json"}
    )
    problem(not_json, 422, "invalid-json")
    body = problem(client.post("/v1/boxes", json={"file": "x"}), 422, "invalid-parameters")
    assert "path: Field required" in body["detail"]
    problem(
        client.post(
            "/v1/boxes",
            content=b"--b\r\nbroken",
            headers={"content-type": "multipart/form-data; boundary=b"},
        ),
        422,
        "no-file",
    )


def test_unknown_route_and_method(client):
    problem(client.get("/v2/boxes"), 404, "not-found")
    problem(client.put("/v1/boxes"), 405, "method-not-allowed")


def test_server_survived_every_error(client, server, expected):
    assert server.alive()
    response = _upload(client, "/v1/boxes", _sample_bytes(), refresh="true", **FAST)
    assert response.status_code == 200
    assert response.json()["frames"] == expected.frames
    assert "Traceback" not in server.log_text()
