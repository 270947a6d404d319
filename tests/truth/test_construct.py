"""The hand-constructed induction transformer: exhaustive correctness, roles, decoys, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from toylab.models import Transformer
from toylab.tasks import Induction, ModularAddition, accuracy, loss
from toylab.tasks.base import IGNORE
from toylab.truth.construct import (
    DECOY_HEADS,
    INDUCTION_HEAD,
    PREVIOUS_TOKEN_HEAD,
    check_against_algorithm,
    construct_induction,
    count_inputs,
    enumerate_inputs,
    induction_targets,
    layout_for,
)

SMALL = Induction(n_tokens=6, n_ctx=9, min_seg_len=2)  # 1800 inputs
BIG = Induction(n_tokens=24, n_ctx=16, min_seg_len=3)


@pytest.fixture(scope="module")
def small_model() -> Transformer:
    return construct_induction(SMALL)


@pytest.fixture(scope="module")
def big_model() -> Transformer:
    return construct_induction(BIG)


@pytest.fixture(scope="module")
def big_test():
    return BIG.eval_batches()["test"]


def zero_head(head: int):
    def fn(z, hook):  # z: [batch, pos, head, d_head]
        z = z.clone()
        z[:, :, head] = 0
        return z

    return fn


# ---- the domain and the algorithm ----------------------------------------------------------
def test_enumeration_is_exhaustive_and_distinct() -> None:
    batch = enumerate_inputs(SMALL)
    # segment lengths 2, 3, 4 use 6, 5, 4 distinct tokens out of 6
    assert count_inputs(SMALL) == math.perm(6, 6) + math.perm(6, 5) + math.perm(6, 4) == 1800
    assert len(batch) == 1800
    assert len({tuple(row) for row in batch.tokens.tolist()}) == 1800
    # every sampled sequence is in the domain, with the sampler's targets
    sample = SMALL.sample(300, seed=0)
    rows = {tuple(row): i for i, row in enumerate(batch.tokens.tolist())}
    index = torch.tensor([rows[tuple(row)] for row in sample.tokens.tolist()])
    assert torch.equal(batch.targets[index], sample.targets)


def test_algorithm_matches_task_targets_clean_and_counterfactual() -> None:
    pair = BIG.counterfactual(128, seed=1)
    assert torch.equal(induction_targets(pair.clean.tokens), pair.clean.targets)
    assert torch.equal(induction_targets(pair.corrupted.tokens), pair.corrupted.targets)


# ---- correctness ---------------------------------------------------------------------------
def test_exhaustive_check_small_domain(small_model: Transformer) -> None:
    assert check_against_algorithm(small_model, SMALL) == (1800, 1800)


def test_big_model_is_exact_on_small_domains(big_model: Transformer) -> None:
    # built for 24 tokens and n_ctx 16, it solves every smaller induction task too
    task = Induction(n_tokens=7, n_ctx=9, min_seg_len=2)
    assert check_against_algorithm(big_model, task) == (8400, 8400)


def test_checker_can_fail() -> None:
    n, correct = check_against_algorithm(Transformer(construct_induction(SMALL).cfg, seed=0), SMALL)
    assert n == 1800 and correct < n


def test_big_task_accuracy_and_loss(big_model: Transformer, big_test) -> None:
    logits = big_model(big_test.tokens)
    assert accuracy(logits, big_test).item() == 1.0
    assert loss(logits, big_test).item() < 0.05
    corrupted = BIG.counterfactual(256, seed=0).corrupted
    assert accuracy(big_model(corrupted.tokens), corrupted).item() == 1.0


def test_shape_and_layout(big_model: Transformer) -> None:
    cfg, lay = big_model.cfg, layout_for(BIG)
    assert (cfg.n_layers, cfg.n_heads, cfg.d_mlp, cfg.normalization_type) == (2, 2, None, None)
    assert (cfg.d_model, cfg.d_head) == (lay.d_model, lay.d_head) == (5 * 25 + 16, 25)
    spans = sorted((s.start, s.stop) for s in lay.subspaces().values())
    assert spans[0][0] == 0 and spans[-1][1] == cfg.d_model
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # a partition of d_model
    assert PREVIOUS_TOKEN_HEAD == (0, 1) and INDUCTION_HEAD == (1, 1)
    assert DECOY_HEADS == ((0, 0), (1, 0))


# ---- attention roles -----------------------------------------------------------------------
def test_attention_patterns(big_model: Transformer, big_test) -> None:
    tokens = big_test.tokens[:64]
    _, cache = big_model.run_with_cache(tokens)
    p0 = cache["blocks.0.attn.hook_pattern"]  # [batch, head, query_pos, key_pos]
    i = torch.arange(1, BIG.n_ctx)
    for head in (PREVIOUS_TOKEN_HEAD[1], DECOY_HEADS[0][1]):  # the decoy looks the same
        assert p0[:, head, i, i - 1].min() > 0.99
    assert torch.allclose(p0[:, 0, 0, 0], torch.ones(len(tokens)))  # BOS attends to itself

    p1 = cache["blocks.1.attn.hook_pattern"]
    seg_len = BIG.segment_info(big_test[:64])["seg_len"]
    scored = big_test.targets[:64] != IGNORE
    for head in (INDUCTION_HEAD[1], DECOY_HEADS[1][1]):
        b, q = scored.nonzero(as_tuple=True)
        assert p1[b, head, q, q - seg_len[b] + 1].min() > 0.99
    assert torch.equal(p1[:, 0], p1[:, 1])  # the decoy is indistinguishable by pattern


# ---- causal roles --------------------------------------------------------------------------
def test_zero_ablating_decoys_leaves_logits_unchanged(big_model: Transformer, big_test) -> None:
    clean = big_model(big_test.tokens)
    for layer, head in DECOY_HEADS:
        with big_model.hooks([(f"blocks.{layer}.attn.hook_z", zero_head(head))]):
            assert torch.equal(big_model(big_test.tokens), clean)
    both = [(f"blocks.{layer}.attn.hook_z", zero_head(head)) for layer, head in DECOY_HEADS]
    with big_model.hooks(both):
        assert torch.equal(big_model(big_test.tokens), clean)


def test_decoy_circuit_is_live_but_unread(big_model: Transformer, big_test) -> None:
    # ablating L0H0 moves L1H0's attention (K-composition) but not L1H1's, nor the logits
    tokens = big_test.tokens[:64]
    _, clean = big_model.run_with_cache(tokens)
    with big_model.hooks([("blocks.0.attn.hook_z", zero_head(0))]):
        _, ablated = big_model.run_with_cache(tokens)
    name = "blocks.1.attn.hook_pattern"
    assert not torch.allclose(ablated[name][:, 0], clean[name][:, 0], atol=0.1)
    assert torch.equal(ablated[name][:, 1], clean[name][:, 1])


@pytest.mark.parametrize("layer_head", [PREVIOUS_TOKEN_HEAD, INDUCTION_HEAD])
def test_zero_ablating_circuit_heads_destroys_accuracy(
    big_model: Transformer, big_test, layer_head: tuple[int, int]
) -> None:
    layer, head = layer_head
    with big_model.hooks([(f"blocks.{layer}.attn.hook_z", zero_head(head))]):
        logits = big_model(big_test.tokens)
    assert accuracy(logits, big_test).item() < 0.1


# ---- errors --------------------------------------------------------------------------------
def test_wrong_task_raises(small_model: Transformer) -> None:
    with pytest.raises(ValueError, match="n_ctx=16 is larger than the model supports"):
        check_against_algorithm(small_model, Induction(n_tokens=12, n_ctx=16, min_seg_len=3))
    with pytest.raises(ValueError, match="vocabulary"):
        check_against_algorithm(small_model, Induction(n_tokens=7, n_ctx=9, min_seg_len=2))
    with pytest.raises(ValueError, match="expected an Induction task"):
        construct_induction(ModularAddition(p=7))
    with pytest.raises(ValueError, match="attn_scale"):
        construct_induction(SMALL, attn_scale=0)
    with pytest.raises(ValueError, match="max_inputs"):
        enumerate_inputs(BIG)
