"""The server under load and damage: nothing blocks the event loop, the worker never dies silently,
a damaged queue database stops the start with a clear error."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_server import REPO, SLOW_GRAPH, Server

TRIVIAL = {"version": 1, "name": "trivial", "params": {"text": {"type": "str", "default": "x"}},
           "nodes": {"clean": {"type": "text.normalize", "inputs": {"text": {"param": "text"}}}},
           "outputs": {"text": "clean.text"}}


def chain_graph(length: int) -> dict:
    """A long chain of cheap nodes: planning it takes a while, running it is never asked for here."""
    nodes = {"n0": {"type": "text.normalize", "inputs": {"text": {"param": "text"}}}}
    for index in range(1, length):
        nodes[f"n{index}"] = {"type": "text.normalize", "inputs": {"text": {"from": f"n{index - 1}.text"}}}
    return {"version": 1, "name": "chain", "params": {"text": {"type": "str", "default": "x"}}, "nodes": nodes}


def peak_memory_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = Server(tmp_path_factory.mktemp("robust")).start()
    yield instance
    instance.stop()


# -- 13.4: nothing blocks the event loop ---------------------------------------------------------


@pytest.mark.slow
def test_validation_runs_off_the_event_loop(server):
    # 256 runs of a 1,500-node chain take seconds to validate; the last run's value is
    # invalid, so the job is refused after all of them were planned (and nothing runs).
    values = [f"value {i}" for i in range(255)] + [5]
    body = {"graph": chain_graph(1500), "sweep": {"axes": {"text": values}}}
    answer: dict = {}
    slow = threading.Thread(target=lambda: answer.update(result=server.request("POST", "/api/jobs", body)))
    slow.start()
    time.sleep(0.5)  # let the request reach the server and start validating
    status, _ = server.request("GET", "/api/jobs?limit=1")
    # Answered while the heavy request is still being validated: the event loop was free.
    still_validating = slow.is_alive()
    slow.join()
    assert status == 200 and still_validating
    status, refused = answer["result"]
    assert status == 400 and "text" in refused["issues"][0]["message"]


def test_huge_sweep_range_is_refused_without_allocating(server):
    before = peak_memory_kib(server.process.pid)
    status, body = server.request("POST", "/api/jobs", {"graph": "prompt-card",
                                                        "sweep": {"axes": {"seed": {"from": 0, "to": 20_000_000}}}})
    assert status == 413 and "20000001 runs" in body["error"] and "256" in body["error"]
    assert peak_memory_kib(server.process.pid) - before < 50_000  # KiB; building the runs would take GBs


def test_sweep_limit_is_configurable(tmp_path):
    server = Server(tmp_path, "--max-sweep-runs", "3").start()
    try:
        status, body = server.request("POST", "/api/jobs", {"graph": TRIVIAL, "sweep": {"axes": {"text": list("abcd")}}})
        assert status == 413 and "limit is 3" in body["error"]
        assert server.request("POST", "/api/jobs", {"graph": TRIVIAL, "sweep": {"axes": {"text": list("abc")}}})[0] == 201
    finally:
        server.stop()


def test_server_resource_limits_are_tighter_than_the_command_line_and_configurable(server, tmp_path):
    # A 200,000-character template result is fine on the command line (limit 1,000,000), not on a server.
    graph = {"version": 1, "name": "wide", "nodes": {
        "t": {"type": "text.template", "inputs": {"template": "{subject:>200000}", "subject": "x"}}},
        "outputs": {"text": "t.text"}}
    status, body = server.request("POST", "/api/jobs", {"graph": graph})
    assert status == 400 and "limit of 100,000" in body["issues"][0]["message"]
    wider = Server(tmp_path, "--max-text-length", "300000").start()
    try:
        assert wider.request("POST", "/api/jobs", {"graph": graph})[0] == 201
    finally:
        wider.stop()


# -- 13.6: the worker never dies silently -----------------------------------------------------------


def test_health_endpoint_reports_the_worker(server):
    status, health = server.request("GET", "/api/health")
    assert status == 200 and health["status"] == "ok"
    assert health["worker"]["alive"] is True and health["worker"]["restarts"] == 0
    assert set(health["queue"]) == {"queued", "running"}


@pytest.mark.slow
def test_locked_database_is_waited_out_and_jobs_finish(tmp_path):
    server = Server(tmp_path).start()
    try:
        job = server.request("POST", "/api/jobs", {"graph": SLOW_GRAPH})[1]["id"]
        locker = sqlite3.connect(str(tmp_path / "queue.sqlite3"), isolation_level=None, timeout=30)
        locker.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                health = server.request("GET", "/api/health")[1]
                if "database" in health["worker"]["state"]:
                    break
                time.sleep(0.1)
            assert "locked" in health["worker"]["state"] and health["status"] == "degraded"
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert server.wait(job)["status"] == "done"
        second = server.request("POST", "/api/jobs", {"graph": TRIVIAL})[1]["id"]
        assert server.wait(second)["status"] == "done"
        health = server.request("GET", "/api/health")[1]
        assert health["status"] == "ok" and health["worker"]["alive"]
    finally:
        server.stop()


def test_damaged_job_row_fails_with_its_reason(tmp_path):
    server = Server(tmp_path).start()
    try:
        with sqlite3.connect(str(tmp_path / "queue.sqlite3"), isolation_level=None) as database:
            damaged = database.execute(
                "INSERT INTO jobs (graph_name, graph, params, priority, status, created) "
                "VALUES ('x', '{not json', '{}', 5, 'queued', 0)").lastrowid
        good = server.request("POST", "/api/jobs", {"graph": TRIVIAL})[1]["id"]
        failed = server.wait(damaged, timeout=60)
        assert failed["status"] == "failed" and "damaged" in failed["error"] and "graph" in failed["error"]
        assert server.wait(good, timeout=60)["status"] == "done"
        status, listing = server.request("GET", "/api/jobs")
        assert status == 200 and {damaged, good} <= {job["id"] for job in listing["jobs"]}
    finally:
        server.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_crashed_worker_thread_is_restarted(tmp_path):
    from fastapi.testclient import TestClient
    from sfumato_server.app import ServerConfig, create_app

    app = create_app(ServerConfig(data=tmp_path, graphs=REPO / "graphs", device="cpu"))
    store, worker = app.state.store, app.state.worker
    real_claim = store.claim_next
    crashes = [RuntimeError("disk on fire"), SystemExit(3)]

    def claim_that_crashes_twice():
        if crashes:
            raise crashes.pop(0)
        return real_claim()

    store.claim_next = claim_that_crashes_twice
    with TestClient(app, base_url="http://127.0.0.1") as client:
        # The RuntimeError restarts the loop; the SystemExit ends the thread and the watchdog starts a new one.
        deadline = time.monotonic() + 60
        job = client.post("/api/jobs", json={"graph": TRIVIAL}).json()["id"]
        while time.monotonic() < deadline and client.get(f"/api/jobs/{job}").json()["status"] != "done":
            time.sleep(0.05)
        assert client.get(f"/api/jobs/{job}").json()["status"] == "done"
        health = client.get("/api/health").json()
    assert health["worker"]["alive"] and health["worker"]["restarts"] >= 2
    assert "disk on fire" in health["worker"]["last_error"]
    worker.stop()


# -- a damaged queue database at start ----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "foreign-table"])
def test_damaged_queue_database_stops_the_start_with_a_clear_error(tmp_path, damage):
    database = tmp_path / "queue.sqlite3"
    if damage == "garbage":
        database.write_bytes(b"this is not a database" * 1000)
    else:
        with sqlite3.connect(str(database)) as connection:
            connection.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT)")
    completed = subprocess.run([sys.executable, "-m", "sfumato.cli.main", "serve", "--port", "1", "--data",
                                str(tmp_path), "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "queue database" in completed.stderr and str(database) in completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout and "serving" not in completed.stdout


def test_serve_called_in_process_leaves_the_process_limits_as_they_were(tmp_path):
    from sfumato import current_limits
    from sfumato.cli import main

    before = current_limits()
    assert main(["serve", "--keep-days", "0", "--data", str(tmp_path / "data")]) == 2
    assert current_limits() == before
