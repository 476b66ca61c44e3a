"""Benchmark: identlib's training engine against the plain PyTorch loop and this machine's peak.

    make bench                       # about 5-10 minutes on a 2-core CPU
    python bench/bench.py --quick    # a smoke run: few steps, one round

For each case, from the same initial weights and for the same number of steps, it times
(a) the float32 loop a reader would write: the model, Adam, ``loss.backward()``, ``opt.step()``,
    ``loss.item()`` every step;
(b) identlib's engine in float32: :func:`identlib.train.train` (fused optimizer), or for a seed
    sweep :func:`identlib.engine.fit_group` (every seed in one grouped network);
(c) the same in bfloat16 (``precision="bf16"``).
Each variant runs once per round, the rounds in alternating order; every step is timed (from one
forward pass to the next) and the median step counts, the estimate least disturbed by other jobs on
the machine; the noise column is the coefficient of variation of (a)'s steps. Steps/s counts
member-steps (one network, one step). Achieved GFLOP/s counts the convolutions' and matrix products'
arithmetic analytically (forward, weight gradient, input gradient), against the peak of a large
``torch.mm`` in the same precision, measured at the start and the end of the run.
After the timed steps, each variant's networks are scored on the 13-image test panel: (b) and (c)
must give the mean correlations to identity and to constant of (a) within 0.01.

Writes bench/out/bench.md (tables), bench/out/bench.json (every number) and bench/out/bench.png.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import identlib as il
from identlib import engine
from identlib.train import autocast, train

OUT = Path(__file__).resolve().parent / "out"


@dataclass
class Case:
    name: str
    config: il.RunConfig
    steps: int
    seeds: int = 1                   # > 1: a sweep over seeds, trained as one group by the engine


def cases(quick: bool) -> list[Case]:
    cnn = il.RunConfig(model="cnn", activation="relu", channels=128, kernel_size=5, optimizer="adam", lr=1e-4)
    fcn = il.RunConfig(model="fcn", activation="relu", depth=6, width=784, optimizer="adam", lr=1e-4)
    s = (lambda n: max(2, n // 10)) if quick else (lambda n: n)
    return [
        Case("CNN depth 5, 128 ch", cnn.replace(depth=5), s(30)),
        Case("CNN depth 20, 128 ch", cnn.replace(depth=20), s(20)),
        Case("FCN depth 6, width 784", fcn, s(200)),
        Case("FCN 60k, 1 epoch (batch 100)", fcn.replace(n_train=60000, batch_size=100, lr=1e-3), s(600)),
        Case("CNN depth 5, 128 ch, 4 seeds", cnn.replace(depth=5), s(20), seeds=4),
        Case("CNN depth 20, 32 ch, 4 seeds", cnn.replace(depth=20, channels=32), s(30), seeds=4),
        Case("CNN depth 5, 1024 ch", cnn.replace(depth=5, channels=1024), 2 if quick else 3),
    ]


# --- arithmetic and peak ----------------------------------------------------------------------------

def forward_flops(c: il.RunConfig) -> list[float]:
    """Arithmetic of each layer's forward pass over one batch (x2 FLOP per multiply-add)."""
    batch = c.batch_size or c.n_train
    if c.model == "cnn":
        sizes = [1] + [c.channels] * (c.depth - 1) + [1]
        return [2 * batch * 28 * 28 * a * b * c.kernel_size ** 2 for a, b in zip(sizes, sizes[1:])]
    sizes = [784] + [c.width] * (c.depth - 1) + [784]
    return [2 * batch * a * b for a, b in zip(sizes, sizes[1:])]


def step_flops(c: il.RunConfig) -> float:
    """Arithmetic of one training step: forward, weight gradient, and input gradient for every
    layer but the first (the input needs none)."""
    per_pass = forward_flops(c)
    return 3 * sum(per_pass) - per_pass[0]


def mm_peak(dtype: torch.dtype, n: int = 2048, reps: int = 6) -> float:
    """GFLOP/s of the best of ``reps`` (n x n) @ (n x n) products."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# --- the three variants -----------------------------------------------------------------------------

def training_set(c: il.RunConfig) -> torch.Tensor:
    return il.experiments.training_set(c)


def models(case: Case) -> list:
    """Each seed's network, initialized as identlib.run initializes it, and its generator."""
    out = []
    for s in range(case.seeds):
        gen = torch.Generator().manual_seed(s)
        out.append((il.build_model(case.config.replace(seed=s), gen), gen))
    return out


def plain_loop(model, x, c: il.RunConfig, steps: int, gen) -> None:
    """The loop a reader would write."""
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    order, cursor = None, len(x)
    for _ in range(steps):
        if c.batch_size:
            if cursor + c.batch_size > len(x):
                order, cursor = torch.randperm(len(x), generator=gen), 0
            batch = x[order[cursor:cursor + c.batch_size]]
            cursor += c.batch_size
        else:
            batch = x
        loss = F.mse_loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()


class StepClock:
    """Time stamps of every forward pass of the networks it watches: one per training step. The
    median step is the speed estimate least disturbed by other jobs on the machine."""

    def __init__(self):
        self.stamps = []

    def watch(self, net):
        net.register_forward_pre_hook(lambda *_: self.stamps.append(time.perf_counter()))
        return net

    def steps(self, end: float) -> list[float]:
        """Per-step seconds (a step runs from one forward pass to the next, or to ``end``)."""
        t = self.stamps + [end]
        return [b - a for a, b in zip(t, t[1:])]


def run_variant(case: Case, variant: str, steps: int) -> tuple[list, list, int]:
    """Train every seed of the case with one variant: the trained networks, the seconds of each
    step, and the networks one step trains (building networks and loading data are not timed)."""
    c, x = case.config, training_set(case.config)
    nets = models(case)
    clock = StepClock()
    if variant == "plain":
        for net, gen in nets:
            plain_loop(clock.watch(net), x, c, steps, gen)
        return [net for net, _ in nets], clock.steps(time.perf_counter()), 1
    precision = "bf16" if variant == "engine bf16" else "float32"
    kw = dict(optimizer=c.optimizer, lr=c.lr, steps=steps, batch_size=c.batch_size,
              precision=precision, progress=False)
    if len(nets) == 1:
        net, gen = nets[0]
        train(clock.watch(net), x, x, generator=gen, **kw)
        return [net], clock.steps(time.perf_counter()), 1
    stack = engine.stack
    engine.stack = lambda members: clock.watch(stack(members))    # watch the grouped network
    try:
        trained = engine.fit_group([n for n, _ in nets], x, x, generators=[g for _, g in nets], **kw)
        seconds = clock.steps(time.perf_counter())
    finally:
        engine.stack = stack
    for (net, _), (_, state) in zip(nets, trained):
        net.load_state_dict(state)
    return [net for net, _ in nets], seconds, len(nets)


VARIANTS = ("plain", "engine fp32", "engine bf16")


def verdict_scores(nets, panel) -> list[tuple[float, float]]:
    """Mean correlation to identity and to constant over the 12 test inputs, per network."""
    out = []
    for net in nets:
        net.eval()
        s = il.scores(il.predict(net, panel.images[1:]), panel.images[1:], panel.images[0])
        out.append((float(s["corr_identity"].mean()), float(s["corr_constant"].mean())))
    return out


def bench_case(case: Case, rounds: int, panel) -> dict:
    warm = 1 if case.steps <= 4 else 3
    for v in VARIANTS:                              # warm-up: allocator, oneDNN primitives
        run_variant(Case(case.name, case.config, warm, case.seeds), v, warm)
    times = {v: [] for v in VARIANTS}                 # per-step seconds, every round
    totals = {v: [] for v in VARIANTS}
    nets, width = {}, {}
    near = {"float32": [], "bf16": []}                 # the peak measured next to this case's steps
    for r in range(rounds):
        near["float32"].append(mm_peak(torch.float32, reps=3))
        near["bf16"].append(mm_peak(torch.bfloat16, reps=3))
        for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            trained, seconds, width[v] = run_variant(case, v, case.steps)
            times[v] += seconds
            totals[v].append(sum(seconds))
            nets.setdefault(v, trained)
    flops = step_flops(case.config)                   # one network, one step
    res = {"case": case.name, "steps": case.steps, "seeds": case.seeds, "gflop_per_step": flops / 1e9,
           "config": case.config.to_dict(), "variants": {},
           "near_peaks": {k: max(v) for k, v in near.items()}}
    ref = verdict_scores(nets["plain"], panel)
    for v in VARIANTS:
        step = statistics.median(times[v])                        # seconds per (grouped) step
        scores = verdict_scores(nets[v], panel)
        res["variants"][v] = {
            "step_seconds": times[v], "total_seconds": totals[v], "steps_per_s": width[v] / step,
            "gflops": flops * width[v] / step / 1e9,
            "noise": statistics.pstdev(times[v]) / statistics.mean(times[v]),
            "corr": scores,
            "max_corr_diff": max(abs(a - b) for s, r in zip(scores, ref) for a, b in zip(s, r)),
        }
    return res


# --- where a step's time goes --------------------------------------------------------------------

PROFILE_KINDS = {                  # torch operator -> what it is, for the profile of one step
    "aten::mkldnn_convolution": "convolutions, forward",
    "aten::convolution_backward": "convolutions, backward (input and weight gradients)",
    "aten::copy_": "dtype conversions (bfloat16, float32) and copies",
    "aten::_to_copy": "dtype conversions (bfloat16, float32) and copies",
    "aten::clone": "dtype conversions (bfloat16, float32) and copies",
    "aten::_fused_adam_": "optimizer (fused Adam)",
    "aten::clamp_min": "ReLU, bias, loss (element-wise)",
    "aten::threshold_backward": "ReLU, bias, loss (element-wise)",
    "aten::add_": "ReLU, bias, loss (element-wise)",
    "aten::sub": "ReLU, bias, loss (element-wise)",
    "aten::pow": "ReLU, bias, loss (element-wise)",
    "aten::mul": "ReLU, bias, loss (element-wise)",
    "aten::mse_loss": "ReLU, bias, loss (element-wise)",
    "aten::mse_loss_backward": "ReLU, bias, loss (element-wise)",
    "aten::sum": "ReLU, bias, loss (element-wise)",
}


def profile_step(c: il.RunConfig, precision: str, steps: int = 4) -> dict:
    """The engine's training step under torch.profiler: seconds per step in each kind of work
    (operators' self time on the calling thread, which waits for their worker threads), and the
    GFLOP/s of the convolutions themselves."""
    from torch.profiler import ProfilerActivity, profile

    net = il.build_model(c, torch.Generator().manual_seed(0))
    x = training_set(c)
    kw = dict(optimizer=c.optimizer, lr=c.lr, precision=precision, progress=False)
    train(net, x, x, steps=2, **kw)                                   # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        train(net, x, x, steps=steps, **kw)
        wall = (time.perf_counter() - t) / steps
    kinds: dict = {}
    for e in prof.key_averages():
        kind = PROFILE_KINDS.get(e.key, "everything else (framework, autograd, allocation)")
        kinds[kind] = kinds.get(kind, 0.0) + e.self_cpu_time_total / 1e6 / steps
    total = sum(kinds.values())
    flops = step_flops(c)
    fwd = sum(forward_flops(c))
    return {"config": c.to_dict(), "precision": precision, "steps": steps, "wall_step": wall,
            "profiled_step": total, "kinds": kinds,
            "conv_forward_gflops": fwd / kinds["convolutions, forward"] / 1e9,
            "conv_backward_gflops": (flops - fwd) / kinds["convolutions, backward (input and weight gradients)"] / 1e9}


# --- levers, one at a time --------------------------------------------------------------------------

def lever_step(c: il.RunConfig, lever: str, G: int = 1):
    """One training step with exactly one set of levers, for the lever table."""
    gens = [torch.Generator().manual_seed(s) for s in range(G)]
    nets = [il.build_model(c.replace(seed=s), g) for s, g in zip(range(G), gens)]
    x = training_set(c)
    if lever.startswith("group"):
        net, xb = engine.stack(nets), x.unsqueeze(0)
        loss_fn = lambda out: (out.float() - xb).square().flatten(1).mean(1).sum()
    else:
        net, xb = nets[0], x
        loss_fn = lambda out: F.mse_loss(out.float(), xb)
    if "channels_last" in lever:
        net, xb = net.to(memory_format=torch.channels_last), xb.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=c.lr, fused="fused" in lever)
    precision = "bf16" if "bf16" in lever else "float32"

    def step():
        with autocast(precision):
            out = net(xb)
        loss = loss_fn(out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if "item" not in lever:                  # "without loss.item()": no host read per step
            loss.item()
    return torch.compile(step) if "compile" in lever else step


LEVERS = ("plain", "without loss.item()", "fused Adam", "bf16", "bf16 + fused Adam",
          "channels_last + fused Adam", "group of 4 + fused Adam", "group of 4 + bf16 + fused Adam")


def bench_levers(configs: dict, steps: int, rounds: int, compile_: bool = False) -> dict:
    """Speed-up of each lever over the plain loop, per member-step (best of ``rounds``)."""
    out = {}
    levers = LEVERS + (("compile + fused Adam",) if compile_ else ())
    for name, c in configs.items():
        times = {}
        for lever in levers:
            G = 4 if lever.startswith("group") else 1
            step = lever_step(c, lever, G)
            t = time.perf_counter()
            for _ in range(2):
                step()
            if "compile" in lever:
                out.setdefault("compile seconds", {})[name] = time.perf_counter() - t
            best = min(_timed(lambda: [step() for _ in range(steps)]) for _ in range(rounds))
            times[lever] = best / steps / G                      # seconds per member-step
        out[name] = {lever: times["plain"] / t for lever, t in times.items()}
    threads = torch.get_num_threads()
    c = configs[next(iter(configs))]
    step = lever_step(c, "bf16 + fused Adam")
    t_n = {}
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        step()
        t_n[n] = min(_timed(lambda: [step() for _ in range(steps)]) for _ in range(rounds))
    torch.set_num_threads(threads)
    out["threads"] = {f"{n} thread(s)": t_n[min(t_n)] / t for n, t in t_n.items()}
    return out


# --- report -----------------------------------------------------------------------------------------

def report(results: list, peaks: dict, levers: dict, meta: dict, rounds: int) -> str:
    configs = [k for k in levers if k not in ("threads", "compile seconds")]
    peak = {"plain": peaks["float32"], "engine fp32": peaks["float32"], "engine bf16": peaks["bf16"]}
    lines = [f"Machine: {meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}; "
             f"run {meta['date']}, {meta['minutes']:.1f} min; load average at start {meta['load']}.", "",
             f"Peak of a 2048 x 2048 `torch.mm` (best of 6, at start / at end): float32 "
             f"{peaks['float32_runs'][0]:.0f} / {peaks['float32_runs'][1]:.0f} GFLOP/s, bfloat16 "
             f"{peaks['bf16_runs'][0]:.0f} / {peaks['bf16_runs'][1]:.0f} GFLOP/s; the larger is used.", "",
             "| case | GFLOP/step | steps × seeds × rounds | (a) plain fp32 steps/s | (b) engine fp32 steps/s | (b)/(a) "
             "| (c) engine bf16 steps/s | (c)/(a) | GFLOP/s (a) / (b) / (c) | % of peak (a) / (b) / (c) "
             "| max \\|Δ corr\\| (b), (c) vs (a) | noise (a) |",
             "|" + "---|" * 12]
    for r in results:
        v = r["variants"]
        a, b, c = (v[k] for k in VARIANTS)
        pct = " / ".join(f"{100 * v[k]['gflops'] / peak[k]:.0f}" for k in VARIANTS)
        lines.append(
            f"| {r['case']} | {r['gflop_per_step']:.2f} | {r['steps']} × {r['seeds']} × {rounds} | {a['steps_per_s']:.2f} | "
            f"{b['steps_per_s']:.2f} | **{b['steps_per_s'] / a['steps_per_s']:.2f}×** | {c['steps_per_s']:.2f} | "
            f"**{c['steps_per_s'] / a['steps_per_s']:.2f}×** | "
            f"{a['gflops']:.0f} / {b['gflops']:.0f} / {c['gflops']:.0f} | {pct} | "
            f"{b['max_corr_diff']:.4f}, {c['max_corr_diff']:.4f} | {100 * a['noise']:.0f}% |")
    lines += ["", "Steps/s counts member-steps (one network, one step), from the median step. "
              "Speed-ups of single levers (plain loop time / lever time per member-step):", "",
              "| lever | " + " | ".join(configs) + " |", "|---|" + "---|" * len(configs)]
    for lever in list(levers[configs[0]])[1:]:
        lines.append(f"| {lever} | " + " | ".join(f"{levers[k][lever]:.2f}×" for k in configs) + " |")
    lines += ["", "Threads (bf16 + fused Adam, first lever config): " +
              ", ".join(f"{k}: {v:.2f}×" for k, v in levers["threads"].items()) + " (relative to 1 thread)."]
    if "compile seconds" in levers:
        lines.append("torch.compile, time to compile (first two steps): " + ", ".join(
            f"{k} {v:.0f} s" for k, v in levers["compile seconds"].items()) + ".")
    return "\n".join(lines) + "\n"


def plot(results: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r["case"] for r in results]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    y = np.arange(len(names))
    for i, (v, color) in enumerate(zip(VARIANTS, ("0.6", "tab:blue", "tab:orange"))):
        speed = [r["variants"][v]["steps_per_s"] / r["variants"]["plain"]["steps_per_s"] for r in results]
        bars = ax.barh(y + (i - 1) * 0.27, speed, height=0.27, color=color, label=v)
        ax.bar_label(bars, [f"{s:.2f}×" for s in speed], fontsize=7, padding=2)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1, color="k", lw=0.8)
    ax.set_xlabel("training speed relative to the plain float32 loop (same steps, same machine, same run)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few steps and one round (a smoke test)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each variant; the best counts")
    ap.add_argument("--threads", type=int, help="torch threads (default $IDENTLIB_THREADS, else 2)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (minutes)")
    args = ap.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    setup = il.setup(args.threads)

    t0 = time.time()
    meta = {"cpu": _cpu(), "threads": setup["threads"], "torch": setup["torch"],
            "date": time.strftime("%Y-%m-%d %H:%M"), "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}
    peaks = {"float32_runs": [mm_peak(torch.float32)], "bf16_runs": [mm_peak(torch.bfloat16)]}
    panel = il.test_panel()
    results = []
    for case in cases(args.quick):
        res = bench_case(case, rounds, panel)
        results.append(res)
        v = res["variants"]
        print(f"{case.name}: " + ", ".join(f"{k} {v[k]['steps_per_s']:.2f} steps/s" for k in VARIANTS), flush=True)
    lever_configs = {
        "CNN depth 20, 128 ch": il.RunConfig(model="cnn", depth=20, activation="relu", optimizer="adam", lr=1e-4),
        "CNN depth 20, 32 ch": il.RunConfig(model="cnn", depth=20, channels=32, activation="relu", optimizer="adam", lr=1e-4),
        "FCN depth 6, width 784": il.RunConfig(model="fcn", depth=6, activation="relu", optimizer="adam", lr=1e-4),
        "FCN depth 6, width 64": il.RunConfig(model="fcn", depth=6, width=64, activation="relu", optimizer="adam", lr=1e-4),
    }
    if args.quick:
        lever_configs = dict(list(lever_configs.items())[1:])
    levers = bench_levers(lever_configs, 2 if args.quick else 6, rounds, args.compile)
    deep = next(case.config for case in cases(args.quick) if case.name == "CNN depth 20, 128 ch")
    profiles = {p: profile_step(deep, p, 2 if args.quick else 4) for p in ("float32", "bf16")}
    peaks["float32_runs"].append(mm_peak(torch.float32))
    peaks["bf16_runs"].append(mm_peak(torch.bfloat16))
    peaks["float32"], peaks["bf16"] = max(peaks["float32_runs"]), max(peaks["bf16_runs"])
    meta["minutes"] = (time.time() - t0) / 60
    OUT.mkdir(exist_ok=True)
    text = report(results, peaks, levers, meta, rounds) + "\n" + estimate(results) + "\n"
    (OUT / "bench.md").write_text(text)
    (OUT / "bench.json").write_text(json.dumps({"meta": meta, "peaks": peaks, "results": results,
                                                "levers": levers, "profiles": profiles}, indent=1))
    plot(results, OUT / "bench.png")
    print(text)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
                return f"{line.split(':', 1)[1].strip()} ({', '.join(isa)})"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# --- paper-scale estimate ---------------------------------------------------------------------------

FIG3_DEPTHS = (1, 3, 5, 7, 9, 11, 12, 14, 15, 16, 18, 19, 20)


def estimate(results: list, seeds: int = 3, steps: int = 3000) -> str:
    """Fig. 3 at paper scale from the measured per-step times: a step's time is linear in the
    number of 128 -> 128 hidden layers (fitted through depths 5 and 20), plus the 1024-channel
    5-layer point measured directly."""
    by = {r["case"]: r["variants"] for r in results}
    d5, d20, big = by["CNN depth 5, 128 ch"], by["CNN depth 20, 128 ch"], by["CNN depth 5, 1024 ch"]
    lines = [f"Paper scale (Fig. 3: depths {', '.join(map(str, FIG3_DEPTHS))} at 128 channels and the "
             f"5-layer 1024-channel point; {seeds} seeds x {steps} steps each, no early stop):", "",
             "| variant | s/step per hidden 128-ch layer | 13 depths × 128 ch | 1024 ch, depth 5 | total |",
             "|---|---|---|---|---|"]
    hidden = sum(max(0, d - 2) for d in FIG3_DEPTHS)            # 128 -> 128 layers over the 13 depths
    for v in VARIANTS:
        t5, t20 = 1 / d5[v]["steps_per_s"], 1 / d20[v]["steps_per_s"]
        per_layer = (t20 - t5) / 15
        base = t5 - 3 * per_layer                               # first and last layer, overheads
        depths_s = sum(base + max(0, d - 2) * per_layer for d in FIG3_DEPTHS) * seeds * steps
        big_s = seeds * steps / big[v]["steps_per_s"]
        lines.append(f"| {v} | {per_layer * 1e3:.1f} ms | {depths_s / 3600:.1f} h | {big_s / 3600:.1f} h | "
                     f"**{(depths_s + big_s) / 3600:.1f} h** |")
    lines.append(f"\n({hidden} hidden 128-channel layers over the 13 depths.)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
