"""identlib.engine: grouped training (members of any seed, init and, for CNNs, depth) equals training
each member alone, to float rounding; the bf16 precision option; run_all and sweep train their CNNs
in groups and store each member as run() would, or each alone with IDENTLIB_GROUP=0."""
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


@pytest.mark.parametrize("channels", [6, 2 * engine.CHANNELS_LAST_MAX])   # channels-last or not
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_cnns_of_any_depth_and_init_train_together_as_each_alone(optimizer, channels):
    base = TINY["cnn"].replace(bias=True, channels=channels, **OPTIMIZERS[optimizer])
    configs = [base.replace(depth=3, seed=0), base.replace(depth=1, seed=1),
               base.replace(depth=4, init="he", seed=2), base.replace(depth=2, init_scale=0.5, seed=3),
               base.replace(depth=4, seed=4)]
    for config, (result, init) in zip(configs, engine.fit_configs(configs, progress=False)):
        lone, lone_init = experiments._train(config, progress=False)
        assert all(torch.equal(init[k], lone_init[k]) for k in lone_init)
        assert_same_run(lone, result)


def test_cnns_of_any_depth_follow_their_own_minibatches():
    base = TINY["cnn"].replace(optimizer="sgd", lr=0.05, n_train=40, batch_size=8, steps=12)
    configs = [base.replace(depth=1, seed=3), base.replace(depth=3, seed=4), base.replace(depth=2, seed=5)]
    for config, (result, _) in zip(configs, engine.fit_configs(configs, progress=False)):
        assert_same_run(experiments._train(config, progress=False)[0], result)


def test_cnns_with_their_own_lr_momentum_loss_and_steps_train_together_as_each_alone():
    base = TINY["cnn"].replace(bias=True, optimizer="gd", lr=0.05, momentum=0.9)
    configs = [base, base.replace(depth=2, lr=0.02, seed=1), base.replace(momentum=0.0, seed=2),
               base.replace(loss_reduction="sum", lr=0.05 / 784, seed=3),
               base.replace(steps=25, depth=4, seed=4), base.replace(momentum=0.5, lr=0.1, steps=40)]
    for config, (result, _) in zip(configs, engine.fit_configs(configs, progress=False)):
        assert_same_run(experiments._train(config, progress=False)[0], result)


def test_a_group_learns_the_plain_loops_functions():
    """The lever as a reader would check it: each member of a mixed group (depths, inits, learning
    rates, momentum) computes the function the plain PyTorch loop trains from the same start, to
    far inside the claims' tolerances (0.05 in a mean correlation)."""
    from identlib.reference import plain_loop

    base = RunConfig(model="cnn", depth=4, channels=6, activation="relu", bias=True, optimizer="gd",
                     lr=0.01, momentum=0.9, steps=300)
    configs = [base, base.replace(depth=6, seed=1), base.replace(init="he", lr=0.005, seed=2),
               base.replace(momentum=0.0, lr=0.05, depth=2, seed=3)]
    panel = data.test_panel()
    for config, (result, _) in zip(configs, engine.fit_configs(configs, progress=False)):
        gen = torch.Generator().manual_seed(config.seed)
        plain = build_model(config, gen)
        plain_loop(plain, data.training_set(config), config, generator=gen)
        grouped = build_model(config)
        grouped.load_state_dict(result["state_dict"])
        means = []
        for net in (plain, grouped):
            net.eval()
            df = experiments.evaluate([experiments.Run(config, net, result["loss"].numpy(), False)],
                                      panel.images, family=panel.families)
            means.append(df[["corr_identity", "corr_constant"]].mean())
        assert (means[0] - means[1]).abs().max() < 1e-3, config.label()


def test_adam_groups_share_one_lr():
    base = TINY["cnn"].replace(optimizer="adam", lr=1e-3)
    assert engine.group_key(base) != engine.group_key(base.replace(lr=1e-2))
    with pytest.raises(ValueError, match="differ in seed"):
        engine.fit_configs([base, base.replace(lr=1e-2)])
    nets = [build_model(base, torch.Generator()) for _ in range(2)]
    x = data.training_image().unsqueeze(0)
    with pytest.raises(ValueError, match="Adam trains a group with one lr"):
        engine.fit_group(nets, x, x, generators=[None, None], optimizer="adam", lr=[1e-3, 1e-2])


def test_a_member_stops_at_its_own_steps():
    base = TINY["cnn"].replace(optimizer="adam", lr=1e-3)
    nets = [build_model(base.replace(seed=s), torch.Generator().manual_seed(s)) for s in (0, 1)]
    x = data.training_image().unsqueeze(0)
    out = engine.fit_group(nets, x, x, generators=[None, None], optimizer="adam", lr=1e-3, steps=60,
                           member_steps=[25, 60])
    assert [r.steps for r, _ in out] == [25, 60]
    short, _ = experiments._train(base.replace(seed=0, steps=25), progress=False)
    assert_same_run(short, {"state_dict": out[0][1], "loss": torch.from_numpy(out[0][0].loss),
                            "converged": out[0][0].converged})
    with pytest.raises(ValueError, match="member_steps must give each of the 2 members 1 to 60"):
        engine.fit_group(nets, x, x, generators=[None, None], steps=60, member_steps=[0, 60])


def test_fit_configs_rejects_configs_that_cannot_train_together():
    with pytest.raises(ValueError, match="differ in seed, init, init_scale, loss_reduction"):
        engine.fit_configs([TINY["cnn"], TINY["cnn"].replace(bias=True)])


def test_grouped_divergence_raises():
    nets = [build_model(RunConfig(depth=2, width=8, seed=s), torch.Generator().manual_seed(s)) for s in (0, 1)]
    x = data.training_image().unsqueeze(0)
    with pytest.raises(TrainingDiverged, match="member 0 diverged"):
        engine.fit_group(nets, x, x, generators=[None, None], lr=1e3, steps=60)


def test_narrow_groups_keep_their_activations_channels_last(monkeypatch):
    from identlib.models import CNN

    conv2d, seen = torch.nn.functional.conv2d, []
    monkeypatch.setattr(torch.nn.functional, "conv2d",
                        lambda h, *a, **k: seen.append((h, k.get("groups", 1))) or conv2d(h, *a, **k))
    for channels in (4, engine.CHANNELS_LAST_MAX, engine.CHANNELS_LAST_MAX + 1):
        group = engine.stack([CNN(3, channels=channels), CNN(3, channels=channels)])
        assert group.channels_last == (channels <= engine.CHANNELS_LAST_MAX)
        seen.clear()
        assert group(torch.rand(1, 2, 1, 28, 28)).shape == (2, 2, 1, 28, 28)
        hidden = [h for h, groups in seen if groups == 2]          # the second layer's input
        assert len(hidden) == 1
        assert hidden[0].is_contiguous(memory_format=torch.channels_last) == group.channels_last


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
    raise AssertionError("a network was trained in a group")


def stored(config) -> dict:
    return torch.load(experiments.cache_dir() / config.digest() / "result.pt", weights_only=True)


def test_run_all_trains_cnns_in_groups_and_stores_each_member(monkeypatch):
    configs = [TINY["cnn"].replace(seed=s, depth=d) for s, d in ((0, 3), (1, 3), (2, 1))] + [TINY["fcn"]]
    runs = experiments.run_all(configs)
    for c in configs:
        folder = experiments.cache_dir() / c.digest()
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "platform.json", "result.pt"]
        assert set(stored(c)) == {"state_dict", "loss", "converged", "format"}
        assert experiments.cache.platform_of(c)["group"] == (3 if c.model == "cnn" else 1)
    for c in configs[:3]:                        # each member learned what it learns alone
        assert_same_run(experiments._train(c, progress=False)[0], stored(c))
    monkeypatch.setattr(experiments, "_train", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(engine, "fit_configs", no_grouping)
    again = experiments.run_all(configs)
    for a, b in zip(runs, again):
        assert all(torch.equal(a.model.state_dict()[k], v) for k, v in b.model.state_dict().items())


def test_worker_processes_train_the_groups():
    configs = [TINY["cnn"].replace(seed=s, depth=d) for s, d in ((0, 3), (1, 2), (2, 3), (3, 1))]
    experiments.run_all(configs, workers=2)
    assert sorted(experiments.cache.platform_of(c)["group"] for c in configs) == [2, 2, 2, 2]
    for c in configs:
        assert_same_run(experiments._train(c, progress=False)[0], stored(c))


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_grouping_can_be_turned_off(monkeypatch, how):
    monkeypatch.setattr(engine, "fit_configs", no_grouping)
    configs = [TINY["cnn"].replace(seed=s) for s in (0, 1)]
    if how == "environment":
        monkeypatch.setenv("IDENTLIB_GROUP", "0")
        runs = experiments.run_all(configs)
    else:
        runs = experiments.run_all(configs, group=False)
    lone = experiments.run(configs[1], cache=False)
    assert all(torch.equal(lone.model.state_dict()[k], v) for k, v in runs[1].model.state_dict().items())
    assert experiments.cache.platform_of(configs[1])["group"] == 1


def test_a_bad_grouping_setting_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("IDENTLIB_GROUP", "yes")
    with pytest.raises(ConfigError, match="IDENTLIB_GROUP must be 0 or 1"):
        experiments.run_all([TINY["cnn"]])


def test_jobs_are_balanced_over_workers_and_bounded():
    fig3 = [RunConfig(model="cnn", channels=16, depth=d) for d in (1, 3, 5, 7, 9, 11, 12, 14, 15, 16, 18, 19, 20)]
    jobs = experiments.training_jobs(fig3, workers=2)
    assert sorted(c.depth for job in jobs for c in job) == sorted(c.depth for c in fig3)
    layers = [sum(c.depth for c in job) for job in jobs]
    assert len(jobs) == 2 and max(layers) - min(layers) <= 20
    assert all(len(job) <= engine.MAX_GROUP for job in experiments.training_jobs(fig3 * 2, workers=1)
               if job) and len(experiments.training_jobs(fig3, workers=1)) == 2
    other = [fig3[0].replace(lr=0.5), fig3[0].replace(bias=True), RunConfig(model="fcn")]
    assert sorted(map(len, experiments.training_jobs(fig3[:2] + other, workers=1))) == [1, 1, 3]


def test_a_diverging_member_is_dropped_and_the_others_train_on(monkeypatch):
    """A member that diverges stops; the others are stored from the group, and the sweep trains
    the diverging one alone, which reports it."""
    base = TINY["cnn"].replace(optimizer="gd", lr=0.05, momentum=0.9)
    configs = [base.replace(seed=0), base.replace(seed=1, lr=50.0), base.replace(seed=2, depth=2)]
    panel = data.test_panel()
    df = experiments.sweep(configs, panel.images, name=panel.names, diverged="report")
    assert df.groupby("seed").diverged.first().to_dict() == {0: False, 1: True, 2: False}
    assert [experiments.cache.platform_of(c)["group"] for c in (configs[0], configs[2])] == [3, 3]
    for c in (configs[0], configs[2]):
        assert_same_run(experiments._train(c, progress=False)[0], stored(c))
    with pytest.raises(TrainingDiverged, match="member 1 diverged .* lr=50.0"):
        engine.fit_configs(configs)


def test_keep_init_draws_the_init_again_instead_of_training(monkeypatch):
    config = TINY["cnn"].replace(seed=5)
    trained = experiments.run(config)
    monkeypatch.setattr(experiments, "_train", lambda *a, **k: pytest.fail("trained again"))
    r = experiments.run(config, keep_init=True)
    init = build_model(config, torch.Generator().manual_seed(5)).state_dict()
    assert all(torch.equal(r.init_state[k], init[k]) for k in init)
    assert all(torch.equal(r.model.state_dict()[k], v) for k, v in trained.model.state_dict().items())
    assert "init_state" in stored(config)


def test_run_all_keeps_the_init(monkeypatch):
    configs = [TINY["cnn"].replace(seed=s) for s in (0, 1)]
    experiments.run_all(configs, keep_init=True)
    monkeypatch.setattr(experiments, "_train", lambda *a, **k: pytest.fail("retrained"))
    r = experiments.run(configs[1], keep_init=True)
    init = build_model(configs[1], torch.Generator().manual_seed(1)).state_dict()
    assert all(torch.equal(r.init_state[k], init[k]) for k in init)


def test_sweep_trains_fcns_alone(monkeypatch):
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


# --- one process trains a network, others wait for it -----------------------------------------------

def test_a_network_another_process_trains_is_waited_for_not_trained_again(monkeypatch):
    """Chapters executed side by side need some networks in common: the first to start one holds its
    lock, and the other waits and loads it."""
    import subprocess
    import sys
    import time

    config = TINY["cnn"].replace(steps=400, seed=7)
    script = ("import sys, time, identlib\n"
              f"c = identlib.RunConfig(**{config.to_dict()!r})\n"
              "with identlib.cache.claim(c):\n"
              "    print('holding', flush=True)\n"
              "    sys.stdin.readline()\n"
              "    result = identlib.experiments._train(c, False)[0]\n"
              "    time.sleep(1)\n"
              "    identlib.cache.store_result(c, result)\n")
    other = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout.readline().strip() == "holding"
        monkeypatch.setattr(experiments, "_train", lambda *a, **k: pytest.fail("trained again"))
        monkeypatch.setattr(engine, "fit_configs", no_grouping)
        with experiments.cache.claim(config, wait=False) as mine:
            assert not mine.held
        experiments._train_uncached([config, config.replace(seed=8)], workers=0)  # skips the held one
        start = time.monotonic()
        other.stdin.write("\n")
        other.stdin.flush()
        r = experiments.run(config)                       # waits for the other process, then loads
        assert torch.equal(r.model.state_dict()["layers.0.weight"], stored(config)["state_dict"]["layers.0.weight"])
        assert time.monotonic() - start < 120
    finally:
        other.kill()
        other.wait()


def test_a_group_is_of_one_length():
    """fit_configs trains members of any length, but run_all groups only runs of one length: a
    group trains as long as its longest member."""
    base = TINY["cnn"]
    assert engine.group_key(base) != engine.group_key(base.replace(steps=2 * base.steps))
    jobs = experiments.training_jobs([base, base.replace(seed=1), base.replace(steps=120)], workers=1)
    assert sorted(len(j) for j in jobs) == [1, 2]
