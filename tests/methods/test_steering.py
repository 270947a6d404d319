"""Steering: the intervention itself, the algorithm's exact grading, and direction sources that differ."""

import pytest
import torch

from toylab import zoo
from toylab.interventions import steered
from toylab.methods.interchange import Site
from toylab.methods.steering import (
    Steer,
    brackets_balance_target,
    evaluate_steer,
    factual_relation_target,
    fit_steer,
    modadd_shift_target,
    score_steer,
    steer_and_score,
    steering_targets,
)
from toylab.models import Transformer, TransformerConfig
from toylab.tasks.brackets import Brackets, BracketsAlgorithm
from toylab.tasks.factual_recall import FactualRecall, FactualRecallAlgorithm
from toylab.tasks.modular_addition import ModularAddition, ModularAdditionAlgorithm


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Transformer(TransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16, d_vocab=5,
                                         d_vocab_out=5, n_ctx=4)).eval()


@pytest.fixture(scope="module")
def recall():
    return zoo.load("factual-recall")


def _resid(model, tokens, hook):
    _, cache = model.run_with_cache(tokens, names=[hook])
    return cache[hook]


def test_steered_adds_exactly_at_the_positions_and_comes_off(tiny):
    tokens = torch.randint(5, (3, 4))
    hook = "blocks.0.hook_resid_mid"
    before = _resid(tiny, tokens, hook)
    v = torch.randn(8)
    with steered(tiny, hook, v, alpha=2.0, positions="1,3"):
        after = _resid(tiny, tokens, "blocks.0.hook_mlp_in")
    delta = after - before
    assert torch.allclose(delta[:, [1, 3]], 2.0 * v.expand(3, 2, 8), atol=1e-5)
    assert delta[:, [0, 2]].abs().max() < 1e-6
    assert torch.equal(_resid(tiny, tokens, hook), before)  # the hook came off
    with pytest.raises(RuntimeError), steered(tiny, hook, v):
        raise RuntimeError("interrupted")
    assert torch.equal(_resid(tiny, tokens, hook), before)  # ...even after an exception


def test_set_mode_sets_the_coordinates_in_the_basis_and_leaves_the_rest(tiny):
    tokens = torch.randint(5, (3, 4))
    hook = "blocks.0.hook_resid_mid"
    before = _resid(tiny, tokens, hook)
    basis = torch.linalg.qr(torch.randn(8, 3))[0]  # [d, k]
    target = torch.randn(3, 8)  # one per prompt
    with steered(tiny, hook, target, positions="last", mode="set", basis=basis):
        after = _resid(tiny, tokens, "blocks.0.hook_mlp_in")
    last = after[:, -1]
    assert torch.allclose(last @ basis, target @ basis, atol=1e-5)  # coordinates in the span: the target's
    outside = torch.eye(8) - basis @ basis.T
    assert torch.allclose(last @ outside, before[:, -1] @ outside, atol=1e-5)  # the rest: untouched
    with steered(tiny, hook, target, positions="last", mode="set", alpha=0.5):  # whole vector, half way
        half = _resid(tiny, tokens, "blocks.0.hook_mlp_in")[:, -1]
    assert torch.allclose(half, (before[:, -1] + target) / 2, atol=1e-5)


def test_steered_per_head_hook(tiny):
    tokens = torch.randint(5, (2, 4))
    before = _resid(tiny, tokens, "blocks.0.attn.hook_z")
    with steered(tiny, "blocks.0.attn.hook_z", torch.ones(4), head=1):
        steered_z = _resid(tiny, tokens, "blocks.0.attn.hook_z")
    with steered(tiny, "blocks.0.attn.hook_z", torch.ones(4), head=1):
        result = _resid(tiny, tokens, "blocks.0.hook_attn_out")
    W_O = tiny.blocks[0].attn.W_O.detach()  # [head, d_head, d_model]
    expected = _resid(tiny, tokens, "blocks.0.hook_attn_out") + torch.ones(4) @ W_O[1]
    assert torch.allclose(result, expected, atol=1e-5)
    assert torch.allclose(steered_z[:, :, 1], before[:, :, 1] + 1, atol=1e-6)
    assert torch.equal(steered_z[:, :, 0], before[:, :, 0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(hook="blocks.0.hook_resid_mdi", vector=torch.ones(8)), "unknown hook name"),
    (dict(hook="blocks.0.hook_resid_mid", vector=torch.ones(7)), "width 7 but blocks.0.hook_resid_mid has width 8"),
    (dict(hook="blocks.0.attn.hook_z", vector=torch.ones(4)), "give head=h"),
    (dict(hook="blocks.0.hook_resid_mid", vector=torch.ones(8), head=0), "leave head=None"),
    (dict(hook="blocks.0.hook_resid_mid", vector=torch.ones(8), mode="replace"), "mode must be one of"),
    (dict(hook="blocks.0.hook_resid_mid", vector=torch.ones(8), basis=torch.eye(8)), "mode='set'"),
    (dict(hook="blocks.0.hook_resid_mid", vector=torch.ones(2, 8)), "2 steering vectors for a batch of 3"),
])
def test_steered_bad_input(tiny, kwargs, message):
    with pytest.raises((ValueError, KeyError), match=message), steered(tiny, **kwargs):
        tiny(torch.zeros(3, 4, dtype=torch.long))


def test_assign_matches_intervene_and_checks_the_range():
    task = FactualRecall()
    alg = FactualRecallAlgorithm(task)
    base, source = alg.sample_pairs(64, torch.Generator().manual_seed(0))
    r = task.variables(source.tokens)["relation"]
    assert torch.equal(alg.assign(base, "relation", r), alg.intervene(base, source, "relation"))
    with pytest.raises(ValueError, match=r"relation takes integer values in \[0, 4\)"):
        alg.assign(base, "relation", torch.full((64,), 4))
    brackets = Brackets()
    balg = BracketsAlgorithm(brackets)
    b = brackets.sample(64, 0)
    closed = balg.assign(b, "balance", torch.zeros(64, dtype=torch.long),
                         positions=torch.arange(brackets.n_ctx) == brackets.n_ctx - 1)
    v = brackets.variables(b.tokens)
    assert torch.equal(closed[:, -1], (~v["negative"][:, :-1].any(-1)).long())  # balanced iff never negative before
    with pytest.raises(ValueError, match="balance takes integer values"):
        balg.assign(b, "balance", torch.full((64,), 99))
    modadd = ModularAddition(p=13, train_frac=0.5)
    m = modadd.sample(8, 0)
    assert torch.equal(ModularAdditionAlgorithm(modadd).assign(m, "sum", torch.arange(8))[:, -1], torch.arange(8))
    with pytest.raises(ValueError, match=r"sum takes integer values in \[0, 13\)"):
        ModularAdditionAlgorithm(modadd).assign(m, "sum", torch.full((8,), 13))


def test_target_bad_input():
    with pytest.raises(ValueError, match=r"relation must be an int in \[0, 4\)"):
        factual_relation_target(FactualRecall(), relation=9)
    with pytest.raises(ValueError, match="balance must be an int in"):
        brackets_balance_target(Brackets(), balance=99)
    with pytest.raises(ValueError, match="shift must be non-zero"):
        modadd_shift_target(ModularAddition(p=13, train_frac=0.5), shift=0)
    with pytest.raises(ValueError, match="no steering targets are defined on"):
        steering_targets(object())


def test_the_grading_is_exact_and_can_fail(recall):
    """The truth's own steer succeeds; a random direction at the same strength does not; the
    grading tells diff-in-means from the ceiling (the AxBench question has an answer here)."""
    target = steering_targets(recall.task, recall.truth)["relation := r1"]
    truth = steer_and_score(recall.model, target, "truth", n_fit=512, n=256)
    assert truth.held_out.success >= 0.95 and truth.held_out.preservation >= 0.95, truth
    assert truth.held_out.n_changed > 100 and truth.held_out.n_unchanged > 20
    means = steer_and_score(recall.model, target, "diff-in-means", n_fit=512, n=256)
    assert means.held_out.success < truth.held_out.success - 0.1, (means, truth)
    fitted = fit_steer(recall.model, target, "diff-in-means", n=512)
    directions = torch.nn.functional.normalize(torch.randn(4, recall.model.cfg.d_model,
                                                           generator=torch.Generator().manual_seed(0)), dim=-1)
    random = Steer("random", target.site, "add", directions, fitted.scale)
    result = evaluate_steer(recall.model, target, random, n=256)
    assert result.held_out.success < 0.3, result
    # alpha 0 changes nothing: the changed prompts keep their old answers
    zero = score_steer(recall.model, target, fitted, target.sample(256, 7), 0.0)
    assert zero.success < 0.02 and zero.preservation > 0.98 and zero.kl < 1e-9


def test_fit_steer_bad_input(recall):
    target = steering_targets(recall.task)["relation := r1"]
    with pytest.raises(ValueError, match="source must be one of"):
        fit_steer(recall.model, target, "pca")
    with pytest.raises(ValueError, match="no truth steer"):
        fit_steer(recall.model, target, "truth", n=64)
    bad = factual_relation_target(recall.task, 1)
    import dataclasses
    with pytest.raises(KeyError, match="unknown hook name"):
        fit_steer(recall.model, dataclasses.replace(bad, site=Site("blocks.0.hook_resid_mdi", 2)), "probe", n=64)
