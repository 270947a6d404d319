"""The lab's "13 Attribution graphs" page: the graph of the lesson's prompt with the lesson's transcoder, its scores,
the interactive chart's nodes and the table against the truth, each checked against toylab.methods and
toylab.validate.feature_graphs on a transcoder trained here as the page trains it (deterministic); widgets change
the graph."""

import json
from functools import cache
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from toylab import zoo
from toylab.lessons import fast, lesson_fixtures, load
from toylab.validate.feature_graphs import map_nodes, true_feature_circuit
from toylab.viz.attribution_graph import FOUND, MISSED

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"
PAGE = "lab_pages/attribution_graphs.py"
FIXTURES = lesson_fixtures("graphs")
CONJ = zoo.load(FIXTURES.MODEL)


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@cache
def transcoder(kind: str = "per-layer"):
    """What the page trains: the lesson's transcoder, FIXTURES.STEPS steps (the lab is never in fast mode). Lesson
    13's checkers train the same once per process (the lesson's tests share it); in fast mode they train fewer steps."""
    if not fast():
        return load("graphs")._transcoder(kind)
    return FIXTURES.train(CONJ.model, CONJ.task, FIXTURES.MODEL, kind, "relu", n_steps=FIXTURES.STEPS)


def open_page() -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=120).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frame(at: AppTest, *columns: str) -> list[dict]:
    """The one dataframe on the page with these columns, as records."""
    (records,) = [df.value.to_dict("records") for df in at.dataframe if set(columns) <= set(df.value.columns)]
    return records


def chart_nodes(at: AppTest) -> list[dict]:
    """The node rows the interactive chart draws (filled and hollow)."""
    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    return [row for layer in spec["layer"] if layer["mark"]["type"] == "point" for row in layer["data"]["values"]]


def expected(tokens: torch.Tensor, kind: str = "per-layer", node_threshold: float = FIXTURES.NODE_THRESHOLD):
    graph = FIXTURES.graph(CONJ.model, transcoder(kind), tokens)
    pruned = graph.prune(node_threshold, FIXTURES.EDGE_THRESHOLD)
    on, _ = true_feature_circuit(CONJ.truth, CONJ.task, tokens, FIXTURES.answer(CONJ.task, tokens))
    mapped, _ = map_nodes(graph, CONJ.truth, CONJ.task, on)
    kept = {mapped[i] for i in pruned.node_mask.nonzero().flatten().tolist()} - {None}
    return graph, pruned, on, on & kept, on - kept


def check_graph(at: AppTest, tokens: torch.Tensor, kind: str = "per-layer",
                node_threshold: float = FIXTURES.NODE_THRESHOLD) -> None:
    """The scores, the chart's statuses and the truth table are those of the graph computed here."""
    graph, pruned, on, found, missed = expected(tokens, kind, node_threshold)
    replacement, completeness = graph.scores()
    shown = metrics(at)
    assert shown["Replacement score"] == f"{replacement:.3f}" and shown["Completeness score"] == f"{completeness:.3f}"
    assert shown["Features kept"] == f"{len(pruned.features())} of {len(graph.indices('feature'))}"
    nodes = chart_nodes(at)
    assert {row["truth"] for row in nodes if row["status"] == FOUND} == found
    assert {row["truth"] for row in nodes if row["status"] == MISSED} == missed
    assert sorted(row["index"] for row in nodes if row["index"] >= 0) == pruned.node_mask.nonzero().flatten().tolist()
    rows = frame(at, "true feature", "status")
    assert {row["true feature"] for row in rows} == on
    assert {row["true feature"] for row in rows if row["status"] == "found"} == found


def test_the_page_starts_on_the_lessons_prompt_and_shows_its_graph_against_the_truth():
    at = open_page()
    assert at.selectbox(key="ag_model").value == FIXTURES.MODEL
    a, b = CONJ.task.pairs[FIXTURES.PAIR].tolist()
    assert (at.selectbox(key="ag_a").value, at.selectbox(key="ag_b").value) == (a, b)
    tokens = FIXTURES.prompt(CONJ.task)
    check_graph(at, tokens)
    # the kept features' table carries their top activating inputs, which the chart's tooltips carry too
    features = frame(at, "feature", "top activating inputs")
    tooltips = {row["label"]: row["top_inputs"] for row in chart_nodes(at) if row["kind"] == "feature"}
    for row in features:
        assert row["top activating inputs"] and tooltips[row["feature"]].split(" (")[0] in row["top activating inputs"]


def test_the_widgets_change_the_graph():
    at = open_page()
    before = metrics(at)["Features kept"]
    at.slider(key="ag_node").set_value(0.99).run()
    assert not at.exception, at.exception
    assert metrics(at)["Features kept"] != before
    check_graph(at, FIXTURES.prompt(CONJ.task), node_threshold=0.99)

    at.slider(key="ag_node").set_value(FIXTURES.NODE_THRESHOLD)
    at.radio(key="ag_kind").set_value("skip").run()
    assert not at.exception, at.exception
    check_graph(at, FIXTURES.prompt(CONJ.task), kind="skip")

    a, b = CONJ.task.pairs[3].tolist()  # another marked pair, in the other order
    at.selectbox(key="ag_a").set_value(b)
    at.selectbox(key="ag_b").set_value(a).run()
    assert not at.exception, at.exception
    check_graph(at, FIXTURES.prompt(CONJ.task, 3, swap=True), kind="skip")

    at.toggle(key="ag_truth").set_value(False).run()
    assert not at.exception, at.exception
    assert {row["status"] for row in chart_nodes(at)} == {"no feature truth"}
    assert not [df for df in at.dataframe if "true feature" in df.value.columns]
    assert any("Ground truth hidden" in c.value for c in at.caption)

    at.selectbox(key="ag_a").set_value(b)
    at.selectbox(key="ag_b").set_value(b).run()
    assert not at.exception, at.exception
    assert any("two different features" in w.value for w in at.warning) and not at.metric
