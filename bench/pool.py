"""What a chapter pays around training: starting its training workers, and loading its networks.

    python bench/pool.py              # about a minute on a 2-core CPU

Two measurements, each against the way identlib did it before, in the same run:

- ``workers``: a chapter that trains in many small calls of ``run_all`` (the phase diagram's
  depth searches, a sweep and then its scores). ``ROUNDS`` calls, each training four small CNNs
  (two jobs) into an empty results cache with two workers, once with a new pool of workers per
  call (:func:`identlib.experiments.shutdown_pool` after each) and once with the pool kept
  (:func:`identlib.experiments.worker_pool`), alternating, ``REPEATS`` times each. The CPU time is
  that of the worker processes (counted when they end), the wall time that of the calls.
- ``loading``: a stored network built as :func:`identlib.models.build_model` builds it (every weight
  drawn, twice) and its weights then copied in, against :func:`identlib.experiments.load_model`,
  which builds it on the meta device and takes the stored tensors; the median of ``LOADS``.

Writes ``book/data/runtime/pool.json``, which the Runtime chapter reads.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

import identlib as il
from identlib import experiments, runtime
from identlib.models import build_model

OUT = Path(__file__).resolve().parents[1] / "book" / "data" / "runtime" / "pool.json"
ROUNDS, REPEATS, LOADS = 8, 2, 5
LOADED = {"FCN depth 8, width 2048": il.RunConfig(model="fcn", depth=8, width=2048, activation="relu"),
          "FCN depth 3, width 784": il.RunConfig(model="fcn", depth=3, width=784, activation="relu"),
          "CNN depth 20, 16 ch": il.RunConfig(model="cnn", depth=20, channels=16, bias=True)}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def rounds(keep: bool, offset: int) -> dict:
    """``ROUNDS`` calls of run_all, each of four new small CNNs, with the pool kept or not."""
    experiments.shutdown_pool()
    os.environ["IDENTLIB_CACHE_DIR"] = tempfile.mkdtemp(prefix="identlib-pool-")
    cpu, wall = _children_cpu(), time.perf_counter()
    for i in range(ROUNDS):
        configs = [il.RunConfig(model="cnn", depth=4, channels=4, steps=20, kernel_size=k,
                                seed=1000 * offset + 10 * i + s) for s in range(2) for k in (3, 5)]
        experiments.run_all(configs, workers=2)
        if not keep:
            experiments.shutdown_pool()
    wall = time.perf_counter() - wall
    experiments.shutdown_pool()                      # the kept workers' CPU is counted as they end
    return {"wall_s": wall / ROUNDS, "cpu_s": (_children_cpu() - cpu) / ROUNDS}


def loading(config: il.RunConfig) -> dict:
    state = {k: v.clone() for k, v in build_model(config).state_dict().items()}

    def drawn():
        net = build_model(config)
        net.load_state_dict(state)
        return net

    out = {}
    for name, load in (("drawn", drawn), ("meta", lambda: experiments.load_model(config, state, copy=False))):
        times = []
        for _ in range(LOADS):
            t = time.perf_counter()
            load()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return out


def main() -> None:
    os.environ.setdefault("IDENTLIB_PROGRESS", "0")
    torch.set_num_threads(1)
    meta = {**runtime.platform(), "threads": 1, "date": time.strftime("%Y-%m-%d %H:%M"),
            "rounds": ROUNDS, "repeats": REPEATS, "loads": LOADS, "load_start": os.getloadavg()[0]}
    fresh, kept = [], []
    for r in range(REPEATS):
        fresh.append(rounds(False, 2 * r))
        kept.append(rounds(True, 2 * r + 1))
    workers = {name: {k: statistics.median(x[k] for x in runs) for k in ("wall_s", "cpu_s")}
               for name, runs in (("new pool per call", fresh), ("pool kept", kept))}
    loads = {name: loading(c) for name, c in LOADED.items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"meta": meta, "workers": workers, "loading": loads}, indent=1) + "\n")
    print(json.dumps({"workers": workers, "loading": loads}, indent=1), f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
