"""Figures for model editing: where causal tracing points, against where an edit works.

Axis names: fact (one edited fact), layer (an MLP layer).

    result = methods.localisation_vs_editing(model, task, edits, layers=(0, 1), stored=stored)
    fig = viz.editing_map(result.trace, result.edit_scores, labels, result.layers, stored=result.stored)

Two panels [fact, layer]: the fraction of the answer restored by restoring that MLP's output at
the subject (causal tracing), and CounterFact's score S of a ROME edit at that MLP. The layer the
truth stores each fact in is outlined in both, as in every toylab figure (``toylab.viz.plots``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from toylab.viz.plots import _SEQUENTIAL, _array, _check_labels
from toylab.viz.probes import _panel


def editing_map(trace: Any, edit_scores: Any, fact_labels: Sequence[str], layers: Sequence[int],
                stored: Sequence[int | None] | None = None, title: str | None = None) -> Figure:
    """Causal tracing and edit scores side by side, each [fact, layer].

    ``trace``: the fraction of the answer's probability restored by restoring MLP ``layers[j]``'s
    output at the subject (may be negative); ``edit_scores``: S of an edit at that layer, in
    [0, 1] (nan where undefined). ``stored``: per fact, the layer the ground truth stores it in
    (None where unknown), outlined in both panels.
    """
    tr = _array(trace, 2, "trace [fact, layer]")
    sc = _array(edit_scores, 2, "edit_scores [fact, layer]")
    if tr.shape != sc.shape:
        raise ValueError(f"trace {tr.shape} and edit_scores {sc.shape} must have the same shape [fact, layer]")
    rows = _check_labels(fact_labels, tr.shape[0], "fact_labels")
    layers = [int(layer) for layer in layers]
    cols = _check_labels([f"MLP{layer}" for layer in layers], tr.shape[1], "layers")
    cells: set[tuple[int, int]] = set()
    if stored is not None:
        stored = list(stored)
        if len(stored) != tr.shape[0]:
            raise ValueError(f"stored gives {len(stored)} layers for {tr.shape[0]} facts")
        for row, layer in enumerate(stored):
            if layer is None:
                continue
            if int(layer) not in layers:
                raise ValueError(f"fact {rows[row]!r} is stored in MLP{layer}, which is not among the layers {layers}")
            cells.add((row, layers.index(int(layer))))
    width = min(2.6 + 0.9 * tr.shape[1], 6.0)
    fig = Figure(figsize=(2 * width + 2.5, min(1.6 + 0.45 * tr.shape[0], 8.0)), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    finite = tr[np.isfinite(tr)]
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = max(1.0, float(finite.max())) if finite.size else 1.0
    _panel(fig, left, tr, rows, cols, "causal tracing: MLP output at the subject restored", _SEQUENTIAL, lo, hi,
           cells, "fraction restored")
    _panel(fig, right, sc, rows, cols, "ROME edit at that MLP: score S", _SEQUENTIAL, 0.0, 1.0, cells, "S")
    left.set_xlabel("MLP layer")
    right.set_xlabel("MLP layer")
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


__all__ = ["editing_map"]
