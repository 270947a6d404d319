"""Lesson 12 (editing facts): it runs end to end with its solutions, and each checker rejects the mistakes a learner
makes, with a reason and a hint. Right answers are computed here from the table, the truth and toylab's methods."""

import copy

import pytest
import torch
from wrong_answers import wrong_answer_tests

from toylab import methods, zoo
from toylab.lessons import check, lesson_fixtures, load
from toylab.methods import key_second_moment

FIXTURES = lesson_fixtures("editing")
SPLIT = zoo.load(FIXTURES.SPLIT_MODEL)
PREDICT = FIXTURES.first_edit(SPLIT.task)


@pytest.fixture(autouse=True)
def no_grad():
    """As in the lessons, which turn gradients off."""
    with torch.no_grad():
        yield


def test_the_fixtures_read_the_stores_off_the_truth():
    fr = zoo.load(FIXTURES.MODEL)
    assert {FIXTURES.stored_layer(fr, s) for s in range(fr.task.n_subjects)} == {0}
    boundary = SPLIT.algorithm.boundary
    assert [FIXTURES.stored_layer(SPLIT, s) for s in (0, boundary - 1, boundary, SPLIT.task.n_subjects - 1)] == \
        [0, 0, 1, 1]
    for per_half in (1, FIXTURES.PER_HALF):  # one from each store in the lesson's fast mode
        facts = FIXTURES.split_facts(SPLIT, per_half)
        assert [FIXTURES.stored_layer(SPLIT, e.subject) for e in facts] == [0] * per_half + [1] * per_half
        assert all(e.attribute != int(SPLIT.task.table[e.subject, e.relation]) for e in facts)
    assert FIXTURES.split_facts(SPLIT, 1) == FIXTURES.split_facts(SPLIT)[::FIXTURES.PER_HALF]  # the first of each


def test_rome_delta_is_the_change_rome_makes_at_the_key_rome_reads():
    """W_out + dW sends k* to W_out^T k* + delta: the delta the fixture hands out is the change
    ROME's edit makes to MLP0's output on the edit prompt."""
    fr = zoo.load(FIXTURES.MODEL)
    edit = FIXTURES.first_edit(fr.task)
    result, delta = FIXTURES.rome_delta(fr.model, fr.task, edit, 0)
    assert delta.dtype == torch.float64 and delta.shape == (fr.model.cfg.d_model,)
    tokens, hook = FIXTURES.edit_prompt(fr.task, edit), "blocks.0.hook_mlp_out"
    before = fr.model.run_with_cache(tokens, names=[hook])[1][hook][0, 2]
    after = result.model.run_with_cache(tokens, names=[hook])[1][hook][0, 2]
    assert torch.allclose((after - before).double(), delta, atol=1e-4)
    assert torch.allclose(result.info["key"].float(), methods.mlp_keys(fr.model, tokens, 0)[0])


def test_copy_model_is_an_independent_copy():
    clone = FIXTURES.copy_model(SPLIT.model)
    tokens = SPLIT.task.all_facts().tokens
    assert torch.equal(clone(tokens), SPLIT.model(tokens))
    clone.blocks[0].mlp.W_out += 1.0
    assert not torch.equal(clone.blocks[0].mlp.W_out, SPLIT.model.blocks[0].mlp.W_out)


# ---- mistakes in the implementations ---------------------------------------------------------


def _key(model, task, edit, layer, hook="hook_post", pos=2, form=0):
    tokens = task.make_batch(torch.tensor([edit.subject]), torch.tensor([edit.relation]), torch.tensor([form])).tokens
    name = f"blocks.{layer}.mlp.{hook}" if hook != "hook_mlp_out" else f"blocks.{layer}.hook_mlp_out"
    return model.run_with_cache(tokens, names=[name])[1][name][0, pos]


def key_pre_activation(model, task, edit, layer):
    return _key(model, task, edit, layer, "hook_pre")


def key_at_answer(model, task, edit, layer):
    return _key(model, task, edit, layer, pos=3)


def key_mlp_out(model, task, edit, layer):
    return _key(model, task, edit, layer, "hook_mlp_out")


def key_layer0_always(model, task, edit, layer):
    return _key(model, task, edit, 0)


def key_mean_over_forms(model, task, edit, layer):
    return torch.stack([_key(model, task, edit, layer, form=f) for f in range(task.n_forms)]).mean(0)


def key_batch_of_one(model, task, edit, layer):
    return _key(model, task, edit, layer)[None]


def _keys(model, tokens, layer, hook="hook_post"):
    name = f"blocks.{layer}.mlp.{hook}"
    return model.run_with_cache(tokens, names=[name])[1][name][:, 2].double()


def moment_covariance(model, task, layer):
    keys = _keys(model, task.all_facts().tokens, layer)
    keys = keys - keys.mean(0)
    return keys.T @ keys / len(keys)


def moment_sum(model, task, layer):
    keys = _keys(model, task.all_facts().tokens, layer)
    return keys.T @ keys


def moment_form0(model, task, layer):
    keys = _keys(model, task.all_facts(0).tokens, layer)
    return keys.T @ keys / len(keys)


def moment_pre(model, task, layer):
    keys = _keys(model, task.all_facts().tokens, layer, "hook_pre")
    return keys.T @ keys / len(keys)


def _ridged(C):
    return C + methods.EditConfig().ridge * C.diagonal().mean() * torch.eye(len(C), dtype=C.dtype)


def _apply(model, layer, update, in_place=False):
    edited = model if in_place else copy.deepcopy(model)
    edited.blocks[layer].mlp.W_out += update.float()
    return edited


def edit_in_place(model, layer, k, C, delta):  # right update, but on the model given
    c = torch.linalg.solve(_ridged(C), k)
    return _apply(model, layer, torch.outer(c, delta) / (k @ c), in_place=True)


def edit_without_c(model, layer, k, C, delta):
    return _apply(model, layer, torch.outer(k, delta) / (k @ k))


def edit_unnormalised(model, layer, k, C, delta):
    return _apply(model, layer, torch.outer(torch.linalg.solve(_ridged(C), k), delta))


def edit_sign_flipped(model, layer, k, C, delta):
    c = torch.linalg.solve(_ridged(C), k)
    return _apply(model, layer, -torch.outer(c, delta) / (k @ c))


def edit_without_ridge(model, layer, k, C, delta):  # C is singular on factual-recall: solve raises
    c = torch.linalg.solve(C, k)
    return _apply(model, layer, torch.outer(c, delta) / (k @ c))


def edit_nothing(model, layer, k, C, delta):
    return copy.deepcopy(model)


def edit_returns_update(model, layer, k, C, delta):
    c = torch.linalg.solve(_ridged(C), k)
    return torch.outer(c, delta) / (k @ c)


def _score(original, edited, task, edit, efficacy_all_forms=False, same_subject=False, knew_only=True, form0=False):
    everything = task.all_facts()
    v = task.variables(everything.tokens)
    answer = everything.targets[:, -1]
    after = edited(everything.tokens)[:, -1].argmax(-1)
    fact = (v["subject"] == edit.subject) & (v["relation"] == edit.relation)
    rows = fact if efficacy_all_forms else fact & (v["form"] == 0)
    efficacy = float((after[rows] == edit.attribute).float().mean())
    keep = ~fact if same_subject else v["subject"] != edit.subject
    if knew_only:
        keep &= original(everything.tokens)[:, -1].argmax(-1) == answer
    if form0:
        keep &= v["form"] == 0
    return efficacy, float((after[keep] == answer[keep]).float().mean())


def score_efficacy_every_form(original, edited, task, edit):
    return _score(original, edited, task, edit, efficacy_all_forms=True)


def score_with_same_subject(original, edited, task, edit):
    return _score(original, edited, task, edit, same_subject=True)


def score_without_filter(original, edited, task, edit):
    return _score(original, edited, task, edit, knew_only=False)


def score_form0(original, edited, task, edit):
    return _score(original, edited, task, edit, form0=True)


def score_swapped(original, edited, task, edit):
    return tuple(reversed(_score(original, edited, task, edit)))


def score_dict(original, edited, task, edit):
    efficacy, specificity = _score(original, edited, task, edit)
    return {"efficacy": efficacy, "specificity": specificity}


# ---- mistakes in the answers ------------------------------------------------------------------


def _prediction(**changes):
    task, e = SPLIT.task, PREDICT
    right = {"form_2": e.attribute, "other_relation": int(task.table[e.subject, (e.relation + 1) % task.n_relations]),
             "other_subject": int(task.table[(e.subject + 1) % task.n_subjects, e.relation])}
    return {**right, **changes}


def _localisation(**changes):
    result = load("editing")._localisation()
    pairs = [(a, b) for a in (0, 1) for b in (0, 1)]
    mean_s = {pair: result.mean_edit_score(*pair) for pair in pairs}
    right = {"trace_peak": {0: 0, 1: 1}, "mean_S": mean_s,
             "other_layer_works": min(mean_s[(0, 1)], mean_s[(1, 0)]) >= FIXTURES.WORKS}
    return {**right, **changes}


def _localisation_swapped_keys():
    right = _localisation()["mean_S"]
    return _localisation(mean_S={(a, b): right[(b, a)] for a, b in right})


class Lazy:
    """An answer made when its test runs, not when the tests are collected (the checker's comparison of tracing
    with editing takes seconds, and every worker collects every test)."""

    def __init__(self, name, make):
        self.__name__, self.make = name, make


def made(answer):
    return answer.make() if isinstance(answer, Lazy) else answer


OLD = int(SPLIT.task.table[PREDICT.subject, PREDICT.relation])
WRONG = {
    "editing.key": [key_pre_activation, key_at_answer, key_mlp_out, key_layer0_always, key_mean_over_forms,
                    key_batch_of_one, "not a function"],
    "editing.key_moment": [moment_covariance, moment_sum, moment_form0, moment_pre, "not a function"],
    "editing.rank_one": [edit_in_place, edit_without_c, edit_unnormalised, edit_sign_flipped, edit_without_ridge,
                         edit_nothing, edit_returns_update, "not a function"],
    "editing.score": [score_efficacy_every_form, score_with_same_subject, score_without_filter, score_form0,
                      score_swapped, score_dict, "not a function"],
    "editing.predict": [_prediction(form_2=OLD), _prediction(other_relation=PREDICT.attribute),
                        _prediction(other_subject=PREDICT.attribute),
                        _prediction(other_relation=(_prediction()["other_relation"] + 1) % SPLIT.task.n_attributes),
                        _prediction(form_2=99), {"form_2": PREDICT.attribute}, "garbage"],
    "editing.localisation": [
        Lazy("peaks_swapped", lambda: _localisation(trace_peak={0: 1, 1: 0})),
        Lazy("peaks_both_mlp0", lambda: _localisation(trace_peak={0: 0, 1: 0})),
        Lazy("mean_s_keys_swapped", _localisation_swapped_keys),
        Lazy("mean_s_all_half", lambda: _localisation(mean_S={pair: 0.5 for pair in _localisation()["mean_S"]})),
        Lazy("other_layer_works_negated",
             lambda: _localisation(other_layer_works=not _localisation()["other_layer_works"])),
        Lazy("other_layer_works_yes", lambda: _localisation(other_layer_works="yes")),
        {"trace_peak": {0: 0, 1: 1}}, "garbage"],
}


(test_wrong_answers_are_rejected_with_a_message_and_a_hint,
 test_every_exercise_of_the_lesson_has_wrong_answers_under_test) = wrong_answer_tests("editing", WRONG, prepare=made)


@pytest.mark.parametrize("ex_id,mistake,says", [
    ("editing.key", key_pre_activation, "hook_pre"),
    ("editing.key", key_at_answer, "answer position"),
    ("editing.key", key_mlp_out, "d_model"),
    ("editing.key", key_layer0_always, "MLP0's key"),
    ("editing.key", key_mean_over_forms, "form-0"),
    ("editing.key_moment", moment_covariance, "covariance"),
    ("editing.key_moment", moment_sum, "sum"),
    ("editing.key_moment", moment_form0, "form 0 only"),
    ("editing.key_moment", moment_pre, "hook_pre"),
    ("editing.rank_one", edit_in_place, "copy.deepcopy"),
    ("editing.rank_one", edit_without_c, "ignores C"),
    ("editing.rank_one", edit_unnormalised, "divide by"),
    ("editing.rank_one", edit_sign_flipped, "sign"),
    ("editing.rank_one", edit_nothing, "unchanged"),
    ("editing.score", score_efficacy_every_form, "generalisation"),
    ("editing.score", score_with_same_subject, "same subject"),
    ("editing.score", score_without_filter, "answers right"),
    ("editing.score", score_form0, "every form"),
    ("editing.score", score_swapped, "order"),
    ("editing.predict", _prediction(form_2=OLD), "old answer"),
    ("editing.predict", _prediction(other_relation=PREDICT.attribute), "not the subject"),
    ("editing.predict", _prediction(other_subject=PREDICT.attribute), "specificity"),
    ("editing.localisation", Lazy("mean_s_keys_swapped", _localisation_swapped_keys), "(stored, edited)"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_the_common_mistakes_are_named(ex_id, mistake, says):
    """A learner who computed the neighbouring quantity is told which one it was."""
    feedback = check(ex_id, made(mistake))
    assert not feedback.passed and says in f"{feedback.message} {feedback.hint}", feedback


def test_the_rank_one_checker_keeps_the_shared_model_intact():
    """A learner's edit in place changes the checker's copy, never the cached zoo model the other checks use."""
    checks = load("editing")
    model = checks._zm(FIXTURES.MODEL).model
    before = model.blocks[0].mlp.W_out.clone()
    assert not check("editing.rank_one", edit_in_place).passed
    assert torch.equal(model.blocks[0].mlp.W_out, before)


def test_the_reference_functions_and_right_answers_pass():
    """toylab's own functions, written as a learner would call them, pass; so do answers read off the table."""
    def read_key(model, task, edit, layer):
        return methods.mlp_keys(model, FIXTURES.edit_prompt(task, edit), layer)[0]

    def rank_one(model, layer, k, C, delta):
        c = torch.linalg.solve(_ridged(C), k)
        return _apply(model, layer, torch.outer(c, delta) / (k @ c))

    def scores(original, edited, task, edit):
        s = methods.score_edits(original, edited, task, [edit])
        return s.efficacy, s.specificity

    assert check("editing.key", read_key).passed
    assert check("editing.key_moment", key_second_moment).passed
    assert check("editing.rank_one", rank_one).passed
    assert check("editing.score", scores).passed
    assert check("editing.predict", _prediction()).passed
    assert check("editing.predict", {k: f"a{v}" for k, v in _prediction().items()}).passed  # "a3" reads as 3
    assert check("editing.localisation", _localisation()).passed
