"""Figures for the logit lens and direct logit attribution: matplotlib for the lessons, Altair for the lab.

Axis names: stage (a point of the residual stream, labelled as ``methods.logit_lens`` labels it), pos (a token
position), component (a term of the final residual stream: embed, pos_embed, L{l}H{h}, MLP{l}, bias), key_pos
(the position a head reads from).

    lens = methods.logit_lens(model, batch)                        # a batch of one prompt: one prompt's lens
    fig = viz.logit_lens_plot(lens.position_logprob, lens.stages, str_tokens, top_tokens=top, highlight=cells)
    chart = viz.lens_chart(lens.position_logprob, lens.stages, str_tokens, top_tokens=top, highlight=cells)
    dla = methods.direct_logit_attribution(model, pair)
    fig = viz.dla_plot({"direct attribution": dla.total}, dla.components, truth={"L1H1"})
    fig = viz.source_plot(values, heads, str_tokens, truth={"L2H0", "L2H3"})    # values [head, key_pos]
    chart = viz.source_chart(values, heads, str_tokens, truth={"L2H0", "L2H3"})

Ground truth is outlined as in every toylab figure (``toylab.viz.plots``): the cells (stage, position) where the
truth says the answer is written, the bars of the truth's components, the rows of its heads. The Altair charts
(``st.altair_chart(chart)`` in the lab) import Altair when called and render offline; their outlines are a layer
of rectangles stroked in the truth colour, whose records carry ``"truth": True``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from toylab.viz.plots import (
    _DIVERGING,
    _HALO,
    _SEQUENTIAL,
    _TRUTH_WIDTH,
    TRUTH_COLOR,
    TRUTH_GID,
    _array,
    _check_labels,
    _outline_cells,
    _truth_legend,
)

_SERIES_COLORS = ("#4a90c2", "#f5a623", "#7cb342", "#8e24aa")
_TOKEN_CELLS_MAX = 400  # beyond this many cells the top tokens are not written in them


def _position_labels(str_tokens: Sequence[str], n: int) -> list[str]:
    tokens = _check_labels(str_tokens, n, "str_tokens must label every position")
    return [f"{i}:{t}" for i, t in enumerate(tokens)]


def _cells(highlight: Collection[tuple[int, int]], shape: tuple[int, int]) -> set[tuple[int, int]]:
    cells = {(int(r), int(c)) for r, c in highlight}
    for row, col in cells:
        if not (0 <= row < shape[0] and 0 <= col < shape[1]):
            raise ValueError(f"highlighted cell {(row, col)} is outside the grid of shape {shape}")
    return cells


def _top_tokens(top_tokens: Sequence[Sequence[str]] | None, shape: tuple[int, int]) -> list[list[str]] | None:
    if top_tokens is None:
        return None
    rows = [[str(t) for t in row] for row in top_tokens]
    if len(rows) != shape[0] or any(len(row) != shape[1] for row in rows):
        raise ValueError(f"top_tokens must be [stage][pos], {shape[0]} x {shape[1]}")
    return rows


def logit_lens_plot(values: Any, stages: Sequence[str], str_tokens: Sequence[str],
                    top_tokens: Sequence[Sequence[str]] | None = None, highlight: Collection[tuple[int, int]] = (),
                    title: str | None = None, value_label: str = "log p(answer)") -> Figure:
    """The logit lens of a prompt, values [stage, pos] (e.g. ``LogitLens.position_logprob``: the log-probability
    of the right next token when that stage is decoded; NaN where nothing is scored, drawn blank).

    ``top_tokens`` [stage][pos]: the token each stage decodes to, written in its cell. ``highlight``: (stage, pos)
    cells outlined as ground truth, e.g. the stage the truth's writers have written the answer by."""
    values = _array(values, 2, "values [stage, pos]")
    rows = _check_labels(stages, values.shape[0], "stages")
    cols = _position_labels(str_tokens, values.shape[1])
    tops = _top_tokens(top_tokens, values.shape)
    cells = _cells(highlight, values.shape)
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if finite.size else -1.0
    hi = max(float(finite.max()) if finite.size else 0.0, lo + 1e-6)
    fig = Figure(figsize=(min(3.0 + 0.62 * values.shape[1], 14.0), min(1.6 + 0.55 * values.shape[0], 8.0)),
                 layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=_SEQUENTIAL, vmin=lo, vmax=hi, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("position (the next token is predicted)")
    ax.set_ylabel("stage decoded")
    fig.colorbar(image, ax=ax, label=value_label, shrink=0.9)
    if tops is not None and values.size <= _TOKEN_CELLS_MAX:
        for (r, c), v in np.ndenumerate(values):
            dark = np.isfinite(v) and v > (lo + hi) / 2
            ax.text(c, r, tops[r][c], ha="center", va="center", fontsize="xx-small",
                    color="white" if dark else "black")
    _outline_cells(ax, cells, values.shape)
    ax.set_title(title or "logit lens", fontsize="medium")
    return fig


def dla_plot(series: Mapping[str, Any], components: Sequence[str], truth: Collection[str] = (),
             title: str | None = None, ylabel: str = "direct attribution") -> Figure:
    """Direct logit attribution per component, one group of bars per component and one bar per series
    (``{"frozen scale": ..., "scale per component": ...}``, each [component]). The truth's components are
    outlined."""
    if not series:
        raise ValueError("series is empty: give at least one {name: values [component]}")
    arrays = {str(name): _array(values, 1, f"series {name!r} [component]") for name, values in series.items()}
    labels = _check_labels(components, len(next(iter(arrays.values()))), "components")
    for name, values in arrays.items():
        if len(values) != len(labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(labels)} components")
    unknown = sorted(set(map(str, truth)) - set(labels))
    if unknown:
        raise ValueError(f"truth {unknown} is not among the components {labels}")
    n = len(arrays)
    width = 0.8 / n
    fig = Figure(figsize=(min(3.0 + 0.42 * len(labels) * max(1, n * 0.7), 14.0), 3.4), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, values) in enumerate(arrays.items()):
        x = np.arange(len(labels)) - 0.4 + width * (i + 0.5)
        bars = ax.bar(x, values, width=width, color=_SERIES_COLORS[i % len(_SERIES_COLORS)], label=name)
        for label, patch in zip(labels, bars):
            if label in truth:
                patch.set_edgecolor(TRUTH_COLOR)
                patch.set_linewidth(_TRUTH_WIDTH)
                patch.set_path_effects(_HALO)
                patch.set_gid(TRUTH_GID)
                patch.set_zorder(3)
    ax.set_xticks(range(len(labels)), labels, rotation=90 if max(map(len, labels)) > 4 else 0)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylabel(ylabel)
    if n > 1:
        ax.legend(fontsize="small", frameon=False, loc="upper left")
    if truth:
        _truth_legend(ax)
    ax.set_title(title or "direct logit attribution", fontsize="medium")
    return fig


def source_plot(values: Any, rows: Sequence[str], str_tokens: Sequence[str], truth: Collection[str] = (),
                title: str | None = None, value_label: str = "direct attribution") -> Figure:
    """Each row's direct attribution split by the position it reads from, values [row, key_pos] (a head's
    attribution at the scored positions, as pattern x value x W_O on the answer direction). Rows named in
    ``truth`` are outlined whole."""
    values = _array(values, 2, "values [row, key_pos]")
    labels = _check_labels(rows, values.shape[0], "rows")
    cols = _position_labels(str_tokens, values.shape[1])
    unknown = sorted(set(map(str, truth)) - set(labels))
    if unknown:
        raise ValueError(f"truth {unknown} is not among the rows {labels}")
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    bound = bound or 1.0
    fig = Figure(figsize=(min(3.0 + 0.5 * values.shape[1], 14.0), min(1.6 + 0.4 * values.shape[0], 9.0)),
                 layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap=_DIVERGING, vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("position read from (key)")
    fig.colorbar(image, ax=ax, label=value_label, shrink=0.9)
    for row, label in enumerate(labels):
        if label in truth:
            rect = Rectangle((-0.5, row - 0.5), values.shape[1], 1, fill=False, edgecolor=TRUTH_COLOR,
                             linewidth=_TRUTH_WIDTH, gid=TRUTH_GID, zorder=3)
            rect.set_path_effects(_HALO)
            ax.add_patch(rect)
    if truth:
        _truth_legend(ax)
    ax.set_title(title or "direct attribution by source position", fontsize="medium")
    return fig


# ---- Altair: the lab's interactive versions ---------------------------------------------------------------


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _heat_chart(records: list[dict[str, Any]], rows: list[str], cols: list[str], value_label: str,
                diverging: bool, title: str | None, width: int, height: int) -> Any:
    import altair as alt

    finite = [r["value"] for r in records if r["value"] is not None]
    x = alt.X("col:N", title=None, sort=cols, axis=alt.Axis(labelAngle=-60))
    y = alt.Y("row:N", title=None, sort=rows)
    if diverging:
        bound = max((abs(v) for v in finite), default=1.0) or 1.0
        scale = alt.Scale(scheme="redblue", domain=[bound, -bound])
    else:
        scale = alt.Scale(scheme="blues")
    tooltip = [alt.Tooltip("row:N", title="row"), alt.Tooltip("col:N", title="position"),
               alt.Tooltip("value:Q", title=value_label, format=".3f")]
    if any("top" in r for r in records):
        tooltip.append(alt.Tooltip("top:N", title="decodes to"))
    base = alt.Chart(alt.Data(values=records))
    layers = [base.mark_rect().encode(x=x, y=y, color=alt.Color("value:Q", title=value_label, scale=scale),
                                      tooltip=tooltip)]
    if any("top" in r for r in records):
        layers.append(base.mark_text(fontSize=9, color="#263238").encode(x=x, y=y, text="top:N", tooltip=tooltip))
    outlined = [r for r in records if r["truth"]]
    if outlined:
        layers.append(alt.Chart(alt.Data(values=outlined)).mark_rect(
            fill=None, stroke=TRUTH_COLOR, strokeWidth=2.5).encode(x=x, y=y, tooltip=tooltip))
    chart = alt.layer(*layers).properties(width=width, height=height)
    return chart.properties(title=title) if title else chart


def lens_chart(values: Any, stages: Sequence[str], str_tokens: Sequence[str],
               top_tokens: Sequence[Sequence[str]] | None = None, highlight: Collection[tuple[int, int]] = (),
               title: str | None = None, value_label: str = "log p(answer)", width: int = 640,
               height: int = 220) -> Any:
    """``logit_lens_plot`` as an interactive Altair chart: hover a cell for the stage, the position, the value
    and the token the stage decodes to; highlighted cells are outlined in the truth colour."""
    values = _array(values, 2, "values [stage, pos]")
    rows = _check_labels(stages, values.shape[0], "stages")
    cols = _position_labels(str_tokens, values.shape[1])
    tops = _top_tokens(top_tokens, values.shape)
    cells = _cells(highlight, values.shape)
    records = []
    for (r, c), v in np.ndenumerate(values):
        record = {"row": rows[r], "col": cols[c], "value": _finite(v), "truth": (r, c) in cells}
        if tops is not None:
            record["top"] = tops[r][c]
        records.append(record)
    return _heat_chart(records, rows, cols, value_label, False, title, width, height)


def source_chart(values: Any, rows: Sequence[str], str_tokens: Sequence[str], truth: Collection[str] = (),
                 title: str | None = None, value_label: str = "direct attribution", width: int = 640,
                 height: int | None = None) -> Any:
    """``source_plot`` as an interactive Altair chart; the cells of the truth's rows are outlined."""
    values = _array(values, 2, "values [row, key_pos]")
    labels = _check_labels(rows, values.shape[0], "rows")
    cols = _position_labels(str_tokens, values.shape[1])
    unknown = sorted(set(map(str, truth)) - set(labels))
    if unknown:
        raise ValueError(f"truth {unknown} is not among the rows {labels}")
    records = [{"row": labels[r], "col": cols[c], "value": _finite(v), "truth": labels[r] in truth}
               for (r, c), v in np.ndenumerate(values)]
    return _heat_chart(records, labels, cols, value_label, True, title, width,
                       height or max(120, 18 * len(labels)))


__all__ = ["dla_plot", "lens_chart", "logit_lens_plot", "source_chart", "source_plot"]
