"""Matplotlib figures shared by the lessons and the apps.

Every function returns a new ``matplotlib.figure.Figure`` built with the object API
(``Figure()``, never ``pyplot``), so a long-running app does not accumulate open figures
in pyplot's global registry. Inputs may be torch tensors or anything numpy accepts.

Ground truth is drawn the same way everywhere: an outline around the cells (or bars) that
the truth names, with a white halo so it stays visible on any colour, and a legend entry
"ground truth". Outlines carry ``gid="ground-truth"`` so tests can find them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from toylab.components import parse

TRUTH_GID = "ground-truth"
TRUTH_LABEL = "ground truth"
TRUTH_COLOR = "#d81b60"
_TRUTH_WIDTH = 2.2
_HALO = [patheffects.withStroke(linewidth=_TRUTH_WIDTH + 2.5, foreground="white")]

_SEQUENTIAL = "Blues"
_DIVERGING = "RdBu_r"
_ANNOTATE_MAX_CELLS = 64  # beyond this, numbers in cells are unreadable


def _array(values: Any, ndim: int, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, possibly on another device
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be numeric, got {type(values).__name__}: {err}") from None
    if arr.ndim != ndim:
        raise ValueError(f"{what} must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape})")
    return arr


def _check_labels(labels: Sequence[str], n: int, what: str) -> list[str]:
    labels = [str(label) for label in labels]
    if len(labels) != n:
        raise ValueError(f"{what}: {len(labels)} labels for {n} entries")
    return labels


def _truth_legend(ax: Any) -> None:
    # Above the plot, outside it, so it neither hides cells nor pushes the colour bar away.
    handle = Patch(facecolor="none", edgecolor=TRUTH_COLOR, linewidth=_TRUTH_WIDTH, label=TRUTH_LABEL)
    ax.figure.legend(handles=[handle], loc="outside upper right", frameon=False, fontsize="small")


def _outline_cells(ax: Any, cells: Collection[tuple[int, int]], shape: tuple[int, int]) -> None:
    """Outline ``(row, col)`` cells of an ``imshow`` grid, and add the legend entry."""
    for row, col in sorted(cells):
        if not (0 <= row < shape[0] and 0 <= col < shape[1]):
            raise ValueError(f"highlighted cell {(row, col)} is outside the grid of shape {shape}")
        rect = Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor=TRUTH_COLOR,
                         linewidth=_TRUTH_WIDTH, gid=TRUTH_GID, zorder=3)
        rect.set_path_effects(_HALO)
        ax.add_patch(rect)
    if cells:
        _truth_legend(ax)


def _grid(values: np.ndarray, row_labels: list[str], col_labels: list[str], title: str | None,
          cmap: str, vmin: float, vmax: float, cbar_label: str | None = None,
          annotate: bool = True, size: tuple[float, float] | None = None) -> tuple[Figure, Any]:
    rows, cols = values.shape
    if size is None:
        size = (min(2.6 + 0.55 * cols, 12.0), min(1.4 + 0.45 * rows, 10.0))
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(cols), col_labels, rotation=90 if max(map(len, col_labels)) > 3 else 0)
    ax.set_yticks(range(rows), row_labels)
    if title:
        ax.set_title(title, fontsize="medium")
    fig.colorbar(image, ax=ax, label=cbar_label, shrink=0.9)
    if annotate and values.size <= _ANNOTATE_MAX_CELLS:
        mid = (vmin + vmax) / 2
        for (r, c), v in np.ndenumerate(values):
            # Dark text on light cells: on both maps light cells sit near the middle/low end.
            light = abs(v - mid) < (vmax - vmin) / 4 if cmap == _DIVERGING else v < mid
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize="x-small",
                    color="black" if light else "white")
    return fig, ax


def attention_pattern(pattern: Any, str_tokens: Sequence[str], title: str | None = None,
                      highlight: Collection[tuple[int, int]] = ()) -> Figure:
    """One head's attention, pattern [query_pos, key_pos], with the prompt's tokens on both axes.

    ``highlight``: (query, key) cells to outline as ground truth, e.g. where the truth
    says the head should look.
    """
    pattern = _array(pattern, 2, "pattern [query_pos, key_pos]")
    q, k = pattern.shape
    if q != k:
        raise ValueError(f"pattern [query_pos, key_pos] must be square, got shape {pattern.shape}")
    tokens = _check_labels(str_tokens, q, "str_tokens must label every position")
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    side = min(2.5 + 0.25 * q, 10.0)
    fig, ax = _grid(pattern, labels, labels, title, _SEQUENTIAL, 0.0, 1.0, "attention probability",
                    annotate=False, size=(side + 1.6, side))
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    _outline_cells(ax, highlight, pattern.shape)
    return fig


def head_heatmap(scores: Any, title: str | None = None, highlight: Collection[str] = (),
                 vmin: float | None = 0.0, vmax: float | None = 1.0,
                 cbar_label: str | None = "score") -> Figure:
    """A value per head, scores [layer, head]; ``highlight`` heads ("L1H1") are outlined as ground truth."""
    scores = _array(scores, 2, "scores [layer, head]")
    cells = set()
    for head in highlight:
        kind, layer, index = parse(head)
        if kind != "head":
            raise ValueError(f"highlight {head!r} is not a head id such as 'L1H1'")
        if layer >= scores.shape[0] or index >= scores.shape[1]:
            raise ValueError(f"highlight {head!r} is outside scores of shape [layer, head] = {scores.shape}")
        cells.add((layer, index))
    lo = float(scores.min()) if vmin is None else vmin
    hi = float(scores.max()) if vmax is None else vmax
    fig, ax = _grid(scores, [f"L{i}" for i in range(scores.shape[0])],
                    [f"H{j}" for j in range(scores.shape[1])], title, _SEQUENTIAL, lo, hi, cbar_label)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    _outline_cells(ax, cells, scores.shape)
    return fig


def heatmap(values: Any, row_labels: Sequence[str], col_labels: Sequence[str], title: str | None = None,
            highlight: Collection[tuple[int, int]] = (), diverging: bool = True,
            cbar_label: str | None = None, xlabel: str | None = None, ylabel: str | None = None) -> Figure:
    """A labelled grid, values [rows, cols], e.g. patching effects by layer x position.

    ``diverging`` centres the colour map on 0 (effects can have either sign); otherwise the
    map runs from the minimum to the maximum.
    """
    values = _array(values, 2, "values [rows, cols]")
    rows = _check_labels(row_labels, values.shape[0], "row_labels")
    cols = _check_labels(col_labels, values.shape[1], "col_labels")
    if diverging:
        bound = float(np.nanmax(np.abs(values))) or 1.0
        lo, hi, cmap = -bound, bound, _DIVERGING
    else:
        lo, hi, cmap = float(np.nanmin(values)), float(np.nanmax(values)), _SEQUENTIAL
        hi = hi if hi > lo else lo + 1.0
    fig, ax = _grid(values, rows, cols, title, cmap, lo, hi, cbar_label)
    ax.set_xlabel(xlabel or "")
    ax.set_ylabel(ylabel or "")
    _outline_cells(ax, {(int(r), int(c)) for r, c in highlight}, values.shape)
    return fig


def bar(values: Any, labels: Sequence[str], title: str | None = None, highlight: Collection[str] = (),
        ylabel: str | None = None) -> Figure:
    """One bar per label; bars whose label is in ``highlight`` are outlined as ground truth."""
    values = _array(values, 1, "values")
    labels = _check_labels(labels, len(values), "labels")
    unknown = sorted(set(map(str, highlight)) - set(labels))
    if unknown:
        raise ValueError(f"highlight {unknown} is not among the labels {labels}")
    fig = Figure(figsize=(min(2.5 + 0.4 * len(values), 12.0), 3.2), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(range(len(values)), values, color="#4a90c2")
    for label, patch in zip(labels, bars):
        if label in highlight:
            patch.set_edgecolor(TRUTH_COLOR)
            patch.set_linewidth(_TRUTH_WIDTH)
            patch.set_path_effects(_HALO)
            patch.set_gid(TRUTH_GID)
            patch.set_zorder(3)
    ax.set_xticks(range(len(values)), labels, rotation=90 if max(map(len, labels)) > 4 else 0)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylabel(ylabel or "")
    if title:
        ax.set_title(title, fontsize="medium")
    if highlight:
        _truth_legend(ax)
    return fig


def training_curves(history: Sequence[Mapping[str, float]], title: str | None = None) -> Figure:
    """Loss (log scale) and accuracy against step, from a run's ``history.json``."""
    if not history:
        raise ValueError("history is empty: nothing was recorded during training")
    metrics = sorted({k for row in history for k in row if "/" in k})
    fig = Figure(figsize=(8.0, 3.0), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for name in metrics:
        points = [(row["step"], row[name]) for row in history if name in row]
        steps, vals = zip(*points)
        ax = acc_ax if name.endswith("accuracy") else loss_ax
        ax.plot(steps, vals, label=name, marker="." if len(points) < 30 else None)
    loss_ax.set_yscale("log")
    loss_ax.set_title("loss", fontsize="medium")
    acc_ax.set_title("accuracy", fontsize="medium")
    acc_ax.set_ylim(-0.02, 1.02)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("step")
        if ax.get_lines():
            ax.legend(fontsize="small", frameon=False)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def truth_outlines(fig: Figure) -> list[Any]:
    """The ground-truth outlines drawn in ``fig`` (for tests and for checking a plot)."""
    return [artist for ax in fig.axes for artist in ax.findobj(lambda a: a.get_gid() == TRUTH_GID)]
