"""The provenance plugin: invisible watermarks, the IPTC digital source type, C2PA content credentials
and ``sfumato verify``."""

from __future__ import annotations

import datetime
import json
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFilter

import sfumato
import sfumato.testing as st
from sfumato import Graph, NodeExecutionError, read_png_metadata
from sfumato.cli import main
from sfumato_provenance import watermark

XMP_KEY = "XML:com.adobe.xmp"
IPTC = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType"
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def shape_image(size: int = 256, background=(10, 10, 30), colour=(220, 40, 40)) -> Image.Image:
    """A flat-coloured shape enlarged from 32x32 and sharpened, like the shipped graphs' output."""
    small = Image.new("RGB", (32, 32), background)
    ImageDraw.Draw(small).ellipse([8, 8, 22, 22], fill=colour)
    return small.resize((size, size), Image.LANCZOS).filter(ImageFilter.UnsharpMask(1.5, 80))


def marked_graph(nodes_after_save: dict | None = None, **mark_inputs) -> dict:
    nodes = {
        "load": {"type": "image.load", "inputs": {"path": {"param": "path"}}},
        "mark": {"type": "provenance.watermark", "inputs": {"images": {"from": "load.images"}, **mark_inputs}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "mark.images"}}},
        **(nodes_after_save or {}),
    }
    return {"version": 1, "name": "marked", "params": {"path": {"type": "str", "default": ""}}, "nodes": nodes}


def run_graph(tmp_path: Path, graph: dict, image: Image.Image | None = None) -> list[Path]:
    source = tmp_path / "source.png"
    (image or shape_image()).save(source)
    engine = st.make_engine(output_dir=tmp_path / "out", cache=False)
    result = engine.run(Graph.from_dict(graph), {"path": str(source)})
    return [Path(p) for p in result.report.files]


def verify(*args: str) -> tuple[int, list[dict]]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["verify", *args, "--json"])
    return code, json.loads(out.getvalue()) if out.getvalue().strip() else []


# -- provenance.watermark and sfumato verify -----------------------------------------


def test_watermark_is_detected_and_carries_the_graph_hash(tmp_path):
    [saved] = run_graph(tmp_path, marked_graph())
    code, [found] = verify(str(saved))
    assert code == 0 and found["ok"]
    assert found["watermark"]["found"]
    assert found["watermark"]["payload"] == watermark.graph_hash(read_png_metadata(saved)["graph"])[:8]
    assert found["watermark"]["matches_graph_hash"] is True


def test_watermark_survives_a_png_resave_without_metadata(tmp_path):
    [saved] = run_graph(tmp_path, marked_graph())
    resaved = tmp_path / "resaved.png"
    Image.open(saved).convert("RGB").save(resaved)  # Pillow drops every text chunk
    code, [found] = verify(str(resaved))
    assert code == 0
    assert found["watermark"]["found"] and found["graph_hash"] is None
    assert found["watermark"]["payload"] == watermark.graph_hash(read_png_metadata(saved)["graph"])[:8]


@pytest.mark.parametrize("background,colour", [((10, 10, 30), (220, 40, 40)), ((0, 0, 0), (255, 255, 255)),
                                               ((250, 250, 250), (20, 120, 240))])
def test_watermark_survives_jpeg_at_quality_90(tmp_path, background, colour):
    [saved] = run_graph(tmp_path, marked_graph(), shape_image(256, background, colour))
    jpeg = tmp_path / "copy.jpg"
    Image.open(saved).convert("RGB").save(jpeg, quality=90)
    code, [found] = verify(str(jpeg))
    assert code == 0
    assert found["watermark"]["payload"] == watermark.graph_hash(read_png_metadata(saved)["graph"])[:8]


def test_watermark_payload_can_be_a_chosen_text(tmp_path):
    [saved] = run_graph(tmp_path, marked_graph(payload="studio-7"))
    code, [found] = verify(str(saved))
    assert code == 0 and found["watermark"]["payload"] == watermark.payload_of("studio-7").hex()


def test_watermark_is_invisible_enough(tmp_path):
    original = shape_image()
    marked = watermark.embed(original, b"\x01\x02\x03\x04")
    import numpy as np

    error = np.mean((np.asarray(marked, dtype=float) - np.asarray(original, dtype=float)) ** 2)
    assert 10 * np.log10(255 ** 2 / error) > 38  # PSNR in dB


def test_watermark_keeps_transparency_and_grey_images():
    rgba = shape_image().convert("RGBA")
    rgba.putalpha(128)
    marked = watermark.embed(rgba, b"abcd")
    assert marked.mode == "RGBA" and marked.getchannel("A").getextrema() == (128, 128)
    grey = watermark.embed(shape_image().convert("L"), b"abcd")
    assert grey.mode == "L" and watermark.detect(grey).payload == b"abcd".hex()


def test_image_without_a_watermark_or_credentials_fails_verify(tmp_path):
    plain = tmp_path / "plain.png"
    shape_image().save(plain)
    code, [found] = verify(str(plain))
    assert code == 1
    assert not found["watermark"]["found"]
    assert found["problems"] == ["no sfumato watermark and no content credentials"]


def test_watermark_on_a_small_image_is_refused_naming_image_and_size(tmp_path):
    with pytest.raises(NodeExecutionError) as failed:
        run_graph(tmp_path, marked_graph(), shape_image(128))
    assert failed.value.node_id == "mark"
    assert "image 0: the image is 128x128" in str(failed.value) and "256x256" in str(failed.value)


def test_verify_of_a_missing_or_broken_file_exits_2(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert main(["verify", str(tmp_path / "missing.png")]) == 2
    assert main(["verify", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "cannot read it as an image" in err and "Traceback" not in err


# -- the IPTC digital source type ---------------------------------------------------


def _digital_source_type(path: Path) -> str | None:
    with Image.open(path) as image:
        xmp = image.info.get(XMP_KEY)
    if xmp is None:
        return None
    element = ET.fromstring(xmp[xmp.index("<x:xmpmeta"):xmp.index("</x:xmpmeta>") + len("</x:xmpmeta>")])
    found = element.find(f".//{IPTC}")
    return None if found is None else found.text


@pytest.mark.parametrize("metadata", [True, False])
def test_every_saved_png_states_trained_algorithmic_media(tmp_path, metadata):
    graph = {"version": 1, "name": "plain", "params": {"path": {"type": "str", "default": ""}}, "nodes": {
        "load": {"type": "image.load", "inputs": {"path": {"param": "path"}}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "load.images"}, "metadata": metadata}}}}
    [saved] = run_graph(tmp_path, graph, shape_image(64))
    assert _digital_source_type(saved) == TRAINED
    _, [found] = verify(str(saved))  # unmarked and unsigned: verify fails, but reads the source type
    assert found["digital_source_type"] == TRAINED


# -- C2PA content credentials ------------------------------------------------------


def _certificate_chain(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a signing certificate it issued: (chain.pem, key.pem, ca.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sfumato tests")])

    def usage(**flags: bool) -> x509.KeyUsage:
        names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                 "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
        return x509.KeyUsage(**{n: flags.get(n, False) for n in names})

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(subject, public_key, ca: bool):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(name("sfumato test CA"))
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(usage(key_cert_sign=ca, crl_sign=ca, digital_signature=True), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
        if not ca:
            builder = (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                                             critical=False)
                       .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                      critical=False))
        return builder.sign(ca_key, hashes.SHA256())

    ca = certificate(name("sfumato test CA"), ca_key.public_key(), ca=True)
    leaf = certificate(name("sfumato test signer"), key.public_key(), ca=False)
    pem = serialization.Encoding.PEM
    chain, key_file, ca_file = folder / "chain.pem", folder / "key.pem", folder / "ca.pem"
    chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ca_file.write_bytes(ca.public_bytes(pem))
    return chain, key_file, ca_file


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> tuple[Path, Path, Path]:
    return _certificate_chain(tmp_path_factory.mktemp("certificates"))


def signed_graph(chain: Path, key: Path) -> dict:
    return marked_graph({"sign": {"type": "provenance.sign", "inputs": {
        "paths": {"from": "save.paths"}, "certificate": str(chain), "key": str(key)}}})


def test_signed_image_verifies_with_created_action_source_type_and_graph_hash(tmp_path, certificates):
    chain, key, _ = certificates
    [saved] = run_graph(tmp_path, signed_graph(chain, key))
    code, [found] = verify(str(saved))
    assert code == 0, found["problems"]
    signed = found["credentials"]
    assert signed["state"] == "Valid" and signed["ok"]
    assert signed["signer"] == "sfumato test signer"
    assert signed["actions"] == ["c2pa.created"]
    assert signed["digital_source_type"] == TRAINED
    metadata = read_png_metadata(saved)  # the sfumato metadata survives signing
    assert signed["generation"]["graph_hash"] == watermark.graph_hash(metadata["graph"])
    assert signed["generation"]["graph_name"] == "marked"
    assert found["watermark"]["found"]  # the mark and the credentials live side by side


def test_signed_image_is_trusted_only_with_its_ca(tmp_path, certificates):
    chain, key, ca = certificates
    [saved] = run_graph(tmp_path, signed_graph(chain, key))
    code, [found] = verify(str(saved), "--trust", str(ca))
    assert code == 0 and found["credentials"]["state"] == "Trusted"
    other_ca = _certificate_chain(tmp_path)[2]
    code, [found] = verify(str(saved), "--trust", str(other_ca))
    assert code == 1 and not found["credentials"]["ok"]


def _edit_pixels(path: Path) -> None:
    """Change one pixel inside the PNG's compressed data, keeping every other chunk (and valid CRCs)."""
    data = path.read_bytes()
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunks.append((kind, data[offset + 8:offset + 8 + length]))
        offset += 12 + length
    raw = bytearray(zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT")))
    raw[1 + 3 * 100] ^= 0x40  # row 0 (after its filter byte), pixel 100, red
    out, wrote_idat = bytearray(data[:8]), False
    for kind, body in chunks:
        if kind == b"IDAT":
            if wrote_idat:
                continue
            body, wrote_idat = zlib.compress(bytes(raw)), True
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(bytes(out))


def test_tampered_signed_image_fails_verify(tmp_path, certificates):
    chain, key, _ = certificates
    [saved] = run_graph(tmp_path, signed_graph(chain, key))
    _edit_pixels(saved)
    Image.open(saved).load()  # still a valid PNG
    code, [found] = verify(str(saved))
    assert code == 1
    assert found["credentials"]["state"] == "Invalid"
    assert any("dataHash.mismatch" in problem for problem in found["problems"])


def test_key_that_does_not_match_the_certificate_is_refused(tmp_path, certificates):
    chain, _, _ = certificates
    other_key = _certificate_chain(tmp_path)[1]
    with pytest.raises(NodeExecutionError) as failed:
        run_graph(tmp_path, signed_graph(chain, other_key))
    assert failed.value.node_id == "sign"
    assert "input 'key'" in str(failed.value) and "is not the private key" in str(failed.value)


def test_certificate_file_without_a_certificate_is_refused(tmp_path, certificates):
    _, key, _ = certificates
    not_pem = tmp_path / "cert.pem"
    not_pem.write_text("hello")
    with pytest.raises(NodeExecutionError, match="input 'certificate'.*holds no PEM certificate"):
        run_graph(tmp_path, signed_graph(not_pem, key))


@pytest.mark.slow
def test_generated_image_is_marked_signed_and_verified(tmp_path, certificates):
    """The shipped diffusion model end to end: generate, enlarge, mark, save, sign, verify."""
    chain, key, ca = certificates
    graph = {"version": 1, "name": "provenance", "nodes": {
        "encode": {"type": "encode.text", "inputs": {"texts": "a red circle on a black background"}},
        "generate": {"type": "generate.image", "inputs": {"conditioning": {"from": "encode.conditioning"},
                                                          "steps": 4, "batch_size": 2}},
        "upscale": {"type": "image.upscale", "inputs": {"images": {"from": "generate.images"}, "factor": 8}},
        "mark": {"type": "provenance.watermark", "inputs": {"images": {"from": "upscale.images"}}},
        "save": {"type": "image.save", "inputs": {"images": {"from": "mark.images"}}},
        "sign": {"type": "provenance.sign", "inputs": {"paths": {"from": "save.paths"},
                                                       "certificate": str(chain), "key": str(key)}}}}
    result = st.make_engine(output_dir=tmp_path, cache=False).run(Graph.from_dict(graph))
    files = result.report.files
    assert len(files) == 2
    code, found = verify(*files, "--trust", str(ca))
    assert code == 0
    assert all(f["watermark"]["matches_graph_hash"] and f["credentials"]["state"] == "Trusted" for f in found)
    for path in files:  # the signed file still runs again from its metadata
        assert read_png_metadata(path)["graph"]["name"] == "provenance"
    # The model hashes: the generator's default model and the text encoder, as the PNG metadata records them.
    models = found[0]["credentials"]["generation"]["models"]
    recorded = read_png_metadata(files[0])["models"]
    diffusion = sfumato.default_registry().models["tiny-shapes-diffusion"].path()
    assert models["tiny-shapes-diffusion"]["sha256"] == recorded["tiny-shapes-diffusion"]["sha256"] \
        == sfumato.model_hash(diffusion).sha256
    assert models["tiny-shapes-diffusion"]["files"] >= 2  # unet and vae
    assert len(models["all-MiniLM-L6-v2"]["sha256"]) == 64


def test_model_names_come_from_literals_parameters_and_defaults():
    from sfumato_provenance.models import model_names

    document = {"params": {"model": {"type": "str", "default": "from-default"}}, "nodes": {
        "a": {"type": "generate.image", "inputs": {"model": {"param": "model"}}},
        "b": {"type": "encode.text", "inputs": {}},
        "c": {"type": "image.save", "inputs": {}},
        "d": {"type": "generate.image", "inputs": {"model": "literal-model"}}}}
    defaults = {"encode.text": "all-MiniLM-L6-v2"}
    assert model_names(document, {"model": "from-param"}, defaults.get) == [
        "from-param", "all-MiniLM-L6-v2", "literal-model"]
    assert model_names(document, {}, defaults.get)[0] == "from-default"


def test_weights_hash_changes_when_a_weight_file_changes(tmp_path):
    from sfumato_provenance.models import weights_hash

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "model.safetensors").write_bytes(b"one")
    (tmp_path / "config.json").write_text("{}")  # a config shapes pixels too: it is covered
    first = weights_hash(tmp_path)
    assert first["files"] == 2
    (tmp_path / "unet" / "model.safetensors").write_bytes(b"three")
    assert weights_hash(tmp_path)["sha256"] != first["sha256"]


def test_graph_hash_ignores_name_description_and_pinned_versions():
    document = {"version": 1, "name": "a", "description": "x", "params": {"p": {"type": "str", "default": "v"}},
                "nodes": {"n": {"type": "text.normalize", "inputs": {"text": {"param": "p"}}}},
                "outputs": {"o": "n.text"}}
    same = json.loads(json.dumps(document))
    same.update(name="b", description="y")
    same["nodes"]["n"]["version"] = 1  # what a re-run from a PNG pins
    assert watermark.graph_hash(same) == watermark.graph_hash(document)
    other = json.loads(json.dumps(document))
    other["params"]["p"]["default"] = "w"
    assert watermark.graph_hash(other) != watermark.graph_hash(document)


@pytest.mark.slow
def test_marked_and_signed_image_is_made_again_with_the_same_pixels(tmp_path, certificates, capsys):
    chain, key, _ = certificates
    [saved] = run_graph(tmp_path, signed_graph(chain, key))
    capsys.readouterr()
    assert main(["run", str(saved), "--check"]) == 0
    assert "exactly the same pixels" in capsys.readouterr().out
