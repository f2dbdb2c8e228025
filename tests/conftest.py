"""Shared fixtures: a registry with small counting test nodes beside the built-in plugins."""

from __future__ import annotations

import types
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import pytest

import sfumato
from sfumato import Field, RunContext, node

CALLS: Counter[str] = Counter()


@node("test.number", category="test", output="value")
def number(value: float = 1.0) -> float:
    """Emit a number."""
    CALLS["test.number"] += 1
    return value


@node("test.add", category="test", output="value")
def add(a: float, b: Annotated[float, Field(ge=-100, le=100)] = 0.0) -> float:
    """Add two numbers."""
    CALLS["test.add"] += 1
    return a + b


@node("test.fail", category="test", output="value")
def fail(a: float, message: str = "boom") -> float:
    """Always raise."""
    CALLS["test.fail"] += 1
    raise RuntimeError(message)


@node("test.record", category="test", output_node=True, output="value")
def record(a: float, context: RunContext) -> float:
    """A side-effect sink that reports progress."""
    CALLS["test.record"] += 1
    context.progress(1, 1)
    return a


@node("test.stats", category="test", outputs={"total": float, "count": int})
def stats(values: list[str]) -> dict[str, Any]:
    """Two named outputs."""
    return {"total": float(sum(len(v) for v in values)), "count": len(values)}


@node("test.clock", category="test", cache=sfumato.CachePolicy.volatile(), output="value")
def clock() -> float:
    """Reads the world: never cached."""
    CALLS["test.clock"] += 1
    return float(CALLS["test.clock"])


@node("test.counter", category="test", output="value")
class Counter_:
    """A stateful class node: counts its own calls."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, a: float) -> float:
        self.calls += 1
        return a + self.calls


BATCH_SIZES: list[int] = []


def _scale_batch(calls: list[dict[str, Any]]) -> list[float]:
    BATCH_SIZES.append(len(calls))
    if any(call["factor"] < 0 for call in calls):
        raise ValueError("negative factor")
    return [call["a"] * call["factor"] for call in calls]


@node("test.scale", category="test", output="value", batch=_scale_batch)
def scale(a: float, factor: float = 2.0) -> float:
    """Multiply; declares a batch function (sweeps merge its calls)."""
    CALLS["test.scale"] += 1
    if factor < 0:
        raise ValueError("negative factor")
    return a * factor


test_plugin = types.ModuleType("sfumato_test_nodes")


@sfumato.hookimpl
def _node_types() -> list[Any]:
    return [number, add, fail, record, stats, clock, Counter_, scale]


test_plugin.sfumato_node_types = _node_types  # type: ignore[attr-defined]


@pytest.fixture
def registry() -> sfumato.Registry:
    """Installed plugins plus the test nodes."""
    CALLS.clear()
    BATCH_SIZES.clear()
    return sfumato.Registry.load(plugins=[test_plugin])


@pytest.fixture
def engine(registry: sfumato.Registry, tmp_path: Any) -> sfumato.Engine:
    return sfumato.Engine(registry, device="cpu", output_dir=tmp_path / "out")


def chain_graph(length: int, value: float = 1.0) -> sfumato.Graph:
    """number -> add -> add ... with the last node as the graph output."""
    builder = sfumato.GraphBuilder("chain")
    previous = builder.add("test.number", "n0", value=value)
    for index in range(1, length):
        previous = builder.add("test.add", f"n{index}", a=previous["value"], b=1.0)
    builder.output("result", previous["value"])
    return builder.build()


REPO = Path(__file__).resolve().parents[1]
#: Where a run writes by default when a test forgets its tmp_path: the CLI and Engine's out/, the server's data.
_DEFAULT_OUTPUTS = ("out", "sfumato-data", "runs", "docs-build")


def _default_output_files() -> set[Path]:
    files = {path for name in _DEFAULT_OUTPUTS for path in (REPO / name).rglob("*") if path.is_file()}
    return files | set(REPO.glob("*.png"))


@pytest.fixture(scope="session", autouse=True)
def nothing_is_written_into_the_repository():
    """Tests write into tmp_path only: fail the session if one left files in the repository's output folders."""
    before = _default_output_files()
    yield
    written = sorted(str(path.relative_to(REPO)) for path in _default_output_files() - before)
    assert not written, f"tests wrote into the repository (use tmp_path): {written[:10]}"
