"""Graph drawing: Mermaid and Graphviz DOT text, and pictures through Graphviz.

Node boxes show the node id and type; edges are labelled with the output and
input port names; graph parameters appear as rounded boxes feeding the inputs
they set.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import GraphIssue, GraphValidationError
from .document import Graph, Link, ParamRef

RENDER_HINT = ("no Graphviz 'dot' program was found to render PNG pictures; install Graphviz "
               "(Debian/Ubuntu: apt install graphviz; macOS: brew install graphviz), "
               "or use --format svg (drawn without Graphviz), mermaid or dot")


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
    """Render a PNG or SVG picture.

    SVG is drawn by sfumato itself when Graphviz is missing; PNG needs Graphviz
    (``RuntimeError`` says what to install).
    """
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ValueError(f"pictures are .png or .svg, not {path.suffix!r}")
    dot = shutil.which("dot")
    if dot is None and fmt == "svg":
        path.write_text(to_svg(graph), encoding="utf-8")
        return path
    if dot is None:
        raise RuntimeError(RENDER_HINT)
    completed = subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=to_dot(graph).encode(),
                               capture_output=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"Graphviz failed: {completed.stderr.decode(errors='replace').strip()}")
    return path


def to_svg(graph: Graph) -> str:
    """A self-contained SVG picture (layered left to right), no Graphviz needed.

    Parameters are drawn as rounded boxes in the first column; each node sits
    one column right of its latest input; edges are labelled ``output → input``.
    """
    from html import escape

    import networkx as nx

    dag = nx.DiGraph()
    for node_id in graph.nodes:
        dag.add_node(node_id)
    for source, output, target, name in graph.edges():
        if source in graph.nodes:
            dag.add_edge(source, target, label=f"{output} → {name}")
    if not nx.is_directed_acyclic_graph(dag):
        cycle = sorted(next(c for c in nx.strongly_connected_components(dag)
                            if len(c) > 1 or any(dag.has_edge(n, n) for n in c)))
        raise GraphValidationError([GraphIssue("nodes", f"cannot draw a graph with a cycle (between nodes "
                                                        f"{', '.join(repr(n) for n in cycle)}) as layers; "
                                                        "use --format mermaid", cycle[0])], graph.source)
    column: dict[str, int] = {}
    for node_id in nx.topological_sort(dag):
        column[node_id] = 1 + max((column[p] for p in dag.predecessors(node_id)), default=0)
    params = list(graph.params)
    rows: dict[int, list[str]] = {}
    for node_id in graph.nodes:
        rows.setdefault(column[node_id], []).append(node_id)
    box_w, box_h, gap_x, gap_y = 190, 46, 120, 26
    position: dict[str, tuple[float, float]] = {}
    for index, name in enumerate(params):
        position["param:" + name] = (20, 20 + index * (box_h + gap_y))
    for col, members in rows.items():
        for index, node_id in enumerate(members):
            position[node_id] = (20 + col * (box_w + gap_x), 20 + index * (box_h + gap_y))
    width = max(x for x, _ in position.values()) + box_w + 20 if position else 200
    height = max(y for _, y in position.values()) + box_h + 20 if position else 100
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'font-family="Helvetica, Arial, sans-serif" font-size="12" role="img" '
             f'aria-label="graph {escape(graph.name)}">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#667"/></marker></defs>']

    drawn: dict[tuple[str, str], int] = {}

    def edge(a: str, b: str, label: str, dashed: bool) -> None:
        (x1, y1), (x2, y2) = position[a], position[b]
        # Several edges between the same two boxes fan out, so their labels stay apart.
        lane = drawn.get((a, b), 0)
        drawn[(a, b)] = lane + 1
        offset = (lane - 0.5 * (lane > 0)) * 12 if lane else 0
        sx, sy, ex, ey = x1 + box_w, y1 + box_h / 2 + offset, x2, y2 + box_h / 2 + offset
        mid = (sx + ex) / 2
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        parts.append(f'<path d="M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}" fill="none" stroke="#667"'
                     f'{dash} marker-end="url(#arrow)"/>')
        parts.append(f'<text x="{mid:.0f}" y="{(sy + ey) / 2 - 4:.0f}" text-anchor="middle" fill="#445" '
                     f'font-size="10">{escape(label)}</text>')

    for source, output, target, name in graph.edges():
        if source in position and target in position:
            edge(source, target, f"{output} → {name}", False)
    for node_id, refs in graph.inputs.items():
        for name, ref in refs.items():
            if isinstance(ref, ParamRef) and "param:" + ref.name in position:
                edge("param:" + ref.name, node_id, name, True)
    for key, (x, y) in position.items():
        is_param = key.startswith("param:")
        title = key[6:] if is_param else key
        subtitle = graph.params[title].type if is_param else graph.nodes[key].type
        fill = "#fff3d6" if is_param else "#eef2f7"
        parts.append(f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="{16 if is_param else 6}" '
                     f'fill="{fill}" stroke="#8894a8"/>')
        parts.append(f'<text x="{x + 10}" y="{y + 19}" font-weight="bold">{escape(title[:26])}</text>')
        parts.append(f'<text x="{x + 10}" y="{y + 36}" fill="#556">{escape(subtitle[:30])}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
