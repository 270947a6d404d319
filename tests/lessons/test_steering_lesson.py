"""Lesson 11 (steering, graded exactly): it runs end to end with its solutions, and each checker rejects the
mistakes a learner makes, with a reason and a hint. What each steered answer must be is the task's algorithm's."""


import pytest
import torch
from wrong_answers import wrong_answer_tests

from toylab import methods, zoo
from toylab.interventions import steered
from toylab.lessons import check, lesson_fixtures, load

FIXTURES = lesson_fixtures("steering")
ZM = zoo.load(FIXTURES.MODEL)
TARGET = FIXTURES.target(ZM)
ANSWER = ZM.task.positions["answer"]


@pytest.fixture(autouse=True)
def no_grad():
    """As in the lessons, which turn gradients off."""
    with torch.no_grad():
        yield


def test_the_fixtures_fit_a_steer_on_every_model():
    """Every value a target aims at occurs among n_fit(name) prompts (modadd-113 aims at all 113 values of a), and
    among the fewer the lesson fits on in fast mode."""
    for name in FIXTURES.MODELS:
        zm = zoo.load(name)
        target = FIXTURES.target(zm)
        assert FIXTURES.n_fit(name, fast=True) <= FIXTURES.n_fit(name)
        for n in {FIXTURES.n_fit(name), FIXTURES.n_fit(name, fast=True)}:
            steer = methods.fit_steer(zm.model, target, "diff-in-means", n=n, seed=0)
            assert steer.vectors.shape[0] == target.n_values
        assert target.truth_steer is not None, f"{name}: the truth's ceiling steer needs the model's truth"
        assert FIXTURES.das_config(target).k == target.das_k
    assert set(FIXTURES.SOURCES) == set(methods.STEER_SOURCES)


def test_the_prompts_to_predict_include_one_whose_answer_must_not_change():
    relations = [r for _, r in FIXTURES.PREDICT_PROMPTS]
    assert 1 in relations and any(r != 1 for r in relations)
    subjects = [s for s, _ in FIXTURES.PREDICT_PROMPTS]
    assert max(subjects) < ZM.task.n_subjects


# ---- mistakes in the implementations ---------------------------------------------------------


def _acts(model, batch, hook, pos):
    _, cache = model.run_with_cache(batch.tokens, names=[hook])
    return cache[hook][:, pos]


def _dim(x, labels, n_values, subtract=True, normalise=True):
    rows = [x[labels == v].mean(0) - (x[labels != v].mean(0) if subtract else 0) for v in range(n_values)]
    d = torch.stack(rows)
    return d / d.norm(dim=-1, keepdim=True) if normalise else d


def dim_sign_flipped(model, target, batch):
    return -_dim(_acts(model, batch, target.site.hook, target.site.pos), target.read(batch.tokens), target.n_values)


def dim_class_means(model, target, batch):  # forgot to subtract the other prompts' mean
    return _dim(_acts(model, batch, target.site.hook, target.site.pos), target.read(batch.tokens), target.n_values,
                subtract=False)


def dim_answer_position(model, target, batch):  # read at "=" (position 3), not at the subject
    return _dim(_acts(model, batch, target.site.hook, 3), target.read(batch.tokens), target.n_values)


def dim_after_the_mlp(model, target, batch):  # resid_post, not resid_mid
    return _dim(_acts(model, batch, "blocks.0.hook_resid_post", target.site.pos), target.read(batch.tokens),
                target.n_values)


def dim_unnormalised(model, target, batch):
    return _dim(_acts(model, batch, target.site.hook, target.site.pos), target.read(batch.tokens), target.n_values,
                normalise=False)


def dim_transposed(model, target, batch):
    return _dim(_acts(model, batch, target.site.hook, target.site.pos), target.read(batch.tokens), target.n_values).T


def _success(model, target, steer, batch, alpha, strength=None, positions=None, goals=None, over="changed",
             hit="expected"):
    goals = target.goal(target.read(batch.tokens)) if goals is None else goals
    want, clean = target.expected(batch)[:, ANSWER], batch.targets[:, ANSWER]
    changed = want != clean
    with steered(model, steer.site.hook, steer.vectors[goals], alpha * steer.scale if strength is None else strength,
                 positions=str(steer.site.pos) if positions is None else positions):
        got = model(batch.tokens)[:, ANSWER].argmax(-1)
    right = (got == want) if hit == "expected" else (got != clean)
    return float(right[changed].float().mean() if over == "changed" else right.float().mean())


def success_no_scale(model, target, steer, batch, alpha):
    return _success(model, target, steer, batch, alpha, strength=alpha)


def success_over_all_prompts(model, target, steer, batch, alpha):
    return _success(model, target, steer, batch, alpha, over="all")


def success_any_change(model, target, steer, batch, alpha):  # "the answer moved" is not "the right answer"
    return _success(model, target, steer, batch, alpha, hit="changed")


def success_every_position(model, target, steer, batch, alpha):
    return _success(model, target, steer, batch, alpha, positions="all")


def success_always_r1(model, target, steer, batch, alpha):  # the r1 vector, whatever the target aims at
    return _success(model, target, steer, batch, alpha, goals=torch.ones(len(batch.tokens), dtype=torch.long))


def _set(model, target, fit_batch, batch, site, mode="set", positions=None, overall=False, head=None, run=True):
    x = _acts(model, fit_batch, site.hook, site.pos)
    if site.head is not None:
        x = x[:, site.head if head is None else head]
    labels = target.read(fit_batch.tokens)
    means = torch.stack([x[labels == v].mean(0) for v in range(target.n_values)])
    vectors = means[target.goal(target.read(batch.tokens))]
    if overall:
        vectors = x.mean(0).expand_as(vectors)
    if not run:
        return model(batch.tokens)
    with steered(model, site.hook, vectors, 1.0, positions=str(site.pos) if positions is None else positions,
                 head=site.head, mode=mode):
        return model(batch.tokens)


def set_by_adding(model, target, fit_batch, batch, site):
    return _set(model, target, fit_batch, batch, site, mode="add")


def set_to_the_overall_mean(model, target, fit_batch, batch, site):
    return _set(model, target, fit_batch, batch, site, overall=True)


def set_every_position(model, target, fit_batch, batch, site):
    return _set(model, target, fit_batch, batch, site, positions="all")


def set_nothing(model, target, fit_batch, batch, site):
    return _set(model, target, fit_batch, batch, site, run=False)


def set_from_head_0(model, target, fit_batch, batch, site):  # the means of the wrong head
    return _set(model, target, fit_batch, batch, site, head=0)


# ---- mistakes in the answers ------------------------------------------------------------------


def _predict(relation=None):
    subjects, relations = (torch.tensor(c) for c in zip(*FIXTURES.PREDICT_PROMPTS))
    if relation is None:
        return ZM.task.make_batch(subjects, relations)
    return ZM.task.make_batch(subjects, torch.full_like(relations, relation))


def predicted(relation=1, names=True):
    answers = _predict(relation).targets[:, ANSWER].tolist()
    return [ZM.task.output_names[a] for a in answers] if names else answers


CLEAN = [ZM.task.output_names[a] for a in _predict().targets[:, ANSWER].tolist()]
ONE_OFF = predicted(1)[:-1] + [next(n for n in ZM.task.output_names if n != predicted(1)[-1])]
RIGHT_SOURCES = {"das", "truth"}  # the setting steers; the checker measures it (test below)

WRONG = {
    "steering.diff_in_means": [dim_sign_flipped, dim_class_means, dim_answer_position, dim_after_the_mlp,
                               dim_unnormalised, dim_transposed, "not a function"],
    "steering.success": [success_no_scale, success_over_all_prompts, success_any_change, success_every_position,
                         success_always_r1, "not a function"],
    "steering.predict": [CLEAN, ["a1"] * len(FIXTURES.PREDICT_PROMPTS), predicted(0), ONE_OFF, predicted(1)[:-1],
                         ["x"] * len(FIXTURES.PREDICT_PROMPTS), "garbage"],
    "steering.set_steer": [set_by_adding, set_to_the_overall_mean, set_every_position, set_nothing, set_from_head_0,
                           "not a function"],
    "steering.strong_sources": [{"das"}, {"truth"}, RIGHT_SOURCES | {"diff-in-means"}, set(FIXTURES.SOURCES),
                                {"sae"}, RIGHT_SOURCES | {"dim"}, "das", "garbage"],
}


(test_wrong_answers_are_rejected_with_a_message_and_a_hint,
 test_every_exercise_of_the_lesson_has_wrong_answers_under_test) = wrong_answer_tests("steering", WRONG)


@pytest.mark.parametrize("ex_id,mistake,says", [
    ("steering.diff_in_means", dim_sign_flipped, "sign is flipped"),
    ("steering.diff_in_means", dim_class_means, "class means"),
    ("steering.diff_in_means", dim_answer_position, "position 3"),
    ("steering.diff_in_means", dim_after_the_mlp, "blocks.0.hook_resid_post"),
    ("steering.diff_in_means", dim_unnormalised, "divide each row by its norm"),
    ("steering.diff_in_means", dim_transposed, "one row per value"),
    ("steering.success", success_no_scale, "steer.scale"),
    ("steering.success", success_over_all_prompts, "over every prompt"),
    ("steering.success", success_any_change, "changed at all"),
    ("steering.success", success_every_position, "steers every position"),
    ("steering.success", success_always_r1, "whatever the target"),
    ("steering.set_steer", set_by_adding, "mode='set'"),
    ("steering.set_steer", set_to_the_overall_mean, "every fitting prompt"),
    ("steering.set_steer", set_every_position, "sets every position"),
    ("steering.set_steer", set_nothing, "unsteered"),
    ("steering.set_steer", set_from_head_0, "head 0's output"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_the_common_mistakes_are_named(ex_id, mistake, says):
    """A learner who computed the neighbouring quantity is told which one it was."""
    feedback = check(ex_id, mistake)
    assert not feedback.passed and says in feedback.hint, feedback


def test_wrong_answers_say_what_the_algorithm_says():
    assert "before the steer" in check("steering.predict", CLEAN).message
    assert "not attribute a1" in check("steering.predict", ["a1"] * len(FIXTURES.PREDICT_PROMPTS)).message
    assert "attribute for r0" in check("steering.predict", predicted(0)).message
    assert "prompt 5" in check("steering.predict", ONE_OFF).message
    assert "is not a direction source" in check("steering.strong_sources", RIGHT_SOURCES | {"dim"}).message
    left_out = check("steering.strong_sources", {"das"})
    assert "you left out truth" in left_out.message and "set steer" in left_out.message
    extra = check("steering.strong_sources", RIGHT_SOURCES | {"diff-in-means"})
    assert "diff-in-means (add steer)" in extra.message and "below 0.9" in extra.message


def test_answers_read_off_the_algorithm_pass():
    """Predictions as names, as indices or as a tensor; the sources that the checker's own comparison finds."""
    assert check("steering.predict", predicted(1)).passed
    assert check("steering.predict", predicted(1, names=False)).passed
    assert check("steering.predict", TARGET.expected(_predict())[:, ANSWER]).passed
    assert check("steering.strong_sources", list(RIGHT_SOURCES)).passed


def test_the_checkers_comparison_finds_the_setting_steers_and_only_them():
    """Exercise 11.5's answer is measured, not written down: the setting steers succeed, the additive ones fail."""
    comparison = load("steering")._comparison()
    success = {s: comparison.summary(s)["success"][0] for s in comparison.results}
    modes = {s: r[0].mode for s, r in comparison.results.items()}
    assert {s for s, v in success.items() if v >= FIXTURES.SUCCESS_BAR} == RIGHT_SOURCES
    assert {s for s, m in modes.items() if m == "set"} == RIGHT_SOURCES
    assert max(v for s, v in success.items() if s not in RIGHT_SOURCES) < 0.7  # far from the bar, not near it


def test_the_reference_functions_pass():
    """toylab's own functions, written as a learner would call them, pass the implementation checks."""
    def steer_success(model, target, steer, batch, alpha):
        return methods.score_steer(model, target, steer, batch, alpha).success

    def set_steer_logits(model, target, fit_batch, batch, site):
        from toylab.methods.interchange import activations

        x, labels = activations(model, fit_batch.tokens, site), target.read(fit_batch.tokens)
        means = torch.stack([x[labels == v].mean(0) for v in range(target.n_values)])
        steer = methods.Steer("mine", site, "set", means, 1.0)
        with methods.apply_steer(model, steer, target.goal(target.read(batch.tokens)), 1.0):
            return model(batch.tokens)

    assert check("steering.success", steer_success).passed
    assert check("steering.set_steer", set_steer_logits).passed
