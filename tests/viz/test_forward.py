"""toylab.viz.forward: one head's masked scores and pattern, as a matplotlib figure (lessons) and an Altair chart
(the lab), with the masked keys drawn apart and the truth outlined."""

import io
import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from toylab import viz

TOKENS = ["BOS", "t1", "t2", "t1"]


def head(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal scores [query_pos, key_pos] (-inf above the diagonal) and their softmax."""
    scores = torch.randn(n, n, generator=torch.Generator().manual_seed(seed))
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return scores, scores.softmax(-1)


def test_qk_heatmaps_draws_masked_keys_grey_and_both_panels_and_renders():
    scores, pattern = head()
    fig = viz.qk_heatmaps(scores, pattern, TOKENS, title="L1H1")
    assert isinstance(fig, Figure)
    score_ax, pattern_ax = fig.axes[:2]
    masked, finite = (image.get_array() for image in score_ax.get_images())
    assert np.array_equal(~np.ma.getmaskarray(masked) & ~np.isnan(np.ma.filled(masked, np.nan)),
                          np.triu(np.ones((4, 4), bool), 1))  # the grey layer covers exactly the masked keys
    assert np.isnan(np.ma.filled(finite, np.nan)[0, 1]) and np.ma.filled(finite, np.nan)[1, 0] == pytest.approx(
        float(scores[1, 0]))
    assert np.allclose(pattern_ax.get_images()[0].get_array(), pattern.numpy())
    assert [t.get_text() for t in pattern_ax.get_xticklabels()] == ["0:BOS", "1:t1", "2:t2", "3:t1"]
    assert viz.truth_outlines(fig) == [] and not fig.legends
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG")


def test_qk_heatmaps_outlines_the_truth_in_both_panels_with_one_legend():
    scores, pattern = head()
    fig = viz.qk_heatmaps(scores, pattern, TOKENS, highlight={(3, 2)})
    cells = sorted((ax.get_title()[:6], round(r.get_y() + 0.5), round(r.get_x() + 0.5))
                   for ax in fig.axes for r in ax.findobj(lambda a: a.get_gid() == viz.TRUTH_GID))
    assert cells == [("patter", 3, 2), ("scores", 3, 2)]
    assert len(fig.legends) == 1


def test_qk_table_and_chart_carry_every_cell_with_masked_scores_as_null():
    scores, pattern = head(seed=1)
    rows = viz.qk_table(scores, pattern, TOKENS, highlight={(2, 1)})
    assert len(rows) == 16 and rows[1]["query"] == "0:BOS" and rows[1]["key"] == "1:t1"
    for row in rows:
        q, k = row["query_pos"], row["key_pos"]
        assert row["masked"] == (k > q) and (row["score"] is None) == (k > q)
        assert row["pattern"] == pytest.approx(float(pattern[q, k]))
        assert row["truth"] == ((q, k) == (2, 1))
    chart = viz.qk_chart(scores, pattern, TOKENS, title="L0H0", highlight={(2, 1)}).to_dict()
    assert chart["title"] == "L0H0" and len(chart["hconcat"]) == 2
    score_panel, pattern_panel = chart["hconcat"]
    assert len(score_panel["layer"]) == 3 and len(pattern_panel["layer"]) == 2  # + masked keys; + the truth
    values = chart["data"]["values"]  # one dataset, shared by every layer
    assert [(v["query_pos"], v["key_pos"], v["score"]) for v in values if v["masked"]] == \
        [(q, k, None) for q in range(4) for k in range(q + 1, 4)]
    assert math.isclose(max(abs(v["score"]) for v in values if v["score"] is not None),
                        score_panel["layer"][0]["encoding"]["color"]["scale"]["domain"][1], rel_tol=1e-6)


def test_forward_figures_refuse_bad_inputs():
    scores, pattern = head()
    with pytest.raises(ValueError, match="same shape"):
        viz.qk_heatmaps(scores, pattern[:3, :3], TOKENS)
    with pytest.raises(ValueError, match="square"):
        viz.qk_heatmaps(scores[:3], pattern[:3], TOKENS)
    with pytest.raises(ValueError, match="label every position"):
        viz.qk_table(scores, pattern, TOKENS[:3])
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        viz.qk_chart(scores.nan_to_num(nan=0.0, neginf=float("nan")), pattern, TOKENS)
