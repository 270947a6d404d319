"""Figures of the logit lens and direct logit attribution: the truth outlined where it is named, blanks where nothing
is scored, the interactive charts carrying the same cells, and clear errors on bad input."""

import io

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from toylab import viz

STAGES = ["resid_pre 0", "resid_pre 1", "resid_post 1"]
TOKENS = ["BOS", "t1", "t2", "t1"]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _lens_values() -> np.ndarray:
    values = -np.random.default_rng(0).random((3, 4))
    values[:, :2] = np.nan  # nothing scored in the first half
    return values


def test_logit_lens_plot_outlines_the_truth_cells_and_writes_the_decoded_tokens():
    top = [["a", "b", "c", "d"], ["e", "f", "g", "h"], ["i", "j", "k", "l"]]
    fig = viz.logit_lens_plot(_lens_values(), STAGES, TOKENS, top_tokens=top, highlight={(2, 2), (2, 3)}, title="t")
    assert isinstance(fig, Figure) and _png(fig).startswith(b"\x89PNG")
    outlined = {(round(r.get_y() + 0.5), round(r.get_x() + 0.5)) for r in viz.truth_outlines(fig)}
    assert outlined == {(2, 2), (2, 3)}
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"a", "l"} <= texts
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == STAGES
    assert viz.truth_outlines(viz.logit_lens_plot(torch.tensor(_lens_values()), STAGES, TOKENS)) == []


def test_dla_plot_draws_a_bar_per_series_and_outlines_the_truths_components():
    components = ["embed", "L0H0", "L1H1", "bias"]
    fig = viz.dla_plot({"frozen": [0.1, 0.0, 5.0, 0.2], "own scale": torch.tensor([0.5, -1.0, 4.0, 0.7])},
                       components, truth={"L1H1"})
    bars = [p for p in fig.axes[0].patches]
    assert len(bars) == 8
    assert len(viz.truth_outlines(fig)) == 2  # L1H1's bar in each series
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["frozen", "own scale"]
    _png(fig)
    assert viz.truth_outlines(viz.dla_plot({"one": [1, 2, 3, 4]}, components)) == []


def test_source_plot_outlines_the_truths_rows_whole():
    values = np.random.default_rng(1).normal(size=(4, 4))
    fig = viz.source_plot(values, ["L0H0", "L0H1", "L1H0", "L1H1"], TOKENS, truth={"L1H1", "L0H1"})
    rows = sorted(round(r.get_y() + 0.5) for r in viz.truth_outlines(fig))
    assert rows == [1, 3] and all(r.get_width() == 4 for r in viz.truth_outlines(fig))
    _png(fig)


def test_the_charts_carry_every_cell_and_flag_the_truths():
    chart = viz.lens_chart(_lens_values(), STAGES, TOKENS, top_tokens=[["x"] * 4] * 3, highlight={(1, 3)})
    spec = chart.to_dict()
    cells = spec["layer"][0]["data"]["values"]
    assert len(cells) == 12 and cells[0] == {"row": "resid_pre 0", "col": "0:BOS", "value": None, "truth": False,
                                               "top": "x"}
    assert [(c["row"], c["col"]) for c in cells if c["truth"]] == [("resid_pre 1", "3:t1")]
    assert len(spec["layer"]) == 3  # cells, decoded tokens, outlines
    source = viz.source_chart(np.ones((2, 4)), ["L0H0", "L1H1"], TOKENS, truth={"L1H1"}).to_dict()
    flagged = {c["row"] for c in source["layer"][0]["data"]["values"] if c["truth"]}
    assert flagged == {"L1H1"}


def test_bad_inputs_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="stages"):
        viz.logit_lens_plot(_lens_values(), STAGES[:2], TOKENS)
    with pytest.raises(ValueError, match="str_tokens"):
        viz.logit_lens_plot(_lens_values(), STAGES, TOKENS[:3])
    with pytest.raises(ValueError, match="outside the grid"):
        viz.logit_lens_plot(_lens_values(), STAGES, TOKENS, highlight={(3, 0)})
    with pytest.raises(ValueError, match="top_tokens"):
        viz.lens_chart(_lens_values(), STAGES, TOKENS, top_tokens=[["a"]])
    with pytest.raises(ValueError, match="not among the components"):
        viz.dla_plot({"a": [1.0, 2.0]}, ["L0H0", "L0H1"], truth={"MLP0"})
    with pytest.raises(ValueError, match="has 3 values for 2 components"):
        viz.dla_plot({"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]}, ["L0H0", "L0H1"])
    with pytest.raises(ValueError, match="series is empty"):
        viz.dla_plot({}, ["L0H0"])
    with pytest.raises(ValueError, match="not among the rows"):
        viz.source_chart(np.ones((1, 4)), ["L0H0"], TOKENS, truth={"L1H1"})
