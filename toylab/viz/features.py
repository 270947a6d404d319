"""Figures for features: toy models of superposition and sparse autoencoders.

Axis names used in shape comments:
    hidden      a dimension of a toy model's bottleneck (or an SAE's input, d_in)
    feature     a true feature (a column of the toy model's W, a row of a known dictionary)
    latent      an SAE latent (a row of W_dec)
    instance    one copy of a toy model in a sweep
    importance  a row of the phase diagram (relative importance of the second feature)
    density     a column of the phase diagram (feature probability, 1 - sparsity)

    feature_geometry(W, truth=...)      feature directions in a 2-d hidden space, as arrows
    phase_map(status, density, rel)     ignored / dedicated / superposed over the sweep
    dimensionality_plot(density, D)     D_i against 1 / density, with the sticky fractions
    latent_cosines(cos, matched)        cosine of each true feature with each latent

Like ``toylab.viz.plots``: new ``Figure`` objects (never pyplot), and ground truth drawn
in the one truth colour with ``gid="ground-truth"`` and a legend entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from toylab.viz.plots import TRUTH_COLOR, TRUTH_GID, TRUTH_LABEL, _array, _check_labels, _outline_cells

STATUS_COLORS = ("#d9d9d9", "#4a90c2", "#e07b39")  # ignored, dedicated, superposed
STATUS_NAMES = ("ignored", "dedicated", "superposed")
_STICKY = ((1.0, "1"), (0.5, "1/2"), (0.4, "2/5"), (1 / 3, "1/3"))  # the paper's common fractions


def _arrows(ax: Any, W: np.ndarray, color: Any, labels: list[str], **style: Any) -> None:
    for i in range(W.shape[1]):
        x, y = W[:, i]
        c = color[i] if isinstance(color, (list, np.ndarray)) else color
        ax.annotate("", xy=(x, y), xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color=c, **style))
        if labels[i]:
            ax.text(1.12 * x, 1.12 * y, labels[i], ha="center", va="center", fontsize="small", color=c)


def feature_geometry(W: Any, importance: Any = None, truth: Any = None, labels: Sequence[str] | None = None,
                     title: str | None = None) -> Figure:
    """Feature directions W [hidden=2, feature] as arrows from the origin, coloured by
    ``importance`` [feature] when given. ``truth`` [hidden=2, feature] (e.g. the true
    directions an SAE should find) is drawn dashed in the truth colour."""
    W = _array(W, 2, "W [hidden, feature]")
    if W.shape[0] != 2:
        raise ValueError(f"feature_geometry draws a 2-d hidden space; W has {W.shape[0]} hidden dimensions "
                         "(use toylab.viz.heatmap of W^T W for other widths)")
    names = _check_labels(labels if labels is not None else [f"f{i}" for i in range(W.shape[1])],
                          W.shape[1], "labels")
    fig = Figure(figsize=(4.2, 4.2), layout="constrained")
    ax = fig.add_subplot()
    if importance is not None:
        imp = _array(importance, 1, "importance [feature]")
        if len(imp) != W.shape[1]:
            raise ValueError(f"importance has {len(imp)} values for {W.shape[1]} features")
        span = imp.max() - imp.min()
        shade = (imp - imp.min()) / span if span > 0 else np.ones_like(imp)
        colors = [(0.15 + 0.6 * (1 - s), 0.35 + 0.3 * (1 - s), 0.75) for s in shade]
    else:
        colors = "#4a90c2"
    reach = float(np.abs(W).max()) if W.size else 1.0
    if truth is not None:
        T = _array(truth, 2, "truth [hidden, feature]")
        if T.shape[0] != 2:
            raise ValueError(f"truth must be [hidden=2, feature], got shape {T.shape}")
        for i in range(T.shape[1]):
            ax.plot([0, T[0, i]], [0, T[1, i]], color=TRUTH_COLOR, linestyle="--", linewidth=1.6, gid=TRUTH_GID)
        reach = max(reach, float(np.abs(T).max()))
        ax.legend(handles=[Line2D([], [], color=TRUTH_COLOR, linestyle="--", label=TRUTH_LABEL)],
                  loc="upper right", fontsize="small", frameon=False)
    _arrows(ax, W, colors, names, linewidth=1.8)
    lim = 1.3 * max(reach, 1e-3)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("hidden 0")
    ax.set_ylabel("hidden 1")
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def phase_map(status: Any, density: Any, relative_importance: Any, title: str | None = None) -> Figure:
    """The status (0 ignored, 1 dedicated, 2 superposed) of a feature over the sweep,
    status [importance, density], with log axes: sparsity grows to the right."""
    status = _array(status, 2, "status [importance, density]")
    dens = _array(density, 1, "density")
    rel = _array(relative_importance, 1, "relative_importance")
    if status.shape != (len(rel), len(dens)):
        raise ValueError(f"status has shape {status.shape}, expected [importance={len(rel)}, density={len(dens)}]")
    if not np.isin(status, (0, 1, 2)).all():
        raise ValueError("status values must be 0 (ignored), 1 (dedicated) or 2 (superposed)")
    fig = Figure(figsize=(5.2, 4.0), layout="constrained")
    ax = fig.add_subplot()
    cmap = ListedColormap(STATUS_COLORS)
    x = 1.0 / dens  # 1 / density: 1 is dense, large is sparse
    ax.pcolormesh(_edges(x), _edges(rel), status, cmap=cmap, norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3),
                  shading="flat")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("1 / feature density (sparser to the right)")
    ax.set_ylabel("relative importance of feature 1")
    handles = [Patch(color=c, label=n) for c, n in zip(STATUS_COLORS, STATUS_NAMES)]
    fig.legend(handles=handles, loc="outside upper center", ncols=3, frameon=False, fontsize="small")
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around log-spaced centres (geometric midpoints), for pcolormesh."""
    c = np.sort(centres) if centres[0] < centres[-1] else centres
    logc = np.log(c)
    if len(c) == 1:
        return np.exp([logc[0] - 0.5, logc[0] + 0.5])
    mids = (logc[1:] + logc[:-1]) / 2
    first, last = 2 * logc[0] - mids[0], 2 * logc[-1] - mids[-1]
    return np.exp(np.concatenate([[first], mids, [last]]))


def dimensionality_plot(density: Any, dimensionality: Any, title: str | None = None) -> Figure:
    """Each feature's dimensionality D [instance, feature] against 1 / density [instance],
    with the fractions the paper found features stick to (1, 1/2, 2/5, 1/3) and the
    model's average "dimensions per feature" (the mean D) as a line."""
    dens = _array(density, 1, "density [instance]")
    D = _array(dimensionality, 2, "dimensionality [instance, feature]")
    if D.shape[0] != len(dens):
        raise ValueError(f"dimensionality has {D.shape[0]} instances but density has {len(dens)}")
    fig = Figure(figsize=(5.6, 3.4), layout="constrained")
    ax = fig.add_subplot()
    x = 1.0 / dens
    for value, name in _STICKY:
        ax.axhline(value, color="grey", linewidth=0.6, linestyle=":")
        ax.text(x.max() * 1.05, value, name, va="center", fontsize="x-small", color="grey")
    ax.scatter(np.repeat(x, D.shape[1]), D.ravel(), s=14, color="#4a90c2", alpha=0.7, label="feature")
    order = np.argsort(x)
    ax.plot(x[order], D.mean(1)[order], color="black", linewidth=1.2, label="mean")
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlabel("1 / feature density")
    ax.set_ylabel("dimensionality D_i")
    ax.legend(fontsize="small", frameon=False, loc="upper right")
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def latent_cosines(cos: Any, matched: Any, title: str | None = None, show_truth: bool = True) -> Figure:
    """Cosine of each true feature (rows) with each SAE latent's decoder direction, cos
    [feature, latent]. Columns are reordered so that the latent matched to feature i
    (``matched`` [feature], e.g. by Hungarian matching; -1 for none) sits in column i,
    unmatched latents after them; with ``show_truth`` the matched cells are outlined."""
    cos = _array(cos, 2, "cos [feature, latent]")
    match = np.asarray(matched, dtype=int).ravel()
    n_feat, n_lat = cos.shape
    if match.shape != (n_feat,):
        raise ValueError(f"matched must have one entry per feature ({n_feat}), got shape {match.shape}")
    used = [int(m) for m in match if m >= 0]
    if any(m >= n_lat for m in used) or len(set(used)) != len(used):
        raise ValueError("matched must hold distinct latent indices < n_latents (or -1 for no match)")
    order = used + [j for j in range(n_lat) if j not in set(used)]
    values = cos[:, order]
    fig = Figure(figsize=(min(3.0 + 0.06 * n_lat, 11.0), min(2.4 + 0.06 * n_feat, 8.0)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="cosine", shrink=0.9)
    ax.set_xlabel("SAE latent (matched latents first, in feature order)")
    ax.set_ylabel("true feature")
    if show_truth:
        cells = {(i, order.index(int(m))) for i, m in enumerate(match) if m >= 0}
        _outline_cells(ax, cells, values.shape)
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


__all__ = ["STATUS_COLORS", "STATUS_NAMES", "dimensionality_plot", "feature_geometry", "latent_cosines", "phase_map"]
