"""Edge pruning: soft edge masks that interpolate exactly, and masks that find the circuit."""

import pytest
import torch

from toylab import components as comp
from toylab import zoo
from toylab.components import Edge
from toylab.interventions import ablated, ablated_logits
from toylab.methods import edge_pruning
from toylab.tasks import logit_diff
from toylab.validate.metrics import auroc


@pytest.fixture(scope="module")
def siit():
    zm = zoo.load("induction-siit")
    return zm, zm.task.counterfactual(64, seed=5)


def test_soft_masks_interpolate_between_ablated_and_kept(siit):
    """Into the logits the model is linear in an edge: a mask of w moves m by w of the way."""
    zm, pair = siit
    model, clean, corrupted = zm.model, pair.clean.tokens, pair.corrupted.tokens
    everything = set(comp.edges(model.cfg))
    edge = Edge("L1H1", "logits", "resid")
    m = {}
    for w in (0.0, 0.25, 1.0):
        weights = {e: torch.tensor(1.0) for e in everything}
        weights[edge] = torch.tensor(w)
        with torch.no_grad(), ablated(model, corrupted, weights):
            m[w] = float(logit_diff(model(clean), pair))
    without = float(logit_diff(ablated_logits(model, clean, corrupted, everything - {edge}), pair))
    with torch.no_grad():
        assert m[1.0] == pytest.approx(float(logit_diff(model(clean), pair)), abs=1e-5)
    assert m[0.0] == pytest.approx(without, abs=1e-5)
    assert m[0.25] == pytest.approx(without + 0.25 * (m[1.0] - without), abs=1e-4)


def test_edge_pruning_ranks_the_circuit_first_and_leaves_the_model_as_it_was(siit):
    zm, pair = siit
    before = {k: v.clone() for k, v in zm.model.state_dict().items()}
    result = edge_pruning(zm.model, pair)
    truth = set(zm.truth.edges)
    # It keeps the circuit, ranks it far above chance (0.5), and what it keeps reproduces the model;
    # it optimises KL, not minimality, so it keeps some edges of the inert heads too.
    assert truth <= result.circuit and result.kl < 0.05
    assert auroc(result.scores, truth, list(result.scores)) > 0.9
    assert result.losses[-1] < result.losses[0]
    assert all(torch.equal(v, zm.model.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in zm.model.parameters()) and not zm.model.has_hooks()


def test_bad_options_are_refused(siit):
    zm, pair = siit
    for bad in ({"steps": 0}, {"lr": -1.0}, {"sparsity": float("nan")}, {"steps": 2.5}):
        with pytest.raises(ValueError, match="must be"):
            edge_pruning(zm.model, pair, **bad)
