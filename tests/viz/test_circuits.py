"""ROC and faithfulness figures over reports, and a found circuit drawn over the true one."""

import pytest

import toylab
from toylab import viz
from toylab.validate import score, subjects


@pytest.fixture(scope="module")
def reports():
    suite = subjects(["induction-constructed"])

    def perfect(problem):
        truth = problem.answer_key()
        return {e: float(e in truth.edges) for e in problem.edges()}

    def by_layer(problem):
        return {n: float(n.startswith("L1")) for n in problem.nodes()}

    return {"perfect": score(perfect, suite=suite), "by layer": score(by_layer, suite=suite)}


def _lines(fig):
    return [line for ax in fig.axes for line in ax.get_lines()]


def test_roc_curves_draw_each_method_and_chance(reports):
    fig = viz.roc_curves(reports)
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("perfect") for label in labels) and any(label.startswith("by layer") for label in labels)
    assert len(_lines(fig)) == 3  # chance, and one step line per method


def test_faithfulness_curves_show_cpr(reports):
    fig = viz.faithfulness_curves(reports)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("CPR" in label for label in labels) and len(labels) == 2


def test_circuit_graph_marks_truth_and_found_parts():
    zm = toylab.zoo.load("induction-constructed")
    fig = viz.circuit_graph(zm.model.cfg, list(zm.truth.edges)[:2], zm.truth.edges)
    truth_marks = [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == viz.TRUTH_GID]
    assert len(truth_marks) == len(zm.truth.edges) + len(zm.truth.nodes)  # every true edge and node
    bare = viz.circuit_graph(zm.model.cfg, ["L0H0"], zm.truth.edges, show_truth=False)
    assert not [a for ax in bare.axes for a in ax.get_children() if a.get_gid() == viz.TRUTH_GID]
