from functools import cache

import pytest
import torch

import toylab.zoo
from toylab.hooks import UnknownNameError
from toylab.methods.lens import direct_logit_attribution, logit_lens
from toylab.models import Transformer, TransformerConfig
from toylab.tasks.base import (
    IGNORE,
    Batch,
    CounterfactualPair,
    accuracy,
    logit_diff,
    loss,
)

INDUCTION = ["induction-constructed", "induction-siit", "induction-2l", "induction-tiny"]


@cache
def zoo(name):
    zm = toylab.zoo.load(name)
    return zm, zm.task.counterfactual(64, seed=0)


def output_heads(truth):
    return {e.sender for e in truth.edges if e.receiver == "logits" and e.sender in truth.heads}


@pytest.mark.parametrize("name", INDUCTION)
def test_attributions_add_up_to_the_logit_difference(name):
    zm, pair = zoo(name)
    with torch.no_grad():
        logits = zm.model(pair.clean.tokens)
    dla = direct_logit_attribution(zm.model, pair)
    assert float(dla.total.sum()) + dla.offset == pytest.approx(float(logit_diff(logits, pair)), abs=1e-4)
    target = direct_logit_attribution(zm.model, pair.clean)
    mask = pair.clean.scored
    mean_target_logit = logits.gather(-1, pair.clean.targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask].mean()
    assert float(target.total.sum()) + target.offset == pytest.approx(float(mean_target_logit), abs=1e-4)


@pytest.mark.parametrize("name", INDUCTION)
def test_the_circuits_output_heads_carry_the_logit_difference(name):
    zm, pair = zoo(name)
    dla = direct_logit_attribution(zm.model, pair)
    outputs = output_heads(zm.truth)
    assert {c for c, _ in dla.top(len(outputs))} == outputs
    assert sum(dla[h] for h in outputs) > 0.95 * dla.metric
    others = [c for c in dla.components if c not in outputs]
    assert max(abs(dla[c]) for c in others) < 0.05 * dla.metric


def test_the_constructed_decoys_attribute_exactly_nothing():
    zm, pair = zoo("induction-constructed")
    dla = direct_logit_attribution(zm.model, pair)
    # L0H1 matters (through L1H1's key) but not directly; the decoys not at all.
    assert all(abs(dla[c]) < 1e-5 for c in ("L0H0", "L1H0", "L0H1"))
    assert dla["L1H1"] == pytest.approx(dla.metric, rel=1e-4)


def test_per_position_and_by_layer_are_consistent():
    zm, pair = zoo("induction-tiny")
    dla = direct_logit_attribution(zm.model, pair)
    clean, corrupt = pair.clean.targets, pair.corrupted.targets
    mask = (clean != IGNORE) & (corrupt != IGNORE) & (clean != corrupt)  # [batch, pos]
    count = mask.sum(0).float()  # [pos]
    assert dla.per_position[:, count == 0].isnan().all() and not dla.per_position[:, count > 0].isnan().any()
    weighted = (dla.per_position[:, count > 0] * count[count > 0]).sum(-1) / count.sum()
    assert torch.allclose(weighted, dla.total, atol=1e-5)
    rows = mask.sum(1).float()  # [batch]: each row's terms average its own scored positions
    assert torch.allclose((dla.per_row * rows).sum(-1) / rows.sum(), dla.total, atol=1e-5)
    assert float((dla.metric_per_row * rows).sum() / rows.sum()) == pytest.approx(dla.metric, rel=1e-5)
    layers = dla.by_layer()
    assert layers["L1"] == pytest.approx(dla["L1H0"] + dla["L1H1"])
    assert sum(layers.values()) == pytest.approx(float(dla.total.sum()), abs=1e-5)


def random_pair(model, batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    v, n = model.cfg.d_vocab, model.cfg.n_ctx
    tokens, other, a, b = (torch.randint(0, v, (batch, n), generator=g) for _ in range(4))
    a[:, 0] = IGNORE  # one unscored position
    return CounterfactualPair(Batch(tokens, a), Batch(other, b), "random")


def test_layernorm_mlps_and_biases_still_add_up():
    cfg = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=10, n_ctx=6, d_mlp=32,
                            normalization_type="LN")
    model = Transformer(cfg, seed=1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # biases and LN parameters away from their 0 / 1 init
        for name, param in model.named_parameters():
            if param.ndim == 1:
                param.add_(0.3 * torch.randn(param.shape, generator=g))
    pair = random_pair(model)
    with torch.no_grad():
        logits = model(pair.clean.tokens)
    dla = direct_logit_attribution(model, pair)
    assert dla.components[-3:] == ["MLP0", "MLP1", "bias"]
    assert float(dla.total.sum()) + dla.offset == pytest.approx(float(logit_diff(logits, pair)), abs=1e-4)
    assert dla.offset != 0  # b_U and ln_final.b are not any component's
    lens = logit_lens(model, pair.clean)
    assert lens.stages == ["resid_pre 0", "resid_mid 0", "resid_pre 1", "resid_mid 1", "resid_post 1"]
    assert float(lens.loss[-1]) == pytest.approx(float(loss(logits, pair.clean)), abs=1e-5)


@pytest.mark.parametrize("name", INDUCTION)
def test_logit_lens_predicts_only_after_the_induction_layer(name):
    zm, _ = zoo(name)
    batch = zm.task.sample(64, seed=0)
    lens = logit_lens(zm.model, batch)
    assert lens.stages == ["resid_pre 0", "resid_pre 1", "resid_post 1"]
    with torch.no_grad():
        logits = zm.model(batch.tokens)
    # The last stage is the model itself; before layer 1 nothing has looked back a segment.
    assert float(lens.accuracy[-1]) == pytest.approx(float(accuracy(logits, batch)))
    assert lens["resid_post 1"]["accuracy"] > 0.95
    assert lens["blocks.1.hook_resid_pre"]["accuracy"] < 0.25
    assert float(lens.loss[-1]) < 0.1 < float(lens.loss[:-1].min())
    scored = batch.scored.any(0)  # [pos]
    assert lens.position_accuracy[:, ~scored].isnan().all()
    assert not lens.position_logprob[:, scored].isnan().any()
    assert (lens.position_logprob[-1, scored] > lens.position_logprob[1, scored]).all()


def test_bad_input_is_a_clear_error():
    zm, pair = zoo("induction-tiny")
    with pytest.raises(TypeError, match="CounterfactualPair or a Batch"):
        direct_logit_attribution(zm.model, pair.clean.tokens)
    same = CounterfactualPair(pair.clean, pair.clean, "nothing changed")
    with pytest.raises(ValueError, match="no position is scored"):
        direct_logit_attribution(zm.model, same)
    unscored = Batch(pair.clean.tokens, torch.full_like(pair.clean.targets, IGNORE))
    with pytest.raises(ValueError, match="no scored position"):
        logit_lens(zm.model, unscored)
    dla = direct_logit_attribution(zm.model, pair)
    with pytest.raises(UnknownNameError, match="L1H1"):
        dla["L1H7"]
    with pytest.raises(UnknownNameError):
        logit_lens(zm.model, pair.clean)["resid_pre 7"]
