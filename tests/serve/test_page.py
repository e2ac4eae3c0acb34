"""A real browser (Debian's chromium, driven by Playwright through executable_path) on the live page:
the decision text changes and the MJPEG stream image loads; with --token the page asks once."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.runtime.tiny_model import make_fused_model
from tests.serve.conftest import ServeProcess, alternating_video, wait_for

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the [test] extra) is not installed")
    exe = chromium_binary()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    return tmp, make_fused_model(tmp / "tiny.onnx", channel_order="BGR"), alternating_video(tmp / "alt.mp4", n=60, every=10, fps=10, size=(160, 120))


def test_page_shows_decisions_changing_and_the_stream(browser, tiny):
    tmp, model, video = tiny
    server = ServeProcess(["--model", str(model), "--device", f"door={video}", "--loop", "--realtime", "--stream-fps", "5"], tmp)
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        decision = page.locator("#cam-door .decision")
        decision.wait_for(timeout=60_000)
        seen = set()

        def two_decisions():
            text = decision.inner_text()
            if text and text != "…":
                seen.add(text)
            return len(seen) >= 2

        wait_for(two_decisions, 60, "the decision text to change", interval=0.2)
        assert seen <= {"biodegradable", "non-biodegradable", "uncertain"}
        page.wait_for_function("() => { const i = document.querySelector('#cam-door img.stream'); return i && i.complete && i.naturalWidth === 160; }", timeout=60_000)
        wait_for(lambda: page.locator("#cam-door .perf").last.inner_text().split()[0] not in ("0.0", ""), 30, "frames/s on the page")
        counts = {label: page.locator(f"#cam-door .count-{label}").inner_text() for label in ("B", "N", "uncertain")}
        assert int(counts["B"]) + int(counts["N"]) > 0
        assert page.locator("#health").inner_text() == "healthy"
        assert page.locator("#model").inner_text().startswith("tiny.onnx")
        assert not errors, errors
        page.close()
    finally:
        assert server.terminate() == 0, server.output


def test_page_asks_for_the_token_once(browser, tiny):
    tmp, model, _ = tiny
    server = ServeProcess(["--model", str(model), "--token", "s3cret"], tmp)
    try:
        import httpx

        assert httpx.get(server.url + "/api/v1/status").status_code == 401
        assert httpx.get(server.url + "/metrics").status_code == 401
        assert httpx.get(server.url + "/api/v1/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(server.url + "/api/v1/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(server.url + "/healthz").status_code == 200  # probes stay open
        context = browser.new_context()
        page = context.new_page()
        page.goto(server.url + "/")
        page.locator("#token-dialog[open]").wait_for(timeout=30_000)
        page.fill("#token-input", "s3cret")
        page.click("#token-form button")
        page.locator("#health.ok").wait_for(timeout=30_000)
        assert "No cameras" in page.locator("#view").inner_text()
        page.reload()  # asked once: the token is remembered
        page.locator("#health.ok").wait_for(timeout=30_000)
        assert page.locator("#token-dialog[open]").count() == 0
        context.close()
    finally:
        assert server.terminate() == 0, server.output


def test_review_view_labels_with_the_keyboard(browser, tmp_path):
    """The Review tab shows a collected frame with the model's guess; key 2 labels it N in labels.csv."""
    from tests.adapt.conftest import NEW_N, solid
    from tests.serve.conftest import write_video

    model = make_fused_model(tmp_path / "tiny.onnx", channel_order="BGR", with_embedding=True)
    video = write_video(tmp_path / "glass.mp4", [solid(NEW_N, i)[..., ::-1].copy() for i in range(20)], fps=10)
    folder = tmp_path / "collected"
    server = ServeProcess(["--model", str(model), "--device", str(video), "--loop", "--realtime", "--collect", str(folder),
                           "--collect-below", "0.95", "--collect-every", "0", "--collect-dedup", "-1", "--collect-max", "5"], tmp_path)
    try:
        wait_for(lambda: len(list(folder.glob("*.jpg"))) >= 2, 60, "two collected frames")
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/#review")
        page.wait_for_function("() => { const i = document.querySelector('img.review-frame'); return i && i.complete && i.naturalWidth === 64; }", timeout=60_000)
        assert "model's guess: B" in page.locator(".guess").inner_text()
        first = page.locator("img.review-frame").get_attribute("alt")
        page.keyboard.press("2")
        wait_for(lambda: (folder / "labels.csv").is_file() and f"{first},N" in (folder / "labels.csv").read_text(), 20, "labels.csv to get the label")
        page.wait_for_function(f"() => document.querySelector('img.review-frame')?.alt !== {first!r}", timeout=20_000)
        assert not errors, errors
    finally:
        assert server.terminate() == 0, server.output
