"""Lesson 10 (indirect object identification): it runs end to end with its solutions, and each checker rejects
the mistakes a learner makes, with a reason and a hint. Which head plays which part is read from the truth."""


import pytest
import torch
from wrong_answers import wrong_answer_tests

from toylab import methods, zoo
from toylab.lessons import check, lesson_fixtures
from toylab.methods.circuits import copying_score, ov_circuit
from toylab.methods.repair import self_repair
from toylab.tasks import logit_diff

FIXTURES = lesson_fixtures("ioi")
ZM = zoo.load(FIXTURES.MODEL, seed=FIXTURES.SEED)
TRUTH = ZM.truth
MOVERS = FIXTURES.name_movers(TRUTH)
(S_INHIBITION,) = FIXTURES.role_heads(TRUTH, "s-inhibition")
(DUPLICATE,) = FIXTURES.role_heads(TRUTH, "duplicate-token")
NEGATIVES = FIXTURES.negative_heads(TRUTH)
BACKUPS = FIXTURES.backups(TRUTH)
HEADS = [f"L{layer}H{head}" for layer in range(ZM.model.cfg.n_layers) for head in range(ZM.model.cfg.n_heads)]
INERT = [h for h in HEADS if h not in FIXTURES.head_roles(TRUTH)]


@pytest.fixture(autouse=True)
def no_grad():
    """As in the lessons, which turn gradients off."""
    with torch.no_grad():
        yield


def test_the_truth_names_the_parts_the_lesson_relies_on():
    """Every head the lesson's answers come from is in the truth: roles, edges and claims."""
    assert len(MOVERS) >= 1 and NEGATIVES and BACKUPS
    assert not set(BACKUPS) & set(MOVERS) and not set(NEGATIVES) & set(MOVERS)
    assert any(e.sender == S_INHIBITION and e.receiver in MOVERS and e.kind == "q" for e in TRUTH.edges)
    assert any(e.sender == DUPLICATE and e.receiver == S_INHIBITION for e in TRUTH.edges)


def test_abc_pair_is_the_abc_distribution_of_one_prompt():
    task = ZM.task
    pair = FIXTURES.abc_pair(task, template=3, io=2, s=9, order=1, place=1, obj=4)
    assert len(pair.clean.tokens) == task.n_names - 2
    assert (pair.clean.tokens == pair.clean.tokens[0]).all()  # one prompt, repeated
    clean, corrupted = task.variables(pair.clean.tokens), task.variables(pair.corrupted.tokens)
    assert (clean["io"] == 2).all() and (clean["s"] == 9).all() and (clean["s_position"] == 0).all()  # BABA
    assert sorted(corrupted["second"].tolist()) == [c for c in range(task.n_names) if c not in (2, 9)]
    assert (corrupted["s_position"] == -1).all()  # nothing repeated
    # The metric is the task's IO - S, as on task.counterfactual's ABC pairs.
    m = logit_diff(ZM.model(pair.clean.tokens), pair, per_example=True)
    logits = ZM.model(pair.clean.tokens)[:, task.positions(3)["answer"]]
    assert torch.allclose(m, logits[:, task.name_token(2)] - logits[:, task.name_token(9)])
    with pytest.raises(ValueError, match="different names"):
        FIXTURES.abc_pair(task, 0, 4, 4, 0)


# ---- mistakes in the implementations ---------------------------------------------------------


def _at(model, task, tokens, pos):
    v = task.variables(tokens)
    rows = torch.arange(tokens.shape[0])
    logits = model(tokens)[rows, pos if pos is not None else v["answer_pos"]]
    return logits, v, rows


def ld_last_position(model, task, tokens):  # prompts are right-padded: the last position is often PAD
    logits, v, rows = _at(model, task, tokens, -1)
    return logits[rows, task.name_token(v["io"])] - logits[rows, task.name_token(v["s"])]


def ld_sign_flipped(model, task, tokens):
    logits, v, rows = _at(model, task, tokens, None)
    return logits[rows, task.name_token(v["s"])] - logits[rows, task.name_token(v["io"])]


def ld_io_only(model, task, tokens):
    logits, v, rows = _at(model, task, tokens, None)
    return logits[rows, task.name_token(v["io"])]


def ld_mean(model, task, tokens):  # one number, not one per prompt
    return -ld_sign_flipped(model, task, tokens).mean()


def _attention(pattern, tokens, task, query, key):
    return load_checks()._attention(pattern, tokens, task, query, key)


def score_to_s1(pattern, tokens, task):
    return _attention(pattern, tokens, task, "answer", "s1")


def score_to_s2(pattern, tokens, task):
    return _attention(pattern, tokens, task, "answer", "s2")


def score_from_last(pattern, tokens, task):
    return _attention(pattern, tokens, task, "last", "io")


def score_per_prompt(pattern, tokens, task):  # [batch, head]: not averaged
    v = task.variables(tokens)
    rows = torch.arange(tokens.shape[0])
    io = torch.tensor([task.positions(int(t))["X2" if s == 0 else "X1"] for t, s in zip(v["template"], v["s_position"])])
    return pattern[rows, :, v["answer_pos"], io]


def ov_full_vocab(model, task, layer, head):
    return ov_circuit(model, layer, head)


def ov_transposed(model, task, layer, head):
    names = task.name_tokens
    return ov_circuit(model, layer, head)[names][:, names].T


def ov_without_unembed(model, task, layer, head):
    attn = model.blocks[layer].attn
    return model.embed.W_E[task.name_tokens] @ attn.W_V[head] @ attn.W_O[head]


def comp_resample(model, pair, primaries, backups):
    return self_repair(model, pair, primaries, backups, knockout="resample").compensation


def comp_cost(model, pair, primaries, backups):
    return self_repair(model, pair, primaries, backups, knockout="mean").cost


def comp_over_logit_diff(model, pair, primaries, backups):
    r = self_repair(model, pair, primaries, backups, knockout="mean")
    return (r.backups_knocked_out - r.backups_clean) / r.clean.metric


def comp_no_subtraction(model, pair, primaries, backups):
    r = self_repair(model, pair, primaries, backups, knockout="mean")
    return r.backups_knocked_out / r.primaries_clean


def load_checks():
    from toylab.lessons import load

    return load("ioi")


# ---- mistakes in the answers ------------------------------------------------------------------


def _wrong_kind() -> str:
    """An input of the S-inhibition head that the duplicate-token head does not reach it through."""
    kinds = {e.kind for e in TRUTH.edges if e.sender == DUPLICATE and e.receiver == S_INHIBITION}
    return next(k for k in ("q", "k", "v") if k not in kinds)


def _right_kind() -> str:
    return next(e.kind for e in TRUTH.edges if e.sender == DUPLICATE and e.receiver == S_INHIBITION)


def copiers(over: str) -> set[str]:
    names = ZM.task.name_tokens
    out = set()
    for head in HEADS:
        layer, index = int(head[1]), int(head[3:])
        ov = ov_circuit(ZM.model, layer, index)
        if copying_score(ov[names][:, names] if over == "names" else ov) >= 0.9:
            out.add(head)
    return out


def copier_mistakes():
    mistakes = [set(MOVERS), set(HEADS), "garbage", copiers("names") | {INERT[0]}]
    if copiers("vocab") != copiers("names"):
        mistakes.append(copiers("vocab"))
    return mistakes


CIRCUIT = [h for h in TRUTH.heads if h not in NEGATIVES and h not in BACKUPS]
WRONG = {
    "ioi.logit_diff": [ld_last_position, ld_sign_flipped, ld_io_only, ld_mean, "not a function"],
    "ioi.writers": [{"positive": {MOVERS[0], S_INHIBITION}, "negative": NEGATIVES[0]},
                    {"positive": {MOVERS[0], NEGATIVES[0]}, "negative": NEGATIVES[0]},  # ranked by |direct effect|
                    {"positive": set(MOVERS), "negative": BACKUPS[0]},
                    {"positive": set(MOVERS), "negative": "L7H0"},
                    set(MOVERS), "garbage"],
    "ioi.name_mover_score": [score_to_s1, score_to_s2, score_from_last, score_per_prompt, "not a function"],
    "ioi.patched_heads": [{"restore": set(CIRCUIT) | set(NEGATIVES), "harm": set()},
                          {"restore": set(MOVERS), "harm": set(NEGATIVES)},
                          {"restore": set(CIRCUIT) | set(BACKUPS), "harm": set(NEGATIVES)},
                          {"restore": set(CIRCUIT), "harm": set(NEGATIVES) | {INERT[0]}},
                          set(CIRCUIT), "garbage"],
    "ioi.senders": [{"movers_q": DUPLICATE, "s_inhibition": (DUPLICATE, _right_kind())},
                    {"movers_q": S_INHIBITION, "s_inhibition": (DUPLICATE, _wrong_kind())},
                    {"movers_q": S_INHIBITION, "s_inhibition": (MOVERS[0], _right_kind())},
                    {"movers_q": NEGATIVES[0], "s_inhibition": (DUPLICATE, _right_kind())},
                    {"movers_q": S_INHIBITION, "s_inhibition": (DUPLICATE, "x")},
                    {"movers_q": S_INHIBITION, "s_inhibition": DUPLICATE}, "garbage"],
    "ioi.name_ov": [ov_full_vocab, ov_transposed, ov_without_unembed, "not a function"],
    "ioi.copiers": copier_mistakes(),
    "ioi.compensation": [comp_resample, comp_cost, comp_over_logit_diff, comp_no_subtraction, "not a function"],
    "ioi.takes_over": [{"backup": NEGATIVES[0], "negative": BACKUPS[0]},
                       {"backup": MOVERS[0], "negative": NEGATIVES[0]},
                       {"backup": BACKUPS[0], "negative": S_INHIBITION},
                       {"backup": INERT[0], "negative": NEGATIVES[0]},
                       {"backup": BACKUPS[0]}, "garbage"],
}


(test_wrong_answers_are_rejected_with_a_message_and_a_hint,
 test_every_exercise_of_the_lesson_has_wrong_answers_under_test) = wrong_answer_tests("ioi", WRONG)


@pytest.mark.parametrize("ex_id,mistake,says", [
    ("ioi.logit_diff", ld_last_position, "PAD"),
    ("ioi.logit_diff", ld_sign_flipped, "sign is flipped"),
    ("ioi.logit_diff", ld_io_only, "logit of IO alone"),
    ("ioi.name_mover_score", score_to_s1, "S1"),
    ("ioi.name_mover_score", score_to_s2, "S2"),
    ("ioi.name_mover_score", score_from_last, "PAD"),
    ("ioi.name_ov", ov_transposed, "transpose"),
    ("ioi.name_ov", ov_full_vocab, "restrict"),
    ("ioi.compensation", comp_resample, "resample"),
    ("ioi.compensation", comp_cost, "cost"),
    ("ioi.compensation", comp_over_logit_diff, "not by the logit difference"),
    ("ioi.compensation", comp_no_subtraction, "subtract"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_the_common_mistakes_are_named(ex_id, mistake, says):
    """A learner who computed the neighbouring quantity is told which one it was."""
    feedback = check(ex_id, mistake)
    assert not feedback.passed and says in feedback.hint, feedback


def test_answers_read_off_the_truth_pass_and_wrong_ones_say_what_the_head_does():
    assert check("ioi.writers", {"positive": MOVERS, "negative": NEGATIVES[0]}).passed
    assert check("ioi.patched_heads", {"restore": CIRCUIT, "harm": NEGATIVES}).passed
    assert check("ioi.senders", {"movers_q": S_INHIBITION, "s_inhibition": [DUPLICATE, _right_kind()]}).passed
    assert check("ioi.takes_over", {"backup": BACKUPS[0], "negative": NEGATIVES[0]}).passed
    assert check("ioi.copiers", copiers("names")).passed
    assert "against IO" in check("ioi.writers", {"positive": {MOVERS[0], NEGATIVES[0]},
                                                 "negative": NEGATIVES[0]}).message
    assert "right head, but not that input" in check(
        "ioi.senders", {"movers_q": S_INHIBITION, "s_inhibition": (DUPLICATE, _wrong_kind())}).message
    assert "not upstream" in check("ioi.senders", {"movers_q": NEGATIVES[0],
                                                   "s_inhibition": (DUPLICATE, _right_kind())}).message
    assert "not quiet" in check("ioi.takes_over", {"backup": NEGATIVES[0], "negative": BACKUPS[0]}).message
    missed = check("ioi.copiers", set(MOVERS))
    assert "you left out" in missed.message and "the truth's" in missed.message
    assert "not a head of ioi-siit" in check("ioi.writers", {"positive": set(MOVERS), "negative": "L7H0"}).message


def test_the_reference_functions_pass():
    """toylab's own functions, written as a learner would call them, pass the implementation checks."""
    def name_scores(pattern, tokens, task):  # the pattern's layer is found by matching the model's own
        _, cache = ZM.model.run_with_cache(tokens, names=lambda n: n.endswith("hook_pattern"))
        layer = next(i for i in range(ZM.model.cfg.n_layers) if torch.equal(cache["pattern", i], pattern))
        return methods.head_scores(ZM.model, tokens, "name-mover", task=task).scores[layer]

    def name_ov(model, task, layer, head):
        return ov_circuit(model, layer, head)[task.name_tokens][:, task.name_tokens]

    def compensation(model, pair, primaries, backups):
        return self_repair(model, pair, primaries, backups, knockout="mean").compensation

    assert check("ioi.name_mover_score", name_scores).passed
    assert check("ioi.name_ov", name_ov).passed
    assert check("ioi.compensation", compensation).passed

