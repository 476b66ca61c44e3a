"""The rewinding chapter executed by papermill with small, non-default parameters."""
from __future__ import annotations

import re

from identlib import chapters as ch
from test_chapters import outputs

SMALL = {"channels": 4, "steps": 40, "cnn_depths": [4, 3], "fcn_depth": 2,
         "checkpoint_steps": [0, 10, 20], "fcn_checkpoint_steps": [0, 10], "seeds": [0, 1],
         "n_test": 2}


def test_rewinding_with_small_networks_states_every_claim(tmp_path):
    out = tmp_path / "rewinding.ipynb"
    ch.execute("rewinding", out, SMALL, progress=False)
    text = outputs(out)
    # CNNs of depth 4 and 3 and the 2-layer FCN, 2 seeds each; 12 panel inputs + 2 MNIST + 2 Fashion
    assert "6 networks (CNN 4, CNN 3, FCN 2; 2 seeds each); 16 test inputs" in text
    # the memorizing networks are the deepest CNN and the FCN: 2 networks x 2 seeds
    assert re.search(r"(holds|FAILS)  the deepest CNN and the FCN memorize .*\(value == 0, 4 networks\)", text)
    assert re.search(r"(holds|FAILS)  the 3-layer CNN moves its first third more .*\(value >= 3, 2 seeds\)", text)
    assert re.search(r"\d+ of 10 claims hold", text)
    assert outputs(ch.chapters()["rewinding"]) != text


def test_checkpoints_after_the_training_steps_are_refused_before_training(tmp_path):
    import pytest

    with pytest.raises(Exception, match=r"checkpoint_steps must lie in 0\.\.40, the network's training steps"):
        ch.execute("rewinding", tmp_path / "r.ipynb", dict(SMALL, checkpoint_steps=[0, 50]), progress=False)
