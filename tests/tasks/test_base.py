"""The shared machinery of tasks with unlimited data (SampledTask), for every such task."""

import pytest
import torch

from toylab.tasks import Brackets, Induction

SAMPLED = [Induction(n_tokens=20, n_ctx=16, min_seg_len=3), Brackets(length=8)]


@pytest.mark.parametrize("task", SAMPLED, ids=lambda t: type(t).__name__)
def test_train_batch_is_a_pure_function_of_step_and_seed(task):
    batch = task.train_batch(step=4, seed=0, batch_size=64)
    assert len(batch) == 64 and batch.tokens.shape[1] == task.n_ctx
    task.check_tokens(batch.tokens)
    assert torch.equal(batch.tokens, type(task)(**task.params()).train_batch(4, 0, 64).tokens)
    assert not torch.equal(batch.tokens, task.train_batch(5, 0, 64).tokens)
    assert not torch.equal(batch.tokens, task.train_batch(4, 1, 64).tokens)
    with pytest.raises(ValueError, match="pass a batch_size"):
        task.train_batch(0, 0, None)
    with pytest.raises(ValueError, match="positive"):
        task.train_batch(0, 0, 0)


@pytest.mark.parametrize("task", SAMPLED, ids=lambda t: type(t).__name__)
def test_eval_batches_are_fixed_and_cached(task):
    evals = task.eval_batches()
    assert list(evals) == ["test"] and len(evals["test"]) == task.eval_size
    assert evals["test"] is task.eval_batches()["test"]
    assert torch.equal(evals["test"].tokens, type(task)(**task.params()).eval_batches()["test"].tokens)
