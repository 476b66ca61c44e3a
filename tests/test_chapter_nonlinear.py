"""The nonlinear-FCN chapter executed by papermill with small, non-default parameters."""
from __future__ import annotations

import re

from identlib import chapters as ch
from test_chapters import outputs

SMALL = {"depths": [1, 2], "widths": [784], "seeds": [0], "rhos": [0.0, 1.0], "n_probes": 2,
         "inits": ["default", "he"], "init_scales": [2.0], "n_train_60k": 2000, "n_test": 200}


def test_nonlinear_fcn_with_small_sweeps(tmp_path):
    out = tmp_path / "nonlinear.ipynb"
    ch.execute("nonlinear_fcn", out, SMALL, progress=False)
    text = outputs(out)
    assert "4 networks, " in text                                  # 2 activations x 2 depths
    low = float(re.search(r"6-layer ReLU: lowest correlation with the '7' over the 12 test inputs: ([\d.]+)", text)[1])
    assert low >= 0.9                                               # Fig. 2's constant row
    assert re.search(r"1-layer linear: correlation with the input, MNIST [\d.]+, Fashion-MNIST", text)
    assert re.search(r"(\d+) of 784 directions are spanned by the training images", text)
    assert "depth 6, he x1.0" in text and "depth 6, default x2.0" in text
    assert outputs(ch.chapters()["nonlinear_fcn"]) != text
