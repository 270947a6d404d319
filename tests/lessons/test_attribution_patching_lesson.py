"""Lesson 16 (attribution patching and EAP): the runner runs it end to end with and without its solutions
(tests/lessons/test_runner.py); here each checker rejects the mistakes a learner makes, with a reason and a hint,
and takes toylab's own functions and answers computed from toylab's methods and the truth."""

import pytest
import torch
from wrong_answers import wrong_answer_tests

from toylab import components as comp
from toylab import methods, zoo
from toylab.components import Edge
from toylab.lessons import check, lesson_fixtures, load
from toylab.tasks import logit_diff

FIXTURES = lesson_fixtures("atp")
ZM = zoo.load(FIXTURES.MODEL)
TRAP = zoo.load(FIXTURES.TRAP)


@pytest.fixture(autouse=True)
def no_grad():
    """As in the lessons, which turn gradients off."""
    with torch.no_grad():
        yield


# ---- the fixtures --------------------------------------------------------------------------------


def test_the_sites_name_each_end_of_every_edge():
    cfg = ZM.model.cfg
    _, cache = ZM.model.run_with_cache(ZM.task.sample(2, seed=0).tokens)
    for edge in comp.edges(cfg):
        if edge.sender == "pos_embed":
            continue
        for hook, head in (FIXTURES.sender_site(edge), FIXTURES.receiver_site(cfg, edge)):
            assert hook in cache, (edge, hook)
            assert (head is not None) == (cache[hook].ndim == 4), (edge, hook)
    assert FIXTURES.receiver_site(cfg, Edge("L1H1", "logits", "resid")) == ("blocks.1.hook_resid_post", None)
    assert FIXTURES.sender_site(Edge("L0H2", "L1H1", "k")) == ("blocks.0.attn.hook_result", 2)


def test_node_tables_are_eap_nodes_against_resample_ablation():
    """At node level the real patch of a head is activation patching of its hook_z (the lesson's noising_shares), and
    the estimate is eap's node sum, for every head and MLP."""
    zm = zoo.load("factual-recall")
    pair = FIXTURES.pair(zm)
    estimate, real = FIXTURES.estimates(zm.model, pair, "nodes"), FIXTURES.real_patch(zm.model, pair, "nodes")
    assert set(estimate) == set(real) == {"L0H0", "L0H1", "L1H0", "L1H1", "MLP0", "MLP1"}
    shares = FIXTURES.noising_shares(zm.model, pair)
    for head in FIXTURES.head_ids(zm.model.cfg):
        assert real[head] == pytest.approx(float(shares[comp.parse(head)[1:]]), abs=1e-4)
    nodes = methods.eap(zm.model, pair).nodes()
    assert all(estimate[c] == nodes[c] for c in estimate)
    with pytest.raises(ValueError, match="level"):
        FIXTURES.estimates(zm.model, pair, "heads")


def test_eap_ig_recovers_the_trap_only_with_enough_steps():
    """The premise of exercise 16.5 on the seed of the trap its checker leaves out (it checks the other two): EAP
    misses two truth edges; EAP-IG with 5 steps misses them too, with 16 it finds them."""
    checked = {FIXTURES.SEED, load("atp")._other_seed()}
    for seed in set(zoo.recipe(FIXTURES.TRAP).seeds) - checked:
        zm = zoo.load(FIXTURES.TRAP, seed=seed)
        pair = FIXTURES.pair(zm)
        eap, real = methods.eap(zm.model, pair), methods.edge_patching(zm.model, pair)
        missed = FIXTURES.understated(eap.scores, real.scores, zm.truth.edges)
        assert len(missed) == 2 and {e.kind for e in missed} == {"q", "v"}, seed
        assert not FIXTURES.recovered(methods.eap_ig(zm.model, pair, steps=5), real.scores, missed)
        assert FIXTURES.recovered(methods.eap_ig(zm.model, pair, steps=16), real.scores, missed)


# ---- learners' implementations, right and wrong --------------------------------------------------


def _grads(model, tokens, pair, hooks, detach=False):
    """dm/d(each hook) on the run of ``tokens``; ``detach`` cuts each hook from what feeds it."""
    leaves = {}

    def leaf(x, hook):
        leaves[hook.name] = x.detach().requires_grad_(True) if detach else x.clone()
        return leaves[hook.name]

    with torch.enable_grad(), model.hooks([(h, leaf) for h in hooks]):
        m = logit_diff(model(tokens), pair)
        grads = torch.autograd.grad(m, [leaves[h] for h in hooks], allow_unused=True)
    return {h: torch.zeros_like(leaves[h]) if g is None else g for h, g in zip(hooks, grads)}


def _acts(model, tokens, hooks):
    logits, cache = model.run_with_cache(tokens, names=hooks)
    return logits, {h: cache[h] for h in hooks}


def _head(model, pair, layer, head, *, sign=1.0, on="clean", per_batch=False, scale=None, whole=False):
    hook = f"blocks.{layer}.attn.hook_z"
    corr_logits, corrupted = _acts(model, pair.corrupted.tokens, [hook])
    clean_logits, clean = _acts(model, pair.clean.tokens, [hook])
    grad = _grads(model, (pair.clean if on == "clean" else pair.corrupted).tokens, pair, [hook])[hook]
    delta = sign * (corrupted[hook] - clean[hook])
    value = float((delta * grad).sum()) if whole else float((delta[:, :, head] * grad[:, :, head]).sum())
    if per_batch:
        value /= pair.clean.tokens.shape[0]
    if scale == "share":
        value /= float(logit_diff(corr_logits, pair) - logit_diff(clean_logits, pair))
    return value


def head_right(model, pair, layer, head):
    return _head(model, pair, layer, head)


def head_sign_flipped(model, pair, layer, head):
    return _head(model, pair, layer, head, sign=-1.0)


def head_corrupted_gradient(model, pair, layer, head):
    return _head(model, pair, layer, head, on="corrupted")


def head_mean_over_batch(model, pair, layer, head):
    return _head(model, pair, layer, head, per_batch=True)


def head_share(model, pair, layer, head):
    return _head(model, pair, layer, head, scale="share")


def head_whole_layer(model, pair, layer, head):
    return _head(model, pair, layer, head, whole=True)


def head_real_patch(model, pair, layer, head):
    m_clean = float(logit_diff(model(pair.clean.tokens), pair))
    m_corr = float(logit_diff(model(pair.corrupted.tokens), pair))
    return -float(FIXTURES.noising_shares(model, pair)[layer, head]) * (m_clean - m_corr)


def _heads(model, pair, *, detach=False, on="clean", scale="share", sign=1.0):
    hooks = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    corr_logits, corrupted = _acts(model, pair.corrupted.tokens, hooks)
    clean_logits, clean = _acts(model, pair.clean.tokens, hooks)
    grads = _grads(model, (pair.clean if on == "clean" else pair.corrupted).tokens, pair, hooks, detach=detach)
    out = torch.stack([((corrupted[h] - clean[h]) * grads[h]).sum((0, 1, 3)) for h in hooks])
    if scale == "share":
        out = out / (sign * float(logit_diff(corr_logits, pair) - logit_diff(clean_logits, pair)))
    return out


def heads_right(model, pair):
    return _heads(model, pair)


def heads_detached(model, pair):
    return _heads(model, pair, detach=True)


def heads_unnormalised(model, pair):
    return _heads(model, pair, scale=None)


def heads_sign(model, pair):
    return _heads(model, pair, sign=-1.0)


def heads_corrupted_gradient(model, pair):
    return _heads(model, pair, on="corrupted")


def heads_real(model, pair):
    return FIXTURES.noising_shares(model, pair)


def heads_one_at_a_time(model, pair):  # right numbers, a backward pass per head
    cfg = model.cfg
    m_clean = float(logit_diff(model(pair.clean.tokens), pair))
    m_corr = float(logit_diff(model(pair.corrupted.tokens), pair))
    return torch.tensor([[head_right(model, pair, layer, h) / (m_corr - m_clean) for h in range(cfg.n_heads)]
                         for layer in range(cfg.n_layers)])


def _edge(model, pair, edge, *, detach=False, stream=False, sign=1.0, scale=True, on="clean", whole=False):
    (s_hook, s_head), (r_hook, r_head) = FIXTURES.sender_site(edge), FIXTURES.receiver_site(model.cfg, edge)
    kind, layer, _ = comp.parse(edge.receiver)
    if stream and kind == "head":
        r_hook, r_head = f"blocks.{layer}.hook_resid_pre", None
    if whole and s_head is not None:
        s_hook, s_head = f"blocks.{comp.parse(edge.sender)[1]}.hook_attn_out", None
    corr_logits, corrupted = _acts(model, pair.corrupted.tokens, [s_hook])
    clean_logits, clean = _acts(model, pair.clean.tokens, [s_hook])
    grad = _grads(model, (pair.clean if on == "clean" else pair.corrupted).tokens, pair, [r_hook], detach)[r_hook]
    delta = sign * (corrupted[s_hook] - clean[s_hook])
    delta = delta[:, :, s_head] if s_head is not None else delta
    grad = grad[:, :, r_head] if r_head is not None else grad
    value = float((delta * grad).sum())
    return value / float(logit_diff(corr_logits, pair) - logit_diff(clean_logits, pair)) if scale else value


def edge_right(model, pair, edge):
    return _edge(model, pair, edge)


def edge_stream_gradient(model, pair, edge):
    return _edge(model, pair, edge, stream=True)


def edge_sign(model, pair, edge):
    return _edge(model, pair, edge, sign=-1.0)


def edge_unnormalised(model, pair, edge):
    return _edge(model, pair, edge, scale=False)


def edge_corrupted_gradient(model, pair, edge):
    return _edge(model, pair, edge, on="corrupted")


def edge_whole_layer_sender(model, pair, edge):
    return _edge(model, pair, edge, whole=True)


# ---- answers, right and wrong ---------------------------------------------------------------------


def _understated_right():
    out = {}
    for name in (FIXTURES.MODEL, FIXTURES.TRAP):
        zm = zoo.load(name)
        pair = FIXTURES.pair(zm)
        out[name] = FIXTURES.understated(methods.eap(zm.model, pair).scores,
                                         methods.edge_patching(zm.model, pair).scores, zm.truth.edges)
    return out


UNDERSTATED = _understated_right()
TRAP_Q = next(e for e in TRAP.truth.edges if e.kind == "q")
TRAP_V = next(e for e in UNDERSTATED[FIXTURES.TRAP] if e.kind == "v")
TO_LOGITS = next(e for e in ZM.truth.edges if e.receiver == "logits")


def _understated(**changes):
    return {**UNDERSTATED, **{name.replace("_", "-"): value for name, value in changes.items()}}


def _verdict(**changes):
    return {"exposes": "faithfulness", "missing": {TRAP_Q}, **changes}


WRONG = {
    "atp.one_head": [head_sign_flipped, head_corrupted_gradient, head_mean_over_batch, head_share, head_whole_layer,
                     head_real_patch, "not a function"],
    "atp.every_head": [heads_detached, heads_unnormalised, heads_sign, heads_corrupted_gradient, heads_real,
                       heads_one_at_a_time, "not a function"],
    "atp.edge": [edge_stream_gradient, edge_sign, edge_unnormalised, edge_corrupted_gradient,
                 edge_whole_layer_sender, "not a function"],
    "atp.understated": [
        _understated(induction_siit=set()),  # only the trap's
        _understated(induction_siit={e for e in UNDERSTATED[FIXTURES.MODEL] if e.kind == "k"}),  # the k edge alone
        _understated(trap_saturation={TRAP_Q}),  # the q edge alone, not the mover's input upstream of it
        _understated(induction_siit=UNDERSTATED[FIXTURES.MODEL] | {TO_LOGITS}),  # a linear edge too
        _understated(trap_saturation={("L1H2", "logits", "resid")}),  # outside the truth
        {FIXTURES.MODEL: UNDERSTATED[FIXTURES.MODEL]}, "garbage"],
    "atp.ig_steps": [5, 1, 2, 10, FIXTURES.MAX_STEPS + 1, True, "16"],
    "atp.validate": [_verdict(exposes="edge_auroc[qkv]"), _verdict(missing={TRAP_V}), _verdict(missing={TRAP_Q, TRAP_V}),
                     _verdict(missing=set()), _verdict(exposes="auroc"), {"exposes": "faithfulness"}, "garbage"],
}


(test_wrong_answers_are_rejected_with_a_message_and_a_hint,
 test_every_exercise_of_the_lesson_has_wrong_answers_under_test) = wrong_answer_tests("atp", WRONG)


@pytest.mark.parametrize("ex_id,mistake,says", [
    ("atp.one_head", head_sign_flipped, "wrong sign"),
    ("atp.one_head", head_corrupted_gradient, "corrupted run"),
    ("atp.one_head", head_mean_over_batch, "mean over the batch"),
    ("atp.one_head", head_share, "share of the effect"),
    ("atp.one_head", head_whole_layer, "every head of the layer"),
    ("atp.one_head", head_real_patch, "real patch"),
    ("atp.every_head", heads_detached, "z.clone()"),
    ("atp.every_head", heads_unnormalised, "change of m"),
    ("atp.every_head", heads_sign, "sign"),
    ("atp.every_head", heads_corrupted_gradient, "corrupted run"),
    ("atp.every_head", heads_real, "real patches"),
    ("atp.every_head", heads_one_at_a_time, "forward passes"),
    ("atp.edge", edge_stream_gradient, "receiver's own input"),
    ("atp.edge", edge_sign, "sign"),
    ("atp.edge", edge_unnormalised, "change of m"),
    ("atp.edge", edge_corrupted_gradient, "corrupted run"),
    ("atp.edge", edge_whole_layer_sender, "whole layer"),
    ("atp.understated", _understated(trap_saturation={TRAP_Q}), "only through a later head's query or key"),
    ("atp.understated", _understated(induction_siit=UNDERSTATED[FIXTURES.MODEL] | {TO_LOGITS}), "about right"),
    ("atp.ig_steps", 2, "too large"),
    ("atp.ig_steps", 5, "too small"),
    ("atp.validate", _verdict(exposes="edge_auroc[qkv]"), "one link missing"),
    ("atp.validate", _verdict(missing={TRAP_V}), "is in EAP's circuit"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_the_common_mistakes_are_named(ex_id, mistake, says):
    """A learner who computed the neighbouring quantity is told which one it was."""
    feedback = check(ex_id, mistake)
    assert not feedback.passed and says in f"{feedback.message} {feedback.hint}", feedback


def test_the_reference_functions_and_right_answers_pass():
    """toylab's own functions, written as a learner would call them, pass; so do answers computed from its methods
    and the truth, in each form the lesson accepts."""
    def every_head(model, pair):
        nodes = methods.eap(model, pair).nodes()
        return torch.tensor([[nodes[comp.head_id(layer, h)] for h in range(model.cfg.n_heads)]
                             for layer in range(model.cfg.n_layers)])

    assert check("atp.one_head", head_right).passed
    assert check("atp.every_head", every_head).passed
    assert check("atp.every_head", heads_right).passed
    assert check("atp.edge", lambda model, pair, edge: methods.eap(model, pair)[edge]).passed
    assert check("atp.edge", edge_right).passed
    assert check("atp.understated", UNDERSTATED).passed
    as_text = {name: {str(e) for e in edges} for name, edges in UNDERSTATED.items()}  # "L0H2 -> L1H1 (k)"
    assert check("atp.understated", as_text).passed
    assert check("atp.understated", {n: {tuple(e.to_list()) for e in s} for n, s in UNDERSTATED.items()}).passed
    assert check("atp.ig_steps", 16).passed
    reports = load("atp")._reports()  # the checker's harness runs (they take a second or two)
    assert all(r.summary()[FIXTURES.TRAP]["faithfulness"][2] == 1 for r in reports.values())
    gaps = FIXTURES.shortfalls(reports, FIXTURES.TRAP)
    circuit = reports["eap"].entries[0].circuit
    assert check("atp.validate", {"exposes": max(gaps, key=gaps.get),
                                  "missing": set(TRAP.truth.edges) - set(circuit)}).passed
