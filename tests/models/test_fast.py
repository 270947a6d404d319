"""The hook-free forward equals the hooked one: the last-position training forward (loss and
gradients), and ``HookFree.resid_from`` resumed part-way (activations, logits, input deltas)."""

from __future__ import annotations

import pytest
import torch

from toylab.models import Transformer, TransformerConfig
from toylab.models.fast import HookFree, can_use_last_position, last_position_logits
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


# ---- HookFree.resid_from: the forward patching resumes part-way ---------------------------

SHAPES = {  # small random models: LayerNorm, bidirectional attention, each activation, depth
    "ln-bidirectional-gelu": {"normalization_type": "LN", "attention_dir": "bidirectional", "act_fn": "gelu"},
    "ln-causal-gelu_new": {"normalization_type": "LN", "act_fn": "gelu_new"},
    "no-ln-relu": {"act_fn": "relu"},
    "3-layer-attn-only": {"n_layers": 3, "d_mlp": None},
}


def _random_model(shape: str) -> tuple[Transformer, torch.Tensor]:
    kw = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32, "d_vocab": 10, "n_ctx": 8,
          "init_range": 0.3}
    model = Transformer(TransformerConfig(**{**kw, **SHAPES[shape]}), seed=1)
    with torch.no_grad():  # non-zero biases, LayerNorm gains off 1
        for name, param in model.named_parameters():
            if not name.rsplit(".", 1)[-1].startswith("W_"):
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())) * 0.1)
    tokens = torch.randint(0, 10, (3, 8), generator=torch.Generator().manual_seed(0))
    return model, tokens


@pytest.mark.parametrize("shape", SHAPES)
@torch.no_grad()
def test_resid_from_the_start_records_what_run_with_cache_records(shape):
    model, tokens = _random_model(shape)
    logits, cache = model.run_with_cache(tokens)
    forward, record = HookFree(model), {}
    final, first = forward.resid_from(forward.embed(tokens), record=record)
    assert first == 0
    torch.testing.assert_close(forward.unembed(final), logits, atol=1e-5, rtol=1e-5)
    assert record and all(name in cache for name in record)
    for name, value in record.items():
        torch.testing.assert_close(value, cache[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("shape", [s for s in SHAPES if "bidirectional" not in s])
@torch.no_grad()
def test_resumed_at_a_layer_and_position_on_the_past_keys_and_values(shape):
    model, tokens = _random_model(shape)
    logits, cache = model.run_with_cache(tokens)
    forward = HookFree(model)

    def past(start):  # the hooked run's activations before ``start``
        return lambda name: cache[name][:, :start]

    for layer, stage, stream in [(1, "pre", "blocks.1.hook_resid_pre"), (0, "mid", "blocks.0.hook_resid_mid"),
                                 (model.cfg.n_layers - 1, "mid", f"blocks.{model.cfg.n_layers - 1}.hook_resid_mid")]:
        for start in (0, 3, 7):
            final, first = forward.resid_from(cache[stream][:, start:], layer, stage, start, past=past(start))
            assert first == start
            torch.testing.assert_close(forward.unembed(final), logits[:, start:], atol=1e-5, rtol=1e-5)
    # first_query: the last block's query, MLP and output from there on only.
    final, first = forward.resid_from(cache["blocks.0.hook_resid_pre"][:, 2:], start=2, past=past(2),
                                      first_query=6)
    assert first == 6 and final.shape[1] == 2
    torch.testing.assert_close(forward.unembed(final), logits[:, 6:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@torch.no_grad()
def test_deltas_are_what_hooks_adding_to_the_inputs_give(shape):
    model, tokens = _random_model(shape)
    delta = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(2)) * 0.5  # [batch, pos, d_model]

    def add_to_head(head):
        def hook(x, hook):  # [batch, pos, head, d_model]
            x = x.clone()
            x[:, :, head] += delta
            return x
        return hook

    def add(x, hook):
        return x + delta

    last = model.cfg.n_layers - 1
    cases = [({(1, kind, 1): delta}, [(f"blocks.1.hook_{kind}_input", add_to_head(1))]) for kind in "qkv"]
    cases.append(({(model.cfg.n_layers, "logits"): delta}, [(f"blocks.{last}.hook_resid_post", add)]))
    if not model.cfg.attn_only:
        cases.append(({(0, "mlp"): delta}, [("blocks.0.hook_mlp_in", add)]))
    forward = HookFree(model)
    for deltas, hooks in cases:
        with model.hooks(hooks):
            expected = model(tokens)
        final, _ = forward.resid_from(forward.embed(tokens), deltas=deltas)
        assert (expected - model(tokens)).abs().max() > 1e-3, hooks  # the delta changes something
        torch.testing.assert_close(forward.unembed(final), expected, atol=1e-5, rtol=1e-5, msg=str(hooks))


def test_no_hook_fires_in_the_hook_free_forward():
    model, tokens = _random_model("ln-causal-gelu_new")
    fired = []
    with model.hooks([(None, lambda x, hook: fired.append(hook.name))]):
        forward = HookFree(model)
        forward.resid_from(forward.embed(tokens))
        last_position_logits(model, tokens)
        assert not fired
        model(tokens)
    assert set(fired) == set(model.hook_names())  # the model's own forward fires every hook
