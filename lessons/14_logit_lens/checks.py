"""Checkers for lesson 14, the logit lens and direct logit attribution: implementations are compared with
toylab.methods.lens (``logit_lens``, ``direct_logit_attribution``) on the checker's own prompts and pairs (never the
lesson's), on zoo models and on the fixtures' LayerNorm models; answers are checked against the truth: the stage
after its direct writers, its edges into the logits, the positions its variables and roles name."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch

from toylab import methods
from toylab.components import parse
from toylab.lessons.checking import call, expect_close, number, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.tasks import Batch

from .fixtures import (
    DECODABLE,
    IOI,
    MODEL,
    MODELS,
    N_PAIRS,
    RECALL,
    answer_direction,
    circuit_components,
    direct_writers,
    head_sources,
    layernorm_model,
    truth_stage,
)

CHECK_SEED = 10  # the checker's prompts and pairs, never the lesson's (seed 0)
N_CHECK = 16  # prompts a decoding is compared on
DIRECT_SHARE = 0.05  # exercise 14.6: "direct" is |DLA| at least this share of the logit difference


def _zm(name: str):
    return zoo_model(name)


def _model(name: str, ln: bool):
    return layernorm_model(name) if ln else _zm(name).model


def _what(name: str, ln: bool) -> str:
    return f"{name} with LayerNorm" if ln else name


@cache
def _pair(name: str):
    return _zm(name).task.counterfactual(N_PAIRS, seed=CHECK_SEED)


def _expect(got: Any, want: torch.Tensor, what: str, atol: float, hint: str, mistake: Callable[..., str | None],
            *args: Any) -> None:
    """``expect_close``, with the hint of the mistake ``mistake(got, *args)`` names, computed only when the answer
    is wrong (else ``hint``)."""
    try:
        expect_close(got, want, what, atol=atol)
    except Wrong as wrong:
        raise Wrong(wrong.message, mistake(got, *args) or hint) from None


# ---- 14.1 ------------------------------------------------------------------------------------------------------


def _decode_mistake(got: Any, model, tokens: torch.Tensor, hook: str) -> str | None:
    """Which neighbouring quantity a wrong ``lens_logits`` returned."""
    if not isinstance(got, torch.Tensor):
        return None
    with torch.no_grad():
        stages = methods.logit_lens(model, Batch(tokens, torch.zeros_like(tokens))).hooks
        ln = model.ln_final
        scale = {"ln_final.hook_scale"} if hasattr(ln, "w") else set()  # a model without LayerNorm has no scale
        _, cache = model.run_with_cache(tokens, names=sorted(set(stages) | {hook} | scale))
        resid, unembed = cache[hook], model.unembed
        neighbours = [(unembed(resid), "that skips ln_final: the model normalises its stream before the unembedding")]
        if hasattr(ln, "w"):
            frozen = (resid - resid.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"] * ln.w + ln.b
            neighbours.append((unembed(frozen), ("that divides by the final stream's scale (ln_final.hook_scale): the "
                                                "lens decodes this stage as the model would its last, so ln_final "
                                                "computes this stream's own scale: model.ln_final(resid)")))
        neighbours.append((ln(resid) @ unembed.W_U, "that leaves out b_U: model.unembed adds it"))
        final = stages[-1]
        for other in stages:
            if other != hook:
                says = ("that is the model's output, the last stage: decode the stream at the hook given"
                        if other == final else f"that decodes {other}, not {hook}")
                neighbours.append((unembed(ln(cache[other])), says))
    for value, says in neighbours:
        if got.shape == value.shape and torch.allclose(got.detach().float(), value, atol=1e-4, rtol=1e-4):
            return says
    return None


@exercise("lens.decode", "Decode one stage", "implement", "easy", 10,
          hint="_, cache = model.run_with_cache(tokens, names=[hook]); return model.unembed(model.ln_final(cache[hook]))")
def _decode(fn) -> str:
    cases = [(MODEL, False, "blocks.1.hook_resid_pre"), (RECALL, False, "blocks.1.hook_resid_mid"),
             (MODEL, True, "blocks.1.hook_resid_pre"), (RECALL, True, "blocks.0.hook_resid_mid")]
    for name, ln, hook in cases:
        model, task = _model(name, ln), _zm(name).task
        batch = task.sample(N_CHECK, seed=CHECK_SEED)
        with torch.no_grad():
            _, cache = model.run_with_cache(batch.tokens, names=[hook])
            want = model.unembed(model.ln_final(cache[hook]))  # [batch, pos, d_vocab_out]
            got = call(fn, model, batch.tokens, hook)
        _expect(got, want, f"{_what(name, ln)}, {hook}", 1e-4,
                "return [batch, pos, d_vocab_out]: model.unembed(model.ln_final(stream at the hook))",
                _decode_mistake, model, batch.tokens, hook)
        lens = methods.logit_lens(model, batch)
        scored = batch.scored
        loss = torch.nn.functional.cross_entropy(got.detach().float()[scored], batch.targets[scored])
        if abs(float(loss) - float(lens.loss[lens.hooks.index(hook)])) > 1e-3:  # cannot differ once the logits agree
            raise Wrong(f"{_what(name, ln)}, {hook}: your logits' loss {float(loss):.4f} is not methods.logit_lens's")
    return ("your decodings match the logit lens at four stages, on two zoo models and on their LayerNorm versions "
            "(where ln_final computes each stage's own scale); their loss is methods.logit_lens's")


# ---- 14.2 ------------------------------------------------------------------------------------------------------


@cache
def _lens(name: str):
    zm = _zm(name)
    return methods.logit_lens(zm.model, zm.task.sample(256, seed=CHECK_SEED))


def _fact_site(zm) -> tuple[str, int]:
    """The truth's fact store of factual-recall: its component and the position it writes the attribute at."""
    (variable,) = [v for v in zm.truth.variables if v.name == "attribute"]
    return variable.components[0], int(variable.positions)


@cache
def _subject_lens():
    """The logit lens of factual-recall scored with the answer as the target where the truth stores the fact."""
    zm = _zm(RECALL)
    _, pos = _fact_site(zm)
    batch = zm.task.sample(256, seed=CHECK_SEED)
    targets = torch.full_like(batch.targets, -1)
    targets[:, pos] = batch.targets[:, zm.task.positions["answer"]]
    return methods.logit_lens(zm.model, Batch(batch.tokens, targets))


def _stage_label(value: Any, lens, what: str) -> str:
    if isinstance(value, str) and value in lens.hooks:
        return lens.stages[lens.hooks.index(value)]
    if not isinstance(value, str) or value not in lens.stages:
        raise Wrong(f"{what}: expected a stage label, one of {lens.stages}, got {value!r}")
    return value


@exercise("lens.stage", "Where does the answer appear?", "answer", "easy", 10,
          hint="for each model, the first label of lens.stages whose lens.accuracy is at least DECODABLE; for the "
               "subject, whether subject_lens reaches DECODABLE at resid_pre 1 or before")
def _stage(answer: Any) -> str:
    keys = (*MODELS, "attribute_at_subject")
    if not isinstance(answer, dict) or set(answer) != set(keys):
        raise Wrong(f"answer with a dict with the keys {keys}, got {answer!r}")
    said = []
    for name in MODELS:
        zm, lens = _zm(name), _lens(name)
        got = _stage_label(answer[name], lens, name)
        want = truth_stage(zm)  # right after the truth's last direct writer
        accuracy = dict(zip(lens.stages, lens.accuracy.tolist()))
        writers = sorted(c for c in direct_writers(zm.truth) if not zm.truth.nodes[c].startswith("negative"))
        if got != want:
            if lens.stages.index(got) > lens.stages.index(want):
                says = (f"the lens already decodes the answer at {want} (accuracy {accuracy[want]:.2f}): the first "
                        "stage is asked for")
            else:
                says = (f"at {got} the lens's accuracy is {accuracy[got]:.2f}, below {DECODABLE}: the writers have not "
                        "written yet")
            raise Wrong(f"{name}: {got}", f"{says}; the truth's direct writers are {writers}")
        said.append(f"{name} at {want} (after {', '.join(writers)})")
    recall = _zm(RECALL)
    component, _pos = _fact_site(recall)
    subject_lens = _subject_lens()
    mover = max(direct_writers(recall.truth), key=lambda c: parse(c)[1])  # the head that reads the subject at "="
    upto = subject_lens.stages[:subject_lens.stages.index(f"resid_pre {parse(mover)[1]}") + 1]
    best = max(subject_lens[label]["accuracy"] for label in upto)
    decodable = best >= DECODABLE
    if answer["attribute_at_subject"] is not decodable:
        raise Wrong(f"attribute_at_subject: {answer['attribute_at_subject']!r}",
                    f"answer True or False: the lens's best accuracy at the subject up to resid_pre 1 is {best:.2f}, "
                    f"the bar is {DECODABLE}")
    return (f"the answer appears right after the truth's last direct writer: {'; '.join(said)}. At the subject, "
            f"where the truth's {component} writes the attribute, the lens reads it at best {best:.0%} of the time: "
            "stored, but not in a direction the unembedding reads")


# ---- 14.3 ------------------------------------------------------------------------------------------------------


def _terms(model, tokens: torch.Tensor, mlp_bias: str = "bias") -> tuple[list[str], torch.Tensor]:
    """The final stream's terms, [component, batch, pos, d_model]; ``mlp_bias``: where each b_out goes ("bias",
    "mlp": only in its MLP's term, "both")."""
    cfg = model.cfg
    names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{layer}.attn.hook_result" for layer in range(cfg.n_layers)]
    names += [] if cfg.attn_only else [f"blocks.{layer}.hook_mlp_out" for layer in range(cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=names)
        labels, terms = ["embed", "pos_embed"], [cache["hook_embed"], cache["hook_pos_embed"]]
        bias = sum(block.attn.b_O for block in model.blocks)
        for layer in range(cfg.n_layers):
            labels += [f"L{layer}H{h}" for h in range(cfg.n_heads)]
            terms += list(cache[f"blocks.{layer}.attn.hook_result"].unbind(2))
        for layer in range(0 if cfg.attn_only else cfg.n_layers):
            b_out = model.blocks[layer].mlp.b_out
            labels.append(f"MLP{layer}")
            terms.append(cache[f"blocks.{layer}.hook_mlp_out"] - (0 if mlp_bias != "bias" else b_out))
            bias = bias + (b_out if mlp_bias != "mlp" else 0)
        labels.append("bias")
        terms.append(bias.expand_as(terms[0]))
        return labels, torch.stack(terms)


def _attribute(model, pair, stack: torch.Tensor, answer_only: bool = False, masked: bool = True,
               total: bool = False) -> torch.Tensor:
    """Each term's projection on the answer direction, averaged over the scored (row, position)s: [component]."""
    direction, mask = answer_direction(model, pair)
    if answer_only:
        direction = model.unembed.W_U.detach().T[pair.clean.targets.clamp(min=0)]
    if not masked:
        mask = torch.ones_like(mask)
    attribution = (stack * direction).sum(-1)[:, mask]  # [component, scored]
    return attribution.sum(-1) if total else attribution.mean(-1)


def _attributions(got: Any, components: list[str], what: str) -> torch.Tensor:
    """A learner's {component: attribution} as a tensor in ``components``' order, or Wrong."""
    if not isinstance(got, dict):
        raise Wrong(f"{what}: return a dict {{component: attribution}}, got {type(got).__name__}")
    missing, extra = [c for c in components if c not in got], sorted(set(got) - set(components), key=str)
    if missing or extra:
        hint = ("a head is L{layer}H{head}, an MLP MLP{layer}; 'bias' holds every b_O and b_out"
                if missing else "the components are embed, pos_embed, the heads, the MLPs and bias")
        raise Wrong(f"{what}: the components are {components}; " + (f"missing {missing}" if missing else "")
                    + ("; " if missing and extra else "") + (f"not components: {extra}" if extra else ""), hint)
    return torch.tensor([number(got[c], f"{what}: {c}") for c in components])


def _dla_mistake(got: torch.Tensor, model, pair) -> str | None:
    """Which neighbouring attribution a wrong ``dla_by_hand`` returned."""
    tokens = pair.clean.tokens
    _labels, stack = _terms(model, tokens)
    neighbours = [
        (_attribute(model, pair, stack, answer_only=True), ("that is the answer's logit alone: project on W_U[:, answer] "
                                                           "- W_U[:, counterfactual answer], answer_direction's")),
        (_attribute(model, pair, stack, masked=False), ("that averages every position: only the scored ones, where "
                                                       "the mask is True")),
        (_attribute(model, pair, stack, total=True), "that is the sum over the scored positions: take the mean"),
    ]
    if not model.cfg.attn_only:
        neighbours += [
            (_attribute(model, pair, _terms(model, tokens, "both")[1]),
             "b_out is counted twice: hook_mlp_out includes it, and so does bias; take it out of the MLP's term"),
            (_attribute(model, pair, _terms(model, tokens, "mlp")[1]),
             "each MLP's bias b_out belongs to 'bias', with the b_O: the MLP's term is hook_mlp_out - b_out"),
        ]
    for value, says in neighbours:
        if torch.allclose(got, value.float(), atol=1e-3, rtol=1e-4):
            return says
    return None


@exercise("lens.dla", "DLA by hand", "implement", "medium", 20,
          hint="terms: hook_embed, hook_pos_embed, hook_result[:, :, h] per head, hook_mlp_out - b_out per MLP, the "
               "sum of every b_O and b_out; attribution = (terms * direction).sum(-1), averaged where mask is True")
def _dla(fn) -> str:
    sums = []
    for name in (MODEL, RECALL):
        model, pair = _zm(name).model, _pair(name)
        with torch.no_grad():
            want = methods.direct_logit_attribution(model, pair)
            got = _attributions(call(fn, model, pair), want.components, name)
        _expect(got, want.total, f"{name}: the attributions in the order {want.components}", 1e-3,
                "embed, pos_embed, each head's hook_result, each MLP's hook_mlp_out - b_out and bias (every b_O and "
                "b_out), each projected on answer_direction's direction and averaged where its mask is True",
                _dla_mistake, model, pair)
        sums.append(f"{name} {float(got.sum()) + want.offset:.3f} = {want.metric:.3f}")
    return ("your attributions match methods.direct_logit_attribution, and with b_U's offset they add up to the logit "
            f"difference: {'; '.join(sums)}")


# ---- 14.4 ------------------------------------------------------------------------------------------------------


def _sources_mistake(_compared: Any, got: Any, model, pair, layer: int, head: int, rows: torch.Tensor) -> str | None:
    """Which neighbouring split a wrong ``sources`` returned (``got``, all of it; ``_compared``, the rows compared)."""
    if not isinstance(got, torch.Tensor):
        return None
    direction, mask = answer_direction(model, pair)
    names = [f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_v"]
    with torch.no_grad():
        _, cache = model.run_with_cache(pair.clean.tokens, names=names)
        pattern = cache[names[0]][:, head]  # [batch, query_pos, key_pos]
        written = cache[names[1]][:, :, head] @ model.blocks[layer].attn.W_O[head]  # [batch, key_pos, d_model]
        weight = mask.float()

        def average(per_query: torch.Tensor, w: torch.Tensor = weight) -> torch.Tensor:  # [batch, query, key]
            return (per_query * w[..., None]).sum(1) / w.sum(1).clamp(min=1)[:, None]

        einsum = torch.einsum
        neighbours = [
            (average(einsum("bkm,bqm->bqk", written, direction)),
             "that leaves out the pattern: key k gives pattern[q, k] * (v[k] @ W_O), weighted by the attention"),
            (average(einsum("bkq,bkm,bqm->bqk", pattern, written, direction)),
             "the pattern is [batch, head, query_pos, key_pos]: read it as pattern[:, head, q, k]"),
            (average(einsum("bqk,bkm,bqm->bqk", pattern, written, direction), torch.ones_like(weight)),
             "that averages every query position: only the scored ones, where answer_direction's mask is True"),
            (average(einsum("bqk,bkm,bqm->bqk", pattern, written, direction)).flip(-1),
             "the positions are reversed"),
            ((einsum("bqk,bkm,bqm->bq", pattern, written, direction) * weight),
             "that is split by query position: split each scored query's attribution by the key it reads"),
        ]
    for value, says in neighbours:
        if got.shape == value.shape and torch.allclose(got[rows].float(), value[rows], atol=1e-4, rtol=1e-4):
            return says
    return None


@exercise("lens.sources", "Where a head's direct effect comes from", "implement", "hard", 20,
          hint="pattern = cache['blocks.{layer}.attn.hook_pattern'][:, head]; written = cache['blocks.{layer}.attn."
               "hook_v'][:, :, head] @ W_O[head]; per = einsum('bqk,bkm,bqm->bqk', pattern, written, direction); "
               "average per over the scored query positions of each row")
def _sources(fn) -> str:
    cases = [(IOI, "L2H0"), (RECALL, "L1H1"), (MODEL, "L1H1")]
    said = []
    for name, head_id in cases:
        zm, pair = _zm(name), _pair(name)
        _, layer, head = parse(head_id)
        rows = answer_direction(zm.model, pair)[1].any(1)  # [batch]: rows with a scored position
        with torch.no_grad():
            want = head_sources(zm.model, pair, layer, head)  # [batch, key_pos]
            got = call(fn, zm.model, pair, layer, head)
        what = f"{name} {head_id}"
        explain = ("[batch, key_pos]: pattern[q, k] * (v[k] @ W_O) . direction[q], averaged over the scored query "
                   "positions q of each row")
        if isinstance(got, torch.Tensor) and got.shape == want.shape:
            _expect(got.detach()[rows], want[rows], f"{what}, on the rows with a scored position", 1e-4, explain,
                    _sources_mistake, got, zm.model, pair, layer, head, rows)
        else:
            _expect(got, want, what, 1e-4, explain, _sources_mistake, got, zm.model, pair, layer, head, rows)
        share = want[rows].sum(0) / want[rows].sum()  # [key_pos]
        if name == RECALL:
            _, pos = _fact_site(zm)
            said.append(f"factual-recall's attribute mover L1H1 reads {float(share[pos]):.0%} of it from the subject, "
                        "where the truth's MLP0 writes the fact")
        elif name == IOI:
            io = zm.task.name_token(zm.task.variables(pair.clean.tokens)["io"])  # [batch]
            at_io = float((want * (pair.clean.tokens == io[:, None])).sum() / want.sum())
            said.append(f"ioi-siit's name mover L2H0 reads {at_io:.0%} of it from the IO token")
    return "each row sums to the head's direct attribution, split by where it reads; " + "; ".join(said)


# ---- 14.5 ------------------------------------------------------------------------------------------------------


def _layernorm_mistake(got: torch.Tensor, model, pair) -> str | None:
    """Which neighbouring attribution a wrong ``dla_frozen`` returned."""
    _labels, stack = _terms(model, pair.clean.tokens)
    ln = model.ln_final
    with torch.no_grad():
        _, cache = model.run_with_cache(pair.clean.tokens, names=["ln_final.hook_scale"])
        scale = cache["ln_final.hook_scale"]  # [batch, pos, 1]
        centred = stack - stack.mean(-1, keepdim=True)
        own = (centred.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt()
        neighbours = [
            (centred / own * ln.w, ("each term is divided by its own scale: freeze the scale of the actual final "
                                   "stream, ln_final.hook_scale, the same for every term")),
            (centred / own * ln.w + ln.b, ("each term went through ln_final on its own: its own scale, and b once per "
                                          "term; freeze the final stream's scale and leave b to the offset")),
            (stack, "that ignores the LayerNorm: centre each term, divide by ln_final.hook_scale, multiply by w"),
            (stack / scale * ln.w, "the terms are not centred: ln_final subtracts the mean over d_model first"),
            (centred / scale, "that leaves out the gain w: multiply by model.ln_final.w"),
            (centred / scale * ln.w + ln.b, ("b is added to every term: it is not any component's, it goes to the "
                                            "offset (once)")),
            (centred / scale.mean() * ln.w, ("that divides by one mean scale: each (row, position) has its own, "
                                            "ln_final.hook_scale [batch, pos, 1]")),
        ]
    for value, says in neighbours:
        if torch.allclose(got, _attribute(model, pair, value).float(), atol=1e-3, rtol=1e-4):
            return says
    return None


@exercise("lens.layernorm", "DLA through a frozen LayerNorm", "implement", "medium", 15,
          hint="terms as in dla_by_hand; centred = terms - terms.mean(-1, keepdim=True); normed = centred / "
               "cache['ln_final.hook_scale'] * model.ln_final.w; then project on the direction and average")
def _layernorm(fn) -> str:
    said = []
    for name in (MODEL, RECALL):
        model, pair = layernorm_model(name), _pair(name)
        with torch.no_grad():
            want = methods.direct_logit_attribution(model, pair)
            got = _attributions(call(fn, model, pair), want.components, _what(name, True))
        _expect(got, want.total, f"{_what(name, True)}: the attributions in the order {want.components}", 1e-3,
                "centre each term, divide it by the run's ln_final.hook_scale and multiply by ln_final.w, then "
                "project and average as in dla_by_hand", _layernorm_mistake, model, pair)
        said.append(f"{_what(name, True)}: {float(got.sum()) + want.offset:.3f} = {want.metric:.3f}")
    return ("your attributions match methods.direct_logit_attribution through the frozen scale, and with the offset "
            f"(b_U and ln_final.b) they add up to the logit difference: {'; '.join(said)}")


# ---- 14.6 ------------------------------------------------------------------------------------------------------


def _components(value: Any, what: str) -> set[str]:
    items = [value] if isinstance(value, str) else value
    try:
        items = set(items)
    except TypeError:
        raise Wrong(f"{what}: expected a set of component ids such as 'L1H1' or 'MLP0', got {value!r}") from None
    for item in items:
        try:
            kind = parse(item)[0] if isinstance(item, str) else None
        except ValueError:
            kind = None
        if kind not in ("head", "mlp"):
            raise Wrong(f"{what}: {item!r} is not a head or an MLP; write 'L{{layer}}H{{head}}' or 'MLP{{layer}}'")
    return items


def _source(zm, name: str) -> tuple[str, set[str]]:
    """Where the truth says the main writer of ``name`` reads its answer: a name, and the spellings accepted."""
    if name == RECALL:  # the attribute mover reads the variable its truth edge carries, at the position it names
        writer = max(direct_writers(zm.truth), key=lambda c: parse(c)[1])
        (read,) = [e.sender for e in zm.truth.edges if e.receiver == writer and e.kind == "v"]
        (variable,) = [v for v in zm.truth.variables if read in v.components]
        part = {index: key for key, index in zm.task.positions.items()}[int(variable.positions)]
        return part, {part}
    # ioi-siit: its name movers (the truth's role) attend where the task's detector for that role says; whose name
    # stands there, IO's or S's?
    tokens = _pair(name).clean.tokens
    key = zm.task.attention_targets(tokens)["name-mover"].max(1).values  # [batch]: the key each row's answer reads
    there = tokens.gather(1, key[:, None])[:, 0]  # [batch]
    v = zm.task.variables(tokens)
    for source, variable, accepted in (("IO", "io", {"io", "indirect object"}), ("S", "s", {"s", "subject"})):
        if bool((there == zm.task.name_token(v[variable])).all()):
            return source, accepted
    raise AssertionError("the name movers' targets hold neither IO nor S")


@exercise("lens.direct", "The truth check", "answer", "medium", 10,
          hint=f"direct: the truth components c with abs(dlas[name][c]) >= {DIRECT_SHARE} * abs(dlas[name].metric); "
               "indirect: the rest of circuit_components(truth); source: where section 4 found the largest writer "
               "reads from")
def _direct(answer: Any) -> str:
    if not isinstance(answer, dict) or set(answer) != set(MODELS):
        raise Wrong(f"answer with a dict with the keys {MODELS}, got {answer!r}")
    said = []
    for name in MODELS:
        zm, part = _zm(name), answer[name]
        keys = {"direct", "indirect"} | ({"source"} if name != MODEL else set())
        if not isinstance(part, dict) or set(part) != keys:
            raise Wrong(f"{name}: expected a dict with the keys {sorted(keys)}, got {part!r}")
        parts = circuit_components(zm.truth)
        direct, indirect = _components(part["direct"], f"{name} direct"), _components(part["indirect"], f"{name} indirect")
        if direct | indirect != parts or direct & indirect:
            extra = sorted((direct | indirect) - parts)
            raise Wrong(f"{name}: classify each of the truth's components {sorted(parts)} once",
                        f"{extra} {'is' if len(extra) == 1 else 'are'} not in the truth" if extra else
                        f"{sorted(direct & indirect)} is in both" if direct & indirect else
                        f"missing {sorted(parts - direct - indirect)}")
        want = direct_writers(zm.truth) & parts
        dla = methods.direct_logit_attribution(zm.model, _pair(name))
        for component in sorted(parts):
            if (component in direct) != (component in want):
                share = dla[component] / dla.metric
                if component in want:
                    optional = any(e.sender == component and e.receiver == "logits" for e in zm.truth.optional)
                    says = (f"the truth has an edge {component} -> logits"
                            + (" (optional: the circuit stays faithful without it)" if optional else "")
                            + f", and its direct attribution is {share:+.0%} of the logit difference")
                    if zm.truth.nodes[component].startswith("negative"):
                        says += ": writing against the answer is writing directly, the size is |DLA|"
                else:
                    role = zm.truth.nodes[component]
                    says = (f"{component} ({role}) attributes {share:+.1%} directly: the truth has it act through "
                            f"{sorted(e.receiver for e in zm.truth.edges if e.sender == component)}")
                raise Wrong(f"{name}: {component} is not {'direct' if component in direct else 'indirect'}", says)
        if name != MODEL:
            source, accepted = _source(zm, name)
            got = answer[name]["source"]
            if not isinstance(got, str) or got.strip().lower() not in accepted | {source.lower()}:
                which = ("whose name stands there, the indirect object's ('IO') or the subject's ('S')?" if name == IOI
                         else "name it by its key in task.positions")
                raise Wrong(f"{name} source: {got!r} is not where the truth's writer reads its answer",
                            "sum section 4's split of the largest writer over the rows and take the position with the "
                            f"largest share: {which}")
            said.append(f"{name}: direct {sorted(want)}, read from {source}")
        else:
            said.append(f"{name}: direct {sorted(want)}")
    return ("the truth agrees: the components with an edge into the logits are those DLA finds, the others act "
            f"through them ({'; '.join(said)})")
