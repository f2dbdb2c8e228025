"""Plugin discovery: quarantine, conflicts, disabling, third-party entry points."""

from __future__ import annotations

import sys
import textwrap
import types
from typing import Any

import sfumato
from sfumato import Graph, Registry, node, validate_graph


def _plugin(name: str, nodes: list[Any] | None = None, raises: bool = False) -> types.ModuleType:
    module = types.ModuleType(name)

    @sfumato.hookimpl
    def sfumato_node_types() -> list[Any]:
        if raises:
            raise RuntimeError("registration exploded")
        return nodes or []

    module.sfumato_node_types = sfumato_node_types  # type: ignore[attr-defined]
    return module


@node("dup.thing", category="test")
def thing_a(x: str) -> str:
    return x


@node("dup.thing", category="test")
def thing_b(x: str) -> str:
    return x + "!"


def test_plugin_failing_at_registration_is_quarantined_and_others_load():
    registry = Registry.load(entry_points=False, plugins=[_plugin("broken", raises=True),
                                                          _plugin("fine", [thing_a])])
    assert registry.plugins["broken"].status == "failed"
    assert "registration exploded" in registry.plugins["broken"].error
    assert registry.plugins["fine"].status == "ok" and "dup.thing" in registry.nodes


def test_duplicate_node_id_is_an_error_naming_both_plugins():
    registry = Registry.load(entry_points=False, plugins=[_plugin("alpha", [thing_a]), _plugin("beta", [thing_b])])
    assert "dup.thing" not in registry.nodes
    assert registry.conflicts["dup.thing"] == ["alpha", "beta"]
    assert "'beta'" in registry.plugins["alpha"].error and "'alpha'" in registry.plugins["beta"].error
    graph = Graph.from_dict({"version": 1, "nodes": {"t": {"type": "dup.thing", "inputs": {"x": "a"}}}})
    [issue] = validate_graph(graph, registry)
    assert "'alpha' and 'beta'" in issue.message


class Strange:
    """A class no plugin registered as a port type."""


class Celsius(float):
    """A plugin-defined port type, a subtype of Float."""


def test_node_with_unknown_port_type_quarantines_its_plugin():
    @node("odd.node")
    def odd(x: Strange) -> str:  # type: ignore[valid-type]
        return ""

    registry = Registry.load(entry_points=False, plugins=[_plugin("odd", [odd])])
    assert registry.plugins["odd"].status == "failed" and "no registered port type" in registry.plugins["odd"].error


def _write_dist(root, name: str, module_source: str, module: str) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[sfumato]\n{module} = {module}\n")


def test_third_party_distribution_on_sys_path_is_discovered(tmp_path, monkeypatch):
    _write_dist(tmp_path, "shout-nodes", """
        import sfumato

        @sfumato.node("shout.upper", category="text")
        def upper(text: str) -> str:
            '''Upper-case a text.'''
            return text.upper()

        @sfumato.hookimpl
        def sfumato_node_types():
            return [upper]
    """, "shout_nodes")
    _write_dist(tmp_path, "broken-nodes", "raise ImportError('missing dependency foo')\n", "broken_nodes")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry.load()
    record = registry.plugins["shout_nodes"]
    assert (record.status, record.distribution, record.version) == ("ok", "shout-nodes", "1.2.3")
    assert registry.plugins["broken_nodes"].status == "failed"
    assert "missing dependency foo" in registry.plugins["broken_nodes"].error
    graph = Graph.from_dict({"version": 1, "nodes": {"u": {"type": "shout.upper", "inputs": {"text": "hi"}}},
                             "outputs": {"t": "u.text"}})
    assert sfumato.Engine(registry, output_dir=tmp_path).run(graph)["t"] == "HI"
    sys.modules.pop("shout_nodes", None)


def test_disable_env_turns_plugins_off(monkeypatch):
    monkeypatch.setenv("SFUMATO_DISABLE_PLUGINS", "imaging, text")
    registry = Registry.load()
    assert registry.plugins["imaging"].status == "disabled"
    assert not any(n.startswith("image.") for n in registry.nodes)


def test_plugin_port_types_and_conversions():
    module = types.ModuleType("temps")

    @node("temps.read")
    def read(value: float = 20.0) -> Celsius:
        return Celsius(value)

    @node("temps.show")
    def show(t: Celsius) -> str:
        return f"{t:.1f}C"

    module.sfumato_port_types = sfumato.hookimpl(lambda: [sfumato.PortType("Celsius", Celsius, parents=("Float",))])
    module.sfumato_node_types = sfumato.hookimpl(lambda: [read, show])
    registry = Registry.load(entry_points=False, plugins=[module])
    assert registry.ports.is_compatible("Celsius", "Float")
    assert not registry.ports.is_compatible("Float", "Celsius")
    graph = Graph.from_dict({"version": 1, "nodes": {"r": {"type": "temps.read"},
                                                     "s": {"type": "temps.show", "inputs": {"t": {"from": "r.celsius"}}}},
                             "outputs": {"s": "s.text"}})
    assert sfumato.Engine(registry).run(graph)["s"] == "20.0C"
