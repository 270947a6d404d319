"""Built-in circuit-discovery baselines: the methods the validation harness scores first.

Axis names used in shape comments:
    batch, pos     as everywhere (rows of ``problem.pair(n)``, token positions)
    head           attention head within a layer
    d_model        residual stream width
    d_vocab_out    output logits
    sender         upstream components whose outputs feed receivers, in residual-stream
                   order: embed, L0H0 .. L0H{H-1}, MLP0, L1H0, ..., MLP{L-1}
    receiver       receiver inputs, in order: for each layer the q inputs of its heads,
                   then their k inputs, then their v inputs, then (unless attention-only)
                   the MLP's input; last the logits (the final ``hook_resid_post``)
    step           points of the integrated-gradients path

Every baseline is a plain function ``name(problem, *, options) -> result`` that follows
``toylab.validate.protocol``: it reads only ``problem.pair``, ``problem.model``,
``problem.metric``, ``problem.nodes()`` and ``problem.edges()`` (``truth_scores`` alone
reads the answer key, and says so), never changes the model's weights, and removes every
hook it adds (all hooks live in context managers). ``pos_embed`` is never scored: it is
the same in a clean input and its counterfactual.

Notation: ``m(.)`` is ``problem.metric``, the logit difference between the clean and the
counterfactual answer, averaged over the batch's scored positions; ``m_clean`` and
``m_corr`` are m of the model on the clean and on the corrupted tokens, and the
normalised metric is ``f = (m - m_corr) / (m_clean - m_corr)`` (1 for the whole model, 0
with everything ablated), as in ``toylab.truth.certify``. Costs are counted in forward
and backward passes of a batch of ``n`` pairs; the graphs here are small, so the passes
dominate.

random               EdgeScores "qkv". Uniform [0, 1) scores from a seeded generator: the
                     floor every method must beat (AUROC 0.5 in expectation).
                     Cost: none.
truth                EdgeScores "qkv". 1.0 for the truth's edges, 0.0 for every other
                     candidate edge: the ceiling (AUROC 1). Reads the answer key, so the
                     harness marks it as having peeked. Cost: none.
activation-patching  NodeScores. For each node v (embed, every head, every MLP),
                     |m_clean - m(v resample-ablated)| / |m_clean - m_corr|: the clean run
                     with v's output replaced by its output on the corrupted row (total
                     effect: everything downstream recomputes). Uses
                     ``toylab.methods.ablation_scores``.
                     Cost: 2 + 2 * |nodes| forwards (each ablation records its reference).
eap                  EdgeScores "qkv" (Syed et al. 2023). For edge (s, r, kind):
                         |sum over batch, pos of (s_corr - s_clean) . dm/d(input_r^kind)|
                         / |m_clean - m_corr|
                     where s_* is s's output [batch, pos, d_model] and the gradient is
                     taken on the clean run at the receiver's own input hook
                     (``hook_{q,k,v}_input`` per head, ``hook_mlp_in``, the final
                     ``hook_resid_post`` for the logits). m is a mean over the batch, so
                     the gradient carries the 1/batch: the sum is the batch-averaged
                     first-order estimate of what ablating that edge alone does to m, in
                     units of the full effect (comparable to ACDC's "logit_diff" damage).
                     Cost: 2 forwards + 1 backward; one einsum over [sender, receiver].
eap-ig               EdgeScores "qkv" (Hanna et al. 2024, EAP-IG-inputs). As eap, with the
                     gradient averaged over ``steps`` runs whose token embeddings
                     (``hook_embed``; ``hook_pos_embed`` is identical on both inputs) are
                     interpolated, e_k = e_corr + (k / steps) (e_clean - e_corr) for
                     k = 0 .. steps - 1 (a left Riemann sum: the corrupted end of the path
                     is included, the clean end, where plain EAP takes its gradient, not).
                     Cost: 2 + steps forwards + steps backwards.
acdc                 EdgeScores "qkv" (Conmy et al. 2023). Start from the full graph; visit
                     receivers in reverse topological order (logits, then MLP{L-1}, the
                     heads of layer L-1 from the last to the first, ...); for a head, its
                     q, then k, then v inputs; within one input, senders from the latest
                     to the earliest. Tentatively remove each edge (resample ablation via
                     ``toylab.interventions.ablated`` with the kept set minus that edge)
                     and measure the damage relative to the current graph:
                         "kl"          KL(full model || current graph minus e) - KL(full ||
                                       current graph), the KL of the output distributions
                                       averaged over the clean batch's scored positions;
                         "logit_diff"  |f(current graph minus e) - f(current graph)|.
                     If damage <= threshold the edge is removed for good ("<=" rather than
                     "<" so that an edge of damage exactly 0 goes at every threshold,
                     0 included). An edge's score is the damage measured when it was
                     tested, so
                         acdc_circuit(...) == {e : scores[e] > threshold}
                     exactly. A receiver with no outgoing edge left when it is visited
                     cannot affect the output: its incoming edges are removed untested,
                     with score 0.0 (their damage is exactly 0; ACDC skips them the same
                     way). Defaults (``ACDC_THRESHOLDS``): "kl" 0.1 and "logit_diff"
                     0.05, the best mean F1 against the truth over the zoo (see there).
                     Cost: 4 forwards + 2 per tested edge (``ablated`` records the
                     corrupted run each time it is entered); at most 4 + 2 |edges|.
attention-heuristic  NodeScores. A head scores its best attention-detector score (max over
                     ``toylab.methods.detectors.DETECTORS`` that are defined on the task's
                     clean inputs); embed scores 1.0 (every circuit reads its input
                     tokens); MLPs score 0.0 (attention patterns say nothing about them).
                     Correlational only: on ``induction-constructed`` the decoy heads L0H0
                     and L1H0 attend exactly like the circuit heads and score the same.
                     Cost: 1 forward per detector.

``acdc_circuit`` returns ACDC's circuit itself; ``BASELINES`` maps each name above to its
function (default options), ``DESCRIPTIONS`` to a one-line description, and ``PEEKS``
holds the names of the baselines that read the answer key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from toylab.methods.ablation import ablation_scores
from toylab.methods.detectors import DETECTORS, head_scores
from toylab.tasks import CounterfactualPair
from toylab import components as comp
from toylab.interventions import ablated
from toylab.components import Edge
from toylab.validate.metrics import Faithfulness
from toylab.validate.protocol import Circuit, EdgeScores, Method, NodeScores, Problem

ACDC_METRICS = ("kl", "logit_diff")
# Chosen by sweeping thresholds over the zoo's twelve shipped models (data seed 0, n=64)
# for the best mean F1 of ACDC's circuit against the truth: KL 0.1 gives 0.95 (0.03: 0.94,
# 0.3: 0.91), logit_diff 0.05 gives 0.94 (0.02: 0.92, 0.1: 0.84). At these ACDC returns the
# truth exactly on induction-constructed and induction-siit (all seeds with logit_diff;
# with KL, seed 2 also keeps embed -> L0H2 (q) and (k), each with KL damage 0.16, where the
# truth's weakest edge does 16). Natural models (induction-2l, -tiny) have weak true edges
# that no single threshold separates from noise: sweep the threshold there.
ACDC_THRESHOLDS = {"kl": 0.1, "logit_diff": 0.05}


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
    values = torch.rand(len(edges), generator=torch.Generator().manual_seed(seed))  # [edge]
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


# ---- node-level patching ------------------------------------------------------------
def activation_patching(problem: Problem, *, n: int = 64) -> NodeScores:
    """|normalised effect| of resample-ablating each node's output on the clean run."""
    run = _run(problem, n)
    nodes = problem.nodes()  # embed, heads, MLPs
    with torch.no_grad():
        m_corr = float(_metric(problem, problem.model(run.corrupted), run.pair))
    result = ablation_scores(problem.model, run.pair, components=nodes, method="resample",
                             metric=lambda logits: _metric(problem, logits, run.pair))
    effect = (result.baseline - result.scores).abs() / _scale(result.baseline, m_corr)  # [node]
    return NodeScores({node: float(e) for node, e in zip(result.components, effect)})


# ---- edge attribution patching ------------------------------------------------------
def _sender_hooks(cfg) -> list[str]:
    names = ["hook_embed"]
    for layer in range(cfg.n_layers):
        names.append(f"blocks.{layer}.attn.hook_result")
        if not cfg.attn_only:
            names.append(f"blocks.{layer}.hook_mlp_out")
    return names


def _stack_senders(cache, cfg) -> Tensor:
    """Sender outputs in residual-stream order: [batch, pos, sender, d_model]."""
    parts = []
    for name in _sender_hooks(cfg):
        act = cache[name]
        parts.append(act if act.ndim == 4 else act.unsqueeze(2))  # heads [b, p, head, m]; others [b, p, 1, m]
    return torch.cat(parts, dim=2)


def _sender_ids(cfg) -> list[str]:
    ids = ["embed"]
    for layer in range(cfg.n_layers):
        ids += [comp.head_id(layer, h) for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            ids.append(f"MLP{layer}")
    return ids


def _receiver_ids(cfg) -> list[tuple[str, str]]:
    """(receiver, kind) in the order of the stacked receiver gradients."""
    ids = []
    for layer in range(cfg.n_layers):
        for kind in comp.QKV:
            ids += [(comp.head_id(layer, h), kind) for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            ids.append((f"MLP{layer}", "resid"))
    return ids + [(comp.OUTPUT, "resid")]


def _receiver_hooks(cfg) -> list[str]:
    names = []
    for layer in range(cfg.n_layers):
        names += [f"blocks.{layer}.hook_{kind}_input" for kind in comp.QKV]
        if not cfg.attn_only:
            names.append(f"blocks.{layer}.hook_mlp_in")
    return names + [f"blocks.{cfg.n_layers - 1}.hook_resid_post"]


def _receiver_gradients(problem: Problem, run: _Run, embed: Tensor | None = None) -> tuple[Tensor, Tensor, float]:
    """d m / d (each receiver input) on one clean run (1 forward, 1 backward).

    ``embed`` [batch, pos, d_model] replaces the token embedding (for integrated gradients).
    Returns (grads [batch, pos, receiver, d_model], the run's sender outputs
    [batch, pos, sender, d_model], the run's metric m).
    """
    model, cfg = problem.model, problem.cfg
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def probe(x: Tensor, hook) -> Tensor:
        # A fresh tensor per receiver input: the block hands all heads (and q, k, v) one
        # shared view of the stream, and the MLP and logits read the stream itself, so the
        # gradient there would mix every reader's. Cloning gives this input its own node
        # in the graph; the values, and so the forward, are unchanged.
        y = x.clone()
        inputs[hook.name] = y
        return y

    def record(x: Tensor, hook) -> None:
        outputs[hook.name] = x.detach()

    hooks = [(name, probe) for name in _receiver_hooks(cfg)] + [(name, record) for name in _sender_hooks(cfg)]
    if embed is not None:
        hooks.insert(0, ("hook_embed", lambda x, hook: embed))
    with torch.enable_grad(), model.hooks(hooks):
        metric = _metric(problem, model(run.clean), run.pair)
        # autograd.grad, not backward(): the parameters' .grad stay untouched.
        names = _receiver_hooks(cfg)
        grads = torch.autograd.grad(metric, [inputs[name] for name in names], allow_unused=True)
    parts = []
    for name, grad in zip(names, grads):
        if grad is None:  # an input nothing downstream reads
            grad = torch.zeros_like(inputs[name])
        parts.append(grad if grad.ndim == 4 else grad.unsqueeze(2))  # [b, p, head, m] or [b, p, 1, m]
    # q, k, v inputs of one layer are [b, p, head, m] each: cat keeps the receiver order.
    return torch.cat(parts, dim=2).detach(), _stack_senders(outputs, cfg), float(metric.detach())


def _edge_scores_from(problem: Problem, delta: Tensor, grads: Tensor, scale: float) -> EdgeScores:
    """|delta . grad| summed over batch and pos, per candidate edge, over ``scale``."""
    cfg = problem.cfg
    scores = torch.einsum("bpsm,bprm->sr", delta, grads).abs() / scale  # [sender, receiver]
    sender_index = {s: i for i, s in enumerate(_sender_ids(cfg))}
    receiver_index = {r: i for i, r in enumerate(_receiver_ids(cfg))}
    scores = scores.cpu()
    return EdgeScores({e: float(scores[sender_index[e.sender], receiver_index[(e.receiver, e.kind)]])
                       for e in problem.edges("qkv")}, "qkv")


def eap(problem: Problem, *, n: int = 64) -> EdgeScores:
    """Edge attribution patching: 2 forwards and 1 backward (see the module docstring)."""
    run = _run(problem, n)
    model, cfg = problem.model, problem.cfg
    with torch.no_grad():
        logits, corrupted = model.run_with_cache(run.corrupted, names=_sender_hooks(cfg))
    m_corr = float(_metric(problem, logits, run.pair))
    grads, clean, m_clean = _receiver_gradients(problem, run)  # [b, p, receiver, m], [b, p, sender, m]
    delta = _stack_senders(corrupted, cfg) - clean  # [b, p, sender, m]
    return _edge_scores_from(problem, delta, grads, _scale(m_clean, m_corr))


def eap_ig(problem: Problem, *, n: int = 64, steps: int = 5) -> EdgeScores:
    """EAP with the receivers' gradients integrated along corrupted -> clean input embeddings."""
    _check_n("steps", steps)
    run = _run(problem, n)
    model, cfg = problem.model, problem.cfg
    with torch.no_grad():
        corrupted_logits, corrupted = model.run_with_cache(run.corrupted, names=_sender_hooks(cfg))
        # The sender outputs of the clean run itself: the interpolated runs' are not clean.
        clean_logits, clean = model.run_with_cache(run.clean, names=_sender_hooks(cfg))
    scale = _scale(float(_metric(problem, clean_logits, run.pair)), float(_metric(problem, corrupted_logits, run.pair)))
    e_corr, e_clean = corrupted["hook_embed"], clean["hook_embed"]  # [b, p, m] each
    total = None  # [b, p, receiver, m]: the gradients summed over the path
    for k in range(steps):
        embed = e_corr + (k / steps) * (e_clean - e_corr)  # [b, p, m]
        grads, _, _ = _receiver_gradients(problem, run, embed)  # [b, p, receiver, m]
        total = grads if total is None else total + grads
    delta = _stack_senders(corrupted, cfg) - _stack_senders(clean, cfg)  # [b, p, sender, m]
    return _edge_scores_from(problem, delta, total / steps, scale)


# ---- ACDC ---------------------------------------------------------------------------
def _acdc_order(problem: Problem) -> list[tuple[str, list[Edge]]]:
    """Receivers in reverse topological order, each with its candidate edges in test order."""
    cfg = problem.cfg
    candidates = set(problem.edges("qkv"))
    senders = [s for s in comp.senders(cfg) if s != "pos_embed"]
    order = [(comp.OUTPUT, "resid")]
    for layer in reversed(range(cfg.n_layers)):
        if not cfg.attn_only:
            order.append((f"MLP{layer}", "resid"))
        for h in reversed(range(cfg.n_heads)):
            order += [(comp.head_id(layer, h), kind) for kind in comp.QKV]
    out = []
    for receiver, kind in order:
        edges = [Edge(s, receiver, kind) for s in reversed(senders)]
        out.append((receiver, [e for e in edges if e in candidates]))
    return out


def _acdc(problem: Problem, threshold: float | None, metric: str, n: int) -> tuple[EdgeScores, frozenset[Edge]]:
    if metric not in ACDC_METRICS:
        raise ValueError(f"unknown ACDC metric {metric!r}; choose one of {ACDC_METRICS}")
    if threshold is None:
        threshold = ACDC_THRESHOLDS[metric]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 (the damage an edge may do and still be removed), "
                         f"got {threshold}")
    run = _run(problem, n)
    model, cfg = problem.model, problem.cfg
    scored = run.pair.clean.scored  # [batch, pos] bool
    with torch.no_grad():
        full = model(run.clean).cpu()  # [batch, pos, d_vocab_out]
        m_clean = float(_metric(problem, full, run.pair))
        m_corr = float(_metric(problem, model(run.corrupted), run.pair))
    full_logp = full[scored].log_softmax(-1)  # [scored, d_vocab_out]
    if metric == "logit_diff":
        _scale(m_clean, m_corr)  # raises if there is no effect to keep

    def damage_of(keep: set[Edge]) -> float:
        """The metric of the clean run with only ``keep`` intact: KL to the full model, or f."""
        with torch.no_grad(), ablated(model, run.corrupted, keep):
            logits = model(run.clean).cpu()  # [batch, pos, d_vocab_out]
        if metric == "kl":
            logp = logits[scored].log_softmax(-1)  # [scored, d_vocab_out]
            return float((full_logp.exp() * (full_logp - logp)).sum(-1).mean())
        return float((_metric(problem, logits, run.pair) - m_corr) / (m_clean - m_corr))

    # pos_embed's edges are always kept: it is the same on both inputs, so ablating them
    # would change nothing, and the protocol never scores them.
    current = set(comp.edges(cfg))
    value = damage_of(current)  # ~0 for KL, ~1 for f: the full graph
    scores: dict[Edge, float] = {}
    for receiver, edges in _acdc_order(problem):
        if receiver != comp.OUTPUT and not any(e.sender == receiver for e in current):
            for edge in edges:  # the receiver reaches nothing: these edges cannot matter
                scores[edge] = 0.0
                current.discard(edge)
            continue
        for edge in edges:
            trial = current - {edge}
            new = damage_of(trial)
            damage = new - value if metric == "kl" else abs(new - value)
            scores[edge] = damage
            if damage <= threshold:
                current, value = trial, new
    circuit = frozenset(e for e in current if e in scores)
    return EdgeScores(scores, "qkv"), circuit


def acdc(problem: Problem, *, threshold: float | None = None, metric: str = "kl", n: int = 64) -> EdgeScores:
    """ACDC's damage per edge; ``{e: score > threshold}`` is exactly its circuit."""
    return _acdc(problem, threshold, metric, n)[0]


def acdc_circuit(problem: Problem, *, threshold: float | None = None, metric: str = "kl", n: int = 64) -> Circuit:
    """The circuit ACDC keeps at ``threshold`` (qkv edges)."""
    return Circuit(edges=_acdc(problem, threshold, metric, n)[1], granularity="qkv")


# ---- correlational heuristic --------------------------------------------------------
def attention_heuristic(problem: Problem, *, n: int = 64) -> NodeScores:
    """Each head's best detector score; embed 1.0, MLPs 0.0 (see the module docstring)."""
    _check_n("n", n)
    cfg = problem.cfg
    tokens = problem.clean(n).tokens
    best = None  # [layer, head]
    for detector in DETECTORS:
        try:
            scores = head_scores(problem.model, tokens, detector).scores
        except ValueError:  # the detector is undefined on this task (no repeated tokens)
            continue
        best = scores if best is None else torch.maximum(best, scores)
    if best is None:
        best = torch.zeros(cfg.n_layers, cfg.n_heads)
    out = {}
    for node in problem.nodes():
        kind, layer, head = comp.parse(node)
        out[node] = float(best[layer, head]) if kind == "head" else (1.0 if node == "embed" else 0.0)
    return NodeScores(out)


# ---- registry -----------------------------------------------------------------------
BASELINES: dict[str, Method] = {
    "random": random_scores,
    "truth": truth_scores,
    "activation-patching": activation_patching,
    "eap": eap,
    "eap-ig": eap_ig,
    "acdc": acdc,
    "attention-heuristic": attention_heuristic,
}

DESCRIPTIONS: dict[str, str] = {
    "random": "uniform random edge scores (seeded): the floor",
    "truth": "1 for the truth's edges, 0 otherwise: the ceiling (reads the answer key)",
    "activation-patching": "|normalised effect| of resample-ablating each node's output",
    "eap": "edge attribution patching: |(corrupted - clean sender) . gradient at the receiver|",
    "eap-ig": "EAP with gradients integrated over interpolated input embeddings (5 steps)",
    "acdc": "ACDC: greedy edge pruning from the output back, KL damage, threshold 0.1",
    "attention-heuristic": "best attention-detector score per head (correlational)",
}

PEEKS = frozenset({"truth"})  # baselines that read the answer key

__all__ = ["ACDC_METRICS", "ACDC_THRESHOLDS", "BASELINES", "DESCRIPTIONS", "PEEKS", "acdc", "acdc_circuit",
           "activation_patching", "attention_heuristic", "eap", "eap_ig", "random_scores", "truth_scores"]
