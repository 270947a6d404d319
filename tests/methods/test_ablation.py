from functools import cache

import pytest
import torch

import toylab.zoo
from toylab.hooks import UnknownNameError
from toylab.methods.ablation import ABLATIONS, ablate, ablation_scores
from toylab.models import Transformer, TransformerConfig
from toylab.tasks.base import logit_diff

INDUCTION = ["induction-constructed", "induction-siit", "induction-2l", "induction-tiny"]


@cache
def zoo(name):
    zm = toylab.zoo.load(name)
    return zm, zm.task.counterfactual(64, seed=0)


@pytest.mark.parametrize("name", ["induction-constructed", "induction-siit"])
@pytest.mark.parametrize("method", ABLATIONS)
def test_the_heads_that_matter_most_are_the_circuit(name, method):
    zm, pair = zoo(name)
    scores = ablation_scores(zm.model, pair, method=method)
    heads = set(zm.truth.heads)
    assert {h for h, _ in scores.top(len(heads))} == heads
    outside = [scores[h] for h in scores.components if h not in heads]
    # Each circuit head carries at least half the logit difference; nothing else a twentieth.
    assert min(scores[h] for h in heads) > 0.5 * scores.baseline
    assert max(abs(e) for e in outside) < 0.05 * scores.baseline


def test_the_constructed_decoys_do_exactly_nothing():
    zm, pair = zoo("induction-constructed")
    for method in ABLATIONS:
        scores = ablation_scores(zm.model, pair, components=["L0H0", "L1H0"], method=method)
        assert scores.scores.tolist() == pytest.approx([scores.baseline] * 2, abs=1e-5)


def test_resampling_the_induction_head_flips_the_answer():
    # Resampling from the corrupted run moves the answer to the corrupted one: the effect is
    # about twice the logit difference, where zeroing only removes it (uniform logits).
    zm, pair = zoo("induction-constructed")
    resample = ablation_scores(zm.model, pair, components=["L1H1"], method="resample")
    zero = ablation_scores(zm.model, pair, components=["L1H1"], method="zero")
    assert resample["L1H1"] == pytest.approx(2 * resample.baseline, rel=0.01)
    assert zero["L1H1"] == pytest.approx(zero.baseline, rel=0.01)


@pytest.mark.parametrize("name", ["induction-2l", "induction-tiny"])
def test_on_natural_models_every_head_matters_and_layer_1_heads_most(name):
    # Every head of these models is in the truth, so the top-k check above says nothing;
    # what holds: each head's resample effect is real, and an induction head leads.
    zm, pair = zoo(name)
    scores = ablation_scores(zm.model, pair)
    assert scores.effect.min() > 0.15 * scores.baseline
    assert zm.truth.nodes[scores.top(1)[0][0]] in ("induction", "previous-token")


def test_ablating_a_whole_hook_equals_ablating_every_head():
    zm, pair = zoo("induction-siit")
    model, tokens, ref = zm.model, pair.clean.tokens, pair.corrupted.tokens
    with torch.no_grad():
        with ablate(model, "blocks.1.attn.hook_z", "resample", ref):
            whole = model(tokens)
        with ablate(model, [f"L1H{h}" for h in range(4)], "resample", ref):
            heads = model(tokens)
        with ablate(model, "embed", "resample", ref):
            embed = model(tokens)
        corrupted = model(ref)
    assert torch.allclose(whole, heads, atol=1e-5)
    # The positional embedding is the same in both runs, so resampling the token embedding
    # is running the corrupted input.
    assert torch.allclose(embed, corrupted, atol=1e-4)


def test_mean_ablation_uses_the_reference_mean_per_position():
    zm, pair = zoo("induction-tiny")
    model, tokens = zm.model, pair.clean.tokens
    with torch.no_grad(), ablate(model, "L0H1", "mean", tokens):
        _, cache = model.run_with_cache(tokens[:3], names=["blocks.0.attn.hook_z"])
    _, ref = model.run_with_cache(tokens, names=["blocks.0.attn.hook_z"])
    z, mean = cache["blocks.0.attn.hook_z"], ref["blocks.0.attn.hook_z"].mean(0)  # [pos, head, d_head]
    assert torch.allclose(z[:, :, 1], mean[:, 1].expand(3, -1, -1))
    assert torch.allclose(z[:, :, 0], ref["blocks.0.attn.hook_z"][:3, :, 0])  # the other head untouched


def test_neurons_mlps_and_bias_free_models():
    cfg = TransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=7, n_ctx=5, d_mlp=16)
    model = Transformer(cfg, seed=0)
    tokens = torch.randint(0, 7, (4, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with ablate(model, ["MLP0N3", "MLP0N5"], "zero"):
            _, cache = model.run_with_cache(tokens, names=["blocks.0.mlp.hook_post"])
        with ablate(model, "MLP0", "zero"):
            _, out = model.run_with_cache(tokens, names=["blocks.0.hook_mlp_out"])
    post = cache["blocks.0.mlp.hook_post"]  # [batch, pos, d_mlp]
    assert (post[..., [3, 5]] == 0).all() and (post[..., 4] != 0).any()
    assert (out["blocks.0.hook_mlp_out"] == 0).all()


def test_hooks_are_removed_and_the_model_is_unchanged():
    zm, pair = zoo("induction-siit")
    model = zm.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clean = logit_diff(model(pair.clean.tokens), pair)
    with pytest.raises(RuntimeError, match="boom"), ablate(model, ["L0H2", "L1H1"], "zero"):
        raise RuntimeError("boom")
    ablation_scores(model, pair, method="mean")
    assert not model.has_hooks()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert logit_diff(model(pair.clean.tokens), pair) == clean


def test_bad_input_is_a_clear_error():
    zm, pair = zoo("induction-tiny")
    model, tokens = zm.model, pair.clean.tokens
    with pytest.raises(UnknownNameError, match="nearest valid names"), ablate(model, "L5H0"):
        pass
    with pytest.raises(UnknownNameError, match="blocks.0.attn.hook_z"), ablate(model, "blocks.0.attn.hook_zz"):
        pass
    with pytest.raises(UnknownNameError), ablate(model, "head7"):
        pass
    with pytest.raises(ValueError, match="unknown ablation method"), ablate(model, "L0H0", "gaussian"):
        pass
    with pytest.raises(ValueError, match="needs reference"), ablate(model, "L0H0", "resample"):
        pass
    fewer_rows = ablate(model, "L0H0", "resample", tokens[:8])
    with pytest.raises(ValueError, match="reference of the input's shape"), torch.no_grad(), fewer_rows:
        model(tokens)
    with pytest.raises(UnknownNameError, match="attention-only"):
        ablation_scores(model, pair, components=["MLP0"])
    with pytest.raises(ValueError, match="receiver"):
        ablation_scores(model, pair, components=["logits"])
    assert not model.has_hooks()
