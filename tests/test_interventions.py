import pytest
import torch

from toylab.models import Transformer, TransformerConfig
from toylab.truth import Edge
from toylab import components as comp
from toylab.interventions import (
    ablated,
    ablated_logits,
    edges_without,
    interchanged,
    position_mask,
)


@pytest.fixture(scope="module", params=[None, "LN"])
def model(request):
    cfg = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=9, n_ctx=6, d_mlp=24,
                            normalization_type=request.param)
    return Transformer(cfg, seed=3)


def tokens(seed):
    return torch.randint(0, 9, (5, 6), generator=torch.Generator().manual_seed(seed))


def test_keeping_everything_or_nothing_gives_the_clean_or_corrupted_run(model):
    clean, corrupt = tokens(0), tokens(1)
    with torch.no_grad():
        assert torch.allclose(ablated_logits(model, clean, corrupt, comp.edges(model.cfg)), model(clean), atol=1e-5)
        assert torch.allclose(ablated_logits(model, clean, corrupt, []), model(corrupt), atol=1e-5)
    assert not model.has_hooks()


def test_removing_a_nodes_edges_equals_patching_its_output(model):
    clean, corrupt = tokens(0), tokens(1)
    _, cache = model.run_with_cache(corrupt)

    def patch(x, hook):
        x = x.clone()
        x[:, :, 1] = cache[hook.name][:, :, 1]
        return x

    with torch.no_grad():
        expected = model.run_with_hooks(clean, [("blocks.0.attn.hook_result", patch)])
    got = ablated_logits(model, clean, corrupt, edges_without(model.cfg, ["L0H1"]))
    assert torch.allclose(got, expected, atol=1e-5)


def test_one_edge_changes_only_what_its_receiver_reads(model):
    """Ablating (L0H0 -> L1H1, k) equals a naive patch of L1H1's key input alone."""
    clean, corrupt = tokens(0), tokens(1)
    _, c_cache = model.run_with_cache(clean)
    _, x_cache = model.run_with_cache(corrupt)
    delta = x_cache["blocks.0.attn.hook_result"][:, :, 0] - c_cache["blocks.0.attn.hook_result"][:, :, 0]

    def patch(x, hook):
        x = x.clone()
        x[:, :, 1] += delta
        return x

    with torch.no_grad():
        expected = model.run_with_hooks(clean, [("blocks.1.hook_k_input", patch)])
    keep = set(comp.edges(model.cfg)) - {Edge("L0H0", "L1H1", "k")}
    assert torch.allclose(ablated_logits(model, clean, corrupt, keep), expected, atol=1e-5)
    assert not torch.allclose(expected, model(clean), atol=1e-4)  # the edge did matter


def test_head_level_edges_stand_for_their_q_k_v_edges(model):
    clean, corrupt = tokens(0), tokens(1)
    keep_qkv = set(comp.edges(model.cfg, "qkv"))
    keep_head = set(comp.edges(model.cfg, "head"))
    assert torch.allclose(ablated_logits(model, clean, corrupt, keep_head),
                          ablated_logits(model, clean, corrupt, keep_qkv), atol=1e-6)


def test_neuron_ablation_and_bad_edges(model):
    clean, corrupt = tokens(0), tokens(1)
    everything = comp.edges(model.cfg)
    all_neurons = {0: list(range(24)), 1: list(range(24))}
    with torch.no_grad():
        assert torch.allclose(ablated_logits(model, clean, corrupt, everything, all_neurons), model(clean), atol=1e-5)
    fewer = ablated_logits(model, clean, corrupt, everything, {1: list(range(12))})
    assert not torch.allclose(fewer, model(clean), atol=1e-4)
    with pytest.raises(ValueError, match="does not exist"):
        with ablated(model, corrupt, [("L1H0", "L0H0", "q")]):
            pass
    assert not model.has_hooks()


def test_interchange_patches_only_the_named_components_and_positions(model):
    base, source = tokens(0), tokens(1)
    _, s_cache = model.run_with_cache(source)
    with torch.no_grad(), interchanged(model, source, ["L1H1"], "last"):
        _, cache = model.run_with_cache(base)
    z = cache["blocks.1.attn.hook_z"]
    assert torch.equal(z[:, -1, 1], s_cache["blocks.1.attn.hook_z"][:, -1, 1])
    _, b_cache = model.run_with_cache(base)
    assert torch.equal(z[:, :-1], b_cache["blocks.1.attn.hook_z"][:, :-1])
    assert torch.equal(z[:, -1, 0], b_cache["blocks.1.attn.hook_z"][:, -1, 0])
    assert position_mask("0,2", 4).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="positions"):
        position_mask("first", 4)
    with pytest.raises(ValueError, match="only heads, MLPs and neurons"):
        with interchanged(model, source, ["embed"]):
            pass


def test_a_batch_of_ablations_gives_each_row_what_it_would_get_alone():
    from toylab import components as comp
    from toylab import zoo
    from toylab.interventions import ablated_logits, ablated_logits_batch

    zm = zoo.load("brackets-siit")  # MLPs and heads: every kind of receiver
    pair = zm.task.counterfactual(16, 7)
    everything = set(comp.edges(zm.model.cfg))
    keeps = [everything, set(), set(zm.truth.edges), everything - {zm.truth.edges[0]}, set(zm.truth.edges[:2])]
    batched = ablated_logits_batch(zm.model, pair.clean.tokens, pair.corrupted.tokens, keeps, rows=32)  # 2 a forward
    assert batched.shape[:2] == (len(keeps), 16)
    for keep, logits in zip(keeps, batched):
        alone = ablated_logits(zm.model, pair.clean.tokens, pair.corrupted.tokens, keep)
        assert torch.allclose(logits, alone, atol=1e-5)
