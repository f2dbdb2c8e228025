"""Layouts: the planners on held-out wordings, and compose with each planner and each regional path.

``python -m benchmarks.bench_layouts [--plan-n 300] [--n 60] [--steps 20] [--json out.json]``

1. Planning, on held-out wordings of the zoo's scenes (``iter_scenes(...,
   heldout=True)``): the grammar parser against the shipped language-model
   planner (``tiny-layout-planner``, constrained decoding). Per planner: the
   share of prompts whose output parses into a ``Layout``; the share whose
   objects (captions, in order) and background equal the ground truth's
   (the scene the caption was written from; boxes are free, since a caption
   never fixes them), and the grammar's; the share of ``position`` prompts
   whose first two boxes satisfy the relation; the share of layouts with
   overlapping boxes; seconds per prompt.
2. ``sfumato zoo eval --suite compositional``'s prompts and judge for the
   compose pipeline (plan -> prompts -> encode -> regional generation) with
   planner = grammar or model, and with the layout going to ``layout.generate``
   or straight into ``diffusion.generate``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def _boxes_overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def planning(n: int = 300, seed: int = 7, folder: str = "") -> dict[str, Any]:
    """Parse rate, agreement and time of both planners on ``n`` held-out prompts (``folder``: another LM)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sfumato_layout import WEIGHTS, grammar
    from sfumato_layout.language_model import plan_with_model
    from sfumato_zoo.dataset import iter_scenes, relation_holds, scene_layout

    folder = folder or str(WEIGHTS / "tiny-layout-planner")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    samples = list(iter_scenes(seed, n, heldout=True))
    planners = {"grammar": lambda prompt: grammar.plan(prompt),
                "model": lambda prompt: plan_with_model(model, tokenizer, prompt)}
    results: dict[str, Any] = {"n": n, "seed": seed, "wordings": "held-out", "threads": torch.get_num_threads()}
    grammar_plans: list[Any] = []
    for name, planner in planners.items():
        parsed = exact = same_as_grammar = overlapping = 0
        positions = position_ok = 0
        seconds = 0.0
        per_category: dict[str, list[int]] = {}
        failures: list[str] = []
        for index, sample in enumerate(samples):
            truth = scene_layout(sample.scene)
            started = time.perf_counter()
            try:
                layout = planner(sample.caption)
            except ValueError as error:
                seconds += time.perf_counter() - started
                failures.append(f"{sample.caption}: {error}")
                if name == "grammar":
                    grammar_plans.append(None)
                continue
            seconds += time.perf_counter() - started
            parsed += 1
            if name == "grammar":
                grammar_plans.append(layout)
            captions = [obj.caption for obj in layout.objects]
            right = captions == [obj["caption"] for obj in truth["objects"]] and layout.background == truth["background"]
            exact += right
            per_category.setdefault(sample.scene.category, []).append(int(right))
            reference = grammar_plans[index] if name != "grammar" else layout
            if reference is not None:
                same_as_grammar += (captions == [o.caption for o in reference.objects]
                                    and layout.background == reference.background)
            boxes = [obj.box for obj in layout.objects]
            overlapping += any(_boxes_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
            if sample.scene.category == "position":
                positions += 1
                position_ok += len(layout.objects) >= 2 and relation_holds(
                    layout.objects[0].centre, layout.objects[1].centre, sample.scene.relation)
        results[name] = {
            "parse_rate": parsed / n, "exact_objects_and_background": exact / n,
            "agrees_with_grammar": same_as_grammar / n,
            "exact_by_category": {k: sum(v) / len(v) for k, v in sorted(per_category.items())},
            "position_relation_holds": position_ok / max(positions, 1),
            "layouts_with_overlapping_boxes": overlapping / max(parsed, 1),
            "seconds_per_prompt": seconds / n, "failures": failures[:5],
        }
    return results


def compose_graph(prompt: str, *, planner: str, direct: bool, model: str = "tiny-shapes-diffusion", steps: int = 20,
                  seed: int = 0, size: int = 64) -> Any:
    """The image-making nodes of ``graphs/compose.json``, with the planner and the regional path chosen."""
    from sfumato import GraphBuilder

    builder = GraphBuilder("bench-compose")
    plan = builder.add("layout.plan", "plan", prompt=prompt, planner=planner)
    prompts = builder.add("layout.prompts", "prompts", layout=plan["layout"])
    encode = builder.add("encode.text", "encode", texts=prompts["texts"])
    settings = {"model": model, "steps": steps, "seed": seed, "width": size, "height": size}
    node = "diffusion.generate" if direct else "layout.generate"
    generate = builder.add(node, "generate", layout=plan["layout"], conditioning=encode["conditioning"], **settings)
    builder.output("images", generate["images"])
    return builder.build()


def compositional(n: int = 60, steps: int = 20, variants: tuple[str, ...] = ("grammar", "model", "grammar-direct",
                                                                              "model-direct")) -> dict[str, Any]:
    """Judge scores per category for each (planner, regional path) on the compositional suite's prompts."""
    from sfumato import Engine
    from sfumato_zoo.dataset import compositional_prompts
    from sfumato_zoo.judge import score_scenes

    engine = Engine(device="cpu", cache=False)
    pairs = compositional_prompts(n)
    results: dict[str, Any] = {"n": n, "steps": steps, "timing": "variants interleaved prompt by prompt"}
    choices = {variant: (variant.partition("-")[0], variant.endswith("-direct")) for variant in variants}
    for planner, direct in choices.values():
        engine.run(compose_graph(pairs[0][0], planner=planner, direct=direct, steps=1))  # warm-up: models loaded
    images: dict[str, list[Any]] = {variant: [] for variant in variants}
    seconds = dict.fromkeys(variants, 0.0)
    planning_seconds = dict.fromkeys(variants, 0.0)
    for index, (prompt, _) in enumerate(pairs):
        for variant, (planner, direct) in choices.items():  # interleaved: a noisy machine slows all alike
            started = time.perf_counter()
            run = engine.run(compose_graph(prompt, planner=planner, direct=direct, steps=steps, seed=index))
            seconds[variant] += time.perf_counter() - started
            images[variant].append(run["images"].images[0])
            planning_seconds[variant] += run.report.nodes["plan"].seconds
    for variant in variants:
        scores = score_scenes(images[variant], [scene for _, scene in pairs])
        results[variant] = {**scores, "seconds_per_image": seconds[variant] / n,
                            "planning_seconds_per_image": planning_seconds[variant] / n}
        print(variant, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results[variant].items()}),
              flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_layouts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan-n", type=int, default=300)
    parser.add_argument("--n", type=int, default=60, help="compositional prompts (0: skip)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variants", default="grammar,model,grammar-direct,model-direct")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--planner", default="", help="a causal LM folder (default: the shipped planner)")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    if args.plan_n:
        results["planning"] = planning(args.plan_n, folder=args.planner)
        print(json.dumps(results["planning"], indent=1), flush=True)
    if args.n:
        results["compositional"] = compositional(args.n, args.steps, tuple(args.variants.split(",")))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
