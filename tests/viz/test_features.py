"""Feature figures: geometry, phase map, dimensionality, latent cosines."""

import math

import numpy as np
import pytest
import torch

from toylab import viz


def pentagon():
    a = torch.arange(5) * 2 * math.pi / 5
    return torch.stack([a.cos(), a.sin()])  # [hidden, feature]


def test_feature_geometry_draws_one_arrow_per_feature_and_truth_dashed():
    fig = viz.feature_geometry(pentagon(), importance=torch.linspace(1, 0.5, 5), truth=0.9 * pentagon())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts if t.get_text()] == [f"f{i}" for i in range(5)]
    assert len([t for t in ax.texts if not t.get_text()]) == 5  # the arrows (annotations with no text)
    assert len(viz.truth_outlines(fig)) == 5  # one dashed truth line per true direction
    assert len(viz.truth_outlines(viz.feature_geometry(pentagon()))) == 0


def test_feature_geometry_rejects_other_widths():
    with pytest.raises(ValueError, match="2-d hidden space"):
        viz.feature_geometry(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="importance has 4 values"):
        viz.feature_geometry(pentagon(), importance=torch.ones(4))


def test_phase_map_checks_shapes_and_status_values():
    status = np.array([[0, 2, 2], [1, 1, 2]])
    fig = viz.phase_map(status, [1.0, 0.1, 0.01], [0.5, 2.0])
    assert fig.axes[0].get_xscale() == "log"
    with pytest.raises(ValueError, match="expected \\[importance=2, density=2\\]"):
        viz.phase_map(status, [1.0, 0.1], [0.5, 2.0])
    with pytest.raises(ValueError, match="0 \\(ignored\\)"):
        viz.phase_map(status + 1, [1.0, 0.1, 0.01], [0.5, 2.0])


def test_dimensionality_plot_scatters_every_feature():
    D = torch.rand(4, 5)
    fig = viz.dimensionality_plot(torch.tensor([1.0, 0.3, 0.1, 0.03]), D)
    offsets = fig.axes[0].collections[0].get_offsets()
    assert offsets.shape == (20, 2)
    with pytest.raises(ValueError, match="4 instances but density has 3"):
        viz.dimensionality_plot(torch.ones(3), D)


def test_latent_cosines_puts_matched_latents_first_and_outlines_them():
    cos = torch.zeros(3, 5)
    matched = [4, 0, 2]
    for i, j in enumerate(matched):
        cos[i, j] = 1.0
    fig = viz.latent_cosines(cos, matched)
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_array_equal(np.diag(shown[:, :3]), [1.0, 1.0, 1.0])
    assert len(viz.truth_outlines(fig)) == 3
    assert len(viz.truth_outlines(viz.latent_cosines(cos, matched, show_truth=False))) == 0
    with pytest.raises(ValueError, match="distinct latent indices"):
        viz.latent_cosines(cos, [0, 0, 1])
