"""Writes the benchmarks' results into the book's Runtime page.

    python bench/report.py      # run by make bench, bench-trained, bench-verdicts and bench-chapters

book/runtime.md holds sections between markers such as ``<!-- bench:begin -->`` and
``<!-- bench:end -->``; each is rewritten from the JSON one benchmark wrote into bench/out/, and a
section whose benchmark has not run is left as it is. Every number between the markers comes from
those files; the sentences around them are computed from the same numbers. The benchmark figure is
copied to book/figures/bench.png.
"""
from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PAGE = HERE.parent / "book" / "runtime.md"
FIGURE = HERE.parent / "book" / "figures" / "bench.png"

sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (bench/bench.py: the table and the paper-scale estimate)

GPU = ("No GPU was used for this page: every number on it was measured on a "
       "CPU, and the estimate has not been checked on a GPU.")


def _load(name: str):
    path = OUT / name
    return json.loads(path.read_text()) if path.exists() else None


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


# --- sections ----------------------------------------------------------------------------------------

def bench_section(b: dict) -> str:
    """The main table, and what it says about the per-step targets."""
    peaks, meta, results = b["peaks"], b["meta"], b["results"]
    table = bench.report(results, peaks, b["levers"], meta, _rounds(results)).split("\n\nSteps/s counts")[0]
    by = {r["case"]: r["variants"] for r in results}
    by_full = {r["case"]: r for r in results}
    deep = by["CNN depth 20, 128 ch"]
    speed = {v: deep[v]["steps_per_s"] / deep["plain"]["steps_per_s"] for v in bench.VARIANTS}
    pct = {"plain": deep["plain"]["gflops"] / peaks["float32"], "engine fp32": deep["engine fp32"]["gflops"] / peaks["float32"],
           "engine bf16": deep["engine bf16"]["gflops"] / peaks["bf16"]}
    far = [(r["case"], max(r["variants"][v]["max_corr_diff"] for v in bench.VARIANTS[1:])) for r in results]
    far = [(c, d) for c, d in far if d > 0.01]
    bound = peaks["bf16"] / deep["plain"]["gflops"]          # fastest a bf16 step could be, vs plain
    fp32_left = "little" if pct["plain"] >= 0.8 else "some"
    reading = [
        f"On the paper's deep CNN (depth 20, 128 channels) the plain float32 loop runs at "
        f"{_pct(pct['plain'])} of the float32 `torch.mm` peak measured in the same run, so {fp32_left} is "
        f"left to win per step in float32 (the engine: {speed['engine fp32']:.2f}×, {_pct(pct['engine fp32'])} "
        f"of that peak). bfloat16 gives {speed['engine bf16']:.2f}× the plain loop, at "
        f"{_pct(pct['engine bf16'])} of the bfloat16 peak, which is itself "
        f"{peaks['bf16'] / peaks['float32']:.2f}× the float32 peak on this CPU. A bfloat16 step of this "
        f"network could be at most {bound:.2f}× faster than the plain loop's here (the bfloat16 peak over the "
        f"plain loop's {deep['plain']['gflops']:.0f} GFLOP/s), "
        + (f"so the book's 2.5× target per step is out of reach on this CPU, and the time to a *trained* network "
           f"(below) is where the remaining levers act." if bound < 2.5 else
           f"and the measured {speed['engine bf16']:.2f}× "
           + ("meets" if speed["engine bf16"] >= 2.5 else "falls short of")
           + " the book's 2.5× target per step"
           + (f". The step still uses only {_pct(pct['engine bf16'])} of the bfloat16 peak (the book's target is "
              f"60%)" + _near(by_full["CNN depth 20, 128 ch"]) + "; the profile below shows where the rest goes."
              if pct["engine bf16"] < 0.6 else ".")),
        "",
        "After the timed steps, every variant's networks score within 0.01 of the plain loop's (mean "
        "correlation to identity and to constant on the 13-image test panel)" +
        ("." if not far else ", except " + "; ".join(f"{c} ({d:.3f})" for c, d in far) +
         ". These are short runs stopped in mid-training, where float rounding (fused optimizer or "
         "not, float32 or bfloat16) has moved the networks apart; we have not traced them further. "
         "The comparisons after full training are in the sections below."),
    ]
    head = (f"Measured {meta['date']} on {meta['cpu']} with {meta['threads']} torch thread(s) and torch "
            f"{meta['torch']}, in {meta['minutes']:.1f} minutes; the machine was shared with other jobs "
            f"(load average {meta['load']} at the start).")
    table = table.split("\n", 1)[1]                # bench.report's own first line repeats the head
    return head + "\n\n" + table.strip() + "\n\n" + "\n".join(reading)


def _near(r: dict) -> str:
    """The bf16 step against the peak measured next to its own steps (runs from 2026-12-02 on)."""
    if "near_peaks" not in r:
        return ""
    near = r["near_peaks"]["bf16"]
    return (f", or {_pct(r['variants']['engine bf16']['gflops'] / near)} of the bfloat16 peak measured "
            f"next to its own steps ({near:.0f} GFLOP/s: the machine's peak moves while other jobs run)")


def profile_section(b: dict) -> str:
    """Where one training step of the paper's deep CNN spends its time, float32 and bfloat16."""
    prof = b.get("profiles")
    if not prof:
        return "Not measured yet (`make bench`)."
    kinds = list(dict.fromkeys(k for p in prof.values() for k in sorted(p["kinds"], key=lambda k: -p["kinds"][k])))
    lines = ["| where the time goes | float32, ms per step | bfloat16, ms per step |", "|---|---|---|"]
    for k in kinds:
        cells = []
        for p in prof.values():
            t = p["kinds"].get(k, 0.0)
            cells.append(f"{1e3 * t:.1f} ({_pct(t / p['profiled_step'])})")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("| **profiled step** | " + " | ".join(f"**{1e3 * p['profiled_step']:.1f}**" for p in prof.values())
                 + " |")
    bf, fp = prof["bf16"], prof["float32"]
    peak = b["peaks"]["bf16"]
    conv = (bf["kinds"]["convolutions, forward"] + bf["kinds"]["convolutions, backward (input and weight gradients)"])
    rest = 1 - conv / bf["profiled_step"]
    c = bf["config"]
    text = (f"One training step of the {c['depth']}-layer, {c['channels']}-channel CNN under `torch.profiler` "
            f"({bf['steps']} steps each, {b['meta']['threads']} threads, run of {b['meta']['date']}; each "
            f"operator's own time, so the rows add up to the step; the profiled bfloat16 step took "
            f"{1e3 * bf['wall_step']:.0f} ms of wall time, float32 {1e3 * fp['wall_step']:.0f} ms).\n\n"
            + "\n".join(lines) + "\n\n"
            f"In bfloat16 the convolutions themselves, all in oneDNN, run at {bf['conv_forward_gflops']:.0f} GFLOP/s "
            f"forward and {bf['conv_backward_gflops']:.0f} GFLOP/s backward, {_pct(bf['conv_forward_gflops'] / peak)} "
            f"and {_pct(bf['conv_backward_gflops'] / peak)} of the bfloat16 `torch.mm` peak of the same run "
            f"({peak:.0f} GFLOP/s); everything else in the step is {_pct(rest)} of it. "
            + ("So the distance to the target of 60% lies mostly inside oneDNN's bfloat16 convolutions for this "
               "shape (one 28×28 image, 128 channels), not in the work `identlib` does around them: even with "
               "that work gone, the step would reach at most "
               f"{_pct(step_flops_of(b) / conv / peak)} of the peak."
               if rest < 0.5 else
               "Most of the step is work around the convolutions, the place to look first."))
    return text


def step_flops_of(b: dict) -> float:
    r = {r["case"]: r for r in b["results"]}["CNN depth 20, 128 ch"]
    return r["gflop_per_step"]


def _rounds(results) -> int:
    r = results[0]
    return len(r["variants"]["plain"]["total_seconds"])


def lever_section(b: dict) -> str:
    levers = b["levers"]
    configs = [k for k in levers if k not in ("threads", "compile seconds")]
    lines = ["| lever | " + " | ".join(configs) + " |", "|---|" + "---|" * len(configs)]
    for lever in list(levers[configs[0]])[1:]:
        lines.append(f"| {lever} | " + " | ".join(f"{levers[k][lever]:.2f}×" for k in configs) + " |")
    threads = ", ".join(f"{k}: {v:.2f}×" for k, v in levers["threads"].items())
    threads = (f"Threads, bf16 + fused Adam on the first network: {threads} (relative to 1 thread)."
               if len(levers["threads"]) > 1 else "This run used one thread; two are compared below.")
    lines += ["", f"Each entry is the plain loop's time per member-step divided by the lever's (best of "
              f"{_rounds(b['results'])} runs of 6 steps, {b['meta']['threads']} thread(s), run of "
              f"{b['meta']['date']}). {threads}"]
    return "\n".join(lines)


def trained_section(t: dict) -> str:
    import trained                                  # bench/trained.py

    e2e, meta = t["end_to_end"], t["meta"]
    text = trained.report(e2e, t.get("paper_per_step"), meta, t.get("per_step"))
    v, ref = e2e["variants"], e2e["variants"]["plain fp32"]
    one = [k for k in v if "2 threads" not in k]
    best = max(one, key=lambda k: v[k]["cpu_speedup"])
    best_wall = max(v, key=lambda k: v[k]["speedup"])
    worst = max(v, key=lambda k: v[k]["max_corr_diff"])
    reached = max(v[best]["cpu_speedup"], v[best_wall]["speedup"]) >= 2.5
    wide_reached = bool(t.get("paper_per_step")) and _wide_speedup(t) >= 2.5
    out = [
        f"The fastest way to {e2e['seeds']} trained {e2e['channels']}-channel networks was *{best}*: "
        f"{v[best]['cpu_speedup']:.2f}× the plain float32 loop in CPU time ({v[best]['cpu_seconds']:.0f} s "
        f"against {ref['cpu_seconds']:.0f} s) and {v[best]['speedup']:.2f}× in wall time"
        + (f" (in wall time *{best_wall}* was fastest, {v[best_wall]['speedup']:.2f}×)" if best_wall != best else "")
        + ". " + ("That meets" if reached else "That is short of")
        + f" the book's target of 2.5× for deep-CNN training at {e2e['channels']} channels"
        + ("." if reached or wide_reached else ", and no combination of the levers measured here reaches it on this CPU.")]
    steps = v.get("engine bf16, seeds grouped, tol", {}).get("steps")
    if steps:
        out.append(f"Stopping at `tol` saves little with this recipe: its loss is still falling after 4000 "
                   f"steps, and the runs reached {meta['tol']:g} after {', '.join(map(str, steps))} steps.")
    if t.get("paper_per_step"):
        p = trained.per_step_seconds(t["paper_per_step"])
        bf = _wide_speedup(t)
        out.append(f"At 128 channels, the paper's width, bfloat16 gives {bf:.2f}× per step and 2 grouped seeds "
                   f"{p['plain fp32'] / p['engine bf16, 2 seeds grouped']:.2f}×"
                   + (f": with the same 4000 steps a 128-channel network trains {bf:.2f}× as fast as with the "
                      f"plain loop, which meets the book's 2.5× target at the paper's width, though not at the "
                      f"book's 16 channels, where a step is too small for the matrix units to matter. (The "
                      f"verdicts of a 128-channel bfloat16 network after full training are not checked by "
                      f"this benchmark.)" if bf >= 2.5 else "."))
    small = t.get("per_step") or t.get("paper_per_step")
    if small:
        w = {k: x["wall"] for k, x in small.items()}
        ratio = w['engine bf16'] / w['engine bf16, 2 threads']
        out.append(f"Two threads instead of one made a bf16 step {ratio:.2f}× as fast in wall time (load average "
                   f"{meta['load_start']} at the start)"
                   + (": a 16-channel convolution is too small to split over two threads, and two OpenMP "
                      "threads stall whenever another job holds a core, which is why these benchmarks run "
                      "on one." if ratio < 1 else
                      ": the second core helps one process when nothing else needs it, but the chapters' two "
                      "one-thread worker processes already keep both cores busy, and cached networks are "
                      "trained on one thread (the rule above)."))
    if all(r["max_corr_diff"] <= 0.01 for r in v.values()):
        out.append(f"Every variant reached the plain loop's verdict: correlations to identity and to constant "
                   f"within 0.01 for every seed (largest difference {v[worst]['max_corr_diff']:.4f}, {worst}).")
    else:
        out.append(f"Not every variant stayed within 0.01 of the plain loop's correlations: *{worst}* differs by "
                   f"{v[worst]['max_corr_diff']:.3f}, though every network memorized the \"7\" (correlation to "
                   f"constant {min(b for r in v.values() for _, b in r['scores']):.2f} or more).")
    return text.strip() + "\n\n" + " ".join(out)


def verdict_section(rows: list) -> str:
    lines = ["| setting | seed | float32 | bf16 | \\|Δ\\| bf16 vs float32 | \\|Δ\\| seed 0 vs seed 1 (float32) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        f, b = r["fp32"], r["bf16"]
        lines.append(f"| {r['setting']} | {r['seed']} | {f[0]:.2f} / {f[1]:.2f} ({f[2]}) | "
                     f"{b[0]:.2f} / {b[1]:.2f} ({b[2]}) | {r['diff']:.3f} | {r['seed_diff']:.3f} |")
    same_label = sum(r["fp32"][2] == r["bf16"][2] for r in rows)
    clear = [r for r in rows if r["fp32"][2] != "neither"]
    beyond = [r for r in rows if r["diff"] > r["seed_diff"]]
    reading = (
        f"The verdict label is the same in {same_label} of {len(rows)} runs. Where a network learns a "
        f"clear function ({', '.join(sorted({r['fp32'][2] for r in clear}))}), bfloat16 moves its mean "
        f"correlations by at most {max(r['diff'] for r in clear):.3f}. "
        + ((f"bfloat16 moves the correlations by more than two float32 seeds differ only in "
            f"{', '.join(sorted({r['setting'] for r in beyond}))} (up to {max(r['diff'] for r in beyond):.3f} "
            f"against {max(r['seed_diff'] for r in beyond):.3f} between seeds), where the network learns "
            f"neither function: there a small rounding difference changes where training ends, and the "
            f"numbers move while the verdict does not. This is why the book's chapters stay float32 and "
            f"bfloat16 is opt-in."
            if all(r["fp32"][2] == "neither" for r in beyond) else
            f"bfloat16 moves these runs by more than the spread between two float32 seeds: "
            f"{', '.join(sorted({r['setting'] for r in beyond}))}.") if beyond else
           "No difference exceeds the spread between two float32 seeds.")
    )
    return "\n".join(lines) + "\n\n" + reading


def book_times(c: dict) -> tuple[float, float, int]:
    """The whole book's cold and warm times (s) as ``make chapters`` waits for them, and its jobs."""
    import chapters                                 # bench/chapters.py

    book = chapters.book_totals(c["chapters"], c.get("book"))
    return book["cold"], book["warm"], book["jobs"]


def chapter_section(c: dict, toc: list[str]) -> str:
    import chapters                                 # bench/chapters.py

    if "meta" not in c:                             # an old run without the book total
        return ""
    results, meta = c["chapters"], c["meta"]
    text = chapters.report(results, meta, c.get("book", {})).strip()
    missing = [n for n in toc if n not in results]
    if missing:
        return (text + f"\n\n**Incomplete:** {', '.join(missing)} not measured; run `make bench-chapters` "
                "once every chapter is final.")
    cold, warm, jobs = book_times(c)
    how = f", {jobs} chapters at a time as `make chapters` runs them," if jobs > 1 else ""
    return (text + f"\n\nThe whole book executes{how} in {cold / 60:.1f} minutes with an empty results cache "
            f"({'within' if cold <= 600 else 'over'} the book's 10-minute target) and in {warm:.0f} s with a warm "
            f"one ({'within' if warm <= 60 else 'over'} its 60 s target).")


def summary_section(b: dict | None, t: dict | None, c: dict | None, toc: list[str]) -> str:
    """One line per question the benchmarks answer, each from the numbers of the sections below."""
    out = []
    if b:
        deep = {r["case"]: r["variants"] for r in b["results"]}["CNN depth 20, 128 ch"]
        out.append(f"- Per step, on the paper's deep CNN: the engine reaches "
                   f"{_pct(deep['engine fp32']['gflops'] / b['peaks']['float32'])} of this CPU's float32 peak "
                   f"and {_pct(deep['engine bf16']['gflops'] / b['peaks']['bf16'])} of its bfloat16 peak; "
                   f"bfloat16 is {deep['engine bf16']['steps_per_s'] / deep['plain']['steps_per_s']:.2f}× the "
                   f"plain float32 loop (run of {b['meta']['date']}).")
    if t:
        v = t["end_to_end"]["variants"]
        best = max((k for k in v if "2 threads" not in k), key=lambda k: v[k]["cpu_speedup"])
        out.append(f"- To a trained depth-20 CNN ({t['end_to_end']['channels']} channels, "
                   f"{t['end_to_end']['seeds']} seeds): at best {v[best]['cpu_speedup']:.2f}× the plain loop "
                   f"({best}), correlations "
                   f"{'within' if v[best]['max_corr_diff'] <= 0.01 else 'not within'} 0.01 of its; 2.5× is {'reached' if v[best]['cpu_speedup'] >= 2.5 else 'not reached'} "
                   f"at that width"
                   + (f"; at 128 channels bfloat16 makes each of the 4000 steps "
                      f"{_wide_speedup(t):.2f}× as fast" if t.get("paper_per_step") else "")
                   + f" (run of {t['meta']['date']}).")
    if c and "meta" in c and all(n in c["chapters"] for n in toc):
        cold, warm, jobs = book_times(c)
        out.append(f"- The whole book{f' ({jobs} chapters at a time)' if jobs > 1 else ''}: {cold / 60:.1f} "
                   f"minutes with an empty results cache, {warm:.0f} s with a warm one (run of {c['meta']['date']}).")
    else:
        out.append("- The whole book's execution time: not measured yet (`make bench-chapters`).")
    if b:
        out.append("- The paper's Fig. 3 at full scale on this CPU: " + _estimate_total(b) + ". " + GPU)
    return "\n".join(out)


def _wide_speedup(t: dict) -> float:
    import trained                                  # bench/trained.py

    p = trained.per_step_seconds(t["paper_per_step"])
    return p["plain fp32"] / p["engine bf16"]


def _estimate_total(b: dict) -> str:
    text = bench.estimate(b["results"])
    totals = dict(re.findall(r"^\| (plain|engine fp32|engine bf16) \|.*\*\*([0-9.]+ h)\*\* \|$", text, re.M))
    return ", ".join(f"{v} ({k})" for k, v in totals.items())


def estimate_section(b: dict) -> str:
    return bench.estimate(b["results"]).strip() + "\n\n" + GPU


# --- the page ----------------------------------------------------------------------------------------

def replace(page: str, name: str, content: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(\n<!-- {name}:end -->)", re.S)
    if not pattern.search(page):
        raise SystemExit(f"book/runtime.md has no <!-- {name}:begin --> ... <!-- {name}:end --> section")
    return pattern.sub(lambda m: m.group(1) + content.strip() + m.group(2), page)


def main() -> None:
    import chapters

    page = PAGE.read_text()
    b, t, v, c = (_load(n) for n in ("bench.json", "trained.json", "verdicts.json", "chapters.json"))
    done = []
    if (OUT / "workers.md").exists():
        page = replace(page, "workers", (OUT / "workers.md").read_text())
        done.append("workers")
    if b:
        page = replace(page, "bench", bench_section(b))
        page = replace(page, "levers", lever_section(b))
        page = replace(page, "profile", profile_section(b))
        done.append("profile")
        page = replace(page, "estimate", estimate_section(b))
        done.append("bench")
        if (OUT / "bench.png").exists():
            FIGURE.parent.mkdir(exist_ok=True)
            shutil.copyfile(OUT / "bench.png", FIGURE)
    if t:
        page = replace(page, "trained", trained_section(t))
        done.append("trained")
    if v:
        page = replace(page, "verdicts", verdict_section(v))
        done.append("verdicts")
    page = replace(page, "summary", summary_section(b, t, c, chapters.toc_chapters()))
    if c and chapter_section(c, chapters.toc_chapters()):
        page = replace(page, "chapters", chapter_section(c, chapters.toc_chapters()))
        done.append("chapters")
    PAGE.write_text(page)
    print(f"book/runtime.md: sections {', '.join(done) or 'none'} written from bench/out/")


if __name__ == "__main__":
    main()
