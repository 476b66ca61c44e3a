"""Each chapter's execution time with a cold results cache (every network trained) and a warm one
(every network loaded), with its default parameters.

    make bench-chapters                            # every chapter
    python bench/chapters.py linear_fcn intro      # some chapters

Runs each chapter with :func:`identlib.chapters.execute` into bench/out/chapters/, first with
``IDENTLIB_CACHE_DIR`` pointing at an empty folder, then again with the same folder. Writes
bench/out/chapters.md and bench/out/chapters.json; the stored notebooks are not touched.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from identlib import chapters

OUT = Path(__file__).resolve().parent / "out"


def time_chapter(name: str, cache: Path) -> dict:
    os.environ["IDENTLIB_CACHE_DIR"] = str(cache)          # inherited by the notebook's kernel
    out = {}
    for state in ("cold", "warm"):
        t = time.perf_counter()
        chapters.execute(name, OUT / "chapters" / f"{name}-{state}.ipynb", {}, progress=False)
        out[state] = time.perf_counter() - t
        if state == "cold":
            out["networks"] = sum(1 for _ in (cache / "results").glob("*/config.json"))
        print(f"{name}: {state} {out[state]:.0f} s", flush=True)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chapter", nargs="*", help="chapters to time (default: all)")
    args = ap.parse_args(argv)
    names = args.chapter or list(chapters.chapters())
    results = {}
    with tempfile.TemporaryDirectory(prefix="identlib-bench-") as tmp:
        for name in names:
            results[name] = time_chapter(name, Path(tmp) / name)
    threads = os.environ.get("IDENTLIB_THREADS", "2")
    lines = [f"Chapter execution with default parameters ({time.strftime('%Y-%m-%d %H:%M')}, "
             f"{threads} threads, load average at end {' '.join(f'{x:.1f}' for x in os.getloadavg())}):",
             "", "| chapter | networks trained | cold cache | warm cache |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['networks']} | {r['cold']:.0f} s | {r['warm']:.0f} s |")
    text = "\n".join(lines) + "\n"
    OUT.mkdir(exist_ok=True)
    (OUT / "chapters.md").write_text(text)
    (OUT / "chapters.json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
