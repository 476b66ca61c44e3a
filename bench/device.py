"""The GPU path against the CPU's: a few of the book's networks trained on each device (verdict,
mean correlations on the test panel, seconds per step), then chapters executed on the GPU with
their claims checked.

    python bench/device.py                                  # on a machine with a CUDA GPU
    python bench/device.py --chapters deep_cnn layers       # and execute those chapters there
    python bench/device.py --smoke                          # tiny networks, both sides on the CPU

The CPU side loads the results cache (or trains there, one thread); the GPU side never uses the
cache. A network's verdict may differ between devices where training is chaotic, as between two
CPUs; the chapters' claims, checked over seeds, are what must hold on both, so ``--chapters``
runs each chapter on the GPU with a fresh results cache and prints its claims table. Writes
``book/data/runtime/device.json`` (``--out`` elsewhere).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import identlib as il
from identlib import runtime

ROOT = Path(__file__).resolve().parent.parent
RECIPE = il.RunConfig(model="cnn", channels=16, depth=20, activation="relu", optimizer="gd",
                      momentum=0.9, lr=0.01, loss_reduction="mean", steps=4000)
CASES = [RECIPE.replace(depth=5, seed=s) for s in (0, 1)] + [RECIPE.replace(seed=s) for s in (0, 1)]
GPU_ONLY = [RECIPE.replace(channels=128, precision=p) for p in ("float32", "bf16")]


def on(device: str, config: il.RunConfig, panel, cache: bool) -> dict:
    os.environ["IDENTLIB_DEVICE"] = device
    t = time.perf_counter()
    r = il.run(config, cache=cache)
    seconds = time.perf_counter() - t
    s = il.scores(il.predict(r.model, panel.images[1:]), panel.images[1:], panel.images[0])
    ci, cc = float(s["corr_identity"].mean()), float(s["corr_constant"].mean())
    return {"device": runtime.device_name(), "label": config.label(), "seed": config.seed,
            "precision": config.precision, "steps": len(r.loss), "seconds": seconds,
            "corr_identity": round(ci, 4), "corr_constant": round(cc, 4),
            "verdict": il.verdict(ci, cc), "final_loss": r.final_loss}


def chapter_claims(name: str, folder: Path) -> dict:
    env = {**os.environ, "IDENTLIB_DEVICE": "cuda", "IDENTLIB_CACHE_DIR": str(folder / "cache")}
    out = folder / f"{name}.ipynb"
    t = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "identlib", "run", name, "--no-progress", "-o", str(out)],
                         env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if run.returncode != 0:
        return {"chapter": name, "wall_seconds": wall, "error": run.stderr.strip().splitlines()[-1:]}
    table = subprocess.run([sys.executable, "-m", "identlib", "claims", str(out)], env=env,
                           capture_output=True, text=True)
    print(table.stdout, flush=True)
    return {"chapter": name, "wall_seconds": wall, "claims": table.stdout.strip().splitlines()[-1],
            "all_hold": table.returncode == 0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chapters", nargs="*", default=[], help="chapters to execute on the GPU")
    ap.add_argument("--smoke", action="store_true", help="tiny networks, both sides on the CPU")
    ap.add_argument("--out", type=Path, default=ROOT / "book" / "data" / "runtime" / "device.json")
    args = ap.parse_args(argv)
    gpu = "cpu" if args.smoke else "cuda"
    if gpu == "cuda" and not torch.cuda.is_available():
        print("bench/device.py: torch finds no CUDA GPU here (use --smoke to try it on the CPU)",
              file=sys.stderr)
        return 2
    cases, extra = CASES, GPU_ONLY
    if args.smoke:
        cases = [c.replace(channels=4, steps=20) for c in CASES[:2]]
        extra = [c.replace(channels=4, depth=3, steps=20) for c in GPU_ONLY]
    panel = il.test_panel()
    rows = []
    for c in cases:
        for device, cache in (("cpu", True), (gpu, False)):
            rows.append(on(device, c, panel, cache))
            print(json.dumps(rows[-1]), flush=True)
    for c in extra:
        rows.append(on(gpu, c, panel, False))
        print(json.dumps(rows[-1]), flush=True)
    chapters = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.chapters:
            chapters.append(chapter_claims(name, Path(folder)))
    record = {"date": time.strftime("%Y-%m-%d"), "platform": runtime.platform(),
              "gpu": runtime.device_name() if gpu == "cuda" else None,
              "policy": runtime.cuda_policy() if gpu == "cuda" else None,
              "networks": rows, "chapters": chapters}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
