"""The Logic task: encoding, gates, counterfactuals, bad input."""

import pytest
import torch

from toylab.tasks import Logic, task_from_dict
from toylab.tasks.logic import BIT_POS, QUERY


@pytest.mark.parametrize("gate", ["copy", "or", "mux"])
def test_prompts_hold_the_bits_at_their_positions_and_the_answer_at_the_end(gate):
    task = Logic(gate)
    batch = task.sample(256, 0)
    assert batch.tokens.shape == (256, task.n_ctx) and (batch.tokens[:, -1] == QUERY).all()
    bits = task.bits(batch.tokens)
    names = task.to_str_tokens(batch.tokens[0])
    assert names[BIT_POS["a"]] == f"a{int(bits['a'][0])}" and names[-1] == "?"
    expected = {"copy": bits["a"], "or": bits["a"] | bits["b"], "mux": torch.where(bits["s"] == 1, bits["b"], bits["a"])}
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
    with pytest.raises(ValueError, match="unknown gate 'xor'"):
        Logic("xor")
    with pytest.raises(ValueError, match="n_filler_tokens must be an int >= 1"):
        Logic("copy", n_filler_tokens=0)
