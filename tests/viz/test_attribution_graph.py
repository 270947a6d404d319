"""The attribution graph's figures: the rows they draw, node statuses as validate.feature_graphs.map_nodes names
the nodes, the Altair chart's data and tooltips, the matplotlib plot's truth outlines. Graphs of conjunctions with
an untrained transcoder, one of whose features is planted on a declared conjunction (no training)."""

import io

import pytest
import torch
from matplotlib.figure import Figure

from toylab import sae, viz, zoo
from toylab.methods import attribution_graph
from toylab.validate.feature_graphs import map_nodes, true_feature_circuit
from toylab.viz.attribution_graph import EXTRA, FOUND, MISSED, NO_TRUTH

PLANTED = 5  # the latent planted on the prompt's conjunction


@pytest.fixture(scope="module")
def conj():
    return zoo.load("conjunctions")


def _graph(conj, plant: bool):
    """The graph of [BOS, a, b, =] for the first marked pair, and what the truth says of it."""
    task, truth = conj.task, conj.truth
    tc = sae.Transcoder(sae.TranscoderConfig(n_layers=1, d_in=32, d_out=32, d_latent=8, architecture="relu"))
    name = task.output_names[1]
    with torch.no_grad():
        tc.b_enc.fill_(-1e3)  # nothing fires ...
        if plant:  # ... but the planted feature, everywhere, writing the conjunction's direction
            feature = next(f for f in truth.features if f.name == name)
            tc.W_dec[0, 0, PLANTED] = torch.tensor(feature.vector)
            tc.b_enc[0, PLANTED] = 1.0
    tokens = task.make_batch(task.pairs[:1, 0], task.pairs[:1, 1]).tokens[0]
    with torch.no_grad():
        graph = attribution_graph(conj.model, tc.requires_grad_(False), tokens)
    on, _ = true_feature_circuit(truth, task, tokens, 1)
    mapped, _ = map_nodes(graph, truth, task, on)
    return graph, graph.prune(1.0, 1.0), mapped, on, name


def test_node_statuses_are_map_nodes_names_of_the_kept_nodes(conj):
    graph, pruned, mapped, on, name = _graph(conj, plant=True)
    rows, edges = viz.graph_table(pruned, conj.task, mapped, on, conj.truth)
    kept = pruned.node_mask.nonzero().flatten().tolist()
    by_index = {row["index"]: row for row in rows if row["index"] >= 0}
    assert sorted(by_index) == kept
    for i in kept:
        want = FOUND if mapped[i] in on else EXTRA
        assert by_index[i]["status"] == want and by_index[i]["truth"] == (mapped[i] or "")
    planted = [by_index[i] for i in kept if graph.nodes[i].kind == "feature" and graph.nodes[i].pos == 3]
    assert [(row["status"], row["truth"], row["kind"]) for row in planted] == [(FOUND, name, "feature")]
    assert {row["truth"] for row in rows if row["status"] == FOUND} == on  # the inputs, the conjunction, the logit
    assert not [row for row in rows if row["status"] == MISSED]
    # layout: tokens at the bottom, layer 0 above, the logits on top; each node at its position's column
    assert {row["kind"]: row["y"] for row in rows} == {"token": 0, "feature": 1, "error": 1, "logit": 2}
    assert all(abs(row["x"] - row["pos"]) < 0.5 for row in rows)
    assert len(edges) == int(pruned.edge_mask.sum()) and all(e["abs_weight"] == abs(e["weight"]) for e in edges)


def test_a_true_feature_the_graph_lacks_is_drawn_hollow_at_its_site(conj):
    _, pruned, mapped, on, name = _graph(conj, plant=False)
    assert name not in mapped  # no feature fires: nothing maps onto the conjunction
    rows, _ = viz.graph_table(pruned, conj.task, mapped, on, conj.truth)
    (missed,) = [row for row in rows if row["status"] == MISSED]
    assert (missed["truth"], missed["kind"], missed["layer"], missed["pos"], missed["y"]) == (name, "feature", 0, 3, 1)
    assert missed["index"] == -1
    chart = viz.graph_chart(pruned, conj.task, mapped, on, conj.truth).to_dict()
    hollow = [layer for layer in chart["layer"] if layer["mark"].get("filled") is False]
    assert [row["truth"] for row in hollow[0]["data"]["values"]] == [name]
    fig = viz.attribution_graph_plot(pruned, conj.task, mapped, on, conj.truth)
    assert len(viz.truth_outlines(fig)) == len(on)  # three found (outlined), one missed (a dashed outline)


def test_the_charts_tooltips_carry_the_top_inputs_the_truth_and_the_cosine(conj):
    graph, pruned, mapped, on, name = _graph(conj, plant=True)
    i = next(i for i, n in enumerate(graph.nodes) if n.kind == "feature" and n.pos == 3)
    tops = {i: [("f3 f6 =", 12.5), ("f6 f3 =", 11.25)]}
    chart = viz.graph_chart(pruned, conj.task, mapped, on, conj.truth, cosines={i: 0.97}, top_inputs=tops).to_dict()
    nodes = next(layer for layer in chart["layer"] if layer["mark"].get("filled") is True)
    fields = [t["field"] for t in nodes["encoding"]["tooltip"]]
    assert {"label", "value", "influence", "truth", "cosine", "top_inputs"} <= set(fields)
    (row,) = [r for r in nodes["data"]["values"] if r["index"] == i]
    assert row["top_inputs"] == "f3 f6 = (12.50); f6 f3 = (11.25)"
    assert (row["truth"], row["cosine"], row["status"]) == (name, 0.97, FOUND)
    assert row["value"] == pytest.approx(graph.nodes[i].value)
    domain = nodes["encoding"]["color"]["scale"]["domain"]
    assert domain == list(viz.attribution_graph.STATUSES)  # the same colours whatever a graph holds


def test_without_a_truth_every_node_is_unjudged(conj):
    _, pruned, _, _, _ = _graph(conj, plant=True)
    rows, _ = viz.graph_table(pruned, conj.task)
    assert {row["status"] for row in rows} == {NO_TRUTH} and all(row["index"] >= 0 for row in rows)
    fig = viz.graph_chart(pruned)  # no task either: ids for names
    assert len(fig.to_dict()["layer"]) == 3  # edges, nodes, labels: no hollow nodes
    plot = viz.attribution_graph_plot(pruned, conj.task, title="bare")
    assert isinstance(plot, Figure) and viz.truth_outlines(plot) == []
    buf = io.BytesIO()
    plot.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG")


def test_bad_inputs_are_refused(conj):
    _, pruned, mapped, on, _ = _graph(conj, plant=True)
    with pytest.raises(ValueError, match="mapped names"):
        viz.graph_table(pruned, conj.task, mapped[:-1], on, conj.truth)
    with pytest.raises(ValueError, match="or neither"):
        viz.graph_table(pruned, conj.task, mapped, None, conj.truth)
