"""Figures of attribution patching against patching for real: a scatter per node or edge, and EAP-IG's steps.

Axis names: component (a node such as "L1H1", or an edge such as "L0H2 -> L1H1 (k)"), step (EAP-IG's number of
integration steps).

    estimate, real = methods.eap(model, pair).scores, methods.edge_patching(model, pair).scores
    fig = viz.attribution_scatter(estimate, real, truth=zm.truth.edges)      # lessons (matplotlib)
    chart = viz.attribution_chart(estimate, real, truth=zm.truth.edges)      # the lab: st.altair_chart(chart)
    fig = viz.ig_steps_plot(steps, {str(e): [...] for e in edges}, {str(e): real[e] for e in edges})

Both scores are shares of the clean-minus-corrupted effect that patching the component removes (1: all of it):
the first-order estimate on the y axis, the real patch on the x axis. A component the estimate gets right lies on
the diagonal y = x; below it, the estimate understates what patching does. Components of the ground truth are
ringed in the truth colour (``gid="ground-truth"``, as in every toylab figure); the chart colours them instead and
names each point in its tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from toylab.viz.plots import TRUTH_COLOR, TRUTH_GID, TRUTH_LABEL

OTHER_COLOR = "#90a4ae"  # components outside the truth
DIAGONAL_LABEL = "y = x (the estimate is exact)"


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation; nan when either side is constant or there are fewer than two points."""
    if len(x) < 2 or float(np.std(x)) == 0.0 or float(np.std(y)) == 0.0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def scatter_table(estimate: Mapping[Any, float], real: Mapping[Any, float],
                  truth: Collection[Any] = ()) -> list[dict[str, Any]]:
    """One row per component of ``real`` (keys are matched as given, then by ``str``): its name, the real patch's
    share, the estimate's, their gap (estimate - real) and whether the truth names it; largest |gap| first."""
    if not real:
        raise ValueError("real is empty: nothing to compare")
    by_name = {str(k): v for k, v in estimate.items()}
    truth_names = {str(t) for t in truth}
    rows = []
    for key, value in real.items():
        name = str(key)
        guess = estimate[key] if key in estimate else by_name.get(name)
        if guess is None:
            raise ValueError(f"{name!r} has a real score but no estimate")
        guess, value = float(guess), float(value)
        if not (math.isfinite(guess) and math.isfinite(value)):
            raise ValueError(f"{name!r}: scores must be finite, got estimate {guess} and real {value}")
        rows.append({"component": name, "real": value, "estimate": guess, "gap": guess - value,
                     "truth": name in truth_names})
    rows.sort(key=lambda row: -abs(row["gap"]))
    return rows


def correlation(estimate: Mapping[Any, float], real: Mapping[Any, float]) -> float:
    """Pearson's correlation of the estimate with the real patch over the components of ``real``."""
    rows = scatter_table(estimate, real)
    return _pearson(np.array([r["real"] for r in rows]), np.array([r["estimate"] for r in rows]))


def _limits(rows: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    values = [r["real"] for r in rows] + [r["estimate"] for r in rows]
    lo, hi = min(0.0, min(values)), max(1.0, max(values))
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def attribution_scatter(estimate: Mapping[Any, float], real: Mapping[Any, float], truth: Collection[Any] = (),
                        title: str | None = None, estimate_label: str = "attribution patching (estimate)",
                        real_label: str = "patched for real", annotate: int = 4) -> Figure:
    """The estimate against the real patch, one point per component, with the diagonal y = x.

    ``estimate`` and ``real``: {component: share of the effect removed} (nodes or edges; keys compared by ``str``
    where they differ in type). ``truth``: the components the ground truth names, ringed. The truth's points and
    the ``annotate`` other points farthest from the diagonal (if visibly off it) are labelled. The title gives
    Pearson's r.
    """
    rows = scatter_table(estimate, real, truth)
    lo, hi = _limits(rows)
    fig = Figure(figsize=(5.6, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1.0, zorder=1)
    x = np.array([r["real"] for r in rows])
    y = np.array([r["estimate"] for r in rows])
    inside = np.array([r["truth"] for r in rows])
    ax.scatter(x, y, s=30, color=np.where(inside, TRUTH_COLOR, OTHER_COLOR).tolist(), edgecolors="#37474f",
               linewidths=0.5, zorder=2)
    if inside.any():
        ax.scatter(x[inside], y[inside], s=150, facecolors="none", edgecolors=TRUTH_COLOR, linewidths=2.0,
                   zorder=3, gid=TRUTH_GID)
    notable = 0.05 * (hi - lo)  # a point this far off the diagonal is worth a name
    labelled = [r for r in rows if r["truth"]]
    labelled += [r for r in rows if not r["truth"] and abs(r["gap"]) >= notable][:max(0, annotate)]
    labelled.sort(key=lambda r: (r["real"], r["estimate"]))
    for i, row in enumerate(labelled):  # neighbours' names alternate above and below their points
        ax.annotate(row["component"], (row["real"], row["estimate"]), xytext=(6, 4 if i % 2 == 0 else -10),
                    textcoords="offset points", fontsize=7, color="#37474f", zorder=4)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(real_label)
    ax.set_ylabel(estimate_label)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = [Line2D([], [], color="grey", linestyle="--", label=DIAGONAL_LABEL)]
    if inside.any():
        handles.append(Line2D([], [], marker="o", linestyle="none", markersize=9, markerfacecolor="none",
                              markeredgecolor=TRUTH_COLOR, markeredgewidth=2.0, label=TRUTH_LABEL))
    ax.legend(handles=handles, fontsize="x-small", loc="upper left", frameon=False)
    r = _pearson(x, y)
    subtitle = f"{len(rows)} components, Pearson r = " + ("n/a" if math.isnan(r) else f"{r:.2f}")
    ax.set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize="medium")
    return fig


def attribution_chart(estimate: Mapping[Any, float], real: Mapping[Any, float], truth: Collection[Any] = (),
                      title: str | None = None, estimate_label: str = "attribution patching (estimate)",
                      real_label: str = "patched for real", width: int = 520, height: int = 440) -> Any:
    """The same scatter as an interactive Altair chart (zoom and pan; hover a point for its name and figures),
    the truth's components in the truth colour. Altair is imported here, not with ``toylab.viz``."""
    import altair as alt

    rows = scatter_table(estimate, real, truth)
    for row in rows:
        row["in truth"] = "ground truth" if row["truth"] else "not in the truth"
    lo, hi = _limits(rows)
    scale = alt.Scale(domain=[lo, hi])
    x = alt.X("real:Q", title=real_label, scale=scale)
    y = alt.Y("estimate:Q", title=estimate_label, scale=scale)
    diagonal = alt.Chart(alt.Data(values=[{"real": lo, "estimate": lo}, {"real": hi, "estimate": hi}])).mark_line(
        color="grey", strokeDash=[5, 4]).encode(x=x, y=y)
    color = alt.Color("in truth:N", title=None, scale=alt.Scale(domain=["ground truth", "not in the truth"],
                                                                range=[TRUTH_COLOR, OTHER_COLOR]))
    points = alt.Chart(alt.Data(values=rows)).mark_circle(size=90, opacity=0.9, stroke="#37474f",
                                                          strokeWidth=0.5).encode(
        x=x, y=y, color=color,
        tooltip=[alt.Tooltip("component:N"), alt.Tooltip("estimate:Q", format="+.3f"),
                 alt.Tooltip("real:Q", title="real", format="+.3f"),
                 alt.Tooltip("gap:Q", title="estimate - real", format="+.3f"), alt.Tooltip("in truth:N")])
    chart = alt.layer(diagonal, points).properties(width=width, height=height)
    if title:
        chart = chart.properties(title=title)
    return chart.interactive()


def ig_steps_plot(steps: Sequence[int], scores: Mapping[str, Sequence[float]], real: Mapping[str, float],
                  tolerance: float | None = None, eap: Mapping[str, float] | None = None,
                  title: str | None = None) -> Figure:
    """EAP-IG's score of each component against its number of steps, the real patch as a dashed line of the same
    colour (with a band of +- ``tolerance`` if given) and plain EAP's score (``eap``) as a cross left of the steps,
    at the tick "EAP".

    ``steps``: the step counts, increasing; ``scores``: {component: [score at each step count]}; ``real``:
    {component: the real patch's share}, for every component of ``scores``.
    """
    steps = [int(s) for s in steps]
    if not steps or any(s < 1 for s in steps) or steps != sorted(set(steps)):
        raise ValueError(f"steps must be increasing positive step counts, got {steps}")
    if not scores:
        raise ValueError("scores is empty: nothing to draw")
    from matplotlib import colormaps

    palette = [colormaps["tab10"](i) for i in range(10) if i != 6]  # tab10's pink is too close to the truth's
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, values) in enumerate(scores.items()):
        values = [float(v) for v in values]
        if len(values) != len(steps):
            raise ValueError(f"{name!r}: {len(values)} scores for {len(steps)} step counts")
        if name not in real:
            raise ValueError(f"{name!r} has no real score")
        color = palette[i % len(palette)]
        ax.plot(steps, values, marker="o", markersize=4, color=color, label=f"{name}: EAP-IG")
        ax.axhline(float(real[name]), color=color, linestyle="--", linewidth=1.0)
        if tolerance is not None:
            ax.axhspan(float(real[name]) - tolerance, float(real[name]) + tolerance, color=color, alpha=0.12,
                       linewidth=0)
        if eap is not None and name in eap:
            ax.plot([steps[0] / 2], [float(eap[name])], marker="x", markersize=8, color=color, linestyle="none")
    ax.set_xscale("log", base=2)
    ticks = ([steps[0] / 2] if eap is not None else []) + steps
    ax.set_xticks(ticks, (["EAP"] if eap is not None else []) + [str(s) for s in steps])
    ax.minorticks_off()
    ax.set_xlabel("EAP-IG steps")
    ax.set_ylabel("share of the effect removed")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="grey", linestyle="--", label="patched for real"))
    if eap is not None:
        handles.append(Line2D([], [], color="grey", marker="x", linestyle="none", label="plain EAP"))
    ax.legend(handles=handles, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(title or "EAP-IG against its number of steps", fontsize="medium")
    return fig


__all__ = ["attribution_chart", "attribution_scatter", "correlation", "ig_steps_plot", "scatter_table"]
