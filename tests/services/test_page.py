"""The web page in a real browser: Debian's Chromium, driven by Playwright, against ``mofo serve``.

No browser download: the tests launch /usr/bin/chromium and skip without it (fail instead when
MOFO_REQUIRE_BROWSER=1). Debian's Chromium decodes H.264, so the sample plays in the <video> with
the box drawn on the overlay canvas; the GIF preview fallback is not taken here."""

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

SETTLED = "() => ['done', 'error'].includes(document.getElementById('status').dataset.state)"
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


@pytest.fixture
def page(browser, server: Server) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert server.alive(), f"mofo serve died during the test:\n{server.log_text()[-3000:]}"


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

    # The page shows what the API answers for the same file (now from the cache).
    with server.client() as client:
        answer = client.post("/v1/boxes", files={"file": (clip.name, clip.read_bytes())})
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Mofo-Cache"] == "hit"  # the page's upload computed it
    record = answer.json()
    assert len(record["frames"]) == 16
    assert summary(page, "frames") == "16"
    assert json.loads(summary(page, "clip-box")) == record["clip_box"]
    assert summary(page, "video") == record["video"]
    assert summary(page, "size") == "298×224"
    assert summary(page, "cache") in ("hit", "miss")
    assert summary(page, "fallback") == "no"
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
    assert page.inner_text("#error-title") == problem["title"]
    assert page.inner_text("#error-detail") == problem["detail"]
    assert page.is_hidden("#results")

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
    assert operations == 9  # boxes ×2, motion-map, preview, jobs ×2, healthz, readyz, metrics
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
