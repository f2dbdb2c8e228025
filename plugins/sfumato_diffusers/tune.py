"""``sfumato tune GRAPH``: time candidate ``speed`` recipes on a graph and keep those whose fidelity holds.

Every generation node of the graph that takes ``speed`` gets each candidate
recipe in turn. Fidelity is measured against the graph run without a recipe:
when the graph declares an output named ``fidelity`` (the zoo's judge scores,
as ``text-to-image`` does) it is the candidate's score (the judge's ``all``
accuracy, or the mean of a list) over the reference's (capped at 1); otherwise it is the mean SSIM of every image output
to the reference's images (scikit-image; 1 - MAE/255 without it). Each
candidate runs once to load its model copy, then once timed. Writes a Pareto
table (``pareto.md``), every row (``tune.json``), a plot when matplotlib is
installed (``pareto.png``) and ``recipe.json``, the fastest recipe that kept
the fidelity — which a graph with a ``speed`` parameter uses as
``--set speed=@recipe.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

#: Candidate recipes, cheapest to try first; refused ones for the device, or ones that need a package
#: this machine lacks (the OpenVINO backend without the cpu extra), are skipped.
CANDIDATES: tuple[dict[str, Any], ...] = (
    {"step_cache": 2},
    {"step_cache": 3},
    {"quantize": "int8_dynamic"},
    {"channels_last": True},
    {"attention": "sdpa", "fuse_qkv": True},
    {"token_merging": 0.5},
    {"dtype": "bfloat16"},
    {"dtype": "float16"},
    {"step_cache": 2, "token_merging": 0.5},
    {"step_cache": 3, "token_merging": 0.5},
    {"dtype": "bfloat16", "step_cache": 2},
    {"dtype": "bfloat16", "step_cache": 3, "token_merging": 0.5},
    {"dtype": "float16", "step_cache": 2},
    {"sampler": "tcd", "steps": 4},
    {"backend": "openvino"},
    {"backend": "openvino", "dtype": "bfloat16"},
)
GENERATORS = ("diffusion.generate", "generate.image")


def add_parsers(subparsers: Any) -> None:
    tune = subparsers.add_parser("tune", help="find the fastest speed recipe whose fidelity holds on a graph")
    tune.add_argument("graph", help="a graph .json file or a shipped graph's name")
    tune.add_argument("--min-fidelity", type=float, default=0.95, help="keep recipes at least this faithful (0..1)")
    tune.add_argument("--budget", default="10m", help="stop trying candidates after this long (90s, 10m, 1h)")
    tune.add_argument("--candidates", default=None, help="a JSON file holding a list of recipes to try instead")
    tune.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    tune.add_argument("--out", default="tune", help="folder for pareto.md, tune.json, recipe.json (and pareto.png)")
    tune.set_defaults(handler=tune_command)


def parse_budget(text: str) -> float:
    """``90s``, ``10m``, ``1h`` or plain seconds -> seconds; ``ValueError`` otherwise."""
    text = text.strip().lower()
    factor = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], None)
    number = text[:-1] if factor else text
    seconds = float(number) * (factor or 1)
    if not 0 < seconds < 7 * 24 * 3600:
        raise ValueError(f"budget {text!r} is not a positive duration")
    return seconds


def with_recipe(graph_data: dict[str, Any], recipe: dict[str, Any], node_types: dict[str, Any]) -> dict[str, Any]:
    """A copy of the graph document with ``speed`` set on every generation node that takes it."""
    data = json.loads(json.dumps(graph_data))
    for spec in data["nodes"].values():
        if spec.get("type") in node_types and "speed" in node_types[spec["type"]].inputs:
            spec.setdefault("inputs", {})["speed"] = recipe
    return data


def image_similarity(images: list[Any], references: list[Any]) -> float:
    """Mean SSIM of images to their references (1 - MAE/255 without scikit-image)."""
    import numpy as np

    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        structural_similarity = None
    scores = []
    for image, reference in zip(images, references):
        a, b = np.asarray(image.convert("RGB")), np.asarray(reference.convert("RGB"))
        if structural_similarity is not None and min(a.shape[:2]) >= 7:
            scores.append(float(structural_similarity(a, b, channel_axis=2, data_range=255)))
        else:
            scores.append(1.0 - float(np.abs(a.astype(float) - b.astype(float)).mean()) / 255.0)
    return float(np.mean(scores)) if scores else 0.0


def _images(result: Any) -> list[Any]:
    """Every image any node made, in node and output name order (the same in every run)."""
    from sfumato import ImageBatch

    found = []
    for node_id in sorted(result.values):
        outputs = result.values[node_id]
        for name in sorted(outputs):
            if isinstance(outputs[name], ImageBatch):
                found.extend(outputs[name].images)
    return found


def fidelity(result: Any, reference: Any) -> float:
    """The candidate's fidelity to the reference run (see the module docstring)."""

    if "fidelity" in reference.outputs:
        mine, base = _score(result.outputs["fidelity"]), _score(reference.outputs["fidelity"])
        return min(1.0, mine / base) if base > 0 else 1.0
    return image_similarity(_images(result), _images(reference))


def _score(value: Any) -> float:
    """A fidelity output as one number: the judge's ``all`` accuracy, or the mean of a list of scores."""
    import numpy as np

    if isinstance(value, dict):
        return float(value["all"])
    return float(np.mean(value))


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows no other row beats on both seconds (lower) and fidelity (higher), fastest first."""
    front = [r for r in rows if not any(o is not r and o["seconds"] <= r["seconds"] and o["fidelity"] >= r["fidelity"]
                                        and (o["seconds"] < r["seconds"] or o["fidelity"] > r["fidelity"])
                                        for o in rows)]
    return sorted(front, key=lambda r: r["seconds"])


def tune(graph_path: str, *, min_fidelity: float, budget_s: float, candidates: list[dict[str, Any]],
         device: str, out: Path, echo: Any = print) -> dict[str, Any]:
    """Run the tuner; returns ``{"rows", "pareto", "recipe"}`` and writes the files into ``out``."""
    from sfumato import Engine, Graph, resolve_graph_path

    from .speed import SpeedRecipe, recipe_conflicts, recipe_problems

    graph = Graph.load(resolve_graph_path(graph_path))
    data = graph.to_dict()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:  # images the graph saves while tuning are not kept
        engine = Engine(device=device, cache=False, output_dir=scratch)
        node_types = {name: engine.registry.nodes[name] for name in GENERATORS if name in engine.registry.nodes}
        if not any(spec.get("type") in node_types for spec in data["nodes"].values()):
            raise ValueError(f"graph {graph_path!r} has no generation node that takes 'speed' "
                             f"({', '.join(GENERATORS)})")
        engine.run(graph)  # load the models: the reference's time is generation, as the candidates' is
        began = time.perf_counter()
        reference = engine.run(graph)
        base_seconds = time.perf_counter() - began
        rows = [{"recipe": {}, "seconds": base_seconds, "speedup": 1.0, "fidelity": 1.0, "kept": True}]
        echo(f"reference (no recipe): {base_seconds:.2f} s")
        for index, candidate in enumerate(candidates, 1):
            recipe = SpeedRecipe.model_validate(candidate)
            problems = recipe_conflicts(recipe, device) + recipe_problems(recipe)
            label = json.dumps(candidate, separators=(",", ":"))
            if problems:
                echo(f"[{index}/{len(candidates)}] {label}: skipped ({problems[0]})")
                continue
            if time.perf_counter() - started > budget_s:
                echo(f"budget spent: {len(candidates) - index + 1} candidate(s) not tried")
                break
            variant = Graph.from_dict(with_recipe(data, candidate, node_types), source=f"{graph_path} + {label}")
            try:
                engine.run(variant)  # the recipe's model copy loads (and compiles) here
                began = time.perf_counter()
                result = engine.run(variant)
                seconds = time.perf_counter() - began
            except Exception as error:  # noqa: BLE001 - a candidate that fails is a row, not the end
                echo(f"[{index}/{len(candidates)}] {label}: failed ({str(error).splitlines()[0][:160]})")
                continue
            score = fidelity(result, reference)
            row = {"recipe": candidate, "seconds": seconds, "speedup": base_seconds / seconds, "fidelity": score,
                   "kept": score >= min_fidelity}
            rows.append(row)
            echo(f"[{index}/{len(candidates)}] {label}: {seconds:.2f} s ({row['speedup']:.2f}x), fidelity "
                 f"{score:.3f} {'kept' if row['kept'] else 'dropped'}")
    kept = [r for r in rows if r["kept"]]
    best = min(kept, key=lambda r: r["seconds"])
    front = pareto(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(best["recipe"], indent=2) + "\n")
    (out / "tune.json").write_text(json.dumps({"graph": graph_path, "device": device, "min_fidelity": min_fidelity,
                                               "rows": rows}, indent=2) + "\n")
    lines = ["| recipe | seconds | speed-up | fidelity | kept |", "|---|---|---|---|---|"]
    lines += [f"| `{json.dumps(r['recipe'], separators=(',', ':'))}` | {r['seconds']:.2f} | {r['speedup']:.2f}x | "
              f"{r['fidelity']:.3f} | {'yes' if r['kept'] else 'no'} |" for r in front]
    (out / "pareto.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "pareto.png")
    echo(f"fastest recipe at fidelity >= {min_fidelity}: {json.dumps(best['recipe'])} "
         f"({best['speedup']:.2f}x); written to {out / 'recipe.json'}")
    return {"rows": rows, "pareto": front, "recipe": best["recipe"]}


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axis = plt.subplots(figsize=(6, 4))
    for row in rows:
        axis.scatter(row["seconds"], row["fidelity"], color="tab:green" if row["kept"] else "tab:red")
        axis.annotate(json.dumps(row["recipe"], separators=(",", ":"))[:40] or "reference",
                      (row["seconds"], row["fidelity"]), fontsize=6, textcoords="offset points", xytext=(3, 3))
    axis.set_xlabel("seconds per graph run")
    axis.set_ylabel("fidelity to the reference")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def tune_command(args: argparse.Namespace) -> int:
    """The ``sfumato tune`` handler: 0 on success, 2 for bad input."""
    from sfumato import ParameterError

    if not 0 < args.min_fidelity <= 1:
        raise ParameterError(f"--min-fidelity must be in (0, 1], got {args.min_fidelity}")
    try:
        budget = parse_budget(args.budget)
    except ValueError:
        raise ParameterError(f"--budget expects a duration such as 90s, 10m or 1h, got {args.budget!r}") from None
    candidates = list(CANDIDATES)
    if args.candidates:
        try:
            candidates = json.loads(Path(args.candidates).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ParameterError(f"--candidates {args.candidates}: {error}") from None
        if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
            raise ParameterError(f"--candidates {args.candidates}: expected a JSON list of recipe objects")
    from .speed import SpeedRecipe

    for candidate in candidates:
        try:
            SpeedRecipe.model_validate(candidate)
        except ValueError as error:
            raise ParameterError(f"candidate recipe {candidate!r} is invalid: {error}") from None
    try:
        tune(args.graph, min_fidelity=args.min_fidelity, budget_s=budget, candidates=candidates,
             device=args.device, out=Path(args.out))
    except ValueError as error:
        raise ParameterError(str(error)) from None
    return 0
