"""Does bfloat16 change what a network learns? Trains a few of the book's settings to the end in
float32 and in bf16 (two seeds each, through ``identlib.run_all``, so the seeds train as one group)
and compares the mean correlations to identity and to constant on the 13-image test panel, next to
the difference between two float32 seeds.

    make bench-verdicts        # about 20-30 minutes on a 2-core CPU (cached afterwards)

Writes bench/out/verdicts.md and bench/out/verdicts.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import identlib as il

OUT = Path(__file__).resolve().parent / "out"

CNN = il.RunConfig(model="cnn", activation="relu", optimizer="adam", lr=1e-3)
SETTINGS = {                                     # paper.md §5 and Fig. 2
    "CNN depth 3, 32 ch, Adam 1e-3": CNN.replace(depth=3, channels=32, steps=1000),
    "CNN depth 9, 32 ch, Adam 1e-3": CNN.replace(depth=9, channels=32, steps=1000),
    "CNN depth 20, 32 ch, Adam 1e-3": CNN.replace(depth=20, channels=32, steps=1500),
    "CNN depth 20, 128 ch, Adam 1e-4": CNN.replace(depth=20, channels=128, lr=1e-4, steps=1000),
    "FCN depth 6 ReLU, width 784, GD": il.RunConfig(model="fcn", depth=6, activation="relu", init="default",
                                                    lr=3e-4, loss_reduction="sum", steps=3000, tol=1e-8),
}
SEEDS = (0, 1)


def gap(a, b) -> float:
    """The larger difference of the two mean correlations between two summary rows."""
    return max(abs(a.corr_identity - b.corr_identity), abs(a.corr_constant - b.corr_constant))


def main() -> None:
    il.setup()
    panel = il.test_panel()
    rows, t0 = [], time.time()
    for name, base in SETTINGS.items():
        configs = [base.replace(precision=p, seed=s) for p in ("float32", "bf16") for s in SEEDS]
        t = time.time()
        runs = il.run_all(configs)
        df = il.evaluate(runs, panel.images, family=panel.families, fields=["precision", "seed"])
        summary = il.summarize(df, by=["precision", "seed"])
        seed_diff = gap(summary.loc[("float32", SEEDS[0])], summary.loc[("float32", SEEDS[1])])
        for s in SEEDS:
            a, b = summary.loc[("float32", s)], summary.loc[("bf16", s)]
            rows.append({"setting": name, "seed": s, "fp32": [a.corr_identity, a.corr_constant, a.verdict],
                         "bf16": [b.corr_identity, b.corr_constant, b.verdict], "diff": gap(a, b),
                         "seed_diff": seed_diff, "minutes": (time.time() - t) / 60})
        print(f"{name}: {rows[-1]}", flush=True)
    lines = [f"float32 vs bf16 after full training ({time.strftime('%Y-%m-%d %H:%M')}, "
             f"{(time.time() - t0) / 60:.0f} min with a cold cache). Mean correlation to identity / to "
             "constant over the 12 test inputs:", "",
             "| setting | seed | float32 | bf16 | \\|Δ\\| bf16 vs float32 | \\|Δ\\| seed 0 vs seed 1 (float32) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        f, b = r["fp32"], r["bf16"]
        lines.append(f"| {r['setting']} | {r['seed']} | {f[0]:.2f} / {f[1]:.2f} ({f[2]}) | "
                     f"{b[0]:.2f} / {b[1]:.2f} ({b[2]}) | {r['diff']:.3f} | {r['seed_diff']:.3f} |")
    text = "\n".join(lines) + "\n"
    OUT.mkdir(exist_ok=True)
    (OUT / "verdicts.md").write_text(text)
    (OUT / "verdicts.json").write_text(json.dumps(rows, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
