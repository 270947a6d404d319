"""Figures of one attention head inside a forward pass: its scores q·k / sqrt(d_head), masked, and its pattern.

Axis names: query_pos (the position attending), key_pos (the position attended to).

    _, cache = model.run_with_cache(tokens)
    scores = cache["attn_scores", 1][0, 1]      # [query_pos, key_pos], -inf where the causal mask hides a key
    pattern = cache["pattern", 1][0, 1]         # [query_pos, key_pos], softmax over key_pos
    fig = viz.qk_heatmaps(scores, pattern, task.to_str_tokens(tokens[0]))   # lessons (matplotlib)
    chart = viz.qk_chart(scores, pattern, task.to_str_tokens(tokens[0]))    # the lab: st.altair_chart(chart)

The masked entries of the scores (``-inf``, TransformerLens's IGNORE, as ``hook_attn_scores`` records them) are
drawn as grey cells marked "masked", never as a colour; the finite scores share a colour map centred on 0. The
pattern runs from 0 to 1. ``highlight`` outlines (query, key) cells as ground truth, as every toylab figure does.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from toylab.viz.plots import TRUTH_COLOR, _array, _check_labels, _outline_cells

MASKED_COLOR = "#cfd8dc"  # the cells the causal mask hides
_MASKED = ListedColormap([MASKED_COLOR])


def _inputs(scores: Any, pattern: Any, str_tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scores and pattern as [query_pos, key_pos] arrays of one shape, and a unique label per position."""
    scores = _array(scores, 2, "scores [query_pos, key_pos]")
    pattern = _array(pattern, 2, "pattern [query_pos, key_pos]")
    if scores.shape != pattern.shape:
        raise ValueError(f"scores {scores.shape} and pattern {pattern.shape} must have the same shape "
                         "[query_pos, key_pos]")
    if scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores [query_pos, key_pos] must be square (self-attention), got shape {scores.shape}")
    if np.isnan(scores).any() or np.isposinf(scores).any():
        raise ValueError("scores hold NaN or +inf: only -inf (a masked key) is allowed besides finite values")
    tokens = _check_labels(str_tokens, scores.shape[0], "str_tokens must label every position")
    return scores, pattern, [f"{i}:{t}" for i, t in enumerate(tokens)]


def _score_bound(scores: np.ndarray) -> float:
    finite = scores[np.isfinite(scores)]
    return float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0


def qk_heatmaps(scores: Any, pattern: Any, str_tokens: Sequence[str], title: str | None = None,
                highlight: Collection[tuple[int, int]] = ()) -> Figure:
    """Two panels for one head: its attention scores [query_pos, key_pos] (q·k / sqrt(d_head), masked keys grey)
    and its pattern [query_pos, key_pos]; ``highlight`` (query, key) cells are outlined as ground truth in both."""
    scores, pattern, labels = _inputs(scores, pattern, str_tokens)
    n = scores.shape[0]
    side = min(2.4 + 0.26 * n, 9.0)
    fig = Figure(figsize=(2 * side + 2.4, side), layout="constrained")
    score_ax, pattern_ax = fig.subplots(1, 2)
    masked = ~np.isfinite(scores)
    bound = _score_bound(scores)
    if masked.any():
        score_ax.imshow(np.where(masked, 1.0, np.nan), cmap=_MASKED, vmin=0, vmax=1, aspect="auto")
    image = score_ax.imshow(np.where(masked, np.nan, scores), cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    fig.colorbar(image, ax=score_ax, label="q·k / sqrt(d_head)", shrink=0.9)
    score_ax.set_title("scores (hook_attn_scores); grey: masked", fontsize="medium")
    image = pattern_ax.imshow(pattern, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=pattern_ax, label="attention probability", shrink=0.9)
    pattern_ax.set_title("pattern (hook_pattern): softmax over keys", fontsize="medium")
    rotation = 90 if max(map(len, labels)) > 3 else 0
    for ax in (score_ax, pattern_ax):
        ax.set_xticks(range(n), labels, rotation=rotation, fontsize="small")
        ax.set_yticks(range(n), labels, fontsize="small")
        ax.set_xlabel("key (attended to)")
        ax.set_ylabel("query")
    cells = {(int(q), int(k)) for q, k in highlight}
    if cells:
        _outline_cells(score_ax, cells, scores.shape)
        _outline_cells(pattern_ax, cells, pattern.shape)
        fig.legends = fig.legends[:1]  # one "ground truth" entry for the two panels
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def qk_table(scores: Any, pattern: Any, str_tokens: Sequence[str],
             highlight: Collection[tuple[int, int]] = ()) -> list[dict[str, Any]]:
    """One row per (query, key) cell, as ``qk_chart`` draws them: the labels, the score (None where masked), the
    probability and whether the truth outlines the cell."""
    scores, pattern, labels = _inputs(scores, pattern, str_tokens)
    cells = {(int(q), int(k)) for q, k in highlight}
    return [{"query": labels[q], "key": labels[k], "query_pos": q, "key_pos": k,
             "score": float(scores[q, k]) if math.isfinite(scores[q, k]) else None,
             "masked": not math.isfinite(scores[q, k]), "pattern": float(pattern[q, k]), "truth": (q, k) in cells}
            for q in range(len(labels)) for k in range(len(labels))]


def qk_chart(scores: Any, pattern: Any, str_tokens: Sequence[str], title: str | None = None,
             highlight: Collection[tuple[int, int]] = (), size: int = 300) -> Any:
    """The two panels of ``qk_heatmaps`` as an interactive Altair chart (hover a cell for its query, key, score and
    probability). Altair is imported here, not with ``toylab.viz``; the chart renders offline."""
    import altair as alt

    rows = qk_table(scores, pattern, str_tokens, highlight)
    labels = [row["query"] for row in rows if row["key_pos"] == 0]
    bound = _score_bound(_array(scores, 2, "scores"))
    x = alt.X("key:N", sort=labels, title="key (attended to)")
    y = alt.Y("query:N", sort=labels, title="query")
    tooltip = [alt.Tooltip("query:N"), alt.Tooltip("key:N"), alt.Tooltip("score:Q", title="q·k / sqrt(d_head)",
                                                                          format=".3f"),
               alt.Tooltip("masked:N"), alt.Tooltip("pattern:Q", title="attention probability", format=".3f")]
    data = alt.Data(values=rows)

    def panel(field: str, scale: Any, legend: str, panel_title: str) -> Any:
        base = alt.Chart(data).encode(x=x, y=y, tooltip=tooltip)
        color = alt.Color(f"{field}:Q", scale=scale, title=legend, legend=alt.Legend(orient="bottom"))
        layers = [base.mark_rect().encode(color=color).transform_filter("datum.masked == false")]
        if field == "score":  # the masked keys: grey, with no colour of the scale
            layers.append(base.mark_rect(color=MASKED_COLOR).transform_filter("datum.masked == true"))
        if any(row["truth"] for row in rows):
            layers.append(base.mark_rect(filled=False, stroke=TRUTH_COLOR, strokeWidth=2.5).transform_filter(
                "datum.truth == true"))
        return alt.layer(*layers).properties(width=size, height=size, title=panel_title)

    chart = alt.hconcat(
        panel("score", alt.Scale(scheme="redblue", reverse=True, domain=[-bound, bound]), "q·k / sqrt(d_head)",
              "scores (hook_attn_scores); grey: masked"),
        panel("pattern", alt.Scale(scheme="blues", domain=[0, 1]), "probability",
              "pattern (hook_pattern): softmax over keys"),
    ).resolve_scale(color="independent")
    return chart.properties(title=title) if title else chart


__all__ = ["MASKED_COLOR", "qk_chart", "qk_heatmaps", "qk_table"]
