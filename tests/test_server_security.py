"""The server as an attacker and a fuzzer see it: every request here gets a refusal (4xx), never a 500.

All against a real ``sfumato serve`` on 127.0.0.1 (see ``test_server.Server``),
plus a real page on another origin in Debian's chromium.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server import SLOW_GRAPH, Server

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = Server(tmp_path_factory.mktemp("secure")).start()
    yield instance
    instance.stop()


def raw(server: Server, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
        host: str | None = None) -> tuple[int, dict]:
    """One request with exactly the given headers (urllib would add its own)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host if host is not None else f"127.0.0.1:{server.port}")
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        text = response.read()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, {"text": text.decode("latin-1")}
    finally:
        connection.close()


def job_count(server: Server) -> int:
    return server.request("GET", "/api/jobs?limit=1")[1]["total"]


# -- 13.1: no server-side file reads ---------------------------------------------------------


def test_sweep_axis_naming_a_file_is_refused_without_reading_it(server, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-LINE-1\nTOP-SECRET-LINE-2\n")
    before = job_count(server)
    for spec in (f"@{secret}", "0..3", "a,b"):
        status, body = server.request("POST", "/api/jobs", {"graph": "prompt-card",
                                                            "sweep": {"axes": {"prompt": spec}}})
        assert status == 400, (spec, body)
        assert "TOP-SECRET" not in json.dumps(body) and "list" in body["error"]
    assert job_count(server) == before


def test_sweep_axes_are_json_lists_and_ranges(server):
    status, job = server.request("POST", "/api/jobs", {
        "graph": "prompt-card", "params": {"prompt": "a dot"},
        "sweep": {"axes": {"seed": {"from": 3, "to": 7, "step": 2}, "style": ["flat", "bold"]}}})
    assert status == 201 and job["runs"] == 6
    done = server.wait(job["id"])
    assert done["status"] == "done", done["error"]
    runs = [(run["params"]["seed"], run["params"]["style"]) for run in done["report"]["runs"]]
    assert runs == [(3, "flat"), (3, "bold"), (5, "flat"), (5, "bold"), (7, "flat"), (7, "bold")]


def test_parameter_values_are_json_not_command_line_text(server):
    status, body = server.request("POST", "/api/jobs", {"graph": "prompt-card", "params": {"seed": "7"}})
    assert status == 400 and "seed" in body["issues"][0]["message"]
    status, job = server.request("POST", "/api/jobs", {"graph": "prompt-card", "params": {"seed": 7}})
    assert status == 201
    assert server.wait(job["id"])["report"]["params"]["seed"] == 7


# -- 13.3: no cross-site or DNS-rebinding use ---------------------------------------------------


def test_foreign_host_header_is_refused(server):
    status, body = raw(server, "GET", "/api/jobs", host=f"rebind.example:{server.port}")
    assert status == 421 and "--allowed-host" in body["error"]
    assert raw(server, "GET", "/", host="evil.example")[0] == 421
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"):
        assert raw(server, "GET", "/api/jobs", host=host)[0] == 200, host


def test_allowed_host_option_adds_a_host_name(tmp_path):
    server = Server(tmp_path, "--allowed-host", "studio.lan").start()
    try:
        assert raw(server, "GET", "/api/jobs", host=f"studio.lan:{server.port}")[0] == 200
        assert raw(server, "GET", "/api/jobs", host=f"other.lan:{server.port}")[0] == 421
    finally:
        server.stop()


def test_cross_origin_post_is_refused(server):
    before = job_count(server)
    body = json.dumps({"graph": "prompt-card"}).encode()
    for origin in ("http://evil.example", f"http://127.0.0.1:{server.port + 1}", "null"):
        status, answer = raw(server, "POST", "/api/jobs", body, {"Content-Type": "application/json", "Origin": origin})
        assert status == 403, origin
    status, _ = raw(server, "POST", "/api/jobs", body, {"Content-Type": "application/json",
                                                        "Origin": f"http://127.0.0.1:{server.port}"})
    assert status == 201
    assert job_count(server) == before + 1


def test_api_writes_accept_only_json_bodies(server):
    before = job_count(server)
    body = json.dumps({"graph": "prompt-card"}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, answer = raw(server, "POST", "/api/jobs", body, {"Content-Type": content_type})
        assert status == 415 and "application/json" in answer["error"], content_type
    assert raw(server, "POST", "/api/jobs", body)[0] == 415  # no Content-Type at all
    assert raw(server, "POST", "/api/jobs/1/cancel", b"")[0] == 415
    assert job_count(server) == before


class _AttackerPage(BaseHTTPRequestHandler):
    """Serves the attacker's page: it tries every request a foreign page can send without CORS permission."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        page = f"""<!doctype html><html><body>
<form id="form" method="POST" action="{self.target}/api/jobs" enctype="text/plain">
<input name='{{"graph": "prompt-card", "x": "' value='"}}'></form>
<script>
async function attack() {{
  const body = JSON.stringify({{graph: "prompt-card", params: {{prompt: "from another origin"}}}});
  const tries = [
    fetch("{self.target}/api/jobs", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body}}),
    fetch("{self.target}/api/jobs", {{method: "POST", mode: "no-cors", body: new Blob([body])}}),
    fetch("{self.target}/api/jobs", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body}}),
    fetch("{self.target}/api/jobs/1/cancel", {{method: "POST", mode: "no-cors"}}),
  ];
  const results = await Promise.allSettled(tries);
  return results.map((r) => r.status);
}}
</script></body></html>"""
        data = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def _launch(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP rebind.example 127.0.0.1"])


@pytest.mark.slow
def test_page_on_another_origin_cannot_queue_or_cancel_jobs_in_chromium(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    server = Server(tmp_path).start()
    _AttackerPage.target = f"http://127.0.0.1:{server.port}"
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        queued = server.request("POST", "/api/jobs", {"graph": SLOW_GRAPH, "priority": -1})[1]["id"]
        with playwright.sync_playwright() as p:
            browser = _launch(p)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
            page.evaluate("attack()")
            with page.expect_navigation():
                page.evaluate("document.getElementById('form').submit()")
            # DNS rebinding: the attacker's name now points at 127.0.0.1; the server must not answer to it.
            response = page.goto(f"http://rebind.example:{server.port}/api/jobs")
            assert response.status == 421
            assert "rebind.example" in page.content()
            browser.close()
        _, listing = server.request("GET", "/api/jobs?limit=500")
        assert [job["id"] for job in listing["jobs"]] == [queued]
        assert server.wait(queued)["status"] == "done"  # the cancel from the other origin did nothing
    finally:
        attacker.shutdown()
        server.stop()


# -- 13.5: limits hold while streaming -------------------------------------------------------------


def test_chunked_body_over_the_limit_is_refused_as_it_arrives(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    try:
        sock.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"x" * (256 * 1024)
        # 3 MB against the 2 MB limit, and the body never ends: a server that reads the
        # whole body before answering never answers.
        try:
            for _ in range(12):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection once it had answered
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


# -- 13.7: 4xx, never 500 ---------------------------------------------------------------------------


@pytest.mark.parametrize("priority", ["high", 1.5, True, 10**7, -(2**62), None])
def test_bad_priorities_are_refused(server, priority):
    if priority is None:
        status, body = raw(server, "POST", "/api/jobs", b'{"graph": "prompt-card", "priority": 1' + b"0" * 40 + b"}",
                           {"Content-Type": "application/json"})
    else:
        status, body = server.request("POST", "/api/jobs", {"graph": "prompt-card", "priority": priority})
    assert status == 400 and ("priority" in body["error"] or "out of range" in body["error"])


@pytest.mark.parametrize("path", ["/api/jobs/99999999999999999999", "/api/jobs/9223372036854775808",
                                  "/api/jobs?offset=99999999999999999999", "/api/jobs?limit=-99999999999999999999",
                                  "/api/jobs/99999999999999999999/events", "/api/jobs?status=%ED%A0%80",
                                  "/api/files/%00", "/api/files/" + "a" * 5000])
def test_out_of_range_ids_and_offsets_are_refused(server, path):
    status, _ = raw(server, "GET", path)
    assert 400 <= status < 500, path


def test_cancel_with_an_id_above_2_to_the_63_is_refused(server):
    assert server.request("POST", "/api/jobs/99999999999999999999/cancel", {})[0] == 400


@pytest.mark.parametrize("body", [
    b'{"graph": "prompt-card", "params": {"prompt": "\\ud800"}}',
    b'{"graph": "prompt-card", "params": {"\\udfff": 1}}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"graph": "prompt-card", "params": {"seed": ' + b"9" * 5000 + b"}}",
    b'{"graph": "prompt-card", "params": {"seed": 18446744073709551616}}',
    b'{"graph": "prompt-card", "params": {"seed": NaN}}',
    b'{"graph": "prompt-card", "params": {"prompt": "\xff\xfe"}}',
    b'{"graph": {"version": 1, "nodes": {"a": {"type": "text.normalize", "inputs": {"text": '
    + b'{"value": ' + b"[" * 5000 + b"]" * 5000 + b"}}}}}}}",
], ids=["surrogate-value", "surrogate-key", "deep", "huge-int", "int-over-64-bits", "nan", "not-utf8",
        "deep-literal"])
def test_malformed_json_bodies_are_refused(server, body):
    status, answer = raw(server, "POST", "/api/jobs", body, {"Content-Type": "application/json"})
    assert status == 400, answer
    assert "error" in answer


def test_non_ascii_tokens_are_compared_as_bytes(tmp_path):
    server = Server(tmp_path, "--token", "pässwörd-☃").start()
    try:
        right = "pässwörd-☃".encode()
        for given in ("wrong-ü".encode(), right[:-1], b"\xff\xfe"):
            assert raw(server, "GET", "/api/jobs", headers={"Authorization": (b"Bearer " + given).decode("latin-1")}
                       )[0] == 401
        assert raw(server, "GET", "/api/jobs?token=%C3%BC%FF")[0] == 401
        assert raw(server, "GET", "/api/jobs", headers={"Authorization": (b"Bearer " + right).decode("latin-1")}
                   )[0] == 200
        assert raw(server, "GET", "/api/jobs?token=p%C3%A4ssw%C3%B6rd-%E2%98%83")[0] == 200
    finally:
        server.stop()


def _png_with(metadata_text: str) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("sfumato", metadata_text, zip=True)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.mark.parametrize("metadata", [
    '{"graph": "not an object"}',
    '{"graph": {"version": 1, "nodes": {}}, "params": [1, 2]}',
    '{"graph": {"version": 1, "nodes": {}}, "seed": "zero"}',
    '{"graph": {"version": 1, "nodes": {"a": 5}}}',
    '{"graph": ' + "[" * 3000 + "]" * 3000 + "}",
    '{"graph": {"version": 1, "name": "\\ud800", "nodes": {}}}',
    '{"graph": {"version": 1, "nodes": {}}, "seed": ' + "7" * 5000 + "}",
    "not json",
], ids=["graph-string", "params-list", "seed-string", "node-int", "deep", "surrogate", "huge-seed", "not-json"])
def test_crafted_png_metadata_on_import_is_refused(server, metadata):
    status, body = raw(server, "POST", "/api/import-png", _png_with(metadata), {"Content-Type": "image/png"})
    assert status == 400, body
    assert "error" in body


def test_a_broken_graph_file_in_the_graphs_folder_is_a_4xx(tmp_path):
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    (graphs / "broken.json").write_text('{"version": 1, "nodes": {"a": {"type": "text.normalize",}}}')
    server = Server(tmp_path / "data", "--graphs", str(graphs)).start()
    try:
        status, body = server.request("GET", "/api/graphs/broken")
        assert status == 400 and "broken.json" in json.dumps(body)
        assert server.request("POST", "/api/jobs", {"graph": "broken"})[0] == 400
        assert "broken" not in [g["name"] for g in server.request("GET", "/api/graphs")[1]]
    finally:
        server.stop()


def test_import_of_a_file_that_is_not_a_png_is_refused(server):
    status, body = raw(server, "POST", "/api/import-png", b"GIF89a not a png", {"Content-Type": "image/png"})
    assert status == 400 and "PNG" in body["error"]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
_job_bodies = st.fixed_dictionaries({}, optional={
    "graph": st.sampled_from(["prompt-card", "no-such-graph", 5]) | _json_values,
    "params": st.dictionaries(st.sampled_from(["prompt", "seed", "style", "other"]), _json_values, max_size=3)
    | _json_values,
    "sweep": st.fixed_dictionaries({}, optional={
        "axes": st.dictionaries(st.sampled_from(["seed", "prompt"]), _json_values, max_size=2) | _json_values,
        "zip": _json_values}) | _json_values,
    "priority": _json_values,
})


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_job_bodies)
def test_fuzzed_job_requests_get_an_answer_below_500(server, body):
    # Valid bodies are fine too (they queue a cheap job); nothing may be a server error.
    status, answer = raw(server, "POST", "/api/jobs", json.dumps(body).encode(), {"Content-Type": "application/json"})
    assert status < 500, (body, answer)
    if status >= 400:
        assert isinstance(answer.get("error"), str)


_segments = st.text(max_size=30) | st.integers(-(2**80), 2**80).map(str)


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=st.sampled_from(["/api/jobs/{}", "/api/jobs/{}/events", "/api/files/{}", "/api/graphs/{}",
                                 "/api/jobs?status={}", "/api/jobs?limit={}&offset={}", "/api/jobs?offset={}"]),
       first=_segments, second=_segments)
def test_fuzzed_urls_get_an_answer_below_500(server, template, first, second):
    from urllib.parse import quote

    path = template.format(quote(first.encode("utf-8", "surrogatepass"), safe=""),
                           quote(second.encode("utf-8", "surrogatepass"), safe=""))
    status, answer = raw(server, "GET", path)
    assert status < 500, (path, answer)

