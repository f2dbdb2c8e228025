"""One path policy for every node that touches files: unlimited by default, confined on a server."""

from __future__ import annotations

import json
import os
import stat
import types
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import sfumato
from sfumato import (Engine, Graph, GraphBuilder, GraphValidationError, NodeExecutionError, PathNotAllowedError,
                     PathPolicy, ReadablePath, RunContext, WritablePath, node, write_atomically)

READS: list[str] = []


@node("third.read_text", category="test", output="text")
def read_text(path: ReadablePath) -> str:
    """A third-party node reading a file it is given."""
    READS.append(path)
    return Path(path).read_text()


@node("third.read_listed", category="test", output="text")
def read_listed(listing: ReadablePath, context: RunContext) -> str:
    """A third-party node reading the files named inside another file (found at run time)."""
    names = Path(listing).read_text().split()
    return "".join(context.readable_path(Path(listing).parent / name).read_text() for name in names)


@node("third.write_text", category="test", output="path", output_node=True)
def write_text(path: WritablePath, text: str = "x") -> str:
    """A third-party node writing a file."""
    Path(path).write_text(text)
    return path


@node("third.path_of", category="test", output="text")
def path_of(path: str) -> str:
    """Passes a path on (so it reaches the next node only at run time)."""
    return path


def _plugin() -> types.ModuleType:
    module = types.ModuleType("third_party_files")
    module.sfumato_node_types = sfumato.hookimpl(  # type: ignore[attr-defined]
        lambda: [read_text, read_listed, write_text, path_of])
    return module


@pytest.fixture(scope="module")
def registry() -> sfumato.Registry:
    return sfumato.Registry.load(plugins=[_plugin()])


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    folders = {name: tmp_path / name for name in ("data", "graphs", "allowed", "secret")}
    for folder in folders.values():
        folder.mkdir()
    (folders["secret"] / "key.txt").write_text("the secret")
    (folders["allowed"] / "note.txt").write_text("a note")
    Image.new("RGB", (4, 4), "red").save(folders["allowed"] / "red.png")
    Image.new("RGB", (4, 4), "blue").save(folders["secret"] / "blue.png")
    return folders


def server_engine(registry: sfumato.Registry, roots: dict[str, Path]) -> Engine:
    """An engine confined like a server: reads from data, graphs and one --allow-read root; writes into data."""
    policy = PathPolicy.confined(read=[roots["graphs"], roots["allowed"]], write=[roots["data"]])
    return Engine(registry, device="cpu", output_dir=roots["data"] / "out", path_policy=policy)


def one_node(node_type: str, output: str | None = None, **inputs: Any) -> Graph:
    builder = GraphBuilder("paths")
    handle = builder.add(node_type, "n", **inputs)
    if output:
        builder.output("out", handle[output])
    return builder.build()


def issues_of(engine: Engine, graph: Graph) -> list[sfumato.GraphIssue]:
    with pytest.raises(GraphValidationError) as caught:
        engine.run(graph)
    return caught.value.issues


def test_the_default_policy_reads_and_writes_anywhere(registry, roots):
    engine = Engine(registry, device="cpu", output_dir=roots["data"])
    assert not engine.path_policy.restricted
    graph = one_node("third.read_text", "text", path=str(roots["secret"] / "key.txt"))
    assert engine.run(graph)["out"] == "the secret"


def test_a_literal_path_outside_the_read_roots_is_a_validation_issue_naming_node_field_and_path(registry, roots):
    READS.clear()
    secret = str(roots["secret"] / "key.txt")
    [issue] = issues_of(server_engine(registry, roots), one_node("third.read_text", "text", path=secret))
    assert issue.node == "n" and issue.path == "nodes.n.inputs.path"
    assert secret in issue.message and "third.read_text.path" in issue.message
    assert READS == []  # refused before anything ran


def test_paths_inside_the_allowed_roots_are_read(registry, roots):
    engine = server_engine(registry, roots)
    assert engine.run(one_node("third.read_text", "text", path=str(roots["allowed"] / "note.txt")))["out"] == "a note"


def test_dot_dot_and_home_paths_are_resolved_before_the_check(registry, roots):
    sneaky = str(roots["allowed"] / ".." / "secret" / "key.txt")
    [issue] = issues_of(server_engine(registry, roots), one_node("third.read_text", "text", path=sneaky))
    assert "resolves to" in issue.message and str(roots["secret"] / "key.txt") in issue.message
    [issue] = issues_of(server_engine(registry, roots), one_node("third.read_text", "text", path="~/.ssh/id_rsa"))
    assert issue.path == "nodes.n.inputs.path"


def test_a_symlink_inside_an_allowed_root_that_points_outside_is_refused(registry, roots):
    link = roots["allowed"] / "innocent.txt"
    link.symlink_to(roots["secret"] / "key.txt")
    [issue] = issues_of(server_engine(registry, roots), one_node("third.read_text", "text", path=str(link)))
    assert str(roots["secret"] / "key.txt") in issue.message


def test_a_path_parameter_is_checked_at_validation(registry, roots):
    graph = Graph.from_dict({"version": 1, "params": {"file": {"type": "str", "default": "x"}},
                             "nodes": {"n": {"type": "third.read_text", "inputs": {"path": {"param": "file"}}}},
                             "outputs": {"out": "n.text"}})
    engine = server_engine(registry, roots)
    with pytest.raises(GraphValidationError) as caught:
        engine.run(graph, {"file": str(roots["secret"] / "key.txt")})
    assert caught.value.issues[0].path == "nodes.n.inputs.path"


def test_a_path_arriving_over_a_link_is_checked_when_its_node_runs(registry, roots):
    READS.clear()
    builder = GraphBuilder("linked")
    source = builder.add("third.path_of", "source", path=str(roots["secret"] / "key.txt"))
    reader = builder.add("third.read_text", "reader", path=source["text"])
    builder.output("out", reader["text"])
    with pytest.raises(NodeExecutionError) as caught:
        server_engine(registry, roots).run(builder.build())
    assert caught.value.node_id == "reader" and isinstance(caught.value.original, PathNotAllowedError)
    assert "input 'path'" in str(caught.value) and "key.txt" in str(caught.value)
    assert READS == []


def test_a_third_party_node_checks_the_paths_it_finds_through_its_context(registry, roots):
    (roots["allowed"] / "listing.txt").write_text("note.txt ../secret/key.txt")
    graph = one_node("third.read_listed", "text", listing=str(roots["allowed"] / "listing.txt"))
    with pytest.raises(NodeExecutionError) as caught:
        server_engine(registry, roots).run(graph)
    assert isinstance(caught.value.original, PathNotAllowedError)
    assert "node 'n' (third.read_listed)" in str(caught.value)
    # Unconfined, the same graph reads both files.
    assert Engine(registry, device="cpu").run(graph)["out"] == "a notethe secret"


def test_writes_only_inside_the_write_roots(registry, roots):
    engine = server_engine(registry, roots)
    [issue] = issues_of(engine, one_node("third.write_text", path=str(roots["allowed"] / "new.txt")))
    assert "writing" in issue.message and issue.path == "nodes.n.inputs.path"
    assert not (roots["allowed"] / "new.txt").exists()
    engine.run(one_node("third.write_text", path=str(roots["data"] / "new.txt")))
    assert (roots["data"] / "new.txt").read_text() == "x"


def test_an_output_folder_outside_the_write_roots_is_refused_before_the_run(registry, roots):
    engine = server_engine(registry, roots)
    with pytest.raises(PathNotAllowedError, match="output folder"):
        engine.run(one_node("third.path_of", "text", path="x"), output_dir=roots["allowed"])


def test_image_load_is_confined_and_checks_each_file_of_a_folder(registry, roots):
    engine = server_engine(registry, roots)
    [issue] = issues_of(engine, one_node("image.load", "images", path=str(roots["secret"])))
    assert issue.path == "nodes.n.inputs.path"
    assert len(engine.run(one_node("image.load", "images", path=str(roots["allowed"])))["out"]) == 1
    (roots["allowed"] / "z.png").symlink_to(roots["secret"] / "blue.png")
    with pytest.raises(NodeExecutionError) as caught:
        engine.run(one_node("image.load", "images", path=str(roots["allowed"])))
    assert isinstance(caught.value.original, PathNotAllowedError) and "blue.png" in str(caught.value)


def test_image_save_writes_into_the_data_folder_and_refuses_a_linked_escape(registry, roots):
    builder = GraphBuilder("saving")
    images = builder.add("image.load", "load", path=str(roots["allowed"] / "red.png"))
    builder.add("image.save", "save", images=images["images"], template="sub/{index}.png")
    engine = server_engine(registry, roots)
    engine.run(builder.build())
    assert (roots["data"] / "out" / "sub" / "0.png").exists()
    # A folder inside the output folder that links outside the write roots.
    escape = roots["data"] / "out" / "away"
    escape.symlink_to(roots["allowed"])
    builder = GraphBuilder("saving")
    images = builder.add("image.load", "load", path=str(roots["allowed"] / "red.png"))
    builder.add("image.save", "save", images=images["images"], template="away/{index}.png")
    with pytest.raises(NodeExecutionError):
        engine.run(builder.build())
    assert not (roots["allowed"] / "0.png").exists()


def test_retrieval_index_paths_follow_the_policy(registry, roots):
    engine = server_engine(registry, roots)
    issues = issues_of(engine, one_node("retrieve.build", folder=str(roots["allowed"]), index=str(roots["graphs"])))
    assert [i.path for i in issues] == ["nodes.n.inputs.index"]
    [issue] = issues_of(engine, one_node("retrieve.query", "retrieved", index=str(roots["secret"]), texts=["x"]))
    assert issue.path == "nodes.n.inputs.index"
    builder = GraphBuilder("adding")
    images = builder.add("image.load", "load", path=str(roots["allowed"]))
    builder.add("retrieve.add_images", "add", images=images["images"], index=str(roots["secret"] / "idx"))
    [issue] = issues_of(engine, builder.build())
    assert issue.path == "nodes.add.inputs.index"


def test_a_retrieval_manifest_entry_outside_the_roots_is_refused(registry, roots):
    (roots["allowed"] / "manifest.json").write_text(json.dumps([
        {"path": "red.png", "caption": "red"}, {"path": "../secret/blue.png", "caption": "blue"}]))
    engine = server_engine(registry, roots)
    with pytest.raises(NodeExecutionError) as caught:
        engine.run(one_node("retrieve.build", folder=str(roots["allowed"]), index=str(roots["data"] / "idx")))
    assert isinstance(caught.value.original, PathNotAllowedError) and "blue.png" in str(caught.value)


def test_the_policy_object_resolves_roots_and_writes_imply_reads(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    policy = PathPolicy.confined(write=[tmp_path / "alias"])
    assert policy.check(real / "a.txt", "write") == real / "a.txt"
    assert policy.problem(real / "a.txt", "read") is None
    assert policy.problem(tmp_path / "other.txt", "read")
    assert PathPolicy().problem("/etc/passwd") is None


def test_output_files_get_the_users_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        written = write_atomically(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
        assert stat.S_IMODE(written.stat().st_mode) == 0o644
        os.umask(0o027)
        claimed = sfumato.claim_new_file(tmp_path / "b.txt")
        assert stat.S_IMODE(claimed.stat().st_mode) == 0o640
    finally:
        os.umask(previous)


def test_saved_images_get_the_users_umask(registry, tmp_path):
    Image.new("RGB", (4, 4), "red").save(tmp_path / "red.png")
    builder = GraphBuilder("umask")
    images = builder.add("image.load", "load", path=str(tmp_path / "red.png"))
    builder.add("image.save", "save", images=images["images"])
    previous = os.umask(0o022)
    try:
        result = Engine(registry, device="cpu", output_dir=tmp_path / "out").run(builder.build())
    finally:
        os.umask(previous)
    [saved] = result.report.files
    assert stat.S_IMODE(Path(saved).stat().st_mode) == 0o644


def test_a_sweep_into_an_output_folder_outside_the_write_roots_is_refused(registry, roots):
    engine = server_engine(registry, roots)
    with pytest.raises(PathNotAllowedError, match="output folder"):
        engine.run_many(one_node("third.path_of", "text", path="x"), [{}, {}], output_dir=roots["allowed"])
    outcomes = engine.run_many(one_node("third.read_text", "text", path=str(roots["secret"] / "key.txt")), [{}])
    assert outcomes[0].status == "failed" and "not allowed" in outcomes[0].error


def test_an_empty_path_means_the_current_folder_and_is_checked_too(registry, roots, monkeypatch):
    monkeypatch.chdir(roots["secret"])
    [issue] = issues_of(server_engine(registry, roots), one_node("third.read_text", "text", path=""))
    assert str(roots["secret"]) in issue.message


def test_a_local_model_folder_is_confined_too(registry, roots):
    engine = server_engine(registry, roots)
    with pytest.raises(PathNotAllowedError, match="reading"):
        engine.models.resolve(str(roots["secret"]))
    assert engine.models.resolve("all-MiniLM-L6-v2").exists()  # a plugin's registered model is always allowed
    assert engine.models.resolve("some-org/some-model") == "some-org/some-model"  # a hub id is no local path
    assert Engine(registry).models.resolve(str(roots["secret"])) == roots["secret"].resolve()
