"""``sfumato verify IMAGE...``: what an image says about where it came from, checked.

For each image: the invisible watermark (found or not, its payload, and
whether it matches the graph hash in the file's sfumato metadata), the IPTC
digital source type in its XMP, and its C2PA content credentials (signer,
actions, digital source type, graph hash, and whether the signature and the
pixels check out).

Exit codes: 0 when every image carries a watermark or valid credentials and
nothing found is broken; 1 when an image carries neither, or its credentials
are invalid (a tampered file) or do not match its metadata; 2 when a file
cannot be read as an image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import credentials, watermark

XMP_KEY = "XML:com.adobe.xmp"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify", help="check an image's invisible watermark, digital source type and content credentials")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--trust", metavar="CA.pem",
                        help="PEM certificates to trust: credentials must chain to one of them")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.set_defaults(handler=verify_command)


class UnreadableImageError(ValueError):
    """The file is missing or no image Pillow can read."""


def _stored_graph_hash(path: Path) -> str | None:
    from sfumato import read_png_metadata

    try:
        return watermark.graph_hash(read_png_metadata(path)["graph"])
    except ValueError:
        return None


def verify_image(path: Path, trust_anchors: bytes | None = None) -> dict[str, Any]:
    """The findings for one image, with ``ok`` and the ``problems`` that make it fail."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            xmp = image.info.get(XMP_KEY, "")
            reading = watermark.detect(image)
    except FileNotFoundError:
        raise UnreadableImageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(f"{path}: cannot read it as an image: {error}") from None
    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", errors="replace")
    stored_hash = _stored_graph_hash(path) if path.suffix.lower() == ".png" else None
    mark = reading.as_dict()
    if reading.found and stored_hash is not None:
        mark["matches_graph_hash"] = reading.payload == stored_hash[:2 * watermark.PAYLOAD_BYTES]
    found = {
        "image": str(path),
        "watermark": mark,
        "digital_source_type": credentials.TRAINED_ALGORITHMIC_MEDIA
        if credentials.TRAINED_ALGORITHMIC_MEDIA in xmp else None,
        "graph_hash": stored_hash,
        "credentials": credentials.read_credentials(path, trust_anchors),
    }
    problems = []
    signed = found["credentials"]
    if signed is not None:
        problems += [f"content credentials: {failure}" for failure in signed["failures"]]
        if not signed["ok"] and not signed["failures"]:
            problems.append(f"content credentials are {signed['state'].lower()}"
                            + (" (the signer does not chain to --trust)" if trust_anchors else ""))
        signed_hash = signed.get("generation", {}).get("graph_hash")
        if signed_hash and stored_hash and signed_hash != stored_hash:
            problems.append("content credentials name another graph than the file's sfumato metadata")
    if not reading.found and signed is None:
        problems.append("no sfumato watermark and no content credentials")
    found["problems"] = problems
    found["ok"] = not problems
    return found


def _print_findings(found: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape

    out = Console(highlight=False, soft_wrap=True)
    verdict = "[green]ok[/]" if found["ok"] else "[bold red]failed[/]"
    out.print(f"{escape(found['image'])}: {verdict}")
    mark = found["watermark"]
    if mark["found"]:
        match = {True: " (matches its graph hash)", False: " (does NOT match its graph hash)"}.get(
            mark.get("matches_graph_hash"), "")
        out.print(f"  watermark: found, payload {mark['payload']}{match}")
    else:
        out.print("  watermark: none")
    out.print(f"  digital source type: {escape(found['digital_source_type'] or 'not stated')}")
    signed = found["credentials"]
    if signed is None:
        out.print("  content credentials: none")
    else:
        out.print(f"  content credentials: {signed['state']}, signed by {escape(signed.get('signer') or '?')}"
                  f" ({escape(signed.get('issuer') or '?')})")
        if signed.get("actions"):
            out.print(f"    actions: {escape(', '.join(signed['actions']))}; source type: "
                      f"{escape(signed.get('digital_source_type') or 'not stated')}")
        generation = signed.get("generation", {})
        if generation.get("graph_hash"):
            out.print(f"    graph {escape(str(generation.get('graph_name', '')))} {generation['graph_hash']}, "
                      f"seed {generation.get('seed')}")
        for name, model in (generation.get("models") or {}).items():
            what = model.get("sha256") or model.get("hub_id") or model.get("error", "?")
            out.print(f"    model {escape(str(name))}: {escape(str(what))}")
    for problem in found["problems"]:
        out.print(f"  [red]problem[/]: {escape(problem)}")


def verify_command(args: argparse.Namespace) -> int:
    from sfumato import SfumatoError

    trust = None
    if args.trust:
        try:
            trust = Path(args.trust).read_bytes()
        except OSError as error:
            raise SfumatoError(f"--trust {args.trust}: {error.strerror or error}") from None
    results, code = [], 0
    for name in args.images:
        try:
            found = verify_image(Path(name), trust)
        except UnreadableImageError as error:
            found, code = {"image": name, "ok": False, "error": str(error)}, 2
            if not args.json:
                from rich.console import Console
                from rich.markup import escape

                Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(error))}")
        else:
            if not found["ok"]:
                code = max(code, 1)
            if not args.json:
                _print_findings(found)
        results.append(found)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    return code
