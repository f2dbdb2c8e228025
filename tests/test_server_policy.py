"""``sfumato serve --policy FILE``: screening, watermarking and signing applied to every job,
``--strip-prompts`` and ``--keep-days``; exercised on the server's worker in process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image
from test_provenance import _certificate_chain, verify
from test_safety import BLUE, RED, tiny_safety_checker

from sfumato import Engine, read_png_metadata
from sfumato.cli import main
from sfumato_server.app import ServerConfig, path_policy
from sfumato_server.events import EventHub
from sfumato_server.policy import STRIPPED, load_policy
from sfumato_server.store import JobStore
from sfumato_server.worker import Worker

CARD_GRAPH = {"version": 1, "name": "card", "params": {"prompt": {"type": "str", "default": "a red circle"}},
              "nodes": {
                  "card": {"type": "image.text_card", "inputs": {"text": {"param": "prompt"}, "width": 320,
                                                                 "height": 320}},
                  "save": {"type": "image.save", "inputs": {"images": {"from": "card.images"}}}}}


def make_worker(tmp_path: Path, policy_data: dict | None = None, **cli) -> Worker:
    data = tmp_path / "data"
    outputs = data / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    policy_file = None
    if policy_data is not None:
        policy_file = tmp_path / "policy.json"
        policy_file.write_text(json.dumps(policy_data))
    policy = load_policy(policy_file, **cli)
    config = ServerConfig(data=data, allow_read=tuple(policy.readable_folders()), policy=policy)
    engine = Engine(device="cpu", output_dir=outputs, path_policy=path_policy(config))
    return Worker(JobStore(data / "queue.sqlite3"), EventHub(), outputs, engine, policy=policy)


def run_job(worker: Worker, graph: dict, params: dict | None = None):
    job_id = worker.store.add(graph.get("name", "job"), graph, params or {}, None)
    worker.execute(worker.store.claim_next())
    return worker.store.get(job_id)


def output_files(worker: Worker, job) -> list[Path]:
    return [worker.outputs / name for name in job.outputs]


def test_refused_prompt_fails_the_job_before_any_node_runs(tmp_path):
    worker = make_worker(tmp_path, {"screen_prompts": {"terms": ["forbidden"]}})
    job = run_job(worker, CARD_GRAPH, {"prompt": "a red circle, forbidden"})
    assert job.status == "failed"
    assert "refused by safety screening" in job.error and "'forbidden'" in job.error
    assert "card" not in (job.report or {}).get("nodes", {})
    assert job.outputs == [] and not any((worker.outputs / str(job.id)).iterdir())


def test_prompt_in_a_graph_literal_is_screened_too(tmp_path):
    worker = make_worker(tmp_path, {"screen_prompts": {}})
    graph = json.loads(json.dumps(CARD_GRAPH))
    graph["nodes"]["card"]["inputs"]["text"] = "a bloody corpse"
    job = run_job(worker, graph)
    assert job.status == "failed" and "graphic violence" in job.error


def test_harmless_job_runs_under_prompt_screening(tmp_path):
    worker = make_worker(tmp_path, {"screen_prompts": {}})
    job = run_job(worker, CARD_GRAPH, {"prompt": "a blue square"})
    assert job.status == "done" and len(job.outputs) == 1


def test_every_saved_image_is_watermarked_and_signed_without_the_job_asking(tmp_path):
    chain, key, ca = _certificate_chain(tmp_path)
    worker = make_worker(tmp_path, {"watermark": True, "sign": {"certificate": str(chain), "key": str(key)}})
    job = run_job(worker, CARD_GRAPH)  # the job's graph has neither node
    assert job.status == "done", job.error
    [image] = output_files(worker, job)
    code, [found] = verify(str(image), "--trust", str(ca))
    assert code == 0
    assert found["watermark"]["matches_graph_hash"] is True
    assert found["credentials"]["state"] == "Trusted"
    assert found["credentials"]["actions"] == ["c2pa.created"]


def test_a_job_cannot_read_the_signing_key(tmp_path):
    chain, key, _ = _certificate_chain(tmp_path)
    worker = make_worker(tmp_path, {"sign": {"certificate": str(chain), "key": str(key)}})
    graph = {"version": 1, "name": "steal", "nodes": {
        "load": {"type": "image.load", "inputs": {"path": str(key)}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "load.images"}}}}}
    job = run_job(worker, graph)
    assert job.status == "failed"
    assert "key.pem' is not allowed" in job.error and "outside the allowed folders" in job.error


def test_image_screening_policy_blocks_flagged_images(tmp_path):
    checker = tiny_safety_checker(tmp_path / "checker")
    worker = make_worker(tmp_path, {"screen_images": {"model": str(checker), "action": "block"}})
    folder = tmp_path / "data" / "inputs"
    folder.mkdir(parents=True)
    Image.new("RGB", (48, 48), RED).save(folder / "a.png")
    Image.new("RGB", (48, 48), BLUE).save(folder / "b.png")
    graph = {"version": 1, "name": "pictures", "nodes": {
        "load": {"type": "image.load", "inputs": {"path": str(folder)}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "load.images"}, "template": "{label}.png"}}}}
    job = run_job(worker, graph)
    assert job.status == "done", job.error
    assert [Path(name).name for name in job.outputs] == ["b.png"]


def test_strip_prompts_keeps_prompts_out_of_images_and_the_job_record(tmp_path):
    worker = make_worker(tmp_path, strip_prompts=True)
    job = run_job(worker, CARD_GRAPH, {"prompt": "my secret prompt"})
    assert job.status == "done", job.error
    assert job.params == {"prompt": STRIPPED}
    assert job.graph["params"]["prompt"]["default"] == STRIPPED
    assert "my secret prompt" not in json.dumps(job.detail())
    [image] = output_files(worker, job)
    with pytest.raises(ValueError, match="holds no sfumato metadata"):
        read_png_metadata(image)
    assert "my secret prompt" not in image.read_bytes().decode("latin-1")
    _, [found] = verify(str(image))
    assert found["digital_source_type"].endswith("trainedAlgorithmicMedia")


def test_keep_days_deletes_old_finished_jobs_and_their_outputs(tmp_path):
    worker = make_worker(tmp_path, keep_days=2)
    old = run_job(worker, CARD_GRAPH)
    assert (worker.outputs / str(old.id)).is_dir()
    queued = worker.store.add("card", CARD_GRAPH, {}, None)
    removed = worker.policy.cleanup(worker.store, worker.outputs, now=time.time() + 3 * 86400)
    assert removed == [old.id]
    assert worker.store.get(old.id) is None and not (worker.outputs / str(old.id)).exists()
    assert worker.store.get(queued) is not None  # not finished: kept
    assert worker.policy.cleanup(worker.store, worker.outputs, now=time.time() + 86400) == []


@pytest.mark.parametrize("content,message", [
    (None, "No such file"),
    ("{not json", "not JSON"),
    ('{"watermark": true, "screen": {}}', "screen: Extra inputs are not permitted"),
    ('{"sign": {"certificate": "/nowhere/chain.pem", "key": "/nowhere/key.pem"}}', "sign.certificate: no file"),
])
def test_bad_policy_file_is_refused_with_exit_2(tmp_path, capsys, content, message):
    policy = tmp_path / "policy.json"
    if content is not None:
        policy.write_text(content)
    assert main(["serve", "--policy", str(policy), "--data", str(tmp_path / "data")]) == 2
    assert message in capsys.readouterr().err


def test_keep_days_must_be_positive(tmp_path, capsys):
    assert main(["serve", "--keep-days", "0", "--data", str(tmp_path / "data")]) == 2
    assert "--keep-days must be positive" in capsys.readouterr().err


def test_job_that_saves_inside_a_subgraph_is_refused_before_it_runs(tmp_path):
    worker = make_worker(tmp_path, {"watermark": True})
    graph = {"version": 1, "name": "nested", "nodes": {
        "card": {"type": "graph:prompt-card.json", "inputs": {"prompt": "a red circle"}}}}
    job = run_job(worker, graph)
    assert job.status == "failed"
    assert "card/" in job.error and "saves inside a subgraph" in job.error
    assert not any((worker.outputs / str(job.id)).rglob("*.png"))


def test_images_saved_by_a_graph_run_inside_a_node_are_deleted_and_fail_the_job(tmp_path):
    worker = make_worker(tmp_path, {"watermark": True})
    graph = {"version": 1, "name": "mapped", "nodes": {
        "split": {"type": "text.split", "inputs": {"text": "a red circle\na blue square"}},
        "map": {"type": "flow.map", "inputs": {"items": {"from": "split.texts"}, "graph": "prompt-card",
                                               "item": "prompt"}}},
        "outputs": {"cards": "map.results"}}
    job = run_job(worker, graph)
    assert job.status == "failed"
    assert "2 image(s) were saved by a graph run inside a node" in job.error
    assert not any((worker.outputs / str(job.id)).rglob("*.png"))


def test_without_an_image_policy_nested_saves_are_left_alone(tmp_path):
    worker = make_worker(tmp_path, {"screen_prompts": {}})
    graph = {"version": 1, "name": "nested", "nodes": {
        "card": {"type": "graph:prompt-card.json", "inputs": {"prompt": "a red circle"}}}}
    job = run_job(worker, graph)
    assert job.status == "done", job.error
