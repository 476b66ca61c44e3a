"""The training device (``$IDENTLIB_DEVICE``): how it is chosen, how a wrong one fails, where
results live, and what is recorded with them. The tests run on the CPU; a GPU machine runs
``bench/device.py`` instead."""
from __future__ import annotations

import json

import pytest
import torch

from identlib import cache, experiments, runtime
from identlib.config import ConfigError, RunConfig
from identlib.models import build_model, predict
from identlib.train import autocast, fit
from test_cli_errors import identlib, last_line, TINY

SMALL = RunConfig(model="cnn", depth=2, channels=4, steps=5)


def test_auto_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.delenv("IDENTLIB_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.device() == torch.device("cpu")
    monkeypatch.setenv("IDENTLIB_DEVICE", "cpu")
    assert runtime.device() == torch.device("cpu")


def test_auto_is_cuda_with_a_gpu_and_sets_the_float32_policy(monkeypatch):
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.benchmark = True
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        for text in ("auto", "cuda", " CUDA "):
            monkeypatch.setenv("IDENTLIB_DEVICE", text)
            assert runtime.device() == torch.device("cuda")
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = flags


def test_cuda_without_a_gpu_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("IDENTLIB_DEVICE", "cuda")
    with pytest.raises(ConfigError, match="no CUDA GPU.*IDENTLIB_DEVICE=auto"):
        runtime.device()


def test_an_unknown_device_is_refused(monkeypatch):
    monkeypatch.setenv("IDENTLIB_DEVICE", "tpu")
    with pytest.raises(ConfigError, match="IDENTLIB_DEVICE must be one of auto, cpu, cuda"):
        runtime.device()


def test_the_command_line_refuses_a_wrong_device_before_training():
    proc = identlib("train", *TINY, env={"IDENTLIB_DEVICE": "gpu0"})
    assert proc.returncode == 2
    assert "IDENTLIB_DEVICE must be one of auto, cpu, cuda" in last_line(proc)
    if not torch.cuda.is_available():
        proc = identlib("train", *TINY, env={"IDENTLIB_DEVICE": "cuda"})
        assert proc.returncode == 2
        assert "no CUDA GPU" in last_line(proc)


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_bf16_autocast_follows_the_device():
    ctx = autocast("bf16", "cuda")
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
    assert autocast("bf16").device == "cpu"
    with pytest.raises(ValueError, match="precision"):
        autocast("fp8")


def test_results_and_predictions_are_cpu_tensors(monkeypatch):
    monkeypatch.setenv("IDENTLIB_DEVICE", "cpu")
    model, out, init = fit(SMALL)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(v.device.type == "cpu" for v in init.values())
    x = torch.rand(3, 1, 28, 28)
    y = predict(model, x)
    assert y.device.type == "cpu" and y.dtype == torch.float32 and y.shape == x.shape


def test_the_device_does_not_change_the_initial_weights(monkeypatch):
    """The weights are drawn on the CPU from the seed, whatever the device: fit() and a plain
    build_model with the seed's generator start from the same tensors."""
    monkeypatch.setenv("IDENTLIB_DEVICE", "cpu")
    _, _, init = fit(SMALL)
    drawn = build_model(SMALL, torch.Generator().manual_seed(SMALL.seed)).state_dict()
    assert all(torch.equal(init[k], drawn[k]) for k in drawn)


def test_every_stored_network_records_its_device(tmp_path, monkeypatch):
    monkeypatch.setenv("IDENTLIB_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("IDENTLIB_DEVICE", "cpu")
    r = experiments.run(SMALL)
    assert r.platform["device"] == "cpu"
    stored = json.loads((cache.entry(SMALL) / "platform.json").read_text())
    assert stored["device"] == "cpu" and stored["instruction_set"]
    # grouped training records it too
    experiments.run_all([SMALL.replace(seed=s) for s in (1, 2)], workers=0)
    assert json.loads((cache.entry(SMALL.replace(seed=1)) / "platform.json").read_text())["device"] == "cpu"


def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    """bench/device.py --smoke: the script a GPU machine runs, with tiny networks on the CPU."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "device.json"
    proc = subprocess.run([sys.executable, str(root / "bench" / "device.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, cwd=root,
                          env={**__import__("os").environ, "IDENTLIB_CACHE_DIR": str(tmp_path / "cache"),
                               "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    nets = record["networks"]
    assert len(nets) == 6 and {n["device"] for n in nets} == {"cpu"}
    # the same config on the same device, cached or not, trains to the same function
    for a, b in zip(nets[0:4:2], nets[1:4:2]):
        assert a["label"] == b["label"] and a["verdict"] == b["verdict"]
        assert abs(a["corr_identity"] - b["corr_identity"]) < 1e-3
