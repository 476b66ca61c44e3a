"""Worker processes: a sweep of small deep CNNs trained in one process with two threads, in one
process with one thread (``run_all(configs)``), and in two one-thread worker processes
(``run_all(configs, workers=2)``).

    make bench-workers                     # about 5 minutes on a 2-core CPU
    python bench/workers.py --steps 100    # a smoke run

The sweep is the deep-CNN chapter's kind of work: 16-channel 5×5 ReLU CNNs of several depths, the
book's recipe (gradient descent with momentum 0.9, lr 0.01, biases, PyTorch's default init), each
config trained from scratch into an empty results cache. Each variant runs once per round, the
rounds in alternating order; the wall time of the whole sweep counts (the quantity a reader waits
for), and the best round is reported. Checks that the worker processes' networks are bit for bit
those of one-thread training in this process. The results cache always trains on one thread (a
cached network must not depend on the thread count), so the two-thread variant trains each config
the same way with that rule switched off, without the cache.

Writes bench/out/workers.md and bench/out/workers.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

import identlib as il
from identlib import experiments

OUT = Path(__file__).resolve().parent / "out"
VARIANTS = {"1 process, 2 threads": (2, 0), "1 process, 1 thread": (1, 0), "2 worker processes, 1 thread each": (1, 2)}


def sweep_configs(steps: int, depths) -> list[il.RunConfig]:
    base = il.RunConfig(model="cnn", channels=16, kernel_size=5, activation="relu", bias=True, init="default",
                        optimizer="gd", momentum=0.9, lr=0.01, loss_reduction="mean", steps=steps)
    return [base.replace(depth=d) for d in depths]


def two_threads(configs) -> list:
    """Each config trained as :func:`identlib.run` trains it, but on two threads (not cached):
    ``experiments._train`` with its one-thread rule switched off."""
    torch.set_num_threads(2)
    with mock.patch.object(experiments, "one_thread", contextlib.nullcontext):
        return [experiments._train(c, False)[0]["state_dict"] for c in configs]


def timed_sweep(configs, threads: int, workers: int) -> tuple[float, list]:
    if threads == 2:
        t = time.perf_counter()
        states = two_threads(configs)
        return time.perf_counter() - t, states
    with tempfile.TemporaryDirectory() as cache:
        os.environ["IDENTLIB_CACHE_DIR"] = cache
        torch.set_num_threads(threads)
        t = time.perf_counter()
        runs = experiments.run_all(configs, workers=workers)
        wall = time.perf_counter() - t
        states = [{k: v.clone() for k, v in r.model.state_dict().items()} for r in runs]
    return wall, states


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--depths", default="5,10,15,20")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args(argv)
    configs = sweep_configs(a.steps, [int(d) for d in a.depths.split(",")])
    il.training_image(15), il.test_panel()                 # data loaded before any timing
    timed_sweep(sweep_configs(5, [2]), 1, 0)              # and the kernels warmed up
    load = os.getloadavg()
    times = {k: [] for k in VARIANTS}
    states = {}
    for r in range(a.rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            wall, states[name] = timed_sweep(configs, *VARIANTS[name])
            times[name].append(wall)
            print(f"round {r}: {name}: {wall:.1f} s", flush=True)
    same = all(torch.equal(x[k], y[k]) for x, y in zip(states["1 process, 1 thread"],
                                                        states["2 worker processes, 1 thread each"]) for k in x)
    ref = min(times["1 process, 2 threads"])
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_start": load, "load_end": os.getloadavg(),
              "steps": a.steps, "depths": a.depths, "rounds": a.rounds, "best_seconds": {k: min(v) for k, v in times.items()},
              "all_seconds": times, "speedup_vs_2_threads": {k: ref / min(v) for k, v in times.items()},
              "workers_equal_one_thread": same, "cpus": os.cpu_count(), "torch": torch.__version__}
    lines = [f"Sweep of {len(configs)} CNNs (16 channels, depths {a.depths}, {a.steps} steps each, the book's deep-CNN "
             f"recipe), each from an empty cache; best of {a.rounds} rounds, wall time; run of {result['date']}, "
             f"{result['cpus']} CPUs, load average {load[0]:.1f} at the start and {result['load_end'][0]:.1f} at the end.",
             "", "| variant | sweep wall time | speed-up vs 1 process, 2 threads |", "|---|---|---|"]
    lines += [f"| {k} | {result['best_seconds'][k]:.1f} s | **{result['speedup_vs_2_threads'][k]:.2f}×** |" for k in VARIANTS]
    lines += ["", f"Networks from the worker processes are bit for bit those of one-thread training in one process: "
              f"{'yes' if same else 'NO'}."]
    OUT.mkdir(exist_ok=True)
    (OUT / "workers.json").write_text(json.dumps(result, indent=1))
    (OUT / "workers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
