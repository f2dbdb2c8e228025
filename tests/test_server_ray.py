"""``sfumato serve --executor ray``: queued jobs run on a local Ray cluster's actor, the SQLite queue in charge."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tiny_models import save_tiny_zoo_diffusion

from sfumato_server.app import ServerConfig, create_app

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def _graph(model: Path) -> dict:
    return {"version": 1, "name": "t2i", "params": {"seed": {"type": "int", "default": 0}}, "nodes": {
        "enc": {"type": "encode.text", "inputs": {"texts": "a red circle"}},
        "gen": {"type": "generate.image", "inputs": {"conditioning": {"from": "enc.conditioning"}, "model": str(model),
                                                     "steps": 2, "seed": {"param": "seed"}}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "gen.images"}}}}}


def _wait(client: TestClient, job_id: int, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not end")


def test_queued_jobs_run_on_a_ray_actor_that_keeps_its_models_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    model = save_tiny_zoo_diffusion(tmp_path / "model")
    config = ServerConfig(data=tmp_path / "data", device="cpu", executor="ray", allow_read=(tmp_path / "model",))
    try:
        # No --address: the server starts a private local cluster, and shuts it down when it stops.
        with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
            ids = [client.post("/api/jobs", json={"graph": _graph(model), "params": {"seed": seed}}).json()["id"]
                   for seed in (0, 1)]
            first, second = (_wait(client, job_id) for job_id in ids)
            assert ray.is_initialized()
            function = client.post("/api/graphs/prompt-card/run?wait=true&timeout=60", json={"prompt": "remote"})
        assert not ray.is_initialized()
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert first["status"] == second["status"] == "done", (first["error"], second["error"])
    # One actor ran both jobs, in another process; it loaded the model for the first job only.
    worker = first["report"]["worker"]
    assert worker and worker == second["report"]["worker"] and not worker.endswith(f":{os.getpid()}")
    loads = [[entry for entry in job["report"]["models"] if entry["event"] == "model_loaded"]
             for job in (first, second)]
    assert loads[0] and not loads[1]
    # The queue recorded the files the actor wrote, saved here where a local run would have.
    for job in (first, second):
        [image] = job["outputs"]
        assert (tmp_path / "data" / "outputs" / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert function.status_code == 200 and function.json()["outputs"]["prompt"] == \
        "a picture of remote, flat colours, centred"
