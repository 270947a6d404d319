"""Figures for steering: how well a steer works against its strength.

    fig = viz.steering_curves({r.source: r for r in results}, title="relation := r1")

Each source's sweep (``methods.evaluate_steer``'s ``SteeringResult``, or the same as plain data)
is drawn as success and preservation against alpha, one column per mode: an additive steer's
alpha is in units of the activation's mean norm, a setting steer's is the fraction of the way
to the value's mean, so the two never share an axis. The alpha each sweep chose is ringed;
the truth's steer (the ceiling) is drawn in the ground-truth colour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from toylab.viz.plots import TRUTH_COLOR, TRUTH_GID

MODES = ("add", "set")
AXIS_LABELS = {"add": "alpha (x the activation's mean norm)", "set": "alpha (fraction of the way to the mean)"}
TITLES = {"add": "additive steers", "set": "setting steers"}


def _get(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def _sweep(source: str, result: Any) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, float | None]:
    """(mode, alphas, success, preservation (nan where n/a), chosen alpha or None) of one source."""
    mode, sweep = _get(result, "mode"), _get(result, "sweep")
    if mode not in MODES:
        raise ValueError(f"{source}: mode must be one of {MODES}, got {mode!r}")
    if isinstance(sweep, (str, bytes)) or not isinstance(sweep, Sequence) or not sweep:
        raise ValueError(f"{source}: sweep must be a non-empty sequence of scores (alpha, success, preservation)")
    rows = []
    for score in sweep:
        values = [_get(score, name) for name in ("alpha", "success", "preservation")]
        if values[0] is None or values[1] is None:
            raise ValueError(f"{source}: every score needs an alpha and a success, got {score!r}")
        rows.append([float("nan") if v is None else float(v) for v in values])
    table = np.array(sorted(rows), dtype=float)  # [alpha, 3]
    if (table[:, 0] <= 0).any():
        raise ValueError(f"{source}: alphas must be positive (the axis is logarithmic), got {table[:, 0].tolist()}")
    chosen = _get(result, "alpha")
    return mode, table[:, 0], table[:, 1], table[:, 2], None if chosen is None else float(chosen)


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    palette = [cmap(i) for i in range(10) if i != 6]  # tab10's pink is too close to the truth's colour
    return [palette[i % len(palette)] for i in range(n)]


def steering_curves(results: Mapping[str, Any], title: str | None = None, truth: str = "truth",
                    marks: Mapping[str, float] | None = None) -> Figure:
    """Success (top) and preservation (bottom) against alpha, a colour per source, a column per mode.

    ``results`` maps a source to its sweep: a ``SteeringResult`` or a mapping with ``mode``
    ("add" or "set"), ``sweep`` (scores with ``alpha``, ``success`` and ``preservation``, None
    where n/a) and, optionally, ``alpha`` (the one chosen, ringed). The source named ``truth``
    is the ceiling, drawn in the ground-truth colour. ``marks`` maps a mode to an alpha drawn
    as a dashed line in that column (a slider's value, say). Where no prompt keeps its answer
    (preservation n/a throughout), only success is drawn.
    """
    if not results:
        raise ValueError("results is empty: give at least one source's sweep")
    curves = {source: _sweep(source, result) for source, result in results.items()}
    marks = dict(marks or {})
    if unknown := sorted(set(marks) - set(MODES)):
        raise ValueError(f"marks are keyed by mode, one of {MODES}; got {unknown}")
    modes = [m for m in MODES if any(c[0] == m for c in curves.values())]
    with_preservation = any(not np.isnan(c[3]).all() for c in curves.values())
    metrics = ["success", "preservation"] if with_preservation else ["success"]
    fig = Figure(figsize=(1.0 + 4.2 * len(modes), 0.9 + 2.6 * len(metrics)), layout="constrained")
    axes = np.array(fig.subplots(len(metrics), len(modes), sharey=True, squeeze=False))  # [metric, mode]
    others = iter(_colors(sum(source != truth for source in curves)))
    colors = {source: TRUTH_COLOR if source == truth else next(others) for source in curves}
    for col, mode in enumerate(modes):
        alphas = sorted({float(a) for c in curves.values() if c[0] == mode for a in c[1]}
                        | ({float(marks[mode])} if marks.get(mode, 0) > 0 else set()))
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            for source, (m, x, success, preservation, chosen) in curves.items():
                if m != mode:
                    continue
                y = success if metric == "success" else preservation
                style = {"gid": TRUTH_GID, "linewidth": 2.2} if source == truth else {"linewidth": 1.5}
                label = f"{source} (ceiling)" if source == truth else source
                ax.plot(x, y, marker="o", markersize=4, color=colors[source], label=label, **style)
                if chosen is not None and chosen in x and not math.isnan(y[list(x).index(chosen)]):
                    ax.plot([chosen], [y[list(x).index(chosen)]], marker="o", markersize=11, markerfacecolor="none",
                            markeredgecolor=colors[source], markeredgewidth=1.5, linestyle="none")
            if marks.get(mode, 0) > 0:
                ax.axvline(marks[mode], color="0.35", linestyle="--", linewidth=1)
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(alphas))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # no mathtext: no font hunt
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(TITLES[mode], fontsize="medium")
            if row == len(metrics) - 1:
                ax.set_xlabel(AXIS_LABELS[mode])
            if col == 0:
                ax.set_ylabel(metric)
            if row == 0 and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="x-small", loc="best")
    note = None if with_preservation else "preservation n/a: every answer should change"
    if title or note:
        fig.suptitle(f"{title} ({note})" if title and note else title or note, fontsize="medium")
    return fig


__all__ = ["steering_curves"]
