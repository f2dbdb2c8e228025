"""The server: API against a real server on 127.0.0.1, durability across SIGKILL, and a real browser."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SLOW_GRAPH = {"version": 1, "name": "slow", "params": {"text": {"type": "str", "default": "x"}}, "nodes": {
    "card": {"type": "image.text_card", "inputs": {"text": {"param": "text"}, "width": 320, "height": 320}},
    "smooth": {"type": "image.denoise", "inputs": {"images": {"from": "card.images"}, "method": "bilateral", "size": 9}},
    "save": {"type": "image.save", "inputs": {"images": {"from": "smooth.images"}}}}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``sfumato serve`` in a subprocess."""

    def __init__(self, data: Path, *extra: str) -> None:
        self.port = free_port()
        self.data = data
        self.extra = extra
        self.token = extra[extra.index("--token") + 1] if "--token" in extra else None
        self.process: subprocess.Popen | None = None

    def start(self) -> "Server":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sfumato.cli.main", "serve", "--port", str(self.port), "--data", str(self.data),
             "--graphs", str(REPO / "graphs"), "--device", "cpu", *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/api/models")
                return self
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None:
                    raise RuntimeError(self.process.stdout.read())
                time.sleep(0.2)
        self.kill()  # never leave a server behind that a test cannot stop
        raise TimeoutError("server did not start")

    def request(self, method: str, path: str, body: object | None = None, token: str | None = "default",
                raw: bytes | None = None) -> tuple[int, object]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        token = self.token if token == "default" else token
        if token:
            # Header values travel as bytes: a non-ASCII token is sent as its UTF-8 bytes.
            request.add_header("Authorization", f"Bearer {token}".encode().decode("latin-1"))
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read()
                return response.status, json.loads(text) if text[:1] in (b"{", b"[") else text
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def wait(self, job_id: int, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, job = self.request("GET", f"/api/jobs/{job_id}")
            if job["status"] in ("done", "failed", "cancelled"):
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} did not finish")

    def events(self, job_id: int, timeout: float = 120) -> list[dict]:
        """Every Server-Sent Event of a job, read until the stream ends with the job."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/jobs/{job_id}/events")
        with urllib.request.urlopen(request, timeout=timeout) as stream:
            return [json.loads(line[6:]) for line in stream if line.startswith(b"data: ")]

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = Server(tmp_path_factory.mktemp("server")).start()
    yield instance
    instance.stop()


def test_submit_and_fetch_the_result(server):
    status, job = server.request("POST", "/api/jobs", {"graph": "prompt-card", "params": {"prompt": "a red circle"}})
    assert status == 201
    done = server.wait(job["id"])
    assert done["status"] == "done" and done["report"]["status"] == "ok"
    [output] = done["outputs"]
    status, image = server.request("GET", f"/api/files/{output}")
    assert status == 200 and image[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_streams_as_server_sent_events(server):
    status, job = server.request("POST", "/api/jobs", {"graph": SLOW_GRAPH, "params": {"text": "stream me"}})
    assert status == 201
    kinds = [event["type"] for event in server.events(job["id"])]
    assert kinds[0] == "status" and kinds[-1] == "job_done"
    assert "node_started" in kinds and "node_finished" in kinds


def test_invalid_graph_is_rejected_with_the_validation_issues(server):
    bad = {"version": 1, "nodes": {"a": {"type": "text.normalise", "inputs": {"text": "x"}}}}
    status, body = server.request("POST", "/api/jobs", {"graph": bad})
    assert status == 400 and body["issues"][0]["path"] == "nodes.a.type"
    assert "did you mean 'text.normalize'" in body["issues"][0]["message"]
    status, body = server.request("POST", "/api/jobs", {"graph": "prompt-card", "params": {"seed": "abc"}})
    assert status == 400 and "seed" in body["issues"][0]["message"]
    status, body = server.request("POST", "/api/jobs", {"graph": "no-such-graph"})
    assert status == 404


def test_cancel_a_queued_job_and_list_by_status(server):
    first = server.request("POST", "/api/jobs", {"graph": SLOW_GRAPH, "params": {"text": "one"}})[1]["id"]
    second = server.request("POST", "/api/jobs", {"graph": SLOW_GRAPH, "params": {"text": "two"}})[1]["id"]
    status, body = server.request("POST", f"/api/jobs/{second}/cancel")
    assert status == 200 and body["status"] in ("cancelled", "cancelling")
    assert server.wait(second)["status"] == "cancelled"
    assert server.wait(first)["status"] == "done"
    status, listing = server.request("GET", "/api/jobs?status=cancelled")
    assert second in [job["id"] for job in listing["jobs"]]
    assert server.request("POST", f"/api/jobs/{first}/cancel")[0] == 409


def test_catalogue_endpoints(server):
    _, graphs = server.request("GET", "/api/graphs")
    assert "text-to-image" in [g["name"] for g in graphs]
    _, nodes = server.request("GET", "/api/nodes")
    assert any(n["id"] == "image.sharpen" and "input_schema" in n for n in nodes)
    _, graph = server.request("GET", "/api/graphs/text-to-image")
    assert graph["svg"].startswith("<svg")


def test_body_size_limit(server):
    import http.client

    # Announce a 3 MB body and wait for the answer before sending it: the server
    # refuses from the header alone (sending first races the server closing).
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("POST", "/api/jobs")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(3 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 413 and "limit" in body["error"]


def test_token_is_required_when_configured(tmp_path):
    server = Server(tmp_path, "--token", "s3cret").start()
    try:
        assert server.request("GET", "/api/jobs", token=None)[0] == 401
        assert server.request("GET", "/api/jobs", token="wrong")[0] == 401
        assert server.request("GET", "/api/jobs")[0] == 200
    finally:
        server.stop()


def test_binding_beyond_loopback_requires_a_token(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "sfumato.cli.main", "serve", "--host", "0.0.0.0",
                                "--data", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and "--token" in completed.stdout


def test_queue_length_limit(tmp_path):
    server = Server(tmp_path, "--max-queued", "2").start()
    try:
        codes = [server.request("POST", "/api/jobs", {"graph": SLOW_GRAPH})[0] for _ in range(6)]
        assert 429 in codes
    finally:
        server.stop()


@pytest.mark.slow
def test_jobs_survive_a_sigkill_and_finish_exactly_once(tmp_path):
    server = Server(tmp_path).start()
    ids = [server.request("POST", "/api/jobs", {"graph": SLOW_GRAPH, "params": {"text": f"job {i}"}})[1]["id"]
           for i in range(50)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = server.request("GET", "/api/jobs?status=done&limit=1")[1]["total"]
        if done >= 5:
            break
        time.sleep(0.05)
    server.kill()
    restarted = Server(tmp_path).start()
    try:
        jobs = [restarted.wait(job_id, timeout=300) for job_id in ids]
    finally:
        restarted.stop()
    assert [job["status"] for job in jobs] == ["done"] * 50
    assert 5 <= sum(job["attempts"] == 1 for job in jobs) <= 50
    for job in jobs:
        [output] = job["outputs"]
        assert (tmp_path / "outputs" / output).exists()
        assert len(list((tmp_path / "outputs" / str(job["id"])).glob("*.png"))) == 1


@pytest.mark.slow
def test_browser_runs_text_to_image_and_opens_it_in_the_gallery(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    server = Server(tmp_path / "data").start()
    # Screenshots never go into the repository: $SFUMATO_SCREENSHOTS (CI artifacts) or tmp_path.
    artifacts = Path(os.environ.get("SFUMATO_SCREENSHOTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{server.port}/")
            page.wait_for_selector("#param-prompt")
            assert page.input_value("#graph-select") == "text-to-image"
            page.fill("#param-prompt", "a yellow circle on a gray background")
            page.fill("#param-steps", "8")
            page.click("#run-button")
            page.wait_for_selector("#result img", timeout=240_000)
            page.wait_for_function("document.querySelector('#result img').naturalWidth > 0")
            page.wait_for_selector("#gallery .thumb")
            page.screenshot(path=str(artifacts / "web-result.png"), full_page=True)
            page.click("#gallery .thumb")
            page.wait_for_selector("#detail[open] #detail-images img")
            assert "a yellow circle on a gray background" in page.inner_text("#detail-params")
            page.screenshot(path=str(artifacts / "web-detail.png"))
            browser.close()
    finally:
        server.stop()


def test_generation_streams_step_progress_with_previews(server):
    status, job = server.request("POST", "/api/jobs", {"graph": "text-to-image",
                                                       "params": {"steps": 5, "batch_size": 1}})
    assert status == 201
    steps = [event for event in server.events(job["id"]) if event["type"] == "node_progress"]
    assert [e["current"] for e in steps] == [1, 2, 3, 4, 5]
    assert all(e["preview"].startswith("data:image/png;base64,") for e in steps)


def test_server_dependencies_are_in_the_default_install():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {requirement.split(">")[0].split("=")[0].split("[")[0].strip().lower()
             for requirement in project["dependencies"]}
    assert {"fastapi", "uvicorn", "fastapi-offline"} <= names
    assert "server" not in project.get("optional-dependencies", {})



def test_cancelling_a_running_sweep_job_stops_it(server):
    texts = [f"run {index}" for index in range(200)]
    status, job = server.request("POST", "/api/jobs", {"graph": SLOW_GRAPH, "sweep": {"axes": {"text": texts}}})
    assert status == 201
    deadline = time.monotonic() + 60
    while server.request("GET", f"/api/jobs/{job['id']}")[1]["status"] != "running":
        assert time.monotonic() < deadline, "the sweep job never started"
        time.sleep(0.05)
    time.sleep(0.5)
    status, body = server.request("POST", f"/api/jobs/{job['id']}/cancel")
    assert status == 200
    finished = server.wait(job["id"])
    assert finished["status"] == "cancelled"
    assert len(finished.get("outputs") or []) < len(texts)
