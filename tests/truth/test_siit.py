import json

import pytest
import torch

from toylab import zoo
from toylab.tasks import Induction
from toylab.tasks.induction import InductionAlgorithm
from toylab.train import TrainConfig, train
from toylab.truth.siit import SIIT


def test_induction_algorithm_interventions_follow_the_rule():
    task = Induction(n_tokens=12, n_ctx=12, min_seg_len=3)
    algorithm = InductionAlgorithm(task)
    base, source = algorithm.sample_pairs(16, torch.Generator().manual_seed(0))
    assert torch.equal(algorithm.intervene(base, source, "induction"), source.targets)
    prev = algorithm.intervene(base, source, "previous_token")
    for b in range(16):  # naive loop: latest k <= i with source[k-1] == base[i]; answer base[k]
        for i in range(12):
            if base.targets[b, i] < 0:
                assert prev[b, i] == -1
                continue
            ks = [k for k in range(1, i + 1) if source.tokens[b, k - 1] == base.tokens[b, i]]
            assert prev[b, i] == base.tokens[b, max(ks)]
    with pytest.raises(KeyError, match="previous_token"):
        algorithm.intervene(base, source, "bigram")


def test_siit_terms_are_finite_and_the_objective_is_recorded_in_the_run(tmp_path):
    rec = zoo.recipe("induction-siit")
    objective = rec.objective()
    assert isinstance(objective, SIIT)
    assert objective.outside(zoo.load("induction-siit").model) == ["L0H0", "L0H1", "L0H3", "L1H0", "L1H2", "L1H3"]
    result = train(rec.model, rec.task, TrainConfig(steps=3, batch_size=8, eval_every=3, seed=0),
                   out_dir=tmp_path, progress=False, objective=objective)
    assert result.steps == 3
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["objective"]["kind"] == "siit" and run["objective"]["weights"]["strict"] == 0.4
    terms = objective.terms(result.model, rec.task.train_batch(0, 0, 8), step=0, seed=0)
    assert set(terms) >= {"behaviour", "iit"} and all(torch.isfinite(v) for v in terms.values())


def test_siit_refuses_a_truth_without_variables():
    rec = zoo.recipe("induction-2l")
    with pytest.raises(ValueError, match="declares none"):
        SIIT(InductionAlgorithm(rec.task), rec.truth)


def test_siit_for_ioi_adds_self_repair_negative_and_pattern_terms():
    """The IOI recipe's objective trains the backup (outside the circuit, never resampled in
    the self-repair run), the negative head and the attention roles, all finite."""
    rec = zoo.recipe("ioi-siit")
    objective = rec.objective()
    assert set(objective.weights) == {"behaviour", "iit", "strict", "self_repair", "negative", "pattern"}
    model = zoo.load("ioi-siit").model
    assert "L3H1" in objective.outside(model) and objective.backups == ["L3H1"]
    assert set(objective.patterned) == {role.head for role in rec.truth.attention}
    terms = objective.terms(model, rec.task.train_batch(0, 0, 16), step=0, seed=0)
    assert set(terms) == set(objective.weights) and all(torch.isfinite(v) for v in terms.values())
    # the shipped model has learnt them: its roles attend where they should, its negative head is negative
    assert terms["pattern"] < 0.1 and terms["negative"] < 0.5
