"""What is installed, as the CLI lists it: ``sfumato plugins``, ``sfumato models`` and ``sfumato nodes show``."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path
from typing import Any

import pytest

import sfumato
from sfumato.cli import main


@dataclasses.dataclass
class Swatch:
    """A value type of the test plugin."""

    colour: str


def _everything_plugin(weights: Path) -> types.ModuleType:
    """A plugin using every registration hook once, to see each in the listing."""
    module = types.ModuleType("everything")

    @sfumato.hookimpl
    def sfumato_port_types() -> list[Any]:
        return [sfumato.PortType("EverythingSwatch", Swatch, "a colour swatch")]

    @sfumato.hookimpl
    def sfumato_port_conversions() -> list[Any]:
        return [("Text", "EverythingSwatch", Swatch)]

    @sfumato.hookimpl
    def sfumato_value_codecs() -> list[Any]:
        return [sfumato.ValueCodec.for_dataclass(Swatch, "everything.Swatch")]

    @sfumato.hookimpl
    def sfumato_model_sources() -> list[Any]:
        return [sfumato.ModelSource("everything-here", weights, "weights that exist", kind="gan"),
                sfumato.ModelSource("everything-gone", weights / "gone", "weights that do not", kind="vae")]

    @sfumato.hookimpl
    def sfumato_cli_commands(subparsers: Any) -> None:
        subparsers.add_parser("paint", help="paint swatches")

    @sfumato.hookimpl
    def sfumato_executors() -> dict[str, Any]:
        return {"easel": lambda **options: None}

    for hook in (sfumato_port_types, sfumato_port_conversions, sfumato_value_codecs, sfumato_model_sources,
                 sfumato_cli_commands, sfumato_executors):
        setattr(module, hook.__name__, hook)
    return module


@pytest.fixture
def everything(tmp_path, monkeypatch) -> Path:
    """The CLI's registry holds just the everything plugin; returns its existing weights folder."""
    import sfumato.registry as registry_module

    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(registry_module, "_default",
                        sfumato.Registry.load(entry_points=False, plugins=[_everything_plugin(weights)]))
    return weights


def test_plugins_lists_each_plugins_port_types_conversions_codecs_models_commands_and_executors(everything, capsys):
    assert main(["plugins", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["name"] == "everything" and listed["status"] == "ok"
    assert listed["port_types"] == ["EverythingSwatch"]
    assert listed["conversions"] == ["Text -> EverythingSwatch"]
    assert listed["codecs"] == ["everything.Swatch"]
    assert listed["models"] == ["everything-gone", "everything-here"]
    assert listed["commands"] == ["paint"]
    assert listed["executors"] == ["easel"]
    assert main(["plugins"]) == 0
    table = capsys.readouterr().out
    for text in ("ports: EverythingSwatch", "conversions: Text -> EverythingSwatch", "codecs: everything.Swatch",
                 "commands: paint", "executors: easel"):
        assert text in table


def test_plugins_json_lists_the_builtin_plugins_commands_and_models(capsys):
    assert main(["plugins", "--json"]) == 0
    plugins = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert plugins["server"]["commands"] == ["serve"] and plugins["ray"]["executors"] == ["ray"]
    assert "tiny-shapes-diffusion" in plugins["zoo"]["models"] and "image.save" in plugins["imaging"]["node_ids"]


def test_models_lists_sources_with_where_their_weights_are_and_whether_they_exist(everything, capsys):
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["everything-here"] == {
        "name": "everything-here", "plugin": "everything", "kind": "gan", "description": "weights that exist",
        "generator": rows["everything-here"]["generator"], "path": str(everything), "exists": True, "problem": ""}
    assert rows["everything-gone"]["exists"] is False and rows["everything-gone"]["kind"] == "vae"
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "everything-here" in table and "(missing)" in table


def test_models_lists_a_source_whose_location_fails_without_a_traceback(monkeypatch, capsys):
    import sfumato.registry as registry_module

    def nowhere() -> Path:
        raise FileNotFoundError("the package holding the weights is not installed")

    module = types.ModuleType("lost")
    module.sfumato_model_sources = sfumato.hookimpl(lambda: [sfumato.ModelSource("lost-model", nowhere)])
    monkeypatch.setattr(registry_module, "_default", sfumato.Registry.load(entry_points=False, plugins=[module]))
    assert main(["models"]) == 0
    assert "cannot locate" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["exists"] is False and "not installed" in row["problem"]


def test_models_lists_the_shipped_zoo_models_as_present(capsys):
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["tiny-shapes-diffusion"]["plugin"] == "zoo" and rows["tiny-shapes-diffusion"]["exists"] is True
