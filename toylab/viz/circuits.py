"""Figures for scoring methods against known circuits: ROC curves, faithfulness curves, circuits.

Axis names: a ROC curve runs over score thresholds; a faithfulness curve over circuit sizes
(fractions of the candidate edges or nodes).

    fig = viz.roc_curves({"eap": report, "random": other})          # one panel per model
    fig = viz.faithfulness_curves({"eap": report})
    fig = viz.circuit_graph(model.cfg, found_edges, truth.edges)     # found beside true

Reports are ``toylab.validate.Report``s; only their entries' ``curves`` are read, so this
module does not import the harness.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from toylab import components as comp
from toylab.components import Edge
from toylab.viz.plots import TRUTH_COLOR, TRUTH_GID, TRUTH_LABEL

KIND_COLORS = {"q": "#1e88e5", "k": "#43a047", "v": "#fb8c00", "resid": "#555555", "head": "#555555"}


def _models(reports: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(e.model for r in reports.values() for e in r.entries))


def _panels(n: int, title: str) -> tuple[Figure, list[Any]]:
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.3 * cols, 3.1 * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    fig.suptitle(title)
    return fig, axes


def roc_curves(reports: Mapping[str, Any], level: str = "auto") -> Figure:
    """ROC of each method (a colour) on each model (a panel), one line per seed.

    ``level`` "node", "edge[head]", "edge[qkv]" or "auto" (edges at head granularity where a
    method scored edges, else nodes). The diagonal is chance.
    """
    models = _models(reports) or ["(no model)"]
    fig, axes = _panels(len(models), "ROC against the true circuit")
    colors = _colors(len(reports))
    for ax, model in zip(axes, models):
        ax.plot([0, 1], [0, 1], color="0.75", linestyle=":", linewidth=1)
        for color, (label, report) in zip(colors, reports.items()):
            first = True
            for entry in (e for e in report.entries if e.model == model and e.error is None):
                key = _roc_key(entry.curves, level)
                if key is None:
                    if "tpr" in entry.metrics and not np.isnan(entry.metrics.get("fpr", np.nan)):
                        ax.plot([entry.metrics["fpr"]], [entry.metrics["tpr"]], "o", color=color,
                                label=label if first else None)
                        first = False
                    continue
                roc = entry.curves[key]
                if len(roc.fpr) > 1:
                    ax.step(roc.fpr, roc.tpr, where="post", color=color, alpha=0.8, linewidth=1.4,
                            label=f"{label} ({key})" if first else None)
                    first = False
        ax.set(title=model, xlabel="false positive rate", ylabel="true positive rate", xlim=(-0.02, 1.02),
               ylim=(-0.02, 1.02))
        ax.set_aspect("equal")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small", loc="lower right")
    return fig


def _roc_key(curves: Mapping[str, Any], level: str) -> str | None:
    if level == "auto":
        for key in ("roc_edge[head]", "roc_node"):
            if key in curves:
                return key
        return None
    key = "roc_node" if level == "node" else f"roc_{level}"
    return key if key in curves else None


def faithfulness_curves(reports: Mapping[str, Any]) -> Figure:
    """f(top k%) against circuit size, each method a colour, each model a panel (log x axis)."""
    models = _models(reports) or ["(no model)"]
    fig, axes = _panels(len(models), "Faithfulness of the top k% (1 = the whole model's behaviour)")
    colors = _colors(len(reports))
    for ax, model in zip(axes, models):
        ax.axhline(1.0, color="0.75", linestyle=":", linewidth=1)
        for color, (label, report) in zip(colors, reports.items()):
            first = True
            for entry in (e for e in report.entries if e.model == model and e.error is None):
                curve = entry.curves.get("faithfulness")
                if curve is None:
                    continue
                ax.plot(np.array(curve.sizes) * 100, curve.f, marker=".", color=color, alpha=0.8,
                        label=f"{label} (CPR {curve.cpr:.2f})" if first else None)
                first = False
        ax.set(title=model, xscale="log", xlabel="circuit size (% of candidates)", ylabel="faithfulness f")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # no mathtext: no font hunt
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small", loc="upper left")
    return fig


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps
    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def circuit_graph(cfg: Any, found: Collection[Edge | str], truth: Collection[Edge | str] = (),
                  title: str | None = None, show_truth: bool = True) -> Figure:
    """The model's components by layer, ``found`` edges (or nodes) drawn, the truth's outlined.

    Edges are coloured by kind (q, k, v into heads; resid into MLPs and the logits). Truth
    edges are drawn as wide translucent strokes in the truth colour, so a found edge on top
    of one shows a hit, a bare truth stroke a miss, and a found edge alone a false positive.
    """
    pos = _layout(cfg)
    fig = Figure(figsize=(2.2 + 1.6 * cfg.n_layers, 1.2 + 0.55 * max(cfg.n_heads, 3)), layout="constrained")
    ax = fig.add_subplot()
    found_edges = [Edge.parse(e) for e in found if not isinstance(e, str)]
    found_nodes = {e for e in found if isinstance(e, str)} | {n for e in found_edges for n in (e.sender, e.receiver)}
    truth_edges = [Edge.parse(e) for e in truth if not isinstance(e, str)]
    truth_nodes = {e for e in truth if isinstance(e, str)} | {n for e in truth_edges for n in (e.sender, e.receiver)}
    if show_truth:
        for edge in truth_edges:
            _edge_line(ax, pos, edge, color=TRUTH_COLOR, linewidth=6, alpha=0.35, gid=TRUTH_GID, zorder=1)
    for edge in found_edges:
        _edge_line(ax, pos, edge, color=KIND_COLORS.get(edge.kind, "#555555"), linewidth=1.6, alpha=0.9, zorder=2)
    for node, (x, y) in pos.items():
        on = node in found_nodes
        ax.scatter([x], [y], s=420, zorder=3, color="#90caf9" if on else "white", edgecolors="#37474f")
        if show_truth and node in truth_nodes:
            ax.scatter([x], [y], s=620, zorder=2.5, facecolors="none", edgecolors=TRUTH_COLOR, linewidths=2.2,
                       gid=TRUTH_GID)
        ax.text(x, y, node, ha="center", va="center", fontsize=7, zorder=4)
    handles = [Line2D([], [], color=c, label=k) for k, c in KIND_COLORS.items() if k not in ("head",)]
    if show_truth:
        handles.append(Line2D([], [], color=TRUTH_COLOR, linewidth=6, alpha=0.35, label=TRUTH_LABEL))
    ax.legend(handles=handles, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_axis_off()
    ax.set_title(title or "found circuit" + (" (truth outlined)" if show_truth else ""))
    return fig


def _layout(cfg: Any) -> dict[str, tuple[float, float]]:
    """x: residual-stream order (inputs, then per layer heads then MLP, then logits); y: head index."""
    pos = {"embed": (0.0, 0.0), "pos_embed": (0.0, 1.0)}
    for layer in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            pos[comp.head_id(layer, h)] = (1.0 + 2 * layer, float(h))
        if not cfg.attn_only:
            pos[f"MLP{layer}"] = (2.0 + 2 * layer, (cfg.n_heads - 1) / 2)
    pos[comp.OUTPUT] = (1.0 + 2 * cfg.n_layers, (cfg.n_heads - 1) / 2)
    return pos


def _edge_line(ax: Any, pos: Mapping[str, tuple[float, float]], edge: Edge, **style: Any) -> None:
    (x0, y0), (x1, y1) = pos[edge.sender], pos[edge.receiver]
    # A small vertical offset per kind keeps the q, k and v edges between two heads apart.
    offset = {"q": -0.12, "k": 0.0, "v": 0.12}.get(edge.kind, 0.0)
    mid_x, mid_y = (x0 + x1) / 2, (y0 + y1) / 2 + offset + 0.15 * (x1 - x0 > 2.5)
    ax.plot([x0, mid_x, x1], [y0, mid_y, y1 + offset * 0.5], solid_capstyle="round", **style)
