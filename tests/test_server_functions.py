"""Graphs served as functions: POST /api/graphs/{name}/run, its schemas, idempotency, webhooks, keep_going."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sfumato_server.app import ServerConfig, create_app
from sfumato_server.store import JobStore
from sfumato_server.webhooks import WebhookPolicy, parse_allowed

REPO = Path(__file__).resolve().parents[1]

#: Two independent branches: 'good' makes a text and saves a card of it; 'bad' fails (a template field with no value).
TWO_BRANCHES = {"version": 1, "name": "two-branches", "params": {"text": {"type": "str", "default": "  fine  text "}},
                "nodes": {
                    "good": {"type": "text.normalize", "inputs": {"text": {"param": "text"}}},
                    "card": {"type": "image.text_card", "inputs": {"text": {"from": "good.text"}, "width": 64,
                                                                   "height": 64}},
                    "save": {"type": "image.save", "inputs": {"images": {"from": "card.images"}}},
                    "bad": {"type": "text.template", "inputs": {"template": "{missing}"}}},
                "outputs": {"good": "good.text", "bad": "bad.text"}}


def make_client(data: Path, **options) -> TestClient:
    graphs = data.parent / f"{data.name}-graphs"
    graphs.mkdir(exist_ok=True)
    (graphs / "two-branches.json").write_text(json.dumps(TWO_BRANCHES))
    config = ServerConfig(data=data, graphs=graphs, device="cpu", **options)
    return TestClient(create_app(config), base_url="http://127.0.0.1")


def wait_for(client: TestClient, job_id: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not end")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with make_client(tmp_path_factory.mktemp("functions")) as instance:
        yield instance


# -- the function and its schemas -------------------------------------------------------------------


def test_each_graph_is_a_function_with_its_input_and_output_schema_in_the_openapi_document(client):
    document = client.get("/api/openapi.json").json()
    operation = document["paths"]["/api/graphs/prompt-card/run"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schemas = document["components"]["schemas"]
    params = schemas[body.rsplit("/", 1)[1]]
    assert params["properties"]["seed"] == {"type": "integer", "description": "recorded in file names and metadata",
                                            "default": 0}
    assert params["additionalProperties"] is False
    assert schemas["prompt-card.outputs"]["properties"] == {"prompt": {"type": "string"}}
    result = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert schemas[result.rsplit("/", 1)[1]]["properties"]["outputs"] == {
        "$ref": "#/components/schemas/prompt-card.outputs"}
    # The range of a parameter is the one the engine enforces: its own, narrowed by the inputs it feeds.
    steps = schemas["text-to-image.params"]["properties"]["steps"]
    assert steps["type"] == "integer" and steps["minimum"] == 1 and steps["maximum"] == 200
    # Graphs from the server's graph folder are functions too.
    assert "/api/graphs/two-branches/run" in document["paths"]
    assert schemas["two-branches.outputs"]["properties"]["good"] == {"type": "string"}


def test_a_graph_function_with_wait_answers_its_outputs(client):
    response = client.post("/api/graphs/prompt-card/run?wait=true", json={"prompt": "a blue square"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "done" and result["partial"] is False
    assert result["outputs"] == {"prompt": "a picture of a blue square, flat colours, centred"}
    [image] = result["files"]
    assert client.get(image).content[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_graph_function_queues_a_job_and_answers_202_with_its_url(client):
    response = client.post("/api/graphs/prompt-card/run", json={"seed": 4})
    assert response.status_code == 202
    queued = response.json()
    assert response.headers["location"] == queued["url"] == f"/api/jobs/{queued['id']}"
    job = wait_for(client, queued["id"])
    assert job["status"] == "done" and job["params"] == {"seed": 4}
    assert job["result"]["outputs"] == {"prompt": "a picture of a red circle, flat colours, centred"}


def test_an_empty_body_runs_the_graph_with_its_defaults(client):
    response = client.post("/api/graphs/prompt-card/run?wait=true", content=b"",
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and response.json()["outputs"]["prompt"].startswith("a picture of a red")


def test_bad_parameters_are_refused_with_400_naming_the_parameter_and_value(client):
    response = client.post("/api/graphs/text-to-image/run", json={"seed": "abc", "steps": 0, "colour": "red"})
    assert response.status_code == 400
    body = response.json()
    problems = {issue["parameter"]: issue for issue in body["issues"]}
    assert set(problems) == {"seed", "steps", "colour"}
    assert "'abc'" in problems["seed"]["message"] and problems["seed"]["value"] == "abc"
    assert "0 is below the minimum 1" in problems["steps"]["message"]
    assert "unknown parameter 'colour'" in problems["colour"]["message"] and "'red'" in body["error"]
    response = client.post("/api/graphs/prompt-card/run", json=["not", "an", "object"])
    assert response.status_code == 400 and "parameters" in response.json()["error"]


def test_a_misspelt_option_or_a_parameter_in_the_url_is_refused_not_ignored(client):
    response = client.post("/api/graphs/prompt-card/run?wiat=true&seed=3", json={})
    assert response.status_code == 400
    assert "'seed', 'wiat'" in response.json()["error"] and "JSON body" in response.json()["error"]


def test_an_unknown_graph_function_is_404(client):
    response = client.post("/api/graphs/no-such-graph/run", json={})
    assert response.status_code == 404 and "no graph named 'no-such-graph'" in response.json()["error"]


def test_a_graph_file_that_does_not_load_is_left_out_of_the_openapi_document_and_its_run_is_400(tmp_path):
    graphs = tmp_path / "data-graphs"
    graphs.mkdir()
    (graphs / "broken.json").write_text("{not json")
    (graphs / "unknown-node.json").write_text(json.dumps(
        {"version": 1, "name": "unknown-node", "nodes": {"a": {"type": "text.normalise", "inputs": {"text": "x"}}}}))
    with make_client(tmp_path / "data") as client:
        paths = client.get("/api/openapi.json").json()["paths"]
        assert "/api/graphs/prompt-card/run" in paths
        assert "/api/graphs/broken/run" not in paths and "/api/graphs/unknown-node/run" not in paths
        assert client.post("/api/graphs/broken/run", json={}).status_code == 400
        response = client.post("/api/graphs/unknown-node/run", json={})
        assert response.status_code == 400
        assert "did you mean 'text.normalize'" in response.json()["issues"][0]["message"]


def test_waiting_is_bounded_and_answers_408_with_the_job_url_while_the_job_goes_on(tmp_path):
    with make_client(tmp_path / "data", max_wait_s=0.3) as client:
        worker, gate = client.app.state.worker, threading.Event()
        run = worker.execute
        worker.execute = lambda job: (gate.wait(60), run(job))  # hold the job until the wait has given up
        response = client.post("/api/graphs/prompt-card/run?wait=true&timeout=3600", json={})
        assert response.status_code == 408
        body = response.json()
        assert "did not end within 0.3 s" in body["error"] and body["url"] == f"/api/jobs/{body['id']}"
        gate.set()
        assert wait_for(client, body["id"])["status"] == "done"


# -- idempotency -----------------------------------------------------------------------------------


def test_a_repeated_submit_with_the_same_idempotency_key_returns_the_same_job(client):
    key = {"Idempotency-Key": "order-7f3a"}
    first = client.post("/api/graphs/prompt-card/run", json={"seed": 7}, headers=key)
    again = client.post("/api/graphs/prompt-card/run", json={"seed": 7}, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.json()["replayed"] is True
    waited = client.post("/api/graphs/prompt-card/run?wait=true", json={"seed": 7}, headers=key)
    assert waited.status_code == 200 and waited.json()["id"] == first.json()["id"]
    jobs = client.get("/api/jobs").json()["jobs"]
    assert [job["params"] for job in jobs].count({"seed": 7}) == 1
    # The job queue's own endpoint honours keys too.
    queued = client.post("/api/jobs", json={"graph": "prompt-card"}, headers={"Idempotency-Key": "job-1"}).json()
    assert client.post("/api/jobs", json={"graph": "prompt-card"},
                       headers={"Idempotency-Key": "job-1"}).json()["id"] == queued["id"]


def test_an_idempotency_key_reused_with_a_different_body_is_refused_with_422(client):
    key = {"Idempotency-Key": "reused-key"}
    first = client.post("/api/graphs/prompt-card/run", json={"seed": 1}, headers=key).json()
    response = client.post("/api/graphs/prompt-card/run", json={"seed": 2}, headers=key)
    assert response.status_code == 422
    assert f"already used for job {first['id']} with a different request" in response.json()["error"]
    other_graph = client.post("/api/graphs/two-branches/run", json={}, headers=key)
    assert other_graph.status_code == 422
    bad_key = client.post("/api/graphs/prompt-card/run", json={}, headers={"Idempotency-Key": "x" * 300})
    assert bad_key.status_code == 400 and "Idempotency-Key" in bad_key.json()["error"]


def test_idempotency_keys_survive_a_restart(tmp_path):
    with make_client(tmp_path / "data") as client:
        first = client.post("/api/graphs/prompt-card/run", json={}, headers={"Idempotency-Key": "k"}).json()
        wait_for(client, first["id"])
    with make_client(tmp_path / "data") as client:
        again = client.post("/api/graphs/prompt-card/run", json={}, headers={"Idempotency-Key": "k"})
        assert again.json()["id"] == first["id"] and again.json()["status"] == "done"
        assert client.get("/api/jobs").json()["total"] == 1


def test_a_queue_database_from_before_job_options_is_upgraded_in_place(tmp_path):
    database = tmp_path / "queue.sqlite3"
    with sqlite3.connect(str(database)) as connection:
        connection.executescript("""CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, graph_name TEXT NOT NULL,
            graph TEXT NOT NULL, params TEXT NOT NULL, sweep TEXT, priority INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, started REAL,
            finished REAL, error TEXT, report TEXT, outputs TEXT);
            INSERT INTO jobs (graph_name, graph, params, status, created) VALUES ('old', '{}', '{}', 'done', 1.0);""")
    store = JobStore(database)
    assert store.get(1).graph_name == "old" and store.get(1).options == {}
    job_id, again = store.add_once("new", {}, {}, None, options={"keep_going": True}, idempotency=("k", "f"))
    assert not again and store.get(job_id).options == {"keep_going": True}


# -- webhooks --------------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers the first ``failures`` calls with 500."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[dict] = []
        self.paths: list[str] = []
        self.signatures: list[tuple[bytes, str | None]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # a followed 302 arrives as a GET
                receiver.paths.append(self.path)
                self.send_response(200)
                self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.paths.append(self.path)
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/secret")
                    self.end_headers()
                    return
                receiver.calls.append(json.loads(body))
                receiver.signatures.append((body, self.headers.get("X-Sfumato-Signature")))
                failed = len(receiver.calls) <= failures
                self.send_response(500 if failed else 200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.paths) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    instance = Receiver(failures=1)
    yield instance
    instance.close()


def webhook_policy(port: int) -> WebhookPolicy:
    return WebhookPolicy(allowed=(parse_allowed(f"127.0.0.1:{port}"),), first_delay_s=0.05, max_attempts=3)


def test_a_webhook_is_called_when_the_job_ends_and_retried_after_it_fails(tmp_path, receiver):
    with make_client(tmp_path / "data", webhooks=webhook_policy(receiver.port)) as client:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        job = client.post("/api/graphs/prompt-card/run", params={"webhook": url}, json={"prompt": "hooked"}).json()
        receiver.wait(2)
        # The first call was answered 500; the second, after a pause, delivered the same result.
        assert len(receiver.calls) == 2 and receiver.calls[0] == receiver.calls[1]
        delivered = receiver.calls[1]
        assert delivered["id"] == job["id"] and delivered["status"] == "done"
        assert delivered["outputs"] == {"prompt": "a picture of hooked, flat colours, centred"}
        assert receiver.signatures[1][1] is None  # no --webhook-secret: unsigned
        deadline = time.monotonic() + 30
        while not client.get(f"/api/jobs/{job['id']}").json()["webhook"]["delivered"] and time.monotonic() < deadline:
            time.sleep(0.05)
        state = client.get(f"/api/jobs/{job['id']}").json()["webhook"]
        assert state["delivered"] is True and state["attempts"] == 2


def test_a_receiver_that_does_not_answer_never_stalls_the_next_jobs(tmp_path):
    gate, arrived = threading.Event(), threading.Event()

    class Stuck(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            arrived.set()
            gate.wait(60)  # holds the webhook call open until the test is done
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    stuck = ThreadingHTTPServer(("127.0.0.1", 0), Stuck)
    threading.Thread(target=stuck.serve_forever, daemon=True).start()
    try:
        policy = WebhookPolicy(allowed=(parse_allowed(f"127.0.0.1:{stuck.server_address[1]}"),), timeout_s=60)
        with make_client(tmp_path / "data", webhooks=policy) as client:
            hook = f"http://127.0.0.1:{stuck.server_address[1]}/"
            client.post("/api/graphs/prompt-card/run", params={"webhook": hook}, json={"seed": 1})
            assert arrived.wait(60)
            # The first job's webhook call hangs; the next job runs and ends all the same.
            response = client.post("/api/graphs/prompt-card/run?wait=true&timeout=60", json={"seed": 2})
            assert response.status_code == 200 and response.json()["status"] == "done"
            gate.set()
    finally:
        gate.set()
        stuck.shutdown()
        stuck.server_close()


def test_webhook_calls_are_signed_with_the_operators_secret(tmp_path, receiver):
    import hashlib
    import hmac
    from dataclasses import replace

    policy = replace(webhook_policy(receiver.port), secret="s3cret")
    with make_client(tmp_path / "data", webhooks=policy) as client:
        client.post("/api/graphs/prompt-card/run", params={"webhook": f"http://127.0.0.1:{receiver.port}/"}, json={})
        receiver.wait(2)
    body, signature = receiver.signatures[-1]
    assert signature == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()


def test_a_webhook_still_owed_when_the_server_stopped_is_delivered_when_it_starts_again(tmp_path, receiver):
    store = JobStore(tmp_path / "data" / "queue.sqlite3")
    url = f"http://127.0.0.1:{receiver.port}/hook"
    job_id, _ = store.add_once("prompt-card", {}, {}, None, options={"webhook": url})
    store.finish(job_id, "done", report={"outputs": {"prompt": "made before the restart"}})
    with make_client(tmp_path / "data", webhooks=webhook_policy(receiver.port)):
        receiver.wait(2)
    assert [call["outputs"] for call in receiver.calls] == [{"prompt": "made before the restart"}] * 2
    assert store.get(job_id).webhook["delivered"] is True


def test_a_webhook_to_a_host_the_operator_did_not_allow_is_refused_at_submit(tmp_path):
    with make_client(tmp_path / "data", webhooks=webhook_policy(8001)) as client:
        for url, reason in [("http://169.254.169.254/latest/meta-data", "not allowed"),
                            ("http://127.0.0.1:8002/hook", "not allowed"),
                            ("http://user:pw@127.0.0.1:8001/hook", "user name or password"),
                            ("file:///etc/passwd", "not an http or https URL")]:
            response = client.post("/api/graphs/prompt-card/run", params={"webhook": url}, json={})
            assert response.status_code == 400 and reason in response.json()["error"], url
            response = client.post("/api/jobs", json={"graph": "prompt-card", "webhook": url})
            assert response.status_code == 400, url
        assert client.get("/api/jobs").json()["total"] == 0
    with make_client(tmp_path / "other") as client:
        response = client.post("/api/graphs/prompt-card/run", params={"webhook": "http://127.0.0.1:8001/"}, json={})
        assert response.status_code == 400 and "--webhook-allow" in response.json()["error"]


def test_a_webhook_redirect_is_not_followed(tmp_path):
    receiver = Receiver()
    try:
        policy = WebhookPolicy(allowed=(parse_allowed(f"127.0.0.1:{receiver.port}"),), first_delay_s=0.05,
                               max_attempts=2)
        with make_client(tmp_path / "data", webhooks=policy) as client:
            url = f"http://127.0.0.1:{receiver.port}/redirect"
            job = client.post("/api/graphs/prompt-card/run", params={"webhook": url}, json={}).json()
            receiver.wait(2)
            deadline = time.monotonic() + 30
            while not client.get(f"/api/jobs/{job['id']}").json()["webhook"].get("gave_up") \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            state = client.get(f"/api/jobs/{job['id']}").json()["webhook"]
        assert receiver.paths == ["/redirect", "/redirect"] and receiver.calls == []
        assert state["delivered"] is False and state["gave_up"] is True and state["last_error"] == "HTTP 302"
    finally:
        receiver.close()


def test_webhook_allow_on_the_command_line_is_checked(tmp_path, capsys):
    from sfumato.cli import main

    assert main(["serve", "--data", str(tmp_path), "--webhook-allow", "http://example.com/x"]) == 2
    assert "--webhook-allow" in capsys.readouterr().err
    assert parse_allowed("hooks.example.com") == ("hooks.example.com", None)
    assert parse_allowed("[::1]:9000") == ("::1", 9000)


# -- keep_going ------------------------------------------------------------------------------------


def test_keep_going_keeps_the_outputs_of_the_branches_that_finished(client):
    response = client.post("/api/graphs/two-branches/run?wait=true&keep_going=true", json={})
    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "failed" and result["partial"] is True
    assert result["outputs"] == {"good": "fine text"}
    assert "bad (text.template)" in result["error"]
    [image] = result["files"]
    assert client.get(image).content[:8] == b"\x89PNG\r\n\x1a\n"
    job = client.get(result["url"]).json()
    assert job["report"]["nodes"]["save"]["status"] == "ran" and job["report"]["nodes"]["bad"]["status"] == "failed"
    # The same through the job queue's own endpoint.
    queued = client.post("/api/jobs", json={"graph": "two-branches", "keep_going": True}).json()
    assert wait_for(client, queued["id"])["result"]["outputs"] == {"good": "fine text"}


def test_serve_refuses_an_unknown_executor_naming_the_known_ones(tmp_path, capsys):
    from sfumato.cli import main

    assert main(["serve", "--data", str(tmp_path), "--executor", "kubernetes"]) == 2
    error = capsys.readouterr().err
    assert "unknown executor 'kubernetes'" in error and "ray" in error


def test_sfumato_serve_calls_webhooks_of_the_hosts_given_by_webhook_allow(tmp_path):
    from test_server import Server

    receiver = Receiver()
    server = Server(tmp_path / "data", "--webhook-allow", f"127.0.0.1:{receiver.port}").start()
    try:
        hook = f"http://127.0.0.1:{receiver.port}/done"
        status, job = server.request("POST", "/api/graphs/prompt-card/run?webhook=" + hook, {"seed": 2})
        assert status == 202
        receiver.wait(1)
        assert receiver.calls[0]["id"] == job["id"] and receiver.calls[0]["status"] == "done"
        other = f"http://127.0.0.1:{receiver.port + 1}/"
        status, refused = server.request("POST", f"/api/graphs/prompt-card/run?webhook={other}", {})
        assert status == 400 and "not allowed" in refused["error"]
    finally:
        server.stop()
        receiver.close()
