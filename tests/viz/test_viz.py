import io

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from toylab import viz


def _render(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _outlined_cells(fig: Figure) -> set[tuple[int, int]]:
    """(row, col) of each ground-truth outline, read back from its rectangle."""
    return {(round(r.get_y() + 0.5), round(r.get_x() + 0.5)) for r in viz.truth_outlines(fig)}


def _legend_texts(fig: Figure) -> list[str]:
    legends = [fig.legends, *([ax.get_legend()] for ax in fig.axes if ax.get_legend())]
    return [t.get_text() for group in legends for legend in group for t in legend.get_texts()]


def test_head_heatmap_outlines_the_named_heads_with_a_legend():
    scores = torch.rand(2, 4)
    fig = viz.head_heatmap(scores, "induction", highlight={"L1H1", "L0H3"})
    assert isinstance(fig, Figure)
    assert _outlined_cells(fig) == {(1, 1), (0, 3)}
    assert viz.TRUTH_LABEL in _legend_texts(fig)
    assert _render(fig).startswith(b"\x89PNG")


def test_no_highlight_means_no_outline_and_no_legend():
    fig = viz.head_heatmap(np.zeros((2, 2)), "x")
    assert viz.truth_outlines(fig) == []
    assert _legend_texts(fig) == []


def test_head_heatmap_rejects_bad_input():
    with pytest.raises(ValueError, match=r"2-D"):
        viz.head_heatmap(np.zeros(4), "x")
    with pytest.raises(ValueError, match="outside"):
        viz.head_heatmap(np.zeros((2, 2)), "x", highlight={"L2H0"})
    with pytest.raises(ValueError, match="not a head id"):
        viz.head_heatmap(np.zeros((2, 2)), "x", highlight={"MLP0"})
    with pytest.raises(ValueError, match="not a component id"):
        viz.head_heatmap(np.zeros((2, 2)), "x", highlight={"head 1"})


def test_attention_pattern_labels_positions_and_outlines_cells():
    pattern = torch.tril(torch.ones(5, 5))
    pattern = pattern / pattern.sum(-1, keepdim=True)
    tokens = ["BOS", "t1", "t2", "t1", "t2"]
    fig = viz.attention_pattern(pattern, tokens, title="L1H1", highlight={(3, 2), (4, 3)})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{i}:{t}" for i, t in enumerate(tokens)]
    assert ax.get_title() == "L1H1"
    assert _outlined_cells(fig) == {(3, 2), (4, 3)}
    _render(fig)


def test_attention_pattern_rejects_bad_shapes():
    with pytest.raises(ValueError, match="square"):
        viz.attention_pattern(np.zeros((3, 4)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="str_tokens"):
        viz.attention_pattern(np.zeros((3, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="3-D|2-D"):
        viz.attention_pattern(np.zeros((1, 3, 3)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="outside"):
        viz.attention_pattern(np.zeros((3, 3)), ["a", "b", "c"], highlight={(3, 0)})


def test_heatmap_diverging_is_centred_and_outlines_cells():
    values = np.array([[-2.0, 1.0, 0.5], [0.0, 0.25, -0.5]])
    fig = viz.heatmap(values, ["L0", "L1"], ["p0", "p1", "p2"], "patching", highlight={(1, 2)})
    image = fig.axes[0].get_images()[0]
    assert image.get_clim() == (-2.0, 2.0)
    assert _outlined_cells(fig) == {(1, 2)}
    _render(fig)
    fig = viz.heatmap(values, ["L0", "L1"], ["p0", "p1", "p2"], diverging=False)
    assert fig.axes[0].get_images()[0].get_clim() == (-2.0, 1.0)


def test_heatmap_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="row_labels: 1 labels for 2"):
        viz.heatmap(np.zeros((2, 3)), ["L0"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="col_labels"):
        viz.heatmap(np.zeros((2, 3)), ["L0", "L1"], ["a", "b"])
    with pytest.raises(ValueError, match="numeric"):
        viz.heatmap([["a", "b"]], ["L0"], ["a", "b"])


def test_bar_outlines_highlighted_bars():
    fig = viz.bar([0.1, -0.3, 0.9], ["L0H0", "L0H1", "L1H1"], "attribution", highlight={"L1H1"})
    outlined = viz.truth_outlines(fig)
    assert len(outlined) == 1 and outlined[0].get_height() == pytest.approx(0.9)
    assert viz.TRUTH_LABEL in _legend_texts(fig)
    _render(fig)
    with pytest.raises(ValueError, match="not among the labels"):
        viz.bar([1.0], ["a"], highlight={"b"})
    with pytest.raises(ValueError, match="labels"):
        viz.bar([1.0, 2.0], ["a"])


def test_training_curves_split_loss_and_accuracy():
    history = [{"step": s, "test/loss": 1.0 / (s + 1), "test/accuracy": s / 10} for s in range(0, 11, 5)]
    fig = viz.training_curves(history, "run")
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["test/loss"]
    assert [line.get_label() for line in acc_ax.get_lines()] == ["test/accuracy"]
    _render(fig)
    with pytest.raises(ValueError, match="empty"):
        viz.training_curves([])


def test_figures_stay_out_of_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    viz.head_heatmap(np.zeros((2, 2)), "x")
    assert plt.get_fignums() == before


def test_the_grokking_phases_legend_overlaps_neither_the_title_nor_a_panel():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from toylab.zoo.grokking import load_shipped_progress

    fig = viz.progress_curves(load_shipped_progress("modadd-113"), step=100, title="modadd-113: a long title here")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    assert not legend.overlaps(fig._suptitle.get_window_extent(renderer))
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_window_extent(renderer))
        assert not legend.overlaps(ax.title.get_window_extent(renderer))
