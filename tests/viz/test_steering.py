import io

import pytest
from matplotlib.figure import Figure

from toylab import viz
from toylab.methods import SteeringResult, SteeringScore


def _scores(alphas, success, preservation):
    return tuple(SteeringScore(a, s, p, None if p is None else 0.1, 10, 0 if p is None else 5)
                 for a, s, p in zip(alphas, success, preservation))


def _result(source, mode, alphas, success, preservation, chosen):
    sweep = _scores(alphas, success, preservation)
    held = next(s for s in sweep if s.alpha == chosen)
    return SteeringResult("v := 1", source, mode, sweep, held, {})


ADD = _result("diff-in-means", "add", (0.5, 1.0, 2.0), (0.2, 0.8, 0.6), (1.0, 0.8, 0.4), 1.0)
SET = _result("truth", "set", (0.5, 1.0), (0.6, 1.0), (1.0, 1.0), 1.0)


def _titles(fig):
    return [ax.get_title() for ax in fig.axes]


def test_one_column_per_mode_and_a_row_each_for_success_and_preservation():
    fig = viz.steering_curves({"diff-in-means": ADD, "truth": SET}, title="v := 1", marks={"add": 1.5})
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4 and _titles(fig)[:2] == ["additive steers", "setting steers"]
    assert [ax.get_ylabel() for ax in fig.axes] == ["success", "", "preservation", ""]
    assert len(viz.truth_outlines(fig)) == 2  # the ceiling's two lines
    assert any(line.get_linestyle() == "--" for line in fig.axes[0].get_lines())  # the mark
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG")


def test_plain_data_draws_the_same_and_preservation_na_drops_its_row():
    plain = {"mode": "add", "alpha": 1.0,
             "sweep": [{"alpha": a, "success": s, "preservation": None} for a, s in ((0.5, 0.1), (1.0, 0.3))]}
    fig = viz.steering_curves({"probe": plain})
    assert len(fig.axes) == 1 and "preservation n/a" in fig.get_suptitle()
    assert viz.truth_outlines(fig) == []
    only_add = viz.steering_curves({"diff-in-means": ADD})
    assert len(only_add.axes) == 2 and _titles(only_add)[0] == "additive steers"


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="empty"):
        viz.steering_curves({})
    with pytest.raises(ValueError, match="mode must be one of"):
        viz.steering_curves({"x": {"mode": "push", "sweep": [{"alpha": 1, "success": 1}]}})
    with pytest.raises(ValueError, match="non-empty sequence"):
        viz.steering_curves({"x": {"mode": "add", "sweep": []}})
    with pytest.raises(ValueError, match="positive"):
        viz.steering_curves({"x": {"mode": "add", "sweep": [{"alpha": 0, "success": 1}]}})
    with pytest.raises(ValueError, match="keyed by mode"):
        viz.steering_curves({"diff-in-means": ADD}, marks={"diff-in-means": 1.0})
