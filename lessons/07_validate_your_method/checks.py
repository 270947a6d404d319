"""Checkers for lesson 07, validate your own method: every answer is re-measured, by running the
reference intervention or the validation harness again, never by reading the truth back."""

from __future__ import annotations

import math
from functools import cache, lru_cache
from typing import Any

import torch

from toylab import methods
from toylab.lessons.checking import call, head_set, number
from toylab.lessons.exercise import Wrong, exercise
from toylab import components as comp
from toylab.validate import (
    MethodOutputError,
    NodeScores,
    Problem,
    normalise,
    score,
    subjects,
)
from toylab.validate.baselines import BASELINES

from .fixtures import INDUCTION_MODELS

# Models the node-score implementation is compared on: hand-built, enforced (another seed than the
# lesson's), and one with MLPs, so that embed, heads and MLPs are all exercised.
IMPLEMENT_MODELS = (("induction-constructed", 0), ("induction-siit", 1), ("brackets-siit", 2))
CHECK_DATA_SEED = 11  # the checker's pairs: problem.pair(64) draws them, for the learner and the reference
DECOY_MODEL = "induction-constructed"
EDGE_MODEL = "induction-siit"
EDGE_BAR = 0.95


@cache
def _subject(name: str, seed: int):
    """One suite member, loaded once per process (the harness restores any model a method damaged)."""
    return subjects([name], [seed])[0]


def _problem(name: str, seed: int, data_seed: int = CHECK_DATA_SEED) -> Problem:
    s = _subject(name, seed)
    return Problem(s.name, s.seed, s.model, s.task, data_seed)  # no answer key: nothing to peek at


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _untouched(model, before: dict[str, torch.Tensor], where: str) -> None:
    """Wrong if the method left hooks or changed weights (and put the model back as it was)."""
    hooked = model.has_hooks()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    if hooked or changed:
        for point in model.hook_points.values():
            point.fns.clear()
        model.load_state_dict(before)
    if hooked:
        raise Wrong(f"on {where} your method left hooks attached to the model",
                    "add hooks only with `with model.hooks([(name, fn)]):`, which removes them on exit")
    if changed:
        raise Wrong(f"on {where} your method changed the model's weights ({changed[:2]})",
                    "a method must leave the model as it found it: write a patched copy of the activation "
                    "(x = x.clone()) inside the hook, never into a parameter")


def _gap(problem: Problem, n: int = 64) -> float:
    """|m_clean - m_corrupted| on problem.pair(n): the whole effect of the counterfactual change."""
    pair = problem.pair(n)
    with torch.no_grad():
        return abs(float(problem.metric(problem.model(pair.clean.tokens), pair))
                   - float(problem.metric(problem.model(pair.corrupted.tokens), pair)))


def reference_node_scores(problem: Problem, n: int = 64) -> dict[str, float]:
    """|m_clean - m(node resample-ablated)| / |m_clean - m_corrupted| per node, by toylab's ablation loop."""
    pair = problem.pair(n)
    nodes = problem.nodes()
    with torch.no_grad():
        m_corr = float(problem.metric(problem.model(pair.corrupted.tokens), pair))
        result = methods.ablation_scores(problem.model, pair, components=nodes, method="resample",
                                         metric=lambda logits: problem.metric(logits, pair))
    gap = abs(result.baseline - m_corr)
    return {node: abs(result.baseline - float(s)) / gap for node, s in zip(result.components, result.scores)}


# ---- 7.1 -----------------------------------------------------------------------------------


@exercise("validate.resample_scores", "A method: resample-ablate each node", "implement", "medium", 20,
          hint="for each node in problem.nodes(), run pair.clean.tokens with that node's output replaced by its "
               "output on pair.corrupted.tokens (hook_embed, blocks.{l}.attn.hook_result[:, :, h], "
               "blocks.{l}.hook_mlp_out) and score |m_clean - m_ablated| / |m_clean - m_corrupted|, "
               "with m = problem.metric(logits, pair) and pair = problem.pair(64)")
def _resample_scores(fn) -> str:
    if not callable(fn):
        raise Wrong(f"expected a method (a function of problem), got {type(fn).__name__}",
                    "pass the function itself, not its result")
    worst = 0.0
    for name, seed in IMPLEMENT_MODELS:
        problem = _problem(name, seed)
        where = f"{name} (seed {seed})"
        before = _snapshot(problem.model)
        try:
            with torch.no_grad():
                raw = call(fn, problem)
        finally:
            _untouched(problem.model, before, where)
        try:
            result = normalise(raw, problem)
        except MethodOutputError as err:
            raise Wrong(f"on {where}: {err}") from None
        if not isinstance(result, NodeScores):
            raise Wrong(f"on {where} your method returned {type(result).__name__}, not node scores",
                        "return a dict {node id: score}, one entry for each of problem.nodes()")
        got = result.scores
        want = reference_node_scores(problem)
        if missing := [n for n in want if n not in got]:
            raise Wrong(f"on {where} your method scored no {missing[:4]}",
                        f"score every node of problem.nodes(): {problem.nodes()}")
        gap = _gap(problem)
        for node, value in want.items():
            err = abs(got[node] - value)
            worst = max(worst, err)
            if err > 1e-4:
                hint = None
                if abs(abs(got[node]) - value) < 1e-4:
                    hint = "take the absolute value: the score is the size of the change, whatever its sign"
                elif abs(abs(got[node]) - value * gap) < 1e-4 * max(1.0, gap):
                    hint = (f"divide by |m_clean - m_corrupted| (here {gap:.3f}): scores are fractions of the "
                            "whole effect of the counterfactual change, so models can be compared")
                raise Wrong(f"on {where}, node {node}: your score is {got[node]:.4f}, resample-ablating it "
                            f"gives {value:.4f}", hint)
    return (f"your scores match toylab's resample-ablation loop on {len(IMPLEMENT_MODELS)} models (largest "
            f"difference {worst:.1e}), and the models were left untouched")


# ---- 7.2 -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _heuristic_aurocs() -> dict[str, float]:
    """The attention heuristic's node AUROC on each induction model, re-run through the harness."""
    report = score(BASELINES["attention-heuristic"], names=list(INDUCTION_MODELS), label="attention-heuristic")
    return {model: stats["node_auroc"][0] for model, stats in report.summary().items()
            if "node_auroc" in stats and not math.isnan(stats["node_auroc"][0])}


@exercise("validate.heuristic_failure", "Where does the attention heuristic fail?", "answer", "easy", 10,
          hint="score baselines.BASELINES['attention-heuristic'] on the induction models, print report.table(), "
               "and answer (model, node AUROC) for the row with the lowest node_auroc")
def _heuristic_failure(answer: Any) -> str:
    try:
        model, value = answer
    except (TypeError, ValueError):
        raise Wrong(f"answer with a pair (model name, node AUROC), got {answer!r}") from None
    value = number(value, "the node AUROC")
    aurocs = _heuristic_aurocs()
    worst = min(aurocs, key=aurocs.get)
    if model not in aurocs:
        known = ", ".join(f"{m} {v:.3f}" for m, v in aurocs.items())
        raise Wrong(f"{model!r} is not an induction model with a node AUROC; re-running the harness gives {known}")
    if model != worst:
        raise Wrong(f"on {model} the heuristic's node AUROC is {aurocs[model]:.3f}, and on {worst} it is "
                    f"{aurocs[worst]:.3f}: that is where it fails")
    if abs(value - aurocs[worst]) > 0.01:
        raise Wrong(f"{worst} is right, but re-running the harness gives a node AUROC of {aurocs[worst]:.3f}, "
                    f"not {value:.3f}", "read the node_auroc column of report.table() (or "
                    "entry.metrics['node_auroc'])")
    return (f"the attention heuristic ranks {worst}'s nodes with AUROC {aurocs[worst]:.3f}: not much better than "
            "a coin, on the one model where attention patterns were built to mislead")


# ---- 7.3 -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _decoy_measurements() -> tuple[dict[str, float], dict[str, dict[str, float]], float]:
    """Per head of the decoy model: its normalised resample-ablation effect and its detector scores;
    and the logit difference's full effect (clean minus corrupted)."""
    problem = _problem(DECOY_MODEL, 0)
    model = problem.model
    scores = reference_node_scores(problem)
    heads = [n for n in problem.nodes() if comp.parse(n)[0] == "head"]
    tokens = problem.clean(64, seed=CHECK_DATA_SEED + 1).tokens
    detectors: dict[str, dict[str, float]] = {h: {} for h in heads}
    with torch.no_grad():
        for detector in methods.DETECTORS:
            grid = methods.head_scores(model, tokens, detector).scores  # [layer, head]
            for h in heads:
                _, layer, index = comp.parse(h)
                detectors[h][detector] = float(grid[layer, index])
        pair = problem.pair(64)
        gap = float(problem.metric(model(pair.clean.tokens), pair) - problem.metric(model(pair.corrupted.tokens),
                                                                                      pair))
    return {h: scores[h] for h in heads}, detectors, gap


def _ablated_effect(heads: set[str]) -> float:
    """|change| of the logit difference, as a fraction of the full effect, with ``heads`` resample-ablated together."""
    problem = _problem(DECOY_MODEL, 0)
    model, pair = problem.model, problem.pair(64)
    with torch.no_grad():
        _, corrupted = model.run_with_cache(pair.corrupted.tokens)
        m_clean = float(problem.metric(model(pair.clean.tokens), pair))
        m_corr = float(problem.metric(model(pair.corrupted.tokens), pair))
        by_layer: dict[int, list[int]] = {}
        for h in heads:
            _, layer, index = comp.parse(h)
            by_layer.setdefault(layer, []).append(index)

        def swap(layer: int, indices: list[int]):
            name = f"blocks.{layer}.attn.hook_result"

            def fn(x, hook):  # x: [batch, pos, head, d_model]
                x = x.clone()
                x[:, :, indices] = corrupted[name][:, :, indices]
                return x

            return name, fn

        with model.hooks([swap(layer, idx) for layer, idx in by_layer.items()]):
            m = float(problem.metric(model(pair.clean.tokens), pair))
    return abs(m_clean - m) / abs(m_clean - m_corr)


def _best(detectors: dict[str, float]) -> tuple[str, float]:
    name = max(detectors, key=detectors.get)
    return name, detectors[name]


@exercise("validate.decoy_heads", "Name the decoys", "answer", "medium", 10,
          hint="compare each head's detector scores (methods.head_scores) with what resample-ablating it does to "
               "the logit difference: a decoy attends exactly like a circuit head, and ablating it changes nothing")
def _decoy_heads(answer: Any) -> str:
    heads = head_set(answer, "your decoys")
    effects, detectors, _ = _decoy_measurements()
    if unknown := sorted(heads - set(effects)):
        raise Wrong(f"{DECOY_MODEL} has no head {unknown[0]}; its heads are {sorted(effects)}")
    causal = {h for h, e in effects.items() if e > 0.1}
    # A decoy: no effect at all, yet it looks like a circuit head (same best detector, same score).
    decoys = set()
    for h, e in effects.items():
        if e > 1e-3 or h in causal:
            continue
        kind, value = _best(detectors[h])
        if any(_best(detectors[c])[0] == kind and abs(_best(detectors[c])[1] - value) < 0.02 for c in causal):
            decoys.add(h)
    for h in sorted(heads):
        if h in causal:
            raise Wrong(f"resample-ablating {h} changes the logit difference by {effects[h]:.2f} of its full "
                        "effect: the model needs it, so it is part of the circuit, not a decoy",
                        "a decoy looks like a circuit head and does nothing: ablating it leaves the answer as it was")
    together = _ablated_effect(heads) if heads else 0.0
    if together > 1e-3:
        raise Wrong(f"ablating {sorted(heads)} together changes the logit difference by {together:.3f} of its "
                    "full effect: not all of them are inert")
    if missing := sorted(decoys - heads):
        h = missing[0]
        kind, value = _best(detectors[h])
        twin = next(c for c in sorted(causal) if _best(detectors[c])[0] == kind)
        raise Wrong(f"you left out {h}: its {kind} score is {value:.3f} (the circuit head {twin}'s is "
                    f"{_best(detectors[twin])[1]:.3f}), yet ablating it changes nothing",
                    "look at every detector, previous-token as well as induction")
    if not heads:
        raise Wrong("name at least one head")
    pairs = ", ".join(f"{h} ({_best(detectors[h])[0]} {_best(detectors[h])[1]:.3f})" for h in sorted(heads))
    return (f"{pairs}: each attends like a circuit head, and ablating all of them together moves the logit "
            f"difference by {together:.1e} of its full effect. Correlation is not causation.")


# ---- 7.4 -----------------------------------------------------------------------------------


@exercise("validate.edge_method", "A method that finds the edges", "build", "hard", 30,
          hint="score each edge (sender, receiver, 'head') by what resample-ablating that edge alone does: add "
               "the sender's (corrupted - clean) output to the receiver's inputs (blocks.{l}.hook_{q,k,v}_input"
               "[:, :, h] for a head, blocks.{L-1}.hook_resid_post for the logits) in the clean run")
def _edge_method(fn) -> str:
    if not callable(fn):
        raise Wrong(f"expected a method (a function of problem), got {type(fn).__name__}",
                    "pass the function itself, not its result")
    # Every shipped seed, with the harness's own held-out scoring pairs: nothing the learner tuned on.
    report = score(fn, names=[EDGE_MODEL], label=getattr(fn, "__name__", "your method"))
    for entry in report.entries:
        where = f"{entry.model} (seed {entry.seed})"
        if entry.peeked:
            raise Wrong(f"on {where} your method read problem.answer_key(): the harness marks that as a ceiling, "
                        "not a result", "find the circuit from the model's behaviour: pairs, hooks and the metric")
        if entry.error:
            raise Wrong(f"on {where} the harness rejected your method: {entry.error}")
        if "edge_auroc[head]" not in entry.metrics:
            raise Wrong(f"on {where} your method returned {entry.kind}; this exercise scores edges",
                        "return {Edge(sender, receiver, 'head'): score} (or 3-tuples) for the edges of "
                        "problem.edges('head')")
    aurocs = {e.seed: e.metrics["edge_auroc[head]"] for e in report.entries}
    low = {s: a for s, a in aurocs.items() if not a >= EDGE_BAR}
    if low:
        seed, auroc = min(low.items(), key=lambda kv: kv[1])
        raise Wrong(f"edge AUROC at head granularity is {auroc:.3f} on {EDGE_MODEL} seed {seed} (needs "
                    f"{EDGE_BAR} on every seed; all: " + ", ".join(f"seed {s} {a:.3f}" for s, a in aurocs.items())
                    + ")")
    stats = report.summary()[EDGE_MODEL]
    return (f"edge AUROC [head] {stats['edge_auroc[head]'][0]:.3f} on every seed of {EDGE_MODEL} (min "
            f"{min(aurocs.values()):.3f}), CPR {stats['cpr'][0]:.3f}, faithfulness of its top |T| edges "
            f"{stats['faithfulness'][0]:.3f}, without looking at the answer key")
