"""The graph editor on the web page (issue 18), in Debian's chromium (Playwright, headless), and the
read-only API it stands on (port rules, validation).

Every browser step is a UI action (drag, click, type), as a person would do it. Screenshots go to
``$SFUMATO_SCREENSHOTS`` when set (CI artifacts), else into the test's tmp_path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_server import Server
from test_server_page import browser_or_skip, screenshots

from sfumato import shipped_graphs

VIEW = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = Server(tmp_path_factory.mktemp("editor")).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        instance = browser_or_skip(p)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=VIEW, accept_downloads=True)
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    page.wait_for_selector("#editor[data-ready=true]")
    page.locator("#editor").scroll_into_view_if_needed()
    yield page
    context.close()


# -- UI actions -------------------------------------------------------------------------------------


def drop_node(page, node_type: str, x: float, y: float) -> str:
    """Drag a node type from the palette onto the canvas at (x, y) in canvas pixels; its new id."""
    before = set(page.eval_on_selector_all(".ed-node", "els => els.map((e) => e.dataset.id)"))
    page.fill("#ed-search", node_type)
    page.locator(f".ed-palette-item[data-type='{node_type}']").drag_to(
        page.locator("#ed-canvas"), target_position={"x": x, "y": y})
    page.fill("#ed-search", "")
    # Adding a subgraph node first fetches its graph: wait for the node to be drawn.
    page.wait_for_function(f"document.querySelectorAll('.ed-node').length > {len(before)}")
    after = set(page.eval_on_selector_all(".ed-node", "els => els.map((e) => e.dataset.id)"))
    [added] = after - before
    return added


def centre(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def drag_link(page, source: str, target: str, *, release: bool = True) -> None:
    """Drag from output ``node.output`` to the input row ``node.input`` with the mouse."""
    node = source.rsplit(".", 1)[0]
    target_node, name = target.rsplit(".", 1)
    page.mouse.move(*centre(page.locator(f".ed-node[data-id='{node}'] .ed-socket-out[data-key='{source}']")))
    page.mouse.down()
    row = page.locator(f".ed-node[data-id='{target_node}'] .ed-in[data-input='{name}']")
    x, y = centre(row.locator("label"))
    page.mouse.move(x, y, steps=8)
    if release:
        page.mouse.up()


def field(page, node: str, name: str):
    return page.locator(f".ed-node[data-id='{node}'] .ed-in[data-input='{name}'] .ed-widget")


def wait_valid(page) -> None:
    page.wait_for_selector("#ed-issues[data-state=valid]", timeout=30_000)


def saved_document(page) -> dict:
    with page.expect_download() as download:
        page.click("#ed-save")
    return json.loads(Path(download.value.path()).read_text(encoding="utf-8"))


def open_shipped(page, name: str) -> None:
    page.select_option("#ed-open-graph", name)
    page.wait_for_function(f"document.querySelector('#ed-status').textContent.includes('{name}')")


# -- the API the editor stands on -------------------------------------------------------------------


def test_ports_endpoint_serves_the_engines_link_rules(server):
    status, ports = server.request("GET", "/api/ports")
    assert status == 200
    compatible = ports["compatible"]
    assert "Float" in compatible["Int"]  # a declared conversion
    assert "TextList" in compatible["Text"]  # a declared conversion
    assert "Text" not in compatible["Images"] and "Images" not in compatible["Text"]
    assert {"from": "Int", "to": "Float"} in ports["conversions"]
    assert all("Any" in targets for targets in compatible.values())


def test_validate_endpoint_gives_the_issues_the_cli_gives(server, tmp_path):
    document = {"version": 1, "name": "bad", "nodes": {
        "card": {"type": "image.text_card", "inputs": {"text": "hi", "width": -3}},
        "sharpen": {"type": "image.sharpen", "inputs": {"images": {"from": "card.images"}, "radius": -5}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "card.nowhere"}}}}}
    status, answer = server.request("POST", "/api/validate", {"graph": document})
    assert status == 200 and answer["valid"] is False
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    completed = subprocess.run([sys.executable, "-m", "sfumato.cli.main", "validate", str(path), "--json"],
                               check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert completed.returncode == 2
    cli = json.loads(completed.stdout)
    assert answer["issues"] == cli["issues"] and answer["warnings"] == cli["warnings"]
    assert {issue["node"] for issue in answer["issues"]} == {"card", "sharpen", "save"}


def test_validate_endpoint_accepts_a_valid_graph_and_refuses_a_non_document(server):
    status, answer = server.request("POST", "/api/validate", {"graph": json.loads(shipped_graphs()["text-to-image"].read_text())})
    assert status == 200 and answer["valid"] is True and answer["issues"] == []
    status, answer = server.request("POST", "/api/validate", {"graph": "text-to-image"})
    assert status == 400 and "graph document" in answer["error"]


def test_validate_endpoint_reports_a_malformed_document_as_issues(server):
    status, answer = server.request("POST", "/api/validate", {"graph": {"version": 1, "nodes": {"a": {"typo": 1}}}})
    assert status == 200 and answer["valid"] is False
    assert any(issue["path"].startswith("nodes.a") for issue in answer["issues"])
    status, answer = server.request("POST", "/api/validate", {"graph": {"version": 1, "nodes": {}}, "params": [1]})
    assert status == 400 and "'params'" in answer["error"]


# -- the editor in chromium ------------------------------------------------------------------------


def test_text_to_image_built_from_an_empty_canvas_runs_and_makes_an_image(page, server, tmp_path):
    shots = screenshots(tmp_path)
    page.click("#ed-new")
    prompt = drop_node(page, "text.value", 30, 30)
    encode = drop_node(page, "encode.text", 30, 170)
    generate = drop_node(page, "generate.image", 280, 30)
    save = drop_node(page, "image.save", 530, 30)
    field(page, prompt, "text").fill("a red circle on a black background")
    field(page, prompt, "text").press("Tab")
    drag_link(page, f"{prompt}.text", f"{encode}.texts")  # Text feeds TextList by the engine's conversion
    drag_link(page, f"{encode}.conditioning", f"{generate}.conditioning")
    drag_link(page, f"{generate}.images", f"{save}.images")
    page.click(f".ed-node[data-id='{generate}'] .ed-more")
    field(page, generate, "steps").fill("2")
    field(page, generate, "steps").press("Tab")
    assert page.locator(".ed-link").count() == 3
    wait_valid(page)
    page.screenshot(path=str(shots / "editor-built.png"))
    page.click("#ed-run")
    page.wait_for_selector(f".ed-node[data-id='{save}'].done", timeout=120_000)
    page.wait_for_function("document.querySelector('#ed-status').textContent.includes('finished')", timeout=60_000)
    assert "1 image(s)" in page.inner_text("#ed-status")
    for node in (prompt, encode, generate, save):
        assert page.locator(f".ed-node[data-id='{node}']").get_attribute("class").split()[-1] in ("done", "cached")
    page.wait_for_selector(f".ed-node[data-id='{save}'] .ed-preview:not([hidden])")
    page.wait_for_selector("#gallery .thumb")
    page.screenshot(path=str(shots / "editor-ran.png"))
    document = saved_document(page)
    assert [node["type"] for node in document["nodes"].values()] == [
        "text.value", "encode.text", "generate.image", "image.save"]
    assert document["nodes"][save]["inputs"] == {"images": {"from": f"{generate}.images"}}
    assert document["nodes"][generate]["inputs"]["steps"] == 2


def test_mismatched_link_is_refused_while_dragging(page, tmp_path):
    page.click("#ed-new")
    text = drop_node(page, "text.value", 40, 60)
    sharpen = drop_node(page, "image.sharpen", 330, 60)
    drag_link(page, f"{text}.text", f"{sharpen}.images", release=False)
    row = page.locator(f".ed-node[data-id='{sharpen}'] .ed-in[data-input='images']")
    assert "link-refused" in row.get_attribute("class")
    assert "refused: Text cannot feed Images" in page.inner_text("#ed-status")
    page.screenshot(path=str(screenshots(tmp_path) / "editor-refused.png"))
    page.mouse.up()
    assert page.locator(".ed-link").count() == 0
    assert "images" not in saved_document(page)["nodes"][sharpen]["inputs"]
    # The same gesture with matching types makes the link.
    card = drop_node(page, "image.text_card", 40, 300)
    drag_link(page, f"{card}.images", f"{sharpen}.images")
    assert page.locator(".ed-link").count() == 1


@pytest.mark.parametrize("name", sorted(shipped_graphs()))
def test_every_shipped_graph_round_trips_unchanged(page, name):
    open_shipped(page, name)
    saved = saved_document(page)
    assert saved == json.loads(shipped_graphs()[name].read_text(encoding="utf-8"))
    # ... in the order the engine writes it, too.
    status_document = page.evaluate(f"api('/api/graphs/{name}').then((g) => g.document)")
    assert json.dumps(saved) == json.dumps(status_document)


def test_graph_without_positions_is_laid_out_left_to_right_by_dependency(page, tmp_path):
    open_shipped(page, "text-to-image")
    page.screenshot(path=str(screenshots(tmp_path) / "editor-text-to-image.png"))

    def left(node: str) -> float:
        return page.locator(f".ed-node[data-id='{node}']").bounding_box()["x"]

    chain = ["clean", "weights", "encode", "generate", "upscale", "sharpen", "save"]
    xs = [left(node) for node in chain]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)


def test_moved_node_keeps_its_position_in_meta(page):
    open_shipped(page, "prompt-card")
    node = page.locator(".ed-node").first
    node_id = node.get_attribute("data-id")
    x, y = centre(node.locator("header"))
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y + 40, steps=5)
    page.mouse.up()
    pos = saved_document(page)["nodes"][node_id]["meta"]["pos"]
    assert isinstance(pos, list) and len(pos) == 2


def test_validation_issue_is_shown_on_its_node_and_field(page, tmp_path):
    page.click("#ed-new")
    card = drop_node(page, "image.text_card", 40, 60)
    sharpen = drop_node(page, "image.sharpen", 330, 60)
    drag_link(page, f"{card}.images", f"{sharpen}.images")
    field(page, card, "text").fill("hello")
    field(page, card, "text").press("Tab")
    wait_valid(page)
    page.click(f".ed-node[data-id='{sharpen}'] .ed-more")
    field(page, sharpen, "radius").fill("-5")
    field(page, sharpen, "radius").press("Tab")
    issue = page.locator(f".ed-node[data-id='{sharpen}'] .ed-in[data-input='radius'] .ed-field-issue")
    issue.wait_for(state="visible", timeout=30_000)
    assert "greater than or equal to 0" in issue.inner_text()
    assert "has-issue" in page.locator(f".ed-node[data-id='{sharpen}']").get_attribute("class")
    assert f"nodes.{sharpen}.inputs.radius" in page.inner_text("#ed-issues")
    page.screenshot(path=str(screenshots(tmp_path) / "editor-issue.png"))
    # A missing required link shows on the node's field too.
    page.keyboard.press("Escape")
    page.click(f".ed-node[data-id='{sharpen}'] .ed-chip button")  # unlink images
    page.locator(f".ed-node[data-id='{sharpen}'] .ed-node-issues, "
                 f".ed-node[data-id='{sharpen}'] .ed-in[data-input='images'] .ed-field-issue").filter(
        has_text="images").first.wait_for(timeout=30_000)


def test_input_promoted_to_a_parameter_with_name_and_default(page):
    page.click("#ed-new")
    card = drop_node(page, "image.text_card", 40, 60)
    page.click(f".ed-node[data-id='{card}'] .ed-in[data-input='text'] .ed-promote")
    page.fill("#ed-param-name", "caption")
    page.fill("#ed-param-default", "hello world")
    page.click("#ed-param-ok")
    assert "param caption" in page.inner_text(f".ed-node[data-id='{card}'] .ed-in[data-input='text']")
    document = saved_document(page)
    assert list(document["params"]) == ["caption"]
    assert document["params"]["caption"]["type"] == "str"
    assert document["params"]["caption"]["default"] == "hello world"
    assert document["nodes"][card]["inputs"]["text"] == {"param": "caption"}
    assert list(document) == ["version", "name", "params", "nodes"]
    wait_valid(page)


def test_undo_redo_delete_copy_paste(page):
    page.click("#ed-new")
    card = drop_node(page, "image.text_card", 40, 60)
    page.click(f".ed-node[data-id='{card}'] header")
    page.keyboard.press("Control+c")
    page.keyboard.press("Control+v")
    assert page.locator(".ed-node").count() == 2
    page.keyboard.press("Delete")  # the pasted copy is selected
    assert page.locator(".ed-node").count() == 1
    page.keyboard.press("Control+z")
    assert page.locator(".ed-node").count() == 2
    page.click("#ed-redo")
    assert page.locator(".ed-node").count() == 1
    page.click("#ed-undo")
    page.click("#ed-undo")
    assert page.locator(".ed-node").count() == 1


def test_zoom_and_pan_move_the_canvas(page):
    open_shipped(page, "prompt-card")
    node = page.locator(".ed-node").first
    before = node.bounding_box()
    page.click("#ed-zoom-in")
    zoomed = node.bounding_box()
    assert zoomed["width"] > before["width"] * 1.1
    canvas = page.locator("#ed-canvas").bounding_box()
    x, y = canvas["x"] + canvas["width"] - 20, canvas["y"] + canvas["height"] - 20  # the background
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 100, y - 50, steps=4)
    page.mouse.up()
    panned = node.bounding_box()
    assert abs(panned["x"] - (zoomed["x"] - 100)) < 2 and abs(panned["y"] - (zoomed["y"] - 50)) < 2


def test_palette_is_searchable_and_usable_from_the_keyboard(page):
    page.click("#ed-new")
    page.fill("#ed-search", "sharpen")
    found = page.eval_on_selector_all(".ed-palette-item", "els => els.map((e) => e.dataset.type)")
    assert found[0] == "image.sharpen" and "image.upscale" not in found and "text.value" not in found
    page.press("#ed-search", "Enter")
    assert page.locator(".ed-node[data-id='image_sharpen']").count() == 1
    page.fill("#ed-search", "text.")
    page.press("#ed-search", "ArrowDown")
    page.keyboard.press("ArrowDown")
    second = page.evaluate("document.activeElement.dataset.type")
    page.keyboard.press("Enter")
    assert page.locator(f".ed-node header small:text-is('{second}')").count() == 1


def test_png_made_by_sfumato_opens_its_graph(page, server):
    graph = {"version": 1, "name": "render-and-save", "nodes": {
        "render": {"type": "zoo.render", "inputs": {"shape": "circle"}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "render.images"}}}}}
    status, job = server.request("POST", "/api/jobs", {"graph": graph})
    assert status == 201
    done = server.wait(job["id"])
    assert done["status"] == "done", done.get("error")
    png = server.data / "outputs" / next(p for p in done["outputs"] if p.endswith(".png"))
    page.set_input_files("#ed-open-file", str(png))
    page.wait_for_function("document.querySelector('#ed-status').textContent.includes('stored in')")
    assert saved_document(page) == graph


def test_parameter_default_is_edited_in_the_side_panel(page):
    open_shipped(page, "prompt-card")
    shipped = json.loads(shipped_graphs()["prompt-card"].read_text())["params"]
    page.fill("#ed-p-style", "ink on paper")
    page.press("#ed-p-style", "Tab")
    page.fill("#ed-p-seed", "7")
    page.press("#ed-p-seed", "Tab")
    params = saved_document(page)["params"]
    assert params["style"] == {**shipped["style"], "default": "ink on paper"}
    assert params["seed"] == {**shipped["seed"], "default": 7}
    page.click("#ed-undo")
    page.click("#ed-undo")
    assert saved_document(page)["params"] == shipped


def test_subgraph_node_is_shown_collapsed_and_opens_in_place(page, tmp_path):
    page.click("#ed-new")
    sub = drop_node(page, "graph:prompt-card", 30, 30)
    node = page.locator(f".ed-node[data-id='{sub}']")
    # Collapsed: the graph's output and parameters as the node's sockets and widgets.
    assert node.locator(".ed-socket-out[data-type='Text']").count() == 1
    assert {"prompt", "style", "seed"} <= set(node.locator(".ed-in").evaluate_all("els => els.map((e) => e.dataset.input)"))
    assert node.locator(".ed-inner svg").count() == 0
    card = drop_node(page, "image.text_card", 560, 30)
    drag_link(page, f"{sub}.prompt", f"{card}.text")
    wait_valid(page)
    node.locator(".ed-open-subgraph").click()
    node.locator(".ed-inner svg").wait_for()
    assert node.locator(".ed-open-subgraph").get_attribute("aria-expanded") == "true"
    page.screenshot(path=str(screenshots(tmp_path) / "editor-subgraph-open.png"))
    document = saved_document(page)
    assert document["nodes"][sub] == {"type": "graph:prompt-card", "inputs": {},
                                      "meta": document["nodes"][sub]["meta"]}
    assert document["nodes"][card]["inputs"] == {"text": {"from": f"{sub}.prompt"}}
    node.locator(".ed-open-subgraph").click()
    assert node.locator(".ed-inner svg").count() == 0


def test_validation_warning_is_shown_on_its_node_without_refusing_the_graph(page, tmp_path):
    document = {"version": 1, "name": "gan-with-steps", "nodes": {
        "encode": {"type": "encode.text", "inputs": {"texts": ["a red circle"]}},
        "generate": {"type": "generate.image", "inputs": {
            "conditioning": {"from": "encode.conditioning"}, "model": "tiny-shapes-gan", "steps": 5}}}}
    path = tmp_path / "gan-with-steps.json"
    path.write_text(json.dumps(document))
    page.set_input_files("#ed-open-file", str(path))
    wait_valid(page)
    node = page.locator(".ed-node[data-id='generate']")
    # On its field when the warning's path names one, else on the node.
    node.locator(".ed-field-issue, .ed-node-issues li").filter(has_text="'steps' is ignored").wait_for(timeout=30_000)
    assert "has-warning" in node.get_attribute("class") and "has-issue" not in node.get_attribute("class")
    assert "warning: nodes.generate" in page.inner_text("#ed-issues")
    assert saved_document(page) == document


def test_failed_node_is_marked_with_its_error_after_a_run(page, server, tmp_path):
    from test_server_page import failing_graph

    path = tmp_path / "fails.json"
    path.write_text(json.dumps(failing_graph(server.data)))
    page.set_input_files("#ed-open-file", str(path))
    wait_valid(page)
    page.click("#ed-run")
    page.wait_for_selector(".ed-node[data-id='load'].failed", timeout=60_000)
    assert "missing.png" in page.inner_text(".ed-node[data-id='load'] .ed-node-issues")
    page.wait_for_function("document.querySelector('#ed-status').textContent.includes('failed')")
    assert not page.locator("#ed-run").is_disabled()


def test_file_that_is_not_a_graph_is_refused_with_a_message(page, tmp_path):
    open_shipped(page, "prompt-card")
    for name, text, message in [("broken.json", "{not json", "is not JSON"),
                                ("list.json", "[1, 2]", 'has no "nodes" object'),
                                ("odd.json", '{"version": 1, "nodes": {"a": 5}}', 'node "a" is not an object')]:
        path = tmp_path / name
        path.write_text(text)
        page.set_input_files("#ed-open-file", str(path))
        page.wait_for_function(f"document.querySelector('#ed-status').textContent.includes({json.dumps(message)})")
        assert "errors" in page.get_attribute("#ed-status", "class")
    # The graph that was open stays open.
    assert saved_document(page) == json.loads(shipped_graphs()["prompt-card"].read_text())


def test_literal_inputs_get_widgets_from_their_json_schema_and_models_from_the_server(page, server):
    page.click("#ed-new")
    generate = drop_node(page, "generate.image", 30, 30)
    save = drop_node(page, "image.save", 330, 30)
    for node in (generate, save):
        page.click(f".ed-node[data-id='{node}'] .ed-more")
    steps = field(page, generate, "steps")
    assert steps.get_attribute("type") == "number" and steps.get_attribute("step") == "1"
    assert (steps.get_attribute("min"), steps.get_attribute("max")) == ("1", "1000")
    assert field(page, generate, "guidance").get_attribute("step") == "any"
    scheduler = field(page, generate, "scheduler")
    choices = scheduler.locator("option").evaluate_all("els => els.map((e) => e.textContent)")
    assert "dpm++" in choices and "euler" in choices and scheduler.evaluate("(e) => e.tagName") == "SELECT"
    assert field(page, save, "metadata").get_attribute("type") == "checkbox"
    assert field(page, save, "template").evaluate("(e) => e.tagName") in ("INPUT", "TEXTAREA")
    _, models = server.request("GET", "/api/models")
    options = field(page, generate, "model").locator("option").evaluate_all("els => els.map((e) => e.value)")
    assert {model["name"] for model in models} <= set(options)
    field(page, generate, "model").select_option("tiny-shapes-gan")
    field(page, save, "metadata").uncheck()
    scheduler.select_option("euler")
    inputs = saved_document(page)["nodes"]
    assert inputs[generate]["inputs"] == {"model": "tiny-shapes-gan", "scheduler": "euler"}
    assert inputs[save]["inputs"] == {"metadata": False}


def test_link_is_made_and_refused_from_the_keyboard(page):
    page.click("#ed-new")
    text = drop_node(page, "text.value", 30, 30)
    sharpen = drop_node(page, "image.sharpen", 330, 30)
    card = drop_node(page, "image.text_card", 30, 250)
    page.focus(f".ed-socket-out[data-key='{text}.text']")
    page.keyboard.press("Enter")
    page.focus(f".ed-socket-in[data-key='{sharpen}.images']")
    page.keyboard.press("Enter")
    assert "refused: Text cannot feed Images" in page.inner_text("#ed-status")
    page.focus(f".ed-socket-in[data-key='{card}.text']")
    page.keyboard.press("Enter")
    assert page.locator(".ed-link").count() == 1
    assert saved_document(page)["nodes"][card]["inputs"]["text"] == {"from": f"{text}.text"}


def test_renamed_node_keeps_its_links_and_graph_outputs(page):
    open_shipped(page, "text-to-image")
    page.dblclick(".ed-node[data-id='score'] header strong")
    page.fill(".ed-rename", "judge")
    page.keyboard.press("Enter")
    assert page.locator(".ed-node[data-id='judge']").count() == 1
    document = saved_document(page)
    shipped = json.loads(shipped_graphs()["text-to-image"].read_text())
    assert list(document["nodes"]) == [("judge" if node == "score" else node) for node in shipped["nodes"]]
    assert document["nodes"]["judge"] == shipped["nodes"]["score"]
    assert document["outputs"] == {"fidelity": "judge.scores"}
    wait_valid(page)
    # F2 on a focused node, and a taken id is refused.
    page.focus(".ed-node[data-id='judge']")
    page.keyboard.press("F2")
    page.fill(".ed-rename", "generate")
    page.keyboard.press("Enter")
    assert "already a node generate" in page.inner_text("#ed-status")
    assert page.locator(".ed-node[data-id='judge']").count() == 1


def test_editor_works_on_a_server_with_a_token(browser, tmp_path):
    server = Server(tmp_path / "data", "--token", "s3cret").start()
    try:
        context = browser.new_context(viewport=VIEW)
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{server.port}/?token=s3cret")
        page.wait_for_selector("#editor[data-ready=true]")
        open_shipped(page, "prompt-card")
        wait_valid(page)
        context.close()
    finally:
        server.stop()


def test_linked_input_socket_drags_its_link_elsewhere_or_away(page):
    page.click("#ed-new")
    card = drop_node(page, "image.text_card", 30, 30)
    first = drop_node(page, "image.sharpen", 330, 30)
    second = drop_node(page, "image.upscale", 330, 260)
    drag_link(page, f"{card}.images", f"{first}.images")
    # Pick the link up at the input and drop it on another input: it moves (one undo step).
    page.mouse.move(*centre(page.locator(f".ed-socket-in[data-key='{first}.images']")))
    page.mouse.down()
    page.mouse.move(*centre(page.locator(f".ed-node[data-id='{second}'] .ed-in[data-input='images'] label")), steps=8)
    page.mouse.up()
    nodes = saved_document(page)["nodes"]
    assert "images" not in nodes[first]["inputs"] and nodes[second]["inputs"]["images"] == {"from": f"{card}.images"}
    # Let go over the empty canvas: the link is removed.
    page.mouse.move(*centre(page.locator(f".ed-socket-in[data-key='{second}.images']")))
    page.mouse.down()
    canvas = page.locator("#ed-canvas").bounding_box()
    page.mouse.move(canvas["x"] + canvas["width"] - 30, canvas["y"] + canvas["height"] - 30, steps=8)
    page.mouse.up()
    assert page.locator(".ed-link").count() == 0
    page.click("#ed-undo")
    assert page.locator(".ed-link").count() == 1


def test_second_run_marks_reused_nodes_cached(page, tmp_path):
    graph = {"version": 1, "name": "render-twice", "nodes": {
        "render": {"type": "zoo.render", "inputs": {"shape": "square", "seed": 3}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "render.images"}}}}}
    path = tmp_path / "render-twice.json"
    path.write_text(json.dumps(graph))
    page.set_input_files("#ed-open-file", str(path))
    wait_valid(page)
    for state in ("done", "cached"):
        page.click("#ed-run")
        page.wait_for_selector(f".ed-node[data-id='render'].{state}", timeout=60_000)
        page.wait_for_function("!document.querySelector('#ed-run').disabled")
    assert "cached" in page.inner_text(".ed-node[data-id='render'] .ed-state")
