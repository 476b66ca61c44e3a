"""identlib.metrics: per-image Pearson correlation and the identity / constant scores."""
from __future__ import annotations

import pytest
import torch

from identlib.metrics import METRICS, pearson, scores

gen = torch.Generator().manual_seed(0)
x = torch.rand(5, 1, 28, 28, generator=gen)
x_hat = torch.rand(1, 1, 28, 28, generator=gen)


def test_pearson_with_itself_is_one():
    assert torch.allclose(pearson(x, x), torch.ones(5, dtype=torch.float64))


def test_pearson_with_negation_is_minus_one():
    assert torch.allclose(pearson(x, -x), -torch.ones(5, dtype=torch.float64))


def test_pearson_is_invariant_to_affine_maps():
    assert torch.allclose(pearson(3 * x + 2, x), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(pearson(x, x_hat), pearson(0.5 * x - 1, 2 * x_hat + 7))


def test_pearson_of_constant_prediction_is_zero_not_nan():
    flat = torch.full_like(x, 0.3)
    r = pearson(flat, x)
    assert torch.equal(r, torch.zeros(5, dtype=torch.float64))
    assert torch.equal(pearson(x, torch.zeros(1, 1, 28, 28)), torch.zeros(5, dtype=torch.float64))


def test_pearson_broadcasts_single_image_and_matches_numpy():
    r = pearson(x, x_hat)
    assert r.shape == (5,) and r.dtype == torch.float64
    for i in range(5):
        expected = torch.corrcoef(torch.stack([x[i].flatten(), x_hat.flatten()]).double())[0, 1]
        assert float(r[i]) == pytest.approx(float(expected), abs=1e-12)


def test_scores_keys_and_shapes():
    s = scores(x, x, x_hat)
    assert tuple(s) == METRICS
    assert all(v.shape == (5,) and v.dtype == torch.float64 for v in s.values())


def test_scores_of_identity_function():
    s = scores(x, x, x_hat)
    assert torch.allclose(s["corr_identity"], torch.ones(5, dtype=torch.float64))
    assert torch.equal(s["mse_identity"], torch.zeros(5, dtype=torch.float64))


def test_scores_of_constant_function():
    pred = x_hat.expand(5, 1, 28, 28)
    s = scores(pred, x, x_hat)
    assert torch.allclose(s["corr_constant"], torch.ones(5, dtype=torch.float64))
    assert torch.equal(s["mse_constant"], torch.zeros(5, dtype=torch.float64))


def test_mse_values():
    pred = x + 0.5
    s = scores(pred, x, torch.zeros(1, 28, 28))
    assert torch.allclose(s["mse_identity"], torch.full((5,), 0.25, dtype=torch.float64))
    expected = (pred.double() ** 2).flatten(1).mean(1)
    assert torch.allclose(s["mse_constant"], expected)


def test_verdict_thresholds():
    from identlib.metrics import verdict

    assert verdict(0.95, 0.3) == "identity"
    assert verdict(0.2, 0.92) == "constant"
    assert verdict(0.65, 0.1) == "mostly identity"
    assert verdict(0.1, 0.61) == "mostly constant"
    assert verdict(0.5, 0.5) == "neither"


def test_summarize_averages_test_inputs_only():
    import pandas as pd

    from identlib.metrics import summarize

    df = pd.DataFrame({"depth": [1, 1, 1, 2, 2, 2], "family": ["train", "mnist", "pattern"] * 2,
                       "corr_identity": [1.0, 0.9, 1.0, 1.0, 0.1, 0.3],
                       "corr_constant": [1.0, 0.2, 0.0, 1.0, 0.9, 0.95]})
    out = summarize(df, by="depth")
    assert out.loc[1, "corr_identity"] == pytest.approx(0.95)
    assert out.loc[2, "corr_constant"] == pytest.approx(0.925)
    assert list(out["verdict"]) == ["identity", "constant"]
