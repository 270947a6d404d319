"""Identify the circuit of a naturally trained model, for a truth that ``certify`` then proves.

The procedure (documented because a certified truth is only as good as its search):

1. Start from every edge of the model's graph (or the given candidates: for an enforced
   model, the edges among the components its circuit was trained into).
2. Measure each kept edge's effect, f(kept) - f(kept minus the edge), with the same
   resample ablation and normalised metric as ``toylab.truth.certify``.
3. Remove the weakest edge (smallest |effect|) whose removal keeps f(kept) within
   1 +- (1 - ``target``); among edges with |effect| below ``margin`` remove them all at once
   while f stays there. An edge whose removal raises f (a head writing against the answer)
   matters as much as one whose removal lowers it, and a circuit that overshoots (a
   negative head's whole path dropped, f well above 1) is no more faithful than one that
   falls short.
4. Repeat until every kept edge matters by ``margin``, then drop nodes left with no
   path from an input to the logits.

It is a greedy search: it finds *a* faithful, edge-minimal circuit, not necessarily the
smallest one. That is why the result is certified, never trusted as it comes out.
"""

from __future__ import annotations

import torch

from toylab import components as comp
from toylab.components import Edge
from toylab.interventions import Faithfulness
from toylab.models import Transformer
from toylab.tasks import Task
from toylab.truth.certify import BOOTSTRAP_REPLICATES, CERTIFICATE_PAIRS, IDENTIFY_SEED, THRESHOLDS
from toylab.truth.truth import Truth

IDENTIFY_PAIRS = 256  # pairs the edges are chosen on (certify then uses others)


def edges_among(cfg, nodes) -> set[Edge]:
    """Every edge of the graph between two of ``nodes`` (neurons promoted to their MLP)."""
    inside = {comp.promote_node(n) for n in nodes}
    return {e for e in comp.edges(cfg) if e.sender in inside and e.receiver in inside}


@torch.no_grad()
def identify_edges(
    model: Transformer,
    task: Task,
    target: float = THRESHOLDS["faithfulness"] + 0.02,
    margin: float = 2 * THRESHOLDS["edge_margin"],  # twice the certificate's, so it never hinges on rounding
    n_pairs: int = IDENTIFY_PAIRS,
    seed: int = IDENTIFY_SEED,
    candidates: set[Edge] | None = None,
) -> set[Edge]:
    """A faithful circuit whose every edge matters by ``margin`` (see the module docstring)."""
    pair = task.counterfactual(n_pairs, seed)
    all_edges = set(comp.edges(model.cfg))

    def faithful(value: float) -> bool:  # within 1 +- (1 - target): no overshoot either
        return abs(1 - value) <= 1 - target

    f = Faithfulness(model, pair)
    kept = set(all_edges if candidates is None else candidates)
    while True:
        now = f(kept)
        effects = sorted((now - f(kept - {e}), e) for e in kept)
        # An edge matters either way, as in the certificate: one whose removal makes the rest
        # overshoot (a negative head's) is as much a part as one whose removal loses the behaviour.
        weak = [e for effect, e in effects if abs(effect) < margin]
        if not weak:
            break
        if faithful(f(kept - set(weak))):
            kept -= set(weak)
            continue
        removed = False
        for effect, edge in effects:  # weakest first; f(kept minus edge) = now - effect
            if abs(effect) < margin and faithful(now - effect):
                kept.discard(edge)
                removed = True
                break
        if not removed:
            break
    return _connected(kept)


@torch.no_grad()
def optional_edges(model: Transformer, task: Task, truth: Truth, n_pairs: int = CERTIFICATE_PAIRS,
                   seed: int = IDENTIFY_SEED) -> set[Edge]:
    """The edges of ``truth`` that the build data cannot show to be required.

    An edge is required when the circuit without it is clearly no longer faithful: on the
    build pairs, f(circuit minus e) lies outside 1 +- (1 - the certificate's faithfulness
    bound) by more than its sampling error (the nearer end of its 95% bootstrap interval
    plus the interval's half-width), so that held-out pairs confirm it. Every other edge is
    optional: a circuit without it may be as true, and nobody can decide which. ``certify``
    checks each required edge on held-out pairs. An or-gate trap's paths are never
    optional: each alone is redundant by design, and the trap's own checks prove them.
    """
    f = Faithfulness(model, task.counterfactual(n_pairs, seed), BOOTSTRAP_REPLICATES, seed)
    circuit, neurons = set(truth.edges), truth.neurons()
    paths = truth.trap.path_edges() if truth.trap else set()
    slack = 1 - THRESHOLDS["faithfulness"]
    optional = set()
    for edge in truth.edges:
        if edge in paths:
            continue
        low, high = f.estimate(circuit - {edge}, neurons).interval()
        half = (high - low) / 2
        if high + half >= 1 - slack and low - half <= 1 + slack:
            optional.add(edge)
    return optional


def _connected(edges: set[Edge]) -> set[Edge]:
    """Keep only edges on some path from an input to the logits."""
    edges = set(edges)
    while True:
        reaches_out = {comp.OUTPUT}
        reached_from_in = set(comp.INPUTS)
        for e in sorted(edges, key=lambda e: -comp.layer_of(e.sender)):
            if e.receiver in reaches_out:
                reaches_out.add(e.sender)
        for e in sorted(edges, key=lambda e: comp.layer_of(e.sender)):
            if e.sender in reached_from_in:
                reached_from_in.add(e.receiver)
        keep = {e for e in edges if e.receiver in reaches_out and e.sender in reached_from_in}
        if keep == edges:
            return edges
        edges = keep
