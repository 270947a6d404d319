"""Interchange interventions on subspaces: IIA is high where the truth puts a variable, low at decoys."""

import pytest
import torch

from toylab import methods, zoo
from toylab.interventions import orthonormal, patch_subspace
from toylab.methods import DASConfig, Site
from toylab.sae import SAE, SAEConfig

DAS = DASConfig(k=8, steps=150, n_train=384, n_test=256)


@pytest.fixture(scope="module")
def zm():
    return zoo.load("factual-recall")


def test_das_finds_the_attribute_at_the_fact_store_and_not_at_decoys(zm):
    true_site = methods.variable_site(zm.truth, "attribute", zm.task.n_ctx)
    assert true_site == Site("blocks.0.hook_mlp_out", 2)
    found = methods.das(zm.model, zm.algorithm, "attribute", true_site, DAS)
    assert found.test_iia >= 0.95, str(found)
    # The attribute is decodable after the last layer at the subject (test_probes), but nothing
    # reads it there; and at the answer position it arrives only in layer 1.
    for decoy in (Site("blocks.1.hook_resid_post", 2), Site("blocks.0.hook_resid_post", 3)):
        result = methods.das(zm.model, zm.algorithm, "attribute", decoy, DAS)
        assert result.test_iia <= 0.3, str(result)


def test_each_declared_variable_has_high_iia_at_its_site(zm):
    for variable in zm.truth.variables:
        site = methods.variable_site(zm.truth, variable.name, zm.task.n_ctx)
        assert methods.interchange_accuracy(zm.model, zm.algorithm, variable.name, site).accuracy >= 0.95, site


def test_a_learned_subspace_separates_the_relation_from_the_subject(zm):
    """Swapping the whole residual at the subject moves the subject too; a 4-dim DAS subspace only the relation."""
    site = Site("blocks.0.hook_resid_mid", 2)
    whole = methods.interchange_accuracy(zm.model, zm.algorithm, "relation", site)
    assert whole.accuracy <= 0.3
    learned = methods.das(zm.model, zm.algorithm, "relation", site, DASConfig(k=4, steps=150, n_train=384))
    assert learned.test_iia >= 0.85, str(learned)


def test_probe_directions_carry_the_attribute_where_the_probe_is_right_to(zm):
    batch = zm.task.sample(1024, seed=3)
    labels = zm.task.variables(batch.tokens)["attribute"]
    config = methods.ProbeConfig(steps=100, lr=0.1)
    true_site, decoy = Site("blocks.0.hook_resid_post", 2), Site("blocks.1.hook_resid_post", 2)
    for site, low, high in ((true_site, 0.9, 1.0), (decoy, 0.0, 0.3)):
        probe = methods.train_probe(zm.model, batch.tokens, labels, site, config)
        assert probe.accuracy >= 0.95  # both decodable...
        basis = methods.probe_subspace(probe.probe)
        assert basis.shape[1] <= zm.task.n_attributes - 1
        iia = methods.interchange_accuracy(zm.model, zm.algorithm, "attribute", site, basis).accuracy
        assert low <= iia <= high, (site, iia)  # ...used at one only


def test_subspace_patch_algebra():
    g = torch.Generator().manual_seed(0)
    base, source = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    assert torch.equal(patch_subspace(base, source, None), source)
    assert torch.allclose(patch_subspace(base, source, torch.eye(6)), source, atol=1e-6)
    basis = orthonormal(torch.randn(6, 2, generator=g))
    patched = patch_subspace(base, source, basis)
    assert torch.allclose(patched @ basis, source @ basis, atol=1e-5)  # inside: the source's
    rest = torch.eye(6) - basis @ basis.T
    assert torch.allclose(patched @ rest, base @ rest, atol=1e-5)  # outside: the base's
    assert orthonormal(torch.ones(6, 3)).shape == (6, 1)  # rank 1


def test_sae_latents_give_a_subspace(zm):
    sae = SAE(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4))
    basis = methods.sae_subspace(sae, [3, 7])
    assert basis.shape == (32, 2) and torch.allclose(basis.T @ basis, torch.eye(2), atol=1e-5)
    result = methods.interchange_accuracy(zm.model, zm.algorithm, "attribute", Site("blocks.0.hook_mlp_out", 2), basis)
    assert result.dim == 2 and 0 <= result.accuracy <= 1
    with pytest.raises(ValueError, match="out of range"):
        methods.sae_subspace(sae, [64])


def test_interventions_remove_their_hooks_and_leave_the_model_alone(zm):
    tokens = zm.task.sample(16, seed=0).tokens
    before = {k: p.clone() for k, p in zm.model.state_dict().items()}
    with torch.no_grad():
        clean = zm.model(tokens)
    with pytest.raises(RuntimeError, match="boom"), \
            methods.subspace_interchange(zm.model, tokens.flip(0), Site("blocks.0.hook_resid_post", 2)):
        raise RuntimeError("boom")
    methods.das(zm.model, zm.algorithm, "attribute", Site("blocks.0.hook_resid_post", 2), DASConfig(k=2, steps=3))
    with torch.no_grad():
        assert torch.equal(zm.model(tokens), clean)
    assert all(torch.equal(before[k], p) for k, p in zm.model.state_dict().items())
    assert all(p.grad is None for p in zm.model.parameters())


def test_bad_requests_are_refused(zm):
    site = Site("blocks.0.hook_resid_post", 2)
    with pytest.raises(KeyError, match="no variable 'colour'"):
        methods.interchange_accuracy(zm.model, zm.algorithm, "colour", site)
    with pytest.raises(KeyError, match="declares no variable"):
        methods.variable_site(zm.truth, "colour", 4)
    with pytest.raises(ValueError, match="orthonormal"):
        methods.interchange_accuracy(zm.model, zm.algorithm, "attribute", site, torch.ones(32, 2))
    with pytest.raises(ValueError, match=r"shape \[d=32, k\]"):
        methods.interchange_accuracy(zm.model, zm.algorithm, "attribute", site, torch.eye(16))
    with pytest.raises(ValueError, match="exceeds"):
        methods.das(zm.model, zm.algorithm, "attribute", site, DASConfig(k=33, steps=1))
    with pytest.raises(ValueError, match="DASConfig.k"):
        DASConfig(k=0)
    with pytest.raises(ValueError, match="has no head axis"):
        methods.interchange_accuracy(zm.model, zm.algorithm, "attribute", Site("blocks.0.hook_mlp_out", 2, head=0))
