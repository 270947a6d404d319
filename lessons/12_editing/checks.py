"""Checkers for lesson 12, editing facts: implementations are compared with toylab.methods.editing on the checker's
own edits (never the lesson's); answers are checked against the task's table, the stores the truth declares and
the measured comparison of tracing with editing."""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

from toylab import methods
from toylab.lessons.checking import call, expect_close, number, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.methods import FactEdit

from .fixtures import (
    MODEL,
    N_NOISE,
    SPLIT_MODEL,
    WORKS,
    copy_model,
    edit_prompt,
    first_edit,
    rome_delta,
    split_facts,
    stored_layer,
)

CHECK_SEED = 10  # the checker's edits, never the lesson's (seed 0)
LAYERS = (0, 1)  # the two stores of factual-recall-split


def _zm(name: str):
    return zoo_model(name)


@cache
def _edit(name: str, stored_in: int | None = None, seed: int = CHECK_SEED) -> FactEdit:
    """The checker's edit on the zoo model ``name``, of a fact stored in MLP ``stored_in`` if given."""
    zm = _zm(name)
    drawn = methods.random_edits(zm.task, zm.task.n_facts, seed=seed)
    if stored_in is None:
        return drawn[0]
    return next(e for e in drawn if stored_layer(zm, e.subject) == stored_in)


def _hook(layer: int, name: str = "hook_post") -> str:
    return f"blocks.{layer}.mlp.{name}" if name != "hook_mlp_out" else f"blocks.{layer}.hook_mlp_out"


def _acts(model, tokens: torch.Tensor, hook: str) -> torch.Tensor:
    """[batch, pos, width] at ``hook``."""
    with torch.no_grad():
        return model.run_with_cache(tokens, names=[hook])[1][hook]


def _same(got: Any, want: torch.Tensor, atol: float = 1e-5) -> bool:
    return (isinstance(got, torch.Tensor) and got.shape == want.shape
            and torch.allclose(got.detach().to(want.dtype), want, atol=atol, rtol=1e-4))


# ---- 12.1 ----------------------------------------------------------------------------------


def _key_mistake(got: Any, model, task, edit: FactEdit, layer: int) -> str | None:
    """Which neighbouring quantity a wrong ``read_key`` returned."""
    if not isinstance(got, torch.Tensor):
        return None
    subject, answer = task.positions["subject"], task.positions["answer"]
    tokens = edit_prompt(task, edit)
    if got.shape[-1] == model.cfg.d_model and got.shape[-1] != model.cfg.d_mlp:
        return "that has d_model entries: the key is the neurons' activation, blocks.{layer}.mlp.hook_post [d_mlp]"
    if got.dim() == 2 and got.shape[0] == 1:
        return "return one key, [d_mlp], not a batch of one"
    if _same(got, _acts(model, tokens, _hook(layer, "hook_pre"))[0, subject]):
        return "that is the pre-activation (hook_pre): the key is what the neurons output, after the ReLU (hook_post)"
    if _same(got, _acts(model, tokens, _hook(layer))[0, answer]):
        return "that is read at the answer position '=': the key is at the subject's position"
    if layer != 0 and _same(got, _acts(model, tokens, _hook(0))[0, subject]):
        return "that is MLP0's key: read the layer you are given"
    if task.n_forms > 1:
        forms = torch.arange(task.n_forms)
        every = task.make_batch(torch.full_like(forms, edit.subject), torch.full_like(forms, edit.relation), forms)
        if _same(got, _acts(model, every.tokens, _hook(layer))[:, subject].mean(0)):
            return "that averages the prompt forms: the edit is made with the form-0 prompt"
    return None


@exercise("editing.key", "Read the key", "implement", "easy", 5,
          hint="tokens = task.make_batch(torch.tensor([edit.subject]), torch.tensor([edit.relation])).tokens; "
               "run_with_cache with names=[f'blocks.{layer}.mlp.hook_post'] and read [0, task.positions['subject']]")
def _key(fn) -> str:
    cases = [(MODEL, _edit(MODEL), 0), (SPLIT_MODEL, _edit(SPLIT_MODEL, 0), 0), (SPLIT_MODEL, _edit(SPLIT_MODEL, 1), 1)]
    for name, edit, layer in cases:
        zm = _zm(name)
        with torch.no_grad():
            want = methods.mlp_keys(zm.model, edit_prompt(zm.task, edit), layer)[0]  # [d_mlp]
            got = call(fn, zm.model, zm.task, edit, layer)
        expect_close(got, want, f"{name}, MLP{layer}, the edit {edit}", atol=1e-5,
                     hint=_key_mistake(got, zm.model, zm.task, edit, layer)
                     or "return [d_mlp]: blocks.{layer}.mlp.hook_post at the subject position, form 0")
    return f"your keys match the ones ROME reads, on {len(cases)} edits of both models and both stores"


# ---- 12.2 ----------------------------------------------------------------------------------


def _moment_mistake(got: Any, model, task, layer: int) -> str | None:
    """Which neighbouring quantity a wrong ``key_moment`` returned."""
    if not isinstance(got, torch.Tensor) or got.shape != (model.cfg.d_mlp, model.cfg.d_mlp):
        return None
    subject = task.positions["subject"]
    keys = _acts(model, task.all_facts().tokens, _hook(layer))[:, subject].double()  # [fact * form, d_mlp]
    centred = keys - keys.mean(0)
    form0 = _acts(model, task.all_facts(0).tokens, _hook(layer))[:, subject].double()
    pre = _acts(model, task.all_facts().tokens, _hook(layer, "hook_pre"))[:, subject].double()
    neighbours = [
        (centred.T @ centred / len(keys), "that is the covariance: ROME's C is the second moment, keys not centred"),
        (keys.T @ keys, f"that is the sum over the {len(keys)} prompts: take the mean"),
        (pre.T @ pre / len(pre), "those are pre-activations (hook_pre): the keys are after the ReLU (hook_post)"),
    ]
    if task.n_forms > 1:
        neighbours.append((form0.T @ form0 / len(form0),
                           f"that is over form 0 only: every fact in every form, task.all_facts() ({len(keys)} prompts)"))
    for value, says in neighbours:
        if _same(got, value, atol=1e-4):
            return says
    return None


@exercise("editing.key_moment", "The key second moment", "implement", "easy", 10,
          hint="keys = the hook_post activations at the subject position on task.all_facts().tokens, [n, d_mlp]; "
               "return keys.T @ keys / n")
def _key_moment(fn) -> str:
    cases = [(MODEL, 0), (SPLIT_MODEL, 1)]
    for name, layer in cases:
        zm = _zm(name)
        with torch.no_grad():
            want = methods.key_second_moment(zm.model, zm.task, layer)  # [d_mlp, d_mlp], float64
            got = call(fn, zm.model, zm.task, layer)
        expect_close(got, want, f"{name}, MLP{layer}", atol=1e-5,
                     hint=_moment_mistake(got, zm.model, zm.task, layer)
                     or "return [d_mlp, d_mlp]: the mean of k k^T over every prompt of task.all_facts()")
    return "your C matches methods.editing.key_second_moment on both models"


# ---- 12.3 ----------------------------------------------------------------------------------


@cache
def _rome(name: str, layer: int):
    """The checker's edit on the zoo model ``name`` (on factual-recall-split, of a fact stored in MLP ``layer``),
    ROME's edit of it at MLP ``layer`` and the delta ROME optimised: the references of exercises 12.3 and 12.4."""
    zm = _zm(name)
    edit = _edit(name, stored_in=layer if name == SPLIT_MODEL else None)
    return (edit, *rome_delta(zm.model, zm.task, edit, layer))


@cache
def _rank_one_case(name: str, layer: int):
    """The checker's edit stored in MLP ``layer``, ROME's edit of it there, and the inputs of the update."""
    zm = _zm(name)
    edit, reference, delta = _rome(name, layer)
    with torch.no_grad():
        k = methods.mlp_keys(zm.model, edit_prompt(zm.task, edit), layer)[0].double()  # [d_mlp]
    return edit, reference, k, methods.key_second_moment(zm.model, zm.task, layer), delta


def _rank_one_mistake(got_w: torch.Tensor, w: torch.Tensor, k: torch.Tensor, C: torch.Tensor,
                      delta: torch.Tensor) -> str | None:
    """Which neighbouring update a wrong ``rank_one_edit`` added to W_out ([d_mlp, d_model])."""
    ridged = C + methods.EditConfig().ridge * C.diagonal().mean() * torch.eye(len(C), dtype=C.dtype)
    c_inv_k = torch.linalg.solve(ridged, k)
    update = torch.outer(c_inv_k, delta) / (k @ c_inv_k)
    neighbours = [
        (torch.zeros_like(update), "W_out is unchanged: add the update to the copy's blocks[layer].mlp.W_out"),
        (-update, "the sign is flipped: W_out + dW sends k* to v* = W_out^T k* + delta"),
        (torch.outer(k, delta) / (k @ k), "that update ignores C: ROME's direction in key space is C^-1 k*, not k*"),
        (torch.outer(c_inv_k, delta), "divide by k*^T C^-1 k*: without it the output at k* does not change by delta"),
    ]
    try:
        bare = torch.linalg.solve(C, k)
        neighbours.append((torch.outer(bare, delta) / (k @ bare),
                           ("that solves with C itself: add the ridge, EditConfig().ridge * C.diagonal().mean(), "
                            "to its diagonal")))
    except RuntimeError:  # C singular: a learner without the ridge crashed instead
        pass
    for value, says in neighbours:
        if torch.allclose(got_w.double(), w.double() + value.to(w.dtype).double(), atol=1e-5, rtol=1e-4):
            return says
    return None


@exercise("editing.rank_one", "The rank-one edit by hand", "implement", "medium", 15,
          hint="c = torch.linalg.solve(C + r * torch.eye(len(C), dtype=C.dtype), k) with r = EditConfig().ridge * "
               "C.diagonal().mean(); dW = torch.outer(c, delta) / (k @ c); edited = copy_model(model); "
               "edited.blocks[layer].mlp.W_out += dW.float() under torch.no_grad()")
def _rank_one(fn) -> str:
    cases = [(MODEL, 0), (SPLIT_MODEL, 1)]
    for name, layer in cases:
        zm = _zm(name)
        edit, reference, k, C, delta = _rank_one_case(name, layer)
        given = copy_model(zm.model)  # the learner's function gets its own copy: the cached model stays intact
        before = {key: value.clone() for key, value in given.state_dict().items()}
        with torch.no_grad():
            got = call(fn, given, layer, k.clone(), C.clone(), delta.clone())
        what = f"{name}, MLP{layer}, the edit {edit}"
        if got is None or not hasattr(got, "blocks"):
            raise Wrong(f"{what}: expected the edited model, got {type(got).__name__}",
                        "return the edited copy of the model")
        changed = [key for key, value in given.state_dict().items() if not torch.equal(value, before[key])]
        if changed:
            raise Wrong(f"{what}: you changed the model you were given ({changed[0]})",
                        "edit a copy, edited = copy_model(model) (or copy.deepcopy(model)), and return it: ROME "
                        "never changes the model given")
        w_out = f"blocks.{layer}.mlp.W_out"
        others = [key for key, value in got.state_dict().items() if key != w_out and not torch.equal(value, before[key])]
        if others:
            raise Wrong(f"{what}: your edit changed {others[0]} too", "change blocks[layer].mlp.W_out only")
        got_w = got.blocks[layer].mlp.W_out.detach()
        want_w = reference.model.blocks[layer].mlp.W_out.detach()
        expect_close(got_w, want_w, f"{what}: W_out", atol=1e-5,
                     hint=_rank_one_mistake(got_w, zm.model.blocks[layer].mlp.W_out.detach(), k, C, delta))
        with torch.no_grad():
            answer = int(got(edit_prompt(zm.task, edit))[0, -1].argmax())
        if answer != edit.attribute:
            raise Wrong(f"{what}: your edited model answers a{answer}, not a{edit.attribute}")
    return ("your W_out matches methods.rome's given the same delta, and your edited models answer the new attribute: "
            "ROME's edit is this rank-one update, and the optimised delta")


# ---- 12.4 ----------------------------------------------------------------------------------


def _relabelled(zm, edit_of: FactEdit) -> tuple[Any, FactEdit]:
    """A model whose form-0 tokens of relations r and r' trade embeddings, and the edit it then holds: its form-0
    prompt of (s, r) answers table[s, r'], the other forms are untouched (an edit that fails to generalise)."""
    task = zm.task
    s, r = edit_of.subject, edit_of.relation
    other = (r + 1) % task.n_relations
    model = copy_model(zm.model)
    a, b = int(task.relation_token(r, 0)), int(task.relation_token(other, 0))
    with torch.no_grad():
        W_E = model.embed.W_E
        W_E[[a, b]] = W_E[[b, a]].clone()
    return model, FactEdit(s, r, int(task.table[s, other]))


SCORE_CASES = 3


@cache
def _score_case(i: int) -> tuple[str, str, Any, Any, FactEdit]:
    """(what, model name, original, edited, edit), made on first use (a checker that stops at the first case makes
    one edit): 0, a ROME edit; 1, an edit that fails to generalise; 2, an edit of a model that already holds
    another."""
    if i == 0:
        first, result, _ = _rome(MODEL, 0)
        return "a ROME edit of factual-recall", MODEL, _zm(MODEL).model, result.model, first
    split = _zm(SPLIT_MODEL)
    if i == 1:
        relabelled, swapped = _relabelled(split, _edit(SPLIT_MODEL, 1))
        return "a relabelled relation token (form 0 only)", SPLIT_MODEL, split.model, relabelled, swapped
    held, holding, _ = _rome(SPLIT_MODEL, 1)  # a fact of MLP1, edited there
    holding = holding.model
    second = next(e for e in methods.random_edits(split.task, 8, seed=CHECK_SEED + 1) if e.subject != held.subject)
    return ("a MEMIT edit of a model already holding another edit", SPLIT_MODEL, holding,
            methods.memit(holding, split.task, [second], (0, 1)).model, second)


@torch.no_grad()
def _score_variants(original, edited, task, edit: FactEdit) -> dict[str, float]:
    everything = task.all_facts()
    v = task.variables(everything.tokens)
    answer = everything.targets[:, -1]
    before = original(everything.tokens)[:, -1].argmax(-1)
    after = edited(everything.tokens)[:, -1].argmax(-1)
    fact = (v["subject"] == edit.subject) & (v["relation"] == edit.relation)
    other, knew, still = v["subject"] != edit.subject, before == answer, after == answer

    def share(mask: torch.Tensor) -> float:
        return float(still[mask].float().mean())

    return {"efficacy over every form": float((after[fact] == edit.attribute).float().mean()),
            "specificity with the same subject": share((fact.logical_not()) & knew),
            "specificity without the filter": share(other),
            "specificity of form 0": share(other & knew & (v["form"] == 0))}


SCORE_MISTAKES = {
    "efficacy over every form": "efficacy is the form-0 prompt alone: the other forms are generalisation",
    "specificity with the same subject": ("specificity counts other subjects only: the edited subject's other "
                                          "relations are CounterFact's 'same subject' figure"),
    "specificity without the filter": "count only the prompts the original model answers right",
    "specificity of form 0": "specificity covers every fact of the other subjects in every form, task.all_facts()",
}


@exercise("editing.score", "Efficacy and specificity", "implement", "medium", 15,
          hint="efficacy: edited(prompt)[0, -1].argmax() == edit.attribute on the form-0 prompt; specificity: on "
               "task.all_facts(), keep the rows of other subjects that original answers right (targets[:, -1]) and "
               "take the share of them that edited answers right")
def _score(fn) -> str:
    for what, name, original, edited, edit in map(_score_case, range(SCORE_CASES)):
        task = _zm(name).task
        with torch.no_grad():
            scores = methods.score_edits(original, edited, task, [edit])
            got = call(fn, copy_model(original), copy_model(edited), task, edit)  # copies: the models are shared
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Wrong(f"{what}: return a pair (efficacy, specificity), got {got!r}")
        efficacy, specificity = number(got[0], "efficacy"), number(got[1], "specificity")
        if abs(efficacy - scores.efficacy) > 1e-6 or abs(specificity - scores.specificity) > 1e-6:
            hint = None
            if abs(efficacy - scores.specificity) < 1e-6 and abs(specificity - scores.efficacy) < 1e-6:
                hint = "the order is (efficacy, specificity)"
            variants = _score_variants(original, edited, task, edit)
            for key, says in SCORE_MISTAKES.items():
                value = efficacy if key.startswith("efficacy") else specificity
                want = scores.efficacy if key.startswith("efficacy") else scores.specificity
                if hint is None and abs(value - want) > 1e-6 and abs(value - variants[key]) < 1e-6:
                    hint = says
            raise Wrong(f"{what}, {name}, the edit {edit}: got efficacy {efficacy:.4f}, specificity {specificity:.4f}; "
                        f"score_edits gives {scores.efficacy:.4f}, {scores.specificity:.4f}", hint)
    return "your figures match methods.score_edits on three edits: one that works, one that fails to generalise, and " \
           "one of a model that already held another edit"


# ---- 12.5 ----------------------------------------------------------------------------------


def _attribute(value: Any, what: str, n: int) -> int:
    if isinstance(value, str) and value.startswith("a") and value[1:].isdigit():
        value = int(value[1:])
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise Wrong(f"{what}: expected an attribute index, an int in [0, {n}), got {value!r}")
    return value


@exercise("editing.predict", "Predict the edited model", "answer", "easy", 5,
          hint="a paraphrase of the edited fact takes the new attribute; every other fact keeps the answer the table "
               "gives it: stask.table[subject, relation]")
def _predict(answer: Any) -> str:
    keys = ("form_2", "other_relation", "other_subject")
    if not isinstance(answer, dict) or set(answer) != set(keys):
        raise Wrong(f"answer with a dict with the keys {keys}, got {answer!r}")
    zm = _zm(SPLIT_MODEL)
    task, edit = zm.task, first_edit(zm.task)
    s, r = edit.subject, edit.relation
    r2, s2 = (r + 1) % task.n_relations, (s + 1) % task.n_subjects
    got = {key: _attribute(answer[key], key, task.n_attributes) for key in keys}
    old = int(task.table[s, r])
    if got["form_2"] != edit.attribute:
        says = ("that is the old answer: the edit changes the fact, and a paraphrase asks the same fact"
                if got["form_2"] == old else f"the edit makes s{s} r{r} answer a{edit.attribute}, in every form")
        raise Wrong(f"form_2: a{got['form_2']}", says + " (generalisation)")
    for key, (subj, rel) in (("other_relation", (s, r2)), ("other_subject", (s2, r))):
        if got[key] != int(task.table[subj, rel]):
            if got[key] == edit.attribute:
                says = ("the edit rewrote one fact, not the subject: its other relations keep their answers (same "
                        "subject)" if key == "other_relation" else "another subject's fact is untouched (specificity)")
            else:
                says = f"a fact the edit did not touch keeps its answer: look s{subj} r{rel} up in stask.table"
            raise Wrong(f"{key}: a{got[key]} is not what the model should answer for s{subj} r{rel}", says)
    return (f"s{s} r{r} in form 2 -> a{edit.attribute} (generalisation), s{s} r{r2} -> a{got['other_relation']} "
            f"(same subject), s{s2} r{r} -> a{got['other_subject']} (specificity): what a perfect edit does, all read "
            "off the table and the edit")


# ---- 12.6 ----------------------------------------------------------------------------------


@cache
def _localisation():
    """The lesson's comparison, recomputed: the same facts, noise and edits."""
    zm = _zm(SPLIT_MODEL)
    facts = split_facts(zm)
    stored = [stored_layer(zm, e.subject) for e in facts]
    return methods.localisation_vs_editing(zm.model, zm.task, facts, layers=LAYERS, stored=stored, n_noise=N_NOISE)


def _layer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in LAYERS:
        raise Wrong(f"{what}: expected an MLP layer, 0 or 1, got {value!r}")
    return value


@exercise("editing.localisation", "Localisation against editing", "answer", "medium", 10,
          hint="where.trace_peak gives each fact's peak layer; where.edit_scores [fact, layer] the S of each edit: "
               "average its column `edited` over the rows of the facts stored in `stored`")
def _localisation_answer(answer: Any) -> str:
    keys = ("trace_peak", "mean_S", "other_layer_works")
    if not isinstance(answer, dict) or set(answer) != set(keys):
        raise Wrong(f"answer with a dict with the keys {keys}, got {answer!r}")
    result = _localisation()
    peaks = result.trace_peak.tolist()
    trace_peak, mean_s = answer["trace_peak"], answer["mean_S"]
    if not isinstance(trace_peak, dict) or set(trace_peak) != set(LAYERS):
        raise Wrong(f"trace_peak: expected {{0: layer, 1: layer}}, one entry per store, got {trace_peak!r}")
    for store in LAYERS:
        got = _layer(trace_peak[store], f"trace_peak[{store}]")
        rows = [i for i, layer in enumerate(result.stored) if layer == store]
        found = {peaks[i] for i in rows}
        if found != {got}:
            traced = "; ".join(f"MLP0 {float(result.trace[i, 0]):.2f}, MLP1 {float(result.trace[i, 1]):.2f}" for i in rows)
            raise Wrong(f"trace_peak[{store}]: restoring MLP{got} is not what brings the answers of the facts stored "
                        f"in MLP{store} back most (fraction restored: {traced})")
    pairs = [(a, b) for a in LAYERS for b in LAYERS]
    if not isinstance(mean_s, dict) or set(mean_s) != set(pairs):
        raise Wrong(f"mean_S: expected a dict with the keys {pairs}, (stored, edited), got {mean_s!r}")
    want = {pair: result.mean_edit_score(*pair) for pair in pairs}
    got_s = {pair: number(mean_s[pair], f"mean_S[{pair}]") for pair in pairs}
    for pair in pairs:
        if abs(got_s[pair] - want[pair]) > 0.01:
            swapped = all(abs(got_s[(a, b)] - want[(b, a)]) <= 0.01 for a, b in pairs)
            raise Wrong(f"mean_S[{pair}]: got {got_s[pair]:.3f}, the facts stored in MLP{pair[0]} edited at "
                        f"MLP{pair[1]} score {want[pair]:.3f} on average",
                        "the keys are (stored, edited): the row is where the fact lives, the column where ROME edits"
                        if swapped else None)
    works = min(want[(0, 1)], want[(1, 0)]) >= WORKS
    if answer["other_layer_works"] is not works:
        raise Wrong(f"other_layer_works: {answer['other_layer_works']!r}; ROME at the layer that does not store the "
                    f"fact scores {want[(0, 1)]:.3f} (facts of MLP0) and {want[(1, 0)]:.3f} (facts of MLP1)",
                    f"answer True or False: are both of mean_S[(0, 1)] and mean_S[(1, 0)] at least {WORKS}?")
    return (f"tracing finds the store for {result.tracing_finds_storage:.0%} of the facts, yet ROME scores "
            f"{want[(0, 1)]:.3f} and {want[(1, 0)]:.3f} at the other layer ({want[(0, 0)]:.3f} and {want[(1, 1)]:.3f} "
            "at the store): localisation says where a fact is, not where it can be edited (Hase et al. 2023)")
