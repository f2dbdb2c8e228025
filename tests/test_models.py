"""The model manager: load once, LRU eviction under a budget, offload to CPU, release, name resolution."""

from __future__ import annotations

import pytest

from sfumato import ModelManager, ModelNotFoundError, ModelSource


class FakeModule:
    """Stands in for a torch module: has parameters() and to()."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.moves: list[str] = []

    def parameters(self):
        return [FakeTensor(self.size)]

    def buffers(self):
        return []

    def to(self, device: str) -> "FakeModule":
        self.moves.append(device)
        return self


class FakeTensor:
    def __init__(self, size: int) -> None:
        self.size = size

    def numel(self) -> int:
        return self.size

    def element_size(self) -> int:
        return 1


def manager(**budgets: int) -> tuple[ModelManager, list]:
    events: list = []
    return ModelManager(max_bytes=budgets, emit=events.append), events


def test_a_model_loads_once_per_source_device_and_dtype():
    models, events = manager()
    loads = []
    for _ in range(3):
        models.get("a", "cpu", "float32", lambda: loads.append(1) or FakeModule(10))
    models.get("a", "cpu", "float16", lambda: loads.append(1) or FakeModule(10))
    assert len(loads) == 2 and [e.kind for e in events] == ["model_loaded", "model_loaded"]


def test_least_recently_used_is_evicted_under_a_cpu_budget():
    models, events = manager(cpu=25)
    for name in ("a", "b"):
        models.get(name, "cpu", "float32", lambda: FakeModule(10))
    models.get("a", "cpu", "float32", lambda: FakeModule(10))  # a is now the most recent
    models.get("c", "cpu", "float32", lambda: FakeModule(10))
    assert [key[0] for key in models.loaded()] == ["a", "c"]
    assert events[-1].kind == "model_evicted" and "b" in events[-1].key


def test_over_a_gpu_budget_models_move_to_the_cpu_and_back():
    models, events = manager(cuda=15)
    first = models.get("a", "cuda:0", "float16", lambda: FakeModule(10))
    models.get("b", "cuda:0", "float16", lambda: FakeModule(10))
    assert first.moves == ["cpu"] and models.offloaded() == [("a", "cuda:0", "float16")]
    assert "offloaded to CPU" in events[-1].reason
    assert models.bytes_on("cuda") == 10 and models.bytes_on("cpu") == 10
    again = models.get("a", "cuda:0", "float16", lambda: pytest.fail("must not reload from disk"))
    assert again is first and first.moves == ["cpu", "cuda:0"]
    assert ("b", "cuda:0", "float16") in models.offloaded()


def test_explicit_release():
    models, _ = manager()
    models.get("a", "cpu", "float32", lambda: FakeModule(1))
    models.get("b", "cpu", "float32", lambda: FakeModule(1))
    assert models.release("a") == 1 and [k[0] for k in models.loaded()] == ["b"]
    assert models.release() == 1 and models.loaded() == []


def test_names_resolve_through_sources_and_missing_ones_say_where_they_looked(tmp_path):
    (tmp_path / "weights").mkdir()
    models = ModelManager(sources={"mine": ModelSource("mine", tmp_path / "weights", plugin="p")})
    assert models.resolve("mine") == tmp_path / "weights"
    assert models.resolve(str(tmp_path / "weights")) == (tmp_path / "weights").resolve()
    assert models.resolve("org/model") == "org/model"  # a hub id is passed on to from_pretrained
    with pytest.raises(ModelNotFoundError, match="known: mine"):
        models.resolve("./nowhere")
    broken = ModelManager(sources={"gone": ModelSource("gone", tmp_path / "missing", plugin="p")})
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "missing")):
        broken.resolve("gone")
