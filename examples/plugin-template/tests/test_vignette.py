"""The template's own tests: call nodes directly, then run them in a graph.

``sfumato.testing`` is the kit: ``call_node`` validates inputs as a graph file
would and returns outputs by name; ``make_engine`` runs graphs over just the
plugins a test names (plus the installed ones when asked).
"""

import subprocess
import sys

import pytest
from PIL import Image

import sfumato
import sfumato.testing as st
import sfumato_vignette
from sfumato_vignette.nodes import apply_vignette, extract_palette, palette_swatch


def grey_images(size: int = 64) -> sfumato.ImageBatch:
    return sfumato.ImageBatch((Image.new("RGB", (size, size), (200, 200, 200)),))


def test_corners_get_darker_and_centre_stays():
    [out] = st.call_node(apply_vignette, images=grey_images(), strength=0.8)["images"].images
    assert out.getpixel((0, 0))[0] < 100 and out.getpixel((32, 32))[0] > 190


def test_strength_out_of_range_is_refused_as_in_a_graph_file():
    with pytest.raises(sfumato.ParameterError, match="strength"):
        st.call_node(apply_vignette, images=grey_images(), strength=1.5)


def test_palette_finds_the_main_colour():
    images = sfumato.ImageBatch((Image.new("RGB", (8, 8), (255, 0, 0)),))
    assert st.call_node(extract_palette, images=images, colours=2)["palette"].colours[0] == (255, 0, 0)


def test_plugin_alone_registers_its_port_type_and_nodes():
    registry = st.plugin_registry(sfumato_vignette)
    assert {"vignette.apply", "vignette.palette", "vignette.swatch"} <= set(registry.nodes)
    assert "VignettePalette" in registry.ports.types


def test_plugin_is_discovered_and_runs_in_a_graph(tmp_path):
    engine = st.make_engine(output_dir=tmp_path)  # the installed plugins, this one among them
    assert engine.registry.plugins["vignette"].status == "ok"
    builder = sfumato.GraphBuilder("vignette-demo")
    card = builder.add("image.text_card", text="hello", width=64, height=64)
    vignette = builder.add("vignette.apply", images=card["images"], strength=0.9)
    palette = builder.add("vignette.palette", images=vignette["images"])
    swatch = builder.add("vignette.swatch", palette=palette["palette"])
    builder.output("swatch", swatch["images"])
    builder.output("hex", palette["palette"])
    result = engine.run(builder.build())
    assert len(result["swatch"].images) == 1


def test_palette_converts_to_text_on_a_text_link(tmp_path):
    engine = st.make_engine(output_dir=tmp_path)
    builder = sfumato.GraphBuilder("palette-caption")
    card = builder.add("image.text_card", text=" ", width=32, height=32, background="#ff0000")
    palette = builder.add("vignette.palette", images=card["images"], colours=1)
    caption = builder.add("text.normalize", text=palette["palette"])
    builder.output("caption", caption["text"])
    assert engine.run(builder.build())["caption"] == "#ff0000"


def test_cli_command_prints_the_palette(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    done = subprocess.run([sys.executable, "-m", "sfumato.cli.main", "vignette", str(path), "--colours", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "#ff0000"


def test_swatch_draws_one_square_per_colour():
    palette = st.call_node(extract_palette, images=grey_images(8), colours=1)["palette"]
    [image] = st.call_node(palette_swatch, palette=palette, size=4)["images"].images
    assert image.size == (4 * len(palette.colours), 4)
