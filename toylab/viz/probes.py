"""Figures for probing and causal tracing: where a variable can be read, and where it is used.

Axis names: site (a hook at a position), hook, pos, layer, kind (a traced state:
resid_pre, resid_post, attn_out, mlp_out).

    fig = viz.probe_map(grid.accuracy, grid.selectivity, hooks, str_tokens, highlight={(2, 2)})
    fig = viz.tracing_map({k: result.scores(k) for k in result.kinds}, str_tokens,
                          highlight={"mlp_out": {(0, 2)}})

Ground truth is outlined as in every toylab figure (``toylab.viz.plots``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from toylab.viz.plots import (
    _DIVERGING,
    _SEQUENTIAL,
    _array,
    _check_labels,
    _outline_cells,
)


def _panel(fig: Figure, ax: Any, values: np.ndarray, rows: list[str], cols: list[str], title: str,
           cmap: str, vmin: float, vmax: float, cells: Collection[tuple[int, int]], label: str) -> None:
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90 if max(map(len, cols)) > 4 else 0)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title, fontsize="medium")
    fig.colorbar(image, ax=ax, label=label, shrink=0.9)
    if values.size <= 64:
        for (r, c), v in np.ndenumerate(values):
            dark = (v - vmin) / (vmax - vmin or 1.0)
            light = abs(dark - 0.5) < 0.25 if cmap == _DIVERGING else dark < 0.5
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize="x-small",
                    color="black" if light else "white")
    _outline_cells(ax, {(int(r), int(c)) for r, c in cells}, values.shape)


def probe_grids(accuracy: Any, selectivity: Any, row_labels: Sequence[str], col_labels: Sequence[str]):
    """Checked inputs of a probe map, for the figure and its chart alike: accuracy and
    selectivity [hook, pos] as arrays, and the row and column labels."""
    acc = _array(accuracy, 2, "accuracy [hook, pos]")
    sel = _array(selectivity, 2, "selectivity [hook, pos]")
    if acc.shape != sel.shape:
        raise ValueError(f"accuracy {acc.shape} and selectivity {sel.shape} must have the same shape")
    rows = _check_labels(row_labels, acc.shape[0], "row_labels")
    cols = _check_labels(col_labels, acc.shape[1], "col_labels")
    return acc, sel, rows, cols


def probe_map(accuracy: Any, selectivity: Any, row_labels: Sequence[str], col_labels: Sequence[str],
              title: str | None = None, highlight: Collection[tuple[int, int]] = ()) -> Figure:
    """Probe accuracy and selectivity side by side, each [hook, pos].

    ``highlight``: (row, col) cells where the ground truth says the variable lives,
    outlined in both panels. Accuracy runs from 0 to 1; selectivity (accuracy minus the
    control task's) is centred on 0.
    """
    acc, sel, rows, cols = probe_grids(accuracy, selectivity, row_labels, col_labels)
    width = min(3.0 + 0.6 * acc.shape[1], 7.0)
    fig = Figure(figsize=(2 * width + 2.5, min(1.6 + 0.45 * acc.shape[0], 8.0)), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    _panel(fig, left, acc, rows, cols, "probe accuracy (held out)", _SEQUENTIAL, 0.0, 1.0, highlight, "accuracy")
    bound = max(float(np.nanmax(np.abs(sel))), 1e-6)
    _panel(fig, right, sel, rows, cols, "selectivity = accuracy - control", _DIVERGING, -bound, bound, highlight,
           "selectivity")
    left.set_xlabel("position")
    right.set_xlabel("position")
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def tracing_grids(scores: Mapping[str, Any], col_labels: Sequence[str],
                  highlight: Mapping[str, Collection[tuple[int, int]]] | None):
    """Checked inputs of a tracing map, for the figure and its chart alike: the grids by kind,
    row and column labels, the highlight by kind, and the colour range shared by every panel."""
    if not scores:
        raise ValueError("scores is empty: trace at least one state")
    highlight = dict(highlight or {})
    unknown = sorted(set(highlight) - set(scores))
    if unknown:
        raise ValueError(f"highlight names kinds {unknown} that are not among the traced {sorted(scores)}")
    grids = {kind: _array(values, 2, f"scores[{kind!r}] [layer, pos]") for kind, values in scores.items()}
    shapes = {g.shape for g in grids.values()}
    if len(shapes) != 1:
        raise ValueError(f"every kind's scores must have the same shape [layer, pos], got {sorted(shapes)}")
    n_layers, n_pos = shapes.pop()
    cols = _check_labels(col_labels, n_pos, "col_labels")
    rows = [f"L{layer}" for layer in range(n_layers)]
    hi = max(1.0, max(float(np.nanmax(g)) for g in grids.values()))
    lo = min(0.0, min(float(np.nanmin(g)) for g in grids.values()))
    return grids, rows, cols, highlight, (lo, hi)


def tracing_map(scores: Mapping[str, Any], col_labels: Sequence[str], title: str | None = None,
                highlight: Mapping[str, Collection[tuple[int, int]]] | None = None) -> Figure:
    """Causal tracing heatmaps, one panel per traced state, scores[kind] [layer, pos].

    Scores are the fraction of the answer's probability restored (1 = clean). ``highlight``
    maps a kind to the (layer, pos) cells the ground truth names (e.g. the fact-storing MLP
    at the subject position), outlined.
    """
    grids, rows, cols, highlight, (lo, hi) = tracing_grids(scores, col_labels, highlight)
    n_layers, n_pos = len(rows), len(cols)
    n_cols = min(len(grids), 2)  # two panels a row: four side by side would be too flat to read
    n_rows = -(-len(grids) // n_cols)
    panel_w, panel_h = min(2.6 + 0.6 * n_pos, 6.0), min(1.8 + 0.45 * n_layers, 6.0)
    fig = Figure(figsize=(panel_w * n_cols + 1.0, panel_h * n_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, sharey=True)).flatten()
    for ax in axes[len(grids):]:
        ax.set_axis_off()
    for ax, (kind, grid) in zip(axes, grids.items()):
        _panel(fig, ax, grid, rows, cols, f"restore {kind}", _SEQUENTIAL, lo, hi, highlight.get(kind, ()),
               "restored")
        ax.set_xlabel("position")
        ax.set_ylabel("layer")
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


__all__ = ["probe_map", "tracing_map"]
