"""Induction: layout, distinctness, the induction rule, counterfactuals, validation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toylab.tasks.base import (
    IGNORE,
    Batch,
    CounterfactualPair,
    accuracy,
    logit_diff,
    loss,
)
from toylab.tasks.induction import BOS, Induction

FAST = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**31 - 1)


@st.composite
def tasks(draw: st.DrawFn) -> Induction:
    """Small valid Induction tasks, including the tightest vocabularies."""
    n_ctx = draw(st.integers(5, 24))
    longest = (n_ctx - 1) // 2
    min_seg = draw(st.integers(2, longest))
    max_seg = draw(st.integers(min_seg, longest))
    n_tokens = draw(st.integers(max(2, n_ctx - 1 - min_seg), 40))
    return Induction(n_tokens=n_tokens, n_ctx=n_ctx, min_seg_len=min_seg, max_seg_len=max_seg)


def naive_induction_targets(tokens: list[int]) -> list[int | None]:
    """Reference rule, one position at a time: if tokens[i] occurred earlier at k,
    the answer at i is tokens[k + 1]; None where there is no earlier occurrence."""
    out: list[int | None] = []
    for i, x in enumerate(tokens):
        earlier = [k for k in range(i) if tokens[k] == x]
        out.append(tokens[earlier[-1] + 1] if earlier else None)
    return out


def _check_layout(task: Induction, batch: Batch) -> None:
    n_ctx = task.n_ctx
    tokens = batch.tokens
    assert tokens.shape[1] == n_ctx and tokens.dtype == torch.int64
    task.check_tokens(tokens)
    assert (tokens[:, 0] == BOS).all()
    assert (tokens[:, 1:] != BOS).all()


def _check_induction_targets(batch: Batch) -> None:
    """Every scored target is the naive induction answer; the last position is never
    scored, and scored positions are exactly the repeated half minus its last token."""
    for row_tokens, row_targets in zip(batch.tokens.tolist(), batch.targets.tolist()):
        reference = naive_induction_targets(row_tokens)
        assert row_targets[-1] == IGNORE
        for i, target in enumerate(row_targets):
            if target != IGNORE:
                assert target == reference[i], (row_tokens, row_targets, i)
        n_repeats = sum(r is not None for r in reference)  # L
        assert sum(t != IGNORE for t in row_targets) == n_repeats - 1


# ---- encoding ---------------------------------------------------------------------
def test_shape_of_problem() -> None:
    task = Induction(n_tokens=5, n_ctx=7, min_seg_len=2)
    assert (task.d_vocab, task.d_vocab_out, task.n_ctx) == (6, 6, 7)
    assert task.token_names == ["BOS", "t0", "t1", "t2", "t3", "t4"]
    assert task.params() == {"n_tokens": 5, "n_ctx": 7, "min_seg_len": 2, "max_seg_len": 3}
    default = Induction()
    assert default.params() == {"n_tokens": 64, "n_ctx": 32, "min_seg_len": 4, "max_seg_len": 15}
    assert Induction(**default.params()) == default
    assert default.to_dict()["kind"] == "induction"


@FAST
@given(task=tasks(), seed=seeds)
def test_layout_and_distinctness(task: Induction, seed: int) -> None:
    batch, info = task.sample_with_info(32, seed)
    _check_layout(task, batch)
    seg_len, first = info["seg_len"], info["first_start"]
    assert ((seg_len >= task.min_seg_len) & (seg_len <= task.max_seg_len)).all()
    assert torch.equal(first, task.n_ctx - 2 * seg_len)
    assert torch.equal(task.segment_info(batch)["seg_len"], seg_len)
    for row, L, f in zip(batch.tokens.tolist(), seg_len.tolist(), first.tolist()):
        assert row[f : f + L] == row[f + L :]  # second copy equals the first, at the end
        body = row[1 : f + L]  # prefix + first copy
        assert len(set(body)) == len(body)  # all distinct


@FAST
@given(task=tasks(), seed=seeds)
def test_targets_follow_induction_rule(task: Induction, seed: int) -> None:
    batch, info = task.sample_with_info(32, seed)
    _check_induction_targets(batch)
    assert torch.equal(batch.scored.sum(-1), info["seg_len"] - 1)
    second = task.n_ctx - info["seg_len"]
    for row_targets, s in zip(batch.targets.tolist(), second.tolist()):
        assert all(t == IGNORE for t in row_targets[:s])


def test_to_str_tokens() -> None:
    task = Induction(n_tokens=8, n_ctx=9, min_seg_len=2)
    tokens = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 5, 6]])
    assert task.to_str_tokens(tokens)[0][:3] == ["BOS", "t0", "t1"]


# ---- samplers ---------------------------------------------------------------------
def test_segment_lengths_vary() -> None:
    task = Induction(n_tokens=64, n_ctx=32, min_seg_len=3)
    seg_len = task.sample_with_info(256, 0)[1]["seg_len"]
    assert set(seg_len.tolist()) == set(range(3, 16))
    fixed = Induction(n_tokens=64, n_ctx=32, min_seg_len=6, max_seg_len=6)
    assert (fixed.sample_with_info(64, 0)[1]["seg_len"] == 6).all()


@FAST
@given(task=tasks(), seed=seeds)
def test_sample_deterministic_in_seed(task: Induction, seed: int) -> None:
    x, y = task.sample(16, seed), task.sample(16, seed)
    assert torch.equal(x.tokens, y.tokens) and torch.equal(x.targets, y.targets)


def test_different_seeds_differ() -> None:
    task = Induction()
    assert not torch.equal(task.sample(16, 0).tokens, task.sample(16, 1).tokens)


def test_sample_does_not_touch_global_rng() -> None:
    task = Induction()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    task.sample(16, 5)
    task.counterfactual(16, 5)
    task.train_batch(0, 0, 8)
    assert torch.equal(torch.rand(3), expected)


def test_sampling_is_fast() -> None:
    import time

    task = Induction()
    start = time.perf_counter()
    task.sample(4096, 0)
    task.counterfactual(4096, 0)
    assert time.perf_counter() - start < 1.0


# ---- counterfactuals --------------------------------------------------------------
@FAST
@given(task=tasks(), seed=seeds)
def test_counterfactual(task: Induction, seed: int) -> None:
    pair = task.counterfactual(32, seed)
    assert isinstance(pair, CounterfactualPair) and len(pair) == 32
    clean, corrupt = pair.clean, pair.corrupted
    _check_layout(task, corrupt)
    _check_induction_targets(clean)
    _check_induction_targets(corrupt)
    assert torch.equal(clean.scored, corrupt.scored)
    info = task.segment_info(clean)
    for c, x, L, f in zip(
        clean.tokens.tolist(), corrupt.tokens.tolist(),
        info["seg_len"].tolist(), info["first_start"].tolist(),
    ):
        assert x[:f] == c[:f]  # prefix unchanged
        assert x[f + L :] == c[f + L :]  # second copy unchanged
        assert sorted(x[f : f + L]) == sorted(c[f : f + L])  # first copy permuted
        assert x[f : f + L] != c[f : f + L]  # ... and actually changed
    again = task.counterfactual(32, seed)
    assert torch.equal(again.corrupted.tokens, corrupt.tokens)


def test_counterfactual_example_by_hand() -> None:
    # The rule as stated in the brief, with L fixed at 3 so every row has the same layout.
    task = Induction(n_tokens=20, n_ctx=12, min_seg_len=3, max_seg_len=3)
    pair = task.counterfactual(8, 0)
    f = 12 - 6
    rows = zip(
        pair.clean.tokens.tolist(), pair.corrupted.tokens.tolist(), pair.corrupted.targets.tolist()
    )
    for c, x, t in rows:
        seg, shuffled = c[f : f + 3], x[f : f + 3]
        for j in range(2):  # scored second-copy positions
            k = shuffled.index(seg[j])
            expected = shuffled[k + 1] if k < 2 else seg[0]
            assert t[f + 3 + j] == expected
        assert t[-1] == IGNORE


# ---- validation -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_tokens": 1}, "n_tokens must be >= 2"),
        ({"n_ctx": 4}, "n_ctx must be >= 5"),
        ({"min_seg_len": 1}, "2 <= min_seg_len"),
        ({"min_seg_len": 6, "max_seg_len": 5}, "min_seg_len=6, max_seg_len=5"),
        ({"n_ctx": 32, "max_seg_len": 16}, r"\(n_ctx - 1\) // 2 = 15"),
        ({"n_tokens": 10, "n_ctx": 32, "min_seg_len": 4}, "Raise n_tokens to >= 27"),
        ({"n_tokens": 4.0}, "n_tokens must be an int"),
        ({"max_seg_len": "5"}, "max_seg_len must be an int"),
    ],
)
def test_bad_params(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Induction(**kwargs)


def test_tightest_vocabulary_is_allowed() -> None:
    task = Induction(n_tokens=27, n_ctx=32, min_seg_len=4)
    _check_induction_targets(task.sample(64, 0))


def test_check_tokens() -> None:
    task = Induction(n_tokens=10, n_ctx=12, min_seg_len=2)
    task.check_tokens(task.sample(2, 0).tokens)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        task.check_tokens(torch.tensor([[0, 11, 1]]))
    with pytest.raises(ValueError, match="exceeds"):
        task.check_tokens(torch.zeros(1, 13, dtype=torch.int64))
    with pytest.raises(TypeError, match="integer"):
        task.check_tokens(torch.zeros(1, 12))


# ---- base helpers -----------------------------------------------------------------
def _one_hot_logits(targets: torch.Tensor, width: int) -> torch.Tensor:
    logits = torch.zeros(*targets.shape, width)
    logits.scatter_(-1, targets.clamp(min=0).unsqueeze(-1), 20.0)
    return logits


def test_loss_accuracy_with_perfect_logits() -> None:
    task = Induction()
    batch = task.sample(128, 0)
    logits = _one_hot_logits(batch.targets, task.d_vocab_out)
    assert accuracy(logits, batch).item() == 1.0
    assert loss(logits, batch).item() < 1e-6
    # Logits at unscored positions must not matter.
    noise = torch.rand(logits.shape, generator=torch.Generator().manual_seed(0))
    noisy = logits + 50.0 * noise * (~batch.scored).unsqueeze(-1)
    assert accuracy(noisy, batch).item() == 1.0


def test_logit_diff_sign_and_coincident_positions() -> None:
    task = Induction(n_tokens=12, n_ctx=11, min_seg_len=2)
    pair = task.counterfactual(256, 0)
    clean_t, corrupt_t = pair.clean.targets, pair.corrupted.targets
    coincide = pair.clean.scored & (clean_t == corrupt_t)
    assert coincide.any(), "short segments should produce some coincident answers"

    # A coincident position has a zero difference; were it counted in the mean, the
    # values below would be pulled towards 0 instead of being exactly +-20.
    clean_logits = _one_hot_logits(clean_t, task.d_vocab_out)
    corrupt_logits = _one_hot_logits(corrupt_t, task.d_vocab_out)
    assert logit_diff(clean_logits, pair).item() == pytest.approx(20.0)
    assert logit_diff(corrupt_logits, pair).item() == pytest.approx(-20.0)
    per_example = logit_diff(clean_logits, pair, per_example=True)  # [batch]
    has_signal = (pair.clean.scored & (clean_t != corrupt_t)).any(-1)
    assert (per_example[has_signal] == 20.0).all()
    assert (per_example[~has_signal] == 0.0).all()
