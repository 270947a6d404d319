"""Model editing on factual recall: ROME, MEMIT and fine-tuning, scored exactly as CounterFact does."""

import pytest
import torch

from toylab import zoo
from toylab.methods.editing import (
    EditConfig,
    FactEdit,
    apply_edits,
    check_edits,
    edit_score,
    fine_tune,
    memit,
    random_edits,
    rome,
    score_edits,
)
from toylab.tasks.factual_recall import FactualRecall


@pytest.fixture(scope="module")
def recall():
    return zoo.load("factual-recall")


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_rome_is_a_rank_one_edit_that_works_and_leaves_the_model_given_alone(recall):
    model, task = recall.model, recall.task
    before = _weights(model)
    edit = random_edits(task, 1, seed=3)[0]
    result = rome(model, task, edit, layer=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # never mutates
    change = result.model.blocks[0].mlp.W_out.detach() - model.blocks[0].mlp.W_out.detach()
    singular = torch.linalg.svdvals(change.double())
    assert singular[1] < 1e-6 * singular[0]  # rank one
    other = {k for k, v in result.model.state_dict().items() if not torch.equal(v, before[k])}
    assert other == {"blocks.0.mlp.W_out"}
    scores = score_edits(model, result.model, task, [edit])
    assert scores.efficacy == 1.0 and scores.generalisation is None  # one prompt form: n/a
    assert scores.specificity >= 0.9 and scores.same_subject >= 0.6, scores


def test_memit_holds_many_edits_at_once(recall):
    model, task = recall.model, recall.task
    edits = random_edits(task, 8, seed=0)
    result = memit(model, task, edits, layers=(0,))
    scores = score_edits(model, result.model, task, edits)
    assert scores.efficacy >= 0.75 and scores.specificity >= 0.9, scores


def test_fine_tune_respects_its_constraint(recall):
    model, task = recall.model, recall.task
    config = EditConfig(max_change=0.1, ft_steps=30)
    edits = random_edits(task, 2, seed=1)
    result = fine_tune(model, task, edits, layer=0, config=config)
    W = model.blocks[0].mlp.W_out.detach()
    change = result.model.blocks[0].mlp.W_out.detach() - W
    assert change.abs().max() <= 0.1 * W.std() + 1e-6
    assert change.abs().max() > 0


def test_scores_of_no_edit_and_the_score_s(recall):
    model, task = recall.model, recall.task
    edits = random_edits(task, 4, seed=2)
    unedited = score_edits(model, model, task, edits)
    assert unedited.efficacy == 0.0 and unedited.specificity == 1.0 and unedited.same_subject == 1.0
    assert edit_score(unedited) == 0.0
    forms = FactualRecall(n_forms=3)
    edits3 = random_edits(forms, 2, seed=0)
    from toylab.models import Transformer, TransformerConfig
    torch.manual_seed(0)
    untrained = Transformer(TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
                                              d_vocab=forms.d_vocab, d_vocab_out=forms.d_vocab_out, n_ctx=4))
    s = score_edits(untrained, untrained, forms, edits3)
    assert s.generalisation is not None  # three forms: defined


def test_apply_edits_sequential_rome_and_bad_input(recall):
    model, task = recall.model, recall.task
    edits = random_edits(task, 3, seed=5)
    result = apply_edits(model, task, edits, "rome")
    assert score_edits(model, result.model, task, edits).efficacy >= 2 / 3
    current = int(task.table[0, 0])
    for edit, message in [
        (FactEdit(99, 0, 1), r"subject must be an int in \[0, 48\); the task has no such fact"),
        (FactEdit(0, 7, 1), r"relation must be an int in \[0, 4\)"),
        (FactEdit(0, 0, 8), r"attribute must be an int in \[0, 8\)"),
        (FactEdit(0, 0, current), "already answers"),
    ]:
        with pytest.raises(ValueError, match=message):
            rome(model, task, edit)
    with pytest.raises(ValueError, match="edited twice"):
        check_edits(task, [FactEdit(0, 0, (current + 1) % 8), FactEdit(0, 0, (current + 2) % 8)])
    with pytest.raises(ValueError, match=r"layer must be an int in \[0, 2\)"):
        rome(model, task, FactEdit(0, 0, (current + 1) % 8), layer=2)
    with pytest.raises(ValueError, match="method must be one of"):
        apply_edits(model, task, edits, "mend")
    with pytest.raises(ValueError, match="only 192 facts"):
        random_edits(task, 500, seed=0)
