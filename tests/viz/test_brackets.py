import io

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from toylab import viz

TOKENS = ["BOS", "(", ")", ")", "(", "(", ")"]
BALANCE = [0, 1, 0, -1, 0, 1, 0]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_bracket_trace_outlines_the_flagged_positions_of_the_flag_panel_and_renders():
    negative = torch.tensor(BALANCE) < 0
    fig = viz.bracket_trace(TOKENS, torch.tensor(BALANCE), flags=torch.rand(7), negative=negative, title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    outlines = viz.truth_outlines(fig)
    assert len(outlines) == 1 and outlines[0].axes is fig.axes[1]  # the flag panel, at position 3
    assert round(outlines[0].get_x() + outlines[0].get_width() / 2) == 3
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == TOKENS
    assert list(fig.axes[0].get_lines()[-1].get_ydata()) == BALANCE
    assert _png(fig).startswith(b"\x89PNG")


def test_bracket_trace_without_flags_has_one_panel_and_no_truth():
    fig = viz.bracket_trace(TOKENS, BALANCE, negative=np.array(BALANCE) < 0)
    assert len(fig.axes) == 1 and viz.truth_outlines(fig) == []
    fig = viz.bracket_trace(TOKENS, BALANCE, flags=np.zeros(7))  # flags without a truth: nothing outlined
    assert len(fig.axes) == 2 and viz.truth_outlines(fig) == []


def test_failure_bars_outline_each_kinds_truth_in_its_own_panel():
    scores = {"dips": {"L0H1": 0.98, "MLP0": 0.99, "L1H0": 0.0}, "unclosed": {"L0H1": 0.99, "MLP0": 0.4, "L1H0": 0.07}}
    fig = viz.failure_bars(scores, truth={"dips": {"L0H1", "MLP0"}, "unclosed": {"L0H1"}}, title="t")
    assert [ax.get_title() for ax in fig.axes] == ["dips", "unclosed"]
    outlined = sorted((o.axes.get_title(), round(o.get_x() + o.get_width() / 2)) for o in viz.truth_outlines(fig))
    assert outlined == [("dips", 0), ("dips", 1), ("unclosed", 0)]
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["L0H1", "MLP0", "L1H0"]
    assert _png(fig).startswith(b"\x89PNG")
    assert viz.truth_outlines(viz.failure_bars(scores, bar=None)) == []


def test_the_brackets_figures_refuse_bad_inputs():
    with pytest.raises(ValueError, match="label every position"):
        viz.bracket_trace(TOKENS[:-1], BALANCE)
    with pytest.raises(ValueError, match="flags has 6 positions"):
        viz.bracket_trace(TOKENS, BALANCE, flags=np.zeros(6))
    with pytest.raises(ValueError, match="negative has 3 positions"):
        viz.bracket_trace(TOKENS, BALANCE, flags=np.zeros(7), negative=[True, False, True])
    with pytest.raises(ValueError, match="1-D"):
        viz.bracket_trace(TOKENS, np.zeros((7, 2)))
    with pytest.raises(ValueError, match="empty"):
        viz.failure_bars({})
    with pytest.raises(ValueError, match="not among the components"):
        viz.failure_bars({"dips": {"L0H1": 1.0}}, truth={"dips": {"MLP9"}})
    with pytest.raises(ValueError, match="lacks"):
        viz.failure_bars({"dips": {"L0H1": 1.0}}, truth={"unclosed": set()})
