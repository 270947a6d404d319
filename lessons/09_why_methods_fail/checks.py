"""Checkers for lesson 09, why methods fail: implementations are compared with toylab's own methods on
other seeds of the traps (and a trained model where the trap would hide a mistake); answers are checked
against each trap's truth and re-measured by intervention on the checker's own pairs."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from toylab import components as comp
from toylab import methods
from toylab.components import Edge
from toylab.interventions import Faithfulness, ablated_logits, edges_without
from toylab.lessons.checking import call, number, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.methods import DASResult, Site, interchange_accuracy
from toylab.tasks import logit_diff
from toylab.tasks.logic import BIT_POS

from .fixtures import CODE_SITE, SEED, code_channels, model_name

CHECK_DATA_SEED = 12  # the checker's counterfactual pairs, never the lesson's
N_PAIRS = 32
IIA_SEED, IIA_PAIRS = 1012, 512  # the checker's interchange pairs for the distributed trap (DAS trains on seed 0)


def _trap(trap: str, seed: int = SEED):
    """(zoo model, the checker's pairs) of a trap, loaded once per process."""
    zm = zoo_model(model_name(trap), seed)
    return zm, zm.task.counterfactual(N_PAIRS, seed=CHECK_DATA_SEED)


def _trained(name: str = "induction-2l"):
    """A trained model with LayerNorm, where a shortcut the traps cannot see shows."""
    zm = zoo_model(name)
    return zm, zm.task.counterfactual(N_PAIRS, seed=CHECK_DATA_SEED)


def _m(model, tokens, pair) -> float:
    with torch.no_grad():
        return float(logit_diff(model(tokens), pair))


def _edge(value: Any, what: str, cfg) -> Edge:
    """A learner's edge (an Edge or a (sender, receiver, kind) tuple), validated against the model."""
    try:
        edge = Edge.parse(value)
        comp.check_edge(edge, cfg)
    except (ValueError, TypeError, KeyError) as err:
        raise Wrong(f"{what}: {value!r} is not an edge of this model ({err})",
                    "write an edge as Edge(sender, receiver, kind) or a tuple such as "
                    "('L0H1', 'MLP0', 'resid')") from None
    return edge


def _edges(value: Any, what: str, cfg) -> set[Edge]:
    if isinstance(value, (Edge, str)) or (isinstance(value, tuple) and len(value) == 3
                                          and all(isinstance(v, str) for v in value)):
        value = [value]  # one edge where a collection was asked for
    try:
        items = list(value)
    except TypeError:
        raise Wrong(f"{what}: expected a collection of edges, got {value!r}") from None
    return {_edge(v, what, cfg) for v in items}


def _noised(model, pair, edges: set[Edge]) -> float:
    """The share of the effect removed by noising ``edges`` together (every other edge intact)."""
    everything = set(comp.edges(model.cfg))
    m_clean, m_corr = _m(model, pair.clean.tokens, pair), _m(model, pair.corrupted.tokens, pair)
    m = float(logit_diff(ablated_logits(model, pair.clean.tokens, pair.corrupted.tokens, everything - edges), pair))
    return (m_clean - m) / (m_clean - m_corr)


def _denoised(model, pair, edge: Edge) -> float:
    """The share of the effect restored by denoising ``edge`` alone (toylab's edge patching, one edge)."""
    everything = set(comp.edges(model.cfg))
    m_clean, m_corr = _m(model, pair.clean.tokens, pair), _m(model, pair.corrupted.tokens, pair)
    m = float(logit_diff(ablated_logits(model, pair.corrupted.tokens, pair.clean.tokens, everything - {edge}), pair))
    return (m - m_corr) / (m_clean - m_corr)


def _denoised_sender(model, pair, sender: str) -> float:
    """The share of the effect restored by denoising every edge that leaves ``sender``."""
    everything = set(comp.edges(model.cfg))
    m_clean, m_corr = _m(model, pair.clean.tokens, pair), _m(model, pair.corrupted.tokens, pair)
    keep = everything - {e for e in everything if e.sender == sender}
    m = float(logit_diff(ablated_logits(model, pair.corrupted.tokens, pair.clean.tokens, keep), pair))
    return (m - m_corr) / (m_clean - m_corr)


def _head(value: Any, what: str, cfg) -> str:
    try:
        kind, layer, head = comp.parse(value) if isinstance(value, str) else (None, None, None)
    except ValueError:
        kind = None
    if kind != "head" or layer >= cfg.n_layers or head >= cfg.n_heads:
        raise Wrong(f"{what}: {value!r} is not a head of this model; write heads as 'L{{layer}}H{{head}}', "
                    f"e.g. 'L1H2'")
    return value


# ---- 9.1 -----------------------------------------------------------------------------------


@exercise("traps.self_repair", "The inert head and its understudy", "answer", "medium", 10,
          hint="the inert head: the truth's head whose resample-ablation effect is ~0; its understudy: the head "
               "that, ablated together with it (f(edges_without(cfg, [inert, other]))), leaves the answer gone")
def _self_repair(answer: Any) -> str:
    if not isinstance(answer, dict) or set(answer) != {"inert", "repairs"}:
        raise Wrong(f'answer with a dict {{"inert": head, "repairs": head}}, got {answer!r}')
    zm, pair = _trap("self-repair")
    cfg = zm.model.cfg
    inert, repairs = (_head(answer[k], f"your {k!r} head", cfg) for k in ("inert", "repairs"))
    (primary,), (backup,) = zm.truth.trap.nodes["primary"], zm.truth.trap.nodes["backup"]
    f = Faithfulness(zm.model, pair)
    with torch.no_grad():
        removed = {h: 1 - f(edges_without(cfg, [h])) for h in (inert, primary)}
        left = 1 - removed[primary]
        both = f(edges_without(cfg, [primary, backup]))
        answered = f(edges_without(cfg, [primary, repairs]))
    if inert != primary:
        if inert not in zm.truth.nodes:
            raise Wrong(f"{inert} is not in the truth's circuit (resample-ablating it removes {removed[inert]:.3f} of "
                        "the effect): the question asks for a head the circuit runs through that scores ~0",
                        "print zm.truth.nodes beside the ablation effects above")
        raise Wrong(f"resample-ablating {inert} removes {removed[inert]:.3f} of the effect: ablation does not call it "
                    "inert")
    if repairs == inert:
        raise Wrong("name another head for 'repairs': the one that takes over when the inert head is ablated")
    if repairs != backup:
        raise Wrong(f"with {inert} and {repairs} ablated together, {answered:.2f} of the answer is still there: "
                    f"{repairs} does not take over", "ablate the inert head together with each other head in turn")
    return (f"resample-ablating {primary} leaves {left:.3f} of the answer; with {backup} ablated too, only {both:.3f}: "
            f"the backup restores exactly what the primary's ablation takes away")


# ---- 9.2 -----------------------------------------------------------------------------------


def reference_direct_effect(model, pair, head: str, ablated: tuple[str, ...] = ()) -> float:
    """logit_diff of ``head``'s output @ W_U on the clean run, the heads of ``ablated`` resample-ablated."""
    with torch.no_grad():
        _, corrupted = model.run_with_cache(pair.corrupted.tokens)
        by_name: dict[str, list[int]] = {}
        for other in ablated:
            _, layer, index = comp.parse(other)
            by_name.setdefault(f"blocks.{layer}.attn.hook_result", []).append(index)

        def swap(indices):
            def fn(x, hook):  # x: [batch, pos, head, d_model]
                x = x.clone()
                x[:, :, indices] = corrupted[hook.name][:, :, indices]
                return x
            return fn

        with model.hooks([(name, swap(indices)) for name, indices in by_name.items()]):
            _, cache = model.run_with_cache(pair.clean.tokens)
        _, layer, index = comp.parse(head)
        return float(logit_diff(cache[f"blocks.{layer}.attn.hook_result"][:, :, index] @ model.unembed.W_U, pair))


@exercise("traps.direct_effect", "A head's direct effect, with others ablated", "implement", "medium", 15,
          hint="in the clean run, replace each ablated head's slice of blocks.{l}.attn.hook_result by its output on "
               "pair.corrupted.tokens (model.hooks + run_with_cache, which records what the hooks return); then "
               "logit_diff(cache[...][:, :, h] @ model.unembed.W_U, pair)")
def _direct_effect(fn) -> str:
    if not callable(fn):
        raise Wrong(f"expected a function, got {type(fn).__name__}", "pass the function itself, not its result")
    cases = 0
    for trap, seed in (("self-repair", 1), ("self-repair", 2), ("cancellation", 2)):
        zm, pair = _trap(trap, seed)
        heads = [comp.head_id(layer, h) for layer in range(zm.model.cfg.n_layers) for h in range(zm.model.cfg.n_heads)]
        if trap == "self-repair":
            (first,), (second,) = zm.truth.trap.nodes["primary"], zm.truth.trap.nodes["backup"]
        else:
            (first,), second = zm.truth.trap.nodes["cancelling"], heads[-1]
        layer0_other = next(h for h in heads if h.startswith("L0") and h != first)
        for head, ablated in ((first, ()), (first, (first,)), (second, ()), (second, (first,)),
                              (second, (first, layer0_other))):
            want = reference_direct_effect(zm.model, pair, head, ablated)
            with torch.no_grad():
                got = number(call(fn, zm.model, pair, head, ablated), f"direct_effect({head}, ablated={ablated})")
            cases += 1
            if abs(got - want) > 1e-3 * max(1.0, abs(want)):
                hint = None
                if ablated and abs(got - reference_direct_effect(zm.model, pair, head)) < 1e-3 * max(1.0, abs(want)):
                    hint = ("that is the direct effect in the clean run: the heads in `ablated` must take their "
                            "outputs from pair.corrupted.tokens in the run you read the head from")
                elif abs(got + want) < 1e-3 * max(1.0, abs(want)):
                    hint = "the sign is flipped: logit_diff is the clean answer's logit minus the counterfactual one's"
                raise Wrong(f"{zm.truth.model} (seed {seed}), direct effect of {head} with "
                            f"{list(ablated) or 'nothing'} ablated: got {got:.4f}, expected {want:.4f}", hint)
    return (f"your direct effects match the reference in {cases} cases (traps self-repair and cancellation, seeds the "
            "lesson does not use)")


# ---- 9.3 -----------------------------------------------------------------------------------


@exercise("traps.denoise_edge", "Denoise one edge", "implement", "medium", 15,
          hint="run pair.corrupted.tokens with the receiver's own input (hook_{q,k,v}_input[:, :, h], hook_mlp_in or "
               "the last hook_resid_post) plus the sender's clean-minus-corrupted output; score "
               "(m - m_corr) / (m_clean - m_corr) with m = logit_diff")
def _denoise_edge(fn) -> str:
    if not callable(fn):
        raise Wrong(f"expected a function, got {type(fn).__name__}", "pass the function itself, not its result")
    cases = []
    zm, pair = _trap("or-gate", 1)
    cases += [(zm, pair, e) for e in sorted(zm.truth.edges)]
    zm, pair = _trap("saturation", 2)
    (selector,) = zm.truth.trap.nodes["saturated"]
    cases += [(zm, pair, e) for e in sorted(zm.truth.edges)] + [(zm, pair, Edge("embed", selector, "k"))]
    zm, pair = _trained()
    cases += [(zm, pair, Edge(s, "L1H1", "k")) for s in ("L0H0", "L0H2")] + [(zm, pair, Edge("L0H1", "L1H2", "q"))]
    for zm, pair, edge in cases:
        want = _denoised(zm.model, pair, edge)
        with torch.no_grad():
            got = number(call(fn, zm.model, pair, edge), f"{zm.truth.model}: denoise_edge({edge})")
        if abs(got - want) > 1e-4:
            noise = _noised(zm.model, pair, {edge})
            hint = None
            if abs(got - noise) < 1e-4:
                hint = ("that is noising (the clean run with the corrupted output): denoising runs "
                        "pair.corrupted.tokens and restores the sender's clean output")
            elif abs(got - (1 - want)) < 1e-4:
                hint = "that is 1 minus the answer: score (m - m_corr) / (m_clean - m_corr)"
            elif abs(got - _denoised_sender(zm.model, pair, edge.sender)) < 1e-4:
                hint = ("that restores the sender's output for every reader (activation patching of the node): add "
                        "it to this receiver's own input only")
            raise Wrong(f"{zm.truth.model}, {edge}: got {got:.4f}, denoising it alone restores {want:.4f}", hint)
    return (f"your edge denoising matches toylab's edge patching on {len(cases)} edges (q, k, v and resid, two traps "
            "and a trained model)")


# ---- 9.4 -----------------------------------------------------------------------------------


@exercise("traps.together", "Two edges that only matter together", "answer", "medium", 10,
          hint="the two paths each carry one input of the OR; noise one edge of each path at once: "
               "f(every edge but those two) should be ~0")
def _together(answer: Any) -> str:
    zm, pair = _trap("or-gate")
    cfg = zm.model.cfg
    edges = _edges(answer, "your pair", cfg)
    if len(edges) != 2:
        raise Wrong(f"answer with two edges, got {len(edges)}")
    truth = set(zm.truth.edges)
    for edge in sorted(edges):
        if edge not in truth:
            raise Wrong(f"{edge} is not an edge of the truth: {sorted(map(str, truth))}")
    with torch.no_grad():
        alone = {e: _noised(zm.model, pair, {e}) for e in edges}
        both = _noised(zm.model, pair, edges)
    for edge, removed in alone.items():
        if removed > 0.1:
            raise Wrong(f"noising {edge} alone already removes {removed:.2f} of the effect: it needs no partner",
                        "look for edges that noising one at a time scores ~0")
    path_of = {e: i for i, path in enumerate(zm.truth.trap.paths) for e in path}
    if both < 0.9:
        a, b = sorted(edges)
        why = (f" both lie on path {path_of[a]}, and the other path keeps the answer"
               if path_of.get(a) == path_of.get(b) else "")
        raise Wrong(f"noising {a} and {b} together removes only {both:.2f} of the effect:{why}")
    return (f"noised together they remove {both:.2f} of the effect, each alone {max(alone.values()):.2f}: the OR "
            "needs both inputs off. Noising is not blind here, only asked one edge at a time")


# ---- 9.5 -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _saturation_scores() -> tuple[dict[Edge, float], dict[Edge, float]]:
    """EAP and real noising of each truth edge of the saturation trap, on the checker's pairs."""
    zm, pair = _trap("saturation")
    eap = methods.eap(zm.model, pair)
    with torch.no_grad():
        real = {e: _noised(zm.model, pair, {e}) for e in zm.truth.edges}
    return {e: eap[e] for e in zm.truth.edges}, real


@exercise("traps.understated_edges", "What the gradient misses", "answer", "easy", 5,
          hint="print methods.eap(...)[edge] beside methods.edge_patching(...)[edge] for each edge of the truth; "
               "keep those EAP scores below 0.05 that noising scores near 1")
def _understated(answer: Any) -> str:
    zm, _ = _trap("saturation")
    edges = _edges(answer, "your edges", zm.model.cfg)
    eap, real = _saturation_scores()
    want = {e for e in zm.truth.edges if abs(eap[e]) < 0.05 and real[e] > 0.5}
    for edge in sorted(edges):
        if edge not in real:
            raise Wrong(f"{edge} is not an edge of the truth: {sorted(map(str, real))}")
        if edge not in want:
            raise Wrong(f"EAP scores {edge} {eap[edge]:+.3f} and noising it removes {real[edge]:+.3f}: EAP gets this "
                        "one right")
    if missing := sorted(want - edges):
        edge = missing[0]
        hint = ("the mover's input edge: everything the mover writes reaches the answer through the selector's "
                "saturated query too" if edge.kind == "v" else "the edge into the selector's query")
        raise Wrong(f"you left out {edge}: EAP scores it {eap[edge]:+.4f}, noising it removes {real[edge]:.3f}", hint)
    return (", ".join(f"{e}: EAP {eap[e]:+.3f}, real {real[e]:.3f}" for e in sorted(want))
            + ". Both reach the answer only through the selector's saturated softmax")


# ---- 9.6 -----------------------------------------------------------------------------------


@exercise("traps.q_edge_fixed", "The QK fix for one query edge", "implement", "hard", 25,
          hint="(1) the receiver's pattern with the sender's corrupted-minus-clean output added to its "
               "hook_q_input[:, :, h]; (2) the gradient of logit_diff at the clean run's hook_pattern; (3) "
               "sum((patched - clean)[:, h] * grad[:, h]) / (m_corr - m_clean)")
def _q_edge_fixed(fn) -> str:
    if not callable(fn):
        raise Wrong(f"expected a function, got {type(fn).__name__}", "pass the function itself, not its result")
    checked = 0
    cases = []
    for trap, seed in (("saturation", 1), ("narrow-switch", 2)):
        zm, pair = _trap(trap, seed)
        (query,) = [e for e in zm.truth.edges if e.kind == "q"]
        (selector,) = zm.truth.trap.nodes["saturated"]
        distractor = next(comp.head_id(1, h) for h in range(zm.model.cfg.n_heads) if comp.head_id(1, h) != selector)
        cases.append((zm, pair, [query, Edge(query.sender, distractor, "q"), Edge("embed", selector, "q")]))
    zm, pair = _trained()  # LayerNorm after the pattern: the fix and real patching part ways
    cases.append((zm, pair, [Edge("embed", "L0H3", "q"), Edge("L0H1", "L1H2", "q")]))
    for zm, pair, edges in cases:
        fixed = methods.eap(zm.model, pair, qk_fix=True)
        plain = methods.eap(zm.model, pair)
        for edge in edges:
            want = fixed[edge]
            with torch.no_grad():
                got = number(call(fn, zm.model, pair, edge.sender, edge.receiver),
                             f"{zm.truth.model}: q_edge_fixed({edge.sender!r}, {edge.receiver!r})")
            checked += 1
            if abs(got - want) > 1e-4:
                hint = None
                if abs(got - plain[edge]) < 1e-4 and abs(plain[edge] - want) > 1e-4:
                    hint = "that is plain EAP's estimate: recompute the receiver's pattern with the edge patched"
                elif abs(got + want) < 1e-4:
                    hint = "the sign is flipped: divide by m_corr - m_clean (noising lowers m: a positive share)"
                elif abs(got - _noised(zm.model, pair, {edge})) < 1e-4:
                    hint = ("that is real patching (the whole forward after the pattern recomputed): the QK fix "
                            "linearises what follows the pattern, (patched - clean pattern) * dm/dpattern")
                raise Wrong(f"{zm.truth.model}, {edge}: got {got:.5f}, the QK fix gives {want:.5f}", hint)
    return (f"your estimate matches methods.eap(qk_fix=True) on {checked} query edges (two traps and a trained model "
            "with LayerNorm)")


# ---- 9.7 -----------------------------------------------------------------------------------


def _attention_to_b(zm, pair, alpha: float) -> torch.Tensor:
    """[batch]: the selector's attention from the last position to b, token embeddings interpolated at alpha."""
    (selector,) = zm.truth.trap.nodes["saturated"]
    _, layer, head = comp.parse(selector)
    name = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        _, clean = zm.model.run_with_cache(pair.clean.tokens, names=["hook_embed"])
        _, corr = zm.model.run_with_cache(pair.corrupted.tokens, names=["hook_embed"])
        embed = corr["hook_embed"] + alpha * (clean["hook_embed"] - corr["hook_embed"])
        with zm.model.hooks([("hook_embed", lambda x, hook: embed)]):
            _, cache = zm.model.run_with_cache(pair.clean.tokens, names=[name])
    return cache[name][:, head, -1, BIT_POS["b"]]


@lru_cache(maxsize=1)
def _switches() -> dict[int, float]:
    """{clean s: the alpha where the selector's attention to b crosses 1/2}, by bisection."""
    zm, pair = _trap("narrow-switch")
    clean_s = zm.task.bits(pair.clean.tokens)["s"]
    out = {}
    for s in (1, 0):
        rows = clean_s == s
        low, high = 0.0, 1.0
        for _ in range(24):
            mid = (low + high) / 2
            above = float(_attention_to_b(zm, pair, mid)[rows].mean()) >= 0.5
            if above == (s == 1):  # attention to b rises along the path where clean s = 1, falls where it is 0
                high = mid
            else:
                low = mid
        out[s] = (low + high) / 2
    return out


@exercise("traps.switch_alphas", "Where the switch happens", "answer", "medium", 15,
          hint="replace hook_embed by e_corr + alpha (e_clean - e_corr), read the selector's hook_pattern[:, head, -1, "
               "BIT_POS['b']], and bisect (or scan finely) for the alpha where its mean over each group of rows is 1/2")
def _switch_alphas(answer: Any) -> str:
    if not isinstance(answer, dict):
        raise Wrong(f"answer with a dict {{1: alpha, 0: alpha}} (clean s -> alpha), got {answer!r}")
    try:
        given = {int(k): number(v, f"the alpha for clean s = {k}") for k, v in answer.items()}
    except (TypeError, ValueError):
        raise Wrong(f"the keys are the clean value of s, 1 and 0; got {sorted(map(repr, answer))}") from None
    if set(given) != {0, 1}:
        raise Wrong(f"the keys are the clean value of s, 1 and 0; got {sorted(given)}")
    want = _switches()
    if all(abs(given[1 - s] - want[s]) <= 0.01 for s in (0, 1)) and abs(want[0] - want[1]) > 0.02:
        raise Wrong("the two are swapped: where the clean s is 1 the selector attends to b at alpha = 1 (the clean "
                    "end) and switches late; where it is 0 it attends to b at alpha = 0")
    for s in (1, 0):
        if abs(given[s] - want[s]) > 0.01:
            raise Wrong(f"for the rows whose clean s is {s}: the selector's attention to b crosses 1/2 at alpha = "
                        f"{want[s]:.3f}, not {given[s]:.3f}")
    return (f"alpha = {want[1]:.3f} (clean s = 1) and {want[0]:.3f} (clean s = 0): a 5-step Riemann sum looks at 0, "
            "0.2, 0.4, 0.6 and 0.8, where the selector is saturated, on either side of both switches")


# ---- 9.8 -----------------------------------------------------------------------------------


@exercise("traps.overstated_edge", "An edge that only cancels", "answer", "easy", 5,
          hint="print EAP's top edges by |score| beside the share that noising each one for real removes")
def _overstated(answer: Any) -> str:
    zm, pair = _trap("cancellation")
    edge = _edge(answer, "your edge", zm.model.cfg)
    (head,) = zm.truth.trap.nodes["cancelling"]
    eap = methods.eap(zm.model, pair)
    with torch.no_grad():
        real = _noised(zm.model, pair, {edge})
        want = Edge(head, "MLP1", "resid")
        real_want = _noised(zm.model, pair, {want})
    if edge != want:
        in_truth = "an edge of the truth" if edge in zm.truth.edges else "not in the truth"
        if abs(eap[edge]) < abs(real) - 0.5:
            raise Wrong(f"EAP scores {edge} ({in_truth}) {eap[edge]:+.3f} and noising it removes {real:+.3f}: EAP "
                        "understates this one; the question asks for an edge it overstates")
        raise Wrong(f"EAP scores {edge} ({in_truth}) {eap[edge]:+.3f}, and noising it removes {real:+.3f}: the "
                    "estimate is about right there")
    direct = eap[Edge(head, "logits", "resid")]
    return (f"EAP scores {want} {eap[want]:+.3f}, as much as {head}'s edge to the logits ({direct:+.3f}) with the "
            f"opposite sign, while noising it removes {real_want:+.3f}: to first order MLP1 undoes the head, "
            "for real it writes the same on both inputs")


# ---- 9.13 ----------------------------------------------------------------------------------


@exercise("traps.gradient_blind", "Where the gradient stops", "answer", "easy", 10,
          hint="compare |EAP| of each of the truth's edges with the largest |EAP| over the edges outside the truth")
def _gradient_blind(answer: Any) -> str:
    zm, pair = _trap("long-chain")
    given = _edges(answer, "your edges", zm.model.cfg)
    eap = methods.eap(zm.model, pair)
    truth = set(zm.truth.edges)
    strongest = max(abs(v) for e, v in eap.scores.items() if e not in truth)
    want = {e for e in truth if abs(eap[e]) < strongest}
    if given - truth:
        raise Wrong(f"{sorted(map(str, given - truth))} {'is' if len(given - truth) == 1 else 'are'} not in the chain: "
                    "the question asks which of the chain's edges EAP ranks below a distractor")
    if given != want:
        missing, extra = sorted(map(str, want - given)), sorted(map(str, given - want))
        raise Wrong(f"EAP scores the strongest edge outside the circuit {strongest:.4f}; "
                    + (f"{missing} score below it and are missing" if missing else "")
                    + ("; " if missing and extra else "")
                    + (f"{extra} score above it" if extra else ""))
    return (f"{len(want)} edges, every one before MLP1's output, score below a distractor's {strongest:.4f}: MLP1 "
            "is flat at +-1, so no gradient crosses it, while the distractors reading the chain after it keep theirs")


# ---- 9.9 -----------------------------------------------------------------------------------


@exercise("traps.node_attribution", "The estimate against the real thing", "implement", "medium", 15,
          hint="estimate: (corrupted - clean head output) . dm/d(output) summed, over m_corr - m_clean, the gradient "
               "at a requires-grad copy of hook_result; real: (m_clean - m_ablated) / (m_clean - m_corr)")
def _node_attribution(fn) -> str:
    if not callable(fn):
        raise Wrong(f"expected a function, got {type(fn).__name__}", "pass the function itself, not its result")
    cases = []
    zm, pair = _trap("cancellation", 1)
    cases += [(zm, pair, zm.truth.trap.nodes["cancelling"][0]), (zm, pair, "L1H3")]
    zm, pair = _trap("self-repair", 2)
    cases += [(zm, pair, zm.truth.trap.nodes["primary"][0])]
    zm, pair = _trained()
    cases += [(zm, pair, "L0H2"), (zm, pair, "L1H1")]
    for zm, pair, head in cases:
        estimate = methods.eap(zm.model, pair).nodes()[head]
        with torch.no_grad():
            ablation = methods.ablation_scores(zm.model, pair, components=[head], method="resample")
            real = ablation[head] / (ablation.baseline - _m(zm.model, pair.corrupted.tokens, pair))
            got = call(fn, zm.model, pair, head)
        try:
            got_estimate, got_real = (float(v) for v in got)
        except (TypeError, ValueError):
            raise Wrong(f"return a pair of floats (estimate, real), got {got!r}") from None
        where = f"{zm.truth.model}, {head}"
        if abs(got_estimate - estimate) > 1e-4:
            hint = None
            if abs(got_estimate + estimate) < 1e-4:
                hint = "the sign is flipped: divide by m_corr - m_clean"
            elif abs(got_estimate - real) < 1e-4 and abs(real - estimate) > 1e-4:
                hint = "that is the real ablation: the estimate is the first-order one, delta . gradient"
            raise Wrong(f"{where}: your estimate is {got_estimate:.4f}, attribution patching gives {estimate:.4f}",
                        hint)
        if abs(got_real - real) > 1e-4:
            raise Wrong(f"{where}: your real effect is {got_real:.4f}, resample-ablating the head gives {real:.4f}",
                        "replace the head's slice of hook_result by its output on pair.corrupted.tokens in the "
                        "clean run")
    return (f"your estimates match EAP's node scores and your ablations toylab's on {len(cases)} heads: on the "
            "cancellation trap the estimate is ~0 and the ablation ~1, on the self-repair trap the reverse")


# ---- 9.10 ----------------------------------------------------------------------------------


def reference_channel_iia(model, algorithm, variable: str, channel: int, n: int = 256, seed: int = 0) -> float:
    """IIA of ``variable`` interchanging one standard-basis coordinate of MLP0's output at the last position."""
    d = model.cfg.d_model
    return interchange_accuracy(model, algorithm, variable, Site(*CODE_SITE), torch.eye(d)[:, [channel]], n,
                                seed).accuracy


def _channel_iia_mistake(fn, zm, variable: str, channels: list[int], n: int, seed: int) -> str | None:
    """Which neighbouring quantity a wrong ``channel_iia`` computed, judged over every code channel (one
    channel's figure can coincide with another quantity's by chance)."""
    other = "b" if variable == "a" else "a"
    with torch.no_grad():
        got = [number(call(fn, zm.model, zm.algorithm, variable, c, n, seed), "channel_iia") for c in channels]
        whole = interchange_accuracy(zm.model, zm.algorithm, variable, Site(*CODE_SITE), None, n, seed)
        others = [reference_channel_iia(zm.model, zm.algorithm, other, c, n, seed) for c in channels]
        wants = [reference_channel_iia(zm.model, zm.algorithm, variable, c, n, seed) for c in channels]
    if all(abs(g - whole.accuracy) < 1e-6 for g in got):
        return "that interchanges MLP0's whole output: take only x[:, -1, channel] from the source"
    if all(abs(g - o) < 1e-6 for g, o in zip(got, others)):
        return "that is the IIA of the other bit: pass `variable` to algorithm.intervene"
    if all(abs(g - (1 - w)) < 1e-6 for g, w in zip(got, wants)):
        return ("compare with the algorithm's answer with the variable swapped, "
                "algorithm.intervene(base, source, variable)[:, -1], not with the base's answer")
    return None


@exercise("traps.channel_iia", "One channel at a time", "implement", "easy", 10,
          hint="pairs from algorithm.sample_pairs(n, torch.Generator().manual_seed(seed)); in a hook on "
               "blocks.0.hook_mlp_out set x[:, -1, channel] to the source run's value; compare the arg-max at the "
               "last position with algorithm.intervene(base, source, variable)[:, -1]")
def _channel_iia(fn) -> str:
    if not callable(fn):
        raise Wrong(f"expected a function, got {type(fn).__name__}", "pass the function itself, not its result")
    cases = 0
    for seed in (1, 2):
        zm = zoo_model(model_name("distributed"), seed)
        algorithm = zm.algorithm
        channels = code_channels(zm.truth)
        outside = next(c for c in range(zm.model.cfg.d_model) if c not in channels)  # MLP0 writes nothing there
        for variable in ("a", "b"):
            for channel, n, data_seed in [(c, 128, CHECK_DATA_SEED + seed) for c in channels] + [(outside, 64, 3)]:
                want = reference_channel_iia(zm.model, algorithm, variable, channel, n, data_seed)
                with torch.no_grad():
                    got = number(call(fn, zm.model, algorithm, variable, channel, n, data_seed),
                                 f"channel_iia({variable!r}, channel {channel}, n={n}, seed={data_seed})")
                cases += 1
                if abs(got - want) > 1e-6:
                    hint = _channel_iia_mistake(fn, zm, variable, channels, n, data_seed)
                    raise Wrong(f"{zm.truth.model} (seed {seed}), {variable} through channel {channel} on {n} pairs "
                                f"(seed {data_seed}): got {got:.4f}, expected {want:.4f}", hint)
    return (f"your IIA matches methods.interchange_accuracy through a standard-basis direction in {cases} cases "
            "(two seeds of the trap, both bits, every code channel and one the code does not use)")


# ---- 9.11 ----------------------------------------------------------------------------------


BITS = ("a", "b", "s")


def _bit(value: Any, what: str) -> str:
    if value not in BITS:
        raise Wrong(f"{what}: {value!r} is not an input bit; the bits are {list(BITS)}")
    return value


@lru_cache(maxsize=1)
def _whole_output_run():
    """(base bits, source bits, the patched model's answers, a's counterfactual) on the checker's pairs."""
    zm = zoo_model(model_name("distributed"), SEED)
    base, source = zm.algorithm.sample_pairs(IIA_PAIRS, torch.Generator().manual_seed(IIA_SEED))
    _, cache = zm.model.run_with_cache(source.tokens, names=[CODE_SITE[0]])

    def swap(x, hook):
        x = x.clone()
        x[:, CODE_SITE[1]] = cache[CODE_SITE[0]][:, CODE_SITE[1]]
        return x

    with torch.no_grad(), zm.model.hooks([(CODE_SITE[0], swap)]):
        patched = zm.model(base.tokens)[:, -1].argmax(-1)  # [batch]
    counterfactual = zm.algorithm.intervene(base, source, "a")[:, -1]
    return zm.task.bits(base.tokens), zm.task.bits(source.tokens), patched, counterfactual


@exercise("traps.whole_output", "Why one half?", "answer", "easy", 10,
          hint="interchange MLP0's whole output (methods.subspace_interchange with no basis), compare the answers "
               "with dist.task.answer of the bits taken from base or source, and split the IIA of a by whether base "
               "and source agree on each bit")
def _whole_output(answer: Any) -> str:
    if not isinstance(answer, dict) or set(answer) != {"swaps", "agree"}:
        raise Wrong(f'answer with a dict {{"swaps": set of bits, "agree": bit}}, got {answer!r}')
    swaps = answer["swaps"]
    swaps = {swaps} if isinstance(swaps, str) else swaps
    try:
        swaps = {_bit(b, "swaps") for b in swaps}
    except TypeError:
        raise Wrong(f"swaps: expected a set of bits such as {{'a'}}, got {answer['swaps']!r}") from None
    agree = _bit(answer["agree"], "agree")
    zm = zoo_model(model_name("distributed"), SEED)
    base, source, patched, counterfactual = _whole_output_run()
    gate = zm.task.answer(*(source[x] if x in swaps else base[x] for x in BITS))
    follows = float((patched == gate).float().mean())
    at_mlp0 = {v.name for v in zm.truth.variables if "MLP0" in v.components}
    if follows < 0.99:
        raise Wrong(f"with {sorted(swaps)} taken from the source the gate agrees with the patched model on only "
                    f"{follows:.2f} of pairs: MLP0's output carries more (or other) bits than that")
    if swaps != at_mlp0:
        raise Wrong(f"{sorted(swaps - at_mlp0)} {'is' if len(swaps - at_mlp0) == 1 else 'are'} not in MLP0's output: "
                    f"xor ignores s, so taking it from the source changes no answer either way; the bits MLP0 "
                    "carries are the ones its output must hold for the answers to follow the source")
    hits = (patched == counterfactual).float()
    same = base[agree] == source[agree]
    on_same, on_diff = float(hits[same].mean()), float(hits[~same].mean())
    if not (on_same > 0.95 and on_diff < 0.05):
        raise Wrong(f"where base and source agree on {agree} the whole-output IIA of a is {on_same:.2f}, where they "
                    f"differ {on_diff:.2f}: {agree}'s agreement does not decide it",
                    "the interchange swaps a and the other bit too; a's counterfactual keeps the base's value of it")
    share = float(same.float().mean())
    return (f"the patched model answers xor(a, b) of the source on {follows:.3f} of pairs; that is a's "
            f"counterfactual, xor(a of the source, b of the base), exactly where b agrees ({on_same:.2f} there, "
            f"{on_diff:.2f} elsewhere), on {share:.2f} of the pairs: the node is right, but it holds b too")


# ---- 9.12 ----------------------------------------------------------------------------------


@exercise("traps.das_direction", "Learn the direction of a", "build", "easy", 10,
          hint="learned_a = methods.das(dist.model, algorithm, 'a', code_site, das_config); "
               "more steps or a larger lr bring the direction closer to the truth's")
def _das_direction(answer: Any) -> str:
    if not isinstance(answer, DASResult):
        raise Wrong(f"answer with the DASResult methods.das returns, got {type(answer).__name__}",
                    "learned_a = methods.das(model, algorithm, 'a', code_site, config)")
    zm = zoo_model(model_name("distributed"), SEED)
    d = zm.model.cfg.d_model
    if answer.variable != "a":
        raise Wrong(f"that DAS looked for {answer.variable!r}: the exercise asks for the variable 'a'")
    site = Site(*CODE_SITE)
    if answer.site.hook != site.hook or answer.site.head is not None or \
            answer.site.pos % zm.task.n_ctx != site.pos % zm.task.n_ctx:
        raise Wrong(f"that DAS ran at {answer.site}: the truth puts a in MLP0's output at the last position, {site}")
    basis = torch.as_tensor(answer.basis).detach().float().cpu()
    if basis.shape != (d, 1):
        raise Wrong(f"the learned subspace has shape {tuple(basis.shape)}: run DAS with k=1 (one direction in "
                    f"d_model = {d})")
    w = basis[:, 0] / basis[:, 0].norm()
    directions = {v.name: torch.tensor(v.basis[0]) for v in zm.truth.variables}
    cos = {name: float((w @ u).abs() / u.norm()) for name, u in directions.items()}
    with torch.no_grad():
        iia = interchange_accuracy(zm.model, zm.algorithm, "a", site, w[:, None], IIA_PAIRS, IIA_SEED).accuracy
    if iia <= 0.95:
        hint = (f"your direction is closer to b's (|cos| {cos['b']:.2f}) than to a's" if cos["b"] > cos["a"]
                else "train for more steps (or with a larger lr) until the held-out IIA is ~1")
        raise Wrong(f"interchanging a along your direction follows the algorithm on {iia:.3f} of {IIA_PAIRS} pairs "
                    "DAS never saw", hint)
    if cos["a"] <= 0.95:
        raise Wrong(f"your direction's IIA is {iia:.3f}, but its |cosine| with the truth's direction of a is only "
                    f"{cos['a']:.3f}",
                    "the rest lies along directions MLP0's output never takes: swapping them changes nothing, so "
                    "the loss barely moves them. Train longer or with a larger lr (DAS_CONFIG: 100 steps at 0.05)")
    return (f"held-out IIA {iia:.3f} on {IIA_PAIRS} pairs, |cos| {cos['a']:.3f} with the truth's direction of a "
            f"({cos['b']:.3f} with b's): one learned direction holds a alone, where no channel does")
