"""The Logic task: encoding, gates, counterfactuals, bad input."""

import pytest
import torch

from toylab.tasks import Logic, task_from_dict
from toylab.tasks.logic import BIT_POS, QUERY, LogicAlgorithm


@pytest.mark.parametrize("gate", ["copy", "or", "mux", "xor"])
def test_prompts_hold_the_bits_at_their_positions_and_the_answer_at_the_end(gate):
    task = Logic(gate)
    batch = task.sample(256, 0)
    assert batch.tokens.shape == (256, task.n_ctx) and (batch.tokens[:, -1] == QUERY).all()
    bits = task.bits(batch.tokens)
    names = task.to_str_tokens(batch.tokens[0])
    assert names[BIT_POS["a"]] == f"a{int(bits['a'][0])}" and names[-1] == "?"
    expected = {"copy": bits["a"], "or": bits["a"] | bits["b"], "mux": torch.where(bits["s"] == 1, bits["b"], bits["a"]),
                "xor": bits["a"] ^ bits["b"]}
    assert torch.equal(batch.targets[:, -1], expected[gate])
    assert (batch.targets[:, :-1] == -1).all()


@pytest.mark.parametrize("gate,changed", [("copy", {"a"}), ("or", {"a", "b"}), ("mux", {"s"})])
def test_each_counterfactual_changes_only_its_bits_and_always_the_answer(gate, changed):
    task = Logic(gate)
    pair = task.counterfactual(200, 3)
    clean, corrupted = task.bits(pair.clean.tokens), task.bits(pair.corrupted.tokens)
    for bit in ("a", "b", "s"):
        assert (clean[bit] != corrupted[bit]).all() if bit in changed else torch.equal(clean[bit], corrupted[bit])
    assert (pair.clean.targets[:, -1] != pair.corrupted.targets[:, -1]).all()
    assert torch.equal(pair.clean.tokens[:, 4:-1], pair.corrupted.tokens[:, 4:-1])  # same fillers
    if gate == "or":  # from both inputs on to both off
        assert (clean["a"] == 1).all() and (clean["b"] == 1).all()


def test_round_trip_and_bad_input():
    task = Logic("mux", n_filler=2, n_filler_tokens=3)
    assert task_from_dict(task.to_dict()) == task and task.n_ctx == 7 and task.d_vocab == 11
    with pytest.raises(ValueError, match="unknown gate 'nand'"):
        Logic("nand")
    with pytest.raises(ValueError, match="n_filler_tokens must be an int >= 1"):
        Logic("copy", n_filler_tokens=0)


def test_xor_counterfactual_flips_exactly_one_of_a_and_b():
    task = Logic("xor")
    pair = task.counterfactual(400, 3)
    clean, corrupted = task.bits(pair.clean.tokens), task.bits(pair.corrupted.tokens)
    flipped_a, flipped_b = clean["a"] != corrupted["a"], clean["b"] != corrupted["b"]
    assert (flipped_a ^ flipped_b).all() and 0.4 < flipped_a.float().mean() < 0.6
    assert (pair.clean.targets[:, -1] != pair.corrupted.targets[:, -1]).all()


@pytest.mark.parametrize("gate", ["copy", "or", "mux", "xor"])
def test_logic_algorithm_takes_the_bit_from_the_source(gate):
    task = Logic(gate)
    algorithm = LogicAlgorithm(task)
    base, source = algorithm.sample_pairs(300, torch.Generator().manual_seed(0))
    b, s = task.bits(base.tokens), task.bits(source.tokens)
    for bit in ("a", "b", "s"):
        mixed = {**b, bit: s[bit]}
        got = algorithm.intervene(base, source, bit)
        assert torch.equal(got[:, -1], task.answer(mixed["a"], mixed["b"], mixed["s"])) and (got[:, :-1] == -1).all()
    assert torch.equal(algorithm.intervene(base, base, "a"), base.targets)
    with pytest.raises(KeyError, match="no variable 'c'"):
        algorithm.intervene(base, source, "c")
