"""Figures of an attribution graph against a feature-level truth: a matplotlib plot and an interactive Altair chart.

Axis names: node (a node of the graph), pos (a token position of the prompt).

    graph = methods.attribution_graph(model, transcoder, tokens)
    pruned = graph.prune(0.8, 0.98)
    on, _ = true_feature_circuit(truth, task, tokens, answer)           # toylab.validate.feature_graphs
    mapped, _ = map_nodes(graph, truth, task, on)
    fig = viz.attribution_graph_plot(pruned, task, mapped, on, truth)   # lessons
    chart = viz.graph_chart(pruned, task, mapped, on, truth, top_inputs=...)   # the lab: st.altair_chart(chart)

Layout, bottom to top: the tokens, the features and error nodes of each layer, the logits; across, the token
position, with the nodes of one site (layer, position) side by side. Edges are the pruned graph's direct effects,
as wide as |effect|, blue where positive and red where negative. A node's colour is its status against the truth
(``graph_table``): a true feature the graph found (the truth colour), a node that maps onto no true feature of the
prompt (grey), or, drawn hollow at its site, a true feature the pruned graph lacks. ``mapped`` and ``on`` are what
``toylab.validate.feature_graphs.map_nodes`` and ``true_feature_circuit`` give; without them every node is
"no feature truth" (a model whose truth declares no features).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from toylab.viz.plots import TRUTH_COLOR, TRUTH_GID

FOUND = "truth, found"  # kept by pruning, and maps onto a feature of the prompt's true circuit
EXTRA = "found, not in truth"  # kept by pruning, maps onto none of them
MISSED = "truth, missed"  # a feature of the true circuit no kept node maps onto: hollow, at its site
NO_TRUTH = "no feature truth"  # the model's truth declares no features
STATUSES = (FOUND, EXTRA, MISSED, NO_TRUTH)
STATUS_COLORS = {FOUND: TRUTH_COLOR, EXTRA: "#90a4ae", MISSED: TRUTH_COLOR, NO_TRUTH: "#1e88e5"}
KINDS = ("token", "feature", "error", "logit")
KIND_SHAPES = {"token": "square", "feature": "circle", "error": "diamond", "logit": "triangle-up"}
_MPL_MARKERS = {"token": "s", "feature": "o", "error": "D", "logit": "^"}
EDGE_COLORS = {"positive": "#1e88e5", "negative": "#e53935"}
_SPREAD = 0.8  # the width of a position's column that the nodes of one site share
_LABELLED = 4  # at a crowded site, the labels drawn: the most influential nodes, and every true feature


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _token_name(task: Any, token: int) -> str:
    return task.token_names[token] if task is not None else str(token)


def _node_label(node: Any, task: Any) -> str:
    if node.kind == "token":
        return f"{_token_name(task, int(node.value))} @{node.pos}"
    if node.kind == "logit":
        name = task.output_names[node.index] if task is not None else str(node.index)
        return f"logit {name}"
    return str(node)


def _site(name: str, graph: Any, truth: Any, task: Any, n_layers: int) -> tuple[str, int | None, int]:
    """Where a true feature no kept node maps onto is drawn: (kind, layer, pos)."""
    if name.startswith("logit:"):
        return "logit", None, graph.scored_pos
    feature = next((f for f in truth.features if f.name == name), None) if truth is not None else None
    if feature is None or feature.variable is None:  # an input feature: at its token
        tokens = [_token_name(task, int(t)) for t in graph.tokens]
        return "token", None, tokens.index(name) if name in tokens else 0
    parts = feature.hook.split(".")
    layer = int(parts[1]) if parts[0] == "blocks" and len(parts) > 2 else n_layers - 1
    return "feature", layer, graph.scored_pos if feature.pos is None else int(feature.pos)


def graph_table(pruned: Any, task: Any = None, mapped: Sequence[str | None] | None = None,
                on: Collection[str] | None = None, truth: Any = None, cosines: Mapping[int, float] | None = None,
                top_inputs: Mapping[int, Sequence[tuple[str, float]]] | None = None,
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The nodes and edges of a pruned graph, as rows: what ``graph_chart`` and ``attribution_graph_plot`` draw.

    ``mapped`` [node of the full graph]: the true feature each node maps onto (or None); ``on``: the features of the
    prompt's true circuit; ``truth``: places the true features no kept node maps onto at their site; ``cosines``
    (graph node index -> |cosine| of its write with its true feature) and ``top_inputs`` (graph node index ->
    [(prompt, activation)]) go into the tooltips.

    Node rows: node, index (into ``pruned.graph.nodes``; -1 for a missed true feature), label, kind, layer, pos, x,
    y, status, value (features: activation; logits: probability; errors: norm), influence, truth, cosine,
    top_inputs (one string), show_label (False for the weaker nodes of a crowded site). Edge rows: source, target, x, y, x2, y2, weight, abs_weight, sign.
    """
    graph = pruned.graph
    if mapped is not None and len(mapped) != len(graph.nodes):
        raise ValueError(f"mapped names {len(mapped)} nodes; the graph has {len(graph.nodes)}")
    if (mapped is None) != (on is None):
        raise ValueError("give both mapped and on (map_nodes and true_feature_circuit), or neither")
    cosines, top_inputs = dict(cosines or {}), dict(top_inputs or {})
    n_layers = 1 + max((n.layer for n in graph.nodes if n.layer is not None), default=0)
    influence = graph.influence().tolist()
    kept = [i for i, keep in enumerate(pruned.node_mask.tolist()) if keep]
    rows: list[dict[str, Any]] = []
    for i in kept:
        node = graph.nodes[i]
        name = mapped[i] if mapped is not None else None
        status = NO_TRUTH if mapped is None else FOUND if name in on else EXTRA
        top = top_inputs.get(i, ())
        rows.append({
            "node": str(node), "index": i, "label": _node_label(node, task), "kind": node.kind, "layer": node.layer,
            "pos": node.pos, "status": status,
            "value": None if node.kind == "token" else _finite(node.value),
            "influence": _finite(influence[i]) if node.kind != "logit" else None,
            "truth": name if name in (on or ()) else "", "cosine": _finite(cosines.get(i)),
            "top_inputs": "; ".join(f"{text} ({act:.2f})" for text, act in top),
        })
    if on is not None:
        found = {row["truth"] for row in rows if row["status"] == FOUND}
        for name in sorted(set(on) - found):
            kind, layer, pos = _site(name, graph, truth, task, n_layers)
            rows.append({"node": f"missed:{name}", "index": -1, "label": name, "kind": kind, "layer": layer,
                         "pos": pos, "status": MISSED, "value": None, "influence": None, "truth": name,
                         "cosine": None, "top_inputs": ""})
    sites: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        row["y"] = 0 if row["kind"] == "token" else n_layers + 1 if row["kind"] == "logit" else row["layer"] + 1
        sites[(row["y"], row["pos"])].append(row)
    order = {"token": 0, "feature": 1, "error": 2, "logit": 3}
    for members in sites.values():
        members.sort(key=lambda r: (r["status"] == MISSED, order[r["kind"]], r["index"]))
        step = min(_SPREAD / len(members), 0.2)
        strongest = sorted(members, key=lambda r: -abs(r["influence"] or 0.0))[:_LABELLED]
        for k, row in enumerate(members):
            row["x"] = row["pos"] + (k - (len(members) - 1) / 2) * step
            row["show_label"] = (len(members) <= _LABELLED or row in strongest or row["status"] in (FOUND, MISSED)
                                 or row["kind"] in ("token", "logit"))
    where = {row["index"]: row for row in rows if row["index"] >= 0}
    edges = []
    targets, sources = pruned.edge_mask.nonzero(as_tuple=True)
    for t, s in zip(targets.tolist(), sources.tolist()):
        if s not in where or t not in where:
            continue
        weight = float(graph.adjacency[t, s])
        a, b = where[s], where[t]
        edges.append({"source": a["label"], "target": b["label"], "x": a["x"], "y": a["y"], "x2": b["x"],
                      "y2": b["y"], "weight": weight, "abs_weight": abs(weight),
                      "sign": "positive" if weight >= 0 else "negative"})
    edges.sort(key=lambda e: e["abs_weight"])  # the strongest drawn last, on top
    return rows, edges


def _row_names(n_layers: int) -> dict[int, str]:
    return {0: "tokens", **{layer + 1: f"layer {layer}" for layer in range(n_layers)}, n_layers + 1: "logits"}


def graph_chart(pruned: Any, task: Any = None, mapped: Sequence[str | None] | None = None,
                on: Collection[str] | None = None, truth: Any = None, cosines: Mapping[int, float] | None = None,
                top_inputs: Mapping[int, Sequence[tuple[str, float]]] | None = None, title: str | None = None,
                width: int = 640, height: int = 380) -> Any:
    """An interactive Altair chart of the pruned graph (zoom and pan; hover a node or an edge for its figures):
    nodes coloured by their status against the truth (see the module doc), a feature's tooltip with its
    top activating inputs. Altair is imported here, not with ``toylab.viz``; it renders offline."""
    import altair as alt

    nodes, edges = graph_table(pruned, task, mapped, on, truth, cosines, top_inputs)
    n_layers = max(row["y"] for row in nodes) - 1
    names = _row_names(n_layers)
    label_expr = " : ".join(f"datum.value == {y} ? '{name}'" for y, name in names.items()) + " : ''"
    n_pos = len(pruned.graph.tokens)
    x = alt.X("x:Q", title="position", scale=alt.Scale(domain=[-0.6, n_pos - 0.4]),
              axis=alt.Axis(values=list(range(n_pos)), format="d", grid=False))
    y = alt.Y("y:Q", title=None, scale=alt.Scale(domain=[-0.5, n_layers + 1.5]),
              axis=alt.Axis(values=list(names), labelExpr=label_expr, grid=True))
    status = alt.Color("status:N", title="against the truth",
                       scale=alt.Scale(domain=list(STATUSES), range=[STATUS_COLORS[s] for s in STATUSES]))
    shape = alt.Shape("kind:N", title="node", scale=alt.Scale(domain=list(KINDS),
                                                              range=[KIND_SHAPES[k] for k in KINDS]))
    tooltip = [alt.Tooltip("label:N", title="node"), alt.Tooltip("kind:N"), alt.Tooltip("status:N"),
               alt.Tooltip("value:Q", title="activation / probability / norm", format=".3f"),
               alt.Tooltip("influence:Q", format=".3f"), alt.Tooltip("truth:N", title="true feature"),
               alt.Tooltip("cosine:Q", title="|cosine| with it", format=".3f"),
               alt.Tooltip("top_inputs:N", title="top activating inputs")]
    edge_layer = alt.Chart(alt.Data(values=edges)).mark_rule(opacity=0.55).encode(
        x=x, y=y, x2="x2:Q", y2="y2:Q",
        strokeWidth=alt.StrokeWidth("abs_weight:Q", scale=alt.Scale(range=[0.5, 7]), legend=None),
        color=alt.Color("sign:N", title="direct effect", scale=alt.Scale(domain=list(EDGE_COLORS),
                                                                         range=list(EDGE_COLORS.values()))),
        tooltip=[alt.Tooltip("source:N"), alt.Tooltip("target:N"),
                 alt.Tooltip("weight:Q", title="direct effect", format=".3f")])
    filled = [row for row in nodes if row["status"] != MISSED]
    hollow = [row for row in nodes if row["status"] == MISSED]
    node_layer = alt.Chart(alt.Data(values=filled)).mark_point(filled=True, size=240, opacity=1.0,
                                                               stroke="#37474f", strokeWidth=0.8).encode(
        x=x, y=y, color=status, shape=shape, tooltip=tooltip)
    layers = [edge_layer, node_layer]
    if hollow:
        layers.append(alt.Chart(alt.Data(values=hollow)).mark_point(filled=False, size=300, strokeWidth=2.5,
                                                                    strokeDash=[3, 2]).encode(
            x=x, y=y, color=status, shape=shape, tooltip=tooltip))
    labelled = [row for row in nodes if row["show_label"]]
    layers.append(alt.Chart(alt.Data(values=labelled)).mark_text(dy=-15, fontSize=10, color="#37474f").encode(
        x=x, y=y, text="label:N"))
    chart = alt.layer(*layers).resolve_scale(color="independent").properties(width=width, height=height)
    if title:
        chart = chart.properties(title=title)
    return chart.interactive()


def attribution_graph_plot(pruned: Any, task: Any = None, mapped: Sequence[str | None] | None = None,
                           on: Collection[str] | None = None, truth: Any = None,
                           title: str | None = None) -> Figure:
    """The pruned graph as a matplotlib figure, laid out as ``graph_chart``: true features the graph found are
    filled in the truth colour and outlined, the ones it missed drawn as dashed outlines at their site (both
    carry ``gid="ground-truth"``, as every toylab figure's truth)."""
    nodes, edges = graph_table(pruned, task, mapped, on, truth)
    n_layers = max(row["y"] for row in nodes) - 1
    n_pos = len(pruned.graph.tokens)
    fig = Figure(figsize=(2.2 + 1.9 * n_pos, 1.6 + 1.1 * (n_layers + 2)), layout="constrained")
    ax = fig.add_subplot()
    top = max((e["abs_weight"] for e in edges), default=1.0) or 1.0
    for e in edges:
        ax.plot([e["x"], e["x2"]], [e["y"], e["y2"]], color=EDGE_COLORS[e["sign"]], alpha=0.55,
                linewidth=0.4 + 5.0 * e["abs_weight"] / top, zorder=1, solid_capstyle="round")
    for row in nodes:
        marker = _MPL_MARKERS[row["kind"]]
        if row["status"] == MISSED:
            ax.scatter([row["x"]], [row["y"]], s=260, marker=marker, facecolors="none", edgecolors=TRUTH_COLOR,
                       linewidths=2.0, linestyle="--", zorder=3, gid=TRUTH_GID)
        else:
            ax.scatter([row["x"]], [row["y"]], s=200, marker=marker, color=STATUS_COLORS[row["status"]],
                       edgecolors="#37474f", linewidths=0.8, zorder=3)
            if row["status"] == FOUND:
                ax.scatter([row["x"]], [row["y"]], s=420, marker=marker, facecolors="none", edgecolors=TRUTH_COLOR,
                           linewidths=2.0, zorder=2.5, gid=TRUTH_GID)
        if row["show_label"]:
            ax.annotate(row["label"], (row["x"], row["y"]), xytext=(0, 10), textcoords="offset points",
                        ha="center", fontsize=7, zorder=4)
    names = _row_names(n_layers)
    ax.set_yticks(list(names), list(names.values()))
    ax.set_xticks(range(n_pos))
    ax.set_xlim(-0.6, n_pos - 0.4)
    ax.set_ylim(-0.6, n_layers + 1.7)
    ax.set_xlabel("position")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    shown = [s for s in STATUSES if any(row["status"] == s for row in nodes)]
    handles = [Line2D([], [], marker="o", linestyle="none", markersize=8,
                      markerfacecolor="none" if s == MISSED else STATUS_COLORS[s],
                      markeredgecolor=TRUTH_COLOR if s in (FOUND, MISSED) else "#37474f", label=s) for s in shown]
    handles += [Line2D([], [], color=c, label=f"{sign} effect") for sign, c in EDGE_COLORS.items()]
    ax.legend(handles=handles, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(title or "attribution graph, pruned")
    return fig


__all__ = ["EXTRA", "FOUND", "MISSED", "NO_TRUTH", "STATUSES", "attribution_graph_plot", "graph_chart",
           "graph_table"]
