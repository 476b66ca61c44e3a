"""The Runtime chapter's tables, from what the benchmarks measured (``book/data/runtime/*.json``).

``bench/bench.py`` writes ``bench.json`` (training speed, per case and variant),
``bench/chapters.py`` writes ``chapters.json`` (each chapter's cold and warm run time) and
``bench/memory_format.py`` writes ``layout.json`` (a grouped CNN's step, channels-last against
contiguous) and ``bench/pool.py`` writes ``pool.json`` (starting training workers and loading
networks, each against the way it was done before). Nothing here
times anything: these functions only turn a run's record into tables, ratios and estimates.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

__all__ = ["measured", "machine", "step_table", "trained_table", "profile_table", "chapter_table",
           "jobs_table", "layout_table", "paper_scale", "bandwidth_table", "cold_split", "goals_table",
           "pool_table"]


def measured(name: str, folder: str | Path | None = None) -> dict | None:
    """The record ``NAME.json`` of the benchmarks, or None if that benchmark has not run."""
    if folder is None:
        from .chapters import book_dir

        folder = book_dir() / "data" / "runtime"
    path = Path(folder) / f"{name}.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): run the benchmark again "
                         f"(make bench or make bench-chapters)") from None


def machine(meta: dict) -> str:
    """Where and when a run was measured, in words: 'AMD EPYC (AVX512), 1 thread, 2026-12-02'."""
    threads = meta.get("threads", 1)
    return (f"{meta['cpu']} ({meta['instruction_set']}), {threads} thread{'s' if threads != 1 else ''}, "
            f"torch {meta['torch'].split('+')[0]}, {meta['date']}")


def _peak(case: dict, precision: str) -> float:
    return max(case["peaks"]["bf16" if precision == "bf16" else "float32"])


def step_table(bench: dict) -> pd.DataFrame:
    """Per case and variant: milliseconds per network-step, speed-up over the plain loop of the
    same run, achieved GFLOP/s and its share of the machine's peak in that precision."""
    rows = []
    for case in bench["cases"]:
        plain = case["variants"]["plain"]["step_seconds"]
        for name, v in case["variants"].items():
            precision = "bf16" if name.endswith("bf16") else "float32"
            rows.append({"case": case["name"], "variant": name, "GFLOP/step": case["gflop_per_step"],
                         "ms/step": 1e3 * v["step_seconds"], "speed-up": plain / v["step_seconds"],
                         "GFLOP/s": v["gflops"], "% of peak": 100 * v["gflops"] / _peak(case, precision),
                         "noise %": 100 * v["noise"]})
    return pd.DataFrame(rows).set_index(["case", "variant"])


def bandwidth_table(bench: dict) -> pd.DataFrame:
    """The cases trained by gradient steps taken by hand (an FCN at batch 1): per case, the weight
    bytes a step moves, the engine's float32 step, the bandwidth that makes, and its share of the
    machine's streaming bandwidth measured in the same run (the best of its start and end)."""
    rows = []
    for case in bench["cases"]:
        if "hand_step_gb" not in case or "stream_gbps" not in case["peaks"]:
            continue
        step = case["variants"]["engine fp32"]["step_seconds"]
        stream = max(case["peaks"]["stream_gbps"])
        rows.append({"case": case["name"], "GB/step": case["hand_step_gb"], "ms/step": 1e3 * step,
                     "GB/s": case["hand_step_gb"] / step, "stream GB/s": stream,
                     "% of bandwidth": 100 * case["hand_step_gb"] / step / stream})
    return pd.DataFrame(rows).set_index("case") if rows else pd.DataFrame()


def trained_table(bench: dict) -> pd.DataFrame:
    """The cases trained to the end: per variant, wall and CPU time of all seeds, speed-up (CPU
    time) over the plain loop, final losses and the largest correlation gap to the plain loop's
    networks (mean correlation to identity and to constant over the test inputs)."""
    rows = []
    for case in bench["cases"]:
        if not case["trained"]:
            continue
        plain = case["variants"]["plain"]["cpu_seconds"]
        for name, v in case["variants"].items():
            rows.append({"case": case["name"], "variant": name, "wall s": v["wall_seconds"],
                         "CPU s": v["cpu_seconds"], "speed-up": plain / v["cpu_seconds"],
                         "largest final loss": max(v["final_loss"]),
                         "max |Δ corr| vs plain": v["max_corr_diff"]})
    return pd.DataFrame(rows).set_index(["case", "variant"])


def profile_table(bench: dict) -> pd.DataFrame:
    """Milliseconds per engine step in each kind of work, float32 and bfloat16 side by side."""
    runs = (bench.get("profile") or {}).get("runs", [])
    table = pd.DataFrame({run["precision"]: run["ms"] for run in runs}).fillna(0.0)
    return table.sort_values(table.columns[0], ascending=False) if len(table) else table


def chapter_table(chapters: dict) -> pd.DataFrame:
    """Seconds per chapter with a cold and a warm results cache, and the book's totals (a chapter
    timed alone after them, by ``bench/chapters.py --add``, says so in a column "timed", with its
    instruction set where the book's was another); where the record has them, the networks each
    uses, their training arithmetic (GFLOP) and, for the book, that arithmetic over its cold time
    as a share of the peak of as many cores as chapters ran at a time (the share for one chapter is
    not given: its cold time overlaps the others')."""
    rows = []
    book_isa = chapters["meta"].get("instruction_set")
    for name, r in chapters["chapters"].items():
        timed = "with the book"
        if "date" in r:
            isa = r.get("instruction_set")
            timed = f"alone, {r['date'][:10]}" + (f", {isa}" if isa and isa != book_isa else "")
        rows.append({"chapter": name, "cold s": r["cold"], "warm s": r["warm"],
                     "networks": r.get("networks"), "training GFLOP": r.get("train_gflop"),
                     "timed": timed})
    book = chapters["book"]
    peak = max(chapters["meta"].get("float32_peak_gflops") or [float("nan")])
    total = book.get("train_gflop")
    rows.append({"chapter": f"the book, {book['jobs']} at a time", "timed": "with the book",
                 "cold s": book["cold"],
                 "warm s": book["warm"], "networks": book["networks"], "training GFLOP": total,
                 "% of peak": None if total is None else 100 * total / (book["cold"] * peak * book["jobs"])})
    table = pd.DataFrame(rows).set_index("chapter")
    if (table.timed == "with the book").all():
        table = table.drop(columns="timed")
    return table.dropna(axis=1, how="all")


def cold_split(chapters: dict) -> dict | None:
    """Where the cold pass's CPU time went, or None where the record lacks its training time:
    CPU-minutes in all (the chapters' processes and their workers), those of training (what each
    cached network records, its share of its group's) and the rest; training's average rate on one
    core (GFLOP/s) and its share of one core's float32 peak; and the minutes the book's training
    arithmetic would take at the float32 peak (``peak_gflops``, one core's) of as many cores as
    chapters ran at a time.

    >>> split = cold_split({"meta": {"cpu_minutes": 50.0, "float32_peak_gflops": [100.0, 90.0]},
    ...                     "book": {"jobs": 2, "train_cpu_min": 40.0, "train_gflop": 120000.0}})
    >>> split["other_cpu_min"], split["train_gflops"], split["train_share"], split["at_peak_min"]
    (10.0, 50.0, 50.0, 10.0)
    """
    book, meta = chapters["book"], chapters["meta"]
    if not book.get("train_cpu_min") or "train_gflop" not in book:
        return None
    peak = max(meta["float32_peak_gflops"])
    rate = book["train_gflop"] / (60 * book["train_cpu_min"])
    return {"cpu_min": meta["cpu_minutes"], "train_cpu_min": book["train_cpu_min"],
            "other_cpu_min": meta["cpu_minutes"] - book["train_cpu_min"], "train_gflops": rate,
            "train_share": 100 * rate / peak, "at_peak_min": book["train_gflop"] / (peak * book["jobs"]) / 60,
            "peak_gflops": peak}


def goals_table(chapters: dict, cold_min: float, warm_s: float) -> pd.DataFrame:
    """The book's run time against its goals: cold (minutes, every chapter on an empty results
    cache) and warm (seconds), as many chapters at a time as the record ran; whether each is met;
    and, for the cold goal, the share of one core's float32 peak that training would need to
    reach for the goal to be met if the rest of the cold pass's CPU time stayed as it is (above
    100: not even at the peak).

    >>> chapters = {"meta": {"cpu_minutes": 50.0, "float32_peak_gflops": [100.0]},
    ...             "book": {"jobs": 2, "cold": 1500.0, "warm": 20.0, "train_cpu_min": 40.0,
    ...                      "train_gflop": 120000.0}}
    >>> goals_table(chapters, cold_min=15, warm_s=30)[["measured", "goal", "met", "training needs % of peak"]]
                     measured  goal    met  training needs % of peak
    cold cache, min      25.0    15  False                     100.0
    warm cache, s        20.0    30   True                       NaN
    """
    book, split = chapters["book"], cold_split(chapters)
    needs = float("nan")
    if split is not None:
        left_s = 60 * (book["jobs"] * cold_min - split["other_cpu_min"])   # CPU time left to train
        needs = float("inf") if left_s <= 0 else 100 * book["train_gflop"] / left_s / split["peak_gflops"]
    rows = [{"": "cold cache, min", "measured": book["cold"] / 60, "goal": cold_min,
             "training needs % of peak": needs},
            {"": "warm cache, s", "measured": book["warm"], "goal": warm_s,
             "training needs % of peak": float("nan")}]
    table = pd.DataFrame(rows).set_index("")
    table["met"] = table.measured <= table.goal
    table.index.name = None
    return table[["measured", "goal", "met", "training needs % of peak"]]


def pool_table(pool: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``pool.json`` as two tables: a call of ``run_all`` with a new pool of workers and with the
    pool kept (CPU and wall seconds per call, and the ratio), and a stored network loaded with its
    weights drawn first and on the meta device (seconds, and the ratio)."""
    workers = pd.DataFrame(pool["workers"]).T
    workers.loc["new / kept"] = workers.loc["new pool per call"] / workers.loc["pool kept"]
    loading = pd.DataFrame(pool["loading"]).T
    loading["drawn / meta"] = loading["drawn"] / loading["meta"]
    return workers, loading


def jobs_table(bench: dict) -> pd.DataFrame:
    """The book's CNNs, trained alone and as the cached path's jobs (``bench.json``'s ``jobs``),
    by width: networks, CPU seconds both ways (for the timed fraction of their steps) and the
    ratio; the last row is every CNN."""
    jobs = pd.DataFrame(bench["jobs"]["jobs"])
    jobs["networks"] = jobs["size"]
    by = jobs.groupby("channels")[["networks", "alone_cpu_s", "grouped_cpu_s"]].sum()
    by.index = [f"{c} channels" for c in by.index]
    by.loc["every CNN"] = jobs[["networks", "alone_cpu_s", "grouped_cpu_s"]].sum()
    by["alone / grouped"] = by.alone_cpu_s / by.grouped_cpu_s
    by["networks"] = by["networks"].astype(int)
    return by.rename(columns={"alone_cpu_s": "alone, CPU s", "grouped_cpu_s": "grouped, CPU s"})


def layout_table(layout: dict) -> pd.DataFrame:
    """Per width and kernel size (``layout.json``): a grouped network's median step with its
    activations contiguous and channels-last, in milliseconds, the ratio (above 1: channels-last
    is faster) and whether the engine keeps that width channels-last (the record's
    ``channels_last_max``)."""
    df = pd.DataFrame(layout["cases"]).set_index(["channels", "kernel_size"])
    out = pd.DataFrame({"contiguous, ms": 1e3 * df.contiguous_s,
                        "channels-last, ms": 1e3 * df.channels_last_s,
                        "contiguous / channels-last": df.contiguous_s / df.channels_last_s})
    out["kept channels-last"] = out.index.get_level_values("channels") <= layout["meta"]["channels_last_max"]
    return out


def paper_scale(bench: dict, depths, seeds: int, steps: int) -> pd.DataFrame:
    """Hours for the paper's Fig. 3 at its scale (128 channels at ``depths``, and the 5-layer
    1024-channel network), ``seeds`` x ``steps`` each, per variant, from the measured steps: a
    step's time is taken as linear in the number of 128 -> 128 hidden layers, through the
    measured depths 5 and 20.
    """
    by = {c["name"]: c["variants"] for c in bench["cases"]}
    d5, d20, big = by["CNN depth 5, 128 ch"], by["CNN depth 20, 128 ch"], by["CNN depth 5, 1024 ch"]
    rows = []
    for v in d5:
        t5, t20 = d5[v]["step_seconds"], d20[v]["step_seconds"]
        per_layer = (t20 - t5) / 15                         # depth 5 has 3 hidden layers, 20 has 18
        base = t5 - 3 * per_layer
        narrow = sum(base + max(0, d - 2) * per_layer for d in depths) * seeds * steps / 3600
        wide = big[v]["step_seconds"] * seeds * steps / 3600
        rows.append({"variant": v, "ms per hidden layer": 1e3 * per_layer, "128 channels, h": narrow,
                     "1024 channels, h": wide, "total, h": narrow + wide})
    return pd.DataFrame(rows).set_index("variant")
