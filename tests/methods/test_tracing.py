"""Causal tracing localises the stored facts where the truth puts them."""

import pytest
import torch

from toylab import methods, zoo
from toylab.methods import TracingConfig
from toylab.methods.tracing import embedding_noise


@pytest.fixture(scope="module")
def zm():
    return zoo.load("factual-recall")


@pytest.mark.parametrize("corruption", ["noise", "resample"])
def test_tracing_peaks_at_the_fact_storing_mlp(zm, corruption):
    batch = zm.task.sample(256, seed=5)
    subject = zm.task.positions["subject"]
    source = zm.algorithm.sample_pairs(256, torch.Generator().manual_seed(5))[1].tokens
    result = methods.causal_trace(zm.model, batch, [subject], config=TracingConfig(corruption=corruption),
                                  source_tokens=source)
    assert result.p_clean >= 0.95 and result.p_corrupted <= 0.5
    fact_store = methods.variable_site(zm.truth, "attribute", zm.task.n_ctx)
    layer = int(fact_store.hook.split(".")[1])
    assert result.peak("mlp_out") == (layer, fact_store.pos)
    mlp = result.scores("mlp_out")
    assert mlp[layer, fact_store.pos] >= 0.8
    others = mlp.clone()
    others[layer, fact_store.pos] = 0
    assert others.max() <= 0.2  # the inert MLP1, and MLP0 elsewhere, restore nothing
    mover = methods.variable_site(zm.truth, "moved_attribute", zm.task.n_ctx)
    assert result.peak("attn_out") == (int(mover.hook.split(".")[1]), mover.pos)


def test_explicit_noise_gives_the_same_trace_as_the_seeded_draw(zm):
    batch = zm.task.sample(32, seed=0)
    noise = embedding_noise(zm.model, 32, 1, scale=3.0, seed=4)
    a = methods.causal_trace(zm.model, batch, [2], kinds=["mlp_out"], config=TracingConfig(seed=4))
    b = methods.causal_trace(zm.model, batch, [2], kinds=["mlp_out"], noise=noise)
    assert torch.equal(a.p_restored["mlp_out"], b.p_restored["mlp_out"]) and a.p_corrupted == b.p_corrupted
    # Restoring the whole residual stream at the subject before layer 0 undoes the corruption.
    full = methods.causal_trace(zm.model, batch, [2], kinds=["resid_pre"], noise=noise)
    assert full.scores("resid_pre")[0, 2] == pytest.approx(1.0, abs=1e-4)


def test_bad_requests_are_refused(zm):
    batch = zm.task.sample(8, seed=0)
    with pytest.raises(ValueError, match="corrupt_positions"):
        methods.causal_trace(zm.model, batch, [4])
    with pytest.raises(ValueError, match="kinds must be among"):
        methods.causal_trace(zm.model, batch, [2], kinds=["resid_mid"])
    with pytest.raises(ValueError, match="source_tokens"):
        methods.causal_trace(zm.model, batch, [2], config=TracingConfig(corruption="resample"))
    with pytest.raises(ValueError, match="noise must have shape"):
        methods.causal_trace(zm.model, batch, [2], noise=torch.zeros(8, 2, 32))
    with pytest.raises(ValueError, match="corruption"):
        TracingConfig(corruption="blur")
    with pytest.raises(KeyError, match="traced"):
        methods.causal_trace(zm.model, batch, [2], kinds=["mlp_out"]).scores("attn_out")
