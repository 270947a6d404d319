"""The interactive twins: each chart builds a valid Vega-Lite spec from its figure's arguments, shows the values
a tooltip reads, and outlines exactly the cells or bars the truth names."""

import numpy as np
import pytest

from toylab import viz
from toylab.viz import interactive as iv
from toylab.zoo.grokking import load_shipped_progress


def _values(chart):
    spec = chart.to_dict()
    rows = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("values"), list):
                rows.extend(node["values"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    return rows


def test_heatmap_chart_carries_every_value_and_outlines_the_truth():
    values = np.arange(6.0).reshape(2, 3) - 2
    chart = iv.heatmap_chart(values, ["L0", "L1"], ["a", "b", "c"], "effect", highlight={(1, 2)})
    rows = {(r["row"], r["col"]): r["value"] for r in _values(chart)}
    assert rows[("L1", "c")] == 3.0 and rows[("L0", "a")] == -2.0
    assert iv.chart_truth(chart) == 1
    with pytest.raises(ValueError, match="outside the grid"):
        iv.heatmap_chart(values, ["L0", "L1"], ["a", "b", "c"], highlight={(2, 0)})


def test_head_heatmap_and_attention_charts_take_their_figures_arguments():
    scores = np.random.default_rng(0).random((2, 4))
    assert iv.chart_truth(iv.head_heatmap_chart(scores, "induction score", highlight={"L1H1", "L0H3"})) == 2
    with pytest.raises(ValueError, match="not a head"):
        iv.head_heatmap_chart(scores, highlight={"MLP0"})
    pattern = np.tril(np.ones((4, 4))) / np.arange(1, 5)[:, None]
    chart = iv.attention_chart(pattern, ["<s>", "a", "b", "a"], highlight={(3, 2)})
    assert iv.chart_truth(chart) == 1
    assert {r["row"] for r in _values(chart)} == {"0:<s>", "1:a", "2:b", "3:a"}


def test_bar_and_curve_charts():
    chart = iv.bar_chart([0.5, -0.2], ["L0H1", "MLP0"], highlight={"L0H1"})
    assert iv.chart_truth(chart) == 1
    history = [{"step": s, "train/loss": 1 / (s + 1), "test/accuracy": s / 10} for s in range(10)]
    assert {r["series"] for r in _values(iv.training_curves_chart(history))} == {"train/loss", "test/accuracy"}
    measures = load_shipped_progress("modadd-113")
    chart = iv.progress_curves_chart(measures, step=int(measures.steps[3]), title="modadd")
    assert any(r.get("phase") == "cleanup" for r in _values(chart))


def test_every_interactive_twin_is_registered_against_its_figure():
    assert iv.INTERACTIVE[viz.heatmap] is iv.heatmap_chart
    assert iv.INTERACTIVE[viz.progress_curves] is iv.progress_curves_chart
    assert iv.INTERACTIVE[viz.probe_map] is iv.probe_map_chart
    assert len(iv.INTERACTIVE) == 8


def test_probe_and_tracing_charts_outline_the_truth_where_their_figures_do():
    acc, sel = np.random.rand(3, 4), np.random.rand(3, 4) - 0.5
    chart = iv.probe_map_chart(acc, sel, ["embed", "mid", "post"], ["BOS", "r0", "s1", "="], "probes", highlight={(2, 2)})
    assert iv.chart_truth(chart) == 2  # the cell, in both panels
    assert len(_values(chart)) == 2 * 12
    scores = {"resid_post": np.random.rand(2, 4), "attn_out": np.random.rand(2, 4), "mlp_out": np.random.rand(2, 4)}
    chart = iv.tracing_map_chart(scores, ["BOS", "r0", "s1", "="], "trace", highlight={"mlp_out": {(0, 2)}})
    assert iv.chart_truth(chart) == 1 and len(_values(chart)) == 3 * 8
    assert chart.to_dict() == iv.tracing_map_chart(scores, ["BOS", "r0", "s1", "="], "trace",
                                                   highlight={"mlp_out": {(0, 2)}}).to_dict()
    with pytest.raises(ValueError, match="not among the traced"):
        iv.tracing_map_chart({"mlp_out": np.zeros((2, 4))}, list("abcd"), highlight={"attn_out": {(0, 0)}})
    with pytest.raises(ValueError, match="same shape"):
        iv.probe_map_chart(np.zeros((2, 3)), np.zeros((3, 2)), ["a", "b"], ["x", "y", "z"])
