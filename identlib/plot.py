"""Plots: data in, artists out; nothing here calls ``show()``.

:func:`prediction_grid` draws the paper's figure layout in one call: the inputs on top, one row of
predictions per model, the training column set off by a dashed red line.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.lines import Line2D

__all__ = ["prediction_grid", "show_images", "score_curves", "heatmap", "score_notes", "layer_grid"]


def _img(x) -> np.ndarray:
    x = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, float)
    return x.reshape(28, 28)


def prediction_grid(inputs, rows: dict, *, names=None, train_columns: int = 1, fig=None,
                    cell: float = 0.75, clip: bool = True, notes: dict | None = None):
    """The paper's prediction grid.

    ``inputs`` (N, 1, 28, 28) form the top row; ``rows`` maps a row label to predictions of the
    same shape. Images are drawn in grey on [0, 1] (predictions clipped to it unless ``clip`` is
    False). A dashed red line separates the first ``train_columns`` columns (the training image)
    from the test inputs. ``notes`` maps a row label to one short text per column, written under
    each image (e.g. the correlations of that prediction). Returns ``(fig, axes)``.
    """
    all_rows = [("input", inputs)] + list(rows.items())
    n_rows, n_cols = len(all_rows), len(inputs)
    notes = notes or {}
    left = 1.1  # inches for row labels
    gap = 0.06 if not notes else 0.32
    if fig is None:
        fig = plt.figure(figsize=(left + cell * n_cols, 0.35 + cell * (1 + gap) * n_rows))
    w, h = fig.get_size_inches()
    axes = fig.subplots(n_rows, n_cols, squeeze=False,
                        gridspec_kw=dict(left=left / w, right=0.995, top=1 - 0.3 / h,
                                         bottom=0.01 + (0.16 / h if notes else 0),
                                         wspace=0.06, hspace=gap))
    for r, (label, images) in enumerate(all_rows):
        for c in range(n_cols):
            ax = axes[r, c]
            im = _img(images[c])
            ax.imshow(np.clip(im, 0, 1) if clip else im, cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if r == 0 and names is not None:
                ax.set_title(names[c], fontsize=7)
            if label in notes:
                ax.set_xlabel(notes[label][c], fontsize=6, labelpad=1)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if 0 < train_columns < n_cols:
        a = axes[0, train_columns - 1].get_position()
        b = axes[0, train_columns].get_position()
        x = (a.x1 + b.x0) / 2
        fig.add_artist(Line2D([x, x], [axes[-1, 0].get_position().y0, a.y1 + 0.2 / h],
                              transform=fig.transFigure, color="red", linestyle="--", linewidth=1.2))
    return fig, axes


def show_images(images, *, titles=None, ax=None, ncols: int | None = None, vmin=0.0, vmax=1.0,
                cmap="gray"):
    """A row (or block) of 28 × 28 images; ``vmin``/``vmax`` None scales each image to its range.
    Returns the axes."""
    n = len(images)
    ncols = ncols or n
    nrows = int(np.ceil(n / ncols))
    if ax is None:
        _, ax = plt.subplots(nrows, ncols, figsize=(1.2 * ncols, 1.3 * nrows), squeeze=False)
    axes = np.asarray(ax).reshape(-1)
    for i, a in enumerate(axes):
        a.set_axis_off()
        if i < n:
            a.imshow(_img(images[i]), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            if titles is not None:
                a.set_title(titles[i], fontsize=8)
    return axes


def score_curves(df, *, x: str, hue: str | None = None, style: str | None = None,
                 metrics=("corr_identity", "corr_constant"), axes=None, theory=None,
                 errorbar=("pi", 100)):
    """One panel per metric: the metric against ``x`` (mean and spread over the rows sharing an
    ``x`` and ``hue``), e.g. correlation to identity and to constant against ρ, one line per depth.

    ``style`` (optional) sets the line style per value of another column (e.g. width).
    ``theory`` (optional) is a table with the same ``x`` and metric columns, drawn dashed in black.
    Returns the axes.
    """
    import seaborn as sns

    if axes is None:
        _, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), sharey=True,
                               squeeze=False)
        axes = axes[0]
    labels = {"corr_identity": "correlation with input (identity)",
              "corr_constant": "correlation with the \"7\" (constant)",
              "mse_identity": "MSE to input", "mse_constant": "MSE to the \"7\""}
    for ax, m in zip(axes, metrics):
        sns.lineplot(data=df, x=x, y=m, hue=hue, style=style, marker="o", errorbar=errorbar, ax=ax,
                     palette="viridis" if hue else None)
        if theory is not None:
            t = theory.groupby(x)[m].mean()
            ax.plot(t.index, t.values, "k--", lw=1.5, label="theory")
            ax.legend(title=hue, fontsize=8)
        ax.set_ylabel(labels.get(m, m))
        ax.set_xlabel("ρ (correlation of the input with the \"7\")" if x == "rho" else x)
        ax.grid(alpha=0.3)
    return axes


def heatmap(df, *, row: str, col: str, value: str, ax=None, vmin=-1.0, vmax=1.0, fmt=".2f"):
    """Mean of ``value`` over a ``row`` × ``col`` grid, annotated. Returns the axes."""
    import seaborn as sns

    table = df.pivot_table(index=row, columns=col, values=value, aggfunc="mean")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.6 * table.shape[1] + 2, 0.45 * table.shape[0] + 1))
    sns.heatmap(table, annot=True, fmt=fmt, vmin=vmin, vmax=vmax, cmap="RdBu_r", ax=ax,
                cbar_kws={"label": value})
    return ax


def score_notes(df, row: str = "label", fmt: str = "i{:.2f} c{:.2f}") -> dict:
    """Per-row, per-column texts "i<corr with input> c<corr with the 7>" for
    :func:`prediction_grid`'s ``notes``, from a tidy table in panel order."""
    return {key: [fmt.format(a, b) for a, b in zip(g["corr_identity"], g["corr_constant"])]
            for key, g in df.groupby(row, sort=False)}


def layer_grid(inputs, maps, *, names=None, title: str | None = None, fig=None, cell: float = 0.3,
               cmap: str = "viridis", rows: int | None = None):
    """One network's layer maps: the inputs on top (grey), then one row per layer (``maps`` is
    (L, N, 28, 28), hidden layers in ``cmap``, each map min–max normalized on its own), the last
    row, the output, in grey on [0, 1]. ``rows`` pads the grid to that many layer rows (to align
    networks of different depths side by side); ``fig`` may be a subfigure. Returns the axes."""
    n_layers, n_cols = maps.shape[0], maps.shape[1]
    n_rows = 1 + (rows or n_layers)
    if fig is None:
        fig = plt.figure(figsize=(0.5 + cell * n_cols, 0.4 + cell * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False, gridspec_kw=dict(wspace=0.05, hspace=0.05))
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if r == 0:
                ax.imshow(_img(inputs[c]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                if names is not None:
                    ax.set_title(names[c], fontsize=6, rotation=45, ha="left", va="bottom")
            elif r == n_layers:
                ax.imshow(np.clip(_img(maps[r - 1, c]), 0, 1), cmap="gray", vmin=0, vmax=1,
                          interpolation="nearest")
            elif r < n_layers:
                m = _img(maps[r - 1, c])
                span = m.max() - m.min()
                ax.imshow((m - m.min()) / span if span > 0 else np.zeros_like(m), cmap=cmap,
                          vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.set_visible(False)
        if r == 0:
            axes[r, 0].set_ylabel("input", fontsize=6, rotation=0, ha="right", va="center")
        elif r <= n_layers:
            axes[r, 0].set_ylabel("output" if r == n_layers else str(r), fontsize=6, rotation=0,
                                  ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=8)
    return axes
