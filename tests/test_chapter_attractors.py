"""The attractor chapter executed by papermill with small, non-default parameters."""
from __future__ import annotations

import re

from identlib import chapters as ch
from test_chapters import outputs

SMALL = {"fcn_depths": [1, 2], "cnn_depths": [1, 3], "study_depths": [3], "seeds": [0, 1],
         "channels": 4, "steps": 40, "iterations": 5, "n_noise": 2, "n_images": [2],
         "cnn_n_images": [2], "n_basin": 10}


def test_attractors_with_small_networks_keeps_the_theory(tmp_path):
    out = tmp_path / "attractors.ipynb"
    ch.execute("attractors", out, SMALL, progress=False)
    text = outputs(out)
    # 1-layer FCN x 2 seeds, 2-layer linear and ReLU x 2 seeds; CNN 1 with seed 0, CNN 3 x 2 seeds
    assert "9 networks; 14 starts, 5 iterations each" in text
    # exact, whatever the settings: homogeneity and the one-layer closed form
    assert "holds  every FCN has spectral radius 1 at the 7 (largest |radius - 1|)  (value <= 0.001, 6 networks)" in text
    assert re.search(r"holds  the one-layer network's orbits follow the closed form .*\(value <= 0\.0001, 2 seeds\)", text)
    # the several-image networks: FCN 2 and CNN 3 on 2 images, 2 seeds each
    assert re.search(r"(holds|FAILS)  most test images end on some training image's ray \(smallest "
                     r"fraction\)  \(value >= 0\.6, 2 networks\)", text)
    assert re.search(r"\d+ of 15 claims hold", text)
    assert outputs(ch.chapters()["attractors"]) != text


def test_a_chapter_like_another_trains_that_chapters_networks():
    ns = {k: v["default"] for k, v in ch.parameters("attractors").items()}
    base, p, _ = ch.chapter("attractors", ns, like="deep_cnn", model="cnn")
    assert base == ch.recipe("deep_cnn", model="cnn")           # the deep-CNN chapter's networks
    ns["steps"] = 100
    base, p, claims = ch.chapter("attractors", ns, like="deep_cnn", model="cnn")
    assert base == ch.recipe("deep_cnn", model="cnn").replace(steps=100) and not claims.strict
