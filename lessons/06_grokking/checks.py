"""Checkers for lesson 06, grokking modular addition: the Fourier basis, the trig identity behind
the logits, the share of a neuron's variance one frequency explains, the key frequencies (checked
by restricting and excluding them from the logits), and the phases of grokking."""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import torch
from torch import Tensor

from toylab import methods, zoo
from toylab.lessons.checking import call, expect_close, number, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.methods.fourier import (
    RESTRICTED_SLACK,
    FrequencyLosses,
    dominant_frequency,
    fourier_basis,
    grid_spectrum,
)
from toylab.methods.progress import half_down_step

from .fixtures import MODEL, PROGRESS_MODEL


# ---- 6.1 the Fourier basis ----------------------------------------------------------
@exercise("grokking.fourier_basis", "The Fourier basis over Z_p", "implement", "easy", 10,
          hint="rows: 1/sqrt(p), then for w = 1 .. (p-1)/2 the pair sqrt(2/p) cos(2 pi w x / p), "
               "sqrt(2/p) sin(2 pi w x / p); the result is [p, p] and basis @ basis.T is the identity")
def _fourier_basis(fn) -> str:
    for p in (3, 7, 13, 53, 113):
        want, names = fourier_basis(p, torch.float64)  # [basis, x]
        got = call(fn, p)
        if isinstance(got, tuple):  # tolerate (basis, names) as fourier_basis returns
            got = got[0]
        if isinstance(got, Tensor) and got.shape == want.shape:
            got = got.detach().double()
            gram = got @ got.T
            if not torch.allclose(gram, torch.eye(p, dtype=torch.float64), atol=1e-4):
                norms = gram.diagonal()
                raise Wrong(f"p={p}: your rows are not orthonormal: basis @ basis.T has diagonal from "
                            f"{float(norms.min()):.3g} to {float(norms.max()):.3g} and off-diagonal entries up to "
                            f"{float((gram - torch.diag(norms)).abs().max()):.3g} (the identity has 1 and 0)",
                            "scale the constant row by 1/sqrt(p) and every cos/sin row by sqrt(2/p)")
            for i in range(p):
                if not torch.allclose(got[i], want[i], atol=1e-4):
                    match = next((names[j] for j in range(p) if torch.allclose(got[i], want[j], atol=1e-4)), None)
                    said = f"it holds {match}" if match else "it matches no basis vector"
                    raise Wrong(f"p={p}: row {i} should be {names[i]}, but {said}",
                                "order the rows const, cos 1, sin 1, cos 2, sin 2, ...")
        expect_close(got, want, f"p={p}", atol=1e-4,
                     hint="return a [p, p] tensor, one basis vector per row (const, cos 1, sin 1, ...)")
    return "your basis matches toylab.methods.fourier.fourier_basis for p = 3, 7, 13, 53 and 113"


# ---- 6.2 the trig identity -------------------------------------------------------------
def _sum_cos(a: Tensor, b: Tensor, freqs: list[int], p: int, sign: int = 1) -> Tensor:
    """sum_w cos(2 pi w (a + sign * b - c) / p) for every c. [n, c] float64"""
    c = torch.arange(p, dtype=torch.float64)
    s = (a.double() + sign * b.double())[:, None] - c[None, :]  # [n, c]
    return sum(torch.cos(2 * math.pi * w * s / p) for w in freqs)


@exercise("grokking.trig_logits", "Logits from the trig identity", "implement", "medium", 15,
          hint="with angle = 2 pi w x / p: cos(w(a+b)) = cos(wa)cos(wb) - sin(wa)sin(wb) and sin(w(a+b)) = "
               "sin(wa)cos(wb) + cos(wa)sin(wb); then cos(w(a+b-c)) = cos(w(a+b))cos(wc) + sin(w(a+b))sin(wc); "
               "sum over the frequencies")
def _trig_logits(fn) -> str:
    g = torch.Generator().manual_seed(6)
    for p, freqs in ((13, [2]), (53, [3, 11, 17]), (113, [1, 7, 21, 40, 55])):
        a = torch.randint(0, p, (40,), generator=g)
        b = torch.randint(0, p, (40,), generator=g)
        want = _sum_cos(a, b, freqs, p)  # [n, c]
        got = call(fn, a.clone(), b.clone(), list(freqs), p)
        if isinstance(got, Tensor) and got.shape == want.shape:
            got64 = got.detach().double()
            if torch.allclose(got64, _sum_cos(a, b, freqs, p, sign=-1), atol=1e-3):
                raise Wrong(f"p={p}: your logits are sum_w cos(w(a - b - c)): they peak at c = a - b",
                            "cos(wa)cos(wb) + sin(wa)sin(wb) is cos(w(a - b)); the sum needs a minus sign")
            top = got64.argmax(-1)
            if not torch.allclose(got64, want, atol=1e-3):
                bad = int((top != (a + b) % p).nonzero()[0]) if (top != (a + b) % p).any() else None
                if bad is not None:
                    raise Wrong(f"p={p}, frequencies {freqs}: for a={int(a[bad])}, b={int(b[bad])} your logits peak "
                                f"at c={int(top[bad])}, not at (a + b) mod p = {int((a[bad] + b[bad]) % p)}")
        expect_close(got, want, f"p={p}, frequencies {freqs}", atol=1e-3,
                     hint="return [n, p]: one row of logits over c for each pair (a[i], b[i]); the angle is "
                          "2 pi w x / p")
    return "your logits are sum_w cos(w(a+b-c)), built from products of cos/sin of wa and wb; they peak at c = a + b"


# ---- 6.3 variance explained by a frequency -----------------------------------------------
@cache
def _neuron_grids(name: str, seed: int | None = None) -> Tensor:
    """MLP neuron activations at "=" over every pair, of a few neurons. [neuron, a, b] float64"""
    zm = zoo_model(name, seed)
    p = zm.task.p
    with torch.no_grad():
        _, cache = zm.model.run_with_cache(zm.task.all_pairs().tokens, names="blocks.0.mlp.hook_post")
    acts = cache["blocks.0.mlp.hook_post"][:, 2].double()  # [pair, neuron]
    grids = acts.T.reshape(-1, p, p)  # [neuron, a, b]
    alive = grids.flatten(1).var(-1) > 1e-10
    picked = alive.nonzero().flatten()
    return grids[picked[:: max(1, len(picked) // 40)]]  # about 40 neurons, spread over the layer


@exercise("grokking.frequency_fraction", "How much of a neuron one frequency explains", "implement", "hard", 20,
          hint="C = basis @ X @ basis.T (one 2D Fourier coefficient per (i, j)); frequency w's part is the sum of "
               "C[i, j]^2 over i, j in {const, cos w, sin w} except (const, const); divide by the sum of all "
               "C[i, j]^2 except (const, const), which is sum_ab (X - mean X)^2")
def _frequency_fraction(fn) -> str:
    g = torch.Generator().manual_seed(7)
    cases = [(MODEL, None), ("modadd-tiny", 0)]
    for name, seed in cases:
        zm = zoo_model(name, seed)
        p = zm.task.p
        grids = _neuron_grids(name, seed)  # [neuron, a, b]
        per_freq, total = grid_spectrum(grids)  # [freq, neuron], [neuron]
        want_all = per_freq / total  # [freq, neuron]
        keys = list(zm.truth.claims["key_frequencies"]) if zm.truth is not None else []
        others = [w for w in range(1, (p - 1) // 2 + 1) if w not in keys]
        extra = [others[int(torch.randint(0, len(others), (1,), generator=g))]]
        for w in keys + extra:
            got = call(fn, grids.clone().float(), w)
            if isinstance(got, Tensor) and got.shape == want_all[w - 1].shape:
                _diagnose_fraction(got.detach().double(), grids, w, name)
            expect_close(got, want_all[w - 1], f"{name}, frequency {w}", atol=1e-3,
                         hint="return [neuron]: one fraction in [0, 1] per neuron")
        freq, _ = dominant_frequency(per_freq, total)  # as methods.neuron_frequencies, on these neurons
        for w in sorted(set(freq.tolist()) - set(keys + extra))[:2]:  # a neuron's own frequency, if not yet tried
            expect_close(call(fn, grids.clone().float(), w), want_all[w - 1], f"{name}, frequency {w}", atol=1e-3)
    return ("your fractions match toylab.methods.neuron_frequencies: a neuron's frequency is the w with the "
            "largest fraction, and in these models that is usually well over half of its variance")


def _diagnose_fraction(got: Tensor, grids: Tensor, w: int, name: str) -> None:
    """Name the usual mistakes: products only, marginals only, or the mean left in the total."""
    p = grids.shape[-1]
    basis, _ = fourier_basis(p, torch.float64)
    coef = basis @ grids @ basis.T  # [neuron, basis, basis]
    sq = coef.pow(2)
    ij = [0, 2 * w - 1, 2 * w]
    part = sq[:, ij][:, :, ij].sum((1, 2)) - sq[:, 0, 0]  # [neuron]
    products = sq[:, ij[1:]][:, :, ij[1:]].sum((1, 2))
    marginals = part - products
    total = sq.sum((1, 2)) - sq[:, 0, 0]
    if torch.allclose(got, part / total, atol=1e-3):
        return
    for guess, what, hint in (
            (products / total, "count only the products cos(wa)cos(wb), cos(wa)sin(wb), ...",
             "the terms in wa alone and in wb alone (const x cos w, ...) belong to frequency w too"),
            (marginals / total, "count only the terms in wa alone and in wb alone",
             "the products cos(wa)cos(wb), ... belong to frequency w too"),
            (part / sq.sum((1, 2)), "divide by a total that includes the constant (mean) term",
             "divide by the variance, sum_ab (X - mean X)^2, not by sum_ab X^2")):
        if torch.allclose(got, guess, atol=1e-3):
            raise Wrong(f"{name}, frequency {w}: your fractions {what}", hint)


# ---- 6.4 the key frequencies ----------------------------------------------------------
def _nats(x: float) -> str:
    return f"{x:.4f}" if x >= 1e-3 else f"{x:.2g}"


def _answer_losses(answer: Any, model, task) -> FrequencyLosses:
    """The losses of the answer's frequencies (``frequency_losses`` validates them: ``.freqs``
    is the answer as a sorted tuple of distinct frequencies)."""
    if isinstance(answer, (str, bytes)):
        raise Wrong(f"answer with a list of frequencies (ints), got {answer!r}")
    items = [answer] if isinstance(answer, int) else answer
    try:
        items = list(items)
    except TypeError:
        raise Wrong(f"answer with a list of frequencies (ints), got {answer!r}") from None
    try:
        losses = methods.frequency_losses(model, task, items)
    except ValueError as err:
        raise Wrong(str(err)) from None
    if not losses.freqs:
        raise Wrong("your list is empty: the model uses at least one frequency")
    return losses


@exercise("grokking.key_frequencies", "Which frequencies does the model use?", "answer", "medium", 15,
          hint="a large embedding norm does not prove the model uses a frequency: for candidate sets, compare the "
               "restricted loss (only those frequencies kept) with the full loss, and drop every frequency "
               "whose removal leaves the restricted loss as low")
def _key_frequencies(answer) -> str:
    zm = zoo_model(MODEL)
    model, task = zm.model, zm.task
    mine = _answer_losses(answer, model, task)
    freqs = mine.freqs
    truth = tuple(sorted(zm.truth.claims["key_frequencies"]))
    checks = methods.check_key_frequencies(model, task, freqs)
    tau = mine.full + RESTRICTED_SLACK
    if all(c.passed for c in checks):
        return (f"{list(freqs)}: keeping only them the train loss is {_nats(mine.restricted)} (the full model: "
                f"{_nats(mine.full)}), removing them {mine.excluded:.2f} (uniform guessing: log p = "
                f"{math.log(task.p):.2f}), and each one is needed")
    if missing := [w for w in truth if w not in freqs]:
        with_all = methods.frequency_losses(model, task, sorted(set(freqs) | set(missing)))
        raise Wrong(f"frequency {missing[0]} is missing: keeping only {list(freqs)} the restricted train loss is "
                    f"{_nats(mine.restricted)} nats against the full model's {_nats(mine.full)}; with "
                    f"{', '.join(map(str, missing))} added it is {_nats(with_all.restricted)}")
    if extra := [w for w in freqs if w not in truth]:
        without = methods.frequency_losses(model, task, [w for w in freqs if w not in extra])
        alone = methods.frequency_losses(model, task, [extra[0]])
        raise Wrong(f"frequency {extra[0]} is not needed: without {', '.join(map(str, extra))} the restricted train "
                    f"loss is already {_nats(without.restricted)} (the full model: {_nats(without.full)}, bar "
                    f"{_nats(tau)}), and removing frequency {extra[0]} alone leaves the loss at "
                    f"{_nats(alone.excluded)}",
                    "the embedding keeps some weight on frequencies the rest of the circuit ignores; keep only "
                    "the ones whose removal from the restricted set raises the restricted loss")
    failed = "; ".join(str(c) for c in checks if not c.passed)  # the truth itself fails: the model changed
    raise RuntimeError(f"the certified key frequencies {list(truth)} fail on {MODEL} ({failed}); please report this")


# ---- 6.5 the phases ----------------------------------------------------------------------
def _halfway(measures: methods.ProgressMeasures, series: str) -> tuple[float, float]:
    """Step where ``series`` is first halfway down, and the checkpoint gap around it."""
    steps = measures.steps
    t = half_down_step(steps, getattr(measures, series))
    if t is None:
        raise RuntimeError(f"{series} never falls in the shipped run of {PROGRESS_MODEL}; please report this")
    i = next((i for i, s in enumerate(steps) if s >= t), len(steps) - 1)
    gap = steps[i] - steps[max(i - 1, 0)]
    return t, max(gap, 1)


@exercise("grokking.halfway_steps", "Which falls first?", "answer", "medium", 10,
          hint="for each series (measures.restricted_loss, measures.test_loss) find its peak, the lowest value "
               "after the peak, and the first step after the peak where the series is at or below halfway "
               "between the two; measures.steps holds the steps")
def _halfway_steps(answer) -> str:
    if not isinstance(answer, dict) or set(answer) != {"restricted", "test"}:
        raise Wrong(f"answer with a dict {{'restricted': step, 'test': step}}, got {answer!r}")
    measures = zoo.load_shipped_progress(PROGRESS_MODEL)
    got = {k: number(v, f"your {k} step") for k, v in answer.items()}
    want = {k: _halfway(measures, f"{k}_loss") for k in ("restricted", "test")}
    if (abs(got["restricted"] - want["test"][0]) <= want["test"][1]
            and abs(got["test"] - want["restricted"][0]) <= want["restricted"][1]
            and abs(want["test"][0] - want["restricted"][0]) > want["test"][1]):
        raise Wrong("you swapped the two: your 'restricted' step is when test loss is halfway down, and the other "
                    "way round")
    for k in ("restricted", "test"):
        t, gap = want[k]
        if abs(got[k] - t) > gap:
            series = measures.series(f"{k}_loss")
            i = min(range(len(measures)), key=lambda j: abs(measures.steps[j] - got[k]))
            peak = int(series.argmax())
            raise Wrong(f"{k} loss: at step {measures.steps[i]} (nearest to your {got[k]:g}) it is "
                        f"{float(series[i]):.3g} nats; it peaks at {float(series[peak]):.3g} (step "
                        f"{measures.steps[peak]}) and falls to {float(series[peak:].min()):.3g}, so it is first "
                        f"halfway down at about step {t:.0f}")
    first = "restricted" if want["restricted"][0] <= want["test"][0] else "test"
    lead = abs(want["test"][0] - want["restricted"][0])
    return (f"restricted loss is halfway down at step {want['restricted'][0]:.0f}, test loss at "
            f"{want['test'][0]:.0f}: {first} loss falls first, by about {lead:.0f} steps"
            + (" - the circuit forms before the model generalises" if first == "restricted" else ""))
