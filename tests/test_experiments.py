"""identlib.experiments (runs, the results cache, sweeps, evaluation) and identlib.runtime."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import identlib
from identlib import data, experiments
from identlib.config import ConfigError, RunConfig
from identlib.metrics import METRICS, scores
from identlib.models import build_model

TINY = RunConfig(model="fcn", depth=2, width=16, steps=20, lr=0.05)


def weights_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def no_training(*args, **kwargs):
    raise AssertionError("trained again instead of loading from the cache")


# --- run and the cache ---------------------------------------------------------------------------

def test_run_trains_and_returns_a_run():
    run = experiments.run(TINY)
    assert run.config == TINY
    assert len(run.loss) == 20 and run.final_loss == run.loss[-1] < run.loss[0]
    assert not run.model.training and run.init_state is None
    assert run.converged is False


def test_second_run_loads_identical_weights_from_cache(monkeypatch):
    first = experiments.run(TINY)
    monkeypatch.setattr(experiments, "_train", no_training)
    second = experiments.run(TINY)
    assert weights_equal(first.model, second.model)
    assert np.array_equal(first.loss, second.loss) and first.converged == second.converged


def test_training_is_reproducible_without_cache():
    a = experiments.run(TINY, cache=False)
    b = experiments.run(TINY, cache=False)
    assert weights_equal(a.model, b.model)
    assert not experiments.cache_dir().exists()                 # cache=False writes nothing


def test_cache_folder_holds_config_and_result(tmp_path):
    experiments.run(TINY)
    root = experiments.cache_dir()
    assert root == tmp_path / "cache" / "results"
    assert [p.name for p in root.iterdir()] == [TINY.digest()]
    folder = root / TINY.digest()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "platform.json", "result.pt"]
    assert json.loads((folder / "config.json").read_text()) == TINY.to_dict()
    payload = torch.load(folder / "result.pt", weights_only=True)
    assert set(payload) == {"state_dict", "loss", "converged", "format"}   # no init unless asked


def test_stored_networks_record_their_training_cpu_time():
    """platform.json holds the CPU seconds each network's training took: a lone one its own, a
    group's members each an equal share of the group's (how the Runtime chapter splits time)."""
    from identlib import cache

    lone = experiments.run(TINY)
    assert cache.platform_of(lone.config)["train_cpu_s"] > 0
    cnn = RunConfig(model="cnn", depth=3, channels=4, steps=20, optimizer="gd", lr=0.01)
    members = [cnn.replace(seed=s) for s in (1, 2, 3)]
    experiments.run_all(members, workers=0)
    records = [cache.platform_of(c) for c in members]
    assert [r["group"] for r in records] == [3, 3, 3]
    assert len({r["train_cpu_s"] for r in records}) == 1 and records[0]["train_cpu_s"] > 0


def test_different_configs_get_different_cache_entries():
    experiments.run_all([TINY, TINY.replace(seed=1)])
    assert len(list(experiments.cache_dir().iterdir())) == 2


def test_keep_init_returns_initial_weights(monkeypatch):
    run = experiments.run(TINY, keep_init=True)
    init = build_model(TINY, torch.Generator().manual_seed(TINY.seed)).state_dict()
    assert run.init_state.keys() == init.keys()
    assert all(torch.equal(run.init_state[k], init[k]) for k in init)
    assert not torch.equal(run.init_state["layers.0.weight"], run.model.layers[0].weight)
    monkeypatch.setattr(experiments, "_train", no_training)      # and it is cached with the result
    again = experiments.run(TINY, keep_init=True)
    assert all(torch.equal(again.init_state[k], init[k]) for k in init)


def test_keep_init_after_plain_run_is_cached(monkeypatch):
    experiments.run(TINY)
    experiments.run(TINY, keep_init=True)                       # retrains to recover the init
    monkeypatch.setattr(experiments, "_train", no_training)
    assert experiments.run(TINY, keep_init=True).init_state is not None


def test_interrupted_store_leaves_no_entry_and_next_run_succeeds(monkeypatch):
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(torch, "save", broken_save)
        with pytest.raises(OSError, match="disk full"):
            experiments.run(TINY)
    root = experiments.cache_dir()
    assert list(root.iterdir()) == []                           # no entry, no temporary folder
    assert torch.save is real_save
    run = experiments.run(TINY)
    assert (root / TINY.digest() / "result.pt").exists()
    assert [p.name for p in root.iterdir()] == [TINY.digest()]
    assert len(run.loss) == 20


def test_training_set():
    one = experiments.training_set(RunConfig())
    assert one.shape == (1, 1, 28, 28) and torch.equal(one[0], data.training_image())
    three = experiments.training_set(RunConfig(n_train=3, dtype="float64"))
    assert three.shape == (3, 1, 28, 28) and three.dtype == torch.float64
    with pytest.raises(ValueError, match="n_train"):
        experiments.training_set(RunConfig(n_train=60001))


def test_cnn_run():
    run = experiments.run(RunConfig(model="cnn", depth=2, channels=4, steps=10, lr=0.01))
    assert run.model(data.training_image().unsqueeze(0)).shape == (1, 1, 28, 28)


# --- sweeps --------------------------------------------------------------------------------------

def test_grid_is_the_product_of_axes_in_order():
    configs = experiments.grid(TINY, depth=[1, 2, 3], seed=[0, 1])
    assert [(c.depth, c.seed) for c in configs] == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    assert all(c.replace(depth=TINY.depth, seed=TINY.seed) == TINY for c in configs)


def test_grid_without_axes_is_the_base():
    assert experiments.grid(TINY) == [TINY]


def test_grid_validates():
    with pytest.raises(ConfigError, match="unknown config field"):
        experiments.grid(TINY, depths=[1, 2])
    with pytest.raises(ConfigError, match="depth"):
        experiments.grid(TINY, depth=[1, 0])


def test_run_all_keeps_order():
    configs = experiments.grid(TINY, seed=[2, 0, 1])
    assert [r.config.seed for r in experiments.run_all(configs)] == [2, 0, 1]


def test_predict_returns_float32_in_batches():
    model = build_model(TINY.replace(dtype="float64"), torch.Generator().manual_seed(0))
    images = torch.rand(5, 1, 28, 28)
    out = experiments.predict(model, images, batch=2)
    assert out.shape == (5, 1, 28, 28) and out.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(out, model(images.double()).float())


def test_evaluate_is_tidy_one_row_per_run_and_input():
    runs = experiments.run_all(experiments.grid(TINY, depth=[2, 3], seed=[0, 1]))
    panel = data.test_panel()
    df = experiments.evaluate(runs, panel.images, name=panel.names, family=panel.families)
    assert len(df) == 4 * 13
    assert set(df.columns) == {"label", "depth", "seed", "name", "family", *METRICS, "final_loss"}
    assert list(df.columns[-5:]) == [*METRICS, "final_loss"]
    finals = {r.config.label() + str(r.config.seed): r.final_loss for r in runs}
    assert all(df.final_loss == [finals[lab + str(s)] for lab, s in zip(df.label, df.seed)])
    assert df.groupby(["depth", "seed"]).size().tolist() == [13] * 4
    assert df["name"].tolist() == list(panel.names) * 4
    assert df[list(METRICS)].notna().all().all()
    assert df["label"].iloc[0] == "fcn-linear-d2-w16" and df["label"].iloc[-1] == "fcn-linear-d3-w16"


def test_evaluate_scores_match_metrics():
    run = experiments.run(TINY)
    inputs = data.test_images("mnist", 4)
    df = experiments.evaluate([run], inputs, fields=["lr"])
    assert list(df.columns[:2]) == ["label", "lr"]
    expected = scores(experiments.predict(run.model, inputs), inputs, data.training_image())
    for metric in METRICS:
        assert np.allclose(df[metric].to_numpy(), expected[metric].numpy())


def test_evaluate_with_explicit_x_hat():
    run = experiments.run(TINY)
    inputs = data.test_images("mnist", 3)
    df = experiments.evaluate([run], inputs, x_hat=inputs[0])
    assert df["mse_constant"].iloc[0] == pytest.approx(df["mse_identity"].iloc[0])


# --- runtime.setup -------------------------------------------------------------------------------

@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_setup_sets_threads(restore_threads):
    info = identlib.setup(threads=3)
    assert torch.get_num_threads() == 3
    assert info == {"identlib": identlib.__version__, "torch": torch.__version__.split("+")[0],
                    "threads": 3, "training_threads": 1}


def test_setup_threads_default_from_environment(restore_threads, monkeypatch):
    monkeypatch.setenv("IDENTLIB_THREADS", "1")
    assert identlib.setup()["threads"] == 1 and torch.get_num_threads() == 1
    monkeypatch.delenv("IDENTLIB_THREADS")
    assert identlib.setup()["threads"] == 2


def test_setup_require_matching_version(restore_threads):
    assert identlib.setup(threads=1, require=identlib.__version__)["identlib"] == identlib.__version__


def test_setup_require_wrong_version_says_how_to_fix(restore_threads):
    with pytest.raises(RuntimeError, match="pip install") as err:
        identlib.setup(require="9.9.9")
    assert "9.9.9" in str(err.value) and identlib.__version__ in str(err.value)


# --- sweep: scores cached per config and per set of inputs ---------------------------------------

def test_sweep_caches_scores_per_inputs(monkeypatch):
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    configs = experiments.grid(TINY, seed=[0, 1])
    first = experiments.sweep(configs, x, name=["a", "b", "c"])
    assert len(first) == 6 and list(first["seed"]) == [0, 0, 0, 1, 1, 1]
    assert {"label", "name", "corr_identity", "corr_constant", "mse_identity", "mse_constant"} <= set(first)
    monkeypatch.setattr(experiments, "run", lambda *a, **k: pytest.fail("must come from the cache"))
    again = experiments.sweep(configs, x, name=["a", "b", "c"])
    assert again.equals(first)
    with pytest.raises(BaseException, match="must come from the cache"):   # other inputs: recomputed
        experiments.sweep(configs, x.flip(0), name=["a", "b", "c"])


def test_large_weights_are_not_stored_but_their_scores_are(monkeypatch):
    monkeypatch.setattr(experiments, "MAX_STORED_MB", 0.0)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    experiments.sweep([TINY], x)
    folder = experiments.cache_dir() / TINY.digest()
    assert not (folder / "result.pt").exists()
    assert len(list(folder.glob("scores-*.pkl"))) == 1
    assert json.loads((folder / "config.json").read_text()) == TINY.to_dict()


def test_scores_of_large_networks_are_computed_in_workers(monkeypatch, tmp_path):
    """Networks too large to store train and score two at a time in workers, which store only
    their score tables: the same table as training them one at a time here, and nothing trained
    here."""
    monkeypatch.setenv("IDENTLIB_CACHE_MAX_MB", "0")          # what the spawned workers read
    monkeypatch.setattr(experiments, "MAX_STORED_MB", 0.0)
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    configs = experiments.grid(TINY, seed=[0, 1, 2])
    here = experiments.sweep(configs, x, workers=0, name=["a", "b", "c"])
    monkeypatch.setenv("IDENTLIB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(experiments, "_train", no_training)   # this process trains nothing
    pooled = experiments.sweep(configs, x, workers=2, name=["a", "b", "c"])
    folders = [tmp_path / "results" / c.digest() for c in configs]
    assert not any((f / "result.pt").exists() for f in folders)
    assert all(len(list(f.glob("scores-*.pkl"))) == 1 for f in folders)
    score_cols = ["corr_identity", "corr_constant", "mse_identity", "mse_constant"]
    np.testing.assert_allclose(pooled[score_cols].to_numpy(), here[score_cols].to_numpy(), rtol=1e-5,
                               atol=1e-6)
    assert list(pooled["name"]) == list(here["name"]) and list(pooled["seed"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_run_all_in_worker_processes_matches_in_process_training(restore_threads):
    """Workers train with one thread each, as this process does: a network trained alone in a
    worker is what run() gives here, bit for bit, even while this process uses two threads
    (grouped training in workers: tests/test_engine.py)."""
    base = RunConfig(model="cnn", depth=3, channels=4, bias=True, init="default", optimizer="gd",
                     momentum=0.9, lr=0.01, steps=30)
    configs = [base.replace(seed=0), base.replace(seed=1), base.replace(depth=2)]
    pooled = experiments.run_all(configs, workers=2, group=False)
    assert all((experiments.cache_dir() / c.digest() / "result.pt").exists() for c in configs)
    torch.set_num_threads(2)
    for r, c in zip(pooled, configs):
        single = experiments.run(c, cache=False)
        for k, v in single.model.state_dict().items():
            assert torch.equal(r.model.state_dict()[k], v), k
    assert [r.config for r in pooled] == configs


def test_worker_processes_are_kept_between_calls_and_started_again_for_another_cache(tmp_path, monkeypatch):
    """run_all's workers outlive the call (a chapter that trains in many rounds starts them once),
    and a call under another results cache gets new ones, which store there: a kept worker never
    trains into the cache it was started for when the caller has moved on."""
    base = RunConfig(model="cnn", depth=2, channels=4, steps=5)
    experiments.shutdown_pool()
    try:
        experiments.run_all([base.replace(seed=0)], workers=1)
        first = set(experiments._POOL["pool"]._processes)
        experiments.run_all([base.replace(seed=1)], workers=1)
        assert set(experiments._POOL["pool"]._processes) == first and len(first) == 1
        old = experiments.cache_dir()
        monkeypatch.setenv("IDENTLIB_CACHE_DIR", str(tmp_path / "other"))
        run = experiments.run_all([base.replace(seed=2)], workers=1)[0]
        assert set(experiments._POOL["pool"]._processes).isdisjoint(first)
        assert (tmp_path / "other" / "results" / run.config.digest() / "result.pt").exists()
        assert not (old / run.config.digest()).exists()
    finally:
        experiments.shutdown_pool()


def test_a_failing_task_keeps_what_finished_and_the_workers(tmp_path):
    """A task that raises: the tasks finished before it are kept, its error is raised, and the next
    call runs in the same worker."""
    import os

    experiments.shutdown_pool()
    (tmp_path / "exists").mkdir()
    try:
        with pytest.raises(FileExistsError):
            experiments.in_pool(os.makedirs, [(str(tmp_path / "a"),), (str(tmp_path / "exists"),)], 1)
        assert (tmp_path / "a").is_dir()
        worker = set(experiments._POOL["pool"]._processes)
        experiments.in_pool(os.makedirs, [(str(tmp_path / "b"),)], 1)
        assert (tmp_path / "b").is_dir() and set(experiments._POOL["pool"]._processes) == worker
    finally:
        experiments.shutdown_pool()


def test_workers_from_a_script_without_a_main_guard_say_what_to_do(tmp_path):
    """Worker processes start by importing the calling script; without the __main__ guard they
    die, and the error says why instead of multiprocessing's BrokenProcessPool."""
    import subprocess
    import sys

    script = tmp_path / "sweep.py"
    script.write_text("import identlib\n"
                      "identlib.run_all([identlib.RunConfig(depth=1, steps=3)], workers=1)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert 'if __name__ == "__main__":' in out.stderr and "workers=0" in out.stderr


@pytest.mark.parametrize("model", ["cnn", "fcn"])
def test_a_trained_network_does_not_depend_on_the_process_thread_count(restore_threads, model):
    """Cached networks are trained on one thread whatever the process uses (two threads round
    differently, and a chapter's cold and warm runs must print the same numbers)."""
    base = (RunConfig(model="cnn", depth=6, channels=16, bias=True, init="default", optimizer="gd",
                      momentum=0.9, lr=0.01, steps=40) if model == "cnn" else
            RunConfig(model="fcn", depth=3, width=784, activation="relu", optimizer="gd", lr=0.01, steps=40))
    torch.set_num_threads(2)
    two = experiments.run(base, cache=False)
    assert torch.get_num_threads() == 2                     # restored after training
    torch.set_num_threads(1)
    one = experiments.run(base, cache=False)
    swept = experiments.run_all([base, base.replace(seed=1)], group=False)[0]
    for k, v in one.model.state_dict().items():
        assert torch.equal(two.model.state_dict()[k], v), k
        assert torch.equal(swept.model.state_dict()[k], v), k


def test_sweep_reports_a_diverged_run_and_caches_the_outcome(monkeypatch):
    x = data.training_image(15)[None]
    good = RunConfig(model="fcn", depth=1, optimizer="gd", lr=0.01, steps=5)
    bad = good.replace(loss_reduction="sum", lr=10.0, steps=200)
    with pytest.raises(identlib.TrainingDiverged):
        experiments.sweep([bad], x)
    table = experiments.sweep([good, bad], x, diverged="report")
    assert table.diverged.tolist() == [False, True]
    assert table.corr_identity.isna().tolist() == [False, True]
    assert (experiments.cache_dir() / bad.digest() / "diverged.txt").read_text().startswith(bad.label())
    monkeypatch.setattr(experiments, "_train", lambda *a, **k: pytest.fail("retrained"))
    again = experiments.sweep([good, bad], x, diverged="report")
    assert again.diverged.tolist() == [False, True]


def test_a_trace_lists_the_networks_a_process_uses(tmp_path, monkeypatch):
    trace = tmp_path / "trace.txt"
    monkeypatch.setenv("IDENTLIB_TRACE", str(trace))
    configs = experiments.grid(TINY, seed=[0, 1])
    experiments.sweep(configs, data.training_image(15)[None])
    assert set(trace.read_text().split()) == {c.digest() for c in configs}
    trace.unlink()
    experiments.sweep(configs, data.training_image(15)[None])       # from the cached scores
    experiments.run(configs[0])
    assert trace.read_text().split() == [c.digest() for c in configs] + [configs[0].digest()]
