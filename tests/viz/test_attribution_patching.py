"""Attribution patching's figures: the rows they draw (matched by str, largest gap first), the matplotlib scatter's
truth rings and Pearson r, the Altair chart's data and tooltips, and EAP-IG against its steps. Plain data, and one
real comparison of EAP with edge patching on induction-siit."""

import io
import json

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from toylab import methods, viz, zoo
from toylab.components import Edge

ESTIMATE = {"L0H2": 0.03, "L1H1": 0.97, "L1H0": 0.01, "MLP0": -0.2}
REAL = {"L0H2": 0.58, "L1H1": 0.97, "L1H0": 0.012, "MLP0": -0.1}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_the_table_pairs_each_component_and_sorts_by_gap():
    rows = viz.scatter_table(ESTIMATE, REAL, truth={"L0H2", "L1H1"})
    assert [r["component"] for r in rows] == ["L0H2", "MLP0", "L1H0", "L1H1"]
    assert rows[0] == {"component": "L0H2", "real": 0.58, "estimate": 0.03, "gap": pytest.approx(-0.55),
                       "truth": True}
    assert [r["truth"] for r in rows] == [True, False, False, True]
    edge = Edge("L0H2", "L1H1", "k")  # keys of another type match by str
    assert viz.scatter_table({str(edge): 0.1}, {edge: 0.5}, truth=[edge])[0]["truth"]


def test_the_scatter_rings_the_truth_and_gives_pearsons_r():
    fig = viz.attribution_scatter(ESTIMATE, REAL, truth={"L0H2", "L1H1"}, title="heads")
    assert isinstance(fig, Figure)
    (rings,) = viz.truth_outlines(fig)  # one scatter of rings, one per truth point
    assert len(rings.get_offsets()) == 2
    r = np.corrcoef([REAL[k] for k in REAL], [ESTIMATE[k] for k in REAL])[0, 1]
    assert f"Pearson r = {r:.2f}" in fig.axes[0].get_title() and "heads" in fig.axes[0].get_title()
    assert _png(fig).startswith(b"\x89PNG")
    assert viz.truth_outlines(viz.attribution_scatter(ESTIMATE, REAL)) == []
    constant = viz.attribution_scatter({"a": 1.0, "b": 1.0}, {"a": 0.0, "b": 1.0})
    assert "Pearson r = n/a" in constant.axes[0].get_title()


def test_the_chart_holds_every_point_with_its_tooltip():
    chart = viz.attribution_chart(ESTIMATE, REAL, truth={"L1H1"}, title="t")
    spec = chart.to_dict()
    diagonal, points = spec["layer"]
    data = points["data"]["values"]
    assert {row["component"]: (row["estimate"], row["real"]) for row in data} == \
        {k: (ESTIMATE[k], REAL[k]) for k in REAL}
    assert {row["component"] for row in data if row["in truth"] == "ground truth"} == {"L1H1"}
    assert [t["field"] for t in points["encoding"]["tooltip"]] == ["component", "estimate", "real", "gap", "in truth"]
    assert points["encoding"]["color"]["scale"]["range"][0] == viz.TRUTH_COLOR
    assert [row["real"] for row in diagonal["data"]["values"]] == [row["estimate"] for row in diagonal["data"]["values"]]
    json.dumps(spec)  # what Streamlit sends the browser


def test_a_real_comparison_on_induction_siit():
    """EAP against edge patching: the truth's edges are ringed, and the understated K-composition edge is the point
    farthest below the diagonal."""
    zm = zoo.load("induction-siit")
    pair = zm.task.counterfactual(16, seed=0)
    with torch.no_grad():
        eap, real = methods.eap(zm.model, pair), methods.edge_patching(zm.model, pair)
    rows = viz.scatter_table(eap.scores, real.scores, zm.truth.edges)
    assert len(rows) == len(real.scores) and sum(r["truth"] for r in rows) == len(zm.truth.edges)
    assert rows[0]["truth"] and rows[0]["gap"] < -0.4
    fig = viz.attribution_scatter(eap.scores, real.scores, truth=zm.truth.edges)
    assert len(viz.truth_outlines(fig)[0].get_offsets()) == len(zm.truth.edges)


def test_ig_steps_plot_draws_a_line_per_component_with_its_real_patch():
    steps = [1, 2, 4, 16]
    fig = viz.ig_steps_plot(steps, {"q edge": [0.0, 4.8, 2.4, 0.98], "v edge": [0.02, 4.9, 2.5, 1.01]},
                            {"q edge": 0.97, "v edge": 1.0}, tolerance=0.05, eap={"q edge": 0.0, "v edge": 0.02})
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == len(steps)]
    assert len(lines) == 2 and list(lines[0].get_ydata()) == [0.0, 4.8, 2.4, 0.98]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["EAP", "1", "2", "4", "16"]
    assert _png(fig).startswith(b"\x89PNG")


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="empty"):
        viz.scatter_table({}, {})
    with pytest.raises(ValueError, match="no estimate"):
        viz.attribution_scatter({"a": 1.0}, {"a": 1.0, "b": 0.5})
    with pytest.raises(ValueError, match="finite"):
        viz.attribution_chart({"a": float("nan")}, {"a": 1.0})
    with pytest.raises(ValueError, match="increasing"):
        viz.ig_steps_plot([4, 2], {"a": [1, 2]}, {"a": 1})
    with pytest.raises(ValueError, match="scores for"):
        viz.ig_steps_plot([1, 2], {"a": [1]}, {"a": 1})
    with pytest.raises(ValueError, match="no real score"):
        viz.ig_steps_plot([1, 2], {"a": [1, 2]}, {"b": 1})
