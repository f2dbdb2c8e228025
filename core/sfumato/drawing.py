"""Graph drawing: Mermaid and Graphviz DOT text, and pictures through Graphviz.

Node boxes show the node id and type; edges are labelled with the output and
input port names; graph parameters appear as rounded boxes feeding the inputs
they set.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .graph import Graph, Link, ParamRef

RENDER_HINT = ("no Graphviz 'dot' program was found to render pictures; install Graphviz "
               "(Debian/Ubuntu: apt install graphviz; macOS: brew install graphviz), "
               "or use --format mermaid / dot")


def _mermaid_id(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def _quote(text: str) -> str:
    return text.replace('"', "'")


def to_mermaid(graph: Graph) -> str:
    """The graph as a Mermaid flowchart (renders on GitHub and in many editors)."""
    lines = ["flowchart LR"]
    for name, declaration in graph.params.items():
        default = f" = {declaration.default}" if declaration.default is not None else ""
        lines.append(f'  {_mermaid_id("param " + name)}(["{_quote(name)}: {declaration.type}{_quote(str(default))}"])')
    for node_id, entry in graph.nodes.items():
        lines.append(f'  {_mermaid_id(node_id)}["<b>{_quote(node_id)}</b><br/>{_quote(entry.type)}"]')
    for node_id, refs in graph.inputs.items():
        for input_name, ref in refs.items():
            if isinstance(ref, Link):
                lines.append(f'  {_mermaid_id(ref.node)} -- "{_quote(ref.output)} → {_quote(input_name)}" --> {_mermaid_id(node_id)}')
            elif isinstance(ref, ParamRef):
                lines.append(f'  {_mermaid_id("param " + ref.name)} -. "{_quote(input_name)}" .-> {_mermaid_id(node_id)}')
    for output_name, target in graph.document.outputs.items():
        node, _, output = target.rpartition(".")
        lines.append(f'  {_mermaid_id("out " + output_name)}[/"output {_quote(output_name)}"/]')
        lines.append(f'  {_mermaid_id(node)} -- "{_quote(output)}" --> {_mermaid_id("out " + output_name)}')
    return "\n".join(lines) + "\n"


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph) -> str:
    """The graph in Graphviz DOT."""
    lines = [f"digraph {_dot_string(graph.name)} {{", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fillcolor="#eef2f7", fontname="Helvetica"];',
             '  edge [fontname="Helvetica", fontsize=10];']
    for name, declaration in graph.params.items():
        label = f"{name}: {declaration.type}"
        if declaration.default is not None:
            label += f"\\n= {declaration.default}"
        lines.append(f'  {_dot_string("param:" + name)} [label={_dot_string(label)}, shape=ellipse, fillcolor="#fff3d6"];')
    for node_id, entry in graph.nodes.items():
        lines.append(f"  {_dot_string(node_id)} [label={_dot_string(node_id + chr(10) + entry.type)}];")
    for node_id, refs in graph.inputs.items():
        for input_name, ref in refs.items():
            if isinstance(ref, Link):
                lines.append(f"  {_dot_string(ref.node)} -> {_dot_string(node_id)} "
                             f"[label={_dot_string(ref.output + ' → ' + input_name)}];")
            elif isinstance(ref, ParamRef):
                lines.append(f"  {_dot_string('param:' + ref.name)} -> {_dot_string(node_id)} "
                             f"[label={_dot_string(input_name)}, style=dashed];")
    for output_name, target in graph.document.outputs.items():
        node, _, output = target.rpartition(".")
        lines.append(f'  {_dot_string("out:" + output_name)} [label={_dot_string("output " + output_name)}, shape=note, fillcolor="#e3f5e1"];')
        lines.append(f"  {_dot_string(node)} -> {_dot_string('out:' + output_name)} [label={_dot_string(output)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_picture(graph: Graph, path: Path) -> Path:
    """Render a PNG or SVG picture with Graphviz; ``RuntimeError`` says what to install."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ValueError(f"pictures are .png or .svg, not {path.suffix!r}")
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(RENDER_HINT)
    completed = subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=to_dot(graph).encode(),
                               capture_output=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"Graphviz failed: {completed.stderr.decode(errors='replace').strip()}")
    return path
