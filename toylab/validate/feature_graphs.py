"""Attribution graphs scored against a feature-level truth.

A zoo truth that declares features (``Truth.features``, ``Truth.feature_edges``; the
``conjunctions`` model) says, for every prompt, which features are on and how they connect:
its **true feature circuit** (``true_feature_circuit``). A graph over one prompt
(``toylab.methods.attribution_graph``) is mapped onto it node by node:

    token node at position p      the input feature named after the token there
    feature node (layer, pos, i)  the declared feature at a site it writes to (a hook of
                                  ``AttributionGraph.writes``, at pos) whose direction its write
                                  is closest to, when |cosine| >= ``match``
    logit node for class c        ``logit:<output name of c>``
    error node                    nothing

and scored, over prompts (``score_feature_graphs``; the harness does the same for a
method that answers with a ``FeatureGraph``, on prompts it never showed the method):

    feature_recovery   for each feature of the true circuit the prompt turns on, the largest
                       |cosine| of a graph feature's write at its site with its direction
    graph_node_auroc   graph features and errors ranked by influence on the logits, against
                       mapping onto a node of the true circuit
    graph_edge_auroc   graph edges ranked by |direct effect|, against mapping onto a true edge
    circuit_kept       the share of the true circuit's edges that some edge of the pruned
                       graph maps onto
                       (both over edges into or out of features: token -> logit edges pass
                       through frozen attention only, the same whatever replaces the MLPs)
    replacement_score, completeness_score   the graph's own figures (circuit-tracer's definitions)

Undefined figures (no positive or no negative to rank) are n/a (NaN) and are left out of
means, never counted as 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from toylab.methods.attribution_graph import AttributionGraph
from toylab.truth import Truth
from toylab.validate.metrics import auroc_of

MATCH = 0.8  # |cosine| of a feature's write with a declared direction for the two to be one feature
GRAPH_PROMPTS = 32  # prompts the harness scores a feature graph on
FIGURES = ("feature_recovery", "graph_node_auroc", "graph_edge_auroc", "circuit_kept", "replacement_score",
           "completeness_score")


def true_feature_circuit(truth: Truth, task, tokens: Tensor, answer: int) -> tuple[set[str], set[tuple[str, str]]]:
    """The features one prompt ``tokens`` [pos] with answer class ``answer`` turns on, and the
    declared edges among them.

    Input features (no variable) are on where their token is; causal features where the
    task's variable takes their value (for a variable with a value per position, at the
    feature's position); an edge is in when both ends are (a logit end when its class is the
    answer).
    """
    names = task.token_names
    on = {names[int(t)] for t in tokens} & {f.name for f in truth.features if f.variable is None}
    values = task.variables(tokens[None])
    for f in truth.features:
        if f.variable is None:
            continue
        value = values[f.variable][0]
        if value.ndim:  # one value per position
            if f.pos is None:
                raise ValueError(f"feature {f.name!r} reads {f.variable!r}, which has a value per position: "
                                 "it needs a position (FeatureDirection.pos)")
            value = value[f.pos]
        if int(value) == f.value:
            on.add(f.name)
    on.add(f"logit:{task.output_names[answer]}")
    edges = {(s, t) for s, t in truth.feature_edges if s in on and t in on}
    return on, edges


def map_nodes(graph: AttributionGraph, truth: Truth, task, on: set[str],
              match: float = MATCH) -> tuple[list[str | None], dict[str, float]]:
    """The truth's name for each graph node (None where none matches), and for each causal
    feature in ``on`` the largest |cosine| of a graph feature's write with it at its site.

    A graph feature matches the feature of ``on`` at its site (a hook it writes to, at its
    position) that its write direction is closest to, when that |cosine| reaches ``match``:
    declared features in superposition need not be orthogonal, so a feature is judged
    against what the prompt turns on.
    """
    names = task.token_names
    active: dict[tuple[str, int | None], list] = {}
    for f in truth.features:
        if f.variable is not None and f.name in on:
            active.setdefault((f.hook, f.pos), []).append((f.name, torch.tensor(f.vector, device="cpu")))
    best = {name: 0.0 for pairs in active.values() for name, _ in pairs}
    out: list[str | None] = []
    for i, node in enumerate(graph.nodes):
        if node.kind == "token":
            name = names[int(node.value)]
            out.append(name if name in on else None)
        elif node.kind == "logit":
            name = f"logit:{task.output_names[node.index]}"
            out.append(name if name in on else None)
        elif node.kind == "feature":
            found = (0.0, None)
            for hook, row in graph.writes.get(i, {}).items():
                for name, vector in active.get((hook, node.pos), []) + active.get((hook, None), []):
                    cos = float((row @ vector.to(row)).abs() / (row.norm() * vector.norm()).clamp(min=1e-12))
                    best[name] = max(best[name], cos)
                    found = max(found, (cos, name))
            out.append(found[1] if found[0] >= match else None)
        else:
            out.append(None)
    return out, best


@dataclass(frozen=True)
class FeatureGraphScores:
    model: str
    method: str
    feature_recovery: float
    graph_node_auroc: float
    graph_edge_auroc: float
    circuit_kept: float
    replacement_score: float
    completeness_score: float
    n_prompts: int

    def row(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in FIGURES}


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def score_graph(graph: AttributionGraph, truth: Truth, task, answer: int, node_threshold: float = 0.8,
                edge_threshold: float = 0.98, match: float = MATCH) -> dict[str, float]:
    """One prompt's figures (see the module doc); ``answer`` is the prompt's answer class."""
    true_nodes, true_edges = true_feature_circuit(truth, task, graph.tokens, answer)
    mapped, best = map_nodes(graph, truth, task, true_nodes, match)
    recovery = list(best.values())
    influence = graph.influence().numpy()
    kinds = [n.kind for n in graph.nodes]
    inner = np.array([k in ("feature", "error") for k in kinds])
    in_truth = np.array([m in true_nodes for m in mapped])
    node_auroc = auroc_of(influence[inner], in_truth[inner])
    # Edges between tokens and logits are the same whatever replaces the MLPs (attention is
    # frozen): only edges with a feature or error end tell dictionaries apart.
    causal = {f.name for f in truth.features if f.variable is not None}
    true_edges = {e for e in true_edges if e[0] in causal or e[1] in causal}
    ids = {name: i for i, name in enumerate(sorted({m for m in mapped if m is not None}))}
    code = np.array([ids.get(m, -1) for m in mapped])  # [node]: the true name's id, -1 for none
    wanted = np.array(sorted(ids[a] * len(ids) + ids[b] for a, b in true_edges if a in ids and b in ids), dtype=int)

    def hits(targets: np.ndarray, sources: np.ndarray) -> np.ndarray:
        both = (code[sources] >= 0) & (code[targets] >= 0)
        return both & np.isin(code[sources] * len(ids) + code[targets], wanted)

    targets, sources = (t.numpy() for t in graph.adjacency.nonzero(as_tuple=True))
    through = inner[sources] | inner[targets]
    targets, sources = targets[through], sources[through]
    edge_auroc = auroc_of(graph.adjacency.abs().numpy()[targets, sources], hits(targets, sources))
    pruned = graph.prune(node_threshold, edge_threshold)
    kept_t, kept_s = (t.numpy() for t in pruned.edge_mask.nonzero(as_tuple=True))
    kept = hits(kept_t, kept_s)
    found = {(mapped[s_], mapped[t_]) for t_, s_ in zip(kept_t[kept], kept_s[kept])}
    replacement, completeness = graph.scores()
    return {"feature_recovery": _nanmean(recovery) if recovery else math.nan, "graph_node_auroc": node_auroc,
            "graph_edge_auroc": edge_auroc,
            "circuit_kept": len(found) / len(true_edges) if true_edges else math.nan,
            "replacement_score": replacement, "completeness_score": completeness}


def graph_prompts(task, n_prompts: int, seed: int) -> list[tuple[Tensor, int]]:
    """``n_prompts`` prompts drawn with ``seed``, each cut after its last scored position (the
    graph's scored position is its last), with that position's answer class."""
    batch = task.sample(n_prompts, seed)
    out = []
    for tokens, targets in zip(batch.tokens, batch.targets):
        scored = int((targets != -1).nonzero().flatten()[-1])
        out.append((tokens[:scored + 1], int(targets[scored])))
    return out


def score_feature_graphs(task, truth: Truth, build: Callable[[Tensor], AttributionGraph], label: str = "",
                         n_prompts: int = 32, seed: int = 0, node_threshold: float = 0.8,
                         edge_threshold: float = 0.98, match: float = MATCH) -> FeatureGraphScores:
    """Mean figures over ``n_prompts`` prompts drawn with ``seed`` (n/a ones left out);
    ``build(tokens [pos])`` makes a prompt's graph (e.g. ``lambda t: attribution_graph(model,
    transcoder, t)``)."""
    if not truth.features or not truth.feature_edges:
        raise ValueError(f"{truth.model} declares no feature-level truth (features and feature edges) to score "
                         "a feature graph against")
    rows = []
    for tokens, answer in graph_prompts(task, n_prompts, seed):
        graph = build(tokens)
        if not isinstance(graph, AttributionGraph):
            raise TypeError(f"a feature graph builder returns an AttributionGraph, got {type(graph).__name__}")
        rows.append(score_graph(graph, truth, task, answer, node_threshold, edge_threshold, match))
    means = {k: _nanmean([r[k] for r in rows]) for k in rows[0]}
    return FeatureGraphScores(truth.model, label, n_prompts=n_prompts, **means)
