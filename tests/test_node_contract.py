"""The node contract: ``@node`` options, its cache policy, validation callbacks, backends, executors."""

from __future__ import annotations

import inspect
import json
import types
import warnings
from typing import Any

import pytest

import sfumato
from sfumato import CachePolicy, GraphBuilder, NodeDefinitionError, Registry, ValidationContext, node, validate_graph


def _plugin(name: str, **hooks: Any) -> types.ModuleType:
    """A plugin module with the given hook functions."""
    module = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, sfumato.hookimpl(function))
    return module


# -- @node and its cache policy ----------------------------------------------


def _fingerprint(inputs: dict) -> str:
    return str(inputs.get("path"))


def test_cache_behaviour_is_one_policy_object_with_named_constructors():
    @node("contract.reads", cache=CachePolicy.reads_files(_fingerprint))
    def reads(path: str) -> str:
        return path

    @node("contract.clock", cache=CachePolicy.volatile())
    def clock() -> float:
        return 0.0

    @node("contract.seeded", cache=CachePolicy.reads_context("seed"))
    def seeded(context: sfumato.RunContext) -> int:
        return context.seed

    assert sfumato.spec_of(reads).cache.fingerprint is _fingerprint
    assert sfumato.spec_of(reads).context_keys == ("device", "dtype")  # the default, filled in
    assert sfumato.spec_of(clock).volatile and sfumato.spec_of(clock).cache.always_rerun
    assert sfumato.spec_of(seeded).context_keys == ("seed",)


def test_an_output_node_depends_on_what_it_writes_out_by_default():
    @node("contract.saver", output_node=True)
    def saver(text: str) -> None:
        return None

    assert set(sfumato.spec_of(saver).context_keys) == {"device", "dtype", "seed", "output_dir", "params", "graph"}


def test_node_takes_at_most_ten_keyword_options():
    options = [p for p in inspect.signature(node).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert [p.name for p in options] == ["version", "category", "outputs", "output", "output_node", "cache",
                                         "batch", "describe_outputs", "expect_inputs"]


def test_old_cache_keywords_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="cache=sfumato.CachePolicy"):
        @node("contract.legacy", volatile=True, context_keys=("seed",))
        def legacy(context: sfumato.RunContext) -> int:
            return context.seed

    spec = sfumato.spec_of(legacy)
    assert spec.volatile and spec.context_keys == ("seed",)


def test_old_keywords_and_a_cache_policy_together_are_refused():
    with pytest.raises(NodeDefinitionError, match="not both"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        node("contract.both", cache=CachePolicy.volatile(), fingerprint=_fingerprint)


def test_an_unknown_node_option_is_a_node_definition_error_listing_the_options():
    with pytest.raises(NodeDefinitionError, match=r"'display_name'.*options: version"):
        node("contract.titled", display_name="Titled")


def test_an_unknown_context_key_is_refused_when_the_node_is_declared():
    with pytest.raises(NodeDefinitionError, match=r"'sed'.*device, dtype, seed"):
        CachePolicy.reads_context("sed")


def test_a_volatile_policy_with_a_fingerprint_is_refused():
    with pytest.raises(NodeDefinitionError, match="never cached"):
        CachePolicy(always_rerun=True, fingerprint=_fingerprint)


def test_an_async_node_function_is_refused_at_registration():
    with pytest.raises(NodeDefinitionError, match=r"contract.waits.*async def.*worker threads"):
        @node("contract.waits")
        async def waits(text: str) -> str:
            return text


def test_an_async_run_method_of_a_class_node_is_refused():
    with pytest.raises(NodeDefinitionError, match="async def"):
        @node("contract.waiting_class")
        class Waiting:
            async def run(self, text: str) -> str:
                return text


def test_an_async_batch_function_is_refused():
    async def batch(calls: list[dict]) -> list[str]:
        return [call["text"] for call in calls]

    with pytest.raises(NodeDefinitionError, match="batch function"):
        node("contract.waiting_batch", batch=batch)


def test_a_plugin_declaring_an_async_node_is_quarantined_with_the_node_named():
    def sfumato_node_types() -> list[Any]:
        @node("contract.async_plugin")
        async def waits(text: str) -> str:
            return text

        return [waits]

    plugin = _plugin("async_plugin", sfumato_node_types=sfumato_node_types)
    registry = Registry.load(entry_points=False, plugins=[plugin])
    record = registry.plugins["async_plugin"]
    assert record.status == "failed" and "contract.async_plugin" in record.error and "async def" in record.error


def test_dead_fields_are_gone():
    assert not hasattr(sfumato.NodeSpec, "batchable")
    assert not hasattr(Registry, "model_source")


# -- validation callbacks get a context ----------------------------------------------


def test_validation_callbacks_receive_the_registry_that_validates_the_graph(tmp_path):
    folder = tmp_path / "widget-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"width": 7}))
    seen: list[ValidationContext] = []

    def describe(inputs: dict, context: ValidationContext) -> dict:
        seen.append(context)
        config = json.loads((context.model_folder(inputs["model"]) / "config.json").read_text())
        return {"value": {"width": config["width"]}}

    def expect(inputs: dict, context: ValidationContext) -> dict:
        return {"value": {"width": 8}}

    @node("contract.make", output="value", describe_outputs=describe)
    def make(model: str) -> str:
        return model

    @node("contract.take", output="value", expect_inputs=expect)
    def take(value: str) -> str:
        return value

    plugin = _plugin("widgets", sfumato_node_types=lambda: [make, take],
                     sfumato_model_sources=lambda: [sfumato.ModelSource("widget", folder)])
    registry = Registry.load(entry_points=False, plugins=[plugin])
    builder = GraphBuilder("g")
    made = builder.add("contract.make", "make", model="widget")  # known only to this registry
    builder.add("contract.take", "take", value=made["value"])
    [issue] = validate_graph(builder.build(), registry)
    assert seen[0].registry is registry and seen[0].node_id == "make" and seen[0].given == {"model"}
    assert issue.path == "nodes.take.inputs.value" and "width=7" in issue.message


def test_a_one_argument_validation_callback_still_works_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="ValidationContext"):
        @node("contract.old_describe", output="value", describe_outputs=lambda inputs: {"value": {"n": 1}})
        def old_describe(text: str) -> str:
            return text

    assert sfumato.spec_of(old_describe).describe_outputs({"text": "x"}, None) == {"value": {"n": 1}}


def test_plugins_do_not_reach_for_the_process_global_registry():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "plugins"
    found = [f"{path.relative_to(root)}" for path in sorted(root.rglob("*.py"))
             if "sfumato_server" not in path.parts
             and ("default_registry()" in path.read_text() or "Registry.load(" in path.read_text())]
    assert not found


# -- backends declare their generator -------------------------------------------------


@pytest.fixture(scope="module")
def installed() -> Registry:
    return sfumato.default_registry()


def _generate_graph(model: str, **inputs: Any) -> sfumato.Graph:
    builder = GraphBuilder("backend")
    encode = builder.add("encode.text", "enc", texts="a red circle")
    builder.add("generate.image", "gen", conditioning=encode["conditioning"], model=model, **inputs)
    return builder.build()


def test_the_shipped_models_declare_their_generator_nodes(installed):
    assert {name: installed.models[name].generator for name in ("tiny-shapes-diffusion", "tiny-shapes-vae",
                                                                 "tiny-shapes-gan")} == {
        "tiny-shapes-diffusion": "diffusion.generate", "tiny-shapes-vae": "vae.generate",
        "tiny-shapes-gan": "gan.generate"}


def test_inputs_a_backend_ignores_are_validation_warnings_not_errors(installed):
    graph = _generate_graph("tiny-shapes-gan", steps=30, scheduler="euler", seed=3)
    assert validate_graph(graph, installed) == []
    [warning] = validate_graph(graph, installed, warnings=True)
    assert (warning.path, warning.node, warning.severity) == ("nodes.gen", "gen", "warning")
    assert warning.message == ("'steps', 'scheduler' are ignored: model 'tiny-shapes-gan' is generated by "
                               "gan.generate, which does not take them")


def test_inputs_the_backend_takes_give_no_warning(installed):
    assert validate_graph(_generate_graph("tiny-shapes-diffusion", steps=30, scheduler="euler"), installed,
                          warnings=True) == []


def test_the_plan_and_the_run_report_carry_the_warnings(installed, tmp_path):
    graph = _generate_graph("tiny-shapes-vae", guidance=7.0)
    plan = sfumato.plan_run(graph, installed)
    [warning] = plan.warnings
    assert warning.path == "nodes.gen" and "'guidance' is ignored" in warning.message
    import threading

    from sfumato.run.run_state import RunState  # the report is made when a run starts

    state = RunState(sfumato.Engine(device="cpu", cache=False, registry=installed), plan, keep_going=False,
                     output_dir=tmp_path, cancel_event=threading.Event())
    assert state.report.as_dict()["warnings"] == [warning.as_dict()]
    assert sfumato.RunReport.from_dict(state.report.as_dict()).warnings == [warning.as_dict()]


def test_a_model_folder_declares_its_generator_in_its_sfumato_json(installed, tmp_path):
    folder = tmp_path / "my-gan"
    folder.mkdir()
    (folder / "sfumato.json").write_text(json.dumps({"generator": "gan.generate"}))
    [warning] = validate_graph(_generate_graph(str(folder), steps=5), installed, warnings=True)
    assert warning.severity == "warning" and "gan.generate" in warning.message


def test_a_model_folder_without_a_generator_is_a_validation_error_naming_node_field_and_model(installed, tmp_path):
    folder = tmp_path / "mystery"
    folder.mkdir()
    (folder / "sfumato.json").write_text(json.dumps({"kind": "mystery"}))
    [issue] = validate_graph(_generate_graph(str(folder)), installed)
    assert issue.path == "nodes.gen.inputs.model" and issue.node == "gen"
    assert str(folder) in issue.message and "generator" in issue.message


def _ghost_plugin(tmp_path) -> types.ModuleType:
    folder = tmp_path / "ghost"
    folder.mkdir()
    return _plugin("ghosts", sfumato_model_sources=lambda: [
        sfumato.ModelSource("ghost-model", folder, generator="ghost.generate")])


def test_the_registry_checks_each_declared_generator_node_at_load(tmp_path, monkeypatch):
    monkeypatch.delenv("SFUMATO_DISABLE_PLUGINS", raising=False)
    registry = Registry.load(entry_points=False, plugins=[_ghost_plugin(tmp_path)])
    assert "ghost.generate" in registry.plugins["ghosts"].error
    assert "ghost-model" in registry.model_problems


def test_a_model_whose_generator_node_is_missing_is_a_validation_error(tmp_path):
    registry = Registry.load(plugins=[_ghost_plugin(tmp_path)])
    [issue] = validate_graph(_generate_graph("ghost-model"), registry)
    assert issue.path == "nodes.gen.inputs.model"
    assert "'ghost-model'" in issue.message and "'ghost.generate'" in issue.message


# -- executors -------------------------------------------------------------------------


def test_the_ray_executor_is_an_executor():
    from sfumato_ray.executor import RayExecutor

    assert issubclass(RayExecutor, sfumato.Executor)
    protocol = inspect.signature(sfumato.Executor.run_many).parameters
    assert list(inspect.signature(RayExecutor.run_many).parameters) == list(protocol)


def test_sweep_command_calls_an_executor_as_the_protocol_documents(tmp_path, monkeypatch):
    from sfumato.cli.main import main

    calls: dict[str, Any] = {}

    class Recording:
        def __init__(self, **options: Any) -> None:
            calls["factory"] = options

        def run_many(self, graph, param_sets, *, output_dir, seed=None, batch_size=8, params_from_text=False,
                     on_outcome=None):
            calls["run_many"] = {"output_dir": output_dir, "seed": seed, "batch_size": batch_size,
                                 "params_from_text": params_from_text, "on_outcome": on_outcome}
            return []

    assert isinstance(Recording(), sfumato.Executor)
    registry = sfumato.default_registry()
    monkeypatch.setitem(registry.executors, "recording", Recording)
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"version": 1, "name": "g", "params": {"t": {"type": "str", "default": "a"}},
                                 "nodes": {"n": {"type": "text.normalize", "inputs": {"text": {"param": "t"}}}}}))
    code = main(["run", str(graph), "--executor", "recording", "--sweep", "t=a,b", "--out", str(tmp_path / "o")])
    assert code == 0
    assert set(calls["factory"]) == {"address", "workers", "device", "dtype"}
    documented = inspect.signature(sfumato.Executor.run_many).parameters
    assert set(calls["run_many"]) <= set(documented)
    assert "address" in sfumato.Executor.__doc__ and "on_outcome" in sfumato.Executor.run_many.__doc__


def test_sfumato_validate_prints_warnings_and_still_says_valid(tmp_path, capsys):
    from sfumato.cli.main import main

    path = tmp_path / "gan.json"
    path.write_text(json.dumps(_generate_graph("tiny-shapes-gan", steps=30).to_dict()))
    assert main(["validate", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["issues"] == []
    [warning] = report["warnings"]
    assert warning["path"] == "nodes.gen" and warning["severity"] == "warning" and "'steps'" in warning["message"]
    assert main(["validate", str(path)]) == 0
    printed = capsys.readouterr()
    assert "warning: nodes.gen: 'steps' is ignored" in printed.err and "valid" in printed.out
