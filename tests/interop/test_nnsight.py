"""toylab.interop.nnsight: nnsight traces and patches toylab models by their hook names."""

import sys

import pytest
import torch

import toylab
from toylab.interop import MissingExtraError, to_nnsight


@pytest.fixture(scope="module")
def induction():
    return toylab.zoo.load("induction-2l")


def test_module_names_are_hook_names(nnsight, induction):
    lm = to_nnsight(induction)
    for name, point in induction.model.hook_points.items():
        assert lm.get(name)._module is point, name


def test_a_trace_reads_the_hooks_toylab_caches(nnsight, induction):
    lm = to_nnsight(induction)
    tokens = induction.task.sample(4, seed=0).tokens
    with torch.no_grad(), lm.trace(tokens):
        pattern = lm.blocks[0].attn.hook_pattern.output.save()  # [batch, head, query_pos, key_pos]
        z = lm.get("blocks.1.attn.hook_z").output.save()  # [batch, pos, head, d_head]
        logits = lm.output.save()
    ref_logits, cache = induction.model.run_with_cache(tokens)
    assert pattern.shape == (4, 4, tokens.shape[1], tokens.shape[1])
    assert torch.equal(pattern, cache["blocks.0.attn.hook_pattern"])
    assert torch.equal(z, cache["blocks.1.attn.hook_z"])
    assert torch.equal(logits, ref_logits)


def test_a_patch_in_nnsight_equals_toylabs_hook_intervention(nnsight, induction):
    """Patch L1H1's clean z into the corrupted run: nnsight and toylab's hooks give the same logits."""
    model, lm = induction.model, to_nnsight(induction)
    pair = induction.task.counterfactual(8, seed=0)
    head = 1
    with torch.no_grad(), lm.trace(pair.clean.tokens):
        clean_z = lm.blocks[1].attn.hook_z.output.save()
    with torch.no_grad(), lm.trace(pair.corrupted.tokens):
        lm.blocks[1].attn.hook_z.output[:, :, head] = clean_z[:, :, head]
        patched = lm.output.save()

    def patch(z, hook):  # z: [batch, pos, head, d_head]
        z = z.clone()
        z[:, :, head] = clean_z[:, :, head]
        return z

    with torch.no_grad(), model.hooks([("blocks.1.attn.hook_z", patch)]):
        ours = model(pair.corrupted.tokens)
    assert torch.equal(patched, ours)
    corrupted = model(pair.corrupted.tokens)
    assert (patched - corrupted).abs().max() > 1e-2  # the patch did something
    # ...and it is the induction head: most of the logit difference comes back.
    score = (toylab.tasks.logit_diff(patched, pair) - toylab.tasks.logit_diff(corrupted, pair)) / (
        toylab.tasks.logit_diff(model(pair.clean.tokens), pair) - toylab.tasks.logit_diff(corrupted, pair))
    assert score.item() > 0.1


def test_nnsight_leaves_the_model_without_hooks(nnsight, induction):
    lm = to_nnsight(induction)
    with torch.no_grad(), lm.trace(induction.task.sample(2, seed=0).tokens):
        lm.blocks[0].attn.hook_z.output[:] = 0
    assert not induction.model.has_hooks()
    tokens = induction.task.sample(2, seed=0).tokens
    assert torch.equal(induction.model(tokens), induction.model(tokens))


def test_a_missing_nnsight_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nnsight", None)
    with pytest.raises(MissingExtraError, match=r'"toylab\[nnsight\]"'):
        to_nnsight(toylab.zoo.load("induction-tiny"))
    with pytest.raises(TypeError, match="toylab Transformer"):
        to_nnsight(torch.nn.Linear(2, 2))
