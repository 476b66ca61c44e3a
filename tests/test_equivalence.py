"""The engine's options train the same function as the plain path, to the tolerance stated in each
test, and the results cache is keyed on everything that changes a result.

Grouped training against lone runs is in tests/test_engine.py; that every config field changes the
digest is in tests/test_config.py.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import identlib
from identlib import config, data, engine, experiments
from identlib.config import RunConfig
from identlib.models import build_model
from identlib.reference import plain_loop
from identlib.train import TrainingDiverged, train

TINY = RunConfig(model="cnn", depth=3, channels=6, kernel_size=5, activation="relu", bias=True,
                 init="default", optimizer="gd", momentum=0.9, lr=0.05, steps=40)


def engine_run(c: RunConfig, precision: str = "float32", **kw):
    net = build_model(c, torch.Generator().manual_seed(c.seed))
    x = experiments.training_set(c)
    out = train(net, x, x, optimizer=c.optimizer, lr=c.lr, momentum=c.momentum, steps=c.steps,
                tol=c.tol, precision=precision, progress=False, **kw)
    return net, out


def outputs(net) -> torch.Tensor:
    """The trained function, sampled: the outputs on the 13-image test panel (pixels in [0, 1])."""
    return experiments.predict(net, data.test_panel().images)


@pytest.fixture(scope="module")
def plain():
    net = build_model(TINY, torch.Generator().manual_seed(0))
    losses = plain_loop(net, experiments.training_set(TINY), TINY)
    return net, losses


def test_fused_gd_is_the_plain_loop_bit_for_bit():
    """Without momentum the fused optimizer does exactly the unfused one's float32 arithmetic."""
    c = TINY.replace(momentum=0.0)
    ref = build_model(c, torch.Generator().manual_seed(0))
    losses = plain_loop(ref, experiments.training_set(c), c)
    net, out = engine_run(c)
    for k, v in ref.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k
    assert out.loss.tolist() == losses


def test_fused_momentum_gd_equals_the_plain_loop_to_float_rounding(plain):
    """With momentum the fused kernel rounds the velocity update differently (one fused multiply-add):
    the first step is identical, and after 40 steps the weights agree to rtol 1e-5 (measured: 4e-7
    of the largest weight) and the outputs to 1e-5 absolute (measured: 7e-7)."""
    net, out = engine_run(TINY)
    for k, v in plain[0].state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v, rtol=1e-5, atol=1e-7, msg=k)
    torch.testing.assert_close(outputs(net), outputs(plain[0]), rtol=0, atol=1e-5)
    assert out.loss[1] == pytest.approx(plain[1][1], rel=1e-6)


def test_fused_adam_equals_the_plain_loop_to_float_rounding():
    """Adam's fused kernel orders its arithmetic differently: weights agree to rtol 1e-5 after 40
    steps (the outputs to 1e-5 absolute)."""
    c = TINY.replace(optimizer="adam", lr=1e-3, momentum=0.0)
    ref = build_model(c, torch.Generator().manual_seed(0))
    plain_loop(ref, experiments.training_set(c), c)
    net, _ = engine_run(c)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v, rtol=1e-5, atol=1e-7, msg=k)
    torch.testing.assert_close(outputs(net), outputs(ref), rtol=0, atol=1e-5)


def test_bf16_trains_nearly_the_same_function(plain):
    """bfloat16 keeps 8 significant bits in the products: after 40 steps the outputs on the test
    panel differ from float32's by at most 0.03 per pixel (measured: 0.008), and their
    correlations to identity and to constant by at most 0.01."""
    net, out = engine_run(TINY, precision="bf16")
    a, b = outputs(plain[0]), outputs(net)
    assert (a - b).abs().max() < 0.03
    panel = data.test_panel()
    sa, sb = (identlib.scores(o[1:], panel.images[1:], panel.images[0]) for o in (a, b))
    for k in ("corr_identity", "corr_constant"):
        assert abs(float(sa[k].mean()) - float(sb[k].mean())) < 0.01, k
    assert out.loss[-1] < 0.5 * out.loss[0]                   # and it trains


def test_stopping_at_tol_is_the_truncated_run():
    """A run that stops at tol after k steps is, bit for bit, the run of k steps without tol."""
    c = TINY.replace(steps=400, tol=0.02)
    early, out = engine_run(c)
    assert out.converged and out.steps < 400 and out.steps % 50 == 0       # checked every 50 steps
    truncated, ref = engine_run(c.replace(steps=out.steps, tol=0.0))
    assert not ref.converged and out.loss.tolist() == ref.loss.tolist()
    for k, v in truncated.state_dict().items():
        assert torch.equal(early.state_dict()[k], v), k


def test_grouped_members_stopping_at_tol_are_their_truncated_runs():
    """In a group, a member that reaches tol is stored as its own run of that many steps (to the
    grouping tolerance of tests/test_engine.py, rtol 1e-4)."""
    configs = [TINY.replace(steps=400, tol=0.02, seed=s) for s in (0, 1)]
    for c, (result, _) in zip(configs, engine.fit_configs(configs, progress=False)):
        steps = len(result["loss"])
        truncated, _ = experiments._train(c.replace(steps=steps, tol=0.0), progress=False)
        for k, v in truncated["state_dict"].items():
            torch.testing.assert_close(result["state_dict"][k], v, rtol=1e-4, atol=1e-6, msg=k)


FCN = RunConfig(model="fcn", depth=3, width=96, activation="relu", init="default", optimizer="gd",
                lr=3e-4, loss_reduction="sum", steps=60)


@pytest.mark.parametrize("activation", ["relu", "linear"])
@pytest.mark.parametrize("loss_reduction, lr", [("sum", 1e-3), ("mean", 1.0)])
@pytest.mark.parametrize("n_train, batch_size", [(1, 0), (12, 4)])
def test_fcn_steps_by_hand_train_the_plain_loops_function(activation, loss_reduction, lr, n_train,
                                                          batch_size, monkeypatch):
    """A bias-free FCN trained by plain gradient steps takes them by hand (train.fcn_gd_step), which
    rounds the weight update once (a fused multiply-add) where autograd and the optimizer round
    twice: after 60 steps the weights agree with the plain loop's to rtol 1e-5 (measured: 5e-7 of the
    largest weight), the outputs to 1e-5 absolute (measured: 5e-7), and the losses to rtol 1e-5
    (measured: 3e-7), full batch and minibatch, summed and mean loss."""
    import importlib

    train_module = importlib.import_module("identlib.train")     # (identlib.train is the function)
    c = FCN.replace(activation=activation, loss_reduction=loss_reduction, lr=lr, n_train=n_train,
                    batch_size=batch_size, optimizer="sgd" if batch_size else "gd")
    x = experiments.training_set(c)
    ref = build_model(c, torch.Generator().manual_seed(0))
    plain_losses = plain_loop(ref, x, c, generator=torch.Generator().manual_seed(1))
    calls = []
    real = train_module.fcn_gd_step
    monkeypatch.setattr(train_module, "fcn_gd_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    net = build_model(c, torch.Generator().manual_seed(0))
    out = train(net, x, x, optimizer=c.optimizer, lr=c.lr, steps=c.steps, loss_reduction=c.loss_reduction,
                batch_size=c.batch_size, generator=torch.Generator().manual_seed(1), progress=False)
    assert len(calls) == c.steps                              # every step was taken by hand
    assert out.loss[-1] < 0.9 * out.loss[0]                   # and it trains
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v, rtol=1e-5, atol=1e-7, msg=k)
    torch.testing.assert_close(outputs(net), outputs(ref), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out.loss, plain_losses, rtol=1e-5)


@pytest.mark.parametrize("change", [dict(momentum=0.9), dict(optimizer="adam"), dict(bias=True),
                                    dict(precision="bf16"), dict(model="cnn", depth=2, channels=4)])
def test_other_networks_and_optimizers_step_through_autograd(change):
    from identlib.train import _steps_by_hand

    c = FCN.replace(**change)
    net = build_model(c, torch.Generator().manual_seed(0))
    assert _steps_by_hand(net, c.optimizer, c.momentum, c.precision, c.loss_reduction) is None
    assert _steps_by_hand(build_model(FCN), "gd", 0.0, "float32", "sum") is not None


def test_an_fcn_step_by_hand_diverges_as_the_plain_one_does():
    """A learning rate that blows the loss up is caught on the hand path too."""
    c = FCN.replace(lr=1.0)
    net = build_model(c, torch.Generator().manual_seed(0))
    x = experiments.training_set(c)
    with pytest.raises(TrainingDiverged, match="smaller lr"):
        train(net, x, x, optimizer="gd", lr=c.lr, steps=100, loss_reduction="sum", progress=False)


# --- the cache key ----------------------------------------------------------------------------------

def test_digest_changes_with_the_package_version(monkeypatch):
    before = RunConfig().digest()
    monkeypatch.setattr(identlib, "__version__", "0.0.0-test")
    assert RunConfig().digest() != before


def test_digest_changes_with_the_torch_version(monkeypatch):
    before = RunConfig().digest()
    monkeypatch.setattr(torch, "__version__", "0.0.0-test")
    assert RunConfig().digest() != before


def _copy_package(tmp_path, monkeypatch):
    """A copy of the package's modules, which config.source_digest then reads."""
    here = config.Path(config.__file__).parent
    for path in here.glob("*.py"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(config, "__file__", str(tmp_path / "config.py"))
    return tmp_path


def _edit(folder, module, text=b"\n_edited = 1\n"):
    (folder / module).write_bytes((folder / module).read_bytes() + text)


@pytest.mark.parametrize("module", config.DIGEST_MODULES["network"])
def test_editing_a_training_module_invalidates_networks(module, tmp_path, monkeypatch):
    before = RunConfig().digest()
    folder = _copy_package(tmp_path, monkeypatch)
    assert RunConfig().digest() == before                     # the copy digests as the original
    _edit(folder, module)
    assert RunConfig().digest() != before


@pytest.mark.parametrize("module", config.DIGEST_MODULES["network"])
def test_editing_comments_and_docstrings_keeps_networks(module, tmp_path, monkeypatch):
    before = RunConfig().digest()
    folder = _copy_package(tmp_path, monkeypatch)
    source = (folder / module).read_text()
    first_doc = source.index('"""') + 3
    (folder / module).write_text(source[:first_doc] + "Edited documentation. " + source[first_doc:])
    _edit(folder, module, b"\n# a comment\n")
    assert (folder / module).read_text() != source and RunConfig().digest() == before


@pytest.mark.parametrize("module", ["experiments.py", "cache.py", "cli.py", "chapters.py", "plot.py",
                                    "theory.py", "config.py", "metrics.py", "layers.py", "timings.py"])
def test_editing_code_that_trains_nothing_keeps_networks(module, tmp_path, monkeypatch):
    """The cache and sweep plumbing (which only schedules training), the command line, plotting,
    theory, validation, metrics, layer maps and the benchmark's tables do not shape trained
    weights. The grouped engine does (it is in the network digest)."""
    before = RunConfig().digest()
    _edit(_copy_package(tmp_path, monkeypatch), module)
    assert RunConfig().digest() == before


def test_editing_metrics_invalidates_scores_but_not_networks(tmp_path, monkeypatch):
    panel = data.test_panel()
    first = experiments.sweep([TINY], panel.images, name=panel.names)
    folder = _copy_package(tmp_path, monkeypatch)
    _edit(folder, "metrics.py")
    monkeypatch.setattr(experiments, "_train", lambda *a, **k: pytest.fail("retrained a network"))
    calls = []
    real = experiments._score_frame
    monkeypatch.setattr(experiments, "_score_frame", lambda *a: calls.append(1) or real(*a))
    again = experiments.sweep([TINY], panel.images, name=panel.names)
    assert calls == [1]                                       # the scores were computed again
    assert first.equals(again)


def test_editing_the_sweep_plumbing_invalidates_nothing(tmp_path, monkeypatch):
    panel = data.test_panel()
    experiments.sweep([TINY], panel.images, name=panel.names)
    folder = _copy_package(tmp_path, monkeypatch)
    _edit(folder, "experiments.py")
    monkeypatch.setattr(experiments, "_train", lambda *a, **k: pytest.fail("retrained a network"))
    monkeypatch.setattr(experiments, "_score_frame", lambda *a: pytest.fail("scored again"))
    experiments.sweep([TINY], panel.images, name=panel.names)


def test_editing_layers_invalidates_layer_maps_only(tmp_path, monkeypatch):
    from identlib import cache
    before = {k: cache.artifact_name("x", k) for k in config.DIGEST_MODULES}
    _edit(_copy_package(tmp_path, monkeypatch), "layers.py")
    after = {k: cache.artifact_name("x", k) for k in config.DIGEST_MODULES}
    assert after["layers"] != before["layers"]
    assert after["scores"] == before["scores"] and after["network"] == before["network"]


def _package_imports(module: str) -> set[str]:
    """identlib's modules that ``module`` (a file name) imports at module level, directly or not."""
    import ast

    here = config.Path(config.__file__).parent
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or not (here / name).exists():
            continue
        seen.add(name)
        for node in ast.parse((here / name).read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo += [f"{node.module}.py"] if node.module else [f"{a.name}.py" for a in node.names]
    return seen


def test_the_modules_that_train_are_in_the_network_digest():
    """Every module that train.py (which holds fit), engine.py (grouped training) and models.py
    import is in the digest, except config.py, whose RunConfig fields are in the digest as content."""
    trains = _package_imports("train.py") | _package_imports("engine.py") | _package_imports("models.py")
    assert trains <= set(config.DIGEST_MODULES["network"]) | {"config.py"}


def test_how_a_network_is_trained_is_not_in_the_cache_key():
    """Every cached network is trained on one thread, alone or in a group (tests/test_experiments.py
    checks that the process's thread count and the worker count change nothing, tests/test_engine.py
    that a group changes nothing beyond float rounding), so none of them is in the key; precision,
    which does change the result, is a field."""
    c = TINY.replace(seed=1)
    assert copy.deepcopy(c).digest() == c.digest()
    assert c.replace(precision="bf16").digest() != c.digest()