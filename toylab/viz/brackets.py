"""Figures for balanced brackets: one string's running balance and flags, and what each component's ablation destroys.

Axis names: pos (a position of ``[BOS, x_1 .. x_n]``), component (a head or MLP id).

    v = task.variables(tokens)
    fig = viz.bracket_trace(task.to_str_tokens(tokens[0]), v["balance"][0], flags=p_negative[0],
                            negative=v["negative"][0])
    fig = viz.failure_bars({"dips": {"L0H1": 0.98, ...}, "unclosed": {...}}, truth={"dips": {"L0H1", ...}, ...})

``bracket_trace`` draws the running balance above, and (with ``flags``) the "below zero" flag read out at each
position below it, where the positions the algorithm flags are outlined as ground truth. ``failure_bars`` gives one
panel per kind of counterfactual, a bar per component, the truth's components outlined, as in every toylab figure
(``toylab.viz.plots``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from toylab.viz.plots import _HALO, _TRUTH_WIDTH, TRUTH_COLOR, TRUTH_GID, _array, _check_labels, _truth_legend

_LINE = "#4a90c2"
_BELOW = "#f4c7c3"


def _outline(patch: Any) -> None:
    patch.set_edgecolor(TRUTH_COLOR)
    patch.set_linewidth(_TRUTH_WIDTH)
    patch.set_path_effects(_HALO)
    patch.set_gid(TRUTH_GID)
    patch.set_zorder(3)


def bracket_trace(str_tokens: Sequence[str], balance: Any, flags: Any = None, negative: Any = None,
                  title: str | None = None) -> Figure:
    """The running balance of one string, balance [pos], with its tokens along the x axis.

    ``flags`` [pos] in [0, 1]: the "balance below zero" flag read out at each position (a probe's probability, say),
    drawn as bars below; ``negative`` [pos] bool: where the algorithm says the balance is below zero, outlined as
    ground truth in that panel (only drawn with ``flags``).
    """
    bal = _array(balance, 1, "balance [pos]")
    labels = _check_labels(str_tokens, len(bal), "str_tokens must label every position")
    fl = None if flags is None else _array(flags, 1, "flags [pos]")
    if fl is not None and len(fl) != len(bal):
        raise ValueError(f"flags has {len(fl)} positions, balance {len(bal)}")
    neg = None
    if negative is not None:
        neg = _array(negative, 1, "negative [pos]").astype(bool)
        if len(neg) != len(bal):
            raise ValueError(f"negative has {len(neg)} positions, balance {len(bal)}")
    width = min(3.0 + 0.28 * len(bal), 12.0)
    fig = Figure(figsize=(width, 4.4 if fl is not None else 2.8), layout="constrained")
    if fl is not None:
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    else:
        top, bottom = fig.add_subplot(), None
    x = np.arange(len(bal))
    low = min(float(bal.min()), 0.0) - 0.5
    top.axhspan(low, 0, color=_BELOW, alpha=0.5, linewidth=0, label="below zero")
    top.axhline(0, color="grey", linewidth=0.8)
    top.plot(x, bal, color=_LINE, marker="o", markersize=3.5, linewidth=1.6, label="running balance")
    top.set_ylim(low, max(float(bal.max()), 0.0) + 0.5)
    top.set_ylabel("balance")
    fig.legend(*top.get_legend_handles_labels(), loc="outside upper left", ncols=2, fontsize="small", frameon=False)
    if title:
        top.set_title(title, fontsize="medium")
    last = bottom if bottom is not None else top
    last.set_xticks(x, labels, fontsize="small")
    last.set_xlabel("position")
    if bottom is not None:
        bars = bottom.bar(x, fl, color=_LINE, width=0.7)
        if neg is not None:
            for flagged, patch in zip(neg, bars):
                if flagged:
                    _outline(patch)
            if neg.any():
                _truth_legend(bottom)
        bottom.set_ylim(0, 1.05)
        bottom.set_ylabel("flag read out")
    return fig


def failure_bars(scores: Mapping[str, Mapping[str, float]], truth: Mapping[str, Collection[str]] | None = None,
                 bar: float | None = 0.5, title: str | None = None) -> Figure:
    """One panel per kind of counterfactual, scores {kind: {component: value}}: a bar per component.

    ``truth`` {kind: components}: the components the truth says that kind hinges on, outlined. ``bar``: a dashed
    line at that value (None: none).
    """
    if not scores:
        raise ValueError("scores is empty: give {kind: {component: value}}")
    kinds = list(scores)
    if truth is not None:
        unknown = sorted(set(truth) - set(kinds))
        if unknown:
            raise ValueError(f"truth names kinds {unknown} that scores lacks ({kinds})")
    fig = Figure(figsize=(min(2.0 + 3.2 * len(kinds), 12.0), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(kinds), sharey=True))
    outlined = False
    for ax, kind in zip(axes, kinds):
        names = [str(c) for c in scores[kind]]
        if not names:
            raise ValueError(f"scores[{kind!r}] is empty")
        values = _array([scores[kind][c] for c in scores[kind]], 1, f"scores[{kind!r}]")
        marked = set(truth.get(kind, ())) if truth is not None else set()
        missing = sorted(marked - set(names))
        if missing:
            raise ValueError(f"truth[{kind!r}] names {missing}, which are not among the components {names}")
        bars = ax.bar(range(len(values)), values, color=_LINE)
        for name, patch in zip(names, bars):
            if name in marked:
                _outline(patch)
                outlined = True
        ax.set_xticks(range(len(values)), names, rotation=90 if max(map(len, names)) > 4 else 0)
        ax.axhline(0, color="grey", linewidth=0.8)
        if bar is not None:
            ax.axhline(bar, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(kind, fontsize="medium")
    axes[0].set_ylabel("fraction destroyed")
    if outlined:
        _truth_legend(axes[0])
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


__all__ = ["bracket_trace", "failure_bars"]
