"""Scoring an SAE against a known dictionary: MMCS, MCC, uniqueness, detection F1, L0, FVU.

Axis names used in shape comments:
    batch        evaluation samples
    d_in         activation width
    d_sae        SAE latents (decoder atoms W_dec rows)
    feature      ground-truth features (unit directions [feature, d_in], coefficients
                 [batch, feature])

Metrics (``score_sae`` returns them all as a frozen ``SAEScores``):
    mmcs                 mean over true features of the max cosine with any decoder atom
    matched_cosine       mean cosine of a one-to-one (Hungarian) feature-atom matching
    mcc                  mean Pearson correlation between each true coefficient and its latent
                         under a one-to-one Hungarian matching of the correlation matrix
                         (unmatched features count 0)
    uniqueness           distinct best-matching atoms / number of features
    precision/recall/f1  latent active (z > 0) as a detector of its cosine-matched feature
                         present (c > 0); means over features (unmatched count 0)
    l0                   mean active latents per sample
    dead_fraction        latents never active on the evaluation data
    fvu                  sum |x - x_hat|^2 / sum |x - mean x|^2;  explained_variance = 1 - fvu
    norm_shrinkage       mean |x_hat| / |x| (1 = no shrinkage; L1 SAEs give < 1)
    coefficient_shrinkage  least-squares slope of matched latent on true coefficient, where present

The Hungarian algorithm (``linear_sum_assignment``) is implemented here (O(n^2 m), numpy
inner loops), so no scipy is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from toylab.sae.sae import SAE


def linear_sum_assignment(cost: np.ndarray | Tensor, maximize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching of a rectangular matrix [n_rows, n_cols].

    Returns (rows, cols), sorted by row, of length min(n_rows, n_cols), like
    ``scipy.optimize.linear_sum_assignment``. Shortest augmenting paths with potentials.
    """
    C = np.array(cost.detach().cpu().numpy() if isinstance(cost, Tensor) else cost, dtype=np.float64)
    if C.ndim != 2:
        raise ValueError(f"cost must be a 2-d matrix, got shape {C.shape}")
    if not np.isfinite(C).all():
        raise ValueError("cost contains NaN or infinite entries")
    if maximize:
        C = -C
    transposed = C.shape[0] > C.shape[1]
    if transposed:
        C = C.T
    n, m = C.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    u = np.zeros(n + 1)  # row potentials (1-based)
    v = np.zeros(m + 1)  # column potentials (1-based, 0 is a virtual column)
    p = np.zeros(m + 1, dtype=np.int64)  # p[j]: row (1-based) matched to column j, 0 for none
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = C[i0 - 1] - u[i0] - v[1:]  # [m]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            masked = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(masked)) + 1
            delta = masked[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    cols = np.nonzero(p[1:])[0]
    rows = p[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def cosine_matrix(features: Tensor, decoder: Tensor) -> Tensor:
    """Cosines [feature, d_sae] between true features [feature, d_in] and atoms [d_sae, d_in]."""
    f = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    d = decoder / decoder.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return f @ d.T


def mmcs(features: Tensor, directions: Tensor, signed: bool = True) -> float:
    """Mean max cosine similarity: the mean over true features [feature, d] of the largest
    cosine with any of ``directions`` [n, d] (Sharkey et al. 2022).

    The one definition toylab uses. ``signed=True`` for an SAE's decoder atoms: a latent
    fires in one direction only, so an atom pointing against its feature does not represent
    it. ``signed=False`` (|cosine|) for directions whose sign means nothing, such as a
    probe's or a method's feature directions scored by ``toylab.validate``.
    """
    cos = cosine_matrix(features, directions)  # [feature, n]
    return (cos if signed else cos.abs()).max(dim=1).values.mean().item()


def matched_cosine(features: Tensor, directions: Tensor, signed: bool = True) -> float:
    """Mean cosine of a one-to-one (Hungarian) matching of features to directions, an
    unmatched feature counting 0; ``signed`` as in ``mmcs``."""
    cos = cosine_matrix(features, directions)  # [feature, n]
    cos = cos if signed else cos.abs()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return float(cos[rows, cols].sum().item()) / features.shape[0]


def correlation_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlations [cols of a, cols of b] of a [batch, p], b [batch, q]; constant columns give 0."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    a_norm = a.norm(dim=0)
    b_norm = b.norm(dim=0)
    corr = (a.T @ b) / (a_norm[:, None] * b_norm[None, :]).clamp_min(1e-12)
    corr[a_norm < 1e-12] = 0.0
    corr[:, b_norm < 1e-12] = 0.0
    return corr


@dataclass(frozen=True)
class SAEScores:
    mmcs: float  # mean max cosine of true features with decoder atoms
    matched_cosine: float  # mean cosine under one-to-one Hungarian matching
    mcc: float  # mean matched correlation of coefficients with latents
    uniqueness: float  # distinct best-matching atoms / features
    precision: float  # mean over features of P(feature present | matched latent active)
    recall: float  # mean over features of P(matched latent active | feature present)
    f1: float  # mean over features of the detection F1
    f1_per_feature: tuple[float, ...]  # [feature] detection F1 (0 when unmatched)
    matched_latent: tuple[int, ...]  # [feature] the latent matched one-to-one by decoder cosine, -1 if none
    l0: float  # mean active latents per sample
    dead_fraction: float  # latents never active on the evaluation data
    fvu: float  # fraction of variance unexplained
    explained_variance: float  # 1 - fvu
    norm_shrinkage: float  # mean |x_hat| / |x|
    coefficient_shrinkage: float  # slope of matched latent on true coefficient, where present


@torch.no_grad()
def score_sae(sae: SAE, features: Tensor, activations: Tensor, coefficients: Tensor) -> SAEScores:
    """Score ``sae`` against true ``features`` [feature, d_in] on ``activations`` [batch, d_in]
    with their true ``coefficients`` [batch, feature]."""
    n_features, d_in = features.shape
    if d_in != sae.cfg.d_in:
        raise ValueError(f"features have width {d_in} but the SAE reads d_in={sae.cfg.d_in}")
    if activations.ndim != 2 or activations.shape[1] != d_in:
        raise ValueError(f"activations must be [batch, d_in={d_in}], got shape {tuple(activations.shape)}")
    if coefficients.shape != (activations.shape[0], n_features):
        raise ValueError(
            f"coefficients must be [batch={activations.shape[0]}, feature={n_features}], "
            f"got shape {tuple(coefficients.shape)}"
        )
    x = activations.float()
    x_hat, z = sae(x)  # [batch, d_in], [batch, d_sae]
    cos = cosine_matrix(features.float(), sae.W_dec.float())  # [feature, d_sae]
    best = cos.max(dim=1)
    rows, cols = linear_sum_assignment(cos, maximize=True)
    matched_cos = float(cos[rows, cols].sum().item()) / n_features

    corr = correlation_matrix(coefficients.float(), z)  # [feature, d_sae]
    c_rows, c_cols = linear_sum_assignment(corr, maximize=True)
    mcc = float(corr[c_rows, c_cols].sum().item()) / n_features

    present = coefficients > 0  # [batch, feature]
    active = z > 0  # [batch, d_sae]
    precision = torch.zeros(n_features)
    recall = torch.zeros(n_features)
    f1 = torch.zeros(n_features)
    r, c = torch.as_tensor(rows), torch.as_tensor(cols)
    pres_m = present[:, r]  # [batch, matched]
    act_m = active[:, c]  # [batch, matched]
    tp = (pres_m & act_m).sum(0).float()
    prec = tp / act_m.sum(0).float().clamp_min(1)
    rec = tp / pres_m.sum(0).float().clamp_min(1)
    precision[r] = prec
    recall[r] = rec
    f1[r] = torch.where(prec + rec > 0, 2 * prec * rec / (prec + rec).clamp_min(1e-12), torch.zeros_like(prec))

    matched = torch.full((n_features,), -1, dtype=torch.long)
    matched[r] = c
    coef_m = coefficients[:, r].float()  # [batch, matched]
    lat_m = z[:, c]  # [batch, matched]
    mask = pres_m.float()
    denom = (coef_m.pow(2) * mask).sum()
    coef_shrink = float(((lat_m * coef_m * mask).sum() / denom).item()) if denom > 0 else float("nan")

    total = (x - x.mean(0)).pow(2).sum()
    fvu = float(((x - x_hat).pow(2).sum() / total).item()) if total > 0 else float("nan")
    x_norm = x.norm(dim=-1)
    nonzero = x_norm > 1e-8
    norm_shrink = float((x_hat.norm(dim=-1)[nonzero] / x_norm[nonzero]).mean().item()) if nonzero.any() else float("nan")
    return SAEScores(
        mmcs=best.values.mean().item(),
        matched_cosine=matched_cos,
        mcc=mcc,
        uniqueness=best.indices.unique().numel() / n_features,
        precision=precision.mean().item(),
        recall=recall.mean().item(),
        f1=f1.mean().item(),
        f1_per_feature=tuple(f1.tolist()),
        matched_latent=tuple(matched.tolist()),
        l0=active.sum(-1).float().mean().item(),
        dead_fraction=(~active.any(0)).float().mean().item(),
        fvu=fvu,
        explained_variance=1.0 - fvu,
        norm_shrinkage=norm_shrink,
        coefficient_shrinkage=coef_shrink,
    )


__all__ = ["SAEScores", "correlation_matrix", "cosine_matrix", "linear_sum_assignment", "mmcs", "score_sae"]
