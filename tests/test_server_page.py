"""The web page and the API docs, in Debian's chromium (Playwright, headless) and over raw HTTP.

Screenshots go to ``$SFUMATO_SCREENSHOTS`` when set (CI artifacts), else into the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_server import Server

CHROMIUM = Path("/usr/bin/chromium")


def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SFUMATO_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def browser_or_skip(p):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    return p.chromium.launch(executable_path=str(CHROMIUM), args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"])


def failing_graph(data: Path) -> dict:
    """A graph that passes validation and fails at once: it loads a file that is not there."""
    return {"version": 1, "name": "fails-at-once", "description": "loads a missing picture",
            "params": {"path": {"type": "str", "default": str(data / "missing.png")}},
            "nodes": {"load": {"type": "image.load", "inputs": {"path": {"param": "path"}}},
                      "save": {"type": "image.save", "inputs": {"images": {"from": "load.images"}}}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = Server(tmp_path_factory.mktemp("page")).start()
    yield instance
    instance.stop()


# -- 12.5: docs offline ------------------------------------------------------------------------------


def test_api_docs_page_uses_only_local_assets(server):
    status, html = server.request("GET", "/api/docs")
    html = html.decode() if isinstance(html, bytes) else str(html)
    assert status == 200 and "swagger-ui" in html
    assert "cdn" not in html and "https://" not in html
    for asset in ("/api/docs/assets/swagger-ui-bundle.js", "/api/docs/assets/swagger-ui.css"):
        status, body = server.request("GET", asset)
        assert status == 200 and len(body) > 10_000, asset


def test_api_docs_need_no_token_but_the_api_does(tmp_path):
    server = Server(tmp_path, "--token", "t0ken").start()
    try:
        for path in ("/api/docs", "/api/openapi.json", "/api/docs/assets/swagger-ui.css"):
            assert server.request("GET", path, token=None)[0] == 200, path
        for path in ("/api/jobs", "/api/health", "/api/docsx"):
            assert server.request("GET", path, token=None)[0] == 401, path
    finally:
        server.stop()


@pytest.mark.slow
def test_api_docs_render_offline_in_chromium(server):
    playwright = pytest.importorskip("playwright.sync_api")
    outside: list[str] = []

    def offline(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with playwright.sync_playwright() as p:
        browser = browser_or_skip(p)
        page = browser.new_page()
        page.route("**/*", offline)
        page.goto(f"http://127.0.0.1:{server.port}/api/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=60_000)
        assert "sfumato" in page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector(".opblock")
        assert "/api/jobs" in page.inner_text(".swagger-ui")
        browser.close()
    assert outside == []


# -- 12.13: a job that fails at once ---------------------------------------------------------------


def test_event_stream_of_a_finished_job_carries_its_error(server):
    status, job = server.request("POST", "/api/jobs", {"graph": failing_graph(server.data)})
    assert status == 201
    failed = server.wait(job["id"])
    assert failed["status"] == "failed" and "missing.png" in failed["error"]
    [event] = server.events(job["id"])
    assert event["type"] == "status" and event["status"] == "failed" and "missing.png" in event["error"]


@pytest.mark.slow
def test_page_shows_an_immediate_failure_and_enables_run_again(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    data = tmp_path / "data"
    (graphs / "fails-at-once.json").write_text(json.dumps(failing_graph(data)))
    server = Server(data, "--graphs", str(graphs)).start()
    try:
        with playwright.sync_playwright() as p:
            browser = browser_or_skip(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{server.port}/")
            page.wait_for_selector("#param-prompt")
            page.select_option("#graph-select", "fails-at-once")
            page.click("#run-button")
            page.wait_for_function("document.querySelector('#status').textContent.includes('failed')")
            page.wait_for_function("!document.querySelector('#run-button').disabled")
            assert "missing.png" in page.inner_text("#job-error")
            page.screenshot(path=str(screenshots(tmp_path) / "page-failed-job.png"))
            browser.close()
    finally:
        server.stop()


# -- 12.14: one validation path ------------------------------------------------------------------------


def test_blank_required_model_is_refused_by_the_api_and_the_cli(server, tmp_path):
    status, body = server.request("POST", "/api/jobs", {"graph": "stable-diffusion", "params": {"model": ""}})
    assert status == 400
    api_message = body["issues"][0]["message"]
    assert "'model'" in api_message and "blank" in api_message
    completed = subprocess.run([sys.executable, "-m", "sfumato.cli.main", "validate", "stable-diffusion",
                                "--set", "model="], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert completed.returncode == 2
    assert api_message in completed.stdout + completed.stderr


# -- 12.15: the page at 1280x900 -------------------------------------------------------------------------


def test_favicon_is_served(server):
    for path in ("/favicon.ico", "/static/favicon.svg"):
        status, body = server.request("GET", path)
        assert status == 200 and b"<svg" in body


@pytest.mark.slow
def test_page_model_choice_status_fidelity_and_drawing_at_1280x900(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    shots = screenshots(tmp_path)
    _, models = server.request("GET", "/api/models")
    with playwright.sync_playwright() as p:
        browser = browser_or_skip(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://127.0.0.1:{server.port}/")
        page.wait_for_selector("#param-model")
        # The favicon is linked and loads.
        icon = page.get_attribute("link[rel=icon]", "href")
        assert page.evaluate(f"fetch('{icon}').then((r) => r.status)") == 200
        # `model` is a choice among the server's models, plus a folder.
        assert page.evaluate("document.querySelector('#param-model').tagName") == "SELECT"
        options = page.eval_on_selector_all("#param-model option", "els => els.map((e) => e.value)")
        assert {m["name"] for m in models} <= set(options) and "" in options
        assert page.input_value("#param-model") == "tiny-shapes-diffusion"
        assert page.is_hidden("#param-model-path")
        page.select_option("#param-model", "")
        assert page.is_visible("#param-model-path")
        page.screenshot(path=str(shots / "page-model-folder.png"))
        page.select_option("#param-model", "tiny-shapes-gan")
        page.fill("#param-prompt", "a blue square on a white background")
        page.fill("#param-batch_size", "2")
        page.click("#run-button")
        # The status stays in view after pressing Run.
        page.wait_for_function("document.querySelector('#status').textContent.startsWith('Job')")
        box = page.locator("#status").bounding_box()
        assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= 900
        page.screenshot(path=str(shots / "page-after-run.png"))
        page.wait_for_selector("#result img", timeout=240_000)
        # The fidelity score is shown with the results.
        page.wait_for_selector("#fidelity")
        assert "fidelity" in page.inner_text("#fidelity").lower()
        box = page.locator("#status").bounding_box()
        assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= 900
        page.screenshot(path=str(shots / "page-result.png"))
        # The workflow drawing fits its dialog.
        page.wait_for_selector("#gallery .thumb")
        page.click("#gallery .thumb")
        page.wait_for_selector("#detail[open] #detail-graph svg")
        dialog = page.locator("#detail").bounding_box()
        drawing = page.locator("#detail-graph svg").bounding_box()
        assert drawing["x"] >= dialog["x"] and drawing["x"] + drawing["width"] <= dialog["x"] + dialog["width"]
        assert "fidelity" in page.inner_text("#detail-params")
        assert "tiny-shapes-gan" in page.inner_text("#detail-params")
        page.screenshot(path=str(shots / "page-detail.png"))
        browser.close()
