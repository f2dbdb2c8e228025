"""Orchestration overhead of two sfumato trees, measured side by side.

``python -m benchmarks.compare_trees --before 4be0271 [--after PATH_OR_REV]
[--rounds 5] [--sizes 1000 10000] [--repeats 3]``

Each round runs ``bench_overhead.run(sizes, repeats, haystack_limit=0)`` once per
tree, alternately, in a fresh subprocess whose ``sys.path`` starts with that
tree's ``core/`` and ``plugins/``; the benchmark code itself is this checkout's,
so both trees run the same graphs and timings. A shared machine drifts, so the
rounds alternate and the report is the median over rounds, per tree, per graph,
with the after/before ratio. A revision (rather than a folder) is checked out
once as a git worktree under the system temporary folder, outside the
repository.

``--phases`` instead times the three phases of a cold run — reading the graph
(``Graph.from_dict``), planning (``Engine.plan``) and executing — in each tree,
as this thread's CPU time (``time.thread_time``: time the process waits for a
busy machine's cores is not counted), the fastest of ``--repeats`` runs, with
the collector on as in the benchmark.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
METRICS = ("sfumato_cold", "sfumato_cached", "validate_plan")

# Runs in the child: the tree under test first on sys.path, then this checkout (for the benchmark code).
_CHILD = """
import json, sys
tree, repo, sizes, repeats = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
sys.path[:0] = [tree + '/core', tree + '/plugins', repo]
import sfumato
assert sfumato.__file__.startswith(tree), (sfumato.__file__, tree)
from benchmarks import bench_overhead
results = bench_overhead.run(sizes=tuple(sizes), repeats=repeats, haystack_limit=0)
out = {key: {metric: entry[metric]['per_node_s'] * 1e6 for metric in %r if metric in entry}
       for key, entry in results.items() if isinstance(entry, dict) and 'sfumato_cold' in entry}
print('RESULT ' + json.dumps(out))
""" % (METRICS,)


PHASES = ("load", "plan", "execute", "cold")

# Runs in the child for --phases: CPU time of each phase of a cold run, the fastest of `repeats`.
_PHASES_CHILD = """
import gc, json, sys, time
tree, repo, sizes, repeats = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
sys.path[:0] = [tree + '/core', tree + '/plugins', repo]
import sfumato
assert sfumato.__file__.startswith(tree), (sfumato.__file__, tree)
from benchmarks import bench_overhead
registry = bench_overhead.bench_registry()
out = {}
for shape in ('chain', 'fan'):
    for n in sizes:
        document = getattr(bench_overhead, shape)(n)
        best = dict.fromkeys(%r, float('inf'))
        for _ in range(repeats):
            gc.collect()
            started = time.thread_time()
            graph = sfumato.Graph.from_dict(document)
            read = time.thread_time()
            engine = sfumato.Engine(registry, device='cpu')
            plan = engine.plan(graph)
            planned = time.thread_time()
            engine.execute(plan)
            done = time.thread_time()
            for phase, seconds in zip(best, (read - started, planned - read, done - planned, done - started)):
                best[phase] = min(best[phase], seconds)
        out[f'{shape}-{n}'] = {phase: seconds / len(document['nodes']) * 1e6 for phase, seconds in best.items()}
print('RESULT ' + json.dumps(out))
""" % (PHASES,)


def tree_path(spec: str) -> Path:
    """A folder holding a sfumato tree: ``spec`` itself, or a worktree checked out at revision ``spec``.

    Raises ``ValueError`` when ``spec`` is neither.
    """
    path = Path(spec)
    if (path / "core" / "sfumato").is_dir():
        return path.resolve()
    found = subprocess.run(["git", "rev-parse", "--verify", "--short", f"{spec}^{{commit}}"], cwd=REPO,
                           capture_output=True, text=True, check=False)
    if found.returncode:
        raise ValueError(f"{spec!r} is neither a folder holding a sfumato tree (core/sfumato) nor a git revision")
    revision = found.stdout.strip()
    worktree = Path(tempfile.gettempdir()) / f"sfumato-{revision}"
    if not (worktree / "core" / "sfumato").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), revision], cwd=REPO, check=True,
                       capture_output=True)
    return worktree


def measure(tree: Path, sizes: tuple[int, ...], repeats: int, phases: bool = False) -> dict[str, dict[str, float]]:
    """One run of the overhead benchmark (or of the phase timing) against ``tree``: µs per node, by graph and metric."""
    child = _PHASES_CHILD if phases else _CHILD
    done = subprocess.run([sys.executable, "-c", child, str(tree), str(REPO), json.dumps(list(sizes)), str(repeats)],
                          capture_output=True, text=True, cwd=tempfile.gettempdir(), check=False)
    if done.returncode:
        raise RuntimeError(f"benchmark failed on {tree}:\n{done.stderr[-3000:]}")
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def compare(before: Path, after: Path, rounds: int = 5, sizes: tuple[int, ...] = (1000, 10000),
            repeats: int = 3, phases: bool = False) -> dict[str, Any]:
    """Alternate the two trees ``rounds`` times; medians per tree and the after/before ratio."""
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"before": [], "after": []}
    for round_ in range(rounds):
        # Swap the order every round so neither tree always runs on a warmer (or busier) machine.
        order = (("before", before), ("after", after)) if round_ % 2 == 0 else (("after", after), ("before", before))
        for name, tree in order:
            runs[name].append(measure(tree, sizes, repeats, phases))
        print(f"  round {round_ + 1}/{rounds} done", file=sys.stderr, flush=True)
    table: dict[str, Any] = {}
    for graph in runs["before"][0]:
        table[graph] = {}
        for metric in runs["before"][0][graph]:
            medians = {name: statistics.median(run[graph][metric] for run in runs[name]) for name in runs}
            table[graph][metric] = {**medians, "ratio": medians["after"] / medians["before"],
                                    "samples": {name: [run[graph][metric] for run in runs[name]] for name in runs}}
    return table


def report(table: dict[str, Any]) -> str:
    """A Markdown table: per graph, each metric's µs/node before and after, and the ratio."""
    metrics = [m for m in ("sfumato_cold", "sfumato_cached", *PHASES) if m in next(iter(table.values()))]
    names = {"sfumato_cold": "cold", "sfumato_cached": "cached"}
    header = ["graph", "nodes"]
    for metric in metrics:
        name = names.get(metric, metric)
        header += [f"{name} before", f"{name} after", "ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for graph, row in table.items():
        shape, nodes = graph.split("-")
        cells = [shape, f"{int(nodes):,}"]
        for metric in metrics:
            m = row[metric]
            cells += [f"{m['before']:.1f} µs", f"{m['after']:.1f} µs", f"{m['ratio']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_trees", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="a folder holding a sfumato tree, or a git revision")
    parser.add_argument("--after", default=str(REPO), help="the same (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phases", action="store_true",
                        help="CPU time of reading, planning and executing a cold run, per tree")
    parser.add_argument("--json", type=Path, default=None, help="also write the full table (with samples) here")
    args = parser.parse_args(argv)
    try:
        before, after = tree_path(args.before), tree_path(args.after)
    except ValueError as error:
        parser.error(str(error))
    print(f"before: {before}\nafter:  {after}", file=sys.stderr)
    table = compare(before, after, rounds=args.rounds, sizes=tuple(args.sizes), repeats=args.repeats,
                    phases=args.phases)
    print(report(table))
    if args.json is not None:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
