"""identlib.plot: the grids are one image whose tiles are the inputs, rows and layer maps given."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from identlib import plot

g = torch.Generator().manual_seed(0)
INPUTS = torch.rand(3, 1, 28, 28, generator=g)


def _image(ax) -> np.ndarray:
    (im,) = ax.get_images()
    return np.asarray(im.get_array())


def test_prediction_grid_places_each_image_in_its_tile_in_grey_and_saturates():
    rows = {"copy": INPUTS, "bright": INPUTS * 3 - 1}                 # values outside [0, 1]
    fig, ax = plot.prediction_grid(INPUTS, rows, names=["a", "b", "c"], notes={"copy": ["x", "y", "z"]},
                                   input_label="the inputs")
    image = _image(ax)
    gap_x, gap_y = 2, 9
    grey = plt.get_cmap("gray")
    for r, block in enumerate([INPUTS, INPUTS, INPUTS * 3 - 1]):
        for c in range(3):
            y, x = r * (28 + gap_y), c * (28 + gap_x)
            expected = grey(np.clip(block[c, 0].numpy(), 0, 1))
            np.testing.assert_allclose(image[y:y + 28, x:x + 28], expected, atol=1e-6)
    assert (image[28:28 + gap_y] == 1).all()                          # white gap between rows
    texts = {t.get_text() for t in ax.texts}
    assert {"a", "b", "c", "the inputs", "copy", "bright", "x", "y", "z"} <= texts
    assert len(ax.lines) == 1                                         # the dashed line after the "7"
    plt.close(fig)


def test_layer_grid_normalizes_hidden_maps_and_pads_missing_rows():
    maps = torch.stack([INPUTS[:, 0] * 5 + 2, INPUTS[:, 0]])          # one hidden layer, then the output
    fig = plt.figure(figsize=(3, 3))
    ax = plot.layer_grid(INPUTS, maps, names=["a", "b", "c"], title="net", fig=fig, rows=4)
    image = _image(ax)
    assert image.shape[0] == 5 * 28 + 4 * 2                           # input + 4 layer rows, padded
    hidden = INPUTS[0, 0].numpy()
    np.testing.assert_allclose(image[30:58, 0:28], plt.get_cmap("viridis")(
        (hidden - hidden.min()) / (hidden.max() - hidden.min())), atol=1e-6)
    np.testing.assert_allclose(image[60:88, 0:28], plt.get_cmap("gray")(hidden), atol=1e-6)
    assert (image[90:] == 1).all()                                    # padded rows are blank
    assert {"input", "1", "output"} <= {t.get_text() for t in ax.texts}
    plt.close(fig)


@pytest.mark.parametrize("flat", [0.0, 0.7])
def test_layer_grid_draws_a_flat_map_as_the_bottom_of_the_colour_map(flat):
    maps = torch.full((2, 1, 28, 28), flat)
    fig = plt.figure(figsize=(2, 2))
    image = _image(plot.layer_grid(INPUTS[:1], maps, fig=fig))
    np.testing.assert_allclose(image[30:58, 0:28], np.broadcast_to(plt.get_cmap("viridis")(0.0), (28, 28, 4)))
    plt.close(fig)


def test_orbit_grid_puts_networks_in_rows_and_iterations_in_columns():
    orbit = torch.stack([INPUTS[0] * k for k in (1.0, 0.5, 0.25, 4.0)])  # (4, 1, 28, 28)
    fig = plt.figure(figsize=(4, 2))
    ax = plot.orbit_grid({"net a": orbit, "net b": orbit[[0, 0, 0, 0]]}, [0, 1, 3], fig=fig)
    image = _image(ax)
    assert image.shape == (2 * 28 + 3, 3 * 28 + 2 * 3, 4)
    np.testing.assert_allclose(image[:28, 31:59], plt.get_cmap("gray")(INPUTS[0, 0].numpy() * 0.5),
                               atol=1e-6)
    np.testing.assert_allclose(image[:28, 62:90], plt.get_cmap("gray")(                # grown: white
        np.clip(INPUTS[0, 0].numpy() * 4, 0, 1)), atol=1e-6)
    assert {"x", "f¹", "f³", "net a", "net b"} <= {t.get_text() for t in ax.texts}
    plt.close(fig)


def test_table_map_draws_what_seaborn_heatmap_draws_without_drawing_the_figure(monkeypatch):
    import pandas as pd
    import seaborn as sns

    table = pd.DataFrame(np.arange(12.0).reshape(3, 4) / 11, index=pd.Index([5, 9, 14], name="depth"),
                         columns=pd.Index([0, 50, 100, 200], name="step"))
    table.iloc[1, 2] = np.nan
    fig, (a, b) = plt.subplots(1, 2)
    sns.heatmap(table, vmin=0, vmax=1, cmap="viridis", ax=a, annot=True, fmt=".2f")
    draws = []
    monkeypatch.setattr(type(fig.canvas), "draw", lambda self: draws.append(1))
    plot.table_map(table, vmin=0, vmax=1, cmap="viridis", ax=b, annot=True, fmt=".2f")
    assert draws == []
    ma, mb = a.collections[0], b.collections[0]
    assert np.array_equal(np.ma.getmaskarray(ma.get_array()), np.ma.getmaskarray(mb.get_array()))
    assert np.allclose(ma.get_array().compressed(), mb.get_array().compressed())
    assert b.get_ylim() == a.get_ylim() and b.get_xlim() == a.get_xlim()
    assert [t.get_text() for t in b.get_xticklabels()] == [t.get_text() for t in a.get_xticklabels()]
    assert [t.get_text() for t in b.get_yticklabels()] == [t.get_text() for t in a.get_yticklabels()]
    assert (b.get_xlabel(), b.get_ylabel()) == (a.get_xlabel(), a.get_ylabel()) == ("step", "depth")
    def cells(ax):   # (position, text, colour) of each annotation
        return sorted((t.get_position(), t.get_text(), t.get_color()) for t in ax.texts)

    assert cells(b) == cells(a) and len(cells(b)) == 11
    plt.close(fig)
