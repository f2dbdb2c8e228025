"""The template's own tests: call nodes directly, and run them in a graph."""

from PIL import Image

import sfumato
from sfumato_vignette.nodes import apply_vignette, extract_palette


def test_corners_get_darker_and_centre_stays():
    images = sfumato.ImageBatch((Image.new("RGB", (64, 64), (200, 200, 200)),))
    [out] = apply_vignette(images, strength=0.8).images
    assert out.getpixel((0, 0))[0] < 100 and out.getpixel((32, 32))[0] > 190


def test_palette_finds_the_main_colour():
    images = sfumato.ImageBatch((Image.new("RGB", (8, 8), (255, 0, 0)),))
    assert extract_palette(images, 2).colours[0] == (255, 0, 0)


def test_plugin_is_discovered_and_runs_in_a_graph(tmp_path):
    registry = sfumato.Registry.load()
    assert registry.plugins["vignette"].status == "ok"
    builder = sfumato.GraphBuilder("vignette-demo")
    card = builder.add("image.text_card", text="hello", width=64, height=64)
    vignette = builder.add("vignette.apply", images=card["images"], strength=0.9)
    palette = builder.add("vignette.palette", images=vignette["images"])
    swatch = builder.add("vignette.swatch", palette=palette["palette"])
    builder.output("swatch", swatch["images"])
    result = sfumato.Engine(registry, output_dir=tmp_path).run(builder.build())
    assert len(result["swatch"].images) == 1
