"""Analysis of toy models of superposition (Elhage et al. 2022; ARENA 1.5.4).

Axis names used in shape comments:
    instance     an independent copy of the toy model
    feature      an input feature; its direction in the hidden space is W_i = W[:, :, i]
    other        a second feature axis (feature j against feature i)
    hidden       a dimension of the bottleneck
    importance   a row of the phase diagram: the relative importance of the second feature
    density      a column of the phase diagram: the feature probability p = 1 - sparsity

Every function takes the weights W [instance, hidden, feature] (a ``ToyModel`` works too:
its ``.W`` is read) and returns tensors or a frozen dataclass; the model is never changed.
Analysis runs in float64 on the CPU.

    feature_norms(W)          ||W_i||                                  [instance, feature]
    interference(W)           sum_{j != i} (W_i_hat . W_j)^2             [instance, feature]
    dimensionality(W)         D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2  [instance, feature]
    feature_status(W)         ignored / dedicated / superposed per feature
    feature_angles(W)         direction of each feature in 2-d, degrees  [instance, feature]
    adjacent_angles(W, i)     gaps between consecutive represented features of instance i
    regular_polygon(W)        k if the represented features form a regular k-gon, else 0
    reconstruction(model)     x'_i when feature i alone is on: the behaviour, by intervention
    phase_diagram(...)        trains 2 features in 1 dimension over sparsity x importance

The paper's results in this vocabulary: 5 features in 2 dimensions at high sparsity form a
pentagon (adjacent angles 72 degrees, D_i = 2/5); dense, only the 2 most important are
kept (dedicated, D_i = 1); 2 features in 1 dimension go from "one dedicated, one ignored"
(dense) to an antipodal pair (sparse, D_i = 1/2) as sparsity rises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from toylab.devices import DeviceLike
from toylab.parallel import Job, Outcome, run_jobs

if TYPE_CHECKING:
    from toylab.models.superposition import ToyModel

IGNORED, DEDICATED, SUPERPOSED = 0, 1, 2
STATUS_NAMES = ("ignored", "dedicated", "superposed")


def _weights(W: Tensor | ToyModel) -> Tensor:
    W = getattr(W, "W", W)
    if not isinstance(W, Tensor) or W.ndim != 3:
        raise ValueError(
            "expected W [instance, hidden, feature] (or a ToyModel), got "
            f"{type(W).__name__} with shape {tuple(getattr(W, 'shape', ()))}"
        )
    return W.detach().to("cpu", torch.float64)


def feature_norms(W: Tensor | ToyModel) -> Tensor:
    """||W_i||, the length of each feature's direction: [instance, feature]."""
    return _weights(W).norm(dim=1)


def interference_matrix(W: Tensor | ToyModel) -> Tensor:
    """W^T W with its diagonal zeroed: entry (i, j) is W_i . W_j for i != j.
    [instance, feature, other]"""
    W = _weights(W)
    gram = torch.einsum("ihf,iho->ifo", W, W)  # [instance, feature, other]
    return gram * (1 - torch.eye(W.shape[-1], dtype=W.dtype, device=W.device))


def _projections(W: Tensor, eps: float) -> Tensor:
    """(W_i_hat . W_j)^2: [instance, feature, other]; 0 where ||W_i|| is 0."""
    unit = W / W.norm(dim=1, keepdim=True).clamp_min(eps)  # [instance, hidden, feature]
    return torch.einsum("ihf,iho->ifo", unit, W) ** 2


def interference(W: Tensor | ToyModel, eps: float = 1e-12) -> Tensor:
    """sum_{j != i} (W_i_hat . W_j)^2: how much the other features leak onto feature i's
    direction (ARENA's "superposition" colour). [instance, feature]"""
    W = _weights(W)
    proj = _projections(W, eps)  # [instance, feature, other]
    return proj.sum(-1) - proj.diagonal(dim1=-2, dim2=-1)


def dimensionality(W: Tensor | ToyModel, eps: float = 1e-12) -> Tensor:
    """Feature dimensionality D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 (the sum includes j = i):
    1 for a dedicated dimension, 1/2 for an antipodal pair, 2/5 for a pentagon, 0 for an
    ignored feature. [instance, feature]"""
    W = _weights(W)
    num = W.norm(dim=1) ** 2  # [instance, feature]
    den = _projections(W, eps).sum(-1)  # [instance, feature]
    return torch.where(den > eps, num / den.clamp_min(eps), torch.zeros_like(num))


@dataclass(frozen=True)
class FeatureStatus:
    status: Tensor  # [instance, feature] int: IGNORED (0), DEDICATED (1) or SUPERPOSED (2)
    norms: Tensor  # [instance, feature] ||W_i||
    interference: Tensor  # [instance, feature] sum_{j != i} (W_i_hat . W_j)^2
    dimensionality: Tensor  # [instance, feature] D_i

    def names(self, instance: int) -> list[str]:
        """The status of each feature of one instance as words."""
        return [STATUS_NAMES[int(s)] for s in self.status[instance]]


def feature_status(
    W: Tensor | ToyModel,
    norm_threshold: float = 0.5,
    interference_threshold: float = 0.1,
) -> FeatureStatus:
    """Classify each feature: *ignored* if ||W_i|| < norm_threshold; otherwise *superposed*
    if its interference (sum_{j != i} (W_i_hat . W_j)^2) exceeds interference_threshold,
    else *dedicated*. Trained features have norm ~0 or ~1, so the defaults sit far from both."""
    if not norm_threshold > 0 or not interference_threshold > 0:
        raise ValueError("feature_status: thresholds must be positive")
    norms = feature_norms(W)
    interf = interference(W)
    status = torch.full(norms.shape, DEDICATED, dtype=torch.long, device=norms.device)
    status[interf > interference_threshold] = SUPERPOSED
    status[norms < norm_threshold] = IGNORED
    return FeatureStatus(status, norms, interf, dimensionality(W))


@torch.no_grad()
def reconstruction(model: ToyModel, value: float = 1.0) -> Tensor:
    """How much of feature i gets through when it is on alone: (x'_i(value * e_i) - x'_i(0))
    / value, [instance, feature]. Subtracting the all-off output removes the bias, which a
    dense model uses to output an ignored feature's mean. A represented feature comes back
    near 1, an ignored one near 0. This runs the model, so it checks the weights' story
    (``feature_status``) against behaviour."""
    if not value > 0:
        raise ValueError(f"reconstruction: value must be positive, got {value!r}")
    n_f, n_i = model.cfg.n_features, model.cfg.n_instances
    dev = model.W.device
    probe = torch.cat([value * torch.eye(n_f, device=dev), torch.zeros(1, n_f, device=dev)])  # [batch, feature]
    out = model(probe[:, None, :].expand(n_f + 1, n_i, n_f))  # [batch, instance, feature]
    gain = out[:n_f].diagonal(dim1=0, dim2=2) - out[n_f]  # [instance, feature]
    return gain.detach().to("cpu", torch.float64) / value


# ---- geometry in two hidden dimensions ---------------------------------------------------


def feature_angles(W: Tensor | ToyModel) -> Tensor:
    """The direction of each feature in a 2-d hidden space, degrees in [0, 360): [instance, feature]."""
    W = _weights(W)
    if W.shape[1] != 2:
        raise ValueError(f"feature_angles needs n_hidden == 2, got {W.shape[1]}")
    return torch.rad2deg(torch.atan2(W[:, 1], W[:, 0])) % 360.0


def adjacent_angles(W: Tensor | ToyModel, instance: int, norm_threshold: float = 0.5) -> Tensor:
    """Angles (degrees) between consecutive represented features (||W_i|| >= norm_threshold)
    of one instance, going round the circle: [k], summing to 360 (empty if k < 2)."""
    keep = feature_norms(W)[instance] >= norm_threshold  # [feature]
    angles = feature_angles(W)[instance][keep].sort().values  # [k]
    if angles.numel() < 2:
        return angles.new_zeros(0)
    return torch.diff(torch.cat([angles, angles[:1] + 360.0]))


def regular_polygon(
    W: Tensor | ToyModel, norm_threshold: float = 0.5, tol_degrees: float = 10.0
) -> Tensor:
    """Per instance, k if its k >= 2 represented features point in the directions of a
    regular k-gon (every adjacent angle within tol_degrees of 360/k; k = 2 is an antipodal
    pair), else 0: [instance] int."""
    n = _weights(W).shape[0]
    out = torch.zeros(n, dtype=torch.long, device="cpu")  # counts for the reader
    for i in range(n):
        gaps = adjacent_angles(W, i, norm_threshold)
        k = gaps.numel()
        if k >= 2 and bool(((gaps - 360.0 / k).abs() <= tol_degrees).all()):
            out[i] = k
    return out


# ---- the phase diagram: 2 features in 1 dimension -----------------------------------------


@dataclass(frozen=True)
class PhaseDiagram:
    density: Tensor  # [density] feature probability p of both features (1 - sparsity)
    relative_importance: Tensor  # [importance] importance of feature 1; feature 0 has 1
    status: Tensor  # [importance, density, feature] IGNORED / DEDICATED / SUPERPOSED
    W: Tensor  # [importance, density, hidden=1, feature=2] the trained weights
    b: Tensor  # [importance, density, feature=2] the trained biases

    def feature1(self) -> Tensor:
        """The paper's colour: the status of the second (varied-importance) feature,
        [importance, density]."""
        return self.status[..., 1]


def phase_diagram(
    n_density: int = 20,
    n_importance: int = 20,
    density_range: tuple[float, float] = (1.0, 0.01),
    importance_range: tuple[float, float] = (0.1, 10.0),
    steps: int = 1_000,
    batch_size: int = 256,
    lr: float = 1e-2,
    n_restarts: int = 6,
    seed: int = 0,
    norm_threshold: float = 0.5,
    interference_threshold: float = 0.1,
    device: DeviceLike = None,
) -> PhaseDiagram:
    """Train 2 features in 1 hidden dimension for every (relative importance, density) on
    log-spaced grids, all as instances of one model in a single run, and classify each
    feature. Feature 0 has importance 1, feature 1 the grid's relative importance; both are
    present with the grid's probability. The paper's phase change: dense, the more important
    feature is dedicated and the other ignored; sparse, both are superposed as an antipodal
    pair (W = [1, -1] up to sign).

    About a third of single runs end in a local minimum where one feature's output ReLU is
    dead (W_i ~ 0, b_i <= 0), so every cell is trained ``n_restarts`` times from different
    initialisations (extra instances of the same run) and the restart with the lowest mean
    training loss over the last fifth of training is kept. lr 1e-2 with a cosine decay makes
    1000 steps enough; the reference setup (10k steps, lr 1e-3, batch 1024) draws the same
    picture, many times slower. It trains on ``device`` (the CPU by default); the diagram
    comes back on the CPU."""
    from toylab.models.superposition import (
        SuperpositionConfig,
        ToyModel,
        train_toy_model,
    )

    for name, v in (("n_density", n_density), ("n_importance", n_importance), ("n_restarts", n_restarts)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"phase_diagram: {name} must be a positive int, got {v!r}")
    (d0, d1), (r0, r1) = density_range, importance_range
    if not (0 < d0 <= 1 and 0 < d1 <= 1 and r0 > 0 and r1 > 0):
        raise ValueError("phase_diagram: densities must lie in (0, 1] and importances be positive")
    # The grid is built on the CPU (ToyModel moves its buffers to the device).
    density = torch.logspace(math.log10(d0), math.log10(d1), n_density, device="cpu")  # [density]
    rel = torch.logspace(math.log10(r0), math.log10(r1), n_importance, device="cpu")  # [importance]

    # instance = (restart * n_importance + importance) * n_density + density
    cells = n_density * n_importance
    n = n_restarts * cells
    p = density.repeat(n_restarts * n_importance)[:, None]  # [instance, 1]
    imp1 = rel.repeat_interleave(n_density).repeat(n_restarts)  # [instance]
    imp = torch.stack([torch.ones(n, device="cpu"), imp1], dim=-1)  # [instance, feature]
    cfg = SuperpositionConfig(n_instances=n, n_features=2, n_hidden=1)
    model = ToyModel(cfg, feature_probability=p, importance=imp, seed=seed, device=device)
    history = train_toy_model(
        model, steps=steps, batch_size=batch_size, lr=lr, seed=seed, lr_schedule="cosine", log_every=1
    )
    tail = history.loss[-max(1, steps // 5) :].mean(0).reshape(n_restarts, cells)  # [restart, cell]
    best = tail.argmin(0)  # [cell]
    pick = best * cells + torch.arange(cells, device="cpu")  # [cell] instance index of the kept restart

    W = model.W.detach().cpu()[pick].clone()  # [cell, hidden, feature]
    b = model.b_final.detach().cpu()[pick].clone()  # [cell, feature]
    fs = feature_status(W, norm_threshold, interference_threshold)
    return PhaseDiagram(
        density=density,
        relative_importance=rel,
        status=fs.status.reshape(n_importance, n_density, 2),
        W=W.reshape(n_importance, n_density, 1, 2),
        b=b.reshape(n_importance, n_density, 2),
    )


def phase_diagram_seeds(seeds: Sequence[int], *, ray: str | None = None, progress: bool = False,
                        device: DeviceLike = "cpu", **options) -> tuple[dict[int, PhaseDiagram], Outcome]:
    """``phase_diagram(seed=s, **options)`` for every seed in ``seeds``, each a job of
    ``toylab.parallel`` (here one after another, or with ``ray`` as Ray tasks): how much of
    the picture is the phase change and how much the seed. Returns the diagrams of the seeds
    that finished, by seed, and the sweep's outcome (naming any that failed)."""
    jobs = [Job(f"phase diagram seed {seed}", phase_diagram, kwargs={**options, "seed": seed, "device": str(device)})
            for seed in seeds]
    outcome = run_jobs(jobs, ray=ray, progress=progress, label="phase diagrams")
    return {seed: outcome.results[job.name] for seed, job in zip(seeds, jobs) if job.name in outcome.results}, outcome


def seed_agreement(diagrams: Sequence[PhaseDiagram]) -> Tensor:
    """[importance, density] the share of diagrams whose second feature has the most common
    status of that cell: 1 where every seed draws the same phase."""
    status = torch.stack([d.feature1() for d in diagrams])  # [seed, importance, density]
    counts = torch.stack([(status == s).sum(0) for s in (IGNORED, DEDICATED, SUPERPOSED)])  # [status, imp, dens]
    return counts.max(0).values / len(diagrams)
