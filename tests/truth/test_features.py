"""Feature-level truths: per-position and multi-valued features, certified by intervention.

brackets-siit declares MLP0's negative-balance flag at each position (``negative@p``, a
per-position variable), factual-recall one direction per attribute value (``attribute=a``, a
multi-valued feature with ``off`` None). ``certify`` removes a binary feature where it is on
and decides the answer, writes it where it is off when it is redundant wherever it is on, and
interchanges a multi-valued feature with another value's (``FeatureDirection``). The shipped
truths' full certificates are recomputed in test_certify; these tests are the cheap checks of
the semantics, and that a wrong direction fails.
"""

import dataclasses
import json

import pytest
import torch

from toylab import zoo
from toylab.truth import FeatureDirection, Truth
from toylab.truth.certify import CERTIFICATE_SEED, _feature_checks
from toylab.zoo.recipes import fact_features

N = 256  # prompts per pair count: FEATURE_PROMPTS * N sampled, at most FEATURE_ROWS intervened on
TEST_SEED = 31_337


def _subset(truth: Truth, names: list[str]) -> Truth:
    return dataclasses.replace(truth, features=tuple(f for f in truth.features if f.name in names),
                               feature_edges=(), certificate=None)


def _random_like(f: FeatureDirection, seed: int = 0) -> FeatureDirection:
    g = torch.Generator().manual_seed(seed)
    return dataclasses.replace(f, vector=tuple(torch.randn(len(f.vector), generator=g).tolist()))


def _by_feature(checks) -> dict[str, list]:
    out: dict[str, list] = {}
    for c in checks:
        for word in c.name.split():
            if "@" in word or word.startswith("attribute="):
                out.setdefault(word, []).append(c)
                break
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shipped_feature_truths_declare_what_the_issue_asks(seed):
    """Input tokens -> MLP features -> logits, named uniquely; the recorded certificate passed."""
    zm = zoo.load("brackets-siit", seed=seed)
    truth = zm.truth
    names = [f.name for f in truth.features]
    assert len(set(names)) == len(names) and names[:2] == ["(", ")"]
    flags = [f for f in truth.features if f.variable]
    assert len(flags) >= 22 and all(f.name == f"negative@{f.pos}" and f.hook == "blocks.0.hook_mlp_out"
                                    and (f.variable, f.value, f.off) == ("negative", 1, 0) for f in flags)
    assert set(truth.feature_edges) == ({(t, f.name) for f in flags for t in "()"}
                                        | {(f.name, "logit:unbalanced") for f in flags})
    checks = [c for c in truth.certificate["checks"] if "negative@" in c["name"]]
    assert len(checks) == 2 * len(flags) and all(c["passed"] for c in checks)
    if seed == 0:
        recall = zoo.load("factual-recall").truth
        attributes = [f for f in recall.features if f.variable]
        assert [f.name for f in attributes] == [f"attribute=a{a}" for a in range(8)]
        assert all(f.off is None and f.pos == 2 for f in attributes)
        assert len(recall.features) == 8 + 4 + 48  # attributes, relations, subjects


def test_per_position_features_are_removed_where_they_decide_and_written_where_they_are_redundant():
    """negative@3 is on where the balance at 3 is below zero; where that is the only dip and the
    count ends at zero, removing it makes the string balanced. negative@4 never decides alone (a
    dip at 4 was a dip at 3), so it is written on balanced strings instead. A random direction
    in their place fails; the semantics read the variable at the feature's position."""
    zm = zoo.load("brackets-siit")
    truth = _subset(zm.truth, ["negative@3", "negative@4"])
    checks = _feature_checks(zm.model, zm.task, zm.algorithm, truth, N, CERTIFICATE_SEED)
    assert [c.name.split(" at ")[0] for c in checks] == [
        "ablating feature negative@3", "ablating a random direction", "writing feature negative@4",
        "writing a random direction"]
    assert "negative[3] := 0" in checks[0].name and "negative[4] := 1" in checks[2].name
    assert all(c.passed for c in checks), [str(c) for c in checks]
    assert checks[0].value == 1.0 and checks[2].value == 1.0 and checks[1].value < 0.05

    wrong = [_random_like(f, i) for i, f in enumerate(truth.features)]
    failed = [c for c in _feature_checks(zm.model, zm.task, zm.algorithm, dataclasses.replace(truth, features=tuple(wrong)),
                                         N, CERTIFICATE_SEED) if not c.passed]
    assert [c.name.split(" at ")[0] for c in failed] == ["ablating feature negative@3", "writing feature negative@4"]


def test_multi_valued_features_are_interchanged_and_a_wrong_direction_fails():
    """attribute=a, moved to another value's mean along the two declared directions, makes the
    model answer that value; the same plane-move with a random direction, or with another
    value's direction in place of a's, does not."""
    zm = zoo.load("factual-recall")
    names = ["attribute=a0", "attribute=a1", "attribute=a2"]
    truth = _subset(zm.truth, names)
    checks = _feature_checks(zm.model, zm.task, zm.algorithm, truth, N, TEST_SEED)
    assert all(c.passed for c in checks), [str(c) for c in checks]
    by = _by_feature(checks)
    assert set(by) == set(names) and all(len(v) == 2 for v in by.values())
    assert all(v[0].value >= 0.95 and v[1].value <= 0.05 for v in by.values())

    a0, a1, a2 = truth.features
    for wrong in (_random_like(a1), dataclasses.replace(a1, vector=a2.vector)):
        broken = dataclasses.replace(truth, features=(a0, wrong, a2))
        by = _by_feature(_feature_checks(zm.model, zm.task, zm.algorithm, broken, N, TEST_SEED))
        assert by["attribute=a1"][0].interval[1] < 0.9  # moving a' in alone, a stays: fails on a third or more
        assert all(c.passed for c in by["attribute=a1"][1:])  # the random planes still move nothing


def test_feature_semantics_are_validated():
    with pytest.raises(ValueError, match="needs the position"):
        FeatureDirection("x", "blocks.0.hook_mlp_out", (1.0, 0.0), variable="negative", value=1, off=0)
    with pytest.raises(ValueError, match="set its variable"):
        FeatureDirection("x", "hook_embed", (1.0, 0.0), value=1)
    with pytest.raises(ValueError, match="must differ"):
        FeatureDirection("x", "blocks.0.hook_mlp_out", (1.0, 0.0), pos=2, variable="attribute", value=1, off=1)
    zm = zoo.load("factual-recall")
    lonely = _subset(zm.truth, ["attribute=a0"])
    with pytest.raises(ValueError, match="no other value"):
        _feature_checks(zm.model, zm.task, zm.algorithm, lonely, 16, TEST_SEED)


def test_features_are_identified_from_the_weights_deterministically_and_round_trip(tmp_path):
    """fact_features reads the shipped weights: the same features (and edges) as the shipped
    truth, every time; a multi-valued feature (off None) survives JSON, one line a vector."""
    zm = zoo.load("factual-recall")
    features, edges = fact_features(zm.model, zm.task)
    assert (features, edges) == fact_features(zm.model, zm.task)
    assert features == zm.truth.features and edges == zm.truth.feature_edges
    table = zm.task.table
    assert len(edges) == table.numel() + sum(len(set(table[:, r].tolist())) for r in range(4)) + 8
    assert ("s0", f"attribute=a{int(table[0, 0])}") in edges and ("attribute=a3", "logit:a3") in edges
    assert Truth.from_dict(json.loads(json.dumps(zm.truth.to_dict()))) == zm.truth
    zm.truth.save(tmp_path)
    assert Truth.load(tmp_path) == zm.truth
    text = (tmp_path / "truth.json").read_text()
    assert '"vector": [' in text and '"off": null' in text
