"""C2PA content credentials: signing sfumato's PNGs and reading credentials back (c2pa-python).

A signed file carries a manifest with the ``c2pa.created`` action (digital
source type "trained algorithmic media", the IPTC term for generative AI
output) and an ``org.sfumato.generation`` assertion with the graph hash, the
graph name, the seed and the model hashes recorded in the file's sfumato
metadata. The signature covers the manifest and a hash of the file's bytes, so
changing a pixel (or a metadata chunk) makes the credentials invalid.

Everything works offline: no time-stamp authority unless one is named, and
trust is checked only against the anchors the caller passes (``sfumato verify
--trust CA.pem``); without them a valid signature reads as "valid" (intact,
but the signer is not known to be trusted) rather than "trusted".
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfumato import SfumatoError, __version__, read_png_metadata, write_atomically

from .watermark import graph_hash

#: The IPTC digital source type of media made by a trained model (C2PA and IPTC use the same URI).
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATION_LABEL = "org.sfumato.generation"
MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
#: A validation code that only says the signer is not in a trust list (none is configured offline).
UNTRUSTED = "signingCredential.untrusted"


class CredentialsError(SfumatoError):
    """A certificate or key cannot be used for signing, or a file cannot be signed."""


@dataclass
class SigningMaterial:
    """A certificate chain and private key, checked to belong together."""

    chain_pem: bytes
    key_pem: bytes
    algorithm: str
    timestamp_url: str | None


def load_signer(certificate: Path, key: Path, algorithm: str, timestamp_url: str | None) -> SigningMaterial:
    """Read and check a PEM certificate chain and its PEM private key.

    Raises :class:`CredentialsError` naming the file when it holds no
    certificate, an encrypted or unreadable key, or a key that does not match
    the first certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    chain_pem = Path(certificate).read_bytes()
    key_pem = Path(key).read_bytes()
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as error:
        raise CredentialsError(f"input 'certificate': {certificate} holds no PEM certificate: {error}") from None
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CredentialsError(f"input 'key': {key} is encrypted; give an unencrypted PKCS#8 PEM key") from None
    except ValueError as error:
        raise CredentialsError(f"input 'key': {key} holds no usable PEM private key: {error}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if private_key.public_key().public_bytes(encoding, public) != chain[0].public_key().public_bytes(encoding, public):
        raise CredentialsError(f"input 'key': {key} is not the private key of the first certificate in "
                               f"{certificate} ({chain[0].subject.rfc4514_string()})")
    # c2pa wants PKCS#8; a traditional "EC PRIVATE KEY" file is converted here.
    key_pem = private_key.private_bytes(encoding=serialization.Encoding.PEM,
                                        format=serialization.PrivateFormat.PKCS8,
                                        encryption_algorithm=serialization.NoEncryption())
    return SigningMaterial(chain_pem, key_pem, algorithm, timestamp_url)


def generation_assertion(metadata: dict[str, Any] | None, models: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``org.sfumato.generation`` assertion for a file with this sfumato metadata and model hashes."""
    data: dict[str, Any] = {"generator": "sfumato", "version": __version__}
    if metadata:
        data["graph_hash"] = graph_hash(metadata["graph"])
        data["graph_name"] = metadata["graph"].get("name", "")
        data["seed"] = metadata.get("seed")
    if models:
        data["models"] = models
    return data


def manifest_for(path: Path, metadata: dict[str, Any] | None, models: dict[str, Any] | None = None) -> dict[str, Any]:
    """The C2PA manifest definition for one output file."""
    return {
        "claim_generator_info": [{"name": "sfumato", "version": __version__}],
        "title": path.name,
        "format": MIME_TYPES.get(path.suffix.lower(), "image/png"),
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created",
                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": {"name": "sfumato", "version": __version__},
            }]}},
            {"label": GENERATION_LABEL, "data": generation_assertion(metadata, models)},
        ],
    }


def stored_metadata(path: Path) -> dict[str, Any] | None:
    """The file's sfumato metadata, or None (a PNG saved without it is still signed, without a graph hash)."""
    try:
        return read_png_metadata(path)
    except ValueError:
        return None


def sign_png(path: Path, material: SigningMaterial, metadata: dict[str, Any] | None,
             models: dict[str, Any] | None = None) -> None:
    """Replace the PNG at ``path`` with a copy carrying signed content credentials."""
    import c2pa

    source = path.read_bytes()
    manifest = manifest_for(path, metadata, models)
    info = c2pa.C2paSignerInfo(material.algorithm.encode(), material.chain_pem, material.key_pem,
                               material.timestamp_url.encode() if material.timestamp_url else None)
    try:
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(json.dumps(manifest)) as builder:
            signed = io.BytesIO()
            builder.sign(signer, "image/png", io.BytesIO(source), signed)
    except c2pa.C2paError as error:
        raise CredentialsError(f"cannot sign {path}: {error}") from None
    write_atomically(path, lambda tmp: Path(tmp).write_bytes(signed.getvalue()))


def read_credentials(path: Path, trust_anchors: bytes | None = None) -> dict[str, Any] | None:
    """The content credentials of a file, checked; ``None`` when it carries none.

    The result has ``state`` (``Trusted``, ``Valid`` or ``Invalid``), ``ok``,
    ``signer``, ``issuer``, ``actions``, ``digital_source_type``, the
    ``generation`` assertion and ``failures`` (validation codes that make the
    credentials invalid; "signer not in a trust list" counts only when trust
    anchors are given).
    """
    import c2pa

    mime = MIME_TYPES.get(Path(path).suffix.lower())
    if mime is None:
        return None
    context = None
    if trust_anchors is not None:
        settings = c2pa.Settings.from_dict({"verify": {"verify_trust": True},
                                           "trust": {"trust_anchors": trust_anchors.decode()}})
        context = c2pa.Context(settings=settings)
    try:
        with c2pa.Reader(mime, io.BytesIO(Path(path).read_bytes()), context=context) as reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state() or "Invalid"
    except c2pa.C2paError as error:
        if "ManifestNotFound" in type(error).__name__ or "no JUMBF" in str(error):
            return None
        return {"state": "Invalid", "ok": False, "failures": [f"unreadable manifest: {error}"]}
    manifest = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    actions: list[dict[str, Any]] = []
    generation: dict[str, Any] = {}
    for assertion in manifest.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            actions += assertion.get("data", {}).get("actions", [])
        elif assertion.get("label") == GENERATION_LABEL:
            generation = assertion.get("data", {})
    results = store.get("validation_results", {}).get("activeManifest", {})
    failures = [f"{item.get('code')}: {item.get('explanation', '')}" for item in results.get("failure", [])
                if trust_anchors is not None or item.get("code") != UNTRUSTED]
    signature = manifest.get("signature_info", {})
    ok = state in ("Valid", "Trusted") and not failures
    if trust_anchors is not None:
        ok = ok and state == "Trusted"
    return {
        "state": state,
        "ok": ok,
        "signer": signature.get("common_name", ""),
        "issuer": signature.get("issuer", ""),
        "actions": [action.get("action", "") for action in actions],
        "digital_source_type": next((a.get("digitalSourceType") for a in actions if a.get("digitalSourceType")),
                                    None),
        "generation": generation,
        "failures": failures,
    }
