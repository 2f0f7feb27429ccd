"""The web page in a real browser: Debian's Chromium, driven by Playwright, against ``mofo serve``.

No browser download: the tests launch /usr/bin/chromium and skip without it (fail instead when
MOFO_REQUIRE_BROWSER=1). Debian's Chromium decodes H.264, so the sample plays in the <video> with
the box drawn on the overlay canvas; the GIF preview fallback is not taken here.

The page boxes every clip in a job (POST /v1/jobs, then polling its status): the tests see its
progress and cancel one, at a desktop width (1280 px) and a phone's (390 px). Screenshots go to
test-artifacts/ (page-*.png)."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from mofo.shared.sample import sample_clip
from testkit.server import Server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Computing boxes and then the motion map takes tens of seconds on a busy 2-core CPU.
WORK_TIMEOUT_MS = 180_000

SETTLED = (
    "() => ['done', 'error', 'cancelled'].includes(document.getElementById('status').dataset.state)"
)
PAGE_QUERY = {"num_frames": 16, "quality": "balanced"}  # the page's default settings
# The kept frame the overlay shows now and a 9-px-wide column strip of the canvas around the
# left edge expected for it (xs[frame]), read in one go so that both belong to the same frame.
LEFT_STRIP = """xs => {
  const c = document.getElementById('overlay');
  const frame = Number(c.dataset.frame);
  const x0 = xs[frame] - 4;
  const data = c.getContext('2d').getImageData(x0, 0, 9, c.height).data;
  return {frame, x0, width: c.width, height: c.height, rgba: Array.from(data)};
}"""
# Drop a file made of [name, text] on the drop zone, as a drag from the desktop would.
DROP = """([name, text]) => {
  const data = new DataTransfer();
  data.items.add(new File([text], name, {type: 'text/plain'}));
  document.getElementById('drop').dispatchEvent(
    new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found: these tests drive Debian's Chromium (apt install chromium)"
        if os.environ.get("MOFO_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}, and MOFO_REQUIRE_BROWSER=1 requires it", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def _open(browser, server: Server, width: int, height: int) -> Iterator[object]:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: requests.append(f"{req.method} {req.url}"))
    page.requests = requests  # what the page asked the server, in order
    page.goto(server.url + "/")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert server.alive(), f"mofo serve died during the test:\n{server.log_text()[-3000:]}"


@pytest.fixture
def page(browser, server: Server) -> Iterator[object]:
    yield from _open(browser, server, 1280, 800)


@pytest.fixture
def phone(browser, server: Server) -> Iterator[object]:
    yield from _open(browser, server, 390, 844)


def upload(page, path: Path) -> str:
    """Give the page a file and wait until it is done or failed; its final data-state."""
    page.set_input_files("#file", str(path))
    page.wait_for_function(SETTLED, timeout=WORK_TIMEOUT_MS)
    return page.get_attribute("#status", "data-state")


def summary(page, key: str) -> str:
    return page.inner_text(f'#summary dd[data-key="{key}"]')


def is_box_colour(r: int, g: int, b: int, a: int) -> bool:  # #ff2d2d, opaque
    return r >= 230 and g <= 90 and b <= 90 and a >= 230


def test_page_plays_the_sample_with_its_boxes(page, server: Server) -> None:
    clip = sample_clip()
    state = upload(page, clip)
    assert state == "done", f"{page.inner_text('#status')} / {page.inner_text('#error')}"
    # It took the job path: one upload, then its status polled until it ended.
    jobs = [r for r in page.requests if "/v1/jobs" in r]
    assert jobs[0].startswith("POST ") and jobs[0].endswith(
        "/v1/jobs?num_frames=16&quality=balanced"
    )
    assert len(jobs) >= 2 and all(r.startswith("GET ") for r in jobs[1:]), jobs

    # The page shows what the API answers for the same file under its settings (now cached).
    with server.client() as client:
        answer = client.post(
            "/v1/boxes", files={"file": (clip.name, clip.read_bytes())}, params=PAGE_QUERY
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Mofo-Cache"] == "hit"  # the page's job computed it
    record = answer.json()
    assert len(record["frames"]) == 16
    assert summary(page, "file") == "sample.mp4"
    assert summary(page, "frames") == "16"
    assert json.loads(summary(page, "clip-box")) == record["clip_box"]
    assert summary(page, "video") == record["video"]
    assert summary(page, "size") == "298×224"
    assert summary(page, "cache") == "miss"
    assert summary(page, "fallback") == "no"
    # The record downloads as the JSON the API answers.
    assert page.get_attribute("#download", "download") == "sample.boxes.json"
    downloaded = page.evaluate(
        "async () => (await fetch(document.getElementById('download').href)).text()"
    )
    assert json.loads(downloaded) == record
    assert page.get_attribute("header nav a", "href") == "/docs"
    rows = page.locator("#frames tbody tr")
    assert rows.count() == 16
    assert rows.nth(3).locator("td").last.inner_text() == ", ".join(map(str, record["frames"][3]))

    assert page.evaluate("document.getElementById('motion-map').naturalWidth") > 0

    # Debian's Chromium plays H.264: the clip plays in the <video>, no GIF fallback.
    video = page.evaluate(
        "(() => { const v = document.getElementById('video');"
        " return {error: v.error && v.error.code, width: v.videoWidth, height: v.videoHeight,"
        " paused: v.paused, t: v.currentTime}; })()"
    )
    assert video["error"] is None and (video["width"], video["height"]) == (298, 224), video
    assert not video["paused"]
    page.wait_for_function(
        f"document.getElementById('video').currentTime !== {video['t']}", timeout=5_000
    )
    assert page.is_hidden("#preview") and page.is_hidden("#fallback-note")

    # The overlay covers the picture exactly (same aspect: no letterbox), so source px scale by
    # canvas size / source size; the current frame's left edge is a solid box-coloured line.
    width, height = page.evaluate(
        "(() => { const c = document.getElementById('overlay'); return [c.width, c.height]; })()"
    )
    assert width > 298 and abs(width / height - 298 / 224) < 0.01, (width, height)
    sx, sy = width / 298, height / 224
    strip = page.evaluate(LEFT_STRIP, [round(f[0] * sx) for f in record["frames"]])
    x1, y1, x2, y2 = record["frames"][strip["frame"]]
    assert strip["x0"] + 4 == round(x1 * sx)
    px = strip["rgba"]
    hits = [
        any(is_box_colour(*px[(y * 9 + dx) * 4 : (y * 9 + dx) * 4 + 4]) for dx in range(9))
        for y in range(round(y1 * sy) + 3, round(y2 * sy) - 3)
    ]
    assert hits and all(hits), f"frame {strip['frame']}: left edge found on {sum(hits)}/{len(hits)}"
    inside = page.evaluate(
        "([x, y]) => Array.from(document.getElementById('overlay').getContext('2d')"
        ".getImageData(x, y, 1, 1).data)",
        [round((x1 + x2) / 2 * sx), round((y1 + y2) / 2 * sy)],
    )
    assert inside[3] == 0, "the box is drawn as an outline, its inside left clear"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "page-sample.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert struct.unpack(">II", data[16:24])[0] == 1280  # IHDR width: the viewport's


def test_page_shows_the_problem_of_a_non_video(page, server: Server, tmp_path: Path) -> None:
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/sh\n")
    assert upload(page, text) == "error"
    with server.client() as client:
        problem = client.post("/v1/boxes", files={"file": (text.name, text.read_bytes())}).json()
    assert problem["status"] == 415 and "passwd: is not a readable video" in problem["detail"]
    assert page.is_visible("#error")
    assert page.inner_text("#error-title") == "Clip failed"  # the job's outcome for the clip
    assert page.inner_text("#error-detail").startswith("passwd: is not a readable video")
    assert page.is_hidden("#results")

    # A setting out of range is refused on the page, before any upload.
    page.fill("#num-frames", "1")
    before = len(page.requests)
    page.set_input_files("#file", str(sample_clip()))
    page.wait_for_function(SETTLED, timeout=5_000)
    assert page.inner_text("#error-title") == "Invalid setting"
    assert len(page.requests) == before
    page.fill("#num-frames", "16")

    # The same through the drop zone: a file dropped on it is uploaded too.
    page.evaluate(DROP, ["notes.txt", "not a video"])
    page.wait_for_function(SETTLED, timeout=WORK_TIMEOUT_MS)
    assert page.get_attribute("#status", "data-state") == "error"
    assert page.inner_text("#error-detail").startswith("notes.txt: is not a readable video")


def test_docs_render_offline(page, server: Server) -> None:
    """/docs is Swagger UI from our own assets: it renders every operation with no network."""
    page.goto(server.url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
    operations = page.locator(".swagger-ui .opblock").count()
    assert operations == 10  # boxes ×2, motion-map, preview, jobs ×3, healthz, readyz, metrics
    assert page.locator(".swagger-ui .title").first.inner_text().startswith("MOFO motion API")


def test_page_asks_for_the_api_key_of_a_keyed_server_and_keeps_it(browser, tmp_path: Path) -> None:
    """With MOFO_API_KEYS set, the page's first call gets 401: it asks for a key, sends it as a
    bearer token, and the next clip goes through without asking again."""
    from testkit.server import start_server

    key = "page-key-0123456789abcdef"
    keyed = start_server(tmp_path, device="cpu", api_keys=key)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        asked: list[str] = []

        def answer(dialog) -> None:
            asked.append(dialog.message)
            dialog.accept(key)

        page.on("dialog", answer)
        page.goto(keyed.url + "/")
        state = upload(page, sample_clip())
        assert state == "done", f"{page.inner_text('#status')} / {page.inner_text('#error')}"
        assert len(asked) == 1 and "API key" in asked[0]
        assert page.evaluate("localStorage.getItem('mofo-api-key')") == key
        page.reload()
        assert upload(page, sample_clip()) == "done" and len(asked) == 1  # kept, not asked again
    finally:
        context.close()
        keyed.stop()


def test_a_long_job_shows_its_progress_and_can_be_cancelled(page, server: Server, bikes) -> None:
    """bikes.mp4 (10 s) with 120 frames at 224 px: minutes of flow on a CPU. The page shows the
    job's frame pairs and the time left as they go; Cancel stops the job on the server."""
    page.fill("#num-frames", "120")
    page.select_option("#short-side", "224")
    page.set_input_files("#file", str(bikes))
    page.wait_for_function(
        "/Frame pairs [1-9][0-9]* \\/ 120 · about/.test(document.getElementById('job-text')"
        ".textContent)",
        timeout=WORK_TIMEOUT_MS,
    )
    text = page.inner_text("#job-text")
    done = int(text.split()[2])
    assert 0 < done < 120 and "left" in text, text
    assert 0 < page.evaluate("document.getElementById('job-progress').value") < 1
    page.screenshot(path=str(_artifact("page-job-1280.png")), full_page=True)
    job_url = next(r.split(" ")[1] for r in page.requests if "GET" in r and "/v1/jobs/" in r)

    page.click("#cancel")
    page.wait_for_function(SETTLED, timeout=30_000)
    assert page.get_attribute("#status", "data-state") == "cancelled"
    assert page.inner_text("#status") == "Cancelled: bikes.mp4."
    assert page.is_hidden("#job") and page.is_hidden("#results")
    with server.client() as client:
        state = client.get(job_url).json()
    assert state["status"] == "cancelled"
    assert 0 < state["progress"]["pairs_done"] < 120
    assert any(r.startswith("DELETE ") and "/v1/jobs/" in r for r in page.requests)


def test_page_at_a_phones_width(phone, server: Server) -> None:
    """390 px wide: one column, nothing wider than the screen, the summary's values on lines of
    their own (not one character a line), the settings and the docs link still there."""
    state = upload(phone, sample_clip())
    assert state == "done", f"{phone.inner_text('#status')} / {phone.inner_text('#error')}"
    phone.wait_for_function("document.getElementById('motion-map').naturalWidth > 0")
    layout = phone.evaluate(
        """() => {
      const box = (sel) => document.querySelector(sel).getBoundingClientRect();
      const columns = getComputedStyle(document.getElementById('results'))
        .gridTemplateColumns.split(' ').length;
      const params = box('#summary dd[data-key="params"]');
      return {columns, scroll: document.documentElement.scrollWidth,
              params: [params.width, params.height], player: box('.player').width,
              facts: [box('.facts').left, box('.player').bottom, box('.facts').top],
              frames: box('#frames').width, settings: box('#settings').width,
              docs: box('header nav a').width};
    }"""
    )
    assert layout["columns"] == 1, layout
    assert layout["scroll"] <= 390, layout  # no sideways scrolling
    assert layout["params"][0] > 200 and layout["params"][1] < 40, layout  # one line
    assert layout["player"] > 300 and layout["frames"] > 300, layout
    assert layout["facts"][2] >= layout["facts"][1], layout  # the summary below the clip
    assert 300 < layout["settings"] <= 390 and layout["docs"] > 0, layout
    phone.screenshot(path=str(_artifact("page-390.png")), full_page=True)
    shot = ARTIFACTS / "page-390.png"
    assert struct.unpack(">II", shot.read_bytes()[16:24])[0] == 390


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
