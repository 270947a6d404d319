"""Checkers for lesson 15, balanced brackets: implementations are compared with the task's algorithm and toylab's own
functions on the checker's own strings and pairs (never the lesson's); answers are checked against the truth's
sites and the ablations the checker measures, which the truth predicts."""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

from toylab.components import parse
from toylab.lessons.checking import call, number, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.tasks.brackets import CLOSE, GROUPS, OPEN

from .fixtures import (
    DESTROYS,
    FLAG_HOOK,
    IIA_BAR,
    IIA_TESTS,
    KINDS,
    MODEL,
    N_PAIRS,
    VARIABLES,
    components,
    destroyed,
    failure_pairs,
    iia,
    layer0_readouts,
    positions,
    truth_failures,
    truth_flag_directions,
    truth_sites,
)

CHECK_SEED = 10  # the checker's strings and pairs, never the lesson's (seeds 0 to 5)


def _zm():
    return zoo_model(MODEL)


# ---- 15.1 ----------------------------------------------------------------------------------

# Strings a learner's mistakes trip on, with (balanced?) from the definition: never below zero, ends at zero.
HAND_STRINGS = (
    "()" * 12,  # touches zero at every second position, and is balanced
    "(" * 12 + ")" * 12,
    ")(" + "()" * 11,  # ends at zero, dips at once
    "(()" * 8,  # never dips, ends at +8
    "((" + "()" * 10 + "))",
    "())(" + "()" * 10,  # dips once, in the middle
    ")" * 12 + "(" * 12,
    "(" * 24,
)


@cache
def _algorithm_cases() -> tuple[tuple[str, torch.Tensor], ...]:
    """(what, tokens): strings of every group of the task's mix, then the hand-written ones."""
    task = _zm().task
    cases = [(f"strings of the group {group!r}", task.sample(64, seed=CHECK_SEED, group=group).tokens)
             for group in GROUPS]
    return (*cases, ("hand-written strings", task.make_tokens(list(HAND_STRINGS))))


def _balance(tokens: torch.Tensor, open_token: int = OPEN, close_token: int = CLOSE) -> torch.Tensor:
    return torch.where(tokens == open_token, 1, torch.where(tokens == close_token, -1, 0)).cumsum(-1)


def _algorithm_mistake(got: torch.Tensor, tokens: torch.Tensor) -> str | None:
    """Which neighbouring rule a wrong ``is_balanced`` applied."""
    balance = _balance(tokens)
    swapped = _balance(tokens, CLOSE, OPEN)
    neighbours = [
        (balance[:, -1] == 0, ("that only checks the end: a string that ends at zero but dips below it on the way, "
                               "')(()', is unbalanced")),
        ((balance >= 0).all(-1), ("that only checks that the count never dips: a string that ends above zero, "
                                  "'(()', is unbalanced too")),
        ((balance[:, -1] == 0) & (balance[:, 1:-1] > 0).all(-1),
         "the count may come back to zero on the way: '()()' is balanced; only going *below* zero fails"),
        ((swapped[:, -1] == 0) & (swapped >= 0).all(-1), "'(' is token 1 (OPEN, +1) and ')' token 2 (CLOSE, -1)"),
    ]
    for value, says in neighbours:
        if torch.equal(got, value):
            return says
    return None


@exercise("brackets.algorithm", "Balanced brackets by hand", "implement", "easy", 10,
          hint="balance = torch.where(tokens == 1, 1, torch.where(tokens == 2, -1, 0)).cumsum(-1); balanced where "
               "balance[:, -1] == 0 and (balance >= 0).all(-1)")
def _algorithm(fn) -> str:
    task, n = _zm().task, 0
    for what, tokens in _algorithm_cases():
        want = task.make_batch(tokens).targets[:, -1] == 1  # the task's own labels
        got = call(fn, tokens.clone())
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"{what}: expected a tensor [batch], got {type(got).__name__}")
        if got.shape != want.shape:
            raise Wrong(f"{what}: expected shape {tuple(want.shape)}, one answer per string, got {tuple(got.shape)}",
                        "the answer is per string: reduce over positions" if got.dim() == 2 else None)
        if got.dtype != torch.bool:
            if not ((got == 0) | (got == 1)).all():
                raise Wrong(f"{what}: expected True/False (or 1/0) per string, got values {got.unique().tolist()}")
            got = got.bool()
        if not torch.equal(got, want):
            i = int(torch.nonzero(got != want)[0])
            raise Wrong(f"{what}: '{task.to_strings(tokens[i:i + 1])[0]}' is {'' if want[i] else 'not '}balanced, "
                        f"you say it is {'' if got[i] else 'not'}".rstrip(),
                        _algorithm_mistake(got, tokens))
        n += len(tokens)
    return (f"your classifier agrees with the task's labels on all {n} strings, every group of the mix and the "
            "hand-written ones: never below zero, and zero at the end")


# ---- 15.2 ----------------------------------------------------------------------------------


def _fit(x: torch.Tensor, y: torch.Tensor, bias: bool = True) -> torch.Tensor:
    x, y = x.double(), y.double()
    X = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) if bias else x
    return y - (X @ torch.linalg.lstsq(X, y.unsqueeze(-1)).solution).squeeze(-1)  # the residual [n]


def _r2(x: torch.Tensor, y: torch.Tensor) -> float:
    y = y.double()
    return float(1 - _fit(x, y).pow(2).sum() / (y - y.mean()).pow(2).sum())


def _synthetic_fit() -> tuple[str, torch.Tensor, torch.Tensor]:
    """A fit whose target sits far from zero: y = 5 + x w + noise."""
    g = torch.Generator().manual_seed(CHECK_SEED)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(200, generator=g, dtype=torch.float64)
    return "a synthetic fit, y = 5 + x w + noise", x, 5.0 + x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + noise


@cache
def _r2_cases() -> tuple[tuple[str, torch.Tensor, torch.Tensor], ...]:
    """(what, x, y): the layer-0 heads against the balance and its fraction, MLP0 against the flags."""
    zm = _zm()
    tokens = zm.task.sample(128, seed=CHECK_SEED).tokens
    z, balance, pos = layer0_readouts(zm.model, zm.task, tokens, 1)
    z0, _, _ = layer0_readouts(zm.model, zm.task, tokens, 0)
    with torch.no_grad():
        mlp = zm.model.run_with_cache(tokens, names=["blocks.0.hook_mlp_out"])[1]["blocks.0.hook_mlp_out"]
    flags = zm.task.variables(tokens)["negative"][:, 1:].reshape(-1).double()
    return (("L0H1's output against the balance, pooled", z, balance),
            ("L0H1's output against balance / (i + 1), pooled", z, balance / (pos + 1)),
            ("L0H0's output against the balance at position 7", z0[pos == 7], balance[pos == 7]),
            ("MLP0's output against the flags", mlp[:, 1:].reshape(-1, mlp.shape[-1]), flags))


def _r2_mistake(got: float, x: torch.Tensor, y: torch.Tensor) -> str | None:
    y = y.double()
    ss_tot = (y - y.mean()).pow(2).sum()
    plain = _fit(x, y, bias=False).pow(2).sum()
    full = _fit(x, y).pow(2).sum()
    neighbours = [
        (float(1 - plain / ss_tot), "that fit has no bias: append a column of ones to x"),
        (float(1 - full / y.pow(2).sum()), "SS_tot is the spread around the mean: sum((y - mean(y))^2), not sum(y^2)"),
        (float(full / ss_tot), "that is SS_res / SS_tot, the share *not* explained: R² = 1 - SS_res / SS_tot"),
        (float(full), "that is the sum of squared residuals: divide by SS_tot and take it from 1"),
        (float(torch.corrcoef(torch.stack([x[:, 0].double(), y]))[0, 1] ** 2),
         "that is the squared correlation with the first column alone: fit y on every column of x"),
    ]
    for value, says in neighbours:
        if abs(got - value) < 1e-4 * max(1.0, abs(value)):
            return says
    return None


@exercise("brackets.r2", "The R² of a linear readout", "implement", "easy", 10,
          hint="X = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1); w = "
               "torch.linalg.lstsq(X, y.double()[:, None]).solution; residual = y - (X @ w)[:, 0]; R² = 1 - "
               "residual.pow(2).sum() / (y - y.mean()).pow(2).sum()")
def _r2_check(fn) -> str:
    cases = [_synthetic_fit()]  # first: a function not written yet stops before the model runs
    for what, x, y in cases + list(_r2_cases()):
        want = _r2(x, y)
        got = number(call(fn, x.clone(), y.clone()), what)
        if abs(got - want) > 1e-4:
            raise Wrong(f"{what}: got R² = {got:.4f}, the least-squares fit with a bias explains {want:.4f}",
                        _r2_mistake(got, x, y))
    return (f"your R² matches the least-squares fit on {len(_r2_cases()) + 1} readouts: both layer-0 heads read the balance "
            "position by position, and pooled over positions, its fraction balance / (i + 1)")


# ---- 15.3 ----------------------------------------------------------------------------------


def _synthetic_flags() -> tuple[str, torch.Tensor, torch.Tensor]:
    """Activations [batch, pos, 4] whose flag direction is known, with a BOS far from everything else."""
    g = torch.Generator().manual_seed(CHECK_SEED)
    flags = torch.rand(16, 9, generator=g) < 0.3
    flags[:, 0] = False
    acts = torch.randn(16, 9, 4, generator=g) + 3.0 * flags.unsqueeze(-1) * torch.tensor([1.0, 0.0, 0.0, 0.0])
    acts[:, 0] = 50.0  # as BOS's output often is
    return "a synthetic case", acts, flags


@cache
def _direction_cases() -> tuple[tuple[str, torch.Tensor, torch.Tensor], ...]:
    """(what, acts [batch, pos, d_model], flags [batch, pos]): MLP0's output on strings of the mix and on strings that
    dip."""
    zm = _zm()
    cases = []
    for what, tokens in (("MLP0's output on the mix", zm.task.sample(128, seed=CHECK_SEED).tokens),
                         ("MLP0's output on strings that dip", zm.task.sample(64, seed=CHECK_SEED, group="dips").tokens)):
        with torch.no_grad():
            acts = zm.model.run_with_cache(tokens, names=[FLAG_HOOK])[1][FLAG_HOOK]
        cases.append((what, acts, zm.task.variables(tokens)["negative"]))
    return tuple(cases)


def _direction(acts: torch.Tensor, flags: torch.Tensor, start: int = 1, normalise: bool = True) -> torch.Tensor:
    x, on = acts[:, start:].reshape(-1, acts.shape[-1]).double(), flags[:, start:].reshape(-1)
    difference = x[on].mean(0) - x[~on].mean(0)
    return difference / difference.norm() if normalise else difference


def _direction_mistake(got: torch.Tensor, acts: torch.Tensor, flags: torch.Tensor) -> str | None:
    neighbours = [
        (-_direction(acts, flags), "that points the other way: the mean where the flag is on minus where it is off"),
        (_direction(acts, flags, normalise=False), "return a unit vector: divide by its norm"),
        (_direction(acts, flags, start=0), "leave BOS out: every bracket's position, 1 .. n"),
    ]
    for value, says in neighbours:
        if got.shape == value.shape and torch.allclose(got.double(), value, atol=1e-4):
            return says
    return None


@exercise("brackets.flag_direction", "The flag direction", "implement", "easy", 10,
          hint="x = acts[:, 1:].reshape(-1, d_model); on = negative[:, 1:].reshape(-1); d = x[on].mean(0) - "
               "x[~on].mean(0); return d / d.norm()")
def _flag_direction(fn) -> str:
    cases = [_synthetic_flags()]  # first: a function not written yet stops before the model runs
    for what, acts, flags in cases + list(_direction_cases()):
        want = _direction(acts, flags)
        got = call(fn, acts.clone(), flags.clone())
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"{what}: expected a tensor [d_model], got {type(got).__name__}")
        if got.shape != want.shape:
            raise Wrong(f"{what}: expected shape {tuple(want.shape)}, one direction, got {tuple(got.shape)}",
                        "average over strings and positions together: one vector [d_model]")
        if not torch.allclose(got.detach().double(), want, atol=1e-4):
            raise Wrong(f"{what}: your direction differs from the difference in means, by up to "
                        f"{float((got.detach().double() - want).abs().max()):.3g}",
                        _direction_mistake(got.detach(), acts, flags))
    declared = truth_flag_directions(_zm().truth)
    if not len(declared):
        return "your direction matches the difference in means of MLP0's output (this truth declares no flag feature)"
    cosines = declared @ _direction(*_direction_cases()[0][1:])
    return (f"your direction matches the difference in means of MLP0's output, and it is the truth's: cosine "
            f"{float(cosines.min()):.3f} or more with each of the {len(declared)} flag directions it declares")


# ---- 15.4 ----------------------------------------------------------------------------------

IIA_CASES = (("L0H1", "balance", "all", 64), ("MLP0", "negative", "all but last", 64),
             ("L1H1", "any_negative", "last", 64), ("L0H1", "negative", "all", 96), ("MLP0", "balance", "last", 64))


@cache
def _iia_variant(component: str, variable: str, where: str, n: int, variant: str) -> float:
    """The IIA a neighbouring implementation gives: the mask ignored, the base's answer expected, the variable
    swapped everywhere in the algorithm, the whole layer patched."""
    zm = _zm()
    model, algorithm, mask = zm.model, zm.algorithm, positions(where, zm.task.n_ctx)
    base, source = algorithm.sample_pairs(n, torch.Generator().manual_seed(CHECK_SEED))
    expected = algorithm.intervene(base, source, variable, None if variable == "everywhere" else mask)[:, -1]
    if variant == "base answer":
        expected = base.targets[:, -1]
    elif variant == "swapped everywhere":
        expected = algorithm.intervene(base, source, variable)[:, -1]
    kind, layer, head = parse(component)
    if variant == "whole layer" and kind == "head":
        hook, index = f"blocks.{layer}.hook_attn_out", (slice(None), mask)
    else:
        hook = f"blocks.{layer}.attn.hook_z" if kind == "head" else f"blocks.{layer}.hook_mlp_out"
        where_mask = torch.ones_like(mask) if variant == "mask ignored" else mask
        index = (slice(None), where_mask, head) if kind == "head" else (slice(None), where_mask)
    with torch.no_grad():
        acts = model.run_with_cache(source.tokens, names=[hook])[1][hook]

        def patch(x, hook):
            x = x.clone()
            x[index] = acts[index]
            return x

        with model.hooks([(hook, patch)]):
            answers = model(base.tokens)[:, -1].argmax(-1)
    return float((answers == expected).float().mean())


IIA_MISTAKES = {
    "mask ignored": "patch only at the positions where mask is True",
    "base answer": "compare with the algorithm's answer under the intervention, algorithm.intervene(base, source, "
                   "variable, mask), not the base's own",
    "swapped everywhere": "pass the mask to algorithm.intervene too: the variable is swapped at those positions only",
    "whole layer": "patch the one head's slice of hook_z, not the whole layer's attention output",
}


@exercise("brackets.iia", "Interchange-intervention accuracy", "implement", "medium", 20,
          hint="expected = algorithm.intervene(base, source, variable, mask)[:, -1]; cache the component's hook on "
               "source.tokens; in a hook, x = x.clone(); x[:, mask, h] = src[:, mask, h] (a head) or x[:, mask] = "
               "src[:, mask] (an MLP); compare model(base.tokens)[:, -1].argmax(-1) with expected")
def _iia(fn) -> str:
    zm = _zm()
    for component, variable, where, n in IIA_CASES:
        mask = positions(where, zm.task.n_ctx)
        with torch.no_grad():
            got = number(call(fn, zm.model, zm.algorithm, variable, component, mask.clone(), n, CHECK_SEED),
                         f"IIA of {variable} at {component}")
        want = iia(zm.model, zm.algorithm, variable, component, mask, n=n, seed=CHECK_SEED)
        if zm.model.has_hooks():
            raise Wrong("your function left a hook on the model", "use `with model.hooks([...]):` so they are removed")
        if abs(got - want) > 1e-6:
            hint = next((says for variant, says in IIA_MISTAKES.items()
                         if abs(_iia_variant(component, variable, where, n, variant) - want) > 1e-6
                         and abs(_iia_variant(component, variable, where, n, variant) - got) < 1e-6), None)
            raise Wrong(f"{variable} swapped at {component}, {where} positions ({n} pairs, seed {CHECK_SEED}): got IIA "
                        f"{got:.4f}, toylab's interchange_accuracy gives {want:.4f}", hint)
    return (f"your IIA matches toylab's interchange_accuracy on {len(IIA_CASES)} (variable, component, positions) "
            "interventions")


# ---- 15.5 ----------------------------------------------------------------------------------


@cache
def _iia_cell(variable: str, where: str, component: str) -> float:
    """IIA on the checker's pairs: what the messages quote."""
    zm = _zm()
    return iia(zm.model, zm.algorithm, variable, component, positions(where, zm.task.n_ctx), n=N_PAIRS,
               seed=CHECK_SEED)


def _component(value: Any, what: str) -> str:
    names = components(_zm().model.cfg)
    if not isinstance(value, str) or value not in names:
        raise Wrong(f"{what}: expected one component id among {names}, got {value!r}")
    return value


def _site_mistake(variable: str, got: str) -> str:
    """Why ``got`` is not the component of ``variable``: the tests it fails, with their IIA."""
    failed = [(where, _iia_cell(variable, where, got)) for v, where in IIA_TESTS if v == variable]
    numbers = ", ".join(f"{variable} swapped at {where} positions: IIA {x:.2f}" for where, x in failed)
    reasons = {
        ("balance", "L0H0"): "L0H0 attends uniformly and its output reads the balance as well as L0H1's, yet "
                             "swapping it moves nothing: nothing downstream reads it",
        ("negative", "L1H1"): "swapped at every position, negative is any_negative, which L1H1 carries; but at "
                              "every position but the last L1H1 writes nothing that is read",
        ("negative", "L0H1"): "L0H1 carries the count itself: swapping it at the last position swaps the final "
                              "count too, not just the flags",
        ("any_negative", "MLP1"): "MLP1 computes the answer from any_negative and the final count together",
    }
    return f"{numbers}. " + reasons.get((variable, got), f"{got} does not pass every test of {variable}")


@exercise("brackets.sites", "Where each variable lives", "answer", "medium", 10,
          hint=f"in the table, for each variable, the one component whose IIA is at least {IIA_BAR} in every row of "
               "that variable")
def _sites(answer: Any) -> str:
    if not isinstance(answer, dict) or set(answer) != set(VARIABLES):
        raise Wrong(f"answer with a dict with the keys {VARIABLES}, got {answer!r}")
    zm = _zm()
    truth = truth_sites(zm.truth)
    for variable in VARIABLES:
        got = _component(answer[variable], variable)
        if got != truth[variable]:
            raise Wrong(f"{variable}: {got} does not carry it", _site_mistake(variable, got))
    quoted = "; ".join(f"{variable} in {truth[variable]} (IIA "
                       + ", ".join(f"{_iia_cell(variable, where, truth[variable]):.2f}" for v, where in IIA_TESTS
                                   if v == variable) + ")" for variable in VARIABLES)
    return f"the truth's sites: {quoted}. Found by intervening, where attention patterns and probes could not tell"


# ---- 15.6 ----------------------------------------------------------------------------------


@cache
def _failures() -> tuple[dict[str, dict[str, float]], dict[str, set[str]]]:
    """On the checker's pairs: each component's destroyed fraction per kind, and the truth's prediction."""
    zm = _zm()
    pairs = failure_pairs(zm.task, N_PAIRS, seed=CHECK_SEED)
    return ({kind: destroyed(zm.model, pairs[kind]) for kind in KINDS}, truth_failures(zm.truth, zm.task, pairs))


def _component_set(value: Any, what: str) -> set[str]:
    items = [value] if isinstance(value, str) else value
    try:
        items = list(items)
    except TypeError:
        raise Wrong(f"{what}: expected a set of component ids such as {{'L0H1', 'MLP0'}}, got {value!r}") from None
    return {_component(item, what) for item in items}


FAILURE_REASONS = {
    ("dips", "L0H0"): "L0H0 counts like L0H1 but nothing reads it",
    ("dips", "L1H0"): "L1H0 does not look for flags, and nothing reads it",
    ("unclosed", "L1H1"): "neither string of an unclosed pair ever dips: there is no flag for L1H1 to find, in "
                          "either",
    ("unclosed", "MLP0"): "MLP0's flags are the same in both strings (neither dips); it passes a little of the count "
                          "on to MLP1 besides, but not what the answer hinges on",
    ("unclosed", "L0H0"): "L0H0 counts like L0H1 but nothing reads it",
    ("dips", "MLP1"): "MLP1 makes the answer out of the flags and the final count: whichever failure, it matters",
    ("unclosed", "MLP1"): "MLP1 makes the answer out of the flags and the final count: whichever failure, it matters",
    ("dips", "MLP0"): "MLP0 flags the positions below zero, and a dip is exactly such a position",
    ("dips", "L1H1"): "L1H1 gathers the flags at the last position: a dip is what it finds",
}


@exercise("brackets.failure_modes", "Predict the two failures", "answer", "medium", 15,
          hint="a dip changes the count inside the swapped pair, so the flags there, so what L1H1 finds, so MLP1's "
               "answer; an unclosed string changes the final count (L0H1, read by MLP1) and no flag")
def _failure_modes(answer: Any) -> str:
    if not isinstance(answer, dict) or set(answer) != set(KINDS):
        raise Wrong(f"answer with a dict with the keys {KINDS}, each a set of component ids, got {answer!r}")
    scores, truth = _failures()
    got = {kind: _component_set(answer[kind], kind) for kind in KINDS}
    want = {kind: {c for c, x in scores[kind].items() if x >= DESTROYS} for kind in KINDS}
    if got == {"dips": want["unclosed"], "unclosed": want["dips"]} and want["dips"] != want["unclosed"]:
        raise Wrong("those are the two sets the other way round",
                    "'dips': the string ends at zero but goes below it; 'unclosed': it never dips but ends above zero")
    for kind in KINDS:
        for c in sorted(got[kind] ^ want[kind]):
            extra = c in got[kind]
            raise Wrong(f"{kind}: ablating {c} destroys {scores[kind][c]:.2f} of the difference, "
                        f"{'below' if extra else 'at least'} {DESTROYS}: {'it should not be' if extra else 'it is'} "
                        "in the set", FAILURE_REASONS.get((kind, c)))
    agrees = "as the truth predicts" if want == truth else f"(the truth predicts {truth})"
    return ("; ".join(f"{kind}: {', '.join(sorted(want[kind]))}" for kind in KINDS)
            + f", {agrees}: a dip runs through the flags, an unclosed string only through the final count")
