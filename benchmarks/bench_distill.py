"""The distilled model: ``tiny-shapes-lcm`` at 1 and 2 steps against its teacher at 20 DPM-Solver++ steps.

``python -m benchmarks.bench_distill [--n 96] [--rounds 3] [--model tiny-shapes-lcm] [--out FILE]``

Every contender generates one image for each of ``n`` held-out prompts in one
batch (the graph of ``sfumato zoo eval``: ``encode.text`` -> ``generate.image``),
judged by the zoo's judge; the contenders are timed alternately for
``rounds`` rounds in one process, after a warm-up, and the median is
reported (speed-ups: the median of each round's ratio, and the ratio of the
fastest runs). Two times per image: the whole run (prompt encoding included, as
``zoo eval`` reports it) and the ``generate`` node alone (sampling and VAE
decoding: what distillation changes). Speed-ups are ratios to the teacher
measured in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEACHER = "tiny-shapes-diffusion"


def contenders(model: str) -> dict[str, tuple[str, int, str, float]]:
    """Name -> (model, steps, scheduler, guidance). The student's guidance is in its weights (1: no CFG batch)."""
    return {
        "teacher, 20 DPM-Solver++ steps, guidance 3": (TEACHER, 20, "dpm++", 3.0),
        "teacher, 2 DPM-Solver++ steps, guidance 3": (TEACHER, 2, "dpm++", 3.0),
        "distilled, 1 LCM step": (model, 1, "lcm", 1.0),
        "distilled, 2 LCM steps": (model, 2, "lcm", 1.0),
    }


def run(n: int = 96, rounds: int = 3, model: str = "tiny-shapes-lcm") -> dict[str, Any]:
    from sfumato import Engine
    from sfumato_zoo.dataset import evaluation_prompts
    from sfumato_zoo.evaluation import generation_graph, score_against

    engine = Engine(device="cpu", cache=False)
    pairs = evaluation_prompts(n)
    prompts, specs = [p for p, _ in pairs], [s for _, s in pairs]
    chosen = contenders(model)
    for name, (weights, steps, scheduler, guidance) in chosen.items():  # warm-up: load encoder and models
        engine.run(generation_graph(weights, prompts[:1], steps=steps, scheduler=scheduler, guidance=guidance))
    whole: dict[str, list[float]] = {name: [] for name in chosen}
    node: dict[str, list[float]] = {name: [] for name in chosen}
    scores: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for name, (weights, steps, scheduler, guidance) in chosen.items():
            started = time.perf_counter()
            result = engine.run(generation_graph(weights, prompts, steps=steps, scheduler=scheduler,
                                                 guidance=guidance))
            whole[name].append((time.perf_counter() - started) / n)
            node[name].append(result.report.nodes["generate"].seconds / n)
            scores[name] = score_against(result["images"], specs)  # seeded: the same every round
    teacher = next(iter(chosen))
    rows = []
    for name, (weights, steps, scheduler, guidance) in chosen.items():
        row = {"name": name, "model": weights, "steps": steps, "scheduler": scheduler, "guidance": guidance,
               **{key: scores[name][key] for key in ("colour", "shape", "background", "all")},
               "ms_per_image": 1000 * statistics.median(whole[name]),
               "generate_ms_per_image": 1000 * statistics.median(node[name]),
               "ms_per_image_rounds": [1000 * value for value in whole[name]]}
        # On a shared machine a burst of other work can slow one contender's run: the speed-up is the
        # median of each round's ratio (the two runs closest in time), and also the ratio of the fastest runs.
        row["speedup"] = statistics.median(t / c for t, c in zip(whole[teacher], whole[name]))
        row["generate_speedup"] = statistics.median(t / c for t, c in zip(node[teacher], node[name]))
        row["speedup_fastest"] = min(whole[teacher]) / min(whole[name])
        row["ms_per_image_fastest"] = 1000 * min(whole[name])
        rows.append(row)
        print(f"  {name:<44} all {row['all']:.3f} (colour {row['colour']:.3f}, shape {row['shape']:.3f}, "
              f"background {row['background']:.3f})  {row['ms_per_image']:.2f} ms/image ({row['speedup']:.1f}x), "
              f"generate {row['generate_ms_per_image']:.2f} ms/image ({row['generate_speedup']:.1f}x), "
              f"fastest {row['ms_per_image_fastest']:.2f} ms/image ({row['speedup_fastest']:.1f}x)", flush=True)
    return {"n": n, "rounds": rounds, "model": model, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_distill", description=__doc__)
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="tiny-shapes-lcm", help="the distilled model (name or folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = run(args.n, args.rounds, args.model)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
