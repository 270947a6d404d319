"""A researcher's own known-circuit model joins the suite from a folder."""

import json
import shutil

import pytest
import torch

import toylab
from toylab.checkpoint import CheckpointError, save_model
from toylab.validate import load_folder, score, subjects


@pytest.fixture
def folder(tmp_path):
    """induction-constructed written as a researcher would: weights, config, truth, task; no card."""
    zm = toylab.zoo.load("induction-constructed")
    out = tmp_path / "my-model"
    save_model(out, zm.model)
    (out / "card.json").unlink(missing_ok=True)
    zm.truth.save(out)
    (out / "task.json").write_text(json.dumps(zm.task.to_dict()))
    return out


def perfect(problem):
    truth = problem.answer_key()
    return {e: float(e in truth.edges) for e in problem.edges()}


def test_a_folder_scores_like_the_zoo_model_it_copies(folder):
    subject = load_folder(folder)
    assert subject.name == str(folder) and subject.truth.nodes == toylab.zoo.load("induction-constructed").truth.nodes
    from_folder = score(perfect, names=[str(folder)]).entries[0].metrics
    from_zoo = score(perfect, names=["induction-constructed"]).entries[0].metrics
    assert from_folder["faithfulness"] == pytest.approx(from_zoo["faithfulness"])
    assert from_folder["edge_auroc[qkv]"] == 1.0


@pytest.mark.parametrize("missing", ["truth.json", "task.json", "model.safetensors"])
def test_a_folder_missing_a_file_says_which(folder, missing):
    (folder / missing).unlink()
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        load_folder(folder)


def test_a_truth_that_does_not_fit_the_model_is_refused(folder):
    truth = json.loads((folder / "truth.json").read_text())
    truth["nodes"]["L3H0"] = "imaginary"
    (folder / "truth.json").write_text(json.dumps(truth))
    with pytest.raises(CheckpointError, match="does not fit|layer 3"):
        load_folder(folder)


def test_a_bad_task_and_an_unknown_name_are_refused(folder, tmp_path):
    (folder / "task.json").write_text(json.dumps({"kind": "sorting"}))
    with pytest.raises(CheckpointError, match="unknown task kind 'sorting'"):
        load_folder(folder)
    with pytest.raises(KeyError, match="induction"):
        subjects(["induction-2"])
    with pytest.raises(CheckpointError, match="no such folder"):
        load_folder(tmp_path / "nowhere")


def test_seeds_select_shipped_seeds():
    assert [s.seed for s in subjects(["induction-siit"], seeds=[0, 2])] == [0, 2]
    with pytest.raises(ValueError, match="selects nothing"):
        subjects(["induction-constructed"], seeds=[5])


def test_a_seed_trained_here_joins_the_suite_when_its_certificate_passed(tmp_path, monkeypatch):
    from toylab import zoo
    from toylab.validate.suite import missing_seeds, source_of, load_source
    from toylab.zoo.seeds import seed_dir

    monkeypatch.setenv("TOYLAB_HOME", str(tmp_path))
    run = seed_dir("induction-siit", 7)  # as `toylab train induction-siit --seeds 7` leaves it
    shutil.copytree(zoo.shipped_path("induction-siit", 1), run)
    card = json.loads((run / "card.json").read_text())
    (run / "card.json").write_text(json.dumps({**card, "seed": 7}))
    suite = subjects(["induction-siit"], seeds=[0, 7, 8])
    assert [(s.name, s.seed, s.folder) for s in suite] == [("induction-siit", 0, None), ("induction-siit", 7, run)]
    assert missing_seeds("induction-siit", [0, 7, 8]) == [8]
    # A worker elsewhere gets the folder's files, and loads the same model from them.
    there = load_source(source_of(suite[1]))
    assert (there.name, there.seed) == ("induction-siit", 7) and there.truth == suite[1].truth
    assert all(torch.equal(a, b) for a, b in zip(there.model.state_dict().values(), suite[1].model.state_dict().values()))

    card["certificate"]["passed"] = False  # a truth that failed its certificate is no answer key
    (run / "card.json").write_text(json.dumps({**card, "seed": 7}))
    assert [s.seed for s in subjects(["induction-siit"], seeds=[0, 7])] == [0]
    assert missing_seeds("induction-siit", [7]) == [7]
