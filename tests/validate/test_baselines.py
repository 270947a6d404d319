"""The built-in baselines: each one recovers the known circuits it should, and only those.

The AUROC floors below are what each method reaches on the enforced induction models
(induction-siit, seeds 0-2) with its defaults, minus a small margin: edge level at "qkv"
for edge scores, node level (positives: the truth's nodes but logits; universe:
``problem.nodes()``) for node scores.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from toylab import zoo
from toylab import components as comp
from toylab.interventions import ablated_logits
from toylab.validate import baselines as B
from toylab.validate.metrics import auroc
from toylab.validate.protocol import Circuit, EdgeScores, NodeScores, Problem, normalise

# Measured with the defaults (data seed 0, n=64): every method 1.000 on all three seeds
# but EAP (1.000, 0.990, 0.994: its linear estimate of the K-composition edge is small).
MIN_AUROC = {"truth": 1.0, "resample-ablation": 1.0, "eap": 0.97, "eap-ig": 0.99, "acdc": 0.99,
             "attention-heuristic": 0.99}


def make_problem(name: str, seed: int | None = None) -> Problem:
    zm = zoo.load(name, seed=seed) if seed is not None else zoo.load(name)
    return Problem(name, zm.seed, zm.model, zm.task, data_seed=0, _answer_key=zm.truth)


@pytest.fixture(scope="module")
def siit() -> dict[int, Problem]:
    return {s: make_problem("induction-siit", s) for s in (0, 1, 2)}


@pytest.fixture(scope="module")
def constructed() -> Problem:
    return make_problem("induction-constructed")


def node_auroc(result: NodeScores, problem: Problem) -> float:
    positives = [n for n in problem._answer_key.nodes if n != comp.OUTPUT]
    return auroc(result.scores, positives, problem.nodes())


def edge_auroc(result: EdgeScores, problem: Problem) -> float:
    assert result.granularity == "qkv"
    return auroc(result.scores, problem._answer_key.edges, problem.edges("qkv"))


def any_auroc(result, problem: Problem) -> float:
    return node_auroc(result, problem) if isinstance(result, NodeScores) else edge_auroc(result, problem)


@pytest.mark.parametrize("name", sorted(MIN_AUROC))
def test_each_baseline_reaches_its_auroc_on_the_enforced_induction_models(siit, name):
    for seed, problem in siit.items():
        result = B.BASELINES[name](problem)
        value = any_auroc(result, problem)
        assert value >= MIN_AUROC[name], f"{name} on induction-siit seed {seed}: AUROC {value:.3f}"


def test_random_is_the_floor(siit):
    problem = siit[0]
    values = [edge_auroc(B.random_scores(problem, seed=s), problem) for s in range(30)]
    assert abs(statistics.fmean(values) - 0.5) < 0.1
    assert B.random_scores(problem, seed=3).scores == B.random_scores(problem, seed=3).scores  # seeded
    assert B.random_scores(problem, seed=3).scores != B.random_scores(problem, seed=4).scores


def test_only_the_ceiling_reads_the_answer_key(constructed):
    for name, method in B.BASELINES.items():
        constructed.peeked = False
        method(constructed)
        assert constructed.peeked == (name in B.PEEKS), name
    constructed.peeked = False


def test_acdc_and_eap_agree_on_the_constructed_model(constructed):
    """ACDC's circuit is the truth, and exactly EAP's (and EAP-IG's) top-|circuit| edges."""
    circuit = B.acdc_circuit(constructed).edges
    assert circuit == set(constructed._answer_key.edges)
    assert B.acdc_circuit(constructed, metric="logit_diff").edges == circuit
    for method in (B.eap, B.eap_ig):
        scores = method(constructed).scores
        top = sorted(scores, key=scores.get, reverse=True)[:len(circuit)]
        assert set(top) == circuit, method.__name__


def test_acdc_scores_threshold_to_exactly_its_circuit(siit):
    problem = siit[2]
    for metric, threshold in (("kl", None), ("kl", 0.3), ("logit_diff", 0.02)):
        scores = B.acdc(problem, threshold=threshold, metric=metric).scores
        t = B.ACDC_THRESHOLDS[metric] if threshold is None else threshold
        circuit = B.acdc_circuit(problem, threshold=threshold, metric=metric)
        assert isinstance(circuit, Circuit) and circuit.granularity == "qkv"
        assert circuit.edges == {e for e, s in scores.items() if s > t}, (metric, t)
        assert set(scores) == set(problem.edges("qkv"))
    # A lower threshold keeps at least as much, and at 0.3 exactly the truth's four edges.
    loose, strict = B.acdc_circuit(problem, threshold=0.01).edges, B.acdc_circuit(problem, threshold=0.3).edges
    assert strict <= loose and len(strict) == 4 and len(loose) > 4


def test_eap_is_exact_where_the_model_is_linear(siit):
    """Into the logits, and into a last-layer head's value, an attention-only model without
    LayerNorm is linear in the edge: EAP's estimate must equal the measured ablation."""
    problem = siit[0]
    model, n = problem.model, 64
    scores = B.eap(problem, n=n).scores
    pair = problem.pair(n)
    every = set(comp.edges(problem.cfg))

    def m(keep):
        return float(problem.metric(ablated_logits(model, pair.clean.tokens, pair.corrupted.tokens, keep), pair))

    full, empty = m(every), m(set())
    last = problem.cfg.n_layers - 1
    linear = [e for e in problem.edges("qkv")
              if e.receiver == comp.OUTPUT or (e.kind == "v" and comp.parse(e.receiver)[1] == last)]
    for edge in linear:
        measured = abs(full - m(every - {edge})) / abs(full - empty)
        assert scores[edge] == pytest.approx(measured, abs=1e-4), str(edge)


def test_attention_heuristic_is_fooled_by_the_decoys_and_resample_ablation_is_not(constructed):
    heuristic = B.attention_heuristic(constructed).scores
    for decoy, head in (("L0H0", "L0H1"), ("L1H0", "L1H1")):
        assert heuristic[head] > 0.9
        assert heuristic[decoy] == pytest.approx(heuristic[head], abs=0.02)  # ranked with the circuit
    heads = [n for n in constructed.nodes() if comp.parse(n)[0] == "head"]
    positives = [n for n in constructed._answer_key.nodes if n in heads]
    assert auroc(heuristic, positives, heads) == pytest.approx(0.5, abs=0.1)
    assert node_auroc(B.attention_heuristic(constructed), constructed) <= 0.7

    ablation = B.resample_ablation(constructed)
    assert node_auroc(ablation, constructed) == 1.0
    assert ablation.scores["L0H0"] < 0.01 and ablation.scores["L1H0"] < 0.01  # nobody reads them
    assert ablation.scores["L1H1"] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("name", sorted(B.BASELINES))
def test_no_baseline_mutates_the_model_or_leaves_hooks(constructed, name):
    model = constructed.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = B.BASELINES[name](constructed)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())  # gradients never land on the weights
    assert not model.has_hooks()
    assert model.training == zoo.load("induction-constructed").model.training
    normalise(result, constructed)  # a valid protocol answer


def test_the_registry_describes_every_baseline():
    assert set(B.BASELINES) == set(B.DESCRIPTIONS)
    assert {"random", "truth", "resample-ablation", "eap", "eap-ig", "acdc", "attention-heuristic"} <= set(B.BASELINES)
    assert all(isinstance(d, str) and d for d in B.DESCRIPTIONS.values())


def test_bad_options_raise_clear_errors(constructed):
    with pytest.raises(ValueError, match="unknown ACDC metric"):
        B.acdc(constructed, metric="mse")
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        B.acdc(constructed, threshold=-0.1)
    with pytest.raises(ValueError, match="threshold must be a number"):
        B.acdc_circuit(constructed, threshold=float("nan"))
    for method in (B.resample_ablation, B.eap, B.eap_ig, B.acdc, B.attention_heuristic):
        with pytest.raises(ValueError, match="n must be a positive int"):
            method(constructed, n=0)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        B.eap_ig(constructed, steps=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        B.random_scores(constructed, seed=0.5)
    blind = Problem("induction-constructed", 0, constructed.model, constructed.task)
    with pytest.raises(ValueError, match="no answer key"):
        B.truth_scores(blind)
    assert not constructed.model.has_hooks()
