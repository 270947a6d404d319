"""Conjunctions: the marked pairs, sampling, counterfactuals, the algorithm and bad input."""

import pytest
import torch

from toylab.tasks import task_from_dict
from toylab.tasks.conjunctions import NONE, Conjunctions, ConjunctionsAlgorithm


def test_classes_are_the_marked_pairs_in_either_order():
    task = Conjunctions(n_features=6, n_marked=4, pair_seed=1)
    assert task.pairs.shape == (4, 2) and (task.pairs[:, 0] < task.pairs[:, 1]).all()
    for k, (a, b) in enumerate(task.pairs.tolist(), start=1):
        batch = task.make_batch(torch.tensor([a, b]), torch.tensor([b, a]))
        assert batch.targets[:, 3].tolist() == [k, k]
    test = task.eval_batches()["test"]
    assert len(test) == 6 * 5 and (test.targets[:, 3] > 0).sum() == 2 * 4
    assert task_from_dict(task.to_dict()).pairs.tolist() == task.pairs.tolist()


def test_sampling_mixes_marked_and_unmarked_and_counterfactuals_change_the_class():
    task = Conjunctions()
    v = task.variables(task.sample(4000, 0).tokens)
    assert 0.45 < (v["conjunction"] != NONE).float().mean() < 0.55
    assert (v["a"] != v["b"]).all() and v["present"].sum(-1).eq(2).all()
    pair = task.counterfactual(500, 1)
    clean, corrupted = task.variables(pair.clean.tokens), task.variables(pair.corrupted.tokens)
    assert (clean["conjunction"] != corrupted["conjunction"]).all()
    assert ((clean["a"] == corrupted["a"]) | (clean["b"] == corrupted["b"])).all()  # one feature replaced


def test_algorithm_assigns_the_class():
    task = Conjunctions()
    algorithm = ConjunctionsAlgorithm(task)
    base, source = algorithm.sample_pairs(64, torch.Generator().manual_seed(0))
    assert torch.equal(algorithm.intervene(base, source, "conjunction")[:, 3], source.targets[:, 3])
    with pytest.raises(ValueError, match="classes 0 .. 24"):
        algorithm.assign(base, "conjunction", torch.full((64,), 25))


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_features=2), "n_features must be an int >= 3"),
    (dict(n_features=4, n_marked=6), "must be below the 6 pairs"),
    (dict(marked_fraction=1.0), "marked_fraction must lie in"),
    (dict(pair_seed=1.5), "pair_seed must be an int"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Conjunctions(**kwargs)


def test_bad_prompts():
    task = Conjunctions()
    with pytest.raises(ValueError, match="two distinct features"):
        task.make_batch(torch.tensor([3]), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"feature indices must lie in \[0, 16\)"):
        task.make_batch(torch.tensor([3]), torch.tensor([16]))
    with pytest.raises(ValueError, match=r"\[BOS, a, b, =\]"):
        task.variables(torch.tensor([[1, 2, 3, 0]]))
