"""Interactive twins of the lab's key figures: Altair charts (offline; Altair ships with Streamlit).

    chart = viz.heatmap_chart(effect, rows, cols, "patching effect", highlight={(1, 2)})
    st.altair_chart(chart)                      # hover a cell for its value; truth cells outlined

Each takes the arguments of its matplotlib twin in ``toylab.viz.plots`` / ``toylab.viz.progress``
(``INTERACTIVE`` maps one to the other, which is how the lab picks a chart where a figure would
be), so lessons keep their static figures and the lab's pages get tooltips, zoom and pan:

    heatmap        -> heatmap_chart          hover a cell for its row, column and value
    head_heatmap   -> head_heatmap_chart     the same per head; click a head to select it
    attention_pattern -> attention_chart     hover for query, key, tokens and probability
    bar            -> bar_chart
    training_curves -> training_curves_chart  zoom and pan (drag, scroll), hover a point
    progress_curves -> progress_curves_chart  the same, phases shaded
    probe_map      -> probe_map_chart        accuracy and selectivity side by side
    tracing_map    -> tracing_map_chart      one chart per traced state

Ground truth is drawn as in the figures: an outline in ``TRUTH_COLOR`` around the cells or bars
the truth names, and each chart's data marks them (``truth`` column) so tests can count them.
Altair is imported when a chart is built, never at ``import toylab.viz``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from toylab.components import parse
from toylab.viz import plots, probes, progress
from toylab.viz.plots import TRUTH_COLOR, TRUTH_LABEL, _array, _check_labels

if TYPE_CHECKING:
    from toylab.methods.progress import ProgressMeasures

_CELL = 22  # pixels per heatmap cell, within bounds


def _alt():
    import altair as alt

    return alt


def _grid_chart(values: np.ndarray, rows: list[str], cols: list[str], title: str | None, scheme: str,
                domain: tuple[float, float] | None, legend: str | None, cells: Collection[tuple[int, int]],
                xlabel: str = "", ylabel: str = "", extra: Mapping[str, np.ndarray] | None = None,
                select: str | None = None):
    alt = _alt()
    for row, col in cells:
        if not (0 <= row < values.shape[0] and 0 <= col < values.shape[1]):
            raise ValueError(f"highlighted cell {(row, col)} is outside the grid of shape {values.shape}")
    records = []
    for (r, c), v in np.ndenumerate(values):
        record = {"row": rows[r], "col": cols[c], "r": r, "c": c, "value": None if np.isnan(v) else float(v),
                  "truth": (r, c) in cells}
        for name, array in (extra or {}).items():
            record[name] = str(array[r][c])
        records.append(record)
    data = alt.Data(values=records)
    x = alt.X("col:N", sort=cols, title=xlabel, axis=alt.Axis(labelAngle=-90 if max(map(len, cols)) > 3 else 0))
    y = alt.Y("row:N", sort=rows, title=ylabel)
    scale = alt.Scale(scheme=scheme, domain=list(domain) if domain else alt.Undefined,
                      domainMid=0 if scheme == "redblue" else alt.Undefined,
                      reverse=scheme == "redblue")
    tooltip = [alt.Tooltip("row:N", title=ylabel or "row"), alt.Tooltip("col:N", title=xlabel or "column"),
               alt.Tooltip("value:Q", format=".4f"), alt.Tooltip("truth:N", title=TRUTH_LABEL)]
    tooltip += [alt.Tooltip(f"{name}:N") for name in (extra or {})]
    base = alt.Chart(data).mark_rect().encode(x=x, y=y, color=alt.Color("value:Q", scale=scale, title=legend),
                                             tooltip=tooltip)
    if select:
        picked = alt.selection_point(name=select, fields=["row", "col"], on="click")
        base = base.add_params(picked).encode(opacity=alt.condition(picked, alt.value(1.0), alt.value(0.55)))
    outline = alt.Chart(data).transform_filter("datum.truth").mark_rect(
        fill=None, stroke=TRUTH_COLOR, strokeWidth=2.5).encode(x=x, y=y, tooltip=tooltip)
    # Streamlit sizes a chart to fit its width and height with the axes and legend inside:
    # room for those comes on top of the cells.
    width = int(np.clip(_CELL * len(cols) + 170, 340, 800))
    height = int(np.clip(_CELL * len(rows) + 70, 150, 620))
    return alt.layer(base, outline).properties(width=width, height=height, title=title or "")


def heatmap_chart(values: Any, row_labels: Sequence[str], col_labels: Sequence[str], title: str | None = None,
                  highlight: Collection[tuple[int, int]] = (), diverging: bool = True,
                  cbar_label: str | None = None, xlabel: str | None = None, ylabel: str | None = None):
    """``plots.heatmap`` as a chart: values [rows, cols]; hover a cell for its value."""
    values = _array(values, 2, "values [rows, cols]")
    rows = _check_labels(row_labels, values.shape[0], "row_labels")
    cols = _check_labels(col_labels, values.shape[1], "col_labels")
    if diverging:
        bound = float(np.nanmax(np.abs(values))) or 1.0
        scheme, domain = "redblue", (-bound, bound)
    else:
        scheme, domain = "blues", None
    return _grid_chart(values, rows, cols, title, scheme, domain, cbar_label,
                       {(int(r), int(c)) for r, c in highlight}, xlabel or "", ylabel or "")


def head_heatmap_chart(scores: Any, title: str | None = None, highlight: Collection[str] = (),
                       vmin: float | None = 0.0, vmax: float | None = 1.0, cbar_label: str | None = "score"):
    """``plots.head_heatmap`` as a chart: scores [layer, head]; click a head to select it
    (``st.altair_chart(..., on_select="rerun")`` returns the selection ``head``)."""
    scores = _array(scores, 2, "scores [layer, head]")
    cells = set()
    for head in highlight:
        kind, layer, index = parse(head)
        if kind != "head" or layer >= scores.shape[0] or index >= scores.shape[1]:
            raise ValueError(f"highlight {head!r} is not a head of scores [layer, head] = {scores.shape}")
        cells.add((layer, index))
    lo = float(np.nanmin(scores)) if vmin is None else vmin
    hi = float(np.nanmax(scores)) if vmax is None else vmax
    return _grid_chart(scores, [f"L{i}" for i in range(scores.shape[0])], [f"H{j}" for j in range(scores.shape[1])],
                       title, "blues", (lo, hi), cbar_label, cells, "head", "layer", select="head")


def attention_chart(pattern: Any, str_tokens: Sequence[str], title: str | None = None,
                    highlight: Collection[tuple[int, int]] = ()):
    """``plots.attention_pattern`` as a chart: pattern [query_pos, key_pos]; hover for both tokens."""
    pattern = _array(pattern, 2, "pattern [query_pos, key_pos]")
    q, k = pattern.shape
    if q != k:
        raise ValueError(f"pattern [query_pos, key_pos] must be square, got shape {pattern.shape}")
    tokens = _check_labels(str_tokens, q, "str_tokens must label every position")
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    return _grid_chart(pattern, labels, labels, title, "blues", (0.0, 1.0), "attention probability",
                       {(int(a), int(b)) for a, b in highlight}, "key (attended to)", "query")


def bar_chart(values: Any, labels: Sequence[str], title: str | None = None, highlight: Collection[str] = (),
              ylabel: str | None = None):
    """``plots.bar`` as a chart; bars the truth names are outlined."""
    alt = _alt()
    values = _array(values, 1, "values")
    labels = _check_labels(labels, len(values), "labels")
    unknown = sorted(set(map(str, highlight)) - set(labels))
    if unknown:
        raise ValueError(f"highlight {unknown} is not among the labels {labels}")
    data = alt.Data(values=[{"label": lab, "value": float(v), "truth": lab in highlight}
                            for lab, v in zip(labels, values)])
    return alt.Chart(data).mark_bar(color="#4a90c2").encode(
        x=alt.X("label:N", sort=labels, title=""), y=alt.Y("value:Q", title=ylabel or ""),
        stroke=alt.condition("datum.truth", alt.value(TRUTH_COLOR), alt.value(None)),
        strokeWidth=alt.condition("datum.truth", alt.value(2.5), alt.value(0)),
        tooltip=[alt.Tooltip("label:N"), alt.Tooltip("value:Q", format=".4f"),
                 alt.Tooltip("truth:N", title=TRUTH_LABEL)],
    ).properties(width=int(np.clip(36 * len(values), 200, 720)), height=220, title=title or "")


def probe_map_chart(accuracy: Any, selectivity: Any, row_labels: Sequence[str], col_labels: Sequence[str],
                    title: str | None = None, highlight: Collection[tuple[int, int]] = ()):
    """``probes.probe_map`` as charts: accuracy and selectivity [hook, pos] side by side, the truth's
    cells outlined in both; hover a cell for its value."""
    alt = _alt()
    acc, sel, rows, cols = probes.probe_grids(accuracy, selectivity, row_labels, col_labels)
    cells = {(int(r), int(c)) for r, c in highlight}
    bound = max(float(np.nanmax(np.abs(sel))), 1e-6)
    return alt.hconcat(
        _grid_chart(acc, rows, cols, "probe accuracy (held out)", "blues", (0.0, 1.0), "accuracy", cells, "position"),
        _grid_chart(sel, rows, cols, "selectivity = accuracy - control", "redblue", (-bound, bound), "selectivity",
                    cells, "position"),
    ).resolve_scale(color="independent").properties(title=title or "")


def tracing_map_chart(scores: Mapping[str, Any], col_labels: Sequence[str], title: str | None = None,
                      highlight: Mapping[str, Collection[tuple[int, int]]] | None = None):
    """``probes.tracing_map`` as charts: one per traced state, scores[kind] [layer, pos], on one
    colour scale, two a row; the truth's cells outlined in their kind's chart."""
    alt = _alt()
    grids, rows, cols, highlight, (lo, hi) = probes.tracing_grids(scores, col_labels, highlight)
    charts = [_grid_chart(grid, rows, cols, f"restore {kind}", "blues", (lo, hi), "restored",
                          {(int(r), int(c)) for r, c in highlight.get(kind, ())}, "position", "layer")
              for kind, grid in grids.items()]
    return alt.vconcat(*(alt.hconcat(*charts[i:i + 2]) for i in range(0, len(charts), 2))).properties(title=title or "")


def _curves(records: list[dict], title: str, log: bool, y_title: str, step_line: float | None = None,
            spans: Sequence[dict] = ()):
    alt = _alt()
    zoom = alt.selection_interval(bind="scales", name="zoom_" + "".join(c if c.isalnum() else "_" for c in y_title))
    lines = alt.Chart(alt.Data(values=records)).mark_line(point=len(records) < 120).encode(
        x=alt.X("step:Q"), y=alt.Y("value:Q", scale=alt.Scale(type="log" if log else "linear"), title=y_title),
        color=alt.Color("series:N", title=None),
        tooltip=[alt.Tooltip("series:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", format=".4g")],
    ).add_params(zoom)
    layers = []
    if spans:
        layers.append(alt.Chart(alt.Data(values=list(spans))).mark_rect(opacity=0.35).encode(
            x="start:Q", x2="end:Q", color=alt.Color("phase:N", scale=alt.Scale(
                domain=list(progress.PHASE_COLORS), range=list(progress.PHASE_COLORS.values())), title="phase")))
    layers.append(lines)
    if step_line is not None:
        layers.append(alt.Chart(alt.Data(values=[{"step": step_line}])).mark_rule(color="black").encode(x="step:Q"))
    return alt.layer(*layers).resolve_scale(color="independent").properties(width=320, height=200, title=title)


def training_curves_chart(history: Sequence[Mapping[str, float]], title: str | None = None):
    """``plots.training_curves`` as charts: loss (log) and accuracy against step; drag or scroll
    to zoom and pan, hover a point for its value."""
    alt = _alt()
    if not history:
        raise ValueError("history is empty: nothing was recorded during training")
    metrics = sorted({k for row in history for k in row if "/" in k})
    loss = [{"step": row["step"], "series": m, "value": max(float(row[m]), 1e-12)}
            for m in metrics if not m.endswith("accuracy") for row in history if m in row]
    accuracy = [{"step": row["step"], "series": m, "value": float(row[m])}
                for m in metrics if m.endswith("accuracy") for row in history if m in row]
    charts = [_curves(loss, "loss", True, "loss")] if loss else []
    if accuracy:
        charts.append(_curves(accuracy, "accuracy", False, "accuracy"))
    return alt.hconcat(*charts).properties(title=title or "")


def progress_curves_chart(measures: ProgressMeasures, step: int | None = None, show_phases: bool = True,
                          title: str | None = None):
    """``progress.progress_curves`` as charts: losses, Gini and weight norm against step, the
    phases shaded, a rule at ``step``; zoom and pan each panel."""
    alt = _alt()
    steps = [float(s) for s in measures.steps]
    if step is not None and not steps[0] <= step <= steps[-1]:
        raise ValueError(f"step {step} is outside the run's checkpoints {int(steps[0])}..{int(steps[-1])}")
    spans = [{"start": p.start, "end": p.end if p.end is not None else steps[-1], "phase": p.name}
             for p in (measures.phases().phases if show_phases else ())]
    losses = [{"step": s, "series": name.replace("_", " "), "value": max(float(v), 1e-8)}
              for name in ("train_loss", "test_loss", "restricted_loss", "excluded_loss")
              for s, v in zip(steps, getattr(measures, name))]
    gini = [{"step": s, "series": "Gini", "value": float(v)} for s, v in zip(steps, measures.gini)]
    norm = [{"step": s, "series": "sum of squared weights", "value": float(v)}
            for s, v in zip(steps, measures.weight_norm)]
    return alt.hconcat(
        _curves(losses, "loss (restricted / excluded: key frequencies kept / removed)", True, "loss", step, spans),
        _curves(gini, "Gini of W_E in the Fourier basis", False, "Gini", step, spans),
        _curves(norm, "total sum of squared weights", False, "norm", step, spans),
    ).properties(title=title or "")


INTERACTIVE: dict[Callable, Callable] = {
    plots.heatmap: heatmap_chart,
    plots.head_heatmap: head_heatmap_chart,
    plots.attention_pattern: attention_chart,
    plots.bar: bar_chart,
    plots.training_curves: training_curves_chart,
    progress.progress_curves: progress_curves_chart,
    probes.probe_map: probe_map_chart,
    probes.tracing_map: tracing_map_chart,
}


def chart_truth(chart) -> int:
    """How many data rows of ``chart`` the truth names (for tests and for checking a chart)."""
    spec = chart.to_dict()
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "values" in node and isinstance(node["values"], list):
                found.extend(v for v in node["values"] if isinstance(v, dict) and v.get("truth") is True)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return len({tuple(sorted(v.items())) for v in found})


__all__ = ["INTERACTIVE", "attention_chart", "bar_chart", "chart_truth", "head_heatmap_chart", "heatmap_chart",
           "probe_map_chart", "progress_curves_chart", "tracing_map_chart", "training_curves_chart"]
