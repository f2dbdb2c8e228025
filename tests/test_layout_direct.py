"""A layout passed straight into ``diffusion.generate``: regional generation inside the diffusion plugin.

The layout plugin's ``Layout`` converts to the core's ``sfumato.Regions`` on
the link; ``diffusion.generate`` denoises each region in its window and fuses
the predictions each step (``sfumato_diffusers.regions``), the same loop as
``layout.generate``.
"""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import save_tiny_sd_pipeline, save_tiny_sdxl_pipeline

import sfumato
from sfumato_layout import Layout, LayoutObject
from sfumato_layout.layout import to_regions

PROMPT = "two red circles to the left of a blue square on a black background"


def _graph(prompt: str = PROMPT, *, regions: dict | None = None, model: str = "tiny-shapes-diffusion",
           encode: tuple[str, dict] = ("encode.text", {}), **generate: object) -> sfumato.Graph:
    """plan -> prompts -> encode -> both layout.generate and diffusion.generate(layout=...), same settings."""
    builder = sfumato.GraphBuilder("direct")
    plan = builder.add("layout.plan", "plan", prompt=prompt)
    prompts = builder.add("layout.prompts", "prompts", layout=plan["layout"])
    encoded = builder.add(encode[0], "encode", texts=prompts["texts"], **encode[1])
    settings = {"steps": 3, "seed": 3, "batch_size": 2, "width": 64, "height": 64, "model": model, **generate}
    if model != "tiny-shapes-diffusion":
        # Without one, layout.generate steers from zeros and diffusion.generate from the model's own
        # unconditional input (the empty prompt for SD): give both the same negative.
        settings["negative"] = builder.add(encode[0], "negative", texts=[""], **encode[1])["conditioning"]
    layout = plan["layout"]
    if regions is not None:
        layout = builder.add("layout.regions", "regions", layout=plan["layout"], **regions)["regions"]
    via_layout = builder.add("layout.generate", "via_layout", layout=plan["layout"],
                             conditioning=encoded["conditioning"], **(regions or {}), **settings)
    direct = builder.add("diffusion.generate", "direct", layout=layout, conditioning=encoded["conditioning"],
                         **settings)
    builder.output("via_layout", via_layout["images"])
    builder.output("direct", direct["images"])
    return builder.build()


def _same_images(first: sfumato.ImageBatch, second: sfumato.ImageBatch) -> bool:
    return len(first) == len(second) and all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first.images, second.images))


@pytest.fixture(scope="module")
def engine():
    return sfumato.Engine(device="cpu", cache=False)


@pytest.mark.slow
def test_a_layout_linked_into_diffusion_generate_makes_the_same_images_as_layout_generate(engine):
    result = engine.run(_graph())
    assert len(result["direct"]) == 2 and result["direct"].images[0].size == (64, 64)
    assert _same_images(result["direct"], result["via_layout"])
    first, second = (np.asarray(image, dtype=np.int16) for image in result["direct"].images)
    assert np.abs(first - second).max() > 0  # each image has its own seed


@pytest.mark.slow
def test_layout_regions_options_reach_diffusion_generate_with_an_sd_unet(engine, tmp_path):
    folder = save_tiny_sd_pipeline(tmp_path / "sd")
    options = {"background": "prompt", "decode": "canvas", "object_fill": 0.7}
    graph = _graph("a red circle to the left of a blue square on a gray background", regions=options,
                   model=str(folder), encode=("encode.text", {"model": str(folder / "text_encoder"),
                                                               "max_length": 16}), guidance=4.0)
    result = engine.run(graph)
    assert _same_images(result["direct"], result["via_layout"])
    default = engine.run(_graph("a red circle to the left of a blue square on a gray background", model=str(folder),
                                encode=("encode.text", {"model": str(folder / "text_encoder"), "max_length": 16}),
                                guidance=4.0))
    assert not _same_images(default["direct"], result["direct"])  # the options changed the picture


@pytest.mark.slow
def test_a_layout_drives_an_sdxl_unet_window_by_window(engine, tmp_path):
    import sfumato.testing as st
    from sfumato_diffusers import nodes as diffusion_nodes

    folder = save_tiny_sdxl_pipeline(tmp_path / "sdxl")
    builder = sfumato.GraphBuilder("encode")
    encoded = builder.add("encode.sdxl", "encode", model=str(folder),
                          texts=["a gray background", "a red circle", "a blue square"])
    builder.output("c", encoded["conditioning"])
    conditioning = engine.run(builder.build())["c"]
    layout = Layout((LayoutObject("red circle", (0.0, 0.0, 0.3, 0.3)),
                     LayoutObject("blue square", (0.6, 0.6, 0.9, 0.9))), "gray")
    images = st.call_node(diffusion_nodes.generate, layout=to_regions(layout), conditioning=conditioning,
                          model=str(folder), steps=2, width=64, height=64, guidance=5.0)["images"]
    pixels = np.asarray(images.images[0])
    assert images.images[0].size == (64, 64)
    assert (pixels[40:, :20] == (128, 128, 128)).all()  # outside both windows: the flat gray background
    assert pixels[:16, :16].std() > 0  # inside the first window: drawn


@pytest.mark.slow
def test_layout_generate_refuses_an_sdxl_unet_naming_diffusion_generate(tmp_path):
    import torch

    import sfumato.testing as st
    from sfumato_layout import nodes as layout_nodes

    folder = save_tiny_sdxl_pipeline(tmp_path / "sdxl")
    layout = Layout((LayoutObject("red circle", (0.0, 0.0, 0.3, 0.3)),), "gray")
    conditioning = sfumato.Conditioning(torch.zeros(2, 16, 64), "clip", 64, 16, torch.zeros(2, 32), family="sdxl")
    with pytest.raises(ValueError, match="diffusion.generate"):
        st.call_node(layout_nodes.generate, layout=layout, conditioning=conditioning, model=str(folder), steps=1,
                     width=64, height=64)


def _issues(graph: sfumato.Graph) -> list[sfumato.GraphIssue]:
    return sfumato.validate_graph(graph, sfumato.default_registry())


def _direct_graph(**inputs: object) -> sfumato.Graph:
    builder = sfumato.GraphBuilder("direct")
    plan = builder.add("layout.plan", "plan", prompt=PROMPT)
    prompts = builder.add("layout.prompts", "prompts", layout=plan["layout"])
    encoded = builder.add("encode.text", "encode", texts=prompts["texts"])
    builder.add("diffusion.generate", "gen", layout=plan["layout"], conditioning=encoded["conditioning"], **inputs)
    return builder.build()


def test_a_layout_links_into_diffusion_generate_through_the_regions_port_type():
    assert _issues(_direct_graph()) == []


@pytest.mark.parametrize("name, value, what", [("control", None, "ControlNets"), ("init_images", None, "image-to-image"),
                                               ("mask", None, "inpainting")])
def test_validation_refuses_a_layout_with_inputs_regional_generation_cannot_use(name, value, what):
    builder = sfumato.GraphBuilder("bad")
    plan = builder.add("layout.plan", "plan", prompt=PROMPT)
    prompts = builder.add("layout.prompts", "prompts", layout=plan["layout"])
    encoded = builder.add("encode.text", "encode", texts=prompts["texts"])
    sketch = builder.add("layout.draw", "draw", layout=plan["layout"])
    extra = {"control": builder.add("diffusion.controlnet", "cn", images=sketch["images"],
                                    model="no-such-controlnet")["control"]} if name == "control" \
        else {name: sketch["images"]}
    if name == "mask":
        extra["init_images"] = sketch["images"]
    builder.add("diffusion.generate", "gen", layout=plan["layout"], conditioning=encoded["conditioning"], **extra)
    issues = [issue for issue in _issues(builder.build()) if issue.path == f"nodes.gen.inputs.{name}"]
    assert issues and what in issues[0].message and "layout" in issues[0].message


def test_validation_refuses_a_layout_linked_into_a_generator_that_cannot_use_it():
    builder = sfumato.GraphBuilder("bad")
    plan = builder.add("layout.plan", "plan", prompt=PROMPT)
    prompts = builder.add("layout.prompts", "prompts", layout=plan["layout"])
    encoded = builder.add("encode.text", "encode", texts=prompts["texts"])
    builder.add("generate.image", "gen", layout=plan["layout"], conditioning=encoded["conditioning"])
    issues = _issues(builder.build())
    assert issues and any("layout" in issue.message and issue.path.startswith("nodes.gen") for issue in issues)


def test_validation_refuses_a_layout_with_a_step_cache():
    issues = _issues(_direct_graph(speed={"step_cache": 2}))
    assert any(issue.path == "nodes.gen.inputs.speed" and "step_cache" in issue.message for issue in issues)


def test_a_layout_needs_one_prompt_per_region_naming_the_count():
    import sfumato.testing as st
    from sfumato_diffusers import nodes as diffusion_nodes

    layout = to_regions(Layout((LayoutObject("red circle", (0.1, 0.1, 0.4, 0.4)),), "black"))
    conditioning = sfumato.Conditioning(np.zeros((1, 4, 384), dtype=np.float32), "all-MiniLM-L6-v2", 384, 4)
    with pytest.raises(ValueError, match="give 2"):
        st.call_node(diffusion_nodes.generate, layout=layout, conditioning=_torch(conditioning), width=64, height=64)


def _torch(conditioning: sfumato.Conditioning) -> sfumato.Conditioning:
    import torch

    return sfumato.Conditioning(torch.from_numpy(conditioning.states), conditioning.encoder, conditioning.width,
                                conditioning.sequence_length, torch.zeros(len(conditioning), conditioning.width))


def test_a_layout_converts_to_regions_with_its_boxes_captions_and_background_colour():
    layout = Layout((LayoutObject("red circle", (0.1, 0.2, 0.4, 0.5)),), "gray", prompt="a red circle")
    regions = to_regions(layout)
    assert regions.boxes == ((0.1, 0.2, 0.4, 0.5),) and regions.captions == ("red circle",)
    assert regions.background == (128, 128, 128) and regions.prompt == "a red circle"
    assert to_regions(layout, background="prompt").background is None
    with pytest.raises(ValueError, match="not a colour name"):
        to_regions(Layout(layout.objects, "mauve"))
