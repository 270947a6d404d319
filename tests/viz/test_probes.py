import io

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from toylab import viz


def _outlined(fig):
    return sorted((ax.get_title(), round(r.get_y() + 0.5), round(r.get_x() + 0.5))
                  for ax in fig.axes for r in ax.findobj(lambda a: a.get_gid() == viz.TRUTH_GID))


def test_probe_map_outlines_the_truth_in_both_panels_and_renders():
    acc, sel = torch.rand(3, 4), torch.rand(3, 4) - 0.5
    fig = viz.probe_map(acc, sel, ["embed", "mid", "post"], ["BOS", "r0", "s1", "="], "probes", highlight={(2, 2)})
    assert isinstance(fig, Figure)
    assert [(r, c) for _, r, c in _outlined(fig)] == [(2, 2), (2, 2)]
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG")


def test_tracing_map_outlines_only_the_named_kind():
    scores = {"resid_post": np.random.rand(2, 4), "mlp_out": np.random.rand(2, 4)}
    fig = viz.tracing_map(scores, ["BOS", "r0", "s1", "="], highlight={"mlp_out": {(0, 2)}})
    assert _outlined(fig) == [("restore mlp_out", 0, 2)]
    assert viz.truth_outlines(viz.tracing_map(scores, ["a", "b", "c", "d"])) == []


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        viz.probe_map(np.zeros((2, 3)), np.zeros((3, 2)), ["a", "b"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="not among the traced"):
        viz.tracing_map({"mlp_out": np.zeros((2, 4))}, list("abcd"), highlight={"attn_out": {(0, 0)}})
    with pytest.raises(ValueError, match="outside the grid"):
        viz.tracing_map({"mlp_out": np.zeros((2, 4))}, list("abcd"), highlight={"mlp_out": {(2, 0)}})
    with pytest.raises(ValueError, match="same shape"):
        viz.tracing_map({"a": np.zeros((2, 4)), "b": np.zeros((2, 3))}, list("abcd"))
