"""The toy model of superposition: config validation, data statistics, determinism, loss."""

from __future__ import annotations

import pytest
import torch

from toylab.models.superposition import SuperpositionConfig, ToyModel, train_toy_model


def test_config_validation():
    cfg = SuperpositionConfig(n_instances=3, n_features=5, n_hidden=2, n_correlated_pairs=1)
    assert cfg.n_paired == 2
    with pytest.raises(ValueError, match="n_hidden must be a positive int"):
        SuperpositionConfig(n_instances=1, n_features=5, n_hidden=0)
    with pytest.raises(ValueError, match="n_instances"):
        SuperpositionConfig(n_instances=2.0, n_features=5, n_hidden=2)
    with pytest.raises(ValueError, match="need 6 features"):
        SuperpositionConfig(n_instances=1, n_features=5, n_hidden=2, n_correlated_pairs=2, n_anticorrelated_pairs=1)
    with pytest.raises(ValueError, match="non-negative"):
        SuperpositionConfig(n_instances=1, n_features=5, n_hidden=2, n_correlated_pairs=-1)


def test_model_argument_validation():
    cfg = SuperpositionConfig(n_instances=3, n_features=4, n_hidden=2)
    with pytest.raises(ValueError, match=r"feature_probability must lie in \[0, 1\]"):
        ToyModel(cfg, feature_probability=1.5)
    with pytest.raises(ValueError, match="importance"):
        ToyModel(cfg, importance=-1.0)
    with pytest.raises(ValueError, match="shape"):
        ToyModel(cfg, importance=torch.ones(5))
    square = SuperpositionConfig(n_instances=4, n_features=4, n_hidden=2)
    with pytest.raises(ValueError, match="ambiguous"):
        ToyModel(square, importance=torch.ones(4))
    anti = SuperpositionConfig(n_instances=1, n_features=2, n_hidden=1, n_anticorrelated_pairs=1)
    with pytest.raises(ValueError, match="<= 0.5"):
        ToyModel(anti, feature_probability=0.8)
    model = ToyModel(cfg)
    with pytest.raises(ValueError, match="lr_schedule"):
        train_toy_model(model, steps=1, lr_schedule="step")
    with pytest.raises(ValueError, match="steps"):
        train_toy_model(model, steps=0)


def test_buffers_and_shapes():
    cfg = SuperpositionConfig(n_instances=3, n_features=4, n_hidden=2)
    p = torch.tensor([1.0, 0.5, 0.1])
    imp = 0.9 ** torch.arange(4.0)
    model = ToyModel(cfg, feature_probability=p, importance=imp, seed=0)
    assert model.W.shape == (3, 2, 4) and model.b_final.shape == (3, 4)
    assert torch.equal(model.feature_probability, p[:, None].expand(3, 4))
    assert torch.equal(model.importance, imp[None].expand(3, 4))
    assert {n for n, _ in model.named_buffers()} == {"feature_probability", "importance"}
    x = model.generate_batch(7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 3, 4)
    assert model(x).shape == (7, 3, 4) and model.hidden(x).shape == (7, 3, 2)
    # forward is x' = ReLU(W^T W x + b), per instance
    W, b = model.W.detach(), torch.randn(3, 4)
    with torch.no_grad():
        model.b_final.copy_(b)
    want = torch.relu(torch.einsum("ihf,iho,bio->bif", W, W, x) + b)
    torch.testing.assert_close(model(x), want)
    relu_model = ToyModel(SuperpositionConfig(3, 4, 2, hidden_relu=True), seed=0)
    W = relu_model.W.detach()
    want = torch.relu(torch.einsum("ihf,bih->bif", W, torch.relu(torch.einsum("ihf,bif->bih", W, x))))
    torch.testing.assert_close(relu_model(x), want)


def test_generate_batch_statistics():
    cfg = SuperpositionConfig(n_instances=3, n_features=8, n_hidden=2, n_correlated_pairs=1, n_anticorrelated_pairs=1)
    p = torch.tensor([0.5, 0.2, 0.05])
    model = ToyModel(cfg, feature_probability=p, seed=0)
    x = model.generate_batch(40_000, torch.Generator().manual_seed(0))  # [batch, instance, feature]
    present = x > 0
    frac = present.float().mean(0)  # [instance, feature]
    torch.testing.assert_close(frac, p[:, None].expand(3, 8), atol=0.01, rtol=0.05)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    torch.testing.assert_close(x[present].mean(), torch.tensor(0.5), atol=0.01, rtol=0)
    # correlated pair 0-1: together or not at all; anticorrelated pair 2-3: never together
    assert torch.equal(present[..., 0], present[..., 1])
    assert not bool((present[..., 2] & present[..., 3]).any())
    # independent features co-occur with probability p^2
    both = (present[..., 4] & present[..., 5]).float().mean(0)
    torch.testing.assert_close(both, p**2, atol=0.01, rtol=0.1)
    # reproducible from the generator's seed, and the global RNG is untouched
    state = torch.get_rng_state()
    y = model.generate_batch(100, torch.Generator().manual_seed(1))
    assert torch.equal(y, model.generate_batch(100, torch.Generator().manual_seed(1)))
    assert torch.equal(state, torch.get_rng_state())


def test_loss_is_importance_weighted_sum_over_features_mean_over_batch():
    cfg = SuperpositionConfig(n_instances=2, n_features=3, n_hidden=1)
    model = ToyModel(cfg, importance=torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]))
    batch = torch.zeros(4, 2, 3)
    out = torch.ones(4, 2, 3)
    torch.testing.assert_close(model.loss_per_instance(out, batch), torch.tensor([6.0, 3.0]))


def test_training_is_deterministic_and_lowers_the_loss():
    cfg = SuperpositionConfig(n_instances=4, n_features=5, n_hidden=2)
    state = torch.get_rng_state()
    runs = []
    for _ in range(2):
        model = ToyModel(cfg, feature_probability=0.3, importance=0.9 ** torch.arange(5.0), seed=3)
        hist = train_toy_model(model, steps=200, batch_size=256, lr=1e-2, seed=7, log_every=50)
        runs.append((model.W.detach().clone(), hist))
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1].loss, runs[1][1].loss)
    assert runs[0][1].step.tolist() == [0, 50, 100, 150, 199]
    assert runs[0][1].loss.shape == (5, 4)
    assert bool((runs[0][1].loss[-1] < runs[0][1].loss[0]).all())
    assert torch.equal(state, torch.get_rng_state())
    other = ToyModel(cfg, feature_probability=0.1, seed=4)
    assert not torch.equal(other.W, ToyModel(cfg, feature_probability=0.1, seed=3).W)
    # lr schedules decay to zero
    hist = train_toy_model(ToyModel(cfg), steps=10, lr_schedule="cosine", log_every=1)
    assert hist.lr[0] == pytest.approx(1e-3) and hist.lr[-1] < 1e-4
