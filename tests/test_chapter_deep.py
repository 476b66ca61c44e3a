"""The deep-CNN chapter executed by papermill with small, non-default parameters."""
from __future__ import annotations

import re

from identlib import chapters as ch
from test_chapters import outputs

SMALL = {"channels": 4, "steps": 40, "depths": [1, 3], "seeds": [0, 1], "study_depths": [3], "n_test": 5,
         "rhos": [0.0, 1.0], "n_probes": 2, "map_depth": 3, "map_channels": 4, "map_lrs": [0.01, 2.0],
         "map_inits": ["he"], "map_init_scales": [2.0], "channel_counts": [4], "channel_depths": [2],
         "kernel_sizes": [3], "wide_channels": 6}


def test_deep_cnn_with_small_sweeps(tmp_path):
    out = tmp_path / "deep.ipynb"
    ch.execute("deep_cnn", out, SMALL, progress=False)
    text = outputs(out)
    assert "3 networks, 51 scores" in text                       # depths 1, 3 (seed 0) + depth 3 seed 1
    n, div = map(int, re.search(r"(\d+) networks of depth 3 with 4 channels; diverged: (\d+)", text).groups())
    assert n == 14 and div == 4                                   # lr 2 diverges for gd (x2) and adam; sum loss, same lr
    assert re.search(r"gd, momentum 0\.9, lr 2 +NaN +NaN", text) and re.search(r"lr 2 +diverged", text)
    assert "6 channels, depth 5: 3,025 weights and biases (3,000 weights)" in text
    assert re.search(r"depth 3: identity -?[\d.]+ to [\d.]+, '7' -?[\d.]+ to [\d.]+ over seeds", text)
    assert outputs(ch.chapters()["deep_cnn"]) != text
