"""Checkers for lesson 10, indirect object identification: implementations are compared with toylab's own
methods on the checker's prompts; answers are checked against the truth of ioi-siit (the roles of its nodes,
its edges and its claims) and explained with measurements on the checker's pairs, never the lesson's."""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

import torch

from toylab import methods
from toylab.components import parse
from toylab.lessons.checking import call, expect_close, first_difference, head_set, number, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.methods.circuits import copying_score, ov_circuit
from toylab.methods.repair import self_repair
from toylab.tasks import CounterfactualPair, logit_diff

from .fixtures import KNOCKOUT, MODEL, SEED, backups, head_roles, name_movers, negative_heads, role_heads

CHECK_SEED = 10  # the checker's prompts and pairs, never the lesson's (seed 0)
N_PAIRS = 128
PATCHING_BAR = 0.15  # exercise 10.4: a share of the logit difference, either way
COPYING_BAR = 0.9  # exercise 10.7
INPUTS = ("q", "k", "v")


def _zm():
    return zoo_model(MODEL, SEED)


@cache
def _pair(kind: str = "abc", n: int = N_PAIRS, seed: int = CHECK_SEED) -> CounterfactualPair:
    return _zm().task.counterfactual(n, seed=seed, kind=kind)


def _all_heads() -> list[str]:
    cfg = _zm().model.cfg
    return [f"L{layer}H{head}" for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]


def _heads(answer: Any, what: str) -> set[str]:
    """Head ids, validated against the model (L7H0 is a well-formed id, but not a head of ioi-siit)."""
    heads = head_set(set() if answer is None else answer, what)
    cfg = _zm().model.cfg
    for head in sorted(heads):
        if head not in _all_heads():
            raise Wrong(f"{what}: {head} is not a head of {MODEL} ({cfg.n_layers} layers of {cfg.n_heads} heads)")
    return heads


def _head(answer: Any, what: str) -> str:
    """One head id, validated against the model."""
    if not isinstance(answer, str):
        raise Wrong(f"{what}: expected one head id such as 'L1H1', got {answer!r}")
    (head,) = _heads(answer, what)
    return head


def _role(head: str) -> str:
    """What the truth says a head does, in words."""
    role = head_roles(_zm().truth).get(head)
    return f"the truth's {role}" if role else "outside the truth's circuit"


def _layer(head: str) -> int:
    return parse(head)[1]


# ---- 10.1 ----------------------------------------------------------------------------------


def _logit_diff_mistake(got: Any, model, task, tokens, want: torch.Tensor) -> str | None:
    """Which neighbouring quantity a wrong ``io_s_logit_diff`` computed."""
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return None
    got = got.detach().float()
    v = task.variables(tokens)
    rows = torch.arange(tokens.shape[0])
    logits = model(tokens)
    io, s = task.name_token(v["io"]), task.name_token(v["s"])
    last = logits[rows, -1, io] - logits[rows, -1, s]
    if torch.allclose(got, -want, atol=1e-3):
        return "the sign is flipped: the logit of IO minus the logit of S"
    if torch.allclose(got, last, atol=1e-3):
        return ("that reads the last position, which is PAD for every template shorter than the longest: read "
                "each prompt's own answer_pos")
    if torch.allclose(got, logits[rows, v["answer_pos"], io], atol=1e-3):
        return "that is the logit of IO alone: subtract the logit of S"
    return None


@exercise("ioi.logit_diff", "The logit difference of each prompt", "implement", "easy", 10,
          hint="v = task.variables(tokens); rows = torch.arange(len(tokens)); logits = model(tokens)[rows, "
               "v['answer_pos']]; then logits[rows, task.name_token(v['io'])] - logits[rows, task.name_token(v['s'])]")
def _logit_diff(fn) -> str:
    zm = _zm()
    swap = _pair("swap", 64, CHECK_SEED + 1)
    cases = [("the ABC pairs' clean prompts", _pair("abc", 64, CHECK_SEED)),
             # the swap counterfactual repeats IO: its answer is S, and the clean answer (IO) is the name it repeats
             ("prompts whose second clause repeats the other name", CounterfactualPair(swap.corrupted, swap.clean, ""))]
    for what, pair in cases:
        tokens = pair.clean.tokens
        with torch.no_grad():
            want = logit_diff(zm.model(tokens), pair, per_example=True)  # [batch]
            got = call(fn, zm.model, zm.task, tokens)
            hint = _logit_diff_mistake(got, zm.model, zm.task, tokens, want)
        expect_close(got, want, f"{what} ({len(tokens)} prompts of every template)", atol=1e-3,
                     hint=hint or "return one value per prompt, [batch], read at each prompt's answer position")
    return "your logit differences match toylab.tasks.logit_diff(logits, pair, per_example=True), prompt by prompt"


# ---- 10.2 ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _dla():
    with torch.no_grad():
        return methods.direct_logit_attribution(_zm().model, _pair())


@exercise("ioi.writers", "The heads that write the answer", "answer", "easy", 10,
          hint="rank the heads by their signed direct effect, dla[head] for each head of "
               "methods.direct_logit_attribution(model, pair): the two largest and the smallest (dla.top ranks by "
               "absolute value, which mixes the two signs)")
def _writers(answer: Any) -> str:
    if not isinstance(answer, dict) or set(answer) != {"positive", "negative"}:
        raise Wrong(f'answer with a dict {{"positive": heads, "negative": head}}, got {answer!r}')
    positive = _heads(answer["positive"], "your positive heads")
    negative = _heads(answer["negative"], "your negative head")
    truth = _zm().truth
    movers, negatives = set(name_movers(truth)), set(negative_heads(truth))
    dla = _dla()
    effect = {h: dla[h] for h in _all_heads()}

    def rank(head: str, sign: int) -> int:  # how many heads write more in that direction
        return sum(sign * e > sign * effect[head] for e in effect.values())

    if difference := first_difference(positive, movers):
        head, extra = difference
        if extra:
            against = " (it writes against IO)" if effect[head] < 0 else ""
            raise Wrong(f"{head} writes {effect[head]:+.2f} of the logit difference {dla.metric:.2f} directly"
                        f"{against}: {rank(head, 1)} heads write more for IO")
        raise Wrong(f"you left out {head}, whose direct effect is {effect[head]:+.2f} of the logit difference "
                    f"{dla.metric:.2f}")
    if difference := first_difference(negative, negatives):
        head, extra = difference
        if extra:
            direction = "for IO" if effect[head] >= 0 else "against IO"
            raise Wrong(f"{head}'s direct effect is {effect[head]:+.2f} ({direction}): {rank(head, -1)} heads write "
                        "more against IO")
        raise Wrong(f"you left out {head}, whose direct effect is {effect[head]:+.2f}")
    return (f"{', '.join(sorted(positive))} ({', '.join(f'{effect[h]:+.2f}' for h in sorted(positive))}) are the "
            f"truth's name movers; {', '.join(sorted(negative))} "
            f"({', '.join(f'{effect[h]:+.2f}' for h in sorted(negative))}) its negative name mover, of a logit "
            f"difference {dla.metric:.2f} on the checker's pairs")


# ---- 10.3 ----------------------------------------------------------------------------------


def _attention(pattern: torch.Tensor, tokens: torch.Tensor, task, query: str, key: str) -> torch.Tensor:
    """[head]: mean attention from ``query`` ("answer" or "last") to ``key`` ("io", "s1" or "s2")."""
    v = task.variables(tokens)
    rows = torch.arange(tokens.shape[0])

    def at(slot: str) -> torch.Tensor:
        return torch.tensor([task.positions(int(t))[slot] for t in v["template"]])

    x1, x2 = at("X1"), at("X2")
    keys = {"io": torch.where(v["s_position"] == 0, x2, x1), "s1": torch.where(v["s_position"] == 0, x1, x2),
            "s2": at("S")}
    queries = v["answer_pos"] if query == "answer" else torch.full_like(rows, tokens.shape[1] - 1)
    return pattern[rows, :, queries, keys[key]].mean(0)


NAME_MOVER_MISTAKES = {
    ("answer", "s1"): "that is the attention to S1, the subject's first mention: IO is the first clause's other slot",
    ("answer", "s2"): "that is the attention to S2, the subject's second mention (the S-inhibition heads' target)",
    ("last", "io"): "the query must be each prompt's answer position: the last position is PAD for shorter templates",
}


@exercise("ioi.name_mover_score", "The name-mover score", "implement", "medium", 15,
          hint="v = task.variables(tokens); IO sits in slot X2 where v['s_position'] is 0, else in X1 "
               "(task.positions(template)[slot]); read pattern[rows, :, v['answer_pos'], io_pos] and average over "
               "the prompts")
def _name_mover_score(fn) -> str:
    zm = _zm()
    tokens = zm.task.sample(64, seed=CHECK_SEED).tokens
    with torch.no_grad():
        want = methods.head_scores(zm.model, tokens, "name-mover", task=zm.task).scores  # [layer, head]
        _, cache = zm.model.run_with_cache(tokens, names=lambda n: n.endswith("hook_pattern"))
        for layer in range(zm.model.cfg.n_layers):
            pattern = cache["pattern", layer]
            got = call(fn, pattern, tokens, zm.task)
            hint = None
            if isinstance(got, torch.Tensor) and got.shape == want[layer].shape:
                for (query, key), says in NAME_MOVER_MISTAKES.items():
                    if torch.allclose(got.detach().float(), _attention(pattern, tokens, zm.task, query, key), atol=1e-5):
                        hint = says
            expect_close(got, want[layer], f"layer {layer}", atol=1e-5,
                         hint=hint or "return one score per head, [head], the mean over the prompts")
    return "your scores match methods.head_scores(model, tokens, 'name-mover', task=task) in every layer"


# ---- 10.4 ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _head_patching():
    with torch.no_grad():
        return methods.activation_patching(_zm().model, _pair(), "head")


@exercise("ioi.patched_heads", "Which heads matter, and which way?", "answer", "easy", 10,
          hint="methods.activation_patching(model, pair, 'head') scores every head; keep those at 0.15 or more "
               "(restore) and at -0.15 or less (harm)")
def _patched_heads(answer: Any) -> str:
    if not isinstance(answer, dict) or set(answer) != {"restore", "harm"}:
        raise Wrong(f'answer with a dict {{"restore": heads, "harm": heads}}, got {answer!r}')
    restore, harm = _heads(answer["restore"], "your restoring heads"), _heads(answer["harm"], "your harming heads")
    truth = _zm().truth
    negatives = set(negative_heads(truth))
    want_restore = set(truth.heads) - negatives - set(backups(truth))
    scores = _head_patching()
    for got, want, which in ((restore, want_restore, "restores"), (harm, negatives, "harms")):
        if difference := first_difference(got, want):
            head, extra = difference
            if extra:
                raise Wrong(f"{head} scores {scores[head]:+.3f} when patched: it does not {which[:-1]} {PATCHING_BAR} of "
                            f"the logit difference ({_role(head)})")
            raise Wrong(f"you left out {head}, which scores {scores[head]:+.3f} when patched")
    return (f"{', '.join(sorted(restore))} restore, {', '.join(sorted(harm)) or 'none'} harm{'s' if len(harm) == 1 else ''}: "
            "the truth's circuit, with its negative name mover the one head that patching says works against the "
            "answer")


# ---- 10.5 ----------------------------------------------------------------------------------


@cache
def _path(receivers: tuple[str, ...], receiver_input: str):
    with torch.no_grad():
        return methods.path_patching(_zm().model, _pair(), list(receivers), receiver_input)


def _path_score(receivers: list[str], receiver_input: str, sender: str) -> float | None:
    """The sender's path-patching score into the receivers' input; None for a head that is not upstream."""
    if _layer(sender) >= min(_layer(r) for r in receivers):
        return None
    return _path(tuple(receivers), receiver_input)[sender]


@exercise("ioi.senders", "The senders", "answer", "medium", 15,
          hint="methods.path_patching(model, pair, name_movers, 'q').top(1) is the S-inhibition head; then "
               "path-patch into it through 'q', 'k' and 'v' in turn and keep the input whose top sender scores most")
def _senders(answer: Any) -> str:
    if not isinstance(answer, dict) or set(answer) != {"movers_q", "s_inhibition"}:
        raise Wrong(f'answer with a dict {{"movers_q": head, "s_inhibition": (head, input)}}, got {answer!r}')
    truth = _zm().truth
    movers, s_inhibition = name_movers(truth), role_heads(truth, "s-inhibition")
    want_q = {e.sender for e in truth.edges if e.receiver in movers and e.kind == "q" and e.sender.startswith("L")}
    want_s = {(e.sender, e.kind) for e in truth.edges if e.receiver in s_inhibition and e.sender.startswith("L")}
    to_movers = _head(answer["movers_q"], "movers_q")
    if to_movers not in want_q:
        score = _path_score(movers, "q", to_movers)
        if score is None:
            raise Wrong(f"{to_movers} is not upstream of the name movers {movers}: a sender sits in an earlier layer")
        best = max(_path(tuple(movers), "q").top(1)[0][1], 0.0)
        raise Wrong(f"{to_movers} restores {score:+.3f} of the logit difference through the name movers' queries; "
                    f"the top sender restores {best:.3f}",
                    "a head can matter (activation patching) through a path that does not end in the name movers' "
                    "queries: path-patch into them, receivers=name_movers, receiver_input='q'")
    value = answer["s_inhibition"]
    if not isinstance(value, (tuple, list)) or len(value) != 2 or value[1] not in INPUTS:
        raise Wrong(f"s_inhibition: answer with a pair (head, input), input one of {INPUTS}, got {value!r}")
    sender, receiver_input = _head(value[0], "s_inhibition's head"), value[1]
    if (sender, receiver_input) not in want_s:
        score = _path_score(s_inhibition, receiver_input, sender)
        if score is None:
            raise Wrong(f"{sender} is not upstream of the S-inhibition head {', '.join(s_inhibition)}")
        right_head = sender in {h for h, _ in want_s}
        raise Wrong(f"{sender} restores {score:+.3f} of the logit difference through the {receiver_input} of "
                    f"{', '.join(s_inhibition)}" + (": right head, but not that input" if right_head else ""),
                    "path-patch into the S-inhibition head through each of q, k and v: one input carries it")
    edges = [f"{s} -> {r} ({k})" for s, r, k in sorted((e.sender, e.receiver, e.kind) for e in truth.edges
                                                        if e.sender in (to_movers, sender) and e.receiver in
                                                        (*movers, *s_inhibition))]
    return (f"the truth's edges: {'; '.join(edges)}. {sender} is the {truth.nodes.get(sender, 'unnamed')} head, "
            f"{to_movers} the {truth.nodes.get(to_movers, 'unnamed')} head: the chain Wang et al. traced back from "
            "the name movers")


# ---- 10.6 ----------------------------------------------------------------------------------


@exercise("ioi.name_ov", "The OV circuit over names", "implement", "easy", 10,
          hint="names = task.name_tokens; model.embed.W_E[names] @ W_V[head] @ W_O[head] @ model.unembed.W_U[:, names] "
               "(W_V, W_O of model.blocks[layer].attn), or methods.ov_circuit(model, layer, head) restricted")
def _name_ov(fn) -> str:
    zm = _zm()
    names = zm.task.name_tokens
    cfg = zm.model.cfg
    with torch.no_grad():
        for layer in range(cfg.n_layers):
            for head in range(cfg.n_heads):
                want = ov_circuit(zm.model, layer, head)[names][:, names]  # [n_names, n_names]
                got = call(fn, zm.model, zm.task, layer, head)
                hint = None
                if isinstance(got, torch.Tensor) and got.shape == want.shape and \
                        torch.allclose(got.detach().float(), want.T, atol=1e-3, rtol=1e-4):
                    hint = "that is the transpose: rows are the name attended to (W_E), columns the logits (W_U)"
                elif isinstance(got, torch.Tensor) and got.shape != want.shape:
                    hint = (f"restrict both the rows (the embedding W_E) and the columns (the unembedding W_U) to the "
                            f"{len(names)} names, task.name_tokens")
                expect_close(got, want, f"L{layer}H{head}", atol=1e-3, hint=hint)
    return f"your OV circuits match methods.ov_circuit restricted to the names, for all {cfg.n_layers * cfg.n_heads} heads"


# ---- 10.7 ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _copying() -> tuple[dict[str, float], dict[str, float]]:
    """Every head's copying score over names, and over the whole vocabulary."""
    zm = _zm()
    names = zm.task.name_tokens
    over_names, over_all = {}, {}
    with torch.no_grad():
        for head in _all_heads():
            _, layer, index = parse(head)
            ov = ov_circuit(zm.model, layer, index)
            over_names[head], over_all[head] = copying_score(ov[names][:, names]), copying_score(ov)
    return over_names, over_all


@exercise("ioi.copiers", "Which heads copy names?", "answer", "easy", 10,
          hint="for every head, copying_score(name_ov(model, task, layer, head)) (from exercise 10.6); keep those "
               "at 0.9 or more")
def _copiers(answer: Any) -> str:
    heads = _heads(answer, "your answer")
    over_names, over_all = _copying()
    want = {h for h, score in over_names.items() if score >= COPYING_BAR}
    if heads and heads == {h for h, score in over_all.items() if score >= COPYING_BAR} and heads != want:
        raise Wrong("those are the heads that copy over the whole vocabulary",
                    "restrict the OV circuit's rows and columns to task.name_tokens before scoring")
    if difference := first_difference(heads, want):
        head, extra = difference
        if extra:
            raise Wrong(f"{head}'s copying score over names is {over_names[head]:.2f}, below {COPYING_BAR}")
        raise Wrong(f"you left out {head}: its copying score over names is {over_names[head]:.2f} ({_role(head)})",
                    "score every head, not only the name movers: the question is which heads copy")
    roles = "; ".join(f"{h} ({_role(h)}, {over_names[h]:.2f})" for h in sorted(heads))
    return (f"{roles}. Copying is what a head's weights can do: it is shared by heads that play different parts, "
            "and some play none")


# ---- 10.8 ----------------------------------------------------------------------------------


def _compensation_mistake(got: float, model, pair, primaries: list[str], backup_heads: list[str]) -> str | None:
    """Which neighbouring quantity a wrong ``compensation`` computed."""
    repair = self_repair(model, pair, primaries, backup_heads, knockout=KNOCKOUT)
    resampled = self_repair(model, pair, primaries, backup_heads, knockout="resample")
    neighbours = [
        (resampled.compensation, ("that knocks out with resample ablation: Wang et al. (and this exercise) use "
                                  "the primaries' mean over pair.corrupted.tokens")),
        (repair.cost, ("that is the cost, what the knockout takes from the logit difference: measure the backups' "
                       "direct effect instead")),
        ((repair.backups_knocked_out - repair.backups_clean) / repair.clean.metric,
         "divide by the primaries' direct effect in the clean run, not by the logit difference"),
        (repair.backups_knocked_out / repair.primaries_clean,
         "subtract the backups' clean direct effect: the compensation is what they write *more* once knocked out"),
    ]
    for value, says in neighbours:
        if abs(got - value) < 1e-3 * max(1.0, abs(value)):
            return says
    return None


@exercise("ioi.compensation", "The compensation", "implement", "medium", 15,
          hint="clean = methods.direct_logit_attribution(model, pair); inside `with methods.ablate(model, primaries, "
               "'mean', pair.corrupted.tokens):` the same gives the knocked-out direct effects; sum clean[h] and "
               "knocked[h] over the heads")
def _compensation(fn) -> str:
    zm = _zm()
    truth = zm.truth
    movers, backup_heads, negatives = name_movers(truth), backups(truth), negative_heads(truth)
    pair = _pair("abc", 64, CHECK_SEED + 2)
    cases = [(movers, backup_heads), (movers[:1], backup_heads), (movers[1:], backup_heads + negatives),
             (movers, negatives)]
    for primaries, backup_list in cases:
        with torch.no_grad():
            want = self_repair(zm.model, pair, primaries, backup_list, knockout=KNOCKOUT).compensation
            got = number(call(fn, zm.model, pair, list(primaries), list(backup_list)),
                         f"compensation({primaries}, {backup_list})")
            if abs(got - want) > 1e-3 * max(1.0, abs(want)):
                hint = _compensation_mistake(got, zm.model, pair, primaries, backup_list)
                raise Wrong(f"primaries {primaries}, backups {backup_list}: got {got:.4f}, expected {want:.4f}", hint)
    return (f"your compensation matches self_repair(...).compensation in {len(cases)} cases (each name mover alone "
            "and both, the backup and the negative name mover)")


# ---- 10.9 ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _knockout():
    """Every head's direct effect clean and with the truth's name movers knocked out (mean), on the checker's pairs."""
    zm = _zm()
    movers = name_movers(zm.truth)
    with torch.no_grad():
        return self_repair(zm.model, _pair(), movers, [h for h in _all_heads() if h not in movers], knockout=KNOCKOUT)


@exercise("ioi.takes_over", "Who takes over?", "answer", "easy", 10,
          hint="compare each head's direct effect clean (repair.clean[head]) and knocked out (repair.knocked_out[head]): "
               "the backup is near 0 clean and rises; the negative name mover is below 0 clean and rises towards 0")
def _takes_over(answer: Any) -> str:
    if not isinstance(answer, dict) or set(answer) != {"backup", "negative"}:
        raise Wrong(f'answer with a dict {{"backup": head, "negative": head}}, got {answer!r}')
    backup, negative = _head(answer["backup"], "backup"), _head(answer["negative"], "negative")
    truth = _zm().truth
    movers = name_movers(truth)
    repair = _knockout()
    clean, knocked = repair.clean, repair.knocked_out

    def effect(head: str) -> str:
        return f"{clean[head]:+.2f} clean, {knocked[head]:+.2f} with the name movers knocked out"

    for head, what in ((backup, "backup"), (negative, "negative")):
        if head in movers:
            raise Wrong(f"{head} is a name mover: it is the head knocked out, not the one that takes over")
    if backup not in backups(truth):
        if backup in negative_heads(truth) or clean[backup] < -0.1 * clean.metric:
            raise Wrong(f"{backup}'s direct effect is {effect(backup)}: it is not quiet in the clean run, it writes "
                        "against IO; its rise is the negative one")
        raise Wrong(f"{backup}'s direct effect is {effect(backup)}: it does not take over")
    if negative not in negative_heads(truth):
        raise Wrong(f"{negative}'s direct effect is {effect(negative)}: it "
                    + ("never wrote against IO" if clean[negative] >= 0 else "barely moves"))
    return (f"the truth's claims: {backup} is the backup name mover ({effect(backup)}), {negative} the negative name "
            f"mover ({effect(negative)}); the logit difference falls from {clean.metric:.2f} to {knocked.metric:.2f}, "
            f"less than the name movers' direct effect {repair.primaries_clean:.2f}")
