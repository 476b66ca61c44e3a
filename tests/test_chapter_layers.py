"""The layer-by-layer chapter executed by papermill with small, non-default parameters."""
from __future__ import annotations

import re

from identlib import chapters as ch
from test_chapters import outputs

SMALL = {"channels": 4, "steps": 40, "depths": [3, 8], "snapshots": [0, 20, 40]}


def test_layers_with_small_networks(tmp_path):
    out = tmp_path / "layers.ipynb"
    ch.execute("layers", out, SMALL, progress=False)
    text = outputs(out)
    pc_min, mean_max = re.search(r"top principal component: ([\d.]+) to all .*channel mean: at most ([\d.]+)", text).groups()
    assert float(pc_min) > 0.2
    assert re.search(r"random, 8 layers: input share below 0.01 from layer \d", text)   # the default init forgets
    assert "trained, 3 layers: input share below 0.01 from layer -" in text
    assert "loss of the best uniform output 0.092, of the black output 0.108" in text
    assert re.search(r"circular padding +[\d.]+ .*\n", text) and "no biases" in text
    assert [int(s) for s in re.findall(r"step (\d+): output correlation with the 7", text)] == [0, 20, 40]
    assert outputs(ch.chapters()["layers"]) != text
