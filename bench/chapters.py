"""Each chapter's execution time with a cold results cache (every network trained) and a warm one
(every network loaded), with its default parameters, and the whole book's.

    make bench-chapters                            # every chapter in _toc.yml, 2 at a time
    python bench/chapters.py linear_fcn intro      # some chapters
    python bench/chapters.py --cache .cache/identlib   # keep the trained networks (an empty folder)
    python bench/chapters.py --cache .cache/identlib --warm-only   # warm passes over a filled cache
    python bench/chapters.py --add phase           # time a chapter alone; add its row to the record
    python bench/chapters.py --add phase --cache .cache/added   # ... and keep its networks

Executes the chapters as ``make chapters`` does: each in its own process (``python -m identlib
run``), ``--jobs`` at a time, a chapter that loads another's networks after it
(:func:`identlib.chapters.run_parallel`), with one shared results cache that starts empty. Then it
executes them all again with the warm cache twice: one at a time (each chapter's own warm time)
and ``--jobs`` at a time (the book's warm total). The book's totals are wall times; with more than
one job a chapter's cold time overlaps others'. Times include starting each notebook's kernel.
The one-at-a-time pass also records which networks each chapter uses (``$IDENTLIB_TRACE``) and
their training arithmetic (steps taken times :func:`bench.step_flops`), and the book's training
CPU time (what the cached networks record), which the Runtime page sets against this machine's
peak (a large one-thread float32 ``torch.mm``, measured before and after). The executed notebooks
go to a temporary folder; the stored ones are not touched. Writes ``book/data/runtime/chapters.json``,
which the Runtime page reads.

``--add`` times the named chapters alone instead, on an empty cache of their own (so their cold
time includes the networks they share with chapters executed before them in the book), and adds
their rows to the record without touching its book totals; the record lists them, with their
date, under ``meta["added"]``, so that the Runtime page says which rows its book totals leave out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from bench import mm_peak, step_flops
from identlib import chapters, runtime
from identlib.config import RunConfig
from identlib.train import one_thread

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "book" / "data" / "runtime" / "chapters.json"


def toc_chapters() -> list[str]:
    """The chapters in the order of _toc.yml (its root first), but the Runtime page, which
    reads what this script measures."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [entry["file"] for entry in _entries(toc)]
    known = chapters.chapters()
    return [Path(f).name for f in files if Path(f).name in known and Path(f).name != "runtime"
            and Path(f).parent.name == "book"]       # not the stored pages at the paper's scale


def _entries(node):
    for key in ("chapters", "parts", "sections"):
        for entry in node.get(key, []) if isinstance(node, dict) else []:
            if "file" in entry:
                yield entry
            yield from _entries(entry)


def networks(cache: Path) -> int:
    return sum(1 for _ in (cache / "results").glob("*/config.json"))


def _pass(names: list[str], jobs: int, tag: str, folder: Path, trace: bool = False) -> tuple[dict, float]:
    """Execute the chapters ``jobs`` at a time, in the order ``identlib refresh`` takes them;
    each chapter's wall time and the pass's. With ``trace``, each chapter lists the networks it
    uses in ``folder/NAME.trace``."""
    names = [n for n in chapters.chapters() if n in names]
    needs = {name: chapters.after(name) for name in names}

    def command(name):
        env = ["env", f"IDENTLIB_TRACE={folder / f'{name}.trace'}"] if trace else []
        return env + [sys.executable, "-m", "identlib", "run", name, "--no-progress",
                      "-o", str(folder / f"{name}-{tag}.ipynb")]

    t = time.perf_counter()
    times = chapters.run_parallel(names, command, jobs, needs,
                                  log=lambda text: print(f"{tag}: {text}", flush=True))
    return times, time.perf_counter() - t


def time_chapters(names: list[str], cache: Path, jobs: int, folder: Path, cold: bool = True,
                  out: dict | None = None, book: dict | None = None) -> tuple[dict, dict]:
    """Cold pass (unless ``cold`` is false: then ``out`` and ``book`` hold an earlier run's cold
    times), then the warm passes; per chapter and for the book."""
    os.environ["IDENTLIB_CACHE_DIR"] = str(cache)          # inherited by the chapters' processes
    out = {name: {} for name in names} if out is None else out
    book = {"jobs": jobs} if book is None else book
    if cold:
        times, book["cold"] = _pass(names, jobs, "cold", folder)
        for name in names:
            out[name]["cold"] = times[name]
    book["networks"] = networks(cache)
    book["train_cpu_min"] = train_cpu_s(cache) / 60
    times, book["warm serial"] = _pass(names, 1, "warm", folder, trace=True)
    used = set()
    for name in names:
        digests = set((folder / f"{name}.trace").read_text().split()) if (folder / f"{name}.trace").exists() else set()
        used |= digests
        out[name].update(warm=times[name], networks=len(digests), train_gflop=train_gflop(cache, digests))
    book["train_gflop"] = train_gflop(cache, used)
    _, book["warm"] = _pass(names, jobs, f"warm-{jobs}jobs", folder)
    return out, book


def train_cpu_s(cache: Path) -> float:
    """The CPU seconds that training the cached networks took (each network's ``train_cpu_s``, its
    share of its group's, in ``platform.json``): how much of the cold pass's CPU time was
    training."""
    total = 0.0
    for path in (cache / "results").glob("*/platform.json"):
        total += json.loads(path.read_text()).get("train_cpu_s", 0.0)
    return total


def train_gflop(cache: Path, digests) -> float:
    """The training arithmetic of the cached networks ``digests``: each one's steps taken (its
    loss history) times its step's (:func:`bench.step_flops`), in GFLOP."""
    total = 0.0
    for d in digests:
        entry = cache / "results" / d
        if not (entry / "config.json").exists():
            continue                                        # a run that diverged, not stored
        c = RunConfig(**json.loads((entry / "config.json").read_text()))
        steps = c.steps
        if (entry / "result.pt").exists():
            steps = len(torch.load(entry / "result.pt", weights_only=True, mmap=True)["loss"])
        total += step_flops(c) * steps / 1e9
    return total


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chapter", nargs="*", help="chapters to time (default: every chapter in _toc.yml)")
    ap.add_argument("--cache", type=Path, help="an empty folder: the results cache to fill and keep, for a "
                    "later `make book` (default: a temporary folder)")
    ap.add_argument("--jobs", type=int, default=2, help="chapters at a time (default 2, as make chapters)")
    ap.add_argument("--add", action="store_true", help="time the given chapters alone, cold and warm, "
                    "and add their rows to the record in chapters.json, whose book totals stay")
    ap.add_argument("--warm-only", action="store_true", help="only the warm passes, over the filled --cache "
                    "of the run recorded in chapters.json, whose cold times are kept")
    args = ap.parse_args(argv)
    names = args.chapter or toc_chapters()
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    if args.add:
        if not args.chapter or args.warm_only or not OUT.exists():
            ap.error("--add needs chapter names and a record in chapters.json to add them to (and no --warm-only)")
        if args.cache is not None and networks(args.cache.resolve()):
            ap.error(f"{args.cache} already holds trained networks: the cold pass would not be cold")
        add(names, args.jobs, args.cache and args.cache.resolve())
        return
    earlier = json.loads(OUT.read_text()) if args.warm_only and OUT.exists() else None
    if args.warm_only:
        if args.cache is None or not networks(args.cache.resolve()):
            ap.error("--warm-only needs --cache, a results cache that a cold run filled")
        if earlier is None or sorted(earlier["chapters"]) != sorted(names):
            ap.error(f"--warm-only keeps the cold times of {OUT}, which must record these chapters")
    elif args.cache is not None and networks(args.cache.resolve()):
        ap.error(f"{args.cache} already holds trained networks: the cold pass would not be cold")
    with one_thread():
        peak = [mm_peak(torch.float32)]
    meta = {**runtime.platform(), "threads": int(os.environ.get("IDENTLIB_THREADS", "2")),
            "date": time.strftime("%Y-%m-%d %H:%M"), "load_start": os.getloadavg()[0],
            "chapters": names, "complete": sorted(names) == sorted(toc_chapters())}
    if earlier is not None:
        meta = dict(earlier["meta"], warm_date=meta["date"], warm_load_start=meta["load_start"])
    t0, cpu0 = time.time(), os.times()
    with tempfile.TemporaryDirectory(prefix="identlib-bench-") as tmp:
        cache = args.cache.resolve() if args.cache else Path(tmp) / "cache"
        results, book = time_chapters(names, cache, args.jobs, Path(tmp), cold=earlier is None,
                                      out=earlier and earlier["chapters"], book=earlier and earlier["book"])
    cpu = os.times()
    with one_thread():
        peak.append(mm_peak(torch.float32))
    meta["float32_peak_gflops"] = peak
    if earlier is None:
        meta.update(minutes=(time.time() - t0) / 60, load_end=os.getloadavg()[0],
                    cpu_minutes=(cpu.children_user + cpu.children_system
                                 - cpu0.children_user - cpu0.children_system) / 60)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"meta": meta, "chapters": results, "book": book}, indent=1) + "\n")
    print(json.dumps(book), f"\nwrote {OUT}")


def add(names: list[str], jobs: int, cache: Path | None = None) -> None:
    """Time ``names`` alone, cold (an empty cache: ``cache``, kept, or a temporary one) and warm,
    and add their rows to the record."""
    record = json.loads(OUT.read_text())
    date = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory(prefix="identlib-bench-") as tmp:
        results, _ = time_chapters(names, cache or Path(tmp) / "cache", jobs, Path(tmp))
    for name in names:
        record["chapters"][name] = dict(results[name], date=date, **runtime.platform())
    added = {n: d for n, d in record["meta"].get("added", {}).items() if n not in names}
    record["meta"]["added"] = dict(added, **{name: date for name in names})
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({name: results[name] for name in names}), f"\nadded to {OUT}")


if __name__ == "__main__":
    main()
