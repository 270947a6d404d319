"""ACDC: automatic circuit discovery by greedy edge pruning (Conmy et al. 2023).

Axis names used in shape comments:
    batch, pos     rows of the counterfactual pair, token positions
    scored         the clean batch's scored (batch, pos) positions, flattened
    d_vocab_out    output logits

Notation: ``m(.)`` is the task's logit difference between the clean and the counterfactual
answer (``toylab.tasks.logit_diff``), averaged over the batch's scored positions;
``m_clean`` and ``m_corr`` are m of the model on the clean and on the corrupted tokens,
and the normalised metric is ``f = (m - m_corr) / (m_clean - m_corr)`` (1 for the whole
model, 0 with everything ablated).

Start from the full graph; visit receivers in reverse topological order (logits, then
MLP{L-1}, the heads of layer L-1 from the last to the first, ...); for a head, its q, then
k, then v inputs; within one input, senders from the latest to the earliest. Tentatively
remove each edge (resample ablation via ``toylab.interventions.ablated`` with the kept set
minus that edge) and measure the damage relative to the current graph:

    "kl"          KL(full model || current graph minus e) - KL(full || current graph),
                  the KL of the output distributions averaged over the clean batch's
                  scored positions;
    "logit_diff"  |f(current graph minus e) - f(current graph)|.

If damage <= threshold the edge is removed for good ("<=" rather than "<" so that an edge
of damage exactly 0 goes at every threshold, 0 included). An edge's score is the damage
measured when it was tested, so

    result.circuit == {e : result.scores[e] > threshold}

exactly. A receiver with no outgoing edge left when it is visited cannot affect the
output: its incoming edges are removed untested, with score 0.0 (their damage is exactly
0; ACDC skips them the same way). Defaults (``ACDC_THRESHOLDS``): "kl" 0.1 and
"logit_diff" 0.05. Edges from ``pos_embed`` are neither tested nor scored: it is the same
in a clean input and its counterfactual, so ablating them changes nothing; they stay.
Cost: 4 forwards + 2 per tested edge (``ablated`` records the corrupted run each time it
is entered); at most 4 + 2 |edges|.

    result = acdc(model, pair)                    # KL damage, threshold 0.1
    result.circuit                                # frozenset of Edge
    result.top(5)                                 # the most damaging edges, with their damage
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from toylab import components as comp
from toylab.components import Edge
from toylab.hooks import UnknownNameError
from toylab.interventions import ablated
from toylab.models import Transformer
from toylab.tasks import CounterfactualPair, logit_diff

ACDC_METRICS = ("kl", "logit_diff")
# Chosen by sweeping thresholds over the zoo's twelve shipped models (data seed 0, n=64)
# for the best mean F1 of ACDC's circuit against the truth: KL 0.1 gives 0.95 (0.03: 0.94,
# 0.3: 0.91), logit_diff 0.05 gives 0.94 (0.02: 0.92, 0.1: 0.84). At these ACDC returns the
# truth exactly on induction-constructed and induction-siit (all seeds with logit_diff;
# with KL, seed 2 also keeps embed -> L0H2 (q) and (k), each with KL damage 0.16, where the
# truth's weakest edge does 16). Natural models (induction-2l, -tiny) have weak true edges
# that no single threshold separates from noise: sweep the threshold there.
ACDC_THRESHOLDS = {"kl": 0.1, "logit_diff": 0.05}


@dataclass(frozen=True)
class ACDCResult:
    scores: dict[Edge, float]  # damage when each edge was tested, in visiting order (qkv edges, no pos_embed)
    circuit: frozenset[Edge]  # the edges kept: exactly {e: scores[e] > threshold}
    threshold: float
    metric: str  # "kl" or "logit_diff"

    def __getitem__(self, edge: Edge | tuple[str, str, str]) -> float:
        """One edge's damage, e.g. ``result[("L0H1", "L1H1", "k")]``."""
        edge = Edge.parse(edge)
        if edge not in self.scores:
            raise UnknownNameError(str(edge), [str(e) for e in self.scores], what="scored edge")
        return self.scores[edge]

    def top(self, k: int = 3) -> list[tuple[Edge, float]]:
        """The ``k`` edges whose removal did the most damage, as (edge, damage)."""
        return [(e, self.scores[e]) for e in sorted(self.scores, key=self.scores.get, reverse=True)[:k]]

    @property
    def nodes(self) -> frozenset[str]:
        """The components the circuit's edges connect (logits included)."""
        return frozenset(n for e in self.circuit for n in (e.sender, e.receiver))


def acdc(model: Transformer, pair: CounterfactualPair, *, threshold: float | None = None,
         metric: str = "kl") -> ACDCResult:
    """ACDC's damage per edge and the circuit it keeps at ``threshold`` (see the module docstring)."""
    if metric not in ACDC_METRICS:
        raise ValueError(f"unknown ACDC metric {metric!r}; choose one of {ACDC_METRICS}")
    if threshold is None:
        threshold = ACDC_THRESHOLDS[metric]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 (the damage an edge may do and still be removed), "
                         f"got {threshold}")
    cfg = model.cfg
    clean_tokens = pair.clean.tokens.to(model.device)  # [batch, pos]
    corrupted_tokens = pair.corrupted.tokens.to(model.device)  # [batch, pos]
    scored = pair.clean.scored  # [batch, pos] bool
    with torch.no_grad():
        full = model(clean_tokens).cpu()  # [batch, pos, d_vocab_out]
        m_clean = float(logit_diff(full, pair))
        m_corr = float(logit_diff(model(corrupted_tokens).cpu(), pair))
    full_logp = full[scored].log_softmax(-1)  # [scored, d_vocab_out]
    if metric == "logit_diff" and abs(m_clean - m_corr) <= 1e-6 * max(1.0, abs(m_clean), abs(m_corr)):
        raise ValueError("the model's metric does not change between clean and corrupted inputs "
                         f"(m = {m_clean:.3g} on both): nothing to attribute")

    def value_of(keep: set[Edge]) -> float:
        """The metric of the clean run with only ``keep`` intact: KL to the full model, or f."""
        with torch.no_grad(), ablated(model, corrupted_tokens, keep):
            logits = model(clean_tokens).cpu()  # [batch, pos, d_vocab_out]
        if metric == "kl":
            logp = logits[scored].log_softmax(-1)  # [scored, d_vocab_out]
            return float((full_logp.exp() * (full_logp - logp)).sum(-1).mean())
        return float((logit_diff(logits, pair) - m_corr) / (m_clean - m_corr))

    # pos_embed's edges are always kept: it is the same on both inputs, so ablating them
    # would change nothing.
    current = set(comp.edges(cfg))
    value = value_of(current)  # ~0 for KL, ~1 for f: the full graph
    scores: dict[Edge, float] = {}
    for receiver, edges in _acdc_order(cfg):
        if receiver != comp.OUTPUT and not any(e.sender == receiver for e in current):
            for edge in edges:  # the receiver reaches nothing: these edges cannot matter
                scores[edge] = 0.0
                current.discard(edge)
            continue
        for edge in edges:
            trial = current - {edge}
            new = value_of(trial)
            damage = new - value if metric == "kl" else abs(new - value)
            scores[edge] = damage
            if damage <= threshold:
                current, value = trial, new
    circuit = frozenset(e for e in current if e in scores)
    return ACDCResult(scores, circuit, float(threshold), metric)


def _acdc_order(cfg) -> list[tuple[str, list[Edge]]]:
    """Receivers in reverse topological order, each with its candidate edges in test order."""
    candidates = {e for e in comp.edges(cfg) if e.sender != "pos_embed"}
    senders = [s for s in comp.senders(cfg) if s != "pos_embed"]
    order = [(comp.OUTPUT, "resid")]
    for layer in reversed(range(cfg.n_layers)):
        if not cfg.attn_only:
            order.append((f"MLP{layer}", "resid"))
        for h in reversed(range(cfg.n_heads)):
            order += [(comp.head_id(layer, h), kind) for kind in comp.QKV]
    out = []
    for receiver, kind in order:
        edges = [Edge(s, receiver, kind) for s in reversed(senders)]
        out.append((receiver, [e for e in edges if e in candidates]))
    return out


__all__ = ["ACDC_METRICS", "ACDC_THRESHOLDS", "ACDCResult", "acdc"]
