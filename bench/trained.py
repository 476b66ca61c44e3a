"""Time to a trained deep CNN: the plain float32 loop against identlib's engine, end to end.

    make bench-trained                                  # 8 min of CPU; 11 min on a shared 2-core CPU
    python bench/trained.py --channels 16 --seeds 2     # the defaults
    python bench/trained.py --steps 300 --no-paper      # a smoke run

Per step, the plain float32 loop of a 128-channel CNN already runs at this CPU's float32 matrix
peak (bench/bench.py), so a faster *step* can only come from bfloat16. What is left is the time to a
trained network: fewer steps (stopping at convergence, ``tol``), several seeds in one grouped
network, and the thread count. This script measures those levers on the book's deep-CNN recipe,
the one that reproduces the paper's depth-20 memorization::

    RunConfig(model="cnn", depth=20, channels=C, kernel_size=5, activation="relu", bias=True,
              init="default", optimizer="gd", momentum=0.9, lr=0.01, loss_reduction="mean", steps=4000)

End to end, at ``--channels`` (default 16, the book's), each variant trains the same ``--seeds``
networks from the same initial weights on one thread; its time counts everything from building the
networks to holding the trained weights, in wall time and in the process's CPU time (on a shared
machine, the steadier of the two):

- plain fp32: the loop a reader would write (the model, ``torch.optim.SGD(momentum=0.9)``,
  ``F.mse_loss``, ``loss.backward()``, ``opt.step()``, ``loss.item()`` every step), all 4000 steps,
  one seed after the other;
- engine variants (:data:`VARIANTS`, and :data:`EXTRA` on request): :func:`identlib.train.train`
  (one seed after the other) or :func:`identlib.engine.fit_group` (every seed in one grouped
  network), in float32 or bf16, with or without ``tol``.

Every variant's networks are scored on the 13-image test panel (mean correlation to identity and to
constant over the 12 test inputs) and compared, seed by seed, with the plain loop's.

Per step, at ``--channels`` and at 128 channels (``--no-paper`` skips it), the median cost of a few
steps of the plain loop and the engine, in float32, bf16, bf16 on 2 threads, and bf16 with 2 seeds
grouped. A 128-channel network takes about half an hour per 4000 steps, so its time to a trained
network is the per-step cost times 4000 steps, or times the share of steps the ``tol`` variant took
at ``--channels`` (an assumption: the stopping step is not measured at 128 channels).

Writes bench/out/trained.md and bench/out/trained.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import identlib as il
from identlib import engine
from identlib.train import train

OUT = Path(__file__).resolve().parent / "out"

RECIPE = il.RunConfig(model="cnn", depth=20, channels=16, kernel_size=5, activation="relu", bias=True,
                      init="default", optimizer="gd", momentum=0.9, lr=0.01, loss_reduction="mean",
                      steps=4000)
TOL = 2e-3           # stop once the training loss is below this (final losses of 4000 steps: 5e-4 to 2e-3)

# name -> (precision, seeds grouped, tol, threads); the plain loop is the reference
VARIANTS = {
    "engine fp32, seeds grouped": ("float32", True, 0.0, 1),
    "engine bf16": ("bf16", False, 0.0, 1),
    "engine bf16, seeds grouped": ("bf16", True, 0.0, 1),
    "engine bf16, seeds grouped, tol": ("bf16", True, TOL, 1),
}
# Not run by default: "engine fp32" (seeds one after the other; about 1.0x per step, bench.py), the
# fp32 + tol variant, and 2 threads end to end (on a machine whose two cores other jobs keep busy, two
# threads are several times slower; the per-step costs below compare 1 and 2 threads).
EXTRA = {"engine fp32": ("float32", False, 0.0, 1), "engine fp32, seeds grouped, tol": ("float32", True, TOL, 1),
         "engine bf16, seeds grouped, tol, 2 threads": ("bf16", True, TOL, 2)}


def networks(config: il.RunConfig, seeds: int) -> tuple[list, list]:
    """Each seed's network, initialized as identlib.run initializes it, and its generator."""
    gens = [torch.Generator().manual_seed(s) for s in range(seeds)]
    return [il.build_model(config.replace(seed=s), g) for s, g in zip(range(seeds), gens)], gens


def plain_loop(model, x, c: il.RunConfig, steps: int) -> list[float]:
    """The loop a reader would write, with the recipe's optimizer. Returns the loss history."""
    opt = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum)
    losses = []
    for _ in range(steps):
        loss = F.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def run_plain(c: il.RunConfig, seeds: int, steps: int) -> dict:
    torch.set_num_threads(1)
    t, cpu = time.perf_counter(), time.process_time()
    nets, _ = networks(c, seeds)
    x = il.experiments.training_set(c)
    final = [plain_loop(net, x, c, steps)[-1] for net in nets]
    return {"nets": nets, "seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - cpu,
            "steps": [steps] * seeds, "final_loss": final}


def run_engine(c: il.RunConfig, seeds: int, steps: int, precision: str, grouped: bool, tol: float,
               threads: int) -> dict:
    torch.set_num_threads(threads)
    try:
        t, cpu = time.perf_counter(), time.process_time()
        nets, gens = networks(c, seeds)
        x = il.experiments.training_set(c)
        kw = dict(optimizer=c.optimizer, lr=c.lr, momentum=c.momentum, steps=steps,
                  loss_reduction=c.loss_reduction, tol=tol, precision=precision, progress=False)
        if grouped:
            results = engine.fit_group(nets, x, x, generators=gens, **kw)
            for net, (_, state) in zip(nets, results):
                net.load_state_dict(state)
            results = [r for r, _ in results]
        else:
            results = [train(net, x, x, generator=g, **kw) for net, g in zip(nets, gens)]
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    finally:
        torch.set_num_threads(1)
    return {"nets": nets, "seconds": seconds, "cpu_seconds": cpu, "steps": [r.steps for r in results],
            "final_loss": [float(r.loss[-1]) for r in results]}


def verdict_scores(nets, panel) -> list[tuple[float, float]]:
    """Mean correlation to identity and to constant over the 12 test inputs, per network."""
    out = []
    for net in nets:
        net.eval()
        s = il.scores(il.predict(net, panel.images[1:]), panel.images[1:], panel.images[0])
        out.append((float(s["corr_identity"].mean()), float(s["corr_constant"].mean())))
    return out


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def end_to_end(channels: int, seeds: int, steps: int, only=None) -> dict:
    c = RECIPE.replace(channels=channels, steps=steps)
    panel = il.test_panel()
    rows = {}
    run_plain(c, 1, 20)                             # warm-up: allocator, oneDNN primitives
    run_engine(c, 2, 20, "bf16", True, 0.0, 1)
    for name in ["plain fp32"] + (only or list(VARIANTS)):
        start_load = load()
        if name == "plain fp32":
            res = run_plain(c, seeds, steps)
        else:
            res = run_engine(c, seeds, steps, *(VARIANTS | EXTRA)[name])
        res["scores"] = verdict_scores(res.pop("nets"), panel)
        res["load"] = [start_load, load()]
        rows[name] = res
        print(f"{channels} ch, {name}: {res['seconds']:.1f} s, steps {res['steps']}, "
              f"scores {[tuple(round(v, 4) for v in s) for s in res['scores']]}", flush=True)
    ref = rows["plain fp32"]
    for res in rows.values():
        res["speedup"] = ref["seconds"] / res["seconds"]
        res["cpu_speedup"] = ref["cpu_seconds"] / res["cpu_seconds"]
        res["max_corr_diff"] = max(abs(a - b) for s, r in zip(res["scores"], ref["scores"]) for a, b in zip(s, r))
    return {"channels": channels, "seeds": seeds, "steps": steps, "config": c.to_dict(), "variants": rows}


# --- 128 channels: per-step costs -----------------------------------------------------------------------

def per_step(c: il.RunConfig, variant: str, steps: int = 5, warm: int = 2) -> dict:
    """Median seconds per member-step of a few steps, after ``warm`` steps (not counted), in wall
    and in CPU time."""
    precision, grouped, threads = {"plain fp32": ("float32", False, 1), "engine fp32": ("float32", False, 1),
                                   "engine bf16": ("bf16", False, 1), "engine bf16, 2 threads": ("bf16", False, 2),
                                   "engine bf16, 2 seeds grouped": ("bf16", True, 1)}[variant]
    G = 2 if grouped else 1
    nets, gens = networks(c, G)
    x = il.experiments.training_set(c)
    torch.set_num_threads(threads)
    stamps = []
    watched = engine.stack(nets) if grouped else nets[0]
    watched.register_forward_pre_hook(lambda *_: stamps.append((time.perf_counter(), time.process_time())))
    try:
        if variant == "plain fp32":
            plain_loop(watched, x, c, warm + steps)
        elif grouped:
            stack = engine.stack
            engine.stack = lambda members: watched
            try:
                engine.fit_group(nets, x, x, generators=gens, optimizer=c.optimizer, lr=c.lr,
                                 momentum=c.momentum, steps=warm + steps, precision=precision, progress=False)
            finally:
                engine.stack = stack
        else:
            train(watched, x, x, optimizer=c.optimizer, lr=c.lr, momentum=c.momentum, steps=warm + steps,
                  precision=precision, progress=False)
        stamps.append((time.perf_counter(), time.process_time()))
    finally:
        torch.set_num_threads(1)
    return {clock: statistics.median(b[i] - a[i] for a, b in zip(stamps[warm:], stamps[warm + 1:])) / G
            for i, clock in enumerate(("wall", "cpu"))}


PAPER_VARIANTS = ("plain fp32", "engine fp32", "engine bf16", "engine bf16, 2 threads", "engine bf16, 2 seeds grouped")


def step_costs(channels: int, steps: int) -> dict:
    c = RECIPE.replace(channels=channels)
    out = {}
    for v in PAPER_VARIANTS:
        out[v] = per_step(c, v, steps)
        print(f"{channels} ch, {v}: {out[v]['wall'] * 1e3:.0f} ms per member-step ({out[v]['cpu'] * 1e3:.0f} ms CPU)",
              flush=True)
    return out


# --- report -------------------------------------------------------------------------------------------

def step_table(costs: dict) -> list[str]:
    """Per member-step costs: CPU time for one thread (steadier), wall time for two (CPU time counts
    both threads)."""
    t = per_step_seconds(costs)
    lines = ["| variant | per step, wall | per step, CPU | speed-up per step | 4000 steps |", "|---|---|---|---|---|"]
    for name, x in costs.items():
        lines.append(f"| {name} | {x['wall'] * 1e3:.1f} ms | {x['cpu'] * 1e3:.1f} ms | "
                     f"{t['plain fp32'] / t[name]:.2f}× | {t[name] * RECIPE.steps / 60:.1f} min |")
    return lines


def per_step_seconds(costs: dict) -> dict:
    return {k: x["wall"] if "2 threads" in k else x["cpu"] for k, x in costs.items()}


def report(e2e: dict, paper: dict | None, meta: dict, small: dict | None = None) -> str:
    v, S, ch = e2e["variants"], e2e["seeds"], e2e["channels"]
    ref = v["plain fp32"]
    lines = [f"Time to a trained network, the book's deep-CNN recipe (depth 20, {ch} channels, 5×5, ReLU, "
             f"biases, default init, GD with momentum 0.9, lr 0.01, {e2e['steps']} steps; tol = {meta['tol']:g} "
             f"where marked), {S} seeds per variant, 1 thread. Machine: {meta['cpu']}, torch {meta['torch']}; "
             f"run {meta['date']}, {meta['minutes']:.1f} min; shared with other jobs (load average "
             f"{meta['load_start']} at the start, {meta['load_end']} at the end). CPU time is the process's: "
             f"with one thread, about the wall time minus the time other jobs held the core, the steadier "
             f"measure on a shared machine.", "",
             "| variant | wall time, all seeds | speed-up (wall) | CPU time | speed-up (CPU) | steps taken | "
             "final loss | max \\|Δ corr\\| vs plain |", "|---|---|---|---|---|---|---|---|"]
    for name, r in v.items():
        cpu = (f"{r['cpu_seconds']:.0f} s | **{r['cpu_speedup']:.2f}×**" if "2 threads" not in name else
               f"({r['cpu_seconds']:.0f} s, 2 threads) | –")
        lines.append(f"| {name} | {r['seconds']:.0f} s | {r['speedup']:.2f}× | {cpu} | "
                     f"{', '.join(map(str, r['steps']))} | {', '.join(f'{x:.1e}' for x in r['final_loss'])} | "
                     f"{r['max_corr_diff']:.4f} |")
    scores = "; ".join(f"seed {s}: {a:.3f} / {b:.3f}" for s, (a, b) in enumerate(ref["scores"]))
    lines += ["", f"The plain loop's mean correlation to identity / to constant: {scores}."]
    if small:
        lines += ["", f"{ch} channels, per member-step (median of 40 steps after two not counted; 1 thread "
                  f"unless marked):", ""] + step_table(small)
    if paper:
        tol_name = "engine bf16, seeds grouped, tol"
        frac = statistics.mean(v[tol_name]["steps"]) / e2e["steps"] if tol_name in v else 1.0
        t = per_step_seconds(paper)
        best = min(t, key=t.get)
        lines += ["", f"128 channels, per member-step (median of 5 steps after two not counted), and the time "
                  f"to one trained network at {RECIPE.steps} steps from it:", ""] + step_table(paper)
        lines += ["", f"With `tol`, if a 128-channel run stopped after the same share of its steps as the "
                  f"{ch}-channel runs above ({100 * frac:.0f}%; not measured at 128 channels), the fastest "
                  f"variant ({best}) would train a network in {t[best] * RECIPE.steps * frac / 60:.0f} min, "
                  f"{t['plain fp32'] / (t[best] * frac):.2f}× the plain loop's "
                  f"{t['plain fp32'] * RECIPE.steps / 60:.0f} min."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=16, help="channels of the end-to-end runs (the book's: 16)")
    ap.add_argument("--seeds", type=int, default=2, help="networks per variant")
    ap.add_argument("--steps", type=int, default=RECIPE.steps, help="steps (at most, with tol)")
    ap.add_argument("--variants", nargs="*", help="engine variants to run (default: "
                    f"{', '.join(VARIANTS)}; also: {', '.join(EXTRA)})")
    ap.add_argument("--no-paper", dest="paper", action="store_false", help="skip the 128-channel step costs")
    args = ap.parse_args(argv)
    import bench                                    # bench/bench.py, beside this script

    setup = il.setup(1)
    t0 = time.time()
    meta = {"cpu": bench._cpu(), "torch": setup["torch"], "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_start": load(), "tol": TOL}
    e2e = end_to_end(args.channels, args.seeds, args.steps, args.variants)
    small = step_costs(args.channels, 40)
    paper = step_costs(128, 5) if args.paper else None
    meta["minutes"], meta["load_end"] = (time.time() - t0) / 60, load()
    text = report(e2e, paper, meta, small)
    OUT.mkdir(exist_ok=True)
    (OUT / "trained.md").write_text(text)
    (OUT / "trained.json").write_text(json.dumps({"meta": meta, "end_to_end": e2e, "per_step": small,
                                                  "paper_per_step": paper},
                                                 indent=1))
    print(text)


if __name__ == "__main__":
    main()
