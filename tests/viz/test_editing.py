import io

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from toylab import viz


def _outlined(fig):
    return sorted((ax.get_title(), round(r.get_y() + 0.5), round(r.get_x() + 0.5))
                  for ax in fig.axes for r in ax.findobj(lambda a: a.get_gid() == viz.TRUTH_GID))


def test_editing_map_outlines_each_facts_store_in_both_panels_and_renders():
    trace = torch.tensor([[0.8, 0.1], [-0.1, 0.5], [0.3, 0.2]])
    scores = torch.tensor([[1.0, 0.9], [0.95, 1.0], [float("nan"), 0.5]])
    fig = viz.editing_map(trace, scores, ["s0 r0", "s30 r1", "s5 r2"], (0, 1), stored=[0, 1, None], title="t")
    assert isinstance(fig, Figure)
    assert sorted((r, c) for _, r, c in _outlined(fig)) == [(0, 0), (0, 0), (1, 1), (1, 1)]
    assert len({title for title, _, _ in _outlined(fig)}) == 2  # both panels
    assert [ax.get_xticklabels()[1].get_text() for ax in fig.axes[:2]] == ["MLP1", "MLP1"]
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG")


def test_editing_map_without_a_truth_outlines_nothing_and_labels_the_layers_given():
    fig = viz.editing_map(np.random.rand(2, 3), np.random.rand(2, 3), ["a", "b"], [0, 2, 5])
    assert viz.truth_outlines(fig) == []
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["MLP0", "MLP2", "MLP5"]


def test_editing_map_refuses_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        viz.editing_map(np.zeros((2, 2)), np.zeros((2, 3)), ["a", "b"], [0, 1])
    with pytest.raises(ValueError, match="labels"):
        viz.editing_map(np.zeros((2, 2)), np.zeros((2, 2)), ["a"], [0, 1])
    with pytest.raises(ValueError, match="layers"):
        viz.editing_map(np.zeros((2, 2)), np.zeros((2, 2)), ["a", "b"], [0, 1, 2])
    with pytest.raises(ValueError, match="not among the layers"):
        viz.editing_map(np.zeros((2, 2)), np.zeros((2, 2)), ["a", "b"], [0, 1], stored=[0, 2])
    with pytest.raises(ValueError, match="stored gives 1"):
        viz.editing_map(np.zeros((2, 2)), np.zeros((2, 2)), ["a", "b"], [0, 1], stored=[0])
