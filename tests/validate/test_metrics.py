"""The ranking and faithfulness metrics, on cases worked out by hand and on a real model."""

import math

import pytest

import toylab
from toylab import components as comp
from toylab.validate import metrics as mt

UNIVERSE = ["a", "b", "c", "d"]
SCORES = {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0}


def test_auroc_counts_pairs_and_ties_half():
    assert mt.auroc(SCORES, {"a", "c"}, UNIVERSE) == 0.75  # a beats b, d; c beats d only
    assert mt.auroc(SCORES, {"a", "b"}, UNIVERSE) == 1.0
    assert mt.auroc(SCORES, {"c", "d"}, UNIVERSE) == 0.0
    assert mt.auroc({u: 1.0 for u in UNIVERSE}, {"a"}, UNIVERSE) == 0.5


def test_auroc_equals_the_area_under_the_roc_curve():
    scores = {"a": 3.0, "b": 3.0, "c": 1.0, "d": 0.0, "e": 2.0}
    universe = list(scores)
    roc = mt.roc_curve(scores, {"a", "c"}, universe)
    assert roc.fpr[0] == 0 and roc.tpr[-1] == 1 and roc.fpr[-1] == 1
    assert roc.auc == pytest.approx(mt.auroc(scores, {"a", "c"}, universe))


def test_auroc_is_undefined_without_negatives():
    assert math.isnan(mt.auroc(SCORES, set(UNIVERSE), UNIVERSE))


def test_unscored_candidates_rank_last():
    assert mt.auroc({"a": 0.1}, {"a"}, UNIVERSE) == 1.0
    assert mt.auroc({"b": 0.1}, {"a"}, UNIVERSE) == pytest.approx(1 / 3)  # a ties with c and d


def test_positives_outside_the_universe_are_an_error():
    with pytest.raises(ValueError, match="not in the universe"):
        mt.auroc(SCORES, {"z"}, UNIVERSE)


def test_average_precision_by_hand():
    # thresholds 3 (P 1, R 1/2), 2 (no new positive), 1 (P 2/3, R 1): 1/2 * 1 + 1/2 * 2/3
    assert mt.average_precision(SCORES, {"a", "c"}, UNIVERSE) == pytest.approx(0.5 + 1 / 3)
    assert mt.average_precision(SCORES, {"a", "b"}, UNIVERSE) == 1.0


def test_precision_at_k_shares_out_ties_in_expectation():
    tied = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0}
    assert mt.precision_recall_at_k(tied, {"a"}, UNIVERSE, 1) == pytest.approx((1 / 3, 1 / 3))
    assert mt.precision_recall_at_k(SCORES, {"a", "c"}, UNIVERSE, 2) == (0.5, 0.5)


def test_curve_areas_are_normalised():
    ones = mt.FaithfulnessCurve("edge", mt.SIZES, tuple(range(10)), (1.0,) * 10, 1.0, 0.0)
    assert ones.cpr == pytest.approx(1.0) and ones.cmd == pytest.approx(0.0)
    zeros = mt.FaithfulnessCurve("edge", mt.SIZES, tuple(range(10)), (0.0,) * 10, 1.0, 0.0)
    assert zeros.cpr == pytest.approx(0.0) and zeros.cmd == pytest.approx(1.0)


def test_circuit_overlap():
    assert mt.circuit_overlap({"a", "b", "x"}, {"a", "b", "c", "d"}) == (0.5, 2 / 3)


@pytest.fixture(scope="module")
def constructed():
    zm = toylab.zoo.load("induction-constructed")
    return zm, mt.Faithfulness(zm.model, zm.task.counterfactual(64, 1))


def test_faithfulness_of_the_whole_model_and_of_nothing(constructed):
    zm, faith = constructed
    assert faith.of_edges(comp.edges(zm.model.cfg)) == pytest.approx(1.0)
    assert faith.of_edges([]) == pytest.approx(0.0)
    assert faith.of_nodes(comp.senders(zm.model.cfg)) == pytest.approx(1.0)


def test_faithfulness_of_the_true_circuit_and_of_its_decoy(constructed):
    zm, faith = constructed
    assert faith.of_edges(zm.truth.edges) > 0.95
    assert faith.of_nodes(["embed", "L0H1", "L1H1"]) > 0.95
    assert abs(faith.of_nodes(["embed", "L0H0", "L1H0"])) < 0.05  # the decoys carry nothing


def test_curve_counts_follow_the_sizes(constructed):
    zm, faith = constructed
    ranking = list(zm.truth.edges) + [e for e in comp.edges(zm.model.cfg) if e not in zm.truth.edges]
    curve = faith.curve(ranking, "edge")
    assert curve.counts[-1] == len(ranking) and curve.f[-1] == pytest.approx(1.0)
    assert list(curve.counts) == sorted(curve.counts)
    with pytest.raises(ValueError, match="level"):
        faith.curve(ranking, "neuron")
