"""Built-in circuit-discovery baselines: the methods the validation harness scores first.

Every baseline is a plain function ``name(problem, *, options) -> result`` that follows
``toylab.validate.protocol``: it reads only ``problem.pair``, ``problem.model``,
``problem.nodes()`` and ``problem.edges()`` (``truth`` alone reads the answer key, and says
so), never changes the model's weights, and removes every hook it adds. Most are thin
adapters: they run a method of ``toylab.methods`` on ``(problem.model, problem.pair(n))``,
whose metric is the task's logit difference (``problem.metric``), and convert its result;
the method's docstring gives the definition and the cost. ``pos_embed`` is never scored.

random               EdgeScores "qkv": seeded uniform [0, 1) scores, the floor (AUROC 0.5).
truth                EdgeScores "qkv": the truth's edges above every other, the ceiling (peeks).
resample-ablation    NodeScores: |normalised effect| of resample-ablating each node alone,
                     ``methods.ablation_scores(..., method="resample")``: activation
                     patching of nodes, noising (clean run, corrupted activation).
denoising            NodeScores: the same in the other direction: |normalised effect| of
                     patching each node's clean output into the corrupted run.
edge-noising         EdgeScores "qkv": |score| of ``methods.edge_patching(direction="noise")``,
                     each edge ablated alone for real (what EAP estimates).
edge-denoising       EdgeScores "qkv": |score| of ``methods.edge_patching(direction="denoise")``.
eap                  EdgeScores "qkv": |score| of ``methods.eap``.
eap-qk               EdgeScores "qkv": |score| of ``methods.eap(qk_fix=True)`` (AtP*'s QK fix).
atp-star             EdgeScores "qkv": ``methods.eap(qk_fix=True, grad_drop=True)``: AtP*
                     (Kramár et al. 2024), the QK fix and GradDrop (which undoes cancellation).
eap-ig               EdgeScores "qkv": |score| of ``methods.eap_ig`` (5 steps).
acdc                 EdgeScores "qkv": the damage ``methods.acdc`` measured per edge (KL,
                     threshold 0.1); ``acdc_circuit`` returns the circuit it keeps.
edge-pruning         EdgeScores "qkv": each edge's learned log alpha from
                     ``methods.edge_pruning`` (Bhaskar et al. 2024; hard-concrete masks).
attention-heuristic  NodeScores: a head's best ``methods.detectors.DETECTORS`` score.

``resample-ablation`` was called "activation-patching" before: it is node ablation, not
``methods.activation_patching``'s patching sweep. ``BASELINES`` maps each name to its
function (default options), ``DESCRIPTIONS`` to a one-line description, and ``PEEKS``
holds the names of the baselines that read the answer key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from toylab import components as comp
from toylab import methods
from toylab.methods.ablation import ablation_scores
from toylab.methods.circuit_discovery import ACDC_METRICS, ACDC_THRESHOLDS
from toylab.methods.detectors import detectors_of, head_scores
from toylab.tasks import CounterfactualPair
from toylab.validate.metrics import Faithfulness
from toylab.validate.protocol import Circuit, EdgeScores, Method, NodeScores, Problem


# ---- shared helpers -----------------------------------------------------------------
def _check_n(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class _Run:
    """A counterfactual batch: the pair (CPU, for the metric) and its tokens on the model's device."""

    pair: CounterfactualPair
    clean: Tensor  # [batch, pos]
    corrupted: Tensor  # [batch, pos]


def _run(problem: Problem, n: int) -> _Run:
    _check_n("n", n)
    pair = problem.pair(n)
    device = problem.model.device
    return _Run(pair, pair.clean.tokens.to(device), pair.corrupted.tokens.to(device))


def _scale(m_clean: float, m_corr: float) -> float:
    """|m_clean - m_corr|: the full effect every score is measured against."""
    gap = abs(m_clean - m_corr)
    if gap < 1e-9:
        raise ValueError("the model's metric does not change between clean and corrupted inputs "
                         f"(m = {m_clean:.3g} on both): nothing to attribute")
    return gap


def _metric(problem: Problem, logits: Tensor, pair) -> Tensor:
    # The pair's targets stay on the CPU (the task samples there): bring the logits to them.
    return problem.metric(logits.cpu() if logits.device.type != "cpu" else logits, pair)


# ---- floor and ceiling --------------------------------------------------------------
def random_scores(problem: Problem, *, seed: int | None = None) -> EdgeScores:
    """Uniform random scores for every candidate edge at "qkv" granularity: the floor.

    ``seed`` defaults to the model's training seed, so the seeds of a model draw different
    scores and the spread over seeds is the floor's own.
    """
    seed = problem.seed if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    edges = problem.edges("qkv")
    values = torch.rand(len(edges), generator=torch.Generator().manual_seed(seed), device="cpu")  # [edge]
    return EdgeScores({e: float(v) for e, v in zip(edges, values)}, "qkv")


def truth_scores(problem: Problem, *, n: int = 64) -> EdgeScores:
    """The truth's edges above every other candidate edge: the ceiling (peeks).

    Every other edge scores 0; a truth edge scores 1 plus what removing it from the truth
    costs in faithfulness (on the method's own pairs), so that below the circuit's size the
    most needed edges come first, as in the harness's ``cpr_truth``.
    """
    truth = problem.answer_key()
    if truth is None:
        raise ValueError(f"{problem.name}: the problem carries no answer key, so the ceiling is undefined")
    _check_n("n", n)
    positives = list(truth.edges_at("qkv"))
    faith = Faithfulness(problem.model, problem.pair(n))
    cost = {e: faith.of_edges(positives) - faith.of_edges([p for p in positives if p != e]) for e in positives}
    return EdgeScores({e: 1.0 + cost[e] if e in cost else 0.0 for e in problem.edges("qkv")}, "qkv")


# ---- node ablation ------------------------------------------------------------------
def resample_ablation(problem: Problem, *, n: int = 64) -> NodeScores:
    """|normalised effect| of resample-ablating each node's output on the clean run.

    For each node v (embed, every head, every MLP), |m_clean - m(v resample-ablated)| /
    |m_clean - m_corr|: the clean run with v's output replaced by its output on the
    corrupted row (total effect: everything downstream recomputes).
    """
    run = _run(problem, n)
    nodes = problem.nodes()  # embed, heads, MLPs
    with torch.no_grad():
        m_corr = float(_metric(problem, problem.model(run.corrupted), run.pair))
    result = ablation_scores(problem.model, run.pair, components=nodes, method="resample",
                             metric=lambda logits: _metric(problem, logits, run.pair))
    effect = (result.baseline - result.scores).abs() / _scale(result.baseline, m_corr)  # [node]
    return NodeScores({node: float(e) for node, e in zip(result.components, effect)})


def denoising(problem: Problem, *, n: int = 64) -> NodeScores:
    """|normalised effect| of patching each node's clean output into the corrupted run.

    For each node v, |m(corrupted run with v's output from the clean row) - m_corr| /
    |m_clean - m_corr|: the share of the effect v alone restores (everything downstream
    recomputes). Where two paths are each sufficient, noising sees neither and denoising
    each (Heimersheim & Nanda 2024).
    """
    run = _run(problem, n)
    reverse = CounterfactualPair(run.pair.corrupted, run.pair.clean, f"reverse of: {run.pair.description}")
    with torch.no_grad():
        m_clean = float(_metric(problem, problem.model(run.clean), run.pair))
    result = ablation_scores(problem.model, reverse, components=problem.nodes(), method="resample",
                             metric=lambda logits: _metric(problem, logits, run.pair))
    restored = (result.scores - result.baseline).abs() / _scale(m_clean, result.baseline)  # [node]
    return NodeScores({node: float(e) for node, e in zip(result.components, restored)})


# ---- edge attribution patching and ACDC: toylab.methods --------------------------------
def _edge_scores(result, problem: Problem) -> EdgeScores:
    """An ``EdgeAttribution``'s |score| per candidate edge."""
    return EdgeScores({e: abs(result.scores[e]) for e in problem.edges("qkv")}, "qkv")


def eap(problem: Problem, *, n: int = 64) -> EdgeScores:
    """|score| of ``toylab.methods.eap``: edge attribution patching."""
    _check_n("n", n)
    return _edge_scores(methods.eap(problem.model, problem.pair(n)), problem)


def eap_qk(problem: Problem, *, n: int = 64) -> EdgeScores:
    """|score| of ``toylab.methods.eap(qk_fix=True)``: EAP with AtP*'s QK fix."""
    _check_n("n", n)
    return _edge_scores(methods.eap(problem.model, problem.pair(n), qk_fix=True), problem)


def atp_star(problem: Problem, *, n: int = 64) -> EdgeScores:
    """``toylab.methods.eap(qk_fix=True, grad_drop=True)``: AtP* (QK fix and GradDrop), unsigned."""
    _check_n("n", n)
    return _edge_scores(methods.eap(problem.model, problem.pair(n), qk_fix=True, grad_drop=True), problem)


def edge_noising(problem: Problem, *, n: int = 64) -> EdgeScores:
    """|score| of ``toylab.methods.edge_patching(direction="noise")``: each edge ablated alone."""
    _check_n("n", n)
    return _edge_scores(methods.edge_patching(problem.model, problem.pair(n), direction="noise"), problem)


def edge_denoising(problem: Problem, *, n: int = 64) -> EdgeScores:
    """|score| of ``toylab.methods.edge_patching(direction="denoise")``: each edge restored alone."""
    _check_n("n", n)
    return _edge_scores(methods.edge_patching(problem.model, problem.pair(n), direction="denoise"), problem)


def eap_ig(problem: Problem, *, n: int = 64, steps: int = 5) -> EdgeScores:
    """|score| of ``toylab.methods.eap_ig``: EAP with integrated gradients."""
    _check_n("steps", steps)
    _check_n("n", n)
    return _edge_scores(methods.eap_ig(problem.model, problem.pair(n), steps=steps), problem)


def acdc(problem: Problem, *, threshold: float | None = None, metric: str = "kl", n: int = 64) -> EdgeScores:
    """ACDC's damage per edge (``toylab.methods.acdc``); ``{e: score > threshold}`` is exactly its circuit."""
    _check_n("n", n)
    return EdgeScores(methods.acdc(problem.model, problem.pair(n), threshold=threshold, metric=metric).scores, "qkv")


def edge_pruning(problem: Problem, *, n: int = 64, seed: int = 0) -> EdgeScores:
    """Each edge's learned log alpha from ``toylab.methods.edge_pruning`` (default steps, lr, sparsity)."""
    _check_n("n", n)
    result = methods.edge_pruning(problem.model, problem.pair(n), seed=seed)
    return EdgeScores({e: result.scores[e] for e in problem.edges("qkv")}, "qkv")


def acdc_circuit(problem: Problem, *, threshold: float | None = None, metric: str = "kl", n: int = 64) -> Circuit:
    """The circuit ACDC keeps at ``threshold`` (qkv edges)."""
    _check_n("n", n)
    result = methods.acdc(problem.model, problem.pair(n), threshold=threshold, metric=metric)
    return Circuit(edges=result.circuit, granularity="qkv")


# ---- correlational heuristic --------------------------------------------------------
def attention_heuristic(problem: Problem, *, n: int = 64) -> NodeScores:
    """Each head's best detector score; embed 1.0, MLPs 0.0.

    A head scores its best score over the detectors defined on the task's clean inputs (the
    token rules and the task's own head types, e.g. IOI's name movers);
    embed scores 1.0 (every circuit reads its input tokens); MLPs 0.0 (attention patterns
    say nothing about them). Correlational only: on ``induction-constructed`` the decoy
    heads L0H0 and L1H0 attend exactly like the circuit heads and score the same.
    Cost: 1 forward per detector.
    """
    _check_n("n", n)
    cfg = problem.cfg
    tokens = problem.clean(n).tokens
    best = None  # [layer, head]
    for detector in detectors_of(problem.task):
        try:
            scores = head_scores(problem.model, tokens, detector, problem.task).scores
        except ValueError:  # the detector is undefined on this task (no repeated tokens)
            continue
        best = scores if best is None else torch.maximum(best, scores)
    if best is None:
        best = torch.zeros(cfg.n_layers, cfg.n_heads, device="cpu")  # [layer, head]
    out = {}
    for node in problem.nodes():
        kind, layer, head = comp.parse(node)
        out[node] = float(best[layer, head]) if kind == "head" else (1.0 if node == "embed" else 0.0)
    return NodeScores(out)


# ---- registry -----------------------------------------------------------------------
BASELINES: dict[str, Method] = {
    "random": random_scores,
    "truth": truth_scores,
    "resample-ablation": resample_ablation,
    "denoising": denoising,
    "edge-noising": edge_noising,
    "edge-denoising": edge_denoising,
    "eap": eap,
    "eap-qk": eap_qk,
    "atp-star": atp_star,
    "eap-ig": eap_ig,
    "acdc": acdc,
    "edge-pruning": edge_pruning,
    "attention-heuristic": attention_heuristic,
}

DESCRIPTIONS: dict[str, str] = {
    "random": "uniform random edge scores (seeded): the floor",
    "truth": "1 for the truth's edges, 0 otherwise: the ceiling (reads the answer key)",
    "resample-ablation": "|normalised effect| of resample-ablating each node's output (noising)",
    "denoising": "|normalised effect| of patching each node's clean output into the corrupted run",
    "edge-noising": "each edge ablated alone for real: the share of the effect it destroys",
    "edge-denoising": "each edge restored alone in the corrupted run: the share of the effect it restores",
    "eap": "edge attribution patching: |(corrupted - clean sender) . gradient at the receiver|",
    "eap-qk": "EAP with AtP*'s QK fix: attention patterns recomputed exactly for edges into q and k",
    "atp-star": "AtP*: EAP with the QK fix and GradDrop (|score| averaged over one layer's gradient dropped at a time)",
    "eap-ig": "EAP with gradients integrated over interpolated input embeddings (5 steps)",
    "acdc": "ACDC: greedy edge pruning from the output back, KL damage, threshold 0.1",
    "edge-pruning": "edge pruning: hard-concrete edge masks learned against KL to the full model (60 steps)",
    "attention-heuristic": "best attention-detector score per head (correlational)",
}

PEEKS = frozenset({"truth"})  # baselines that read the answer key

__all__ = ["ACDC_METRICS", "ACDC_THRESHOLDS", "BASELINES", "DESCRIPTIONS", "PEEKS", "acdc", "acdc_circuit",
           "atp_star", "attention_heuristic", "denoising", "eap", "eap_ig", "eap_qk", "edge_denoising", "edge_noising", "edge_pruning",
           "random_scores", "resample_ablation", "truth_scores"]
