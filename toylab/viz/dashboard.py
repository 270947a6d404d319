"""Feature dashboards drawn: a matplotlib figure for lessons and notebooks, HTML and Altair charts for the lab.

    d = methods.feature_dashboard(zm, cache, methods.Neuron(0, 3))
    fig = viz.plot_dashboard(d)               # lessons, notebooks: one figure, every panel
    html = viz.dashboard_html(d)              # the lab: st.html(html), top activating inputs, tokens highlighted
    chart = viz.activation_histogram_chart(d) # the lab: st.altair_chart(chart)
    chart = viz.logit_chart(d)                # promoted and suppressed outputs

Tokens are highlighted by their activation over the feature's maximum on the data (0: white, the maximum: full
colour); the token where a prompt's activation peaks is outlined. Token strings are escaped in the HTML. The
truth match, where there is one, is written in the truth colour. Altair is imported only by the chart functions.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from toylab.viz.plots import TRUTH_COLOR, TRUTH_GID

ACTIVATION_RGB = (255, 112, 0)  # the highlight colour of an active token (an orange, as sae_vis)
ACTIVATION_HEX = "#{:02x}{:02x}{:02x}".format(*ACTIVATION_RGB)
PROMOTED_COLOR = "#1e88e5"
SUPPRESSED_COLOR = "#e53935"
_CMAP = LinearSegmentedColormap.from_list("dashboard", ["#ffffff", ACTIVATION_HEX])
_MAX_FIGURE_ROWS = 12


def _fraction(value: float, peak: float) -> float:
    return 0.0 if peak <= 0 or value <= 0 else min(value / peak, 1.0)


def _percent(x: float) -> str:
    return f"{100 * x:.2f}%" if x >= 1e-3 or x == 0 else f"{100 * x:.1e}%"


def truth_line(d: Any) -> str:
    """The truth match in words (plain text)."""
    m = d.truth_match
    if m is None:
        return f"truth match: none ({d.truth_note})"
    where = f"{m.hook}" + ("" if m.pos is None else f", pos {m.pos}")
    fires = "" if m.pos is None or m.fires_at_pos is None else f"; fires there on {_percent(m.fires_at_pos)} of prompts"
    return f"truth match: {m.name} (cosine {m.cosine:.3f} at {where}{fires})"


def summary_line(d: Any) -> str:
    return (f"{d.label}: max {d.max_activation:.3g}, fires at {_percent(d.density)} of {d.n_positions} positions, "
            f"on {_percent(d.prompt_density)} of {d.n_prompts} prompts")


# ---- HTML ------------------------------------------------------------------------------------------


def _prompt_html(prompt: Any, peak: float) -> str:
    spans = []
    for pos, (token, value) in enumerate(zip(prompt.tokens, prompt.activations)):
        alpha = _fraction(value, peak)
        style = f"background-color:rgba({ACTIVATION_RGB[0]},{ACTIVATION_RGB[1]},{ACTIVATION_RGB[2]},{alpha:.3f});"
        style += "padding:1px 3px;margin:0 1px;border-radius:3px;"
        if pos == prompt.max_pos:
            style += "outline:1.5px solid #37474f;"
        title = html.escape(f"pos {pos}: {token} = {value:.4g}", quote=True)
        spans.append(f'<span class="tok" style="{style}" title="{title}">{html.escape(token)}</span>')
    return "".join(spans)


def prompts_html(prompts: Any, peak: float) -> str:
    """Rows of prompts, each token's background by its activation over ``peak``, with the maximum on the right."""
    rows = []
    for p in prompts:
        rows.append('<tr><td style="font-family:monospace;white-space:nowrap;padding:2px 8px 2px 0">'
                    f"{_prompt_html(p, peak)}</td>"
                    f'<td style="text-align:right;padding:2px 4px;color:#455a64">{p.max_activation:.3g}</td></tr>')
    head = ('<table style="border-collapse:collapse;font-size:0.9em">'
            '<tr><th style="text-align:left">prompt</th><th style="text-align:right">max</th></tr>')
    return head + "".join(rows) + "</table>"


def dashboard_html(d: Any, quantiles: bool = True) -> str:
    """The top activating inputs (and the quantile samples, if the dashboard has them and ``quantiles``) as HTML,
    with every token highlighted by its activation (hover: position and value); token strings are escaped."""
    peak = d.max_activation
    summary = html.escape(summary_line(d).split(": ", 1)[1])
    head = f'<div class="toylab-dashboard"><p style="margin:0 0 4px 0"><b>{html.escape(d.label)}</b> &middot; {summary}</p>'
    parts = [head]
    colour = TRUTH_COLOR if d.truth_match is not None else "#607d8b"
    parts.append(f'<p style="margin:0 0 6px 0;color:{colour}">{html.escape(truth_line(d))}</p>')
    if d.top:
        parts.append("<p style='margin:6px 0 2px 0'><b>Top activating inputs</b></p>")
        parts.append(prompts_html(d.top, peak))
    else:
        parts.append(f"<p><i>It never fires on these {d.n_prompts} prompts.</i></p>")
    if quantiles and d.quantiles:
        for q in reversed(d.quantiles):
            parts.append(f"<p style='margin:8px 0 2px 0'><b>Interval ({q.low:.3g}, {q.high:.3g}]</b>: "
                         f"{q.n_prompts} prompts</p>")
            parts.append(prompts_html(q.examples, peak) if q.examples else "<p><i>none</i></p>")
    parts.append("</div>")
    return "".join(parts)


# ---- Altair ------------------------------------------------------------------------------------------


def activation_histogram_chart(d: Any, width: int = 320, height: int = 200) -> Any:
    """The histogram of the activations > 0 as an Altair bar chart (an empty chart if it never fires)."""
    import altair as alt

    rows = [{"low": lo, "high": hi, "count": c}
            for lo, hi, c in zip(d.hist_edges[:-1], d.hist_edges[1:], d.hist_counts)]
    chart = alt.Chart(alt.Data(values=rows)).mark_bar(color=ACTIVATION_HEX).encode(
        x=alt.X("low:Q", title="activation (where > 0)", bin="binned"), x2="high:Q",
        y=alt.Y("count:Q", title="positions"),
        tooltip=[alt.Tooltip("low:Q", format=".3g"), alt.Tooltip("high:Q", format=".3g"), "count:Q"])
    return chart.properties(width=width, height=height,
                            title=f"activation density {_percent(d.density)}")


def logit_chart(d: Any, width: int = 320, height: int | None = None) -> Any:
    """Promoted (blue) and suppressed (red) outputs, direct path, as Altair bars; None where n/a."""
    if d.promoted is None:
        return None
    import altair as alt

    rows = [{"output": name, "effect": value, "kind": "promoted", "order": i}
            for i, (name, value) in enumerate(d.promoted)]
    rows += [{"output": name, "effect": value, "kind": "suppressed", "order": len(d.promoted) + i}
             for i, (name, value) in enumerate(d.suppressed)]
    chart = alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        y=alt.Y("output:N", sort=alt.EncodingSortField("order"), title=None, axis=alt.Axis(labelOverlap=False)),
        x=alt.X("effect:Q", title="direct logit effect"),
        color=alt.Color("kind:N", scale=alt.Scale(domain=["promoted", "suppressed"],
                                                  range=[PROMOTED_COLOR, SUPPRESSED_COLOR]), legend=None),
        tooltip=["output:N", alt.Tooltip("effect:Q", format=".3f"), "kind:N"])
    return chart.properties(width=width, height=height or 16 * len(rows) + 20, title="outputs, direct path")


# ---- matplotlib ----------------------------------------------------------------------------------------


def _prompt_grid(ax: Any, prompts: Any, peak: float, title: str) -> None:
    n_pos = max((len(p.tokens) for p in prompts), default=1)
    grid = np.full((len(prompts), n_pos), np.nan)
    for r, p in enumerate(prompts):
        grid[r, : len(p.activations)] = [_fraction(v, peak) for v in p.activations]
    ax.imshow(np.nan_to_num(grid), cmap=_CMAP, vmin=0.0, vmax=1.0, aspect="auto")
    fontsize = "small" if n_pos <= 12 else 7 if n_pos <= 30 else 5
    for r, p in enumerate(prompts):
        for c, token in enumerate(p.tokens):
            # Inside the grid, clipped to it: out of the layout's reckoning (which would measure every token).
            ax.text(c, r, token, ha="center", va="center", fontsize=fontsize, clip_on=True, in_layout=False)
        ax.add_patch(Rectangle((p.max_pos - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#37474f", linewidth=1.2,
                               in_layout=False))
    ax.set_yticks(range(len(prompts)), [f"{p.max_activation:.3g}" for p in prompts], fontsize="x-small")
    every = 1 if n_pos <= 12 else 5  # a tick is a costly artist: long prompts get one every 5 positions
    ax.set_xticks(range(0, n_pos, every), [str(i) for i in range(0, n_pos, every)], fontsize="x-small")
    ax.set_xlabel("position")
    ax.set_ylabel("max activation")
    ax.set_title(title, fontsize="medium", loc="left")


def plot_dashboard(d: Any, title: str | None = None, max_rows: int = _MAX_FIGURE_ROWS) -> Figure:
    """The dashboard as one figure: the top activating inputs (tokens shaded by activation, each prompt's peak
    boxed), the activation histogram, and the outputs the feature promotes and suppresses (direct path). The
    truth match is written under the title, in the truth colour (``gid="ground-truth"``) when there is one."""
    rows = list(d.top[:max_rows])
    n_pos = max((len(p.tokens) for p in rows), default=1)
    width = max(8.0, min(3.0 + 0.55 * n_pos, 16.0))
    height = 3.4 + 0.32 * max(len(rows), 2)
    fig = Figure(figsize=(width, height), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[2.6, max(len(rows), 2) * 0.32 + 0.6])
    hist_ax, logit_ax = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    top_ax = fig.add_subplot(grid[1, :])

    if d.hist_counts:
        edges = np.asarray(d.hist_edges)
        hist_ax.bar(edges[:-1], d.hist_counts, width=np.diff(edges), align="edge",
                    color=ACTIVATION_HEX)
    else:
        hist_ax.text(0.5, 0.5, "never fires", ha="center", va="center", transform=hist_ax.transAxes)
    hist_ax.set_title(f"activations > 0 (density {_percent(d.density)})", fontsize="medium", loc="left")
    hist_ax.set_xlabel("activation")
    hist_ax.set_ylabel("positions")

    if d.promoted is not None:
        k = len(d.promoted)
        names = [n for n, _ in d.promoted] + [n for n, _ in d.suppressed]
        values = [v for _, v in d.promoted] + [v for _, v in d.suppressed]
        colors = [PROMOTED_COLOR] * k + [SUPPRESSED_COLOR] * len(d.suppressed)
        ys = np.arange(len(values))
        logit_ax.barh(ys, values, color=colors)
        logit_ax.set_yticks(ys, names, fontsize="x-small")
        logit_ax.invert_yaxis()
        logit_ax.axvline(0, color="grey", linewidth=0.8)
        logit_ax.set_xlabel("direct logit effect")
        logit_ax.set_title("promoted / suppressed outputs", fontsize="medium", loc="left")
    else:
        logit_ax.axis("off")
        logit_ax.text(0.0, 0.5, "logit effects " + d.logits_note, wrap=True, fontsize="small",
                      transform=logit_ax.transAxes)

    if rows:
        _prompt_grid(top_ax, rows, d.max_activation, "top activating inputs")
    else:
        top_ax.axis("off")
        top_ax.text(0.5, 0.5, f"never fires on these {d.n_prompts} prompts", ha="center", va="center",
                    transform=top_ax.transAxes)

    fig.suptitle(title or summary_line(d), fontsize="medium")
    matched = d.truth_match is not None
    text = fig.supxlabel(truth_line(d), color=TRUTH_COLOR if matched else "#607d8b", fontsize="small")
    if matched:
        text.set_gid(TRUTH_GID)
    return fig


__all__ = ["activation_histogram_chart", "dashboard_html", "logit_chart", "plot_dashboard", "prompts_html",
           "summary_line", "truth_line"]
