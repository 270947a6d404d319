"""Factual recall: the encoding, the fact table, counterfactuals, the algorithm and the zoo model."""

import dataclasses

import pytest
import torch

from toylab import zoo
from toylab.tasks import IGNORE, FactualRecall, task_from_dict
from toylab.tasks.factual_recall import ANSWER_POS, FactualRecallAlgorithm
from toylab.truth.certify import certify


@pytest.fixture(scope="module")
def task():
    return FactualRecall(n_subjects=12, n_relations=3, n_attributes=5, table_seed=3)


def test_encoding_and_targets(task):
    batch = task.make_batch(torch.tensor([0, 11]), torch.tensor([2, 1]))
    assert task.to_str_tokens(batch.tokens) == [["BOS", "r2", "s0", "="], ["BOS", "r1", "s11", "="]]
    assert (batch.targets[:, :ANSWER_POS] == IGNORE).all()
    assert batch.targets[:, ANSWER_POS].tolist() == [int(task.table[0, 2]), int(task.table[11, 1])]
    assert (task.d_vocab, task.d_vocab_out, task.n_ctx, task.n_facts) == (17, 5, 4, 36)
    v = task.variables(batch.tokens)
    assert v["subject"].tolist() == [0, 11] and v["relation"].tolist() == [2, 1]
    assert v["fact"].tolist() == [0 * 3 + 2, 11 * 3 + 1]


def test_table_is_seeded_and_each_subject_has_distinct_attributes(task):
    assert torch.equal(task.table, FactualRecall(12, 3, 5, table_seed=3).table)
    assert not torch.equal(task.table, FactualRecall(12, 3, 5, table_seed=4).table)
    assert all(len(set(row.tolist())) == 3 for row in task.table)
    assert task_from_dict(task.to_dict()) == task


def test_test_set_is_every_fact_once(task):
    test = task.eval_batches()["test"]
    facts = task.variables(test.tokens)["fact"]
    assert sorted(facts.tolist()) == list(range(task.n_facts))


def test_counterfactual_changes_one_of_subject_or_relation_and_always_the_answer(task):
    pair = task.counterfactual(256, seed=0)
    a, b = task.variables(pair.clean.tokens), task.variables(pair.corrupted.tokens)
    changed_s, changed_r = a["subject"] != b["subject"], a["relation"] != b["relation"]
    assert (changed_s ^ changed_r).all() and changed_s.any() and changed_r.any()
    assert (a["attribute"] != b["attribute"]).all()
    assert torch.equal(pair.corrupted.targets[:, ANSWER_POS], b["attribute"])


def test_algorithm_interventions(task):
    alg = FactualRecallAlgorithm(task)
    base, source = alg.sample_pairs(64, torch.Generator().manual_seed(0))
    b, s = task.variables(base.tokens), task.variables(source.tokens)
    assert (b["subject"] != s["subject"]).all() and (b["relation"] != s["relation"]).all()
    assert torch.equal(alg.intervene(base, source, None), base.targets)
    assert torch.equal(alg.intervene(base, source, "attribute"), source.targets)
    assert torch.equal(alg.intervene(base, source, "moved_attribute"), source.targets)
    relation = alg.intervene(base, source, "relation")[:, ANSWER_POS]
    assert torch.equal(relation, task.table[b["subject"], s["relation"]])
    with pytest.raises(KeyError, match="no variable 'subject_parity'"):
        alg.intervene(base, source, "subject_parity")
    with pytest.raises(TypeError):
        FactualRecallAlgorithm("not a task")


@pytest.mark.parametrize("kwargs,match", [({"n_subjects": 1}, "n_subjects must be >= 2"),
                                          ({"n_relations": 2.5}, "n_relations must be an int"),
                                          ({"table_seed": "x"}, "table_seed")])
def test_bad_parameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FactualRecall(**kwargs)


def test_bad_prompts_are_refused(task):
    with pytest.raises(ValueError, match=r"\[BOS, relation, subject, =\]"):
        task.variables(torch.tensor([[0, 1, 5, 1]]))  # "=" where the relation should be
    with pytest.raises(ValueError, match="subject indices"):
        task.make_batch(torch.tensor([12]), torch.tensor([0]))


def test_the_zoo_model_recalls_every_fact():
    zm = zoo.load("factual-recall")
    test = zm.task.eval_batches()["test"]
    with torch.no_grad():
        answers = zm.model(test.tokens)[:, ANSWER_POS].argmax(-1)
    assert (answers == test.targets[:, ANSWER_POS]).float().mean() >= 0.995


def _with_variable(truth, name, **change):
    variables = tuple(dataclasses.replace(v, **change) if v.name == name else v for v in truth.variables)
    return dataclasses.replace(truth, variables=variables)


def test_a_truth_with_the_facts_in_the_wrong_mlp_is_rejected():
    """Declaring the fact store in MLP1 fails by intervention, not by comparing to the spec."""
    zm = zoo.load("factual-recall")
    certificate = certify(zm.model, zm.task, _with_variable(zm.truth, "attribute", components=("MLP1",)),
                          zm.algorithm, n_pairs=128)
    assert [c.name for c in certificate.failures] == ["interchange accuracy of attribute at MLP1"]


def test_a_truth_without_the_fact_store_is_rejected():
    zm = zoo.load("factual-recall")
    nodes = {k: v for k, v in zm.truth.nodes.items() if k != "MLP0"}
    edges = tuple(e for e in zm.truth.edges if "MLP0" not in (e.sender, e.receiver))
    truth = dataclasses.replace(zm.truth, nodes=nodes, edges=edges, variables=())
    failed = {c.name for c in certify(zm.model, zm.task, truth, n_pairs=128).failures}
    assert {"faithfulness", "inertness of MLP0"} <= failed


def test_a_truth_with_the_fact_at_the_wrong_position_is_rejected():
    zm = zoo.load("factual-recall")
    certificate = certify(zm.model, zm.task, _with_variable(zm.truth, "attribute", positions="3"), zm.algorithm,
                          n_pairs=128)
    assert [c.name for c in certificate.failures] == ["interchange accuracy of attribute at MLP0"]
