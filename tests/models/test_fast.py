"""The last-position training forward equals the hooked forward: loss and gradients."""

from __future__ import annotations

import pytest
import torch

from toylab.models import Transformer, TransformerConfig
from toylab.models.fast import can_use_last_position, last_position_logits
from toylab.tasks import Brackets, Induction, ModularAddition, loss
from toylab.train import task_loss

MODADD = ModularAddition(p=53, train_frac=0.4, split_seed=0)


def _cfg(**kw) -> TransformerConfig:
    base = dict(n_layers=1, d_model=64, n_heads=2, d_head=32, d_mlp=256, act_fn="relu", d_vocab=MODADD.d_vocab,
                d_vocab_out=MODADD.d_vocab_out, n_ctx=MODADD.n_ctx, normalization_type=None)
    return TransformerConfig(**{**base, **kw})


CONFIGS = {
    "modadd-tiny": _cfg(),  # 1 layer, no LayerNorm: keys and values by vocabulary lookup
    "layernorm": _cfg(normalization_type="LN"),
    "two-layers-gelu": _cfg(n_layers=2, act_fn="gelu", normalization_type="LN"),
    "attn-only": _cfg(n_layers=2, d_mlp=None),
}


def _grads(model: Transformer, fn) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    value = fn()
    value.backward()
    return value.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", CONFIGS)
def test_last_position_loss_and_gradients_match_the_hooked_forward(name):
    model = Transformer(CONFIGS[name], seed=1)
    with torch.no_grad():  # non-zero biases and LayerNorm gains, so every term is exercised
        for param in model.parameters():
            if param.ndim == 1:
                param.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(param.numel()))
    batch = MODADD.train_batch(0, 0, 200)
    assert can_use_last_position(model, batch.scored)
    full, full_grads = _grads(model, lambda: loss(model(batch.tokens), batch))
    fast, fast_grads = _grads(model, lambda: task_loss(model, batch))
    assert fast == pytest.approx(full, abs=1e-5)
    for param, grad in full_grads.items():
        torch.testing.assert_close(fast_grads[param], grad, atol=1e-5, rtol=1e-4, msg=param)
    torch.testing.assert_close(last_position_logits(model, batch.tokens), model(batch.tokens)[:, -1],
                               atol=1e-5, rtol=1e-5)


def test_the_fast_path_is_used_only_when_the_loss_reads_the_last_position_alone():
    model = Transformer(_cfg(), seed=0)
    assert can_use_last_position(model, MODADD.train_batch(0, 0, None).scored)
    assert can_use_last_position(model, Brackets(length=8).train_batch(0, 0, 4).scored)
    assert not can_use_last_position(model, Induction(n_tokens=10, n_ctx=9).train_batch(0, 0, 4).scored)
    with model.hooks([("blocks.0.hook_resid_pre", lambda x, hook: None)]):
        assert not can_use_last_position(model, MODADD.train_batch(0, 0, None).scored)  # hooks must fire


def test_a_hook_attached_during_training_still_fires():
    model = Transformer(_cfg(), seed=0)
    seen = []
    batch = MODADD.train_batch(0, 0, 8)
    with model.hooks([("blocks.0.mlp.hook_post", lambda x, hook: seen.append(x.shape))]):
        task_loss(model, batch)
    assert seen == [(8, 3, 256)]
