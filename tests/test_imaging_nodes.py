"""The imaging pack: loading odd files, batch order, saving safely, post-processing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sfumato import Engine, Graph, ImageBatch, NodeExecutionError
from sfumato.testing import make_context
from sfumato_imaging import adjust, geometry, io, sheets


def load(path, **options):
    """``image.load`` called directly, with a run context (unrestricted paths)."""
    return io.load_images(path, make_context(io.load_images), **options)


def batch(*colours, size=(16, 8)):
    return ImageBatch(tuple(Image.new("RGB", size, c) for c in colours), tuple(f"img{i}" for i in range(len(colours))))


def test_load_handles_16bit_rgba_grayscale_and_exif(tmp_path):
    sixteen = Image.fromarray(np.full((4, 6), 65535, dtype=np.uint16))
    sixteen.save(tmp_path / "a16.png")
    Image.new("RGBA", (5, 5), (255, 0, 0, 0)).save(tmp_path / "b_rgba.png")
    Image.new("L", (3, 3), 100).save(tmp_path / "c_gray.png")
    rotated = Image.new("RGB", (20, 10), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rotated.save(tmp_path / "d_exif.jpg", exif=exif)
    loaded = load(str(tmp_path))
    assert loaded.labels == ("a16.png", "b_rgba.png", "c_gray.png", "d_exif.jpg")
    a16, rgba, gray, exif_image = loaded.images
    assert a16.mode == "RGB" and a16.getpixel((0, 0)) == (255, 255, 255)
    assert rgba.getpixel((0, 0)) == (255, 255, 255)  # transparent flattened on white
    assert gray.getpixel((0, 0)) == (100, 100, 100)
    assert exif_image.size == (10, 20)
    kept = load(str(tmp_path / "b_rgba.png"), mode="keep")
    assert kept.images[0].mode == "RGBA"


def test_load_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no images"):
        load(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no image file or folder"):
        load(str(tmp_path / "missing"))


def test_load_notices_changed_files_through_its_fingerprint(tmp_path, registry):
    Image.new("RGB", (4, 4), "red").save(tmp_path / "x.png")
    graph = Graph.from_dict({"version": 1, "nodes": {"l": {"type": "image.load", "inputs": {"path": str(tmp_path)}}},
                             "outputs": {"i": "l.images"}})
    engine = Engine(registry, output_dir=tmp_path / "out")
    assert engine.run(graph)["i"].images[0].getpixel((0, 0)) == (255, 0, 0)
    assert engine.run(graph).report.nodes["l"].status == "cached"
    Image.new("RGB", (5, 5), "blue").save(tmp_path / "x.png")
    assert engine.run(graph)["i"].images[0].getpixel((0, 0)) == (0, 0, 255)


def _save_graph(template="{graph}-{seed}-{index}.png", if_exists="increment"):
    return Graph.from_dict({"version": 1, "name": "t", "nodes": {
        "card": {"type": "image.text_card", "inputs": {"text": "hi", "width": 32, "height": 32}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "card.images"}, "template": template,
                                                   "if_exists": if_exists}}}})


def test_save_refuses_paths_that_escape_the_output_folder(tmp_path, registry):
    engine = Engine(registry, output_dir=tmp_path / "out", cache=False)
    for template in ("../evil-{index}.png", "/tmp/evil.png", "a/../../evil.png"):
        with pytest.raises(NodeExecutionError, match="output folder|relative path"):
            engine.run(_save_graph(template))
    assert not list(tmp_path.glob("evil*"))


def test_save_never_overwrites_unless_asked(tmp_path, registry):
    engine = Engine(registry, output_dir=tmp_path, cache=False)
    first = engine.run(_save_graph()).report.files
    second = engine.run(_save_graph()).report.files
    assert [p.rsplit("/", 1)[1] for p in first + second] == ["t-0-0.png", "t-0-0-1.png"]
    with pytest.raises(NodeExecutionError, match="exists"):
        engine.run(_save_graph(if_exists="error"))
    assert engine.run(_save_graph(if_exists="overwrite")).report.files == first
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_saver_reruns_when_its_file_was_deleted(tmp_path, registry):
    engine = Engine(registry, output_dir=tmp_path)
    [path] = engine.run(_save_graph()).report.files
    assert engine.run(_save_graph()).report.nodes["save"].status == "cached"
    (tmp_path / path).unlink()
    assert engine.run(_save_graph()).report.nodes["save"].status == "ran"


def test_batch_order_and_labels_are_kept():
    images = batch("red", "green", "blue")
    for result in (geometry.resize(images, 4, 4), adjust.sharpen(images), adjust.denoise(images, "bilateral"),
                   adjust.adjust(images, brightness=0.5), adjust.quantize(images, 4), geometry.pad(images, 1, 1, 1, 1)):
        assert result.labels == images.labels
        assert [im.convert("RGB").getpixel((2, 2))[i] > 50 for i, im in enumerate(result.images)] == [True] * 3


def test_resize_methods_and_fit():
    image = batch("red", size=(40, 20))
    assert geometry.resize(image, 10, 10, fit="contain").images[0].size == (10, 5)
    assert geometry.resize(image, 10, 10, fit="cover").images[0].size == (10, 10)
    assert geometry.upscale(image, 2, "nearest").images[0].size == (80, 40)


def test_crop_outside_the_image_is_a_clear_error():
    assert geometry.crop(batch("red"), 2, 2, 4, 4).images[0].size == (4, 4)
    assert geometry.crop(batch("red"), width=4, height=4, center=True).images[0].size == (4, 4)
    with pytest.raises(ValueError, match="does not fit"):
        geometry.crop(batch("red"), 10, 0, 10, 4)


def test_adjustments_change_pixels_as_named():
    gray = batch((100, 100, 100))
    assert adjust.adjust(gray, brightness=2.0).images[0].getpixel((0, 0)) == (200, 200, 200)
    assert adjust.adjust(gray, gamma=2.0).images[0].getpixel((0, 0))[0] > 100
    red = batch((200, 50, 50))
    assert adjust.adjust(red, saturation=0.0).images[0].getpixel((0, 0))[0] < 200
    ramp = ImageBatch((Image.fromarray(np.tile(np.arange(100, 150, dtype=np.uint8), (4, 1))).convert("RGB"),))
    stretched = adjust.autocontrast(ramp, cutoff=0).images[0]
    assert stretched.getpixel((0, 0))[0] == 0 and stretched.getpixel((49, 0))[0] == 255
    assert len(adjust.quantize(ramp, 4).images[0].getcolors()) <= 4


def test_denoise_removes_a_speckle():
    array = np.full((9, 9, 3), 80, dtype=np.uint8)
    array[4, 4] = 255
    noisy = ImageBatch((Image.fromarray(array),))
    assert adjust.denoise(noisy, "median").images[0].getpixel((4, 4)) == (80, 80, 80)
    with pytest.raises(ValueError, match="odd"):
        adjust.denoise(noisy, size=4)


def test_grid_makes_one_captioned_sheet_in_order():
    sheet = sheets.grid(batch("red", "green", "blue", "white"), columns=2, cell=32, padding=4)
    [image] = sheet.images
    assert image.width == 2 * 32 + 3 * 4
    assert image.getpixel((4 + 16, 4 + 16)) == (255, 0, 0)
    assert image.getpixel((4 + 32 + 4 + 16, 4 + 16)) == (0, 128, 0)
    with pytest.raises(ValueError, match="empty batch"):
        sheets.grid(ImageBatch(()))


def test_colour_adjustments_leave_transparency_alone():
    image = Image.new("RGBA", (4, 4), (100, 50, 25, 77))
    for result in (adjust.adjust(ImageBatch((image,)), brightness=2.0), adjust.autocontrast(ImageBatch((image,)))):
        [out] = result.images
        assert out.mode == "RGBA" and out.getpixel((0, 0))[3] == 77


def test_a_huge_folder_is_not_listed_whole_to_fingerprint_it(tmp_path, monkeypatch):
    for number in range(4):
        Image.new("RGB", (2, 2), "red").save(tmp_path / f"{number}.png")
    monkeypatch.setattr(io, "MAX_FINGERPRINT_ENTRIES", 3)
    first = io._files_fingerprint({"path": str(tmp_path)})
    assert first.startswith("too-many-files:") and first != io._files_fingerprint({"path": str(tmp_path)})
    monkeypatch.setattr(io, "MAX_FINGERPRINT_ENTRIES", 10)
    assert io._files_fingerprint({"path": str(tmp_path)}) == io._files_fingerprint({"path": str(tmp_path)})
