"""Few-step sampling: prompt fidelity (by the judge) and speed per scheduler and step count; table + plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEDULERS = ("dpm++", "unipc", "ddim", "euler", "euler_a")
STEPS = (50, 20, 10, 4)


def run(n: int = 96, schedulers: tuple[str, ...] = SCHEDULERS, steps: tuple[int, ...] = STEPS,
        plot: bool = True) -> dict[str, Any]:
    from sfumato import Engine
    from sfumato_zoo.evaluation import evaluate

    engine = Engine(device="cpu", cache=False)
    rows = []
    for scheduler in schedulers:
        for count in steps:
            scores = evaluate("tiny-shapes-diffusion", n=n, steps=count, scheduler=scheduler, engine=engine)
            rows.append({"scheduler": scheduler, "steps": count, "all": scores["all"],
                         "colour": scores["colour"], "shape": scores["shape"], "background": scores["background"],
                         "seconds_per_image": scores["seconds_per_image"]})
            print(f"  {scheduler:<8} {count:>3} steps: all {scores['all']:.3f} "
                  f"(colour {scores['colour']:.2f}, shape {scores['shape']:.2f}, background {scores['background']:.2f})"
                  f", {scores['seconds_per_image'] * 1000:.1f} ms/image")
    if plot:
        _plot(rows, HERE / "schedulers.png")
    best_fast = max((r for r in rows if r["steps"] <= 10), key=lambda r: r["all"])
    slowest = next(r for r in rows if r["scheduler"] == schedulers[0] and r["steps"] == max(steps))
    ratio = {"best_10_or_fewer_steps_all": best_fast["all"],
             "speedup_vs_50_steps": slowest["seconds_per_image"] / best_fast["seconds_per_image"]}
    print(f"  ratio: best <=10-step setting ({best_fast['scheduler']}, {best_fast['steps']}) keeps all="
          f"{best_fast['all']:.3f} at {ratio['speedup_vs_50_steps']:.1f}x the speed of 50 steps")
    return {"rows": rows, "ratio": ratio}


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  matplotlib not installed: no plot")
        return
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for scheduler in dict.fromkeys(r["scheduler"] for r in rows):
        mine = sorted((r for r in rows if r["scheduler"] == scheduler), key=lambda r: r["seconds_per_image"])
        axis.plot([r["seconds_per_image"] * 1000 for r in mine], [r["all"] for r in mine], marker="o", label=scheduler)
        for r in mine:
            axis.annotate(str(r["steps"]), (r["seconds_per_image"] * 1000, r["all"]), fontsize=7,
                          textcoords="offset points", xytext=(3, 3))
    axis.set_xscale("log")
    axis.set_xlabel("ms per image (CPU, batch of 96)")
    axis.set_ylabel("prompt fidelity ('all', held-out prompts)")
    axis.set_title("tiny-shapes-diffusion: steps vs fidelity")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"  plot: {path}")
