"""ModularAddition: encoding, fixed split, samplers, counterfactuals, validation."""

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
from toylab.tasks.modular_addition import ModularAddition, is_prime

SMALL_PRIMES = [p for p in range(2, 60) if is_prime(p)]
primes = st.sampled_from(SMALL_PRIMES)
seeds = st.integers(0, 2**31 - 1)
fracs = st.floats(0.2, 0.8)
FAST = settings(max_examples=25, deadline=None)


def _one_hot_logits(targets: torch.Tensor, width: int) -> torch.Tensor:
    """Logits [batch, pos, vocab] that put all mass on each scored target."""
    logits = torch.zeros(*targets.shape, width)
    logits.scatter_(-1, targets.clamp(min=0).unsqueeze(-1), 20.0)
    return logits


def _check_answers(task: ModularAddition, batch: Batch) -> None:
    a, b, eq = batch.tokens.unbind(-1)
    assert (eq == task.p).all()
    assert (batch.targets[:, 2] == (a + b) % task.p).all()
    assert (batch.targets[:, :2] == IGNORE).all()
    task.check_tokens(batch.tokens)


# ---- encoding ---------------------------------------------------------------------
def test_shape_of_problem() -> None:
    task = ModularAddition(p=7)
    assert (task.d_vocab, task.d_vocab_out, task.n_ctx) == (8, 7, 3)
    assert task.token_names == ["0", "1", "2", "3", "4", "5", "6", "="]
    assert task.kind == "modular_addition"
    assert task.params() == {"p": 7, "train_frac": 0.3, "split_seed": 0}
    assert ModularAddition(**task.params()) == task
    assert task.to_dict() == {"kind": "modular_addition", **task.params()}


@FAST
@given(p=primes, seed=seeds, frac=fracs, n=st.integers(1, 50))
def test_targets_are_the_sum_at_eq_only(p: int, seed: int, frac: float, n: int) -> None:
    task = ModularAddition(p=p, train_frac=frac)
    for split in ("train", "test", "all"):
        _check_answers(task, task.sample(n, seed, split=split))
    for batch in task.eval_batches().values():
        _check_answers(task, batch)
    _check_answers(task, task.train_batch(step=3, seed=seed, batch_size=n))


def test_all_pairs_in_order() -> None:
    task = ModularAddition(p=5)
    batch = task.all_pairs()
    assert len(batch) == 25
    index = batch.tokens[:, 0] * 5 + batch.tokens[:, 1]
    assert torch.equal(index, torch.arange(25))
    _check_answers(task, batch)


def test_make_tokens() -> None:
    task = ModularAddition(p=11)
    assert task.make_tokens(3, 4).tolist() == [[3, 4, 11]]
    tokens = task.make_tokens(torch.tensor([0, 10]), torch.tensor([10, 0]))
    assert tokens.tolist() == [[0, 10, 11], [10, 0, 11]]
    for a, b in [(11, 0), (0, -1), (torch.tensor([1, 2]), torch.tensor([1, 11]))]:
        with pytest.raises(ValueError, match="outside 0 .. 10"):
            task.make_tokens(a, b)
    with pytest.raises(ValueError, match="same number"):
        task.make_tokens(torch.tensor([1, 2]), torch.tensor([1]))


def test_to_str_tokens() -> None:
    task = ModularAddition(p=13)
    tokens = task.make_tokens(torch.tensor([12, 0]), torch.tensor([5, 1]))
    assert task.to_str_tokens(tokens) == [["12", "5", "="], ["0", "1", "="]]
    assert task.to_str_tokens(tokens[0]) == ["12", "5", "="]


# ---- the fixed split --------------------------------------------------------------
@FAST
@given(p=primes, frac=fracs, split_seed=seeds)
def test_split_is_a_partition(p: int, frac: float, split_seed: int) -> None:
    task = ModularAddition(p=p, train_frac=frac, split_seed=split_seed)
    train = (task.train_pairs[:, 0] * p + task.train_pairs[:, 1]).tolist()
    test = (task.test_pairs[:, 0] * p + task.test_pairs[:, 1]).tolist()
    assert len(train) == round(frac * p * p)
    assert len(train) + len(test) == p * p
    assert set(train).isdisjoint(test)
    assert sorted(train + test) == list(range(p * p))
    evals = task.eval_batches()
    assert torch.equal(evals["train"].tokens[:, :2], task.train_pairs)
    assert torch.equal(evals["test"].tokens[:, :2], task.test_pairs)


def test_split_depends_only_on_split_seed() -> None:
    a, b, c = (ModularAddition(p=31, split_seed=s) for s in (0, 0, 1))
    assert torch.equal(a.train_pairs, b.train_pairs)
    assert torch.equal(a.test_pairs, b.test_pairs)
    assert not torch.equal(a.train_pairs, c.train_pairs)


def test_eval_batches_cached() -> None:
    task = ModularAddition(p=11)
    assert task.eval_batches()["train"] is task.eval_batches()["train"]
    assert task.all_pairs() is task.all_pairs()


# ---- samplers ---------------------------------------------------------------------
@FAST
@given(p=primes, seed=seeds)
def test_sample_deterministic_in_seed(p: int, seed: int) -> None:
    task = ModularAddition(p=p)
    for split in ("train", "test", "all"):
        x, y = task.sample(64, seed, split), task.sample(64, seed, split)
        assert torch.equal(x.tokens, y.tokens) and torch.equal(x.targets, y.targets)


def test_sample_seeds_and_splits() -> None:
    task = ModularAddition(p=53)
    assert not torch.equal(task.sample(64, 0).tokens, task.sample(64, 1).tokens)
    train = set((task.train_pairs[:, 0] * 53 + task.train_pairs[:, 1]).tolist())
    for split, inside in (("train", True), ("test", False)):
        tokens = task.sample(500, 0, split=split).tokens
        assert all(((a * 53 + b) in train) == inside for a, b, _ in tokens.tolist())
    with pytest.raises(ValueError, match="'train', 'test', 'all'"):
        task.sample(4, 0, split="val")
    with pytest.raises(ValueError, match="positive"):
        task.sample(0, 0)


def test_sample_does_not_touch_global_rng() -> None:
    task = ModularAddition(p=13)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    task.sample(16, 5)
    task.counterfactual(16, 5)
    task.train_batch(0, 0, 8)
    assert torch.equal(torch.rand(3), expected)


def test_train_batch() -> None:
    task = ModularAddition(p=23, train_frac=0.5)
    full = task.train_batch(step=0, seed=0, batch_size=None)
    assert torch.equal(full.tokens, task.eval_batches()["train"].tokens)
    assert torch.equal(task.train_batch(7, 9, None).tokens, full.tokens)  # ignores step/seed

    mini = task.train_batch(step=5, seed=1, batch_size=32)
    assert len(mini) == 32
    assert torch.equal(mini.tokens, task.train_batch(step=5, seed=1, batch_size=32).tokens)
    assert not torch.equal(mini.tokens, task.train_batch(step=6, seed=1, batch_size=32).tokens)
    assert not torch.equal(mini.tokens, task.train_batch(step=5, seed=2, batch_size=32).tokens)
    train = set((task.train_pairs[:, 0] * 23 + task.train_pairs[:, 1]).tolist())
    assert all(a * 23 + b in train for a, b, _ in mini.tokens.tolist())
    with pytest.raises(ValueError, match="batch_size"):
        task.train_batch(0, 0, 0)


# ---- counterfactuals --------------------------------------------------------------
@FAST
@given(p=primes, seed=seeds, n=st.integers(1, 64))
def test_counterfactual(p: int, seed: int, n: int) -> None:
    task = ModularAddition(p=p)
    pair = task.counterfactual(n, seed)
    assert isinstance(pair, CounterfactualPair) and len(pair) == n
    clean, corrupt = pair.clean, pair.corrupted
    _check_answers(task, clean)
    _check_answers(task, corrupt)
    assert torch.equal(clean.tokens[:, 0], corrupt.tokens[:, 0])  # a kept
    assert (clean.tokens[:, 1] != corrupt.tokens[:, 1]).all()  # b resampled
    assert (clean.targets[:, 2] != corrupt.targets[:, 2]).all()  # so the answer changes
    again = task.counterfactual(n, seed)
    assert torch.equal(again.corrupted.tokens, corrupt.tokens)


def test_counterfactual_b_prime_covers_other_values() -> None:
    task = ModularAddition(p=5)
    pair = task.counterfactual(2000, 0)
    delta = (pair.corrupted.tokens[:, 1] - pair.clean.tokens[:, 1]) % 5
    assert set(delta.tolist()) == {1, 2, 3, 4}


# ---- validation -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("p", "below", "above"),
    [(4, "3", "5"), (9, "7", "11"), (100, "97", "101"), (114, "113", "127")],
)
def test_non_prime_names_nearest_primes(p: int, below: str, above: str) -> None:
    with pytest.raises(ValueError, match=rf"not prime.*{below} and {above}.*field"):
        ModularAddition(p=p)


@pytest.mark.parametrize("p", [1, 0, -7])
def test_p_below_two(p: int) -> None:
    with pytest.raises(ValueError, match="smallest prime is 2"):
        ModularAddition(p=p)


@pytest.mark.parametrize("p", [11.0, "11", True])
def test_p_must_be_int(p: object) -> None:
    with pytest.raises(ValueError, match="p must be an int"):
        ModularAddition(p=p)  # type: ignore[arg-type]


def test_p_too_large() -> None:
    with pytest.raises(ValueError, match="too large"):
        ModularAddition(p=10_007)


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 1.5])
def test_bad_train_frac(frac: float) -> None:
    with pytest.raises(ValueError, match="train_frac"):
        ModularAddition(p=7, train_frac=frac)


def test_train_frac_leaving_empty_split() -> None:
    with pytest.raises(ValueError, match="empty train or test set"):
        ModularAddition(p=2, train_frac=0.05)


# ---- base helpers -----------------------------------------------------------------
def test_check_tokens() -> None:
    task = ModularAddition(p=7)
    task.check_tokens(task.make_tokens(0, 6))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        task.check_tokens(torch.tensor([[0, 8, 7]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        task.check_tokens(torch.tensor([[-1, 0, 7]]))
    with pytest.raises(ValueError, match="exceeds"):
        task.check_tokens(torch.tensor([[0, 1, 7, 2]]))
    with pytest.raises(TypeError, match="integer"):
        task.check_tokens(torch.tensor([[0.0, 1.0, 7.0]]))
    with pytest.raises(ValueError, match=r"\[batch, pos\]"):
        task.check_tokens(torch.tensor([0, 1, 7]).reshape(1, 1, 3))


def test_loss_accuracy_with_perfect_logits() -> None:
    task = ModularAddition(p=17)
    batch = task.eval_batches()["test"]
    logits = _one_hot_logits(batch.targets, task.d_vocab_out)
    assert accuracy(logits, batch).item() == 1.0
    assert loss(logits, batch).item() < 1e-6
    metrics = task.metrics(logits, batch)
    assert metrics["accuracy"] == 1.0
    wrong = _one_hot_logits((batch.targets + 1) % task.p, task.d_vocab_out)
    assert accuracy(wrong, batch).item() == 0.0


def test_logit_diff_sign() -> None:
    task = ModularAddition(p=11)
    pair = task.counterfactual(32, 0)
    clean_logits = _one_hot_logits(pair.clean.targets, task.d_vocab_out)
    corrupt_logits = _one_hot_logits(pair.corrupted.targets, task.d_vocab_out)
    assert logit_diff(clean_logits, pair).item() == pytest.approx(20.0)
    assert logit_diff(corrupt_logits, pair).item() == pytest.approx(-20.0)
    per_example = logit_diff(clean_logits, pair, per_example=True)
    assert per_example.shape == (32,) and (per_example == 20.0).all()
