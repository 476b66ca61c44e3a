"""Each chapter's execution time with a cold results cache (every network trained) and a warm one
(every network loaded), with its default parameters, and the whole book's total.

    make bench-chapters                            # every chapter in _toc.yml, 2 at a time
    python bench/chapters.py linear_fcn intro      # some chapters
    python bench/chapters.py --cache .cache/identlib   # keep the trained networks (an empty folder)
    python bench/chapters.py --warm-only --cache .cache/identlib   # the warm passes alone (a full cache)

Executes the chapters as ``make book`` does (``identlib refresh --jobs N``): each in its own
process (``python -m identlib run``), ``--jobs`` at a time (default 2), a chapter that loads
another's networks after it (:func:`identlib.chapters.run_parallel`), with one shared results cache
that starts empty, into bench/out/chapters/. Then it executes them all again with the now warm
cache twice: one at a time (each chapter's own time, the table's warm column) and ``--jobs`` at a
time (the book's warm total, as ``make chapters`` waits for it). The book's totals are wall times;
with more than one job a chapter's cold time overlaps others' and the networks it trained are not
told apart. Times include starting each notebook's kernel. Writes bench/out/chapters.md and
bench/out/chapters.json; the stored notebooks are not touched. The ``IDENTLIB_THREADS`` of the
environment applies (default 2).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

from identlib import chapters

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"


def toc_chapters() -> list[str]:
    """The executable chapters in the order of _toc.yml (its root first); pages that are not
    parameterized notebooks (such as the Runtime page) are left out."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [entry["file"] for entry in _entries(toc)]
    known = chapters.chapters()
    return [Path(f).name for f in files if Path(f).name in known]


def _entries(node):
    for key in ("chapters", "parts", "sections"):
        for entry in node.get(key, []) if isinstance(node, dict) else []:
            if "file" in entry:
                yield entry
            yield from _entries(entry)


def networks(cache: Path) -> int:
    return sum(1 for _ in (cache / "results").glob("*/config.json"))


def _pass(names: list[str], jobs: int, tag: str) -> tuple[dict, float]:
    """Execute the chapters ``jobs`` at a time, in the order ``identlib refresh`` takes them;
    each chapter's wall time and the pass's."""
    names = [n for n in chapters.chapters() if n in names]
    needs = {name: chapters.after(name) for name in names}
    command = lambda name: [sys.executable, "-m", "identlib", "run", name, "--no-progress",
                            "-o", str(OUT / "chapters" / f"{name}-{tag}.ipynb")]
    t = time.perf_counter()
    times = chapters.run_parallel(names, command, jobs, needs, log=lambda text: print(f"{tag}: {text}", flush=True))
    return times, time.perf_counter() - t


def time_chapters(names: list[str], cache: Path, jobs: int, warm_only: bool = False) -> tuple[dict, dict]:
    os.environ["IDENTLIB_CACHE_DIR"] = str(cache)          # inherited by the chapters' processes
    out = {name: {} for name in names}
    book = {"jobs": jobs}
    if not warm_only:
        if jobs == 1:                                      # one at a time: each chapter's own networks
            for name in names:
                before = networks(cache)
                times, _ = _pass([name], 1, "cold")
                out[name]["cold"], out[name]["networks"] = times[name], networks(cache) - before
            book["cold"] = sum(r["cold"] for r in out.values())
        else:
            times, book["cold"] = _pass(names, jobs, "cold")
            for name in names:
                out[name]["cold"] = times[name]
        book["networks"] = networks(cache)
    times, book["warm serial"] = _pass(names, 1, "warm")
    for name in names:
        out[name]["warm"] = times[name]
    book["warm"] = book["warm serial"]
    if jobs > 1:
        _, book["warm"] = _pass(names, jobs, f"warm-{jobs}jobs")
    return out, book


def book_totals(results: dict, book: dict | None) -> dict:
    """The book's totals of a run; a run from before chapters ran side by side stored none (one
    chapter at a time: the sums)."""
    if book:
        return book
    return {"jobs": 1, "cold": sum(r["cold"] for r in results.values()),
            "networks": sum(r["networks"] for r in results.values()),
            "warm": sum(r["warm"] for r in results.values())}


def report(results: dict, meta: dict, book: dict | None = None) -> str:
    book = book_totals(results, book)
    jobs = book["jobs"]
    lines = [f"Chapter execution with default parameters ({meta['date']}, {meta['threads']} torch threads, "
             f"{meta['cpu']}; load average at start {meta['load_start']}, at end {meta['load_end']}):", ""]
    cold = "cold" in book
    lines += ["| chapter | " + ("networks trained | cold cache | " if cold else "") + "warm cache |",
              "|---|" + ("---|---|" if cold else "") + "---|"]
    for name, r in results.items():
        n = r.get("networks", "–")
        lines.append(f"| {name} | " + (f"{n} | {r['cold']:.0f} s | " if cold else "") + f"{r['warm']:.0f} s |")
    if jobs > 1:
        lines.append(f"| sum, one at a time | " + (f"{book['networks']} | | " if cold else "") +
                     f"{book['warm serial']:.0f} s |")
    lines.append(f"| **the book{f', {jobs} at a time' if jobs > 1 else ''}** | " +
                 (f"{'' if jobs > 1 else book['networks']} | **{book['cold'] / 60:.1f} min** | " if cold else "") +
                 f"**{book['warm']:.0f} s** |")
    text = "\n".join(lines) + "\n"
    if jobs > 1:
        text += (f"\nThe chapters' cold times overlap ({jobs} chapters at a time), so the networks each one "
                 f"trained are not told apart" + (f" ({book['networks']} in all)" if "networks" in book else "") +
                 f"; the book's times are the wall time of the whole pass. The warm column is each chapter alone; run {jobs} at a time, "
                 f"the warm pass took {book['warm']:.0f} s against {book['warm serial']:.0f} s one at a time "
                 f"({book['warm serial'] / book['warm']:.2f}x), in the same run.\n")
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chapter", nargs="*", help="chapters to time (default: every chapter in _toc.yml)")
    ap.add_argument("--cache", type=Path, help="results cache to fill and keep, for a later `make book` "
                    "(must hold no results yet, or the cold times are not cold); default: a temporary folder")
    ap.add_argument("--jobs", type=int, default=2, help="chapters executed at a time (default 2, as make chapters)")
    ap.add_argument("--warm-only", action="store_true", help="only the warm passes, from a full --cache")
    args = ap.parse_args(argv)
    names = args.chapter or toc_chapters()
    import bench                                    # bench/bench.py, beside this script

    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "threads": int(os.environ.get("IDENTLIB_THREADS", "2")),
            "cpu": bench._cpu(), "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "chapters": names, "complete": sorted(names) == sorted(toc_chapters())}
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    if args.warm_only:
        if args.cache is None or not networks(args.cache.resolve()):
            ap.error("--warm-only needs --cache: a results cache the chapters have filled")
        results, book = time_chapters(names, args.cache.resolve(), args.jobs, warm_only=True)
    elif args.cache is not None:
        if networks(args.cache.resolve()):
            ap.error(f"{args.cache} already holds trained networks: the cold pass would not be cold")
        results, book = time_chapters(names, args.cache.resolve(), args.jobs)
    else:
        with tempfile.TemporaryDirectory(prefix="identlib-bench-") as tmp:
            results, book = time_chapters(names, Path(tmp), args.jobs)
    meta["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    text = report(results, meta, book)
    OUT.mkdir(exist_ok=True)
    stem = "chapters-warm" if args.warm_only else "chapters"     # the Runtime page reads chapters.json
    (OUT / f"{stem}.md").write_text(text)
    (OUT / f"{stem}.json").write_text(json.dumps({"meta": meta, "chapters": results, "book": book}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
