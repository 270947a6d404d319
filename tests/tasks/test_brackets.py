"""Brackets: encoding, labels, the data mix, counterfactuals, the algorithm's interventions."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toylab.tasks import TASKS, task_from_dict
from toylab.tasks.base import IGNORE, Batch, CounterfactualPair, accuracy, loss
from toylab.tasks.brackets import (
    BALANCED,
    BOS,
    CLASSES,
    CLOSE,
    GROUPS,
    MIX,
    OPEN,
    UNBALANCED,
    Brackets,
    BracketsAlgorithm,
    bracket_variables,
)

FAST = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**31 - 1)
lengths = st.sampled_from([4, 6, 8, 12, 16])


def naive(s: str) -> dict:
    """Reference, one bracket at a time: running counts, whether it dipped, the class."""
    balance, counts = 0, [0]
    for c in s:
        balance += 1 if c == "(" else -1
        counts.append(balance)
    any_negative = min(counts) < 0
    final_zero = counts[-1] == 0
    cls = {(True, False): "balanced", (True, True): "dips", (False, False): "unclosed",
           (False, True): "dips_unclosed"}[(final_zero, any_negative)]
    return {"balance": counts, "any_negative": any_negative, "final_zero": final_zero,
            "answer": int(final_zero and not any_negative), "class": cls}


def naive_answer(balance: list[int]) -> int:
    """The output rule applied to a (possibly intervened) balance sequence."""
    return int(balance[-1] == 0 and min(balance) >= 0)


def _check_batch(task: Brackets, batch: Batch) -> None:
    assert batch.tokens.shape[1] == task.n_ctx
    task.check_tokens(batch.tokens)
    assert (batch.tokens[:, 0] == BOS).all() and (batch.tokens[:, 1:] != BOS).all()
    assert (batch.targets[:, :-1] == IGNORE).all()
    for s, target in zip(task.to_strings(batch.tokens), batch.targets[:, -1].tolist()):
        assert target == naive(s)["answer"], s


# ---- encoding ---------------------------------------------------------------------
def test_shape_of_problem() -> None:
    task = Brackets(length=6)
    assert (task.d_vocab, task.d_vocab_out, task.n_ctx) == (3, 2, 7)
    assert task.token_names == ["BOS", "(", ")"]
    assert task.output_names[UNBALANCED] == "unbalanced" and task.output_names[BALANCED] == "balanced"
    assert task.params() == {"length": 6}
    assert Brackets().params() == {"length": 24}
    assert task.to_dict() == {"kind": "brackets", "length": 6}
    assert TASKS["brackets"] is Brackets
    assert task_from_dict(task.to_dict()) == task
    assert repr(task) == "Brackets(length=6)"


@FAST
@given(data=st.data(), length=lengths)
def test_encoding_round_trip(data: st.DataObject, length: int) -> None:
    task = Brackets(length)
    strings = data.draw(st.lists(st.text("()", min_size=length, max_size=length), min_size=1, max_size=5))
    tokens = task.make_tokens(strings)
    assert tokens.shape == (len(strings), length + 1) and tokens.dtype == torch.int64
    assert task.to_strings(tokens) == strings
    assert task.to_strings(tokens[0]) == strings[:1]
    assert task.to_str_tokens(tokens[0]) == ["BOS", *strings[0]]
    batch = task.make_batch(strings)
    assert torch.equal(batch.tokens, tokens)
    assert batch.targets[:, -1].tolist() == [naive(s)["answer"] for s in strings]


def test_encoding_by_hand() -> None:
    task = Brackets(4)
    assert task.make_tokens("(())").tolist() == [[BOS, OPEN, OPEN, CLOSE, CLOSE]]
    assert task.make_batch(["(())", "())(", "(()(", ")))("]).targets[:, -1].tolist() == [1, 0, 0, 0]
    classes = task.variables(task.make_tokens(["(())", "))((", "(()(", ")))("]))["class"]
    assert [CLASSES[c] for c in classes.tolist()] == ["balanced", "dips", "unclosed", "dips_unclosed"]


@pytest.mark.parametrize("bad", ["(()", "(()))", "(a()", ["(())", "("]])
def test_make_tokens_rejects_bad_strings(bad) -> None:
    with pytest.raises(ValueError, match="exactly length=4"):
        Brackets(4).make_tokens(bad)


def test_layout_is_checked() -> None:
    task = Brackets(4)
    with pytest.raises(ValueError, match="BOS only at position 0"):
        task.make_batch(torch.tensor([[OPEN, OPEN, CLOSE, CLOSE, CLOSE]]))
    with pytest.raises(ValueError, match="BOS only at position 0"):
        task.make_batch(torch.tensor([[BOS, OPEN, BOS, CLOSE, CLOSE]]))
    with pytest.raises(ValueError, match="must have length n_ctx=5"):
        task.variables(torch.tensor([[BOS, OPEN, CLOSE]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        task.to_strings(torch.tensor([[BOS, OPEN, 3, CLOSE, CLOSE]]))


# ---- labels and variables -----------------------------------------------------------
@FAST
@given(length=lengths, seed=seeds)
def test_labels_and_variables_match_naive_loop(length: int, seed: int) -> None:
    task = Brackets(length)
    batch = task.sample(64, seed)
    _check_batch(task, batch)
    v = task.variables(batch.tokens)
    for row, s in enumerate(task.to_strings(batch.tokens)):
        ref = naive(s)
        assert v["balance"][row].tolist() == ref["balance"]
        assert v["negative"][row].tolist() == [b < 0 for b in ref["balance"]]
        assert bool(v["any_negative"][row]) == ref["any_negative"]
        assert bool(v["final_zero"][row]) == ref["final_zero"]
        assert CLASSES[int(v["class"][row])] == ref["class"]
    assert torch.equal(bracket_variables(batch.tokens)["answer"], batch.targets[:, -1])


# ---- the data mix -------------------------------------------------------------------
def group_of(s: str) -> str:
    ref = naive(s)
    if ref["class"] == "dips" and sum(b < 0 for b in ref["balance"]) == 1:
        return "dips_once"
    return ref["class"]


def in_group(s: str, group: str) -> bool:
    """Group membership; "dips" is every string of the dips class, dips_once included."""
    return naive(s)["class"] == "dips" if group == "dips" else group_of(s) == group


def test_data_mix() -> None:
    task = Brackets(12)
    n = 16384
    strings = task.to_strings(task.sample(n, 0).tokens)
    classes = Counter(naive(s)["class"] for s in strings)
    for cls, share in zip(CLASSES, (0.5, 0.25, 0.125, 0.125)):
        assert abs(classes[cls] / n - share) < 0.015, (cls, classes)
    # dips_once strings come from their own group (1/8) and from the uniform dips group
    once = sum(group_of(s) == "dips_once" for s in strings) / n
    assert 0.125 < once < 0.125 + 0.125 * 0.3, once
    assert abs(task.sample(n, 1).targets[:, -1].double().mean().item() - 0.5) < 0.015
    assert MIX == (0.5, 0.125, 0.125, 0.125, 0.125) and sum(MIX) == 1


@pytest.mark.parametrize("group", GROUPS)
def test_uniform_within_group(group: str) -> None:
    # length 6 is small enough to enumerate: every string of the group shows up, about
    # equally often (the sampler is exact, so the tolerance only covers sampling noise).
    task = Brackets(6)
    members = {"".join(p) for p in itertools.product("()", repeat=6) if in_group("".join(p), group)}
    n = 4000
    batch = task.sample(n, 7, group=group)
    counts = Counter(task.to_strings(batch.tokens))
    assert set(counts) == members
    expected = n / len(members)
    assert all(abs(c - expected) < 5 * expected**0.5 + 2 for c in counts.values()), counts


def test_group_sizes_for_length_6() -> None:
    sizes = Counter(group_of("".join(p)) for p in itertools.product("()", repeat=6))
    assert sizes == {"balanced": 5, "dips_once": 5, "dips": 10, "unclosed": 15, "dips_unclosed": 29}


def test_sample_group_validation() -> None:
    with pytest.raises(ValueError, match="group must be one of"):
        Brackets().sample(4, 0, group="nested")


# ---- samplers -------------------------------------------------------------------------
def test_sample_deterministic_in_seed() -> None:
    task = Brackets()
    x, y = task.sample(32, 3), task.sample(32, 3)
    assert torch.equal(x.tokens, y.tokens) and torch.equal(x.targets, y.targets)
    assert not torch.equal(x.tokens, task.sample(32, 4).tokens)


def test_sample_does_not_touch_global_rng() -> None:
    task = Brackets()
    algorithm = BracketsAlgorithm(task)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    task.sample(16, 5)
    task.counterfactual(16, 5)
    task.train_batch(0, 0, 8)
    algorithm.sample_pairs(16, torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), expected)


def test_sampling_is_fast() -> None:
    import time

    task = Brackets(16)
    start = time.perf_counter()
    task.sample(4096, 0)
    task.counterfactual(4096, 0)
    BracketsAlgorithm(task).sample_pairs(4096, torch.Generator().manual_seed(0))
    assert time.perf_counter() - start < 1.0


# ---- counterfactuals --------------------------------------------------------------
@FAST
@given(length=lengths, seed=seeds)
def test_counterfactual(length: int, seed: int) -> None:
    task = Brackets(length)
    pair = task.counterfactual(32, seed)
    assert isinstance(pair, CounterfactualPair) and len(pair) == 32
    _check_batch(task, pair.clean)
    _check_batch(task, pair.corrupted)
    assert torch.equal(pair.clean.scored, pair.corrupted.scored)
    assert (pair.clean.targets[:, -1] != pair.corrupted.targets[:, -1]).all()
    for c, x in zip(task.to_strings(pair.clean.tokens), task.to_strings(pair.corrupted.tokens)):
        good, bad = (c, x) if naive(c)["answer"] else (x, c)
        diff = [i for i in range(length) if good[i] != bad[i]]
        if len(diff) == 1:  # one ")" turned "(": never dips, ends at +2
            assert good[diff[0]] == ")"
            assert naive(bad)["class"] == "unclosed" and naive(bad)["balance"][-1] == 2
        else:  # a top-level matched pair swapped: dips to exactly -1, ends at 0
            i, j = diff
            assert len(diff) == 2 and good[i] == "(" and good[j] == ")"
            assert naive(good)["balance"][i] == 0  # count before x_i (balance list has BOS first)
            assert naive(good)["balance"][j + 1] == 0 and min(naive(good)["balance"][i + 1 : j + 1]) > 0
            assert naive(bad)["class"] == "dips" and min(naive(bad)["balance"]) == -1
    again = task.counterfactual(32, seed)
    assert torch.equal(again.clean.tokens, pair.clean.tokens)


def test_counterfactual_mixes_edits_and_orders() -> None:
    task = Brackets(12)
    pair = task.counterfactual(512, 0)
    clean_balanced = pair.clean.targets[:, -1] == BALANCED
    assert 0.4 < clean_balanced.double().mean() < 0.6
    n_diff = (pair.clean.tokens != pair.corrupted.tokens).sum(-1)
    assert set(n_diff.tolist()) == {1, 2}
    assert 0.4 < (n_diff == 1).double().mean() < 0.6


# ---- the algorithm ------------------------------------------------------------------
def _pairs(length: int = 12, n: int = 256, seed: int = 0) -> tuple[BracketsAlgorithm, Batch, Batch]:
    algorithm = BracketsAlgorithm(Brackets(length))
    base, source = algorithm.sample_pairs(n, torch.Generator().manual_seed(seed))
    return algorithm, base, source


def test_sample_pairs() -> None:
    algorithm, base, source = _pairs(n=4096)
    task = algorithm.task
    _check_batch(task, base)
    _check_batch(task, source)
    base_cls = task.variables(base.tokens)["class"]
    assert (base_cls != task.variables(source.tokens)["class"]).all()
    shares = torch.bincount(base_cls, minlength=4).double() / len(base)
    assert torch.allclose(shares, torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64), atol=0.03)
    assert 0.75 < (base.targets[:, -1] != source.targets[:, -1]).double().mean() < 0.87
    _, base2, source2 = _pairs(n=4096)
    assert torch.equal(base.tokens, base2.tokens) and torch.equal(source.tokens, source2.tokens)


def test_intervene_on_nothing_output_and_balance() -> None:
    algorithm, base, source = _pairs()
    assert torch.equal(algorithm.intervene(base, source, None), base.targets)
    assert torch.equal(algorithm.intervene(base, source, "output"), source.targets)
    # balance feeds everything downstream: taking it everywhere gives the source's answer
    assert torch.equal(algorithm.intervene(base, source, "balance"), source.targets)
    # ... and intervening at no position changes nothing
    none = torch.zeros(base.tokens.shape[1], dtype=torch.bool)
    for variable in (*algorithm.variables, "output"):
        assert torch.equal(algorithm.intervene(base, source, variable, positions=none), base.targets)


def test_intervene_on_each_variable_everywhere() -> None:
    algorithm, base, source = _pairs()
    b, s = algorithm.task.variables(base.tokens), algorithm.task.variables(source.tokens)
    expect_an = (b["final_zero"] & ~s["any_negative"]).long()  # source's dips, base's final count
    expect_fz = (s["final_zero"] & ~b["any_negative"]).long()
    for variable, expected in (("negative", expect_an), ("any_negative", expect_an), ("final_zero", expect_fz)):
        targets = algorithm.intervene(base, source, variable)
        assert (targets[:, :-1] == IGNORE).all()
        assert torch.equal(targets[:, -1], expected), variable
        changed = (targets[:, -1] != base.targets[:, -1]).double().mean()
        assert changed > 0.2, (variable, changed)  # the pairs are informative


@FAST
@given(length=lengths, seed=seeds, mask_seed=seeds, per_row=st.booleans())
def test_mixed_position_interventions_match_naive(length: int, seed: int, mask_seed: int, per_row: bool) -> None:
    algorithm, base, source = _pairs(length, n=16, seed=seed)
    n_ctx = length + 1
    g = torch.Generator().manual_seed(mask_seed)
    shape = (16, n_ctx) if per_row else (n_ctx,)
    mask = torch.rand(shape, generator=g) < 0.5
    rows = mask.expand(16, n_ctx).tolist()
    base_str, source_str = algorithm.task.to_strings(base.tokens), algorithm.task.to_strings(source.tokens)
    results = {v: algorithm.intervene(base, source, v, positions=mask) for v in (*algorithm.variables, "output")}
    for r, (bs, ss, m) in enumerate(zip(base_str, source_str, rows)):
        nb, ns = naive(bs), naive(ss)
        mixed = [ns["balance"][i] if m[i] else nb["balance"][i] for i in range(n_ctx)]
        negative = [
            (ns["balance"][i] < 0) if m[i] else (nb["balance"][i] < 0) for i in range(n_ctx)
        ]
        any_negative = ns["any_negative"] if m[-1] else nb["any_negative"]
        final_zero = ns["final_zero"] if m[-1] else nb["final_zero"]
        expected = {
            "balance": naive_answer(mixed),
            "negative": int(nb["final_zero"] and not any(negative)),
            "any_negative": int(nb["final_zero"] and not any_negative),
            "final_zero": int(final_zero and not nb["any_negative"]),
            "output": ns["answer"] if m[-1] else nb["answer"],
        }
        for variable, value in expected.items():
            assert results[variable][r, -1].item() == value, (variable, bs, ss, m)
            assert (results[variable][r, :-1] == IGNORE).all()


def test_balance_at_one_position_by_hand() -> None:
    # base "(())" is balanced; taking the source ")(((" count (-1) at x_1 only makes it dip.
    task = Brackets(4)
    algorithm = BracketsAlgorithm(task)
    base, source = task.make_batch(["(())"]), task.make_batch([")((("])
    only_x1 = torch.tensor([False, True, False, False, False])
    assert algorithm.intervene(base, source, "balance", positions=only_x1)[0, -1] == UNBALANCED
    only_last = torch.tensor([False, False, False, False, True])  # source's final count is 2
    assert algorithm.intervene(base, source, "balance", positions=only_last)[0, -1] == UNBALANCED
    assert algorithm.intervene(base, source, "negative", positions=only_last)[0, -1] == BALANCED
    assert algorithm.intervene(base, source, "final_zero", positions=only_last)[0, -1] == UNBALANCED
    assert algorithm.intervene(base, source, "any_negative", positions=only_x1)[0, -1] == BALANCED


def test_intervene_errors() -> None:
    algorithm, base, source = _pairs(length=4, n=4)
    with pytest.raises(KeyError, match="no variable 'depth'"):
        algorithm.intervene(base, source, "depth")
    with pytest.raises(ValueError, match="same shape"):
        algorithm.intervene(base, source[:2], "balance")
    with pytest.raises(TypeError, match="bool tensor"):
        algorithm.intervene(base, source, "balance", positions=torch.ones(5))
    with pytest.raises(ValueError, match="n_ctx = 5"):
        algorithm.intervene(base, source, "balance", positions=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="must have length n_ctx=5"):
        short = Batch(base.tokens[:, :3], base.targets[:, :3])
        algorithm.intervene(short, short, "balance")
    with pytest.raises(TypeError, match="needs a Brackets task"):
        BracketsAlgorithm(TASKS["induction"]())
    assert BracketsAlgorithm().task == Brackets()


# ---- validation -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"length": 7}, "length must be even, got 7"),
        ({"length": 2}, "length=2 is too short"),
        ({"length": 0}, "length=0 is too short"),
        ({"length": -4}, "too short"),
        ({"length": 258}, "too long"),
        ({"length": 12.0}, "length must be an int"),
        ({"length": True}, "length must be an int"),
    ],
)
def test_bad_params(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Brackets(**kwargs)


def test_longest_length_samples() -> None:
    task = Brackets(256)
    _check_batch(task, task.sample(8, 0))
    assert (task.variables(task.sample(8, 0, group="balanced").tokens)["class"] == 0).all()
    once = task.variables(task.sample(8, 0, group="dips_once").tokens)
    assert (once["class"] == 1).all() and (once["negative"].sum(-1) == 1).all()


# ---- metrics ------------------------------------------------------------------------
def test_loss_accuracy_with_perfect_logits() -> None:
    task = Brackets()
    batch = task.sample(128, 0)
    logits = torch.zeros(*batch.targets.shape, 2)
    logits.scatter_(-1, batch.targets.clamp(min=0).unsqueeze(-1), 20.0)
    assert accuracy(logits, batch).item() == 1.0
    assert loss(logits, batch).item() < 1e-6
