"""The phase-diagram chapter executed by papermill with small, non-default parameters."""
from __future__ import annotations

import re

import pytest

from identlib import chapters as ch
from test_chapters import outputs

SMALL = {"channel_counts": [2, 3], "kernel_sizes": [3, 5], "init_scales": [0.5, 1.0], "seeds": [0, 1],
         "steps": 30, "start_depths": [2], "max_depth": 3, "n_test": 2}


def test_phase_with_small_networks_searches_every_setting_and_states_every_claim(tmp_path):
    out = tmp_path / "phase.ipynb"
    ch.execute("phase", out, SMALL, progress=False)
    text = outputs(out)
    # 2 channel counts x 2 kernel sizes x 2 initial scales x 2 seeds; 2 MNIST + 2 Fashion-MNIST + 7
    # patterns
    assert "16 searches (2 seeds per setting), 11 test inputs" in text
    assert re.search(r"\d+ networks in the searches; a scan of every depth would need 48", text)
    assert re.search(r"(holds|FAILS)  the identity ends before every output pixel sees the whole "
                     r"image .*\(value < 55, 16 searches\)", text)
    assert re.search(r"(holds|FAILS)  no network memorizes before every output pixel sees the whole "
                     r"image .*\(value >= 55, 16 searches\)", text)       # every search, memorizing or not
    assert re.search(r"\d+ of \d+ claims hold", text)
    assert outputs(ch.chapters()["phase"]) != text


def test_start_depths_beyond_the_search_are_refused_before_training(tmp_path):
    with pytest.raises(Exception, match=r"start_depths must lie in 1\.\.max_depth=3"):
        ch.execute("phase", tmp_path / "p.ipynb", dict(SMALL, start_depths=[2, 5]), progress=False)
