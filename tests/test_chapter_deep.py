"""The deep-CNN chapter executed by papermill with small, non-default parameters: tiny networks
(4 channels, 40 steps) at the chapter's own depths, so that every section runs; its claims are
reported, not enforced, since these are not the chapter's settings."""
from __future__ import annotations

import re

from identlib import chapters as ch
from identlib.claims import read_notebook
from test_chapters import outputs

SMALL = {"channels": 4, "steps": 40, "seeds": [0, 1], "n_test": 5, "n_probes": 2, "map_channels": 4,
         "map_lrs": [0.01, 2.0], "map_inits": ["he"], "map_init_scales": [2.0], "channel_counts": [4, 8],
         "kernel_sizes": [3, 5], "wide_channels": 6}


def test_deep_cnn_with_small_sweeps(tmp_path):
    out = tmp_path / "deep.ipynb"
    ch.execute("deep_cnn", out, SMALL, progress=False)
    text = outputs(out)
    assert "17 networks, " in text                               # 13 depths + 4 study depths x seed 1
    n, div = map(int, re.search(r"(\d+) networks of depth 20 with 4 channels; diverged: (\d+)", text).groups())
    assert n == 14 and div >= 3                                   # lr 2 diverges for gd (x2) and adam
    assert "6 channels, depth 5: 3,025 weights and biases (3,000 weights)" in text
    claims = read_notebook(out)
    assert len(claims) > 10 and not all(c["holds"] for c in claims)   # 40 steps do not reproduce the book
    assert "(reported: these are not the chapter's own settings)" in text
