"""SAE module, trainer and synthetic data: shapes, constraints, determinism, recovery."""


import pytest
import torch

from toylab.models import Transformer, TransformerConfig
from toylab.sae import (
    SAE,
    SAEConfig,
    SyntheticFeatures,
    mmcs,
    model_activations,
    resample_dead_latents,
    score_sae,
    train_sae,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("arch,extra", [("relu", {}), ("topk", {"k": 3}), ("jumprelu", {})])
def test_parameter_names_and_shapes(arch, extra):
    sae = SAE(SAEConfig(d_in=8, d_sae=20, architecture=arch, **extra))
    shapes = {n: tuple(p.shape) for n, p in sae.named_parameters()}
    assert shapes["W_enc"] == (8, 20) and shapes["b_enc"] == (20,)
    assert shapes["W_dec"] == (20, 8) and shapes["b_dec"] == (8,)
    assert ("log_threshold" in shapes) == (arch == "jumprelu")
    x = torch.randn(5, 8, generator=gen(0))
    x_hat, z = sae(x)
    assert x_hat.shape == (5, 8) and z.shape == (5, 20) and (z >= 0).all()
    assert torch.allclose(sae.decode(sae.encode(x)), x_hat)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(20), atol=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="k"):
        SAEConfig(d_in=4, d_sae=8, architecture="topk")
    with pytest.raises(ValueError, match="architecture"):
        SAEConfig(d_in=4, d_sae=8, architecture="gated")
    with pytest.raises(ValueError, match="d_sae"):
        SAEConfig(d_in=4, d_sae=0, architecture="relu")
    with pytest.raises(ValueError, match="only used by topk"):
        SAEConfig(d_in=4, d_sae=8, architecture="relu", k=2)
    with pytest.raises(ValueError, match="feature_probability"):
        SyntheticFeatures(d_in=4, n_features=8, feature_probability=0.0)
    with pytest.raises(ValueError, match="d_in=4"):
        SAE(SAEConfig(d_in=4, d_sae=8, architecture="relu")).encode(torch.zeros(2, 5))


def test_topk_exactly_k_active():
    sae = SAE(SAEConfig(d_in=16, d_sae=64, architecture="topk", k=5))
    x = torch.randn(200, 16, generator=gen(1))
    _, z = sae(x)
    assert ((z > 0).sum(-1) == 5).all()


def test_synthetic_features():
    data = SyntheticFeatures(d_in=16, n_features=64, feature_probability=0.1, seed=3)
    assert data.features.shape == (64, 16)
    assert torch.allclose(data.features.norm(dim=-1), torch.ones(64), atol=1e-5)
    x, c = data.sample(4000, gen(0))
    assert x.shape == (4000, 16) and c.shape == (4000, 64) and (c >= 0).all()
    assert torch.allclose(x, c @ data.features, atol=1e-5)
    assert abs((c > 0).float().mean().item() - 0.1) < 0.01
    x2, c2 = data.sample(4000, gen(0))
    assert torch.equal(x, x2) and torch.equal(c, c2)
    assert torch.equal(SyntheticFeatures(d_in=16, n_features=64, seed=3).features, data.features)
    # correlated groups: same marginal, members co-occur far more often
    grouped = SyntheticFeatures(d_in=16, n_features=64, feature_probability=0.1, group_size=4,
                                group_correlation=0.9, magnitude="exponential", seed=3)
    _, cg = grouped.sample(4000, gen(0))
    pres = (cg > 0).float()
    assert abs(pres.mean().item() - 0.1) < 0.01
    joint = (pres[:, 0] * pres[:, 1]).mean().item()
    assert joint > 0.05  # independent would give ~0.01


def test_model_activations():
    model = Transformer(TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=7, n_ctx=6), seed=0)
    tokens = torch.randint(0, 7, (3, 6), generator=gen(0))
    acts = model_activations(model, tokens, "blocks.0.hook_resid_post")
    assert acts.shape == (18, 16)
    last = model_activations(model, tokens, "blocks.0.hook_resid_post", positions=-1)
    assert last.shape == (3, 16) and torch.allclose(last, acts.view(3, 6, 16)[:, -1])
    z = model_activations(model, tokens, "blocks.0.attn.hook_z", positions=[0, 2])
    assert z.shape == (6, 16)


def _train(arch="topk", steps=150, seed=0, **extra):
    data = SyntheticFeatures(d_in=16, n_features=32, feature_probability=0.05, seed=0)
    extra = extra or ({"k": 3} if arch == "topk" else {})
    sae = SAE(SAEConfig(d_in=16, d_sae=64, architecture=arch, **extra))
    history = train_sae(sae, data.sample, steps=steps, batch_size=128, lr=3e-3, seed=seed, resample_every=50)
    return sae, history


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
def test_training_keeps_unit_decoder_and_lowers_loss(arch):
    sae, history = _train(arch)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(64), atol=1e-5)
    assert history.steps == 150 and len(history.mse) == 150
    assert sum(history.mse[-20:]) < 0.5 * sum(history.mse[:20])


def test_training_is_deterministic():
    a, ha = _train("jumprelu")
    b, hb = _train("jumprelu")
    assert ha.loss == hb.loss and ha.resampled == hb.resampled
    for name, p in a.named_parameters():
        assert torch.equal(p, dict(b.named_parameters())[name]), name
    c, hc = _train("jumprelu", seed=1)
    assert hc.loss != ha.loss


def test_train_on_activation_tensor_and_callback_stop():
    data = SyntheticFeatures(d_in=8, n_features=16, seed=0)
    x, _ = data.sample(512, gen(0))
    x_before = x.clone()
    sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture="relu"))
    h = train_sae(sae, x, steps=100, batch_size=32, seed=0, callback=lambda step, s: step >= 20, callback_every=10)
    assert h.steps == 20 and h.stopped_early
    assert torch.equal(x, x_before)


def test_resampling_revives_dead_latents():
    data = SyntheticFeatures(d_in=16, n_features=32, feature_probability=0.05, seed=0)
    sae = SAE(SAEConfig(d_in=16, d_sae=32, architecture="relu"))
    with torch.no_grad():  # kill half the latents: they can never fire
        sae.b_enc[:16] = -100.0
    x, c = data.sample(2000, gen(5))
    _, z = sae(x)
    assert not (z[:, :16] > 0).any()
    dead = ~(z > 0).any(0)
    n = resample_dead_latents(sae, dead, x, gen(0))
    assert n == int(dead.sum()) >= 16
    _, z = sae(x)
    assert (z[:, :16] > 0).any(0).all()
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(32), atol=1e-5)
    # through the trainer: resampling events are recorded and nothing stays dead
    sae = SAE(SAEConfig(d_in=16, d_sae=32, architecture="relu"))
    with torch.no_grad():
        sae.b_enc[:16] = -100.0
    h = train_sae(sae, data.sample, steps=100, batch_size=128, seed=0, resample_every=50)
    assert h.resampled[0][1] >= 16
    assert score_sae(sae, data.features, x, c).dead_fraction < 0.25


def test_sae_recovers_dictionary():
    """MMCS >= 0.99 on the synthetic dictionary (benchmarks/bench_sae.py times it)."""
    data = SyntheticFeatures(d_in=32, n_features=128, feature_probability=0.03, seed=0)
    sae = SAE(SAEConfig(d_in=32, d_sae=256, architecture="topk", k=4))
    reached = {}

    def check(step, s):
        if mmcs(data.features, s.W_dec.detach()) >= 0.99:
            reached["step"] = step
            return True
        return False

    train_sae(sae, data.sample, steps=3000, batch_size=256, lr=3e-3, seed=0, resample_every=500,
              callback=check, callback_every=50)
    assert "step" in reached
    x, c = data.sample(4096, gen(99))
    scores = score_sae(sae, data.features, x, c)
    assert scores.mmcs >= 0.99 and scores.uniqueness >= 0.95
    assert abs(scores.l0 - 4) < 0.5


def test_an_untrained_sae_does_not_start_on_the_dictionary_of_the_same_seed():
    """Regression: the dictionary and the SAE's decoder were both randn from the same seed, so an
    untrained SAE scored MMCS 1.0 against SyntheticFeatures(seed=0)."""
    data = SyntheticFeatures(d_in=32, n_features=128, seed=0)
    sae = SAE(SAEConfig(d_in=32, d_sae=256, architecture="topk", k=4, seed=0))
    assert mmcs(data.features, sae.W_dec.detach()) < 0.8
