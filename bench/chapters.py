"""Each chapter's execution time with a cold results cache (every network trained) and a warm one
(every network loaded), with its default parameters, and the whole book's total.

    make bench-chapters                            # every chapter in _toc.yml, in its order
    python bench/chapters.py linear_fcn intro      # some chapters
    python bench/chapters.py --cache .cache/identlib   # keep the trained networks (an empty folder)

Executes the chapters as ``make book`` does, in the order of _toc.yml and with one shared results
cache that starts empty (a chapter that needs a network an earlier one trained loads it), each with
:func:`identlib.chapters.execute` into bench/out/chapters/; then executes them all again with the
now warm cache. Times include starting each notebook's kernel. Writes bench/out/chapters.md and
bench/out/chapters.json; the stored notebooks are not touched. The ``IDENTLIB_THREADS`` of the
environment applies (default 2).
"""
from __future__ import annotations

import argparse
import json
import os
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


def time_chapters(names: list[str], cache: Path) -> dict:
    os.environ["IDENTLIB_CACHE_DIR"] = str(cache)          # inherited by the notebooks' kernels
    out = {name: {} for name in names}
    for state in ("cold", "warm"):
        for name in names:
            before = networks(cache)
            t = time.perf_counter()
            chapters.execute(name, OUT / "chapters" / f"{name}-{state}.ipynb", {}, progress=False)
            out[name][state] = time.perf_counter() - t
            if state == "cold":
                out[name]["networks"] = networks(cache) - before
            print(f"{name}: {state} {out[name][state]:.0f} s", flush=True)
    return out


def report(results: dict, meta: dict) -> str:
    lines = [f"Chapter execution with default parameters ({meta['date']}, {meta['threads']} torch threads, "
             f"{meta['cpu']}; load average at start {meta['load_start']}, at end {meta['load_end']}):", "",
             "| chapter | networks trained | cold cache | warm cache |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['networks']} | {r['cold']:.0f} s | {r['warm']:.0f} s |")
    cold, warm = (sum(r[k] for r in results.values()) for k in ("cold", "warm"))
    lines.append(f"| **total** | {sum(r['networks'] for r in results.values())} | **{cold / 60:.1f} min** | "
                 f"**{warm:.0f} s** |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chapter", nargs="*", help="chapters to time (default: every chapter in _toc.yml)")
    ap.add_argument("--cache", type=Path, help="results cache to fill and keep, for a later `make book` "
                    "(must hold no results yet, or the cold times are not cold); default: a temporary folder")
    args = ap.parse_args(argv)
    names = args.chapter or toc_chapters()
    import bench                                    # bench/bench.py, beside this script

    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "threads": int(os.environ.get("IDENTLIB_THREADS", "2")),
            "cpu": bench._cpu(), "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "chapters": names, "complete": sorted(names) == sorted(toc_chapters())}
    if args.cache is not None:
        if networks(args.cache.resolve()):
            ap.error(f"{args.cache} already holds trained networks: the cold pass would not be cold")
        results = time_chapters(names, args.cache.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="identlib-bench-") as tmp:
            results = time_chapters(names, Path(tmp))
    meta["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    text = report(results, meta)
    OUT.mkdir(exist_ok=True)
    (OUT / "chapters.md").write_text(text)
    (OUT / "chapters.json").write_text(json.dumps({"meta": meta, "chapters": results}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
