"""Checkers for lesson 11, steering: implementations are compared with toylab.methods.steering on the checker's
prompts (never the lesson's); answers with what the task's algorithm says each answer must become, and with the
checker's own comparison of the direction sources."""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

from toylab import methods
from toylab.interventions import steered
from toylab.lessons.checking import call, expect_close, number, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.methods.interchange import activations
from toylab.methods.steering import factual_relation_target

from .fixtures import (
    COMPARE_MODEL,
    MODEL,
    PREDICT_PROMPTS,
    SAE_STEPS,
    SOURCES,
    SUCCESS_BAR,
    N,
    das_config,
    n_fit,
    target,
)

CHECK_SEED = 10  # the checker's prompts, never the lesson's (seed 0)
COSINE = 0.999  # exercise 11.1: the same direction


def _zm():
    return zoo_model(MODEL)


@cache
def _target(relation: int = 1) -> methods.SteeringTarget:
    zm = _zm()
    return target(zm) if relation == 1 else factual_relation_target(zm.task, relation, zm.truth)


def _answer_pos() -> int:
    return _zm().task.positions["answer"]


# ---- 11.1 ----------------------------------------------------------------------------------


def _diff_in_means(x: torch.Tensor, labels: torch.Tensor, n_values: int) -> torch.Tensor:
    """Unit vectors [value, d]: the mean of x [batch, d] where the label is each value minus the mean elsewhere."""
    rows = [x[labels == v].mean(0) - x[labels != v].mean(0) for v in range(n_values)]
    out = torch.stack(rows)
    return out / out.norm(dim=-1, keepdim=True)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _same_directions(got: torch.Tensor, want: torch.Tensor) -> bool:
    return bool((F.cosine_similarity(got, want, dim=-1) > COSINE).all())


def _diff_in_means_mistake(got: torch.Tensor, model, tgt: methods.SteeringTarget, batch) -> str | None:
    """Which neighbouring quantity a wrong ``diff_in_means`` computed."""
    site, labels = tgt.site, tgt.read(batch.tokens)
    _, cache = model.run_with_cache(batch.tokens)
    here = cache[site.hook][:, site.pos]  # [batch, d]
    want = _diff_in_means(here, labels, tgt.n_values)
    if _same_directions(got, -want):
        return "the sign is flipped: the mean where the relation is x minus the mean where it is not"
    means = torch.stack([here[labels == v].mean(0) for v in range(tgt.n_values)])
    if _same_directions(got, _unit(means)):
        return ("those are the class means themselves: subtract the mean of the other prompts, or every "
                "direction is mostly the activation's common part")
    for pos in range(batch.tokens.shape[1]):
        if pos != site.pos and _same_directions(got, _diff_in_means(cache[site.hook][:, pos], labels, tgt.n_values)):
            return f"that is read at position {pos}: the target's site is position {site.pos} (target.site.pos)"
    for hook in ("hook_embed", "blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_mid",
                 "blocks.1.hook_resid_post"):
        if hook != site.hook and hook in cache and \
                _same_directions(got, _diff_in_means(cache[hook][:, site.pos], labels, tgt.n_values)):
            return f"that is read at {hook}: the steer acts at the target's hook, {site.hook} (target.site.hook)"
    return None


@exercise("steering.diff_in_means", "A difference-in-means vector", "implement", "easy", 15,
          hint="_, cache = model.run_with_cache(batch.tokens); x = cache[target.site.hook][:, target.site.pos]; "
               "labels = target.read(batch.tokens); for each value v: x[labels == v].mean(0) - "
               "x[labels != v].mean(0); stack them and divide each row by its norm")
def _check_diff_in_means(fn) -> str:
    zm, tgt = _zm(), _target()
    for n, seed in ((512, CHECK_SEED), (256, CHECK_SEED + 1)):
        batch = tgt.sample(n, seed)
        with torch.no_grad():
            want = methods.fit_steer(zm.model, tgt, "diff-in-means", n=n, seed=seed).vectors  # [value, d]
            got = call(fn, zm.model, tgt, batch)
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"expected a tensor [n_values, d] = {list(want.shape)}, got {type(got).__name__}")
        if got.shape != want.shape:
            transposed = got.shape == want.T.shape
            raise Wrong(f"expected shape {tuple(want.shape)} (one direction per value of the relation), got "
                        f"{tuple(got.shape)}", "one row per value: stack the directions along dim 0" if transposed
                        else None)
        got = got.detach().float()
        cosine = F.cosine_similarity(got, want, dim=-1)  # [value]
        if (cosine < COSINE).any():
            worst = int(cosine.argmin())
            with torch.no_grad():
                hint = _diff_in_means_mistake(got, zm.model, tgt, batch)
            raise Wrong(f"{n} prompts: the direction for r{worst} has cosine {float(cosine[worst]):.3f} with "
                        "fit_steer(model, target, 'diff-in-means')'s", hint)
        norms = got.norm(dim=-1)
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
            raise Wrong(f"the directions are right, but their norms are {[round(float(v), 3) for v in norms]}: a "
                        "steer's strength is alpha x the activation's mean norm, so the directions must be unit "
                        "vectors", "divide each row by its norm: d / d.norm(dim=-1, keepdim=True)")
    return ("your directions match fit_steer(model, target, 'diff-in-means').vectors (cosine > 0.999, unit "
            "norm) on two sets of prompts: DiffMean in AxBench, contrastive activation addition in Rimsky et al.")


# ---- 11.2 ----------------------------------------------------------------------------------


def _steered_answers(model, tgt, steer, batch, strength: float, positions: str | None = None,
                     goals: torch.Tensor | None = None) -> torch.Tensor:
    """The steered model's answer on each prompt ([batch]): steer.vectors[goal] added ``strength`` times."""
    goals = tgt.goal(tgt.read(batch.tokens)) if goals is None else goals
    with steered(model, steer.site.hook, steer.vectors[goals], strength,
                 positions=str(steer.site.pos) if positions is None else positions):
        return model(batch.tokens)[:, _answer_pos()].argmax(-1)


def _success_neighbours(model, tgt, steer, batch, alpha: float) -> list[tuple[float, str]]:
    """What a wrong ``steer_success`` may have computed, with what to say about it."""
    a = _answer_pos()
    want, clean = tgt.expected(batch)[:, a], batch.targets[:, a]
    changed = want != clean
    steered_answers = _steered_answers(model, tgt, steer, batch, alpha * steer.scale)

    def success(answers: torch.Tensor) -> float:
        return float((answers == want)[changed].float().mean())

    return [
        (success(_steered_answers(model, tgt, steer, batch, alpha)),
         "the strength is alpha times steer.scale (the activation's mean norm): alpha alone is in the wrong units"),
        (float((steered_answers == want).float().mean()),
         "that is over every prompt: success counts only the prompts whose answer should change"),
        (float((steered_answers != clean)[changed].float().mean()),
         "that counts answers that changed at all: success is the answer the algorithm says, table[subject, r1]"),
        (success(_steered_answers(model, tgt, steer, batch, alpha * steer.scale, positions="all")),
         "that steers every position: add the vector at the target's position only, positions=str(steer.site.pos)"),
        (success(_steered_answers(model, tgt, steer, batch, alpha * steer.scale, goals=torch.ones_like(want))),
         "that adds the r1 direction whatever the target: each prompt's goal is target.goal(target.read(tokens))"),
    ]


@exercise("steering.success", "Steer, and grade it", "implement", "medium", 15,
          hint="goals = target.goal(target.read(batch.tokens)); within `with steered(model, steer.site.hook, "
               "steer.vectors[goals], alpha * steer.scale, positions=str(steer.site.pos)):` run the model; compare "
               "the answers at the answer position with target.expected(batch) there, on the prompts whose expected "
               "answer differs from batch.targets")
def _check_success(fn) -> str:
    zm = _zm()
    batch = _target().sample(N, CHECK_SEED + 2)
    cases = [(1, 0.5), (1, 1.0), (1, 4.0), (3, 1.0)]  # (relation steered to, alpha)
    for relation, alpha in cases:
        tgt = _target(relation)
        with torch.no_grad():
            steer = methods.fit_steer(zm.model, tgt, "diff-in-means", n=512, seed=CHECK_SEED)
            score = methods.score_steer(zm.model, tgt, steer, batch, alpha)
            got = number(call(fn, zm.model, tgt, steer, batch, alpha), f"steer_success(..., alpha={alpha})")
        if abs(got - score.success) > 1.01 / score.n_changed:  # one prompt's argmax may tie differently
            with torch.no_grad():
                neighbours = _success_neighbours(zm.model, tgt, steer, batch, alpha)
            hint = next((says for value, says in neighbours if abs(got - value) < 1e-6), None)
            raise Wrong(f"{tgt.name}, alpha {alpha}: got {got:.4f}, score_steer gives {score.success:.4f} "
                        f"({score.n_changed} of {len(batch.tokens)} prompts should change their answer)", hint)
    return (f"your success matches methods.score_steer(...).success at {len(cases)} strengths and two targets "
            "(relation := r1 and r3)")


# ---- 11.3 ----------------------------------------------------------------------------------


def _attribute(item: Any, names: list[str]) -> int:
    if isinstance(item, torch.Tensor) and item.numel() == 1:
        item = item.item()
    if isinstance(item, str) and item in names:
        return names.index(item)
    if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(names):
        return item
    raise Wrong(f"{item!r} is not an attribute: answer with indices 0 .. {len(names) - 1} or names such as "
                f"{names[0]!r}")


@exercise("steering.predict", "Predict the steered answers", "answer", "easy", 10,
          hint="the algorithm's answer once relation := r1 is table[subject, 1]: "
               "target.expected(batch)[:, 3], or algorithm.assign(batch, 'relation', torch.full((n,), 1))[:, 3], "
               "or task.table[subjects, 1]")
def _check_predict(answer) -> str:
    zm, tgt = _zm(), _target()
    task, names = zm.task, zm.task.output_names
    if isinstance(answer, torch.Tensor):
        answer = answer.tolist()
    if isinstance(answer, (str, bytes)) or not isinstance(answer, (list, tuple)):
        raise Wrong(f"answer with a list of {len(PREDICT_PROMPTS)} attributes, one per prompt, got {answer!r}")
    if len(answer) != len(PREDICT_PROMPTS):
        raise Wrong(f"{len(answer)} answers for {len(PREDICT_PROMPTS)} prompts")
    got = [_attribute(item, names) for item in answer]
    subjects, relations = (torch.tensor(column) for column in zip(*PREDICT_PROMPTS))
    batch = task.make_batch(subjects, relations)
    want = tgt.expected(batch)[:, _answer_pos()].tolist()
    clean = batch.targets[:, _answer_pos()].tolist()
    if got != want:
        if got == clean:
            raise Wrong("those are the answers before the steer: the relation each prompt asks for, not r1")
        if all(g == 1 for g in got):
            raise Wrong("relation r1 is not attribute a1: the steer sets the relation, and the answer becomes the "
                        "subject's attribute for r1")
        i = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
        s, r = PREDICT_PROMPTS[i]
        for other in range(task.n_relations):
            if got[i] == int(task.table[s, other]) and other != 1:
                raise Wrong(f"prompt {i} (s{s}, asking for r{r}): {names[got[i]]} is s{s}'s attribute for r{other}, "
                            "not for r1")
        raise Wrong(f"prompt {i} (s{s}, asking for r{r}): {names[got[i]]} is not what the algorithm says")
    kept = [i for i, (_, r) in enumerate(PREDICT_PROMPTS) if r == 1]
    return (f"{[names[w] for w in want]}: table[subject, r1]. Prompt{'s' if len(kept) > 1 else ''} "
            f"{', '.join(map(str, kept))} already ask{'' if len(kept) > 1 else 's'} for r1: a steer must leave that "
            "answer alone (preservation), and grading needs no judge: the algorithm says what every answer must be")


# ---- 11.4 ----------------------------------------------------------------------------------


def _class_means(model, tgt, batch, site) -> torch.Tensor:
    x = activations(model, batch.tokens, site)  # [batch, d]
    labels = tgt.read(batch.tokens)
    return torch.stack([x[labels == v].mean(0) for v in range(tgt.n_values)])  # [value, d]


def _set_neighbours(model, tgt, fit_batch, batch, site) -> list[tuple[torch.Tensor, str]]:
    means = _class_means(model, tgt, fit_batch, site)  # [value, d]
    goals = tgt.goal(tgt.read(batch.tokens))

    def run(vectors: torch.Tensor, mode: str, positions: str = str(site.pos)) -> torch.Tensor:
        with steered(model, site.hook, vectors, 1.0, positions=positions, head=site.head, mode=mode):
            return model(batch.tokens)

    overall = activations(model, fit_batch.tokens, site).mean(0)
    neighbours = [
        (model(batch.tokens), "those are the unsteered model's logits: run the model inside the steer"),
        (run(means[goals], "add"), "that adds the value's mean to the activation: set it (mode='set') instead"),
        (run(overall.expand_as(means[goals]), "set"),
         "that sets the mean of every fitting prompt: take the mean of those where the relation is the goal"),
        (run(means[goals], "set", "all"), "that sets every position: only the site's, positions=str(site.pos)"),
    ]
    for head in range(model.cfg.n_heads) if site.head is not None else ():
        if head != site.head:
            other = _class_means(model, tgt, fit_batch, methods.Site(site.hook, site.pos, head))
            says = f"those are the means of head {head}'s output: take site.head's slice of the activation"
            neighbours.append((run(other[goals], "set"), says))
    return neighbours


@exercise("steering.set_steer", "Set, don't add", "implement", "medium", 20,
          hint="x = the activation at site on fit_batch (cache[site.hook][:, site.pos], then [:, site.head] if the "
               "site has a head); means = one mean per value of target.read(fit_batch.tokens); within `with "
               "steered(model, site.hook, means[target.goal(target.read(batch.tokens))], 1.0, "
               "positions=str(site.pos), head=site.head, mode='set'):` return model(batch.tokens)")
def _check_set_steer(fn) -> str:
    zm, tgt = _zm(), _target()
    fit_batch, batch = tgt.sample(512, CHECK_SEED), tgt.sample(128, CHECK_SEED + 3)
    goals = tgt.goal(tgt.read(batch.tokens))
    with torch.no_grad():
        truth = methods.fit_steer(zm.model, tgt, "truth", n=512, seed=CHECK_SEED)
        whole = methods.Steer("class means", tgt.site, "set", _class_means(zm.model, tgt, fit_batch, tgt.site), 1.0)
    for steer, what in ((truth, "the truth's component"), (whole, "the target's site, the whole vector")):
        with torch.no_grad():
            with methods.apply_steer(zm.model, steer, goals, 1.0):
                want = zm.model(batch.tokens)  # [batch, pos, d_vocab_out]
            got = call(fn, zm.model, tgt, fit_batch, batch, steer.site)
            hint = None
            if isinstance(got, torch.Tensor) and got.shape == want.shape:
                hint = next((says for logits, says in _set_neighbours(zm.model, tgt, fit_batch, batch, steer.site)
                             if torch.allclose(got.detach().float(), logits, atol=1e-4)), None)
        expect_close(got, want, f"{what}, {steer.site}", atol=1e-4,
                     hint=hint or "return the logits [batch, pos, d_vocab_out] of the steered run")
    return ("your set steer matches methods.apply_steer with fit_steer(model, target, 'truth') at the truth's "
            "component, and the same steer on the whole residual vector")


# ---- 11.5 ----------------------------------------------------------------------------------


@cache
def _comparison() -> methods.SteeringComparison:
    zm = zoo_model(COMPARE_MODEL)
    tgt = target(zm)
    with torch.no_grad():  # DAS fitted on its own pairs, as fit_steer's default does (seed 3 * seed)
        return methods.compare_steering(zm.model, tgt, SOURCES, seeds=(CHECK_SEED,), n_fit=n_fit(COMPARE_MODEL),
                                        n=N, sae_steps=SAE_STEPS, das_config=das_config(tgt, 3 * CHECK_SEED))


def _success(source: str) -> float:
    return _comparison().summary(source)["success"][0]


@exercise("steering.strong_sources", "Which steers work?", "answer", "medium", 10,
          hint="methods.compare_steering(model, target, sources, seeds=(0,), n_fit=512, n=256, sae_steps=300, "
               "das_config=das_config(target)) on brackets-siit; keep the sources whose held-out success "
               "(comparison.summary(source)['success'][0]) is at least 0.9")
def _check_strong_sources(answer) -> str:
    if isinstance(answer, str) or not hasattr(answer, "__iter__"):
        raise Wrong(f"answer with a set of sources, among {list(SOURCES)}; got {answer!r}")
    got = set(answer)
    if unknown := sorted(str(s) for s in got - set(SOURCES)):
        raise Wrong(f"{unknown[0]!r} is not a direction source; the sources are {list(SOURCES)}")
    comparison = _comparison()
    modes = {source: results[0].mode for source, results in comparison.results.items()}
    want = {source for source in SOURCES if _success(source) >= SUCCESS_BAR}
    for source in sorted(got - want):
        raise Wrong(f"{source} ({modes[source]} steer) reaches a success of {_success(source):.2f} on the checker's "
                    f"prompts, below {SUCCESS_BAR}")
    for source in sorted(want - got):
        raise Wrong(f"you left out {source} ({modes[source]} steer): its success is {_success(source):.2f} on the "
                    "checker's prompts")
    kinds = sorted({modes[s] for s in want})
    return (f"{', '.join(sorted(want))} ({' and '.join(kinds)} steers, success "
            f"{', '.join(f'{_success(s):.2f}' for s in sorted(want))}; the additive ones reach at most "
            f"{max(_success(s) for s in SOURCES if s not in want):.2f}). Every prompt needs its balance moved to 0 "
            "from wherever it is: a setting steer does that, one added vector moves every prompt by the same amount")
