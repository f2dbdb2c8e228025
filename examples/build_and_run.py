"""Build a workflow in Python, run it, change one value, and sweep it.

    python examples/build_and_run.py [OUT_DIR]

Shows the Python API: GraphBuilder, Engine.run (incremental re-runs in one
process), Engine.run_many (a batched sweep), and saving the graph as JSON for
the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sfumato import Engine, GraphBuilder


def build() -> GraphBuilder:
    g = GraphBuilder("shapes-sheet", "prompt -> encode -> generate -> contact sheet")
    prompt = g.param("prompt", "str", default="a green circle on a black background")
    seed = g.param("seed", "int", default=0)
    clean = g.add("text.normalize", "clean", text=prompt)
    encode = g.add("encode.text", "encode", texts=clean["text"])
    generate = g.add("generate.image", "generate", conditioning=encode["conditioning"], steps=10, batch_size=4,
                     seed=seed)
    sheet = g.add("image.grid", "sheet", images=generate["images"], columns=4, cell=96, title=clean["text"])
    g.add("image.save", "save", images=sheet["images"], template="{graph}-{seed}.png")
    score = g.add("zoo.score", "score", images=generate["images"], prompts=clean["text"])
    g.output("fidelity", score["scores"])
    return g


def main(out: Path) -> None:
    graph = build().build()
    graph.save(out / "shapes-sheet.json")  # the same graph for `sfumato run`
    engine = Engine(device="auto", output_dir=out)

    first = engine.run(graph)
    print("first run:", first.report.count("ran"), "nodes ran; fidelity", first["fidelity"]["all"])

    again = engine.run(graph, seed=1)  # the prompt's encoding comes from the cache
    print("new seed:", {n: r.status for n, r in again.report.nodes.items()})

    outcomes = engine.run_many(graph, [{"prompt": f"a {c} square on a white background"}
                                       for c in ("red", "blue", "yellow")])
    for outcome in outcomes:
        print(outcome.params["prompt"], "->", outcome.status, outcome.files)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
    target.mkdir(parents=True, exist_ok=True)
    main(target)
