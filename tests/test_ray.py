"""The Ray executor on a private local cluster of 2 CPUs: same results as local, survives a dead worker."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from sfumato import Engine, Graph
from tiny_models import save_tiny_zoo_diffusion

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def private_ray(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    yield
    if ray.is_initialized():
        ray.shutdown()


def _graph(model, steps=3) -> Graph:
    return Graph.from_dict({"version": 1, "name": "t2i", "params": {
        "prompt": {"type": "str", "default": "a red circle"}, "seed": {"type": "int", "default": 0}}, "nodes": {
        "enc": {"type": "encode.text", "inputs": {"texts": {"param": "prompt"}}},
        "gen": {"type": "generate.image", "inputs": {"conditioning": {"from": "enc.conditioning"}, "model": str(model),
                                                     "steps": steps, "seed": {"param": "seed"}}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "gen.images"},
                                                  "template": "{graph}-{seed}-{index}.png"}}}})


def _pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_ray_executor_equals_local_executor(tmp_path):
    from sfumato_ray.executor import RayExecutor

    model = save_tiny_zoo_diffusion(tmp_path / "model")
    param_sets = [{"seed": s, "prompt": p} for s in range(2) for p in ("a red circle", "a blue square")]
    local = Engine(device="cpu", cache=False).run_many(_graph(model), param_sets, output_dir=tmp_path / "local")
    remote = RayExecutor(workers=2, device="cpu").run_many(_graph(model), param_sets, output_dir=tmp_path / "ray",
                                                           batch_size=2)
    assert [o.status for o in remote] == ["ok"] * 4
    assert len({o.worker for o in remote}) >= 1 and not ray.is_initialized()
    for here, there in zip(local, remote):
        assert [p.rsplit("/", 1)[1] for p in here.files] == [p.rsplit("/", 1)[1] for p in there.files]
        assert str(tmp_path / "ray") in there.files[0]
        assert np.abs(_pixels(here.files[0]) - _pixels(there.files[0])).max() <= 1


def test_a_killed_worker_is_replaced_and_its_runs_retried(tmp_path):
    from sfumato_ray.executor import RayExecutor

    model = save_tiny_zoo_diffusion(tmp_path / "model")
    executor = RayExecutor(workers=2, device="cpu")
    param_sets = [{"seed": s} for s in range(6)]
    result: dict = {}

    def run() -> None:
        result["outcomes"] = executor.run_many(_graph(model, steps=40), param_sets, output_dir=tmp_path / "out",
                                               batch_size=1)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while executor.dispatched < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    victim = executor.actors[0]
    ray.kill(victim, no_restart=True)
    thread.join(timeout=300)
    outcomes = result["outcomes"]
    assert [o.status for o in outcomes] == ["ok"] * 6
    assert any(o.attempts == 2 for o in outcomes)
    assert len({f for o in outcomes for f in o.files}) == 6


def test_ray_executor_reports_each_run_as_it_finishes(tmp_path):
    from sfumato_ray.executor import RayExecutor

    model = save_tiny_zoo_diffusion(tmp_path / "model")
    finished = []
    outcomes = RayExecutor(workers=2, device="cpu").run_many(
        _graph(model), [{"seed": s} for s in range(4)], output_dir=tmp_path / "ray", batch_size=1,
        on_outcome=lambda outcome: finished.append((outcome.index, outcome.status, len(outcome.files))))
    assert sorted(finished) == [(i, "ok", 1) for i in range(4)]
    assert [o.status for o in outcomes] == ["ok"] * 4


def test_a_ray_sweep_from_the_cli_passes_its_progress_to_the_executor(tmp_path, monkeypatch, capsys):
    import json

    from sfumato.cli import main
    from sfumato_ray.executor import RayExecutor

    import functools

    seen = []
    original = RayExecutor.run_many

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("on_outcome"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RayExecutor, "run_many", spy)
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps(_graph(save_tiny_zoo_diffusion(tmp_path / "model")).to_dict()))
    assert main(["run", str(graph), "--executor", "ray", "--workers", "1", "--device", "cpu",
                 "--sweep", "seed=0..1", "--out", str(tmp_path / "out"), "--json"]) == 0
    assert len(seen) == 1 and callable(seen[0])
    assert json.loads(capsys.readouterr().out)["counts"]["ok"] == 2
