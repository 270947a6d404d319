"""Checkers for lesson 02, induction heads: detectors, circuits from the weights, composition."""

from __future__ import annotations

import torch

from toylab import methods
from toylab.lessons.checking import call, expect_close, first_difference, head_set, number, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.methods.circuits import ov_matrix, qk_matrix
from toylab.truth import Edge
from toylab.components import parse

# Natural (certified) and hand-built (constructed, with decoys): an answer must hold on both.
_MODELS = ("induction-2l", "induction-constructed")


def _patterns(name: str, seed: int, chance_repeats: bool = False):
    """Patterns on task samples or, with ``chance_repeats``, on random tokens repeated twice
    (ARENA's test input), where a token may occur three times and "most recent" matters."""
    zm = zoo_model(name)
    tokens = zm.task.sample(16, seed=seed).tokens
    if chance_repeats:
        half = zm.model.cfg.n_ctx // 2
        g = torch.Generator().manual_seed(seed)
        random = torch.randint(1, zm.model.cfg.d_vocab, (16, half), generator=g)
        tokens = torch.cat([tokens[:, :1], random, random], dim=1)[:, : zm.model.cfg.n_ctx]
    _, cache = zm.model.run_with_cache(tokens, names=lambda n: n.endswith("hook_pattern"))
    return zm, tokens, cache


@exercise("induction.previous_token_score", "Previous-token score", "implement", "easy", 10,
          hint="average pattern[:, :, i, i - 1] over the batch and over query positions i >= 1; "
               "torch.diagonal(pattern, offset=-1, dim1=-2, dim2=-1) gives those entries")
def _previous_token_score(fn) -> str:
    for name in _MODELS:
        zm, tokens, cache = _patterns(name, seed=5)
        want = methods.head_scores(zm.model, tokens, "previous-token").scores  # [layer, head]
        for layer in range(zm.model.cfg.n_layers):
            got = call(fn, cache["pattern", layer])
            expect_close(got, want[layer], f"{name} layer {layer}", atol=1e-5,
                         hint="return one score per head, shape [head]; position 0 has no previous token")
    return "your scores match toylab.methods.head_scores(model, tokens, 'previous-token')"


@exercise("induction.induction_score", "Induction score", "implement", "medium", 15,
          hint="for each query i whose token appeared before, find the most recent earlier position j "
               "with tokens[j] == tokens[i] and read pattern[..., i, j + 1]; average over all such (row, i) "
               "pairs, not per row")
def _induction_score(fn) -> str:
    for name in _MODELS:
        zm, tokens, cache = _patterns(name, seed=6, chance_repeats=True)
        want = methods.head_scores(zm.model, tokens, "induction").scores  # [layer, head]
        for layer in range(zm.model.cfg.n_layers):
            got = call(fn, cache["pattern", layer], tokens)
            expect_close(got, want[layer], f"{name} layer {layer}", atol=1e-5,
                         hint="the checker uses random tokens repeated twice, where a token can occur "
                              "three times: use the most recent earlier occurrence of each query token")
    return "your scores match toylab.methods.head_scores(model, tokens, 'induction')"


@exercise("induction.circuit_heads", "Which heads form the circuit?", "answer", "medium", 15,
          hint="detector scores say where a head looks, not whether its output is used: ablate each "
               "head (toylab.methods.ablation_scores) and keep the ones whose removal matters")
def _circuit_heads(answer) -> str:
    heads = head_set(answer, "your answer")
    zm = zoo_model("induction-constructed")
    truth = set(zm.truth.heads)
    pair = zm.task.counterfactual(128, seed=7)
    effects = methods.ablation_scores(zm.model, pair, method="resample")
    induction = methods.head_scores(zm.model, pair.clean.tokens, "induction")
    if difference := first_difference(heads, truth):
        head, extra = difference
        if extra:
            raise Wrong(f"{head} is not part of the circuit: its induction score is {induction[head]:.2f}, yet "
                        f"resample-ablating it changes the logit difference by only {effects[head]:.3f} "
                        "(it is a decoy that writes where nothing reads)")
        raise Wrong(f"you left out {head}: resample-ablating it changes the logit difference by {effects[head]:.2f}")
    return (f"{sorted(heads)} is the circuit of the truth ({zm.truth.provenance}); the decoys look the same "
            "to every detector")


@exercise("induction.ov_circuit", "The full OV circuit", "implement", "medium", 10,
          hint="W_E [d_vocab, d_model] @ W_V[head] [d_model, d_head] @ W_O[head] [d_head, d_model] "
               "@ W_U [d_model, d_vocab_out]; these models have no LayerNorm")
def _ov_circuit(fn) -> str:
    for name, (layer, head) in (("induction-2l", (1, 0)), ("induction-constructed", (1, 1)),
                                ("induction-constructed", (0, 0))):
        zm = zoo_model(name)
        want = methods.ov_circuit(zm.model, layer, head)  # [d_vocab, d_vocab_out]
        expect_close(call(fn, zm.model, layer, head), want, f"{name} L{layer}H{head}", atol=1e-3,
                     hint="multiply in the order the residual stream flows: embed, value, output, unembed")
    return "your OV circuit matches toylab.methods.ov_circuit"


@exercise("induction.k_composition", "K-composition score", "implement", "hard", 20,
          hint="W_A = W_V W_O of the sender [d_model, d_model]; the receiver's key reads it, so "
               "W_B = (W_Q W_K^T)^T of the receiver; the score is ||W_A W_B||_F / (||W_A||_F ||W_B||_F)")
def _k_composition(fn) -> str:
    for name in _MODELS:
        zm = zoo_model(name)
        scores = methods.composition_scores(zm.model, "k")
        for (sender, receiver), _ in scores.top(2) + [(("L0H0", "L1H1"), 0.0)]:
            (_, sl, sh), (_, rl, rh) = parse(sender), parse(receiver)
            got = number(call(fn, zm.model, sl, sh, rl, rh), f"{name} {sender} -> {receiver}")
            want = scores[sender, receiver]
            if abs(got - want) > 1e-4:
                A, B = ov_matrix(zm.model, sl, sh), qk_matrix(zm.model, rl, rh)
                q_side = float((A @ B).norm() / (A.norm() * B.norm()))
                note = " (that is the Q-composition score: transpose W_QK)" if abs(got - q_side) < 1e-4 else ""
                raise Wrong(f"{name} {sender} -> {receiver}: got {got:.4f}, expected {want:.4f}{note}")
    return "your scores match toylab.methods.composition_scores(model, 'k')"


@exercise("induction.k_edge", "The edge that makes induction", "answer", "easy", 5,
          hint="answer (sender, receiver, kind): which layer-0 head's output does the induction head's "
               "key read? The K-composition scores and the circuit you found both point at it")
def _k_edge(answer) -> str:
    try:
        edge = Edge.parse(answer)
    except ValueError as err:
        raise Wrong(str(err)) from None
    zm = zoo_model("induction-constructed")
    head_edges = [e for e in zm.truth.edges if e.sender != "embed" and e.kind in ("q", "k", "v")]
    if edge not in zm.truth.edges:
        for true in head_edges:
            if (edge.sender, edge.receiver) == (true.sender, true.receiver):
                raise Wrong(f"right heads, wrong input: {edge.receiver} reads {edge.sender} through its "
                            f"{true.kind}, not its {edge.kind}")
        raise Wrong(f"{edge} is not an edge of the circuit; its heads are {sorted(zm.truth.heads)}")
    if edge not in head_edges:
        raise Wrong(f"{edge} is in the circuit, but it is not the head-to-head edge asked for")
    scores = methods.composition_scores(zm.model, "k")
    return (f"{edge}: K-composition {scores[edge.sender, edge.receiver]:.2f} against a random baseline "
            f"of {scores.baseline:.2f}")
