"""The web page in a real headless Chromium (the system's package, driven by Playwright).

The browser is the one the system's package manager installs (`apt-get install -y
chromium`); nothing is downloaded at test time. Without it these tests skip, saying so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import soundfile

pytest.importorskip("aiohttp", reason="the page's tests need the serve extra (aiohttp)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the page's tests need playwright (the test extra)")

from iplap.samples import FACE_IMAGE  # noqa: E402

CHROMIUM = os.environ.get("IPLAP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("Chromium is not installed: apt-get install -y chromium (or set IPLAP_CHROMIUM)",
                allow_module_level=True)

#: As the probe of this machine kind starts it: offline, no first-run or background traffic.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def _speech(path: Path, seconds: float) -> Path:
    import iplap
    from iplap.samples import SPEECH_16K

    speech = iplap.load_speech(SPEECH_16K)
    soundfile.write(path, speech.samples[int(0.8 * 16000):int((0.8 + seconds) * 16000)], 16000)
    return path


def test_page_shows_the_photo_speaking_live_and_renders_a_video(browser, server, tmp_path):
    """Upload the sample photo, play the sample speech live (frames drawn on the canvas with
    their audio), then render it as a job and get the download link; no script errors."""
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(server.url)
    page.wait_for_function("document.querySelector('#server').textContent.startsWith('iplap')")
    assert not page.is_visible("#download")  # no link to a video before any render
    page.set_input_files("#face-file", str(FACE_IMAGE))
    page.click("#face-upload")
    page.wait_for_function("[...document.querySelectorAll('#avatar option')].some(o => !o.disabled)",
                           timeout=120_000)
    # 0.4 s of speech: the reply plays in the photo's continuous session, whose idle frames
    # (25 a second, from the upload on) the counts below include; the job renders 6 frames.
    page.set_input_files("#speech-file", str(_speech(tmp_path / "speech.wav", 0.4)))
    page.click("#live-file")
    page.wait_for_function("window.iplap.end !== null || window.iplap.errors.length > 0", timeout=300_000)
    state = page.evaluate("window.iplap")
    assert state["errors"] == [], state["errors"]
    assert state["end"]["frames"] >= 15 and state["frames"] >= 15
    page.wait_for_function("window.iplap.drawn >= 10", timeout=30_000)
    # The canvas holds the rendered frame: the photo (not an empty, black canvas).
    stats = page.evaluate("""() => {
        const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let sum = 0, n = 0; for (let i = 0; i < d.length; i += 4 * 97) { sum += d[i] + d[i + 1] + d[i + 2]; n += 3; }
        return { width: c.width, height: c.height, mean: sum / n };
    }""")
    assert (stats["width"], stats["height"]) == (512, 512) and stats["mean"] > 40, stats
    page.click("#render")
    page.wait_for_selector("#download:not([hidden])", timeout=300_000)
    assert page.evaluate("window.iplap.errors") == []
    assert page.get_attribute("#download", "href").startswith("blob:")
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    target = os.environ.get("IPLAP_PAGE_SCREENSHOT")  # e.g. docs/serve/page.png, for the README
    if target:
        shutil.copy(shot, target)
    assert problems == [], problems
    page.close()


def test_page_reports_a_bad_upload_in_one_line(browser, server, tmp_path):
    page = browser.new_page()
    page.goto(server.url)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a face\n" * 50)
    page.set_input_files("#face-file", str(notes))
    page.click("#face-upload")
    page.wait_for_function("document.getElementById('message').textContent.length > 0")
    assert "photo or a video" in page.text_content("#message")
    page.close()


def _canvas_image(page):
    """The canvas's pixels, BGR, as the page shows them."""
    import base64

    import cv2
    import numpy as np

    url = page.evaluate("document.getElementById('canvas').toDataURL('image/png')")
    png = base64.b64decode(url.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)


def test_page_shows_the_avatar_idle_speaks_and_interrupts_within_a_fifth_of_a_second(browser, server, tmp_path):
    """Choosing the photo opens a continuous session: the canvas shows the photo, idle, before
    any speech; a 3 s speech file is sent as a turn and its frames come speaking; "Interrupt"
    mid-turn brings the first idle frame within 0.2 s of the click (the page's clock); no
    script errors."""
    import cv2
    import numpy as np

    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(server.url)
    page.set_input_files("#face-file", str(FACE_IMAGE))
    page.click("#face-upload")
    page.wait_for_function("window.iplap.live && window.iplap.live.ready && window.iplap.live.log.length >= 10 "
                           "&& window.iplap.drawn >= 5", timeout=60_000)
    before = page.evaluate("window.iplap.live.log")
    assert before and not any(f["speaking"] for f in before)  # idle, before any speech
    shown = _canvas_image(page)
    assert shown.shape == (512, 512, 3)
    assert np.abs(shown - cv2.imread(str(FACE_IMAGE)).astype(np.int16)).mean() < 4  # the photo itself

    page.set_input_files("#speech-file", str(_speech(tmp_path / "speech.wav", 3.0)))
    page.click("#live-file")
    page.wait_for_function("window.iplap.live.log.filter(f => f.speaking).length >= 8 || "
                           "window.iplap.errors.length > 0", timeout=120_000)
    assert page.evaluate("window.iplap.errors") == []
    page.click("#interrupt")
    page.wait_for_function("window.iplap.live.idleDrawnAt !== null", timeout=10_000)
    live = page.evaluate("window.iplap.live")
    received, drawn = live["idleAt"] - live["interruptedAt"], live["idleDrawnAt"] - live["interruptedAt"]
    print(f"page: first idle frame {received:.0f} ms after the interrupt click, drawn after {drawn:.0f} ms")
    assert received < 200 and drawn < 200, (received, drawn)
    kinds = [(e["type"], e.get("interrupted")) for e in live["events"]]
    assert kinds == [("playback_started", None), ("playback_finished", True)], kinds
    after = [f for f in live["log"] if f["at"] >= live["idleAt"]]
    assert after and not any(f["speaking"] for f in after)
    assert "interrupted" in page.text_content("#live-status")
    page.wait_for_function("window.iplap.end !== null && window.iplap.end.interrupted === 1")
    assert "1 interrupted" in page.text_content("#live-stats")
    assert problems == [], problems
    page.close()
