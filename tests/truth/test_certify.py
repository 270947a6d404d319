"""Every zoo truth is re-proved from the weights, and wrong truths are rejected."""

import dataclasses

import pytest

from toylab import zoo
from toylab.interventions import Faithfulness, edges_without
from toylab.truth import Truth
from toylab.truth.certify import BOOTSTRAP_REPLICATES, CERTIFICATE_PAIRS, CERTIFICATE_SEED, IDENTIFY_SEED, THRESHOLDS, certify, trap_exemptions

SHIPPED = [(name, seed) for name in zoo.names() for seed in zoo.recipe(name).seeds]
# Neither the build data (identify, optional edges), nor the certificate's, nor SIIT's streams.
TEST_SEED = 31_337
assert TEST_SEED not in (CERTIFICATE_SEED, IDENTIFY_SEED)


@pytest.mark.parametrize("name,seed", SHIPPED)
def test_every_shipped_model_has_a_truth_whose_recorded_certificate_matches_its_weights(name, seed):
    zm = zoo.load(name, seed=seed)
    assert zm.truth is not None and zm.truth.provenance in ("constructed", "enforced", "certified")
    rec = zoo.recipe(name)
    declared = rec.seed_truths.get(seed, rec.truth)
    assert zm.truth.nodes == declared.nodes and zm.truth.trap == declared.trap  # the shipped JSON is the recipe's
    recorded = zm.truth.certificate
    assert recorded["passed"] and zm.card["certificate"]["passed"]
    assert recorded["seed"] == CERTIFICATE_SEED != IDENTIFY_SEED and recorded["n_pairs"] == CERTIFICATE_PAIRS
    # The recorded figures are those of these weights (the whole certificate is recomputed on
    # an unseen seed below): faithfulness and completeness again, on the recorded pairs.
    f = Faithfulness(zm.model, zm.task.counterfactual(CERTIFICATE_PAIRS, CERTIFICATE_SEED))
    internal = [n for n in zm.truth.nodes_at("head") if n not in ("embed", "logits")]
    internal += zm.truth.trap.nodes.get("backup", ()) if zm.truth.trap else ()
    assert f(set(zm.truth.edges), zm.truth.neurons()) == pytest.approx(recorded["faithfulness"], abs=1e-4)
    assert f(edges_without(zm.model.cfg, internal)) == pytest.approx(recorded["completeness"], abs=1e-4)


@pytest.mark.parametrize("name,seed", SHIPPED)
def test_every_shipped_truth_passes_its_certificate_on_data_no_build_step_used(name, seed):
    """Every interval clears its bound on a fresh sample too: the truth is not one sample's luck."""
    zm = zoo.load(name, seed=seed)
    certificate = certify(zm.model, zm.task, zm.truth, zm.algorithm, seed=TEST_SEED)
    assert certificate.passed, certificate.summary()
    sampled = [c for c in certificate.checks if c.interval is not None]
    assert sampled and all(c.interval[0] <= c.value <= c.interval[1] for c in sampled)


@pytest.mark.parametrize("name,seed", SHIPPED)
def test_removing_any_required_edge_leaves_a_circuit_that_is_no_longer_faithful(name, seed):
    """Each truth is edge-minimal up to its declared optional edges: without any one required
    edge, the smaller truth is no longer faithful (f's interval lies outside 1 +- 0.1, below
    or, where the edge cancelled another, above) on held-out pairs; only the edges declared
    optional may go, and an or-gate trap's paths, each redundant by design (its certificate
    shows each sufficient alone and all together necessary)."""
    zm = zoo.load(name, seed=seed)
    truth = zm.truth
    f = Faithfulness(zm.model, zm.task.counterfactual(CERTIFICATE_PAIRS, TEST_SEED), BOOTSTRAP_REPLICATES, TEST_SEED)
    circuit, neurons = set(truth.edges), truth.neurons()
    _, redundant = trap_exemptions(truth)
    slack = 1 - THRESHOLDS["faithfulness"]

    def faithful(estimate) -> bool:
        low, high = estimate.interval()
        return high >= 1 - slack and low <= 1 + slack

    still_faithful = [str(e) for e in truth.required_edges()
                      if e not in redundant and faithful(f.estimate(circuit - {e}, neurons))]
    assert not still_faithful, f"{name} seed {seed}: the truth stays faithful without {still_faithful}"
    assert set(truth.optional) < circuit


def _without(truth: Truth, node: str) -> Truth:
    nodes = {k: v for k, v in truth.nodes.items() if k != node}
    kept = tuple(e for e in truth.edges if node not in (e.sender, e.receiver))
    # Circuit-level: the features (certified on their own, in test_features) are left out, as they cost time.
    return dataclasses.replace(truth, nodes=nodes, edges=kept, optional=tuple(e for e in truth.optional if e in kept),
                               features=(), feature_edges=())


def _moved(truth: Truth, old: str, new: str) -> Truth:
    rename = {old: new}
    nodes = {rename.get(k, k): v for k, v in truth.nodes.items()}
    edges = [(rename.get(e.sender, e.sender), rename.get(e.receiver, e.receiver), e.kind) for e in truth.edges]
    attention = tuple(dataclasses.replace(a, head=rename.get(a.head, a.head)) for a in truth.attention)
    variables = tuple(dataclasses.replace(v, components=tuple(rename.get(c, c) for c in v.components))
                      for v in truth.variables)
    return dataclasses.replace(truth, nodes=nodes, edges=edges, attention=attention, variables=variables,
                               features=(), feature_edges=())  # circuit-level, as in _without


@pytest.mark.parametrize("name", ["induction-siit", "induction-constructed", "brackets-siit"])
def test_a_moved_circuit_is_rejected(name):
    zm = zoo.load(name)
    wrong = _moved(zm.truth, "L1H1", "L1H0")
    certificate = certify(zm.model, zm.task, wrong, zm.algorithm)
    assert not certificate.passed
    failed = {c.name for c in certificate.failures}
    assert "faithfulness" in failed and "minimality of node L1H0" in failed


@pytest.mark.parametrize("name,node", [("induction-siit", "L0H2"), ("modadd-tiny", "L0H1"), ("induction-2l", "L1H2"),
                                       ("brackets-siit", "MLP0")])
def test_a_truth_missing_a_node_is_rejected(name, node):
    zm = zoo.load(name)
    certificate = certify(zm.model, zm.task, _without(zm.truth, node), zm.algorithm)
    assert not certificate.passed


def test_enforced_models_keep_their_nodes_on_every_seed():
    """The enforced nodes sit where they were put on every shipped seed, and nowhere else."""
    for name in ("induction-siit", "brackets-siit"):
        for seed in zoo.recipe(name).seeds:
            truth = zoo.load(name, seed=seed).truth
            assert truth.provenance == "enforced" and truth.nodes == zoo.recipe(name).truth.nodes
            assert set(zoo.recipe(name).truth.edges) <= set(truth.edges)  # the declared spine is there


def test_an_extra_inert_node_fails_minimality():
    zm = zoo.load("induction-constructed")  # the decoy L1H0 is inert by construction
    extra = dataclasses.replace(zm.truth, nodes={**zm.truth.nodes, "L1H0": "decoy"},
                                edges=(*zm.truth.edges, ("L1H0", "logits", "resid")))
    failed = {c.name for c in certify(zm.model, zm.task, extra).failures}
    assert "minimality of node L1H0" in failed


def test_wrong_key_frequencies_are_rejected():
    zm = zoo.load("modadd-tiny")
    wrong = dataclasses.replace(zm.truth, claims={"key_frequencies": [3, 5, 7]})
    assert not certify(zm.model, zm.task, wrong, zm.algorithm).passed


def test_a_truth_that_does_not_fit_the_model_is_refused():
    zm = zoo.load("induction-tiny")
    with pytest.raises(ValueError, match="heads"):
        certify(zm.model, zm.task, _moved(zoo.load("induction-siit").truth, "L0H2", "L0H3"))


def test_feature_truth_round_trips_and_a_wrong_direction_fails_its_certificate():
    """conjunctions declares its features as data; certify ablates each along its direction. A
    truth whose conjunction direction is replaced by another conjunction's, or by a random one,
    fails exactly those checks."""
    import torch

    zm = zoo.load("conjunctions")
    truth = zm.truth
    assert Truth.from_dict(truth.to_dict()).features == truth.features
    causal = [f for f in truth.features if f.variable]
    assert len(causal) == zm.task.n_marked and len(truth.features) == zm.task.n_marked + zm.task.n_features
    assert len(truth.feature_edges) == 5 * zm.task.n_marked  # per pair: 2 inputs -> conjunction -> class, 2 inputs -> class
    g = torch.Generator().manual_seed(0)
    wrong = dataclasses.replace(causal[0], vector=tuple(torch.randn(len(causal[0].vector), generator=g).tolist()))
    broken = dataclasses.replace(truth, features=(wrong, *causal[1:3]), feature_edges=(), certificate=None)
    certificate = certify(zm.model, zm.task, broken, zm.algorithm, n_pairs=128)
    failed = {c.name.split(" at ")[0] for c in certificate.failures}
    assert failed == {f"ablating feature {wrong.name}"}, failed
    with pytest.raises(ValueError, match="both ends must be declared features"):
        dataclasses.replace(truth, feature_edges=(("f0", "nowhere"),))
