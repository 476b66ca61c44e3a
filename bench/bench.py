"""Training speed: every way identlib can train a network, against the plain PyTorch loop.

    make bench                               # about 15 minutes on a 2-core CPU
    python bench/bench.py --quick            # a smoke run: few steps, one round
    python bench/bench.py --only "CNN depth 20, 128 ch"
    python bench/bench.py --jobs-from .cache/identlib --no-cases   # only the book's CNNs

One table of cases (``CASES``): each is a run config, a number of steps and the variants to time.
Every variant trains the case's networks from the same initial weights (each seed's, drawn as
``identlib.train.fit`` draws them) for the same steps, in the same run as the plain loop of
:mod:`identlib.reference`:

- ``plain``: the float32 loop a reader would write (unfused optimizer, ``loss.item()`` every step);
- ``engine fp32`` / ``engine bf16``: :func:`identlib.train.fit`, the path of every cached network
  (fused optimizer), in float32 or with bfloat16 autocast;
- ``grouped fp32`` / ``grouped bf16``: :func:`identlib.engine.fit_configs`, every seed of the case
  in one grouped network.

Each step is timed (the median step is the estimate least disturbed by other jobs), and so are the
wall and CPU time of the whole run, all on one thread, as every cached network is trained. The
arithmetic of a step is counted analytically, and this machine's peak is that of a large
``torch.mm`` in the same precision, measured at the start and the end, as is its memory bandwidth
(:func:`stream_bandwidth`), the limit of an FCN's step at batch 1, whose weights are read from
memory and used once each (:func:`hand_step_bytes`). After training, each
variant's networks are scored on the test panel against the plain loop's. A ``trained`` case
trains to the config's full number of steps, so that those scores compare verdicts.

``--jobs-from CACHE`` (``make bench`` passes the book's results cache) measures the cached path's
grouping on the book's own CNNs, the configs of that cache: each trained for 1/``JOB_FRACTION``
of its steps, alone and then as the jobs that :func:`identlib.experiments.training_jobs` makes of
them for two workers, in CPU time, job by job. Writes ``book/data/runtime/bench.json``, which the
Runtime chapter reads.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import identlib as il
from identlib import engine
from identlib.reference import plain_loop
from identlib.train import fit

OUT = Path(__file__).resolve().parents[1] / "book" / "data" / "runtime" / "bench.json"

STEP_VARIANTS = ("plain", "engine fp32", "engine bf16")
GROUP_VARIANTS = STEP_VARIANTS + ("grouped fp32", "grouped bf16")


@dataclass(frozen=True)
class Case:
    name: str
    config: il.RunConfig
    steps: int                       # timed steps (a trained case: the config's own steps)
    seeds: int = 1
    variants: tuple = STEP_VARIANTS
    trained: bool = False            # trained to the end, so that the verdicts can be compared


ADAM_CNN = il.RunConfig(model="cnn", activation="relu", channels=128, kernel_size=5, optimizer="adam",
                        lr=1e-4)
ADAM_FCN = il.RunConfig(model="fcn", activation="relu", depth=6, width=784, optimizer="adam", lr=1e-4)
# The FCN chapters' recipe (one image, full-batch gradient descent on the summed error), which
# identlib.train.fcn_gd_step steps by hand, at the nonlinear chapter's widest and deepest default.
GD_FCN = il.RunConfig(model="fcn", activation="relu", depth=8, width=2048, optimizer="gd", lr=3e-4,
                      loss_reduction="sum")
# The deep-CNN chapter's recipe, the one that memorizes at depth 20.
RECIPE = il.RunConfig(model="cnn", depth=20, channels=16, kernel_size=5, activation="relu", bias=True,
                      init="default", optimizer="gd", momentum=0.9, lr=0.01, steps=4000)

CASES = (
    Case("CNN depth 5, 128 ch", ADAM_CNN.replace(depth=5), 30),
    Case("CNN depth 20, 128 ch", ADAM_CNN.replace(depth=20), 20),
    Case("CNN depth 5, 1024 ch", ADAM_CNN.replace(depth=5, channels=1024), 3),
    Case("FCN depth 6, width 784", ADAM_FCN, 200),
    Case("FCN 60k, batch 100", ADAM_FCN.replace(n_train=60000, batch_size=100, lr=1e-3), 600),
    Case("FCN depth 8, width 2048, GD", GD_FCN, 60),
    Case("recipe, depth 20, 16 ch, 4 seeds", RECIPE, 40, seeds=4, variants=GROUP_VARIANTS),
    Case("recipe, depth 20, 16 ch, trained", RECIPE, RECIPE.steps, seeds=2, variants=GROUP_VARIANTS,
         trained=True),
)


# --- arithmetic and peak ----------------------------------------------------------------------------

def forward_flops(c: il.RunConfig) -> list[float]:
    """Arithmetic of each layer's forward pass over one batch (2 FLOP per multiply-add)."""
    batch = c.batch_size or c.n_train
    sizes = il.models.layer_sizes(c)
    per_output = 28 * 28 * c.kernel_size ** 2 if c.model == "cnn" else 1
    return [2 * batch * per_output * a * b for a, b in zip(sizes, sizes[1:])]


def step_flops(c: il.RunConfig) -> float:
    """One training step: forward, weight gradient, and input gradient for every layer but the
    first (the input needs none)."""
    per_pass = forward_flops(c)
    return 3 * sum(per_pass) - per_pass[0]


def weight_bytes(c: il.RunConfig) -> list[int]:
    """Bytes of each layer's weights (float32)."""
    sizes = il.models.layer_sizes(c)
    per_output = c.kernel_size ** 2 if c.model == "cnn" else 1
    return [4 * per_output * a * b for a, b in zip(sizes, sizes[1:])]


def hand_step_bytes(c: il.RunConfig) -> int:
    """Weight bytes that one step of :func:`identlib.train.fcn_gd_step` moves through memory: every
    layer's weights read by the forward pass, read again for the input gradient (all but the first
    layer), then read and written by the in-place update. At batch 1 the activations are a few
    kilobytes, so this is a step's memory traffic."""
    w = weight_bytes(c)
    return 4 * sum(w) - w[0]


def stream_bandwidth(n: int = 2 ** 26, reps: int = 5) -> float:
    """GB/s of the best of ``reps`` in-place ``a += 0.5 * b`` over two float32 arrays of ``n``
    (256 MB each; two reads and a write per element): the memory bandwidth one thread reaches
    with the access pattern of a weight update."""
    a, b = torch.rand(n), torch.rand(n)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a.add_(b, alpha=0.5)
        best = min(best, time.perf_counter() - t)
    return 3 * 4 * n / best / 1e9


def mm_peak(dtype: torch.dtype, n: int = 2048, reps: int = 6) -> float:
    """GFLOP/s of the best of ``reps`` (n x n) @ (n x n) products."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


# --- the variants -----------------------------------------------------------------------------------

class Clock:
    """A time stamp after every training step; a step runs from one stamp to the next."""

    def __init__(self):
        self.stamps = [time.perf_counter()]

    def tick(self, *_):
        self.stamps.append(time.perf_counter())

    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


def run_variant(case: Case, variant: str, steps: int) -> dict:
    """Train the case's networks (one per seed) with one variant, each drawn from its seed as
    :func:`identlib.train.fit` draws it; the trained networks and the times."""
    precision = "bf16" if variant.endswith("bf16") else "float32"
    configs = [case.config.replace(seed=s, steps=steps, precision=precision) for s in range(case.seeds)]
    clocks, nets, results = [], [], []
    wall, cpu = time.perf_counter(), time.process_time()
    if variant == "plain":
        for c in configs:
            gen = torch.Generator().manual_seed(c.seed)           # draws the weights, then the batches
            nets.append(il.build_model(c, gen))
            x = il.experiments.training_set(c)
            clocks.append(Clock())
            losses = plain_loop(nets[-1], x, c, generator=gen, on_step=clocks[-1].tick)
            results.append((len(losses), losses[-1]))
    elif variant.startswith("engine"):                          # the path of every cached network
        for c in configs:
            clocks.append(Clock())
            net, r, _ = fit(c, progress=False, callback=clocks[-1].tick)
            nets.append(net)
            results.append((r.steps, float(r.loss[-1])))
    else:
        clocks.append(Clock())
        for c, (payload, _) in zip(configs, engine.fit_configs(configs, progress=False,
                                                              callback=clocks[-1].tick)):
            nets.append(il.build_model(c))
            nets[-1].load_state_dict(payload["state_dict"])
            results.append((len(payload["loss"]), float(payload["loss"][-1])))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"nets": nets, "step_seconds": [t for clock in clocks for t in clock.steps()],
            "wall": wall, "cpu": cpu, "members_per_step": len(configs) if variant.startswith("grouped") else 1,
            "steps_taken": [s for s, _ in results], "final_loss": [loss for _, loss in results]}


def verdict_scores(nets, panel) -> list[list[float]]:
    """Per network: mean correlation to identity and to constant over the panel's test inputs."""
    out = []
    for net in nets:
        s = il.scores(il.predict(net, panel.images[1:]), panel.images[1:], panel.images[0])
        out.append([round(float(s["corr_identity"].mean()), 4), round(float(s["corr_constant"].mean()), 4)])
    return out


def bench_case(case: Case, rounds: int, panel) -> dict:
    """Every variant of one case, ``rounds`` times in alternating order (a trained case: once)."""
    warm = min(3, case.steps)
    for v in case.variants:                       # warm-up: allocator, oneDNN primitives
        run_variant(case, v, warm)
    rounds = 1 if case.trained else rounds
    runs = {v: [] for v in case.variants}
    for r in range(rounds):
        for v in (case.variants if r % 2 == 0 else case.variants[::-1]):
            runs[v].append(run_variant(case, v, case.steps))
    flops = step_flops(case.config)
    ref = verdict_scores(runs["plain"][0]["nets"], panel)
    out = {"name": case.name, "config": case.config.to_dict(), "steps": case.steps, "seeds": case.seeds,
           "trained": case.trained, "rounds": rounds, "gflop_per_step": flops / 1e9,
           "variants": {}}
    if case.config.model == "fcn" and case.config.optimizer == "gd":
        out["hand_step_gb"] = hand_step_bytes(case.config) / 1e9
    for v, vruns in runs.items():
        seconds = [t for run in vruns for t in run["step_seconds"]]
        median = statistics.median(seconds)
        width = vruns[0]["members_per_step"]
        corr = verdict_scores(vruns[0]["nets"], panel)
        out["variants"][v] = {
            "step_seconds": median / width,                     # per network and step
            "gflops": flops * width / median / 1e9,
            "noise": statistics.pstdev(seconds) / statistics.mean(seconds),
            "wall_seconds": min(run["wall"] for run in vruns),
            "cpu_seconds": min(run["cpu"] for run in vruns),
            "steps_taken": vruns[0]["steps_taken"], "final_loss": vruns[0]["final_loss"],
            "corr": corr,
            "max_corr_diff": max(abs(a - b) for s, q in zip(corr, ref) for a, b in zip(s, q)),
        }
    return out


# --- where a step's time goes -----------------------------------------------------------------------

KINDS = {                          # torch operator -> the kind of work it does
    "aten::mkldnn_convolution": "convolutions, forward",
    "aten::convolution_backward": "convolutions, backward",
    "aten::_fused_adam_": "optimizer",
    "aten::copy_": "dtype conversions and copies", "aten::_to_copy": "dtype conversions and copies",
    "aten::clone": "dtype conversions and copies",
}
ELEMENTWISE = ("clamp_min", "threshold_backward", "add_", "sub", "pow", "mul", "mse_loss", "sum")


def profile_step(c: il.RunConfig, precision: str, steps: int = 4) -> dict:
    """Milliseconds per engine step in each kind of work, under torch.profiler (operators' own
    time, so that the kinds add up to the step), after two steps that are not counted."""
    from torch.profiler import ProfilerActivity, profile, schedule

    with profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=1, warmup=1, active=steps)) as prof:
        fit(c.replace(steps=steps + 2, precision=precision), progress=False, callback=lambda *_: prof.step())
    kinds: dict = {}
    for e in prof.key_averages():
        op = e.key.removeprefix("aten::")
        kind = KINDS.get(e.key, "element-wise (ReLU, bias, loss)" if op in ELEMENTWISE else "everything else")
        kinds[kind] = kinds.get(kind, 0.0) + e.self_cpu_time_total / 1e3 / steps
    return {"precision": precision, "steps": steps, "ms": kinds}


# --- the run ----------------------------------------------------------------------------------------

def quick(case: Case) -> Case:
    """The case cut short, for a smoke run."""
    if case.trained:
        return dataclasses.replace(case, config=case.config.replace(steps=100), steps=100)
    return dataclasses.replace(case, steps=max(2, case.steps // 10))


JOB_FRACTION = 40      # the book's CNNs are timed for this fraction of their steps


def book_jobs(cache: Path, fraction: int = JOB_FRACTION) -> dict:
    """The CNNs of a filled results cache, each trained for 1/``fraction`` of its steps alone and
    as the jobs of :func:`identlib.experiments.training_jobs` (two workers): CPU seconds per job,
    both ways, on one thread. A network that diverges counts the time until it does."""
    from identlib import experiments

    configs = []
    for path in sorted((cache / "results").glob("*/config.json")):
        c = il.RunConfig(**json.loads(path.read_text()))
        if c.model == "cnn":
            configs.append(c.replace(steps=max(1, c.steps // fraction)))
    rows = []
    for job in experiments.training_jobs(configs, workers=2):
        t = time.process_time()
        for c in job:
            with contextlib.suppress(il.TrainingDiverged):
                fit(c)
        alone = time.process_time() - t
        t = time.process_time()
        if len(job) > 1:
            engine.fit_configs(job, diverged="drop")
        else:
            with contextlib.suppress(il.TrainingDiverged):
                fit(job[0])
        rows.append({"size": len(job), "channels": job[0].channels, "kernel_size": job[0].kernel_size,
                     "depths": [c.depth for c in job], "optimizer": job[0].optimizer,
                     "alone_cpu_s": alone, "grouped_cpu_s": time.process_time() - t})
    return {"fraction": fraction, "networks": len(configs), "jobs": rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few steps and one round (a smoke test)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each variant (a trained case: 1)")
    ap.add_argument("--only", action="append", help="run only the named case (repeatable)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"JSON file to write (default {OUT})")
    ap.add_argument("--jobs-from", type=Path, metavar="CACHE", help="also time the CNNs of this filled "
                    "results cache alone and grouped")
    ap.add_argument("--no-cases", action="store_true", help="time no case (with --jobs-from: only the "
                    "book's CNNs; the cases recorded stay)")
    args = ap.parse_args(argv)
    if args.jobs_from is not None and not list((args.jobs_from / "results").glob("*/config.json")):
        print(f"{args.jobs_from} holds no trained networks (run make chapters first): the book's "
              "CNNs are not timed", flush=True)
        args.jobs_from = None
    cases = [] if args.no_cases else [c for c in CASES if not args.only or c.name in args.only]
    if args.only and len(cases) != len(args.only):
        ap.error(f"unknown case; the cases are: {', '.join(c.name for c in CASES)}")
    cases = [quick(c) for c in cases] if args.quick else cases
    rounds = 1 if args.quick else args.rounds
    setup = il.setup(1)                       # as every cached network is trained
    t0 = time.time()
    meta = {**il.runtime.platform(), "threads": setup["threads"], "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_start": os.getloadavg()[0], "quick": args.quick}
    peaks = {"float32": [mm_peak(torch.float32)], "bf16": [mm_peak(torch.bfloat16)],
             "stream_gbps": [stream_bandwidth()]}
    panel = il.test_panel()
    results = []
    for case in cases:
        results.append(bench_case(case, rounds, panel))
        v = results[-1]["variants"]
        print(f"{case.name}: " + ", ".join(f"{k} {1e3 * v[k]['step_seconds']:.1f} ms/step" for k in v),
              flush=True)
    jobs = None
    if args.jobs_from is not None:
        jobs = book_jobs(args.jobs_from.resolve(), 400 if args.quick else JOB_FRACTION)
        a, g = (sum(r[k] for r in jobs["jobs"]) for k in ("alone_cpu_s", "grouped_cpu_s"))
        print(f"the book's {jobs['networks']} CNNs: alone {a:.0f} s, grouped {g:.0f} s CPU", flush=True)
    deep = ADAM_CNN.replace(depth=20)
    profile = None if args.only or args.no_cases else {
        "config": deep.to_dict(), "runs": [profile_step(deep, p, 2 if args.quick else 4) for p in ("float32", "bf16")]}
    peaks["float32"].append(mm_peak(torch.float32))
    peaks["bf16"].append(mm_peak(torch.bfloat16))
    peaks["stream_gbps"].append(stream_bandwidth())
    meta.update(minutes=(time.time() - t0) / 60, load_end=os.getloadavg()[0])
    for r in results:                    # each case keeps its run's machine, load and peaks
        r["meta"], r["peaks"] = meta, peaks
    if profile:
        profile["meta"] = meta
    if jobs:
        jobs["meta"] = meta
    if (args.only or args.no_cases) and args.out.exists():  # the cases not run stay as measured
        old = json.loads(args.out.read_text())
        new = {r["name"]: r for r in results}
        results = [new.pop(o["name"], o) for o in old["cases"]] + list(new.values())
        profile = profile or old.get("profile")
        jobs = jobs or old.get("jobs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cases": results, "profile": profile, "jobs": jobs}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
