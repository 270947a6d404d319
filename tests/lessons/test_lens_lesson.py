"""Lesson 14 (logit lens and DLA): each checker rejects the mistakes a learner makes, with a reason and a hint, and
passes toylab's own functions; the fixtures' LayerNorm models, source split and truth stages hold what the lesson
says of them. (tests/lessons/test_runner.py runs the lesson itself, with its solutions and without.)"""

import pytest
import torch
from wrong_answers import wrong_answer_tests

from toylab import methods, zoo
from toylab.lessons import check, lesson_fixtures
from toylab.tasks import accuracy, logit_diff

FIXTURES = lesson_fixtures("lens")
MODELS = {name: zoo.load(name) for name in FIXTURES.MODELS}


@pytest.fixture(autouse=True)
def no_grad():
    """As in the lessons, which turn gradients off."""
    with torch.no_grad():
        yield


# ---- the fixtures ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [FIXTURES.MODEL, FIXTURES.RECALL])
def test_with_layernorm_keeps_the_task_and_leaves_the_zoo_model_alone(name):
    zm = MODELS[name]
    before = {k: v.clone() for k, v in zm.model.state_dict().items()}
    normed = FIXTURES.layernorm_model(name)
    assert normed.cfg.normalization_type == "LN" and zm.model.cfg.normalization_type is None
    assert all(torch.equal(v, before[k]) for k, v in zm.model.state_dict().items())
    batch = zm.task.sample(256, seed=3)
    assert float(accuracy(normed(batch.tokens), batch)) > 0.95
    # The LayerNorms do normalise: the final stream's scale varies from position to position.
    scale = normed.run_with_cache(batch.tokens, names=["ln_final.hook_scale"])[1]["ln_final.hook_scale"]
    assert float(scale.std() / scale.mean()) > 0.1
    with pytest.raises(ValueError, match="without LayerNorm"):
        FIXTURES.with_layernorm(normed, zm.task)


def test_the_frozen_scale_adds_up_and_each_terms_own_scale_does_not():
    """The lesson's claim in section 5, on the LayerNorm models."""
    for name in (FIXTURES.MODEL, FIXTURES.RECALL):
        model, task = FIXTURES.layernorm_model(name), MODELS[name].task
        pair = task.counterfactual(64, seed=4)
        dla = methods.direct_logit_attribution(model, pair)
        assert float(dla.total.sum()) + dla.offset == pytest.approx(float(logit_diff(model(pair.clean.tokens), pair)),
                                                                    abs=1e-3)
        cfg = model.cfg
        names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{layer}.attn.hook_result" for layer in range(2)]
        names += [] if cfg.attn_only else [f"blocks.{layer}.hook_mlp_out" for layer in range(2)]
        _, cache = model.run_with_cache(pair.clean.tokens, names=names)
        terms = [cache["hook_embed"], cache["hook_pos_embed"]]
        terms += [t for layer in range(2) for t in cache[f"blocks.{layer}.attn.hook_result"].unbind(2)]
        terms += [] if cfg.attn_only else [cache[f"blocks.{layer}.hook_mlp_out"] for layer in range(2)]
        direction, mask = FIXTURES.answer_direction(model, pair)
        ln = model.ln_final
        own = sum(float(((ln(t) - ln.b) * direction).sum(-1)[mask].mean()) for t in terms)
        assert abs(own - float(dla.total.sum())) > 0.1 * abs(dla.metric)


@pytest.mark.parametrize("name,head", [("ioi-siit", "L2H0"), ("ioi-siit", "L3H2"), ("factual-recall", "L1H1"),
                                       ("induction-siit", "L1H1")])
def test_head_sources_sum_to_the_heads_direct_attribution(name, head):
    zm = MODELS[name]
    pair = zm.task.counterfactual(32, seed=5)
    dla = methods.direct_logit_attribution(zm.model, pair)
    split = FIXTURES.head_sources(zm.model, pair, int(head[1]), int(head[3:]))  # [batch, key_pos]
    rows = FIXTURES.answer_direction(zm.model, pair)[1].any(1)
    assert torch.allclose(split[rows].sum(-1), dla.per_row[dla.components.index(head)][rows], atol=1e-3)
    if name == "factual-recall":  # the attribute mover reads the subject, where the truth's MLP0 wrote the fact
        assert float(split[rows, 2].sum() / split[rows].sum()) > 0.99


def test_truth_stages_are_where_the_lens_first_decodes_the_answer():
    for name, zm in MODELS.items():
        lens = methods.logit_lens(zm.model, zm.task.sample(256, seed=6))
        first = next(s for s, a in zip(lens.stages, lens.accuracy.tolist()) if a >= FIXTURES.DECODABLE)
        assert FIXTURES.truth_stage(zm) == first, name
    cfg = MODELS["factual-recall"].model.cfg
    assert [FIXTURES.stage_after(cfg, c) for c in ("L0H1", "MLP0", "L1H1", "MLP1")] == \
        ["resid_mid 0", "resid_pre 1", "resid_mid 1", "resid_post 1"]


# ---- mistakes in the implementations -------------------------------------------------------------


def _resid(model, tokens, hook):
    return model.run_with_cache(tokens, names=[hook, "ln_final.hook_scale"] if hasattr(model.ln_final, "w")
                                else [hook])[1]


def decode_without_ln_final(model, tokens, hook):
    return model.unembed(_resid(model, tokens, hook)[hook])


def decode_with_the_final_scale(model, tokens, hook):
    cache = _resid(model, tokens, hook)
    x, ln = cache[hook], model.ln_final
    if not hasattr(ln, "w"):
        return model.unembed(x)
    return model.unembed((x - x.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"] * ln.w + ln.b)


def decode_without_b_U(model, tokens, hook):
    return model.ln_final(_resid(model, tokens, hook)[hook]) @ model.unembed.W_U


def decode_the_model_output(model, tokens, hook):
    return model(tokens)


def _terms(model, tokens, mlp_bias="bias", with_bias=True):
    cfg = model.cfg
    names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{layer}.attn.hook_result" for layer in range(cfg.n_layers)]
    names += [] if cfg.attn_only else [f"blocks.{layer}.hook_mlp_out" for layer in range(cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names=names)
    labels, terms = ["embed", "pos_embed"], [cache["hook_embed"], cache["hook_pos_embed"]]
    bias = sum(block.attn.b_O for block in model.blocks)
    for layer in range(cfg.n_layers):
        labels += [f"L{layer}H{h}" for h in range(cfg.n_heads)]
        terms += list(cache[f"blocks.{layer}.attn.hook_result"].unbind(2))
    for layer in range(0 if cfg.attn_only else cfg.n_layers):
        b_out = model.blocks[layer].mlp.b_out
        labels.append(f"MLP{layer}")
        terms.append(cache[f"blocks.{layer}.hook_mlp_out"] - (b_out if mlp_bias == "bias" else 0))
        bias = bias + (b_out if mlp_bias != "mlp" else 0)
    if with_bias:
        labels.append("bias")
        terms.append(bias.expand_as(terms[0]))
    return labels, torch.stack(terms)


def _dla(model, pair, stack_fn=None, answer_only=False, masked=True, reduce="mean", **terms):
    labels, stack = _terms(model, pair.clean.tokens, **terms)
    if stack_fn is not None:
        stack = stack_fn(model, pair, stack)
    direction, mask = FIXTURES.answer_direction(model, pair)
    if answer_only:
        direction = model.unembed.W_U.T[pair.clean.targets.clamp(min=0)]
    if not masked:
        mask = torch.ones_like(mask)
    values = (stack * direction).sum(-1)[:, mask]
    return dict(zip(labels, (values.mean(-1) if reduce == "mean" else values.sum(-1)).tolist()))


def dla_answer_logit_only(model, pair):
    return _dla(model, pair, answer_only=True)


def dla_every_position(model, pair):
    return _dla(model, pair, masked=False)


def dla_summed(model, pair):
    return _dla(model, pair, reduce="sum")


def dla_b_out_twice(model, pair):
    return _dla(model, pair, mlp_bias="both")


def dla_b_out_in_the_mlp(model, pair):
    return _dla(model, pair, mlp_bias="mlp")


def dla_without_bias(model, pair):
    return _dla(model, pair, with_bias=False)


def dla_as_a_tensor(model, pair):
    return torch.tensor(list(_dla(model, pair).values()))


def _sources(model, pair, layer, head, spec="bqk,bkm,bqm->bqk", masked=True, pattern_fn=None):
    direction, mask = FIXTURES.answer_direction(model, pair)
    names = [f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_v"]
    _, cache = model.run_with_cache(pair.clean.tokens, names=names)
    pattern = cache[names[0]][:, head]
    written = cache[names[1]][:, :, head] @ model.blocks[layer].attn.W_O[head]
    per = torch.einsum(spec, pattern, written, direction) if spec.count(",") == 2 else \
        torch.einsum(spec, written, direction)
    weight = (mask if masked else torch.ones_like(mask)).float()
    if per.dim() == 2:  # by query position
        return per * weight
    return (per * weight[..., None]).sum(1) / weight.sum(1).clamp(min=1)[:, None]


def sources_without_the_pattern(model, pair, layer, head):
    return _sources(model, pair, layer, head, spec="bkm,bqm->bqk")


def sources_pattern_transposed(model, pair, layer, head):
    return _sources(model, pair, layer, head, spec="bkq,bkm,bqm->bqk")


def sources_every_query(model, pair, layer, head):
    return _sources(model, pair, layer, head, masked=False)


def sources_by_query(model, pair, layer, head):
    return _sources(model, pair, layer, head, spec="bqk,bkm,bqm->bq")


def sources_summed_over_rows(model, pair, layer, head):
    return _sources(model, pair, layer, head).sum(0)


def _ln_stack(kind):
    def transform(model, pair, stack):
        ln = model.ln_final
        scale = model.run_with_cache(pair.clean.tokens, names=["ln_final.hook_scale"])[1]["ln_final.hook_scale"]
        centred = stack - stack.mean(-1, keepdim=True)
        own = (centred.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt()
        return {"own scale": centred / own * ln.w, "through ln_final": ln(stack), "uncentred": stack / scale * ln.w,
                "no w": centred / scale, "b per term": centred / scale * ln.w + ln.b,
                "mean scale": centred / scale.mean() * ln.w}[kind]
    return transform


def frozen_own_scale(model, pair):
    return _dla(model, pair, _ln_stack("own scale"))


def frozen_through_ln_final(model, pair):
    return _dla(model, pair, _ln_stack("through ln_final"))


def frozen_ignoring_layernorm(model, pair):
    return _dla(model, pair)


def frozen_uncentred(model, pair):
    return _dla(model, pair, _ln_stack("uncentred"))


def frozen_without_w(model, pair):
    return _dla(model, pair, _ln_stack("no w"))


def frozen_b_per_term(model, pair):
    return _dla(model, pair, _ln_stack("b per term"))


def frozen_mean_scale(model, pair):
    return _dla(model, pair, _ln_stack("mean scale"))


# ---- mistakes in the answers -----------------------------------------------------------------------


def _stages(**changes):
    right = {name: FIXTURES.truth_stage(zm) for name, zm in MODELS.items()} | {"attribute_at_subject": False}
    return {**right, **changes}


def _direct(model=None, **changes):
    right = {}
    for name, zm in MODELS.items():
        parts = FIXTURES.circuit_components(zm.truth)
        direct = FIXTURES.direct_writers(zm.truth) & parts
        right[name] = {"direct": direct, "indirect": parts - direct}
    right["factual-recall"]["source"] = "subject"
    right["ioi-siit"]["source"] = "IO"
    if model is not None:
        right[model] = {**right[model], **changes}
    return right


def _moved(model, component, to):
    part = _direct()[model]
    direct, indirect = set(part["direct"]) - {component}, set(part["indirect"]) - {component}
    (direct if to == "direct" else indirect).add(component)
    return _direct(model, direct=direct, indirect=indirect)


WRONG = {
    "lens.decode": [decode_without_ln_final, decode_with_the_final_scale, decode_without_b_U, decode_the_model_output,
                    "not a function"],
    "lens.stage": [_stages(**{"factual-recall": "resid_post 1"}), _stages(**{"induction-siit": "resid_pre 1"}),
                   _stages(**{"ioi-siit": "resid_post 3"}), _stages(attribute_at_subject=True),
                   _stages(**{"ioi-siit": "layer 2"}), {"induction-siit": "resid_post 1"}, "garbage"],
    "lens.dla": [dla_answer_logit_only, dla_every_position, dla_summed, dla_b_out_twice, dla_b_out_in_the_mlp,
                 dla_without_bias, dla_as_a_tensor, "not a function"],
    "lens.sources": [sources_without_the_pattern, sources_pattern_transposed, sources_every_query, sources_by_query,
                     sources_summed_over_rows, "not a function"],
    "lens.layernorm": [frozen_own_scale, frozen_through_ln_final, frozen_ignoring_layernorm, frozen_uncentred,
                       frozen_without_w, frozen_b_per_term, frozen_mean_scale, "not a function"],
    "lens.direct": [_moved("induction-siit", "L0H2", "direct"), _moved("ioi-siit", "L1H1", "indirect"),
                    _moved("ioi-siit", "L3H2", "indirect"), _moved("factual-recall", "MLP0", "direct"),
                    _direct("factual-recall", indirect={"L0H1", "MLP0", "MLP1"}),
                    _direct("factual-recall", source="answer"), _direct("ioi-siit", source="S"),
                    _direct("ioi-siit", direct={"L2H0"}), {"ioi-siit": {}}, "garbage"],
}


(test_wrong_answers_are_rejected_with_a_message_and_a_hint,
 test_every_exercise_of_the_lesson_has_wrong_answers_under_test) = wrong_answer_tests("lens", WRONG)


@pytest.mark.parametrize("ex_id,mistake,says", [
    ("lens.decode", decode_without_ln_final, "skips ln_final"),
    ("lens.decode", decode_with_the_final_scale, "own scale"),
    ("lens.decode", decode_without_b_U, "b_U"),
    ("lens.decode", decode_the_model_output, "last stage"),
    ("lens.stage", _stages(**{"factual-recall": "resid_post 1"}), "already decodes"),
    ("lens.stage", _stages(**{"induction-siit": "resid_pre 1"}), "not written yet"),
    ("lens.dla", dla_answer_logit_only, "logit alone"),
    ("lens.dla", dla_every_position, "every position"),
    ("lens.dla", dla_summed, "take the mean"),
    ("lens.dla", dla_b_out_twice, "counted twice"),
    ("lens.dla", dla_b_out_in_the_mlp, "belongs to 'bias'"),
    ("lens.dla", dla_without_bias, "missing ['bias']"),
    ("lens.sources", sources_without_the_pattern, "leaves out the pattern"),
    ("lens.sources", sources_pattern_transposed, "pattern[:, head, q, k]"),
    ("lens.sources", sources_every_query, "every query position"),
    ("lens.sources", sources_by_query, "split by query position"),
    ("lens.layernorm", frozen_own_scale, "its own scale"),
    ("lens.layernorm", frozen_through_ln_final, "through ln_final on its own"),
    ("lens.layernorm", frozen_ignoring_layernorm, "ignores the LayerNorm"),
    ("lens.layernorm", frozen_uncentred, "not centred"),
    ("lens.layernorm", frozen_without_w, "gain w"),
    ("lens.layernorm", frozen_b_per_term, "offset (once)"),
    ("lens.layernorm", frozen_mean_scale, "one mean scale"),
    ("lens.direct", _moved("induction-siit", "L0H2", "direct"), "previous-token"),
    ("lens.direct", _moved("ioi-siit", "L1H1", "indirect"), "optional"),
    ("lens.direct", _moved("ioi-siit", "L3H2", "indirect"), "against the answer"),
    ("lens.direct", _direct("factual-recall", indirect={"L0H1", "MLP0", "MLP1"}), "not in the truth"),
    ("lens.direct", _direct("ioi-siit", source="S"), "whose name stands there"),
    ("lens.direct", _direct("factual-recall", source="answer"), "task.positions"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_the_common_mistakes_are_named(ex_id, mistake, says):
    """A learner who computed the neighbouring quantity is told which one it was."""
    feedback = check(ex_id, mistake)
    assert not feedback.passed and says in f"{feedback.message} {feedback.hint}", feedback


def test_the_reference_functions_and_right_answers_pass():
    """toylab's own functions, written as a learner would call them, pass; so do answers read off the truth."""
    def decode(model, tokens, hook):
        return model.unembed(model.ln_final(model.run_with_cache(tokens, names=[hook])[1][hook]))

    def dla(model, pair):
        result = methods.direct_logit_attribution(model, pair)
        return dict(zip(result.components, result.total.tolist()))

    def sources(model, pair, layer, head):
        return FIXTURES.head_sources(model, pair, layer, head)

    assert check("lens.decode", decode).passed
    assert check("lens.stage", _stages()).passed
    hooks = {name: methods.logit_lens(zm.model, zm.task.sample(1, seed=0)) for name, zm in MODELS.items()}
    as_hooks = {name: lens.hooks[lens.stages.index(_stages()[name])] for name, lens in hooks.items()}
    assert check("lens.stage", _stages(**as_hooks)).passed  # "blocks.1.hook_resid_mid" reads as "resid_mid 1"
    assert check("lens.dla", dla).passed
    assert check("lens.sources", sources).passed
    assert check("lens.layernorm", dla).passed  # methods.direct_logit_attribution freezes the scale
    assert check("lens.direct", _direct()).passed
    assert check("lens.direct", _direct("ioi-siit", source="io")).passed
