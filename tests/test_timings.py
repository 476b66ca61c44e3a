"""The benchmark's plumbing and the Runtime chapter's tables. Nothing here asserts a speed: timings
on a shared machine are noise; the benchmark compares every variant with the plain loop in one run."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from identlib import timings

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "bench" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_script"] = module
    spec.loader.exec_module(module)
    return module


def _variant(seconds, gflops=1.0, corr_diff=0.0):
    return {"step_seconds": seconds, "gflops": gflops, "noise": 0.1, "wall_seconds": 10 * seconds,
            "cpu_seconds": 10 * seconds, "steps_taken": [10], "final_loss": [0.01],
            "corr": [[0.5, 0.5]], "max_corr_diff": corr_diff}


META = {"cpu": "Test CPU", "instruction_set": "AVX2", "torch": "2.13.0+cpu", "device": "cpu",
        "threads": 1, "date": "2026-01-01 00:00", "minutes": 1.0}


def _case(name, seconds: dict, trained=False):
    return {"name": name, "steps": 10, "seeds": 1, "trained": trained, "rounds": 2, "gflop_per_step": 2.0,
            "meta": META, "peaks": {"float32": [90.0, 100.0], "bf16": [400.0, 380.0]},
            "variants": {v: _variant(s, gflops=2.0 / s) for v, s in seconds.items()}}


RECORD = {"cases": [
    _case("CNN depth 5, 128 ch", {"plain": 0.05, "engine bf16": 0.025}),
    _case("CNN depth 20, 128 ch", {"plain": 0.2, "engine bf16": 0.1}),
    _case("CNN depth 5, 1024 ch", {"plain": 3.0, "engine bf16": 1.5}),
    _case("recipe, trained", {"plain": 0.01, "grouped fp32": 0.005}, trained=True),
], "profile": {"runs": [{"precision": "float32", "ms": {"convolutions, forward": 3.0, "optimizer": 1.0}},
                        {"precision": "bf16", "ms": {"convolutions, forward": 2.0}}]}}


def test_step_table_is_speed_up_over_the_plain_loop_and_share_of_the_run_peak():
    table = timings.step_table(RECORD)
    row = table.loc[("CNN depth 20, 128 ch", "engine bf16")]
    assert row["speed-up"] == pytest.approx(2.0)
    assert row["% of peak"] == pytest.approx(100 * 20.0 / 400.0)          # bf16: the larger bf16 peak
    assert table.loc[("CNN depth 20, 128 ch", "plain"), "% of peak"] == pytest.approx(10.0)


def test_trained_table_compares_cpu_time_and_keeps_only_trained_cases():
    table = timings.trained_table(RECORD)
    assert list(table.index.get_level_values(0).unique()) == ["recipe, trained"]
    assert table.loc[("recipe, trained", "grouped fp32"), "speed-up"] == pytest.approx(2.0)


def test_paper_scale_is_linear_in_hidden_layers_through_depths_5_and_20():
    scale = timings.paper_scale(RECORD, [5, 20], seeds=1, steps=3600)
    per_layer = (0.2 - 0.05) / 15
    assert scale.loc["plain", "ms per hidden layer"] == pytest.approx(1e3 * per_layer)
    assert scale.loc["plain", "128 channels, h"] == pytest.approx(0.05 + 0.2)    # the measured depths
    assert scale.loc["plain", "1024 channels, h"] == pytest.approx(3.0)
    assert scale.loc["engine bf16", "total, h"] == pytest.approx(0.025 + 0.1 + 1.5)


def test_profile_table_fills_kinds_missing_from_one_precision():
    table = timings.profile_table(RECORD)
    assert table.loc["optimizer", "bf16"] == 0.0 and table.index[0] == "convolutions, forward"


def test_measured_reads_a_record_and_says_what_to_do_with_a_broken_one(tmp_path):
    assert timings.measured("bench", tmp_path) is None
    (tmp_path / "bench.json").write_text(json.dumps(RECORD))
    assert timings.measured("bench", tmp_path)["cases"][0]["name"] == "CNN depth 5, 128 ch"
    (tmp_path / "bench.json").write_text("{")
    with pytest.raises(ValueError, match="run the benchmark again"):
        timings.measured("bench", tmp_path)
    assert timings.machine(META) == "Test CPU (AVX2), 1 thread, torch 2.13.0, 2026-01-01 00:00"


def test_every_variant_of_a_tiny_case_trains_the_plain_loops_function():
    """The benchmark's variants, on a tiny CNN and two seeds: each is timed step by step and
    trains the networks the plain loop trains (to float rounding; bfloat16 to 0.01 in the mean
    correlations)."""
    bench = _bench()
    import identlib as il

    config = il.RunConfig(model="cnn", depth=3, channels=4, activation="relu", bias=True, init="default",
                          optimizer="gd", momentum=0.9, lr=0.05, steps=20)
    case = bench.Case("tiny", config, 20, seeds=2, variants=bench.GROUP_VARIANTS, trained=True)
    out = bench.bench_case(case, rounds=1, panel=il.test_panel())
    assert set(out["variants"]) == set(bench.GROUP_VARIANTS)
    for name, v in out["variants"].items():
        assert v["steps_taken"] == [20, 20] and v["step_seconds"] > 0, name
        assert v["max_corr_diff"] < (0.01 if name.endswith("bf16") else 1e-3), name
    assert out["gflop_per_step"] == pytest.approx(bench.step_flops(config) / 1e9)


def test_step_arithmetic_counts_every_layer():
    bench = _bench()
    import identlib as il

    c = il.RunConfig(model="cnn", depth=2, channels=3, kernel_size=5)
    forward = [2 * 28 * 28 * 25 * 1 * 3, 2 * 28 * 28 * 25 * 3 * 1]
    assert bench.forward_flops(c) == forward
    assert bench.step_flops(c) == 3 * sum(forward) - forward[0]       # no input gradient for the input


def test_a_hand_step_moves_the_weights_four_times_but_the_first_layer_three():
    bench = _bench()
    import identlib as il

    c = il.RunConfig(model="fcn", depth=3, width=100)
    w = [4 * 784 * 100, 4 * 100 * 100, 4 * 100 * 784]
    assert bench.weight_bytes(c) == w
    assert bench.hand_step_bytes(c) == 3 * w[0] + 4 * w[1] + 4 * w[2]


def test_bandwidth_table_sets_a_hand_step_against_the_runs_stream_bandwidth():
    fcn = _case("FCN, GD", {"plain": 0.04, "engine fp32": 0.02})
    fcn["hand_step_gb"] = 0.5
    fcn["peaks"] = dict(fcn["peaks"], stream_gbps=[20.0, 25.0])
    table = timings.bandwidth_table({"cases": RECORD["cases"] + [fcn]})
    assert list(table.index) == ["FCN, GD"]                           # only the hand-stepped case
    assert table.loc["FCN, GD", "GB/s"] == pytest.approx(25.0)
    assert table.loc["FCN, GD", "% of bandwidth"] == pytest.approx(100.0)   # the better of the two
    assert timings.bandwidth_table(RECORD).empty                      # a record from before


def test_the_benchmark_records_a_hand_steps_traffic_and_the_bandwidth(tmp_path, monkeypatch):
    bench = _bench()
    import identlib as il

    c = il.RunConfig(model="fcn", depth=2, width=64, optimizer="gd", lr=1e-3, loss_reduction="sum")
    monkeypatch.setattr(bench, "CASES", (bench.Case("tiny FCN", c, 4),))
    monkeypatch.setattr(bench, "stream_bandwidth", lambda: 10.0)
    monkeypatch.setattr(bench, "mm_peak", lambda dtype: 50.0)
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--only", "tiny FCN", "--out", str(out)])
    case = json.loads(out.read_text())["cases"][0]
    assert case["hand_step_gb"] == pytest.approx(bench.hand_step_bytes(c) / 1e9)
    assert case["peaks"]["stream_gbps"] == [10.0, 10.0]
    assert timings.bandwidth_table(json.loads(out.read_text())).loc["tiny FCN", "GB/s"] > 0


CHAPTERS = {"meta": dict(META, float32_peak_gflops=[100.0, 90.0], cpu_minutes=3.0),
            "chapters": {"a": {"cold": 60.0, "warm": 5.0, "networks": 2, "train_gflop": 3000.0},
                         "b": {"cold": 30.0, "warm": 4.0, "networks": 1, "train_gflop": 1000.0}},
            "book": {"jobs": 2, "cold": 80.0, "warm": 7.0, "networks": 3, "train_gflop": 4000.0}}


def test_chapter_table_sets_the_books_arithmetic_against_the_peak_of_its_cores():
    table = timings.chapter_table(CHAPTERS)
    assert list(table["networks"]) == [2, 1, 3]
    book = table.loc["the book, 2 at a time"]
    assert book["% of peak"] == pytest.approx(100 * 4000 / (80 * 100 * 2))
    assert table["% of peak"].isna().sum() == 2                   # not for one chapter
    old = {**CHAPTERS, "chapters": {"a": {"cold": 1.0, "warm": 1.0}},
           "book": {"jobs": 2, "cold": 1.0, "warm": 1.0, "networks": 1}}
    assert "training GFLOP" not in timings.chapter_table(old)       # a record from before
    assert "timed" not in table                                     # every row timed with the book


def test_a_chapter_timed_alone_after_the_book_says_so():
    later = {**CHAPTERS, "chapters": {**CHAPTERS["chapters"],
                                      "c": {"cold": 9.0, "warm": 1.0, "date": "2026-12-06 04:00"}}}
    table = timings.chapter_table(later)
    assert table.timed.tolist() == ["with the book", "with the book", "alone, 2026-12-06", "with the book"]
    assert table.loc["the book, 2 at a time", "cold s"] == 80.0    # the book's totals as measured
    for isa, timed in [("AVX2", "alone, 2026-12-06"), ("AVX512", "alone, 2026-12-06, AVX512")]:
        row = {**later["chapters"]["c"], "instruction_set": isa}    # the book's CPU (AVX2), another
        assert timings.chapter_table({**later, "chapters": {**later["chapters"], "c": row}}).loc["c", "timed"] == timed


def test_jobs_table_sums_by_width_and_over_every_cnn():
    bench = {"jobs": {"fraction": 40, "networks": 5, "jobs": [
        {"size": 3, "channels": 8, "alone_cpu_s": 6.0, "grouped_cpu_s": 2.0},
        {"size": 1, "channels": 8, "alone_cpu_s": 1.0, "grouped_cpu_s": 1.0},
        {"size": 1, "channels": 16, "alone_cpu_s": 2.0, "grouped_cpu_s": 2.0}]}}
    table = timings.jobs_table(bench)
    assert list(table.index) == ["8 channels", "16 channels", "every CNN"]
    assert list(table["networks"]) == [4, 1, 5]
    assert table.loc["8 channels", "alone / grouped"] == pytest.approx(7 / 3)
    assert table.loc["every CNN", "alone / grouped"] == pytest.approx(9 / 5)


def test_layout_table_gives_the_ratio_and_the_widths_kept_channels_last():
    layout = {"meta": dict(META, channels_last_max=8), "cases": [
        {"channels": 4, "kernel_size": 5, "contiguous_s": 0.03, "channels_last_s": 0.015},
        {"channels": 16, "kernel_size": 5, "contiguous_s": 0.04, "channels_last_s": 0.05}]}
    table = timings.layout_table(layout)
    assert table.loc[(4, 5), "contiguous / channels-last"] == pytest.approx(2.0)
    assert table.loc[(16, 5), "contiguous, ms"] == pytest.approx(40.0)
    assert list(table["kept channels-last"]) == [True, False]


def test_the_layout_benchmark_writes_the_record_the_runtime_page_reads(tmp_path):
    spec = importlib.util.spec_from_file_location("memory_format", ROOT / "bench" / "memory_format.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.CASES = [(4, 3)]
    out = tmp_path / "layout.json"
    bench.main(["--steps", "3", "--rounds", "1", "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["meta"]["channels_last_max"] == bench.engine.CHANNELS_LAST_MAX
    assert timings.layout_table(record).shape == (1, 4)
    assert bench.engine.CHANNELS_LAST_MAX == record["meta"]["channels_last_max"]   # restored


def test_the_books_cnns_are_timed_alone_and_as_the_cached_paths_jobs(tmp_path, monkeypatch):
    bench = _bench()
    import identlib as il

    base = il.RunConfig(model="cnn", depth=2, channels=4, activation="relu", optimizer="gd", lr=0.05,
                        steps=8)
    configs = [base, base.replace(seed=1, depth=3), base.replace(kernel_size=3), il.RunConfig(steps=4)]
    il.run_all(configs)                                     # fills this test's cache
    out = bench.book_jobs(il.cache_dir().parent, fraction=2)
    assert out["networks"] == 3                             # the CNNs, not the FCN
    assert sorted(job["size"] for job in out["jobs"]) == [1, 2]
    assert all(job["alone_cpu_s"] > 0 and job["grouped_cpu_s"] > 0 for job in out["jobs"])


def test_the_chapter_benchmark_counts_the_arithmetic_of_the_networks_a_chapter_used(monkeypatch):
    import identlib as il

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("chapters_script", ROOT / "bench" / "chapters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tol = il.RunConfig(model="fcn", depth=1, optimizer="gd", lr=0.5, steps=500, tol=1e-6)
    cnn = il.RunConfig(model="cnn", depth=2, channels=3, steps=5)
    runs = il.run_all([tol, cnn])
    taken = len(runs[0].loss)
    assert taken < 500                                      # stopped at tol: the steps taken count
    expected = (_bench().step_flops(tol) * taken + _bench().step_flops(cnn) * 5) / 1e9
    cache = il.cache_dir().parent
    assert module.train_gflop(cache, [tol.digest(), cnn.digest(), "0" * 12]) == pytest.approx(expected)


def test_adding_a_chapter_to_the_record_keeps_the_books_totals(monkeypatch, tmp_path):
    import json

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("chapters_script", ROOT / "bench" / "chapters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "chapters.json"
    out.write_text(json.dumps(CHAPTERS))
    monkeypatch.setattr(module, "OUT", out)
    timed = {}

    def time_chapters(names, cache, jobs, folder):
        timed.update(names=names, empty=not cache.exists())
        return {n: {"cold": 9.0, "warm": 1.0, "networks": 4, "train_gflop": 10.0} for n in names}, {}

    monkeypatch.setattr(module, "time_chapters", time_chapters)
    module.main(["--add", "c"])
    record = json.loads(out.read_text())
    assert timed == {"names": ["c"], "empty": True}          # alone, on a cache of its own
    assert record["book"] == CHAPTERS["book"] and list(record["meta"]["added"]) == ["c"]
    assert record["chapters"]["c"]["cold"] == 9.0 and "date" in record["chapters"]["c"]
    assert timings.chapter_table(record).loc["c", "timed"].startswith("alone")
    with pytest.raises(SystemExit):
        module.main(["--add"])                              # which chapters?
    kept = tmp_path / "kept"
    module.main(["--add", "c", "--cache", str(kept)])       # the networks kept in a folder of one's own
    assert timed == {"names": ["c"], "empty": True}
    (kept / "results" / "x").mkdir(parents=True)
    (kept / "results" / "x" / "config.json").write_text("{}")
    with pytest.raises(SystemExit):
        module.main(["--add", "c", "--cache", str(kept)])   # a filled cache: the cold pass would not be



def test_pool_table_gives_each_lever_against_the_way_before_it():
    pool = {"workers": {"new pool per call": {"wall_s": 2.0, "cpu_s": 5.0},
                        "pool kept": {"wall_s": 0.5, "cpu_s": 1.0}},
            "loading": {"FCN": {"drawn": 0.9, "meta": 0.003}, "CNN": {"drawn": 0.01, "meta": 0.01}}}
    workers, loading = timings.pool_table(pool)
    assert workers.loc["new / kept", "cpu_s"] == pytest.approx(5.0) and workers.loc["new / kept", "wall_s"] == 4.0
    assert loading.loc["FCN", "drawn / meta"] == pytest.approx(300.0) and loading.loc["CNN", "drawn / meta"] == 1.0


def test_the_cold_split_needs_the_training_time_and_the_goals_say_what_is_met():
    record = {"meta": {"cpu_minutes": 30.0, "float32_peak_gflops": [100.0]},
              "book": {"jobs": 2, "cold": 900.0, "warm": 40.0, "train_gflop": 60000.0}}
    assert timings.cold_split(record) is None                       # an older record: no split
    goals = timings.goals_table(record, cold_min=12, warm_s=30)
    assert list(goals.met) == [False, False] and goals["training needs % of peak"].isna().all()
    record["book"]["train_cpu_min"] = 20.0
    split = timings.cold_split(record)
    assert split["other_cpu_min"] == 10.0 and split["train_gflops"] == pytest.approx(50.0)
    goals = timings.goals_table(record, cold_min=5, warm_s=60)
    assert goals.loc["cold cache, min", "training needs % of peak"] == float("inf")   # the rest alone is 10 CPU-min
    assert bool(goals.loc["warm cache, s", "met"])


def test_the_chapter_benchmark_adds_up_the_training_time_the_cache_records(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("chapters_script", ROOT / "bench" / "chapters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, record in (("a", {"train_cpu_s": 1.5}), ("b", {"train_cpu_s": 2.0}), ("c", {})):
        (tmp_path / "results" / name).mkdir(parents=True)
        (tmp_path / "results" / name / "platform.json").write_text(json.dumps(record))
    assert module.train_cpu_s(tmp_path) == pytest.approx(3.5)
