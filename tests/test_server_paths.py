"""The server's path policy: jobs read only its data folder, its graphs folder and ``--allow-read``
folders, and write only inside its data folder; anything else is refused at validation."""

from __future__ import annotations

import pytest
from PIL import Image
from test_server import Server


def load_and_save(path: str) -> dict:
    return {"version": 1, "name": "copy", "nodes": {
        "load": {"type": "image.load", "inputs": {"path": path}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "load.images"}}}}}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    Image.new("RGB", (8, 8), "red").save(folder / "red.png")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, pictures):
    instance = Server(tmp_path_factory.mktemp("paths"), "--allow-read", str(pictures)).start()
    yield instance
    instance.stop()


def test_job_reading_etc_passwd_is_refused_at_validation(server):
    before = server.request("GET", "/api/jobs?limit=1")[1]["total"]
    status, body = server.request("POST", "/api/jobs", {"graph": load_and_save("/etc/passwd")})
    assert status == 400
    [issue] = body["issues"]
    assert issue["node"] == "load" and issue["path"] == "nodes.load.inputs.path"
    assert "/etc/passwd" in issue["message"] and "not allowed" in issue["message"]
    assert "root:" not in str(body)
    assert server.request("GET", "/api/jobs?limit=1")[1]["total"] == before


def test_path_given_as_a_parameter_is_refused_too(server):
    graph = load_and_save("")
    graph["params"] = {"where": {"type": "str", "default": "/etc"}}
    graph["nodes"]["load"]["inputs"]["path"] = {"param": "where"}
    status, body = server.request("POST", "/api/jobs", {"graph": graph, "params": {"where": "/etc/hostname"}})
    assert status == 400 and "/etc/hostname" in body["issues"][0]["message"]


def test_dotdot_out_of_the_data_folder_is_refused(server):
    status, body = server.request("POST", "/api/jobs", {"graph": load_and_save(str(server.data / ".." / ".."))})
    assert status == 400 and "not allowed" in body["issues"][0]["message"]


def test_link_out_of_an_allowed_folder_is_refused(server, pictures):
    link = pictures / "escape"
    link.symlink_to("/etc", target_is_directory=True)
    try:
        status, body = server.request("POST", "/api/jobs", {"graph": load_and_save(str(link / "hostname"))})
    finally:
        link.unlink()
    assert status == 400 and "resolves to '/etc/hostname'" in body["issues"][0]["message"]


def test_allow_read_folder_can_be_read(server, pictures):
    status, job = server.request("POST", "/api/jobs", {"graph": load_and_save(str(pictures / "red.png"))})
    assert status == 201, job
    done = server.wait(job["id"])
    assert done["status"] == "done" and len(done["outputs"]) == 1


def test_job_writing_outside_the_data_folder_is_refused(server, tmp_path, pictures):
    graph = {"version": 1, "name": "index", "nodes": {
        "build": {"type": "retrieve.build", "inputs": {"folder": str(pictures), "index": str(tmp_path / "index")}}}}
    status, body = server.request("POST", "/api/jobs", {"graph": graph})
    assert status == 400
    assert body["issues"][0]["path"] == "nodes.build.inputs.index" and "writing" in body["issues"][0]["message"]


def test_allow_read_must_name_a_folder(tmp_path):
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, "-m", "sfumato.cli.main", "serve", "--data", str(tmp_path),
                                "--allow-read", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and "--allow-read" in completed.stderr
