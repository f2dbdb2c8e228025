"""Plugin discovery: quarantine, conflicts, disabling, third-party entry points."""

from __future__ import annotations

import sys
import textwrap
import types
from typing import Any

import pytest

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


class Kelvin(float):
    """A port type two plugins both define."""


def _kelvin_plugin(name: str, extra_node: Any) -> types.ModuleType:
    module = types.ModuleType(name)

    @node(f"{name}.uses_kelvin")
    def uses(t: Kelvin) -> str:  # type: ignore[valid-type]
        return str(t)

    module.sfumato_port_types = sfumato.hookimpl(lambda: [sfumato.PortType("Kelvin", Kelvin)])
    module.sfumato_node_types = sfumato.hookimpl(lambda: [uses, extra_node])
    return module


@node("zeta.fine")
def zeta_fine(x: str) -> str:
    return x


@node("alpha.fine")
def alpha_fine(x: str) -> str:
    return x


def test_a_port_type_defined_by_two_plugins_is_unavailable_and_the_rest_of_each_loads():
    registry = Registry.load(entry_points=False, plugins=[_kelvin_plugin("alpha", alpha_fine),
                                                          _kelvin_plugin("zeta", zeta_fine)])
    assert "Kelvin" not in registry.ports.types and registry.port_conflicts["Kelvin"] == ["alpha", "zeta"]
    assert "alpha.fine" in registry.nodes and "zeta.fine" in registry.nodes  # neither plugin quarantined
    assert "alpha.uses_kelvin" not in registry.nodes and "zeta.uses_kelvin" not in registry.nodes
    assert "'zeta'" in registry.plugins["alpha"].error and "'alpha'" in registry.plugins["zeta"].error
    assert registry.plugins["alpha"].status == registry.plugins["zeta"].status == "failed"
    graph = Graph.from_dict({"version": 1, "nodes": {"k": {"type": "zeta.uses_kelvin", "inputs": {"t": 1.0}}}})
    [issue] = validate_graph(graph, registry)
    assert "Kelvin" in issue.message and "'alpha' and 'zeta'" in issue.message


def test_redefining_a_built_in_port_type_is_reported_and_the_plugin_still_loads():
    module = types.ModuleType("shadow")
    module.sfumato_port_types = sfumato.hookimpl(lambda: [sfumato.PortType("Text", bytes)])
    module.sfumato_node_types = sfumato.hookimpl(lambda: [zeta_fine])
    registry = Registry.load(entry_points=False, plugins=[module])
    assert registry.ports.get("Text").python_type is str
    assert "zeta.fine" in registry.nodes and "'Text'" in registry.plugins["shadow"].error


MISSING = sfumato.Requirement("sfumato_module_that_is_not_installed", extra="extraname",
                              feature="the imaginary backend", distribution="imaginary-nodes")


@node("imaginary.use")
def use_missing(x: str) -> str:
    import sfumato_module_that_is_not_installed  # noqa: F401

    return x


def _needs_extra_plugin() -> types.ModuleType:
    module = types.ModuleType("imaginary")
    module.sfumato_requirements = sfumato.hookimpl(lambda: [MISSING])
    module.sfumato_node_types = sfumato.hookimpl(lambda: [use_missing])
    module.sfumato_executors = sfumato.hookimpl(lambda: {"imaginary": lambda **options: object()})

    def add_commands(subparsers: Any) -> None:
        parser = subparsers.add_parser("imagine")
        parser.set_defaults(handler=lambda args: 0)

    module.sfumato_cli_commands = sfumato.hookimpl(add_commands)
    return module


def test_a_plugin_missing_an_optional_dependency_is_listed_as_needing_its_extra():
    registry = Registry.load(entry_points=False, plugins=[_needs_extra_plugin()])
    record = registry.plugins["imaginary"]
    assert record.status == "needs-extra" and record.missing == [MISSING]
    assert record.needs == ("needs extra extraname for the imaginary backend: "
                            "pip install 'imaginary-nodes[extraname]'")
    assert record.as_dict()["needs"][0]["install"] == "pip install 'imaginary-nodes[extraname]'"
    assert "imaginary.use" in registry.nodes  # what works of it stays available


def test_requirements_are_checked_without_importing_them(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "json", raising=False)
    module = types.ModuleType("uses_json")
    module.sfumato_requirements = sfumato.hookimpl(lambda: [sfumato.Requirement("json", extra="x")])
    registry = Registry.load(entry_points=False, plugins=[module])
    assert registry.plugins["uses_json"].status == "ok" and "json" not in sys.modules


def test_using_a_feature_whose_extra_is_missing_names_the_pip_line():
    registry = Registry.load(entry_points=False, plugins=[_needs_extra_plugin()])
    with pytest.raises(sfumato.MissingExtraError, match=r"pip install 'imaginary-nodes\[extraname\]'"):
        registry.executors["imaginary"]()
    graph = Graph.from_dict({"version": 1, "nodes": {"u": {"type": "imaginary.use", "inputs": {"x": "a"}}},
                             "outputs": {"o": "u.text"}})
    with pytest.raises(sfumato.NodeExecutionError) as caught:
        sfumato.Engine(registry).run(graph)
    assert isinstance(caught.value.original, sfumato.MissingExtraError)
    assert "pip install 'imaginary-nodes[extraname]'" in str(caught.value)


def test_a_command_of_a_plugin_missing_its_extra_refuses_with_the_pip_line():
    import argparse

    registry = Registry.load(entry_points=False, plugins=[_needs_extra_plugin()])
    parser = argparse.ArgumentParser()
    registry.add_cli_commands(parser.add_subparsers())
    args = parser.parse_args(["imagine"])
    with pytest.raises(sfumato.MissingExtraError, match="imaginary backend"):
        args.handler(args)


def test_sfumato_plugins_exits_non_zero_when_a_plugin_failed(tmp_path, monkeypatch, capsys):
    import sfumato.registry as registry_module
    from sfumato.cli import main

    _write_dist(tmp_path, "broken-extra", "raise ImportError('missing dependency bar')\n", "broken_extra")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_module, "_default", None)
    assert main(["plugins"]) == 1
    assert main(["plugins", "--json"]) == 1
    assert "missing dependency bar" in capsys.readouterr().out
    monkeypatch.setattr(registry_module, "_default", None)
    monkeypatch.syspath_prepend(str(tmp_path / "nothing"))
    monkeypatch.setenv("SFUMATO_DISABLE_PLUGINS", "broken_extra")
    assert main(["plugins"]) == 0
