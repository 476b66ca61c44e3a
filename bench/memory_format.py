"""Channels-last against contiguous activations in the grouped CNN: the ratio of step times.

    python bench/memory_format.py                 # about 3 minutes on one core
    python bench/memory_format.py --steps 20 --rounds 1 --out /tmp/layout.json   # a smoke run

Each case is a group of six networks of one width and kernel size, three of depth 20 and three of
depth 12 (the shape of a depth search's round in the phase chapter), trained with the deep-CNN
chapter's recipe from the same initial weights in both layouts, which alternate ``--rounds``
times in one run on one thread. The estimate is the median step of each layout (the one least
disturbed by other jobs), and the ratio is contiguous over channels-last: above 1, channels-last
is faster. :data:`identlib.engine.CHANNELS_LAST_MAX` is set from this table. Writes
``book/data/runtime/layout.json``, which the Runtime chapter reads.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from identlib import engine
from identlib.models import CNN
from identlib.runtime import platform

OUT = Path(__file__).resolve().parents[1] / "book" / "data" / "runtime" / "layout.json"

CASES = [(c, k) for c in (4, 8, 16) for k in (3, 5, 7)]
DEPTHS = [20, 20, 20, 12, 12, 12]


def median_step(nets, layout: bool, steps: int) -> float:
    """Median seconds per step of one grouped run of ``nets`` in one layout."""
    stamps = [time.perf_counter()]
    widest = engine.CHANNELS_LAST_MAX
    engine.CHANNELS_LAST_MAX = 10 ** 6 if layout else 0     # read when the group is built
    try:
        x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        engine.fit_group(nets, x, x, generators=[None] * len(nets), optimizer="gd", lr=0.01,
                         momentum=0.9, steps=steps, progress=False,
                         callback=lambda *_: stamps.append(time.perf_counter()))
    finally:
        engine.CHANNELS_LAST_MAX = widest
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="steps per timed run")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each layout, alternating")
    ap.add_argument("--out", type=Path, default=OUT, help=f"JSON file to write (default {OUT})")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    meta = {**platform(), "threads": 1, "date": time.strftime("%Y-%m-%d %H:%M"), "steps": args.steps,
            "rounds": args.rounds, "depths": DEPTHS, "channels_last_max": engine.CHANNELS_LAST_MAX}
    cases = []
    print(f"{'channels':>8} {'kernel':>6} {'contiguous ms':>14} {'channels-last ms':>17} {'ratio':>6}")
    for channels, k in CASES:
        torch.manual_seed(0)
        nets = [CNN(d, channels=channels, kernel_size=k, bias=True) for d in DEPTHS]
        times = {False: [], True: []}
        for _ in range(args.rounds):
            for layout in (False, True):
                times[layout].append(median_step(nets, layout, args.steps))
        plain, last = (statistics.median(times[v]) for v in (False, True))
        cases.append({"channels": channels, "kernel_size": k, "contiguous_s": plain, "channels_last_s": last})
        print(f"{channels:>8} {k:>6} {plain * 1e3:>14.2f} {last * 1e3:>17.2f} {plain / last:>6.2f}")
    args.out.write_text(json.dumps({"meta": meta, "cases": cases}, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
