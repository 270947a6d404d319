"""How a method's answer is scored against a known circuit: exact definitions.

Axis names used in shape comments:
    item       the candidates being ranked: nodes, or edges at one granularity
    size       the circuit sizes of a faithfulness curve
    batch      counterfactual pairs

Ranking metrics treat circuit recovery as classification (ACDC, InterpBench). ``universe``
is every candidate, ``positives`` the truth's, ``scores`` the method's (higher first; a
candidate the method did not score ranks below every scored one, all tied):

    ROC          at each distinct score threshold t: TPR = |{s >= t} & T| / |T|,
                 FPR = |{s >= t} - T| / |U - T|, from (0, 0) to (1, 1).
    AUROC        the probability that a random positive outscores a random negative, ties
                 counting one half (Mann-Whitney); equal to the trapezoid area under the ROC.
                 NaN when there are no positives or no negatives.
    AP           average precision: sum over distinct thresholds of (R_t - R_prev) * P_t.
    P@|T|, R@|T| precision and recall of the top |T| candidates. Ties at the cut are shared
                 out in expectation (a tie group straddling the cut contributes its positive
                 fraction per place), so no tie-breaking order can flatter a method. NaN
                 when every candidate is a positive (any answer scores 1).

Optional edges of a truth (``Truth.optional``: a circuit without one is as true) are left
out of the candidates and the positives alike, so no method gains or loses by them.
Figures undefined on a model (no negatives, or a method's circuit forced to be every
candidate) are NaN, shown as n/a and never averaged.

Faithfulness (MIB): with m the task metric (logit difference, clean answer minus
counterfactual answer) and resample ablation of every edge outside a circuit C,

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty))

measured at circuit sizes ``SIZES`` (fractions of the candidate edges, or nodes for a
node-level method), a size's circuit being the top round(fraction * N) candidates.
CPR = area under f and CMD = area under |1 - f|, by the trapezoid rule over the fraction
axis, divided by its length (0.999) so that f = 1 everywhere gives CPR 1 and CMD 0.

A circuit of a given size is the top candidates of a ranking; candidates tied at the cut
are ordered by a fixed pseudo-random permutation (``top``), never by their position in the
candidate list (which follows the layers, as the truths do). A method that returns its own
circuit (a Circuit) is scored exactly on it: completeness = |C & T| / |T| (the share of
the true circuit it found) and minimality = |C & T| / |C| (the share of what it returned
that belongs), next to f(C). For a score method these two would be P@|T| and R@|T| again
(its circuit is its top |T|), so they are not reported twice.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from toylab import components as comp
from toylab import interventions
from toylab.components import Edge
from toylab.interventions import edges_without, expand_to_qkv

SIZES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _scored(scores: Mapping, universe: Collection) -> np.ndarray:
    """Scores aligned with ``universe`` [item]; unscored items below every scored one."""
    given = [float(scores[u]) for u in universe if u in scores]
    floor = (min(given) - 1.0) if given else 0.0
    return np.array([float(scores[u]) if u in scores else floor for u in universe])


def _labels(positives: Collection, universe: Collection) -> np.ndarray:
    missing = [p for p in positives if p not in set(universe)]
    if missing:
        raise ValueError(f"positives {missing[:3]} are not in the universe of candidates")
    positive = set(positives)
    return np.array([u in positive for u in universe])


@dataclass(frozen=True)
class ROC:
    fpr: np.ndarray  # [threshold + 1], from 0 to 1
    tpr: np.ndarray  # [threshold + 1]
    thresholds: np.ndarray  # [threshold]: distinct scores, descending

    @property
    def auc(self) -> float:
        return float(_trapezoid(self.tpr, self.fpr)) if len(self.fpr) > 1 else math.nan


def roc_curve(scores: Mapping[Hashable, float], positives: Collection, universe: Sequence) -> ROC:
    universe = list(universe)
    s, y = _scored(scores, universe), _labels(positives, universe)
    n_pos, n_neg = y.sum(), (~y).sum()
    thresholds = np.unique(s)[::-1]
    tp = np.array([(y & (s >= t)).sum() for t in thresholds])
    fp = np.array([(~y & (s >= t)).sum() for t in thresholds])
    if n_pos == 0 or n_neg == 0:
        return ROC(np.array([0.0]), np.array([0.0]), thresholds)
    return ROC(np.concatenate([[0.0], fp / n_neg]), np.concatenate([[0.0], tp / n_pos]), thresholds)


def auroc(scores: Mapping[Hashable, float], positives: Collection, universe: Sequence) -> float:
    universe = list(universe)
    if not universe:
        return math.nan
    return auroc_of(_scored(scores, universe), _labels(positives, universe))


def auroc_of(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of ``scores`` [item] against boolean ``labels`` [item]: the chance that a positive
    outscores a negative, a tie counting one half (Mann-Whitney, by average ranks, so a
    million items cost a sort); NaN without a positive or a negative."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # where each run of equal scores starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(ordered)]
    average = (starts + ends + 1) / 2.0  # 1-based average rank of each run
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: Mapping[Hashable, float], positives: Collection, universe: Sequence) -> float:
    universe = list(universe)
    s, y = _scored(scores, universe), _labels(positives, universe)
    if y.sum() == 0:
        return math.nan
    ap, recall_before = 0.0, 0.0
    for t in np.unique(s)[::-1]:
        above = s >= t
        recall = (y & above).sum() / y.sum()
        ap += (recall - recall_before) * (y & above).sum() / above.sum()
        recall_before = recall
    return float(ap)


def precision_recall_at_k(scores: Mapping[Hashable, float], positives: Collection, universe: Sequence,
                          k: int) -> tuple[float, float]:
    """Expected precision and recall of the top ``k`` (ties at the cut shared out)."""
    universe = list(universe)
    s, y = _scored(scores, universe), _labels(positives, universe)
    if k < 1 or y.sum() == 0 or y.all():
        return math.nan, math.nan
    k = min(k, len(s))
    cut = np.sort(s)[::-1][k - 1]
    above = s > cut
    tied = s == cut
    hits = (y & above).sum() + (k - above.sum()) * (y & tied).sum() / tied.sum()
    return float(hits / k), float(hits / y.sum())


TIE_SEED = 0  # the fixed permutation that orders tied candidates in ``top``


def top(scores: Mapping[Hashable, float], universe: Sequence, k: int) -> list:
    """The ``k`` best-scored candidates; tied ones in a fixed pseudo-random order (``TIE_SEED``),
    never in ``universe`` order, which would favour whatever the candidate list puts first."""
    universe = list(universe)
    s = _scored(scores, universe)
    shuffle = np.random.default_rng(TIE_SEED).permutation(len(universe))  # [item]
    order = sorted(range(len(universe)), key=lambda i: (-s[i], shuffle[i]))
    return [universe[i] for i in order[:k]]


# ---- faithfulness -------------------------------------------------------------------
@dataclass(frozen=True)
class FaithfulnessCurve:
    level: str  # "edge" or "node": what the sizes count
    sizes: tuple[float, ...]  # [size] fractions of the candidates
    counts: tuple[int, ...]  # [size] candidates kept
    f: tuple[float, ...]  # [size] normalised faithfulness
    full: float  # m of the whole model
    empty: float  # m with everything ablated

    @property
    def cpr(self) -> float:
        return _area(self.sizes, self.f)

    @property
    def cmd(self) -> float:
        return _area(self.sizes, [abs(1.0 - v) for v in self.f])


def _trapezoid(y: Sequence[float], x: Sequence[float]) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return float(((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2).sum())


def _area(x: Sequence[float], y: Sequence[float]) -> float:
    return _trapezoid(y, x) / (x[-1] - x[0])


class Faithfulness(interventions.Faithfulness):
    """f(C) (``toylab.interventions.Faithfulness``) of circuits as a method returns them."""

    def of_edges(self, edges: Collection[Edge]) -> float:
        """f of a circuit given as edges (either granularity); pos_embed's edges always stay."""
        return self(expand_to_qkv(edges) | {e for e in comp.edges(self.model.cfg) if e.sender == "pos_embed"})

    def of_nodes(self, nodes: Collection[str]) -> float:
        """f of a circuit given as nodes: every edge leaving a node outside it is ablated."""
        removed = [n for n in comp.senders(self.model.cfg) if n not in set(nodes) and n != "pos_embed"]
        return self(edges_without(self.model.cfg, removed))

    def curve(self, ranking: Sequence, level: str, sizes: Sequence[float] = SIZES) -> FaithfulnessCurve:
        """f of the top round(size * N) of ``ranking`` (best first) at each size."""
        if level not in ("edge", "node"):
            raise ValueError(f"level must be 'edge' or 'node', got {level!r}")
        counts = tuple(int(round(size * len(ranking))) for size in sizes)
        values, seen = [], {}
        for k in counts:
            if k not in seen:
                kept = ranking[:k]
                seen[k] = self.of_edges(kept) if level == "edge" else self.of_nodes(kept)
            values.append(seen[k])
        return FaithfulnessCurve(level, tuple(sizes), counts, tuple(values), self.full, self.empty)


def circuit_overlap(found: Collection, truth: Collection) -> tuple[float, float]:
    """(completeness, minimality) = (|C & T| / |T|, |C & T| / |C|)."""
    found, truth = set(found), set(truth)
    hit = len(found & truth)
    return (hit / len(truth) if truth else math.nan, hit / len(found) if found else math.nan)
