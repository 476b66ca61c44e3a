"""``torch.compile`` against the eager step, for one of the book's CNNs on one thread.

    python bench/compile_step.py                 # the deep-CNN chapter's 16-channel, 20-layer network
    python bench/compile_step.py --channels 8 --depth 12

Both variants start from the same initial weights and take the same plain PyTorch step (SGD with
momentum on the mean squared error of the training "7"), in the same run: first the compiled
variant's first step (which includes compiling), then rounds of steps that alternate between the
two, whose median step times give the ratio. It prints the ratio, the compile time, how many
steps a network must take before compiling pays, and the largest difference between the two
networks' outputs after the same steps.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from identlib.config import RunConfig
from identlib.data import training_set
from identlib.models import build_model


def stepper(model, x, lr: float, momentum: float, compiled: bool):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    forward = torch.compile(model) if compiled else model

    def step():
        opt.zero_grad(set_to_none=True)
        loss = ((forward(x) - x) ** 2).mean()
        loss.backward()
        opt.step()
    return step


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=25, help="steps per round and variant")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    c = RunConfig(model="cnn", depth=args.depth, channels=args.channels, kernel_size=5, activation="relu",
                  bias=True, init="default", optimizer="gd", momentum=0.9, lr=0.01, loss_reduction="mean",
                  seed=0, train_index=15)
    x = training_set(c)
    start = build_model(c, torch.Generator().manual_seed(c.seed))
    models = {name: copy.deepcopy(start) for name in ("eager", "compiled")}
    steps = {name: stepper(m, x, c.lr, c.momentum, name == "compiled") for name, m in models.items()}
    first = {}
    for name, step in steps.items():
        t = time.perf_counter()
        step()
        first[name] = time.perf_counter() - t
    medians = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times = []
            for _ in range(args.steps):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
            medians[name].append(statistics.median(times))
    eager, compiled = (statistics.median(medians[n]) for n in ("eager", "compiled"))
    compile_s = first["compiled"] - compiled
    with torch.no_grad():
        gap = (models["eager"](x) - models["compiled"](x)).abs().max().item()
    print(f"{c.label()}: eager step {eager * 1e3:.1f} ms, compiled {compiled * 1e3:.1f} ms, "
          f"ratio {eager / compiled:.2f}; compiling took {compile_s:.1f} s, which pays after "
          + (f"{compile_s / (eager - compiled):.0f} steps" if eager > compiled else "no number of steps")
          + f"; largest output difference after {1 + args.rounds * args.steps} steps {gap:.1e}")


if __name__ == "__main__":
    main()
