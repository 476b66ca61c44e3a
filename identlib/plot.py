"""Plots: data in, artists out; nothing here calls ``show()``.

:func:`prediction_grid` draws the paper's figure layout in one call: the inputs on top, one row of
predictions per model, the training column set off by a dashed red line.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["prediction_grid", "show_images", "score_curves", "heatmap", "table_map", "score_notes",
           "layer_grid", "orbit_grid", "phase_map"]


def _img(x) -> np.ndarray:
    x = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, float)
    return x.reshape(28, 28)


def _montage(tiles, gap_x: int, gap_y: int) -> np.ndarray:
    """Tiles (rows of (28, 28, 4) RGBA arrays, ``None`` for an empty place) laid out as one RGBA
    image on white, ``gap_x``/``gap_y`` pixels apart: one image draws much faster than one axes
    per tile (a 14 × 13 grid: several times faster to build and render)."""
    n_rows, n_cols = len(tiles), max(len(r) for r in tiles)
    out = np.ones((n_rows * (28 + gap_y) - gap_y, n_cols * (28 + gap_x) - gap_x, 4))
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            if tile is not None:
                y, x = r * (28 + gap_y), c * (28 + gap_x)
                out[y:y + 28, x:x + 28] = tile
    return out


def _grey(im: np.ndarray) -> np.ndarray:
    """A (28, 28) image on [0, 1] as RGBA grey (values outside [0, 1] saturate)."""
    return plt.get_cmap("gray")(np.clip(im, 0, 1))


def _inches(fig) -> tuple[float, float]:
    """Width and height of a figure or subfigure, in inches."""
    return fig.bbox.width / fig.dpi, fig.bbox.height / fig.dpi


def _grid_axes(fig, *, left: float, top: float, bottom: float):
    """One axes without frame or ticks filling the figure (or subfigure) but for margins given in
    inches."""
    w, h = _inches(fig)
    ax = fig.add_axes((left / w, bottom / h, 1 - left / w - 0.005, 1 - (top + bottom) / h))
    ax.set_axis_off()
    return ax


def prediction_grid(inputs, rows: dict, *, names=None, train_columns: int = 1, fig=None,
                    cell: float = 0.75, notes: dict | None = None, input_label: str = "input"):
    """The paper's prediction grid.

    ``inputs`` (N, 1, 28, 28) form the top row (labelled ``input_label``); ``rows`` maps a row
    label to predictions of the same shape. Images are drawn in grey on [0, 1] (values outside it
    saturate). A dashed red line separates the first ``train_columns`` columns (the training
    image) from the test inputs. ``notes`` maps a row label to one short text per column, written
    under each image (e.g. the correlations of that prediction). The grid is one image in one
    axes whose data coordinates are the pixels of the montage (a tile is 28 pixels; tile ``(r, c)``
    starts at ``r * (28 + gap_y)``, ``c * (28 + gap_x)``; row 0 is the inputs). Returns
    ``(fig, ax)``.
    """
    all_rows = [(input_label, inputs)] + list(rows.items())
    n_rows, n_cols = len(all_rows), len(inputs)
    notes = notes or {}
    gap_x, gap_y = 2, (9 if notes else 2)
    tiles = []
    for label, images in all_rows:
        tiles.append([_grey(_img(images[c])) for c in range(n_cols)])
    image = _montage(tiles, gap_x, gap_y)
    left, top, bottom = 1.1, 0.3, (0.16 if notes else 0.01)     # inches: row labels, titles, notes
    if fig is None:
        fig = plt.figure(figsize=(left + cell * n_cols * (28 + gap_x) / 28,
                                  top + bottom + cell * n_rows * (28 + gap_y) / 28))
    ax = _grid_axes(fig, left=left, top=top, bottom=bottom)
    ax.imshow(image, interpolation="nearest", aspect="auto")
    step_x, step_y = 28 + gap_x, 28 + gap_y
    if names is not None:
        for c, name in enumerate(names):
            ax.text(c * step_x + 14, -1.5, name, fontsize=7, ha="center", va="bottom")
    for r, (label, _) in enumerate(all_rows):
        ax.text(-3, r * step_y + 14, label, fontsize=8, ha="right", va="center")
        for c, note in enumerate(notes.get(label, [])):
            ax.text(c * step_x + 14, r * step_y + 28.5, note, fontsize=6, ha="center", va="top")
    if 0 < train_columns < n_cols:
        x = train_columns * step_x - gap_x / 2 - 0.5
        ax.plot([x, x], [-8, image.shape[0] - 0.5], color="red", linestyle="--", linewidth=1.2,
                clip_on=False)
    ax.set(xlim=(-0.5, image.shape[1] - 0.5), ylim=(image.shape[0] - 0.5, -0.5))
    return fig, ax


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
    table = df.pivot_table(index=row, columns=col, values=value, aggfunc="mean")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.6 * table.shape[1] + 2, 0.45 * table.shape[0] + 1))
    return table_map(table, ax=ax, vmin=vmin, vmax=vmax, annot=True, fmt=fmt, cbar_label=value)


def table_map(table, *, ax, vmin=None, vmax=None, cmap: str = "RdBu_r", cbar: bool = True,
              cbar_label: str | None = None, annot: bool = False, fmt: str = ".2f",
              annot_kws: dict | None = None):
    """A table (a DataFrame: rows top to bottom, columns left to right) as a grid of coloured
    cells, labelled by its index and columns, as ``seaborn.heatmap`` draws it, without the full
    drawing of the figure that seaborn does on every call (a figure of twelve such grids took
    seconds). ``annot`` writes each value in its cell with ``fmt`` (in black or white, whichever
    reads on the cell's colour; ``annot_kws`` more text properties; ``fmt`` "d" rounds to
    integers). Returns the axes.

    >>> import pandas as pd
    >>> fig, ax = plt.subplots()
    >>> ax = table_map(pd.DataFrame([[0.0, 1.0]], index=["a"], columns=[1, 2]), ax=ax, annot=True)
    >>> [t.get_text() for t in ax.texts], tuple(map(float, ax.get_ylim()))
    (['0.00', '1.00'], (1.0, 0.0))
    >>> plt.close(fig)
    """
    values = np.ma.masked_invalid(np.asarray(table, dtype=float))
    mesh = ax.pcolormesh(values, cmap=cmap, vmin=vmin, vmax=vmax)
    n_rows, n_cols = values.shape
    ax.set(xlim=(0, n_cols), ylim=(n_rows, 0))
    ax.set_xticks(np.arange(n_cols) + 0.5, [_label(c) for c in table.columns])
    ax.set_yticks(np.arange(n_rows) + 0.5, [_label(r) for r in table.index])
    ax.set(xlabel=table.columns.name or "", ylabel=table.index.name or "")
    for side in ax.spines.values():
        side.set_visible(False)
    ax.tick_params(length=3)
    if cbar:
        bar = ax.figure.colorbar(mesh, ax=ax, label=cbar_label)
        bar.outline.set_linewidth(0)
    if annot:
        annot_kws = dict(annot_kws or {})
        if n_cols > 8:                                # many columns: smaller figures, to fit
            annot_kws.setdefault("fontsize", 6.5)
        for (r, c), v in np.ndenumerate(values.filled(np.nan)):
            if np.isfinite(v):
                text = format(int(round(v)), fmt) if fmt.endswith("d") else format(v, fmt)
                ax.text(c + 0.5, r + 0.5, text, ha="center", va="center", color=_ink(mesh, v),
                        **annot_kws)
    return ax


def _label(value) -> str:
    """A row's or column's label: a float rounded to 4 decimals (a measured correlation of 0.1 is
    0.10000000149 in float32), anything else as it is.

    >>> [_label(v) for v in (np.float32(0.1).item(), 0.25, 1.0, 5, "relu")]
    ['0.1', '0.25', '1.0', '5', 'relu']
    """
    return str(round(value, 4)) if isinstance(value, float) else str(value)


def _ink(mesh, v) -> str:
    """Black or white text, whichever reads on the cell colour of value ``v`` (by its relative
    luminance, as seaborn chooses)."""
    rgb = np.asarray(mesh.cmap(mesh.norm(v))[:3])
    lum = np.where(rgb <= 0.03928, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4) @ [0.2126, 0.7152, 0.0722]
    return ".15" if lum > 0.408 else "w"


def phase_map(cells, value: str, *, ax, row: str = "channels", col: str = "kernel_size",
              max_depth: int, vmin=None, vmax=None, cbar: bool = True, cmap: str = "viridis"):
    """A phase diagram: one boundary depth (``value``: "d_id" or "d_mem") over ``row`` × ``col``,
    from :func:`identlib.phase.cells`: each cell coloured by the median over seeds and annotated
    with it and, where the seeds differ, their range ("> N" for a depth beyond the search's
    ``max_depth``, coloured as ``max_depth`` + 1). Returns the axes.

    >>> import pandas as pd
    >>> c = pd.DataFrame({"channels": [4, 4], "kernel_size": [3, 5], "d_mem_median": [20.0, float("inf")],
    ...                   "d_mem_min": [18.0, 26.0], "d_mem_max": [21.0, float("inf")]})
    >>> fig, ax = plt.subplots()
    >>> [t.get_text() for t in phase_map(c, "d_mem", ax=ax, max_depth=30).texts]
    ['20\\n(18 to 21)', '> 30\\n(26 to > 30)']
    >>> plt.close(fig)
    """
    def depth(v):
        return f"> {max_depth}" if np.isinf(v) else f"{v:g}"

    table = cells.pivot(index=row, columns=col, values=f"{value}_median")
    shown = table.where(np.isfinite(table), max_depth + 1)
    ax = table_map(shown, ax=ax, vmin=vmin, vmax=vmax, cmap=cmap, cbar=cbar,
                   cbar_label=f"{value} (median over seeds)")
    lo = cells.pivot(index=row, columns=col, values=f"{value}_min")
    hi = cells.pivot(index=row, columns=col, values=f"{value}_max")
    for i, r in enumerate(table.index):
        for j, c in enumerate(table.columns):
            med, a, b = table.loc[r, c], lo.loc[r, c], hi.loc[r, c]
            if np.isnan(med):
                continue
            text = depth(med) if a == b else f"{depth(med)}\n({depth(a)} to {depth(b)})"
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=8,
                    color=_ink(ax.collections[0], shown.loc[r, c]))
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
    networks of different depths side by side); ``fig`` may be a subfigure. The grid is one image
    in one axes (pixels as data coordinates, as in :func:`prediction_grid`). Returns the axes."""
    n_layers, n_cols = maps.shape[0], maps.shape[1]
    n_rows = 1 + (rows or n_layers)
    colour = plt.get_cmap(cmap)
    tiles = [[_grey(_img(inputs[c])) for c in range(n_cols)]]
    for r in range(1, n_layers + 1):
        row = []
        for c in range(n_cols):
            m = _img(maps[r - 1, c])
            if r == n_layers:
                row.append(_grey(m))
            else:
                span = m.max() - m.min()
                row.append(colour((m - m.min()) / span if span > 0 else np.zeros_like(m)))
        tiles.append(row)
    tiles += [[None] * n_cols] * (n_rows - len(tiles))
    gap = 2
    image = _montage(tiles, gap, gap)
    if fig is None:
        fig = plt.figure(figsize=(0.5 + cell * n_cols, 0.4 + cell * n_rows))
    w = _inches(fig)[0]
    top = (0.55 if names is not None else 0.05) + (0.25 if title else 0.0)   # inches: names, title
    ax = _grid_axes(fig, left=min(0.45, 0.3 * w), top=top, bottom=0.02)
    ax.imshow(image, interpolation="nearest", aspect="equal")
    ax.set_anchor("N")                                  # shorter networks' grids start at the top
    step = 28 + gap
    if names is not None:
        for c, name in enumerate(names):
            ax.text(c * step + 4, -2, name, fontsize=6, rotation=45, ha="left", va="bottom")
    for r in range(n_layers + 1):
        label = "input" if r == 0 else ("output" if r == n_layers else str(r))
        ax.text(-3, r * step + 14, label, fontsize=6, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=8)
    ax.set(xlim=(-0.5, image.shape[1] - 0.5), ylim=(image.shape[0] - 0.5, -0.5))
    return ax


def orbit_grid(orbits: dict, steps, *, title: str | None = None, fig=None, cell: float = 0.45):
    """Iterates x, f(x), f(f(x)), … of one start under several networks: one row per entry of
    ``orbits`` (a row label -> that network's orbit, (S, 1, 28, 28), as from
    :func:`identlib.dynamics.orbits` for one start), one column per iteration count in ``steps``,
    in grey on [0, 1] (values outside saturate: an orbit that grows shows white). ``fig`` may be
    a subfigure. One image in one axes, as :func:`prediction_grid`. Returns the axes."""
    labels, steps = list(orbits), list(steps)
    tiles = [[_grey(_img(orbits[k][t])) for t in steps] for k in labels]
    gap = 3
    image = _montage(tiles, gap, gap)
    if fig is None:
        fig = plt.figure(figsize=(1.6 + cell * len(steps), 0.5 + cell * len(labels)))
    w = _inches(fig)[0]
    ax = _grid_axes(fig, left=min(1.5, 0.45 * w), top=0.3 + (0.25 if title else 0.0), bottom=0.02)
    ax.imshow(image, interpolation="nearest", aspect="equal")
    ax.set_anchor("N")
    step = 28 + gap
    for c, t in enumerate(steps):
        ax.text(c * step + 14, -3, "x" if t == 0 else f"f{_superscript(t)}", fontsize=7,
                ha="center", va="bottom")
    for r, label in enumerate(labels):
        ax.text(-4, r * step + 14, label, fontsize=7, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=8)
    ax.set(xlim=(-0.5, image.shape[1] - 0.5), ylim=(image.shape[0] - 0.5, -0.5))
    return ax


def _superscript(n: int) -> str:
    """``n`` in superscript digits: 12 -> '¹²'."""
    return str(n).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
