"""Blind challenges: each level is made, solved by its built-in baseline and scored; the disguise keeps the function
and maps the truth; revealing (or a method that loads a truth) marks the score; bad input gets a clear error."""

import json

import pytest
import torch

from toylab import challenges as ch
from toylab import zoo
from toylab.cli import main


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("challenges")
    return {level: ch.new_challenge(level, seed=7 + level, folder=root / f"L{level}") for level in ch.LEVELS}


def test_every_level_is_made_solved_by_its_baseline_and_scored(made):
    for level, path in made.items():
        challenge = ch.load_challenge(path)
        assert challenge.record["certified_by"]["max_logit_diff"] <= ch.EQUIVALENCE_TOLERANCE
        score = ch.solve(path)
        assert score.entry.error is None and not score.looked, (level, score.entry.error)
        figures = score.figures()
        assert figures["node_auroc"] > 0.9, (level, figures)  # every solver finds the circuit's heads
        assert ch.load_challenge(path).submissions[-1]["label"] == f"baseline {ch.LEVELS[level].solver}"


@pytest.mark.parametrize("level", [3, 5])
def test_each_circuit_head_of_the_disguise_computes_what_its_source_head_computed(made, level):
    """hook_z lives in a head's own space, which the rotation does not touch: the disguised head the truth names
    must produce exactly its source head's z, so the mapped truth is the disguised model's truth."""
    challenge = ch.load_challenge(made[level])
    name, seed = ch._source(level, challenge.seed)
    source = zoo.load(name, seed=seed)
    disguise = ch.Disguise.draw(source.model.cfg, challenge.seed)
    tokens = source.task.sample(32, 3).tokens
    layers = range(source.model.cfg.n_layers)
    names = [f"blocks.{l}.attn.hook_z" for l in layers]
    _, before = source.model.run_with_cache(tokens, names=names)
    _, after = challenge.model.run_with_cache(tokens, names=names)
    mapping = disguise.head_map()
    assert sorted(mapping.values()) == sorted(mapping)  # a permutation of the heads
    assert any(k != v for k, v in mapping.items()) or level == 5  # the draw moved something
    for old, new in mapping.items():
        lo, ho = int(old[1:].split("H")[0]), int(old.split("H")[1])
        hn = int(new.split("H")[1])
        assert torch.allclose(after[names[lo]][:, :, hn], before[names[lo]][:, :, ho], atol=1e-4)
    truth = ch.reveal(made[level])
    for node in source.truth.nodes:
        assert (mapping.get(node, node) in truth.nodes)


def test_revealing_or_loading_a_truth_marks_the_score_as_looked(tmp_path):
    path = ch.new_challenge(1, seed=3, folder=tmp_path / "c")

    def peeks(problem):
        zoo.load("induction-constructed")  # loads a truth: the harness notices
        return {"L0H0": 1.0}

    assert ch.submit(path, peeks).looked
    truth = ch.reveal(path)
    circuit = {"nodes": [n for n in truth.nodes if n != "logits"]}
    score = ch.submit(path, circuit)
    assert score.looked and score.figures()["tpr"] == 1.0 and score.figures()["fpr"] == 0.0
    assert ch.load_challenge(path).revealed


def test_a_decoy_circuit_scores_below_the_true_one(made):
    path = made[1]
    truth = ch.reveal(path)
    heads = [n for n in truth.nodes_at("head") if n.startswith("L")]
    others = [f"L{l}H{h}" for l in range(2) for h in range(2) if f"L{l}H{h}" not in heads]
    right = ch.submit(path, {"nodes": ["embed", *heads]}).figures()
    wrong = ch.submit(path, {"nodes": ["embed", *others]}).figures()
    assert right["faithfulness"] > 0.9 > wrong["faithfulness"] + 0.5, (right, wrong)


def test_bad_input_is_refused_with_what_to_do(tmp_path, made):
    with pytest.raises(ch.ChallengeError, match="level must be one of"):
        ch.new_challenge(9, seed=0, folder=tmp_path / "x")
    with pytest.raises(ch.ChallengeError, match="already holds a challenge"):
        ch.new_challenge(1, seed=0, folder=made[1])
    with pytest.raises(ch.ChallengeError, match="holds no challenge"):
        ch.load_challenge(tmp_path)
    with pytest.raises(ch.ChallengeError, match="unknown answer kind"):
        ch.answer_from_json({"heads": ["L0H1"]})
    with pytest.raises(ch.ChallengeError, match="an answer is one of"):
        ch.answer_from_json(["L0H1"])


def test_the_command_line_makes_a_challenge_and_scores_a_json_answer(tmp_path, capsys):
    folder = tmp_path / "cli"
    assert main(["challenge", "new", "--level", "3", "--seed", "5", "--out", str(folder)]) == 0
    assert "level 3" in capsys.readouterr().out
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps({"nodes": ["embed", "L0H1"]}))
    assert main(["challenge", "submit", str(folder), str(answer)]) == 0
    out = capsys.readouterr().out
    assert "faithfulness" in out and "LOOKED" not in out
    assert main(["challenge", "submit", str(folder)]) == 2
    assert "give the answer" in capsys.readouterr().err
    assert main(["challenge", "solve"]) == 2
    assert "needs the challenge folder" in capsys.readouterr().err
