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


def measure(tree: Path, sizes: tuple[int, ...], repeats: int) -> dict[str, dict[str, float]]:
    """One run of the overhead benchmark against ``tree``: µs per node, by graph and metric."""
    done = subprocess.run([sys.executable, "-c", _CHILD, str(tree), str(REPO), json.dumps(list(sizes)), str(repeats)],
                          capture_output=True, text=True, cwd=tempfile.gettempdir(), check=False)
    if done.returncode:
        raise RuntimeError(f"benchmark failed on {tree}:\n{done.stderr[-3000:]}")
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def compare(before: Path, after: Path, rounds: int = 5, sizes: tuple[int, ...] = (1000, 10000),
            repeats: int = 3) -> dict[str, Any]:
    """Alternate the two trees ``rounds`` times; medians per tree and the after/before ratio."""
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"before": [], "after": []}
    for round_ in range(rounds):
        # Swap the order every round so neither tree always runs on a warmer (or busier) machine.
        order = (("before", before), ("after", after)) if round_ % 2 == 0 else (("after", after), ("before", before))
        for name, tree in order:
            runs[name].append(measure(tree, sizes, repeats))
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
    """A Markdown table: per graph, cold and cached µs/node before and after, and the ratio."""
    lines = ["| graph | nodes | cold before | cold after | ratio | cached before | cached after | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for graph, metrics in table.items():
        shape, nodes = graph.split("-")
        cells = [shape, f"{int(nodes):,}"]
        for metric in ("sfumato_cold", "sfumato_cached"):
            m = metrics[metric]
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
    parser.add_argument("--json", type=Path, default=None, help="also write the full table (with samples) here")
    args = parser.parse_args(argv)
    try:
        before, after = tree_path(args.before), tree_path(args.after)
    except ValueError as error:
        parser.error(str(error))
    print(f"before: {before}\nafter:  {after}", file=sys.stderr)
    table = compare(before, after, rounds=args.rounds, sizes=tuple(args.sizes), repeats=args.repeats)
    print(report(table))
    if args.json is not None:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
