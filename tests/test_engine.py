"""identlib.engine: grouped training equals training each member alone (to float rounding); the bf16
precision option; run_all and sweep train each config alone, as run() would, and store it."""
from __future__ import annotations

import pytest
import torch

import identlib
from identlib import data, engine, experiments
from identlib.config import ConfigError, RunConfig
from identlib.models import build_model, n_weights
from identlib.train import TrainingDiverged

# Grouped and lone training run the same arithmetic in a different order (a grouped convolution,
# a batched matrix product), so members agree with lone runs to float32 rounding, amplified a
# little by training: rtol 1e-4 on every weight (atol 1e-6 for weights near zero).
RTOL, ATOL = 1e-4, 1e-6

TINY = {
    "fcn": RunConfig(model="fcn", depth=3, width=24, activation="relu", steps=60),
    "cnn": RunConfig(model="cnn", depth=3, channels=6, activation="relu", steps=60),
}
OPTIMIZERS = {"gd": dict(optimizer="gd", lr=0.05, momentum=0.9), "adam": dict(optimizer="adam", lr=1e-3)}


def assert_same_run(lone: dict, member: dict) -> None:
    assert lone["state_dict"].keys() == member["state_dict"].keys()
    for k, v in lone["state_dict"].items():
        assert member["state_dict"][k].is_contiguous() and member["state_dict"][k].dtype == v.dtype
        torch.testing.assert_close(member["state_dict"][k], v, rtol=RTOL, atol=ATOL, msg=k)
    assert len(member["loss"]) == len(lone["loss"]) and member["converged"] == lone["converged"]
    torch.testing.assert_close(member["loss"], lone["loss"], rtol=RTOL, atol=0.0)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("model", TINY)
def test_grouped_training_equals_training_each_seed_alone(model, optimizer):
    configs = [TINY[model].replace(seed=s, **OPTIMIZERS[optimizer]) for s in (0, 1, 2)]
    grouped = engine.fit_configs(configs, progress=False)
    for config, (result, init_state) in zip(configs, grouped):
        lone, lone_init = experiments._train(config, progress=False)
        assert all(torch.equal(init_state[k], lone_init[k]) for k in lone_init)
        assert_same_run(lone, result)


@pytest.mark.parametrize("model", TINY)
def test_grouped_minibatches_follow_each_members_own_order(model):
    base = TINY[model].replace(optimizer="sgd", lr=0.05, n_train=40, batch_size=8, steps=12, bias=True)
    configs = [base.replace(seed=s) for s in (3, 4)]
    for config, (result, _) in zip(configs, engine.fit_configs(configs, progress=False)):
        assert_same_run(experiments._train(config, progress=False)[0], result)


def test_members_stop_at_tol_where_a_lone_run_stops():
    base = RunConfig(model="fcn", depth=3, width=8, activation="relu", optimizer="adam", lr=0.01,
                     steps=600, tol=1e-4)
    configs = [base.replace(seed=s) for s in (0, 1, 2, 3)]
    grouped = engine.fit_configs(configs, progress=False)
    for config, (result, _) in zip(configs, grouped):
        assert_same_run(experiments._train(config, progress=False)[0], result)
    outcomes = [(len(result["loss"]), result["converged"]) for result, _ in grouped]
    assert outcomes == [(100, True)] * 3 + [(600, False)]       # three stop early, one trains on


def test_grouped_divergence_raises():
    nets = [build_model(RunConfig(depth=2, width=8, seed=s), torch.Generator().manual_seed(s)) for s in (0, 1)]
    x = data.training_image().unsqueeze(0)
    with pytest.raises(TrainingDiverged, match="member 0 diverged"):
        engine.fit_group(nets, x, x, generators=[None, None], lr=1e3, steps=60)


def test_stack_rejects_mixed_models():
    nets = [build_model(TINY["fcn"], torch.Generator()), build_model(TINY["cnn"], torch.Generator())]
    with pytest.raises(TypeError, match="only CNNs or only FCNs"):
        engine.stack(nets)


# --- precision ------------------------------------------------------------------------------------

def test_bf16_trains_and_keeps_the_verdict():
    base = RunConfig(model="cnn", depth=2, channels=8, activation="relu", optimizer="adam", lr=3e-3,
                     steps=150)
    panel = data.test_panel()
    means = {}
    for precision in ("float32", "bf16"):
        r = experiments.run(base.replace(precision=precision), cache=False)
        assert r.final_loss < 0.1 * r.loss[0]
        df = experiments.evaluate([r], panel.images, family=panel.families)
        means[precision] = identlib.summarize(df, by="label").iloc[0]
    a, b = means["float32"], means["bf16"]
    assert abs(a.corr_identity - b.corr_identity) < 0.02 and abs(a.corr_constant - b.corr_constant) < 0.02
    assert a.verdict == b.verdict


def test_precision_is_validated():
    with pytest.raises(ConfigError, match="precision must be one of float32, bf16"):
        RunConfig(precision="fp16")
    with pytest.raises(ConfigError, match="precision bf16 needs dtype float32"):
        RunConfig(precision="bf16", dtype="float64")
    assert RunConfig().precision == "float32"


def test_precision_is_part_of_the_cache_key():
    """bf16 changes the trained network, so it changes the digest (tests/test_config.py checks
    every field). The fused optimizers and the thread count are not fields: every cached network
    is trained with the same ones (tests/test_experiments.py)."""
    assert RunConfig(precision="bf16").digest() != RunConfig().digest()
    assert RunConfig(precision="float32").digest() == RunConfig().digest()


# --- run_all and sweep ----------------------------------------------------------------------------

def no_grouping(*args, **kwargs):
    raise AssertionError("a cached network was trained in a seed group")


def test_run_all_trains_each_config_alone_and_stores_it(monkeypatch):
    """Grouped members equal lone runs only to float rounding (above), which a deep CNN can amplify;
    a cached network must not depend on which sweep trained it, so run_all never groups."""
    monkeypatch.setattr(engine, "fit_configs", no_grouping)
    configs = [TINY["cnn"].replace(seed=s) for s in (0, 1, 2)] + [TINY["fcn"]]
    runs = experiments.run_all(configs)
    lone = experiments.run(configs[1], cache=False)
    assert all(torch.equal(lone.model.state_dict()[k], v) for k, v in runs[1].model.state_dict().items())
    for c in configs:
        folder = experiments.cache_dir() / c.digest()
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "platform.json", "result.pt"]
        assert set(torch.load(folder / "result.pt", weights_only=True)) == {"state_dict", "loss", "converged", "format"}

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading from the cache")

    monkeypatch.setattr(experiments, "_train", no_training)
    again = experiments.run_all(configs)
    for a, b in zip(runs, again):
        assert all(torch.equal(a.model.state_dict()[k], v) for k, v in b.model.state_dict().items())


def test_run_all_keeps_the_init(monkeypatch):
    configs = [TINY["fcn"].replace(seed=s) for s in (0, 1)]
    experiments.run_all(configs, keep_init=True)
    monkeypatch.setattr(experiments, "_train", lambda *a, **k: pytest.fail("retrained"))
    r = experiments.run(configs[1], keep_init=True)
    init = build_model(configs[1], torch.Generator().manual_seed(1)).state_dict()
    assert all(torch.equal(r.init_state[k], init[k]) for k in init)


def test_sweep_trains_each_seed_alone(monkeypatch):
    monkeypatch.setattr(engine, "fit_configs", no_grouping)
    panel = data.test_panel()
    configs = [TINY["fcn"].replace(seed=s) for s in (0, 1)]
    df = experiments.sweep(configs, panel.images, name=panel.names)
    assert len(df) == 2 * len(panel.names) and set(df.seed) == {0, 1}


def test_a_diverging_run_in_a_sweep_names_itself():
    configs = [RunConfig(depth=2, width=8, lr=1e3, steps=60, seed=s) for s in (0, 1)]
    with pytest.raises(TrainingDiverged, match="fcn-linear-d2-w8: training diverged"):
        experiments.run_all(configs)


def test_stored_size_is_computed_from_the_config():
    for c in (TINY["fcn"], TINY["cnn"].replace(bias=True), RunConfig(model="cnn", depth=1, dtype="float64")):
        model = build_model(c, torch.Generator())
        assert experiments._stored_mb(c) == n_weights(model) * (8 if c.dtype == "float64" else 4) / 2**20
