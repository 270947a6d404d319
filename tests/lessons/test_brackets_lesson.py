"""Lesson 15 (balanced brackets): each checker rejects the mistakes a learner makes, with a reason and a hint, and the
fixtures' readings of the model agree with its truth on every shipped seed. Right answers are computed here from the
task's algorithm, the truth and toylab's own functions."""

import pytest
import torch
from wrong_answers import wrong_answer_tests

from toylab import zoo
from toylab.lessons import check, lesson_fixtures, load

FIXTURES = lesson_fixtures("brackets")
ZM = zoo.load(FIXTURES.MODEL)
SITES = FIXTURES.truth_sites(ZM.truth)


@pytest.fixture(autouse=True)
def no_grad():
    """As in the lessons, which turn gradients off."""
    with torch.no_grad():
        yield


# ---- the fixtures against the truth, on every shipped seed --------------------------------------


@pytest.mark.parametrize("seed", zoo.recipe(FIXTURES.MODEL).seeds)
def test_interventions_find_the_truths_sites_and_ablations_its_failures_on_every_seed(seed):
    """For each variable, the one component whose IIA clears the bar in every test of it is the truth's; the
    components whose ablation destroys half of each failure are those the truth predicts."""
    zm = zoo.load(FIXTURES.MODEL, seed=seed)
    names = FIXTURES.components(zm.model.cfg)
    n_ctx = zm.task.n_ctx
    passing = {variable: set(names) for variable in FIXTURES.VARIABLES}
    for variable, where in FIXTURES.IIA_TESTS:
        mask = FIXTURES.positions(where, n_ctx)
        passing[variable] &= {c for c in names
                              if FIXTURES.iia(zm.model, zm.algorithm, variable, c, mask, n=64, seed=7) >= FIXTURES.IIA_BAR}
    assert passing == {variable: {site} for variable, site in FIXTURES.truth_sites(zm.truth).items()}
    pairs = FIXTURES.failure_pairs(zm.task, 96, seed=7)
    measured = {kind: {c for c, x in FIXTURES.destroyed(zm.model, pairs[kind]).items() if x >= FIXTURES.DESTROYS}
                for kind in FIXTURES.KINDS}
    assert measured == FIXTURES.truth_failures(zm.truth, zm.task, pairs) == \
        {"dips": {"L0H1", "MLP0", "L1H1", "MLP1"}, "unclosed": {"L0H1", "MLP1"}}


def test_the_failure_pairs_split_the_counterfactual_by_its_edit():
    pairs = FIXTURES.failure_pairs(ZM.task, 64, seed=0)
    assert sum(len(p.clean) for p in pairs.values()) == 64
    for kind, pair in pairs.items():
        clean, corrupted = ZM.task.variables(pair.clean.tokens), ZM.task.variables(pair.corrupted.tokens)
        assert (clean["answer"] != corrupted["answer"]).all()
        if kind == "dips":  # only any_negative differs
            assert (clean["final_zero"] & corrupted["final_zero"]).all()
        else:  # only final_zero differs
            assert not (clean["any_negative"] | corrupted["any_negative"]).any()


def test_iia_at_positions_is_toylabs_interchange_accuracy():
    """With every position, fixtures.iia is toylab.methods' IIA at a whole-component interchange."""
    from toylab.interventions import interchange_accuracy, interchanged

    every = FIXTURES.positions("all", ZM.task.n_ctx)
    want = interchange_accuracy(ZM.model, ZM.algorithm, "balance",
                                lambda source: interchanged(ZM.model, source, ["L0H1"], "all"), 64, 3)[0]
    assert FIXTURES.iia(ZM.model, ZM.algorithm, "balance", "L0H1", every, n=64, seed=3) == want
    assert FIXTURES.positions("all but last", 5).tolist() == [True] * 4 + [False]
    with pytest.raises(ValueError, match="positions must be"):
        FIXTURES.positions("first", 5)


def test_the_flag_readout_is_the_truths_direction_and_reads_the_flags():
    readout = FIXTURES.fit_flag_readout(ZM.model, ZM.task, 256)
    declared = FIXTURES.truth_flag_directions(ZM.truth)  # the truth's feature directions of "negative", if declared
    assert len(declared) == 0 or float((declared @ readout.direction).min()) > 0.98
    tokens = ZM.task.sample(128, seed=9).tokens
    read = FIXTURES.flag_readout(ZM.model, readout, tokens)
    assert read.shape == tokens.shape and 0 <= float(read.min()) and float(read.max()) <= 1
    flags = ZM.task.variables(tokens)["negative"]
    assert float(((read > 0.5) == flags)[:, 1:].float().mean()) > 0.95


# ---- mistakes in the implementations ---------------------------------------------------------


def _balance(tokens, open_token=1):
    close_token = 3 - open_token
    return torch.where(tokens == open_token, 1, torch.where(tokens == close_token, -1, 0)).cumsum(-1)


def balanced_final_zero_only(tokens):
    return _balance(tokens)[:, -1] == 0


def balanced_never_negative_only(tokens):
    return (_balance(tokens) >= 0).all(-1)


def balanced_touching_zero_fails(tokens):
    balance = _balance(tokens)
    return (balance[:, -1] == 0) & (balance[:, 1:-1] > 0).all(-1)


def balanced_tokens_swapped(tokens):
    balance = _balance(tokens, open_token=2)
    return (balance[:, -1] == 0) & (balance >= 0).all(-1)


def balanced_per_position(tokens):
    return _balance(tokens) >= 0


def balanced_final_count(tokens):
    return _balance(tokens)[:, -1]


def _ls(x, y, bias=True):
    x, y = x.double(), y.double()
    X = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) if bias else x
    return y - (X @ torch.linalg.lstsq(X, y[:, None]).solution)[:, 0]


def r2_without_bias(x, y):
    y = y.double()
    return float(1 - _ls(x, y, bias=False).pow(2).sum() / (y - y.mean()).pow(2).sum())


def r2_uncentred(x, y):
    return float(1 - _ls(x, y).pow(2).sum() / y.double().pow(2).sum())


def r2_unexplained(x, y):
    y = y.double()
    return float(_ls(x, y).pow(2).sum() / (y - y.mean()).pow(2).sum())


def r2_sse(x, y):
    return float(_ls(x, y).pow(2).sum())


def r2_first_column(x, y):
    return float(torch.corrcoef(torch.stack([x[:, 0].double(), y.double()]))[0, 1] ** 2)


def _difference(acts, negative, start=1):
    x, on = acts[:, start:].reshape(-1, acts.shape[-1]), negative[:, start:].reshape(-1)
    return x[on].mean(0) - x[~on].mean(0)


def direction_flipped(acts, negative):
    d = _difference(acts, negative)
    return -d / d.norm()


def direction_unnormalised(acts, negative):
    return _difference(acts, negative)


def direction_with_bos(acts, negative):
    d = _difference(acts, negative, start=0)
    return d / d.norm()


def direction_per_string(acts, negative):
    return torch.stack([_difference(a[None], n[None]) for a, n in zip(acts, negative)])


def _iia(model, algorithm, variable, component, mask, n, seed, patch_mask=None, expect="intervened", hook=None):
    base, source = algorithm.sample_pairs(n, torch.Generator().manual_seed(seed))
    expected = {"intervened": algorithm.intervene(base, source, variable, mask)[:, -1],
                "base": base.targets[:, -1],
                "everywhere": algorithm.intervene(base, source, variable)[:, -1]}[expect]
    layer = int(component[-1]) if component.startswith("MLP") else int(component[1])
    head = None if component.startswith("MLP") else int(component[3])
    if hook is None:
        hook = f"blocks.{layer}.hook_mlp_out" if head is None else f"blocks.{layer}.attn.hook_z"
    else:
        hook, head = hook.format(layer=layer), None
    where = mask if patch_mask is None else patch_mask
    src = model.run_with_cache(source.tokens, names=[hook])[1][hook]

    def patch(x, hook):
        x = x.clone()
        index = (slice(None), where) if head is None else (slice(None), where, head)
        x[index] = src[index]
        return x

    with model.hooks([(hook, patch)]):
        answers = model(base.tokens)[:, -1].argmax(-1)
    return float((answers == expected).float().mean())


def iia_mask_ignored(model, algorithm, variable, component, mask, n, seed):
    return _iia(model, algorithm, variable, component, mask, n, seed, patch_mask=torch.ones_like(mask))


def iia_base_answer(model, algorithm, variable, component, mask, n, seed):
    return _iia(model, algorithm, variable, component, mask, n, seed, expect="base")


def iia_swapped_everywhere(model, algorithm, variable, component, mask, n, seed):
    return _iia(model, algorithm, variable, component, mask, n, seed, expect="everywhere")


def iia_whole_layer(model, algorithm, variable, component, mask, n, seed):
    if component.startswith("MLP"):
        return _iia(model, algorithm, variable, component, mask, n, seed)
    return _iia(model, algorithm, variable, component, mask, n, seed, hook="blocks.{layer}.hook_attn_out")


def iia_per_pair(model, algorithm, variable, component, mask, n, seed):
    return torch.full((n,), 1.0)


# ---- mistakes in the answers ------------------------------------------------------------------


def _sites(**changes):
    return {**SITES, **changes}


RIGHT_FAILURES = {"dips": {"L0H1", "MLP0", "L1H1", "MLP1"}, "unclosed": {"L0H1", "MLP1"}}


def _failures(**changes):
    return {**RIGHT_FAILURES, **changes}


WRONG = {
    "brackets.algorithm": [balanced_final_zero_only, balanced_never_negative_only, balanced_touching_zero_fails,
                           balanced_tokens_swapped, balanced_per_position, balanced_final_count, "not a function"],
    "brackets.r2": [r2_without_bias, r2_uncentred, r2_unexplained, r2_sse, r2_first_column, "not a function"],
    "brackets.flag_direction": [direction_flipped, direction_unnormalised, direction_with_bos, direction_per_string,
                                "not a function"],
    "brackets.iia": [iia_mask_ignored, iia_base_answer, iia_swapped_everywhere, iia_whole_layer, iia_per_pair,
                     "not a function"],
    "brackets.sites": [_sites(balance="L0H0"), _sites(negative="L1H1"), _sites(negative="L0H1"),
                       _sites(any_negative="MLP1"), _sites(balance="L2H0"), {"balance": "L0H1"}, "garbage"],
    "brackets.failure_modes": [
        {"dips": RIGHT_FAILURES["unclosed"], "unclosed": RIGHT_FAILURES["dips"]},
        _failures(unclosed={"L0H1", "MLP0", "MLP1"}), _failures(unclosed={"L0H1", "L1H1", "MLP1"}),
        _failures(dips={"L0H1", "MLP0", "L1H1"}), _failures(dips={"L0H0", "L0H1", "MLP0", "L1H1", "MLP1"}),
        _failures(unclosed=set(RIGHT_FAILURES["dips"])), {"dips": {"L0H1"}}, _failures(dips={"MLP7"}), "garbage"],
}


(test_wrong_answers_are_rejected_with_a_message_and_a_hint,
 test_every_exercise_of_the_lesson_has_wrong_answers_under_test) = wrong_answer_tests("brackets", WRONG)


@pytest.mark.parametrize("ex_id,mistake,says", [
    ("brackets.algorithm", balanced_final_zero_only, "only checks the end"),
    ("brackets.algorithm", balanced_never_negative_only, "never dips"),
    ("brackets.algorithm", balanced_touching_zero_fails, "come back to zero"),
    ("brackets.algorithm", balanced_tokens_swapped, "token 1"),
    ("brackets.algorithm", balanced_per_position, "per string"),
    ("brackets.r2", r2_without_bias, "no bias"),
    ("brackets.r2", r2_uncentred, "not sum(y^2)"),
    ("brackets.r2", r2_unexplained, "*not* explained"),
    ("brackets.r2", r2_first_column, "first column"),
    ("brackets.flag_direction", direction_flipped, "other way"),
    ("brackets.flag_direction", direction_unnormalised, "unit vector"),
    ("brackets.flag_direction", direction_with_bos, "leave BOS out"),
    ("brackets.iia", iia_mask_ignored, "only at the positions"),
    ("brackets.iia", iia_base_answer, "not the base's own"),
    ("brackets.iia", iia_swapped_everywhere, "pass the mask"),
    ("brackets.iia", iia_whole_layer, "one head's slice"),
    ("brackets.sites", _sites(balance="L0H0"), "nothing downstream reads it"),
    ("brackets.sites", _sites(negative="L1H1"), "every position but the last"),
    ("brackets.sites", _sites(negative="L0H1"), "final count"),
    ("brackets.failure_modes", {"dips": RIGHT_FAILURES["unclosed"], "unclosed": RIGHT_FAILURES["dips"]},
     "other way round"),
    ("brackets.failure_modes", _failures(unclosed={"L0H1", "MLP0", "MLP1"}), "flags are the same"),
    ("brackets.failure_modes", _failures(unclosed={"L0H1", "L1H1", "MLP1"}), "no flag for L1H1"),
    ("brackets.failure_modes", _failures(dips={"L0H1", "MLP0", "L1H1"}), "whichever failure"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_the_common_mistakes_are_named(ex_id, mistake, says):
    """A learner who computed the neighbouring quantity is told which one it was."""
    feedback = check(ex_id, mistake)
    assert not feedback.passed and says in f"{feedback.message} {feedback.hint}", feedback


def test_the_reference_functions_and_right_answers_pass():
    """toylab's own functions and the truth's answers, written as a learner would give them, pass; the checkers leave
    the shared model without hooks."""
    def is_balanced(tokens):
        return ZM.task.variables(tokens)["answer"].bool()

    def iia(model, algorithm, variable, component, mask, n, seed):
        return FIXTURES.iia(model, algorithm, variable, component, mask, n=n, seed=seed)

    def flag_direction(acts, negative):
        d = _difference(acts, negative)
        return d / d.norm()

    assert check("brackets.algorithm", is_balanced).passed
    assert check("brackets.algorithm", lambda tokens: ZM.task.variables(tokens)["answer"]).passed  # 1/0 reads as bool
    assert check("brackets.r2", lambda x, y: 1 - _ls(x, y).pow(2).sum() / (y - y.mean()).pow(2).sum()).passed
    assert check("brackets.flag_direction", flag_direction).passed
    assert check("brackets.iia", iia).passed
    assert check("brackets.sites", SITES).passed
    feedback = check("brackets.failure_modes", {k: sorted(v) for k, v in RIGHT_FAILURES.items()})  # lists are sets
    assert feedback.passed and "as the truth predicts" in feedback.message
    assert not ZM.model.has_hooks() and not load("brackets")._zm().model.has_hooks()
