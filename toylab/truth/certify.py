"""Causal certificates: does a model's declared circuit really compute its behaviour?

Every figure here comes from interventions on the weights (``toylab.interventions``),
never from reading the truth back. The task metric ``m`` is the logit difference between
the clean answer and the counterfactual answer, on the task's counterfactual pairs, and
ablations are resample ablations from the counterfactual input. For a set of kept edges C:

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty))        (normalised as in MIB)

so f(full model) = 1 and f(nothing kept) = 0. The certificate checks (thresholds in
``THRESHOLDS``, each check recorded with its value and its bound):

    faithfulness   f(circuit) >= 0.9: the circuit alone keeps the behaviour.
    completeness   f(model minus the circuit's nodes) <= 0.1: without the circuit's
                   heads and MLPs the behaviour is gone (inputs and logits stay).
    minimality     for each node v: f(circuit) - f(circuit minus v) >= 0.03, and for each
                   edge e: f(circuit) - f(circuit minus e) >= 0.01: every part matters.
    inertness      (constructed and enforced models, which promise it) for each head or
                   MLP outside the circuit: |1 - f(model minus it)| <= 0.05, and for all of
                   them at once <= 0.1 (the complement of faithfulness): what was not built
                   in does nothing for the task.
    roles          each declared attention role's detector score reaches its bound.
    variables      with a high-level algorithm, each causal variable's interchange-
                   intervention accuracy at its declared components is >= 0.9.
    claims         algorithm-level claims checked by their own interventions (for modular
                   addition, the key frequencies' restricted and excluded losses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toylab import components as comp
from toylab.interventions import (
    Faithfulness,
    edges_without,
    interchange_accuracy,
    interchanged,
)
from toylab.methods.check import Check
from toylab.methods.detectors import head_scores
from toylab.methods.fourier import check_key_frequencies
from toylab.models import Transformer
from toylab.tasks import Task
from toylab.tasks.algorithm import Algorithm
from toylab.truth.truth import CausalVariable, Truth

THRESHOLDS = {
    "faithfulness": 0.9,  # f(circuit) at least
    "completeness": 0.1,  # f(model minus circuit nodes) at most
    # Natural circuits share work between heads (induction-2l's weakest head carries 4%), so
    # the margins ask that each part carries a clear share, not a large one.
    "node_margin": 0.03,  # each node's removal from the circuit costs at least this much f
    "edge_margin": 0.01,  # each edge's removal from the circuit costs at least this much f
    "inertness": 0.05,  # a non-circuit node changes f by at most this (where promised)
    "iia": 0.9,  # interchange-intervention accuracy of each declared variable
}
CERTIFICATE_PAIRS = 256  # counterfactual pairs per measurement
CERTIFICATE_SEED = 20261121  # fixed, so a recorded certificate is recomputed exactly

# Claim checkers by claim name: (model, task, value) -> [Check], from the methods that
# know each algorithm.
CLAIM_CHECKS: dict[str, Callable[[Transformer, Task, Any], list[Check]]] = {
    "key_frequencies": check_key_frequencies,
}


@dataclass(frozen=True)
class Certificate:
    model: str
    provenance: str
    metric: str  # what m is
    n_pairs: int
    full: float  # m of the whole model
    empty: float  # m with every edge ablated (the model on the counterfactual input)
    faithfulness: float
    completeness: float
    node_effects: dict[str, float]  # f(circuit) - f(circuit minus node)
    edge_effects: dict[str, float]  # f(circuit) - f(circuit minus edge), keyed by str(edge)
    outside_effects: dict[str, float]  # 1 - f(model minus node), for nodes outside the circuit
    checks: tuple[Check, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "model": self.model, "provenance": self.provenance, "metric": self.metric,
            "n_pairs": self.n_pairs, "full": self.full, "empty": self.empty,
            "faithfulness": self.faithfulness, "completeness": self.completeness,
            "node_effects": self.node_effects, "edge_effects": self.edge_effects,
            "outside_effects": self.outside_effects,
            "checks": [{"name": c.name, "value": c.value, "op": c.op, "threshold": c.threshold, "passed": c.passed}
                       for c in self.checks],
        }

    def summary(self) -> str:
        head = "PASSED" if self.passed else f"FAILED ({len(self.failures)} checks)"
        lines = [f"certificate of {self.model}: {head}",
                 f"  metric: {self.metric} over {self.n_pairs} pairs; full {self.full:.3f}, empty {self.empty:.3f}"]
        lines += [f"  {check}" for check in self.checks]
        return "\n".join(lines)


def certify(
    model: Transformer,
    task: Task,
    truth: Truth,
    algorithm: Algorithm | None = None,
    n_pairs: int = CERTIFICATE_PAIRS,
    seed: int = CERTIFICATE_SEED,
) -> Certificate:
    """Measure whether ``truth`` is the circuit of ``model`` on ``task``.

    ``toylab.zoo.load(name).certify()`` calls this with the zoo model's own truth and
    algorithm. Never mutates the model.
    """
    truth.check_fits(model.cfg)
    pair = task.counterfactual(n_pairs, seed)
    neurons = truth.neurons()
    try:
        f = Faithfulness(model, pair)
    except ValueError as err:
        raise ValueError(f"{truth.model}: nothing can be certified: {err}") from None
    full, empty = f.full, f.empty

    circuit = set(truth.edges)
    faithfulness = f(circuit, neurons)
    internal = [n for n in truth.nodes_at("head") if n not in comp.INPUTS and n != comp.OUTPUT]
    completeness = f(edges_without(model.cfg, internal))

    node_effects = {}
    for node in truth.nodes:
        if node == comp.OUTPUT:
            continue
        kind, layer, index = comp.parse(node)
        if kind == "neuron":
            fewer = {k: [i for i in v if not (k == layer and i == index)] for k, v in neurons.items()}
            node_effects[node] = faithfulness - f(circuit, fewer)
        else:
            node_effects[node] = faithfulness - f({e for e in circuit if node not in (e.sender, e.receiver)}, neurons)
    edge_effects = {str(e): faithfulness - f(circuit - {e}, neurons) for e in truth.edges}
    outside = [n for n in comp.nodes(model.cfg) if n not in comp.INPUTS and n != comp.OUTPUT
               and n not in truth.nodes_at("head")]
    outside_effects = {n: 1.0 - f(edges_without(model.cfg, [n])) for n in outside}

    t = THRESHOLDS
    checks = [Check("faithfulness", faithfulness, ">=", t["faithfulness"]),
              Check("completeness: f without the circuit's nodes", completeness, "<=", t["completeness"])]
    checks += [Check(f"minimality of node {n}", v, ">=", t["node_margin"]) for n, v in node_effects.items()]
    checks += [Check(f"minimality of edge {e}", v, ">=", t["edge_margin"]) for e, v in edge_effects.items()]
    if truth.provenance in ("constructed", "enforced"):
        checks += [Check(f"inertness of {n}", abs(v), "<=", t["inertness"]) for n, v in outside_effects.items()]
        if outside:
            joint = 1.0 - f(edges_without(model.cfg, outside))
            checks.append(Check("inertness of all nodes outside the circuit", abs(joint), "<=",
                                1 - t["faithfulness"]))
    checks += _role_checks(model, task, truth, seed)
    if algorithm is not None:
        checks += _variable_checks(model, algorithm, truth, n_pairs, seed)
    for claim, value in truth.claims.items():
        if claim not in CLAIM_CHECKS:
            raise ValueError(f"{truth.model}: no checker for claim {claim!r}; known: {sorted(CLAIM_CHECKS)}")
        checks += CLAIM_CHECKS[claim](model, task, value)

    return Certificate(
        model=truth.model, provenance=truth.provenance,
        metric=f"logit difference, clean answer minus counterfactual answer ({pair.description})",
        n_pairs=n_pairs, full=full, empty=empty, faithfulness=faithfulness, completeness=completeness,
        node_effects=node_effects, edge_effects=edge_effects, outside_effects=outside_effects,
        checks=tuple(checks),
    )


def _role_checks(model: Transformer, task: Task, truth: Truth, seed: int) -> list[Check]:
    if not truth.attention:
        return []
    tokens = task.sample(CERTIFICATE_PAIRS, seed).tokens
    scores = {}
    checks = []
    for role in truth.attention:
        if role.pattern not in scores:
            scores[role.pattern] = head_scores(model, tokens, role.pattern)
        checks.append(Check(f"{role.pattern} score of {role.head}", scores[role.pattern][role.head],
                            ">=", role.min_score))
    return checks


def _variable_checks(model: Transformer, algorithm: Algorithm, truth: Truth, n: int, seed: int) -> list[Check]:
    return [Check(f"interchange accuracy of {v.name} at {'+'.join(v.components)}",
                  variable_accuracy(model, algorithm, v, n, seed), ">=", THRESHOLDS["iia"])
            for v in truth.variables]


def variable_accuracy(model: Transformer, algorithm: Algorithm, variable: CausalVariable,
                      n: int = CERTIFICATE_PAIRS, seed: int = CERTIFICATE_SEED) -> float:
    """IIA of a declared causal variable, patching its components whole at its positions."""
    return interchange_accuracy(
        model, algorithm, variable.name,
        lambda source: interchanged(model, source, variable.components, variable.positions), n, seed)[0]
