"""What a method may return, and the errors that say what was wrong."""

import math

import pytest
import torch

import toylab
from toylab.components import Edge
from toylab.validate import (
    Circuit,
    EdgeScores,
    Featuriser,
    FeatureDirections,
    MethodOutputError,
    NodeScores,
    Problem,
    normalise,
)


@pytest.fixture(scope="module")
def problem():
    zm = toylab.zoo.load("modadd-tiny")
    return Problem("modadd-tiny", 0, zm.model, zm.task, _answer_key=zm.truth)


def test_a_dict_of_ids_is_node_scores_with_neurons_promoted_by_max(problem):
    result = normalise({"L0H0": 0.2, "MLP0N3": 0.5, "MLP0N4": 0.9, "pos_embed": 7.0}, problem)
    assert isinstance(result, NodeScores)
    assert result.scores == {"L0H0": 0.2, "MLP0": 0.9}  # pos_embed never counts


def test_a_dict_of_edges_is_edge_scores_at_its_granularity(problem):
    qkv = normalise({("embed", "L0H0", "q"): 1.0, Edge("L0H0", "logits", "resid"): 0.5}, problem)
    assert isinstance(qkv, EdgeScores) and qkv.granularity == "qkv"
    head = normalise({("embed", "L0H0", "head"): 1.0}, problem)
    assert head.granularity == "head"


def test_a_set_is_a_circuit(problem):
    assert normalise({"embed", "L0H1"}, problem) == Circuit(nodes=frozenset({"embed", "L0H1"}))
    circuit = normalise([("embed", "L0H1", "v")], problem)
    assert circuit.edges == frozenset({Edge("embed", "L0H1", "v")}) and circuit.granularity == "qkv"


@pytest.mark.parametrize("bad, message", [
    ({"L5H0": 1.0}, "layer 5"),
    ({"L0H9": 1.0}, "head 9"),
    ({"LOH1": 1.0}, "nearest valid ids"),
    ({"L0H0": math.nan}, "NaN"),
    ({"L0H0": "high"}, "not a number"),
    ({}, "empty dict"),
    ({("embed", "L0H0", "q"): 1.0, ("embed", "L0H1", "head"): 1.0}, "one granularity"),
    ({("L0H0", "embed", "resid"): 1.0}, "not upstream|kind"),
    ({("embed", "MLP0", "q"): 1.0}, "kind"),
    ({"logits": 1.0}, "output"),
    ({1: 0.5}, "keyed by component ids"),
    (42, "returned int"),
    (torch.zeros(3), "returned Tensor"),
])
def test_garbage_gets_a_clear_error(problem, bad, message):
    with pytest.raises(MethodOutputError, match=message):
        normalise(bad, problem)


def test_directions_are_checked_against_the_hook(problem):
    d_model = problem.cfg.d_model
    ok = normalise(FeatureDirections("blocks.0.hook_resid_post", torch.randn(3, d_model)), problem)
    assert ok.directions.shape == (3, d_model)
    with pytest.raises(MethodOutputError, match=rf"shape \[n, {d_model}\]"):
        normalise(FeatureDirections("blocks.0.hook_resid_post", torch.randn(3, d_model + 1)), problem)
    with pytest.raises(MethodOutputError, match="nearest valid names"):
        normalise(FeatureDirections("blocks.0.hook_resid_psot", torch.randn(3, d_model)), problem)
    with pytest.raises(MethodOutputError, match="NaN"):
        normalise(FeatureDirections("blocks.0.hook_resid_post", torch.full((1, d_model), math.nan)), problem)
    with pytest.raises(MethodOutputError, match=r"\[batch, pos, d\]"):
        normalise(Featuriser("sum", "blocks.0.attn.hook_z", torch.randn(1, 4)), problem)
    with pytest.raises(MethodOutputError, match="zero"):
        normalise(Featuriser("sum", "blocks.0.hook_resid_post", torch.zeros(2, d_model)), problem)


def test_the_answer_key_is_marked_when_read(problem):
    fresh = Problem("modadd-tiny", 0, problem.model, problem.task, _answer_key="truth")
    assert not fresh.peeked
    assert fresh.answer_key() == "truth" and fresh.peeked


def test_candidates_leave_out_pos_embed(problem):
    assert "pos_embed" not in problem.nodes() and "logits" not in problem.nodes()
    assert all(e.sender != "pos_embed" for e in problem.edges("qkv"))
    assert len(problem.edges("qkv")) > len(problem.edges("head"))
    pair = problem.pair(8, seed=3)
    assert torch.equal(problem.clean(8, seed=3).tokens, pair.clean.tokens)
    assert problem.metric(problem.model(pair.clean.tokens), pair) > problem.metric(
        problem.model(pair.corrupted.tokens), pair)
