"""The hook machinery: interventions, caches, names and their errors (on a small model)."""

import pytest
import torch

from toylab.hooks import UnknownNameError, act_name
from toylab.models import Transformer, TransformerConfig

BATCH, POS = 3, 7


def make() -> Transformer:
    cfg = TransformerConfig(n_layers=2, d_model=16, n_heads=4, d_head=8, d_vocab=11, n_ctx=9, d_mlp=24)
    return Transformer(cfg, seed=1)


def tokens() -> torch.Tensor:
    return torch.randint(0, 11, (BATCH, POS), generator=torch.Generator().manual_seed(0))


def test_run_with_cache_filters_names():
    model = make()
    _, cache = model.run_with_cache(tokens(), names=lambda n: n.endswith("hook_pattern"))
    assert list(cache) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    _, cache = model.run_with_cache(tokens(), names="blocks.0.hook_resid_post")
    assert list(cache) == ["blocks.0.hook_resid_post"]
    with pytest.raises(KeyError, match="not cached"):
        cache["blocks.1.hook_resid_post"]
    with pytest.raises(UnknownNameError, match="blocks.0.hook_resid_post"):
        cache["blocks.0.hook_resid_pst"]


def test_intervention_changes_output_and_leaves_no_hook_behind():
    model = make()
    toks = tokens()
    clean = model(toks)

    def zero_head_1(z, hook):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    with model.hooks([("blocks.0.attn.hook_z", zero_head_1)]):
        patched, cache = model.run_with_cache(toks, names="blocks.0.attn.hook_z")
        assert model.has_hooks()
    assert not torch.allclose(patched, clean)
    assert torch.all(cache["blocks.0.attn.hook_z"][:, :, 1] == 0)  # the cache records the patched value
    assert not model.has_hooks()
    assert torch.equal(model(toks), clean)


def test_hooks_are_removed_when_the_block_raises():
    model = make()
    with pytest.raises(RuntimeError, match="boom"):
        with model.hooks([("hook_embed", lambda x, hook: None)]):
            raise RuntimeError("boom")
    assert not model.has_hooks()
    # A bad name part-way through the list must not leave the earlier hooks attached.
    with pytest.raises(UnknownNameError):
        with model.hooks([("hook_embed", lambda x, hook: None), ("no_such_hook", lambda x, hook: None)]):
            pass
    assert not model.has_hooks()


def test_unknown_hook_name_lists_nearest_valid_names():
    model = make()
    with pytest.raises(UnknownNameError) as err:
        with model.hooks([("blocks.0.attn.hook_patern", lambda x, hook: None)]):
            pass
    message = str(err.value)
    assert "blocks.0.attn.hook_patern" in message
    assert "blocks.0.attn.hook_pattern" in message
    with pytest.raises(UnknownNameError, match="blocks.1.hook_resid_post"):
        model.run_with_cache(tokens(), names=["blocks.1.resid_post"])


def test_hook_returning_wrong_shape_is_a_clear_error():
    model = make()

    def bad(x, hook):
        return x[:, :, :2]

    with pytest.raises(ValueError, match="blocks.0.attn.hook_z.*must return None or a tensor of shape"):
        model.run_with_hooks(tokens(), [("blocks.0.attn.hook_z", bad)])
    assert not model.has_hooks()


def test_hook_layer_and_act_name():
    model = make()
    assert model.hook_points["blocks.1.attn.hook_q"].layer() == 1
    assert model.hook_points["hook_embed"].layer() is None
    assert act_name("pattern", 0) == "blocks.0.attn.hook_pattern"
    assert act_name("resid_post", 1) == "blocks.1.hook_resid_post"
    assert act_name("post", 0) == "blocks.0.mlp.hook_post"
    with pytest.raises(UnknownNameError, match="pattern"):
        act_name("patern", 0)
