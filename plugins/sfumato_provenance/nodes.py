"""Provenance nodes: ``provenance.watermark`` (pixels) and ``provenance.sign`` (content credentials)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from sfumato import CachePolicy, ImageBatch, ReadablePath, RunContext, node

from . import credentials, models, watermark


def payload_for(text: str, graph_document: dict) -> bytes:
    """The watermark payload: the graph hash's first 4 bytes, or those of ``text``'s SHA-256."""
    if text:
        return watermark.payload_of(text)
    return bytes.fromhex(watermark.graph_hash(graph_document)[:2 * watermark.PAYLOAD_BYTES])


@node("provenance.watermark", category="provenance", output="images",
      cache=CachePolicy.reads_context("graph"))
def watermark_images(images: ImageBatch, context: RunContext, payload: str = "") -> ImageBatch:
    """Embed an invisible watermark that ``sfumato verify`` detects, also after re-saving.

    The mark survives a PNG re-save and JPEG compression at quality 90; it
    carries 32 bits: by default the start of the graph hash, so ``sfumato
    verify`` can tell which graph an image came from even when its metadata
    was stripped. Images need at least 256x256 pixels (put ``image.upscale``
    first). Place it before ``image.save``.

    Args:
        images: the images to mark.
        payload: a text whose SHA-256 prefix is carried instead of the graph hash.
    """
    mark = payload_for(payload, context.graph_document if not payload else {})
    for index, image in enumerate(images.images):
        try:
            watermark.check_size(image)
        except ValueError as error:
            raise ValueError(f"input 'images', image {index}: {error}") from None
    return images.map(lambda image: watermark.embed(image, mark))


def _signed_files_exist(outputs: dict) -> bool:
    return all(Path(p).exists() for p in outputs.get("paths", []))


@node("provenance.sign", category="provenance", output="paths", output_node=True,
      cache=CachePolicy.writes_files(_signed_files_exist, context_keys=()))
def sign_files(
    paths: list[str],
    certificate: ReadablePath,
    key: ReadablePath,
    context: RunContext,
    algorithm: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256",
    timestamp_url: str = "",
) -> list[str]:
    """Sign saved PNG files with C2PA content credentials (link ``image.save``'s paths here).

    Each file gets a manifest signed with your certificate chain and private
    key: the ``c2pa.created`` action with the digital source type
    "trained algorithmic media", and an ``org.sfumato.generation`` assertion
    with the graph hash and seed from the file's sfumato metadata and the
    SHA-256 of every model its run used, as that metadata records them.
    ``sfumato verify`` checks the signature and that the pixels are
    unchanged. The file is replaced atomically.

    Args:
        paths: the PNG files to sign.
        certificate: a PEM file with your signing certificate, then its issuers.
        key: a PEM file with the certificate's private key (unencrypted PKCS#8).
        algorithm: the signature algorithm matching the key (es256 for an EC P-256 key).
        timestamp_url: a time-stamp authority to countersign (empty: none, works offline).
    """
    signer = credentials.load_signer(context.readable_path(certificate), context.readable_path(key), algorithm,
                                     timestamp_url or None)
    signed = []
    for path in paths:
        target = context.writable_path(context.readable_path(path))
        metadata = credentials.stored_metadata(target)
        hashes = models.recorded_hashes(metadata) if metadata is not None else None
        if metadata is not None and hashes is None:  # a PNG saved before the metadata recorded model hashes
            names = models.model_names(metadata["graph"], metadata.get("params") or {},
                                       lambda node_type: _model_default(context, node_type))
            hashes = models.model_hashes(names, context.models.resolve)
        credentials.sign_png(target, signer, metadata, hashes)  # already in the run's files (its writer's)
        signed.append(str(target))
    return signed


def _model_default(context: RunContext, node_type: str) -> str | None:
    """The default of a node type's ``model`` input (a graph that leaves it out uses that model)."""
    spec = context.settings.registry.nodes.get(node_type)
    port = spec.inputs.get("model") if spec is not None else None
    return port.default if port is not None and isinstance(port.default, str) else None
