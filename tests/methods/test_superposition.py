"""Analysis of toy models of superposition, and the paper's qualitative results (Elhage et al.
2022): the pentagon, the dense regime keeping the most important features, the phase change
of 2 features in 1 dimension, feature dimensionality, correlated / anticorrelated geometry."""

from __future__ import annotations

import math

import pytest
import torch

from toylab.methods.superposition import (
    DEDICATED,
    IGNORED,
    SUPERPOSED,
    adjacent_angles,
    dimensionality,
    feature_angles,
    feature_norms,
    feature_status,
    interference,
    interference_matrix,
    phase_diagram,
    reconstruction,
    regular_polygon,
)
from toylab.models.superposition import SuperpositionConfig, ToyModel, train_toy_model


def _polygon(k: int, n_hidden: int = 2) -> torch.Tensor:
    a = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return torch.stack([a.cos(), a.sin()])  # [hidden, feature]


def _train(cfg, p, importance, steps=1500, seed=0):
    model = ToyModel(cfg, feature_probability=p, importance=importance, seed=seed)
    hist = train_toy_model(model, steps=steps, batch_size=1024, lr=1e-2, lr_schedule="cosine", seed=seed, log_every=10)
    return model, hist.loss[-len(hist.loss) // 5 :].mean(0)  # [instance] late training loss


# ---- the metrics on hand-made weights ---------------------------------------------------


def test_metrics_on_known_geometries():
    W = torch.zeros(4, 2, 5, dtype=torch.float64)  # [instance, hidden, feature]
    W[0, :, :2] = torch.eye(2)  # 2 dedicated features, 3 ignored
    W[1, 0, 0], W[1, 0, 1] = 1.0, -1.0  # an antipodal pair, 3 ignored
    W[2] = _polygon(5)  # a pentagon
    W[3, :, :2] = torch.tensor([[1.0, 0.6], [0.0, 0.8]])  # two features at 53 degrees
    D = dimensionality(W)
    torch.testing.assert_close(D[0], torch.tensor([1.0, 1, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(D[1], torch.tensor([0.5, 0.5, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(D[2], torch.full((5,), 0.4, dtype=torch.float64))
    torch.testing.assert_close(feature_norms(W)[2], torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(interference(W)[1, :2], torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(interference(W)[3, :2], torch.full((2,), 0.36, dtype=torch.float64))
    assert interference_matrix(W)[1, 0, 1] == -1 and interference_matrix(W)[1, 0, 0] == 0

    fs = feature_status(W)
    assert fs.names(0) == ["dedicated", "dedicated", "ignored", "ignored", "ignored"]
    assert fs.names(1)[:2] == ["superposed", "superposed"]
    assert (fs.status[2] == SUPERPOSED).all() and (fs.status[3, :2] == SUPERPOSED).all()

    torch.testing.assert_close(feature_angles(W)[2], torch.arange(5, dtype=torch.float64) * 72, atol=1e-9, rtol=0)
    torch.testing.assert_close(adjacent_angles(W, 0), torch.tensor([90.0, 270.0], dtype=torch.float64))
    assert regular_polygon(W).tolist() == [0, 2, 5, 0]
    with pytest.raises(ValueError, match="n_hidden == 2"):
        feature_angles(torch.ones(1, 3, 4))
    with pytest.raises(ValueError, match=r"\[instance, hidden, feature\]"):
        dimensionality(torch.ones(3, 4))


def test_methods_accept_a_model_and_do_not_change_it():
    model = ToyModel(SuperpositionConfig(2, 5, 2), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.testing.assert_close(dimensionality(model), dimensionality(model.W))
    feature_status(model), regular_polygon(model), adjacent_angles(model, 0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- the paper's results, trained -------------------------------------------------------


def test_five_features_in_two_dimensions_form_a_pentagon_when_sparse():
    cfg = SuperpositionConfig(n_instances=4, n_features=5, n_hidden=2)
    model, _ = _train(cfg, p=0.03, importance=1.0)
    fs = feature_status(model)
    assert (fs.status == SUPERPOSED).all()  # all 5 features represented, with interference
    assert bool((fs.norms > 0.9).all())
    assert regular_polygon(model, tol_degrees=5).tolist() == [5, 5, 5, 5]
    for i in range(4):
        torch.testing.assert_close(adjacent_angles(model, i), torch.full((5,), 72.0, dtype=torch.float64), atol=3.0, rtol=0)
    torch.testing.assert_close(fs.dimensionality, torch.full((4, 5), 0.4, dtype=torch.float64), atol=0.02, rtol=0)


def test_reconstruction_measures_which_features_get_through():
    cfg = SuperpositionConfig(n_instances=2, n_features=5, n_hidden=2)
    model = ToyModel(cfg, seed=0)
    with torch.no_grad():
        model.W[0] = _polygon(5).float()  # all five, 72 degrees apart
        model.W[1] = 0.0
        model.W[1, :, :2] = torch.eye(2)  # two dedicated, three ignored
        model.b_final[0] = -0.4  # filters the interference cos(72) = 0.31 out
        model.b_final[1] = torch.tensor([0.0, 0.0, 0.5, 0.5, 0.5])  # ignored features output their mean
    gain = reconstruction(model)
    torch.testing.assert_close(gain[0], torch.full((5,), 0.6, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(gain[1], torch.tensor([1.0, 1, 0, 0, 0], dtype=torch.float64), atol=1e-6, rtol=0)
    assert reconstruction(model, value=2.0)[0, 0] == pytest.approx(0.8)  # (2 - 0.4) / 2
    with pytest.raises(ValueError, match="positive"):
        reconstruction(model, value=0.0)


def test_five_features_with_decaying_importance_keep_the_two_most_important_when_dense():
    cfg = SuperpositionConfig(n_instances=8, n_features=5, n_hidden=2)
    model, late_loss = _train(cfg, p=1.0, importance=0.9 ** torch.arange(5.0), steps=2000)
    best = int(late_loss.argmin())  # some restarts end in a worse local minimum
    fs = feature_status(model)
    assert fs.names(best) == ["dedicated", "dedicated", "ignored", "ignored", "ignored"]
    # D ~ 1; a little below, as the ignored features keep small weights (norm ~0.2) after 2000 steps
    torch.testing.assert_close(fs.dimensionality[best, :2], torch.ones(2, dtype=torch.float64), atol=0.1, rtol=0)
    gap = adjacent_angles(model, best).min()
    assert abs(float(gap) - 90.0) < 3.0  # the two kept features are orthogonal


def test_phase_change_of_two_features_in_one_dimension():
    pd = phase_diagram(n_density=5, n_importance=7, density_range=(1.0, 0.01), importance_range=(0.1, 10.0), seed=0)
    assert pd.status.shape == (7, 5, 2) and pd.W.shape == (7, 5, 1, 2)
    rel, dense, sparse = pd.relative_importance, 0, -1
    # dense: the more important feature gets the dimension, the other is ignored
    for r in range(7):
        if rel[r] < 0.7:
            assert pd.status[r, dense].tolist() == [DEDICATED, IGNORED]
        elif rel[r] > 1.4:
            assert pd.status[r, dense].tolist() == [IGNORED, DEDICATED]
    # sparse: both share the dimension as an antipodal pair (D = 1/2 each)
    mid = (rel > 0.3) & (rel < 3.5)
    assert (pd.status[mid, sparse] == SUPERPOSED).all()
    W = pd.W[mid, sparse, 0]  # [importance, feature]
    assert bool((W[:, 0] * W[:, 1] < 0).all())
    D = dimensionality(pd.W[mid, sparse])
    torch.testing.assert_close(D, torch.full_like(D, 0.5), atol=0.05, rtol=0)
    # so the second feature's status flips from ignored to superposed along each such row
    f1 = pd.feature1()
    for r in range(7):
        if 0.3 < rel[r] < 0.7:
            assert f1[r, 0] == IGNORED and f1[r, -1] == SUPERPOSED


def test_correlated_features_go_orthogonal_anticorrelated_go_antipodal():
    def cosines(model):
        unit = model.W.detach() / model.W.detach().norm(dim=1, keepdim=True)
        return torch.einsum("ihf,iho->ifo", unit, unit)  # [instance, feature, other]

    corr, late = _train(SuperpositionConfig(8, 4, 2, n_correlated_pairs=2), p=0.05, importance=1.0)
    cos = cosines(corr)[int(late.argmin())]
    assert abs(float(cos[0, 1])) < 0.2 and abs(float(cos[2, 3])) < 0.2

    anti, late = _train(SuperpositionConfig(8, 4, 2, n_anticorrelated_pairs=2), p=0.2, importance=1.0)
    cos = cosines(anti)[int(late.argmin())]
    assert float(cos[0, 1]) < -0.95 and float(cos[2, 3]) < -0.95


@pytest.mark.slow
def test_phase_diagram_has_its_dense_and_sparse_regimes():
    """A 12 x 12 diagram: the regimes of the default 20 x 20 one (which takes 30 s here;
    benchmarks/bench_superposition.py times it) at a third of the cost. Measured: 94% of the
    sparse, near-equal-importance cells superposed."""
    pd = phase_diagram(n_density=12, n_importance=12)
    f1 = pd.feature1()
    assert (f1[:, 0] != SUPERPOSED).all()  # dense: never superposed
    near_one = (pd.relative_importance > 0.3) & (pd.relative_importance < 3)
    assert (f1[near_one, -3:] == SUPERPOSED).float().mean() > 0.9  # sparse: superposed
