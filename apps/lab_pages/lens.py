"""Lesson 14, Logit lens and DLA: decode the residual stream stage by stage, split the logit difference into its
components and each head's share by the position it reads, with or without a LayerNorm inserted; the truth's
components outlined."""

from typing import Any

import lab_common as lab
import numpy as np
import streamlit as st
import torch

from toylab import methods, viz
from toylab.components import parse
from toylab.lessons import lesson_fixtures
from toylab.tasks import Batch, CounterfactualPair, logit_diff

FIXTURES = lesson_fixtures("lens")  # lesson 14's models, the LayerNorm insertion, the answer direction, the truth
N_PAIRS = FIXTURES.N_PAIRS


@st.cache_resource(show_spinner="Inserting LayerNorms...")
def _layernorm_model(name: str, seed: str):
    zm = lab.zoo_model(name, int(seed))
    with lab.FORWARD_LOCK:
        return FIXTURES.with_layernorm(zm.model, zm.task)


def model_of(name: str, seed: int, ln: bool):
    """The zoo model, or (``ln``) the fixtures' copy of it with a LayerNorm before every attention, MLP and the
    unembedding. Neither is ever changed."""
    return _layernorm_model(name, str(seed)) if ln else lab.zoo_model(name, seed).model


def output_names(task: Any) -> list[str]:
    names = list(getattr(task, "output_names", []) or [])
    return names if len(names) == task.d_vocab_out else list(task.token_names[:task.d_vocab_out])


def prompt_pair(name: str, seed: int, prompt_seed: int) -> CounterfactualPair:
    """One counterfactual pair of the task: the prompt, and the contrast its answers are scored against."""
    clean, corrupted = _pair_arrays(name, seed, prompt_seed)
    return CounterfactualPair(Batch(*map(torch.from_numpy, clean)), Batch(*map(torch.from_numpy, corrupted)), "")


@st.cache_data(show_spinner=False, max_entries=256)
def _pair_arrays(name: str, seed: int, prompt_seed: int):
    pair = lab.zoo_model(name, seed).task.counterfactual(1, seed=prompt_seed)
    return ((pair.clean.tokens.numpy(), pair.clean.targets.numpy()),
            (pair.corrupted.tokens.numpy(), pair.corrupted.targets.numpy()))


@st.cache_data(show_spinner="Decoding every stage...", max_entries=256)
def lens_view(name: str, seed: int, ln: bool, prompt_seed: int) -> dict[str, Any]:
    """``methods.logit_lens`` of the prompt (log p of the right next token per stage and position, and the token
    each stage decodes to) and of ``N_PROMPTS`` prompts of the task (accuracy and loss per stage)."""
    zm, model = lab.zoo_model(name, seed), model_of(name, seed, ln)
    pair = prompt_pair(name, seed, prompt_seed)
    names = output_names(zm.task)
    with lab.FORWARD_LOCK, torch.no_grad():
        one = methods.logit_lens(model, pair.clean)
        _, cache = model.run_with_cache(pair.clean.tokens, names=one.hooks)
        decoded = [model.unembed(model.ln_final(cache[hook]))[0].argmax(-1).tolist() for hook in one.hooks]
        many = methods.logit_lens(model, zm.task.sample(FIXTURES.N_PROMPTS, seed=FIXTURES.LENS_SEED))
    return {"stages": one.stages, "logprob": one.position_logprob.numpy(),
            "top": [[names[t] for t in row] for row in decoded], "accuracy": many.accuracy.tolist(),
            "loss": many.loss.tolist(), "scored": pair.clean.scored[0].tolist()}


def _own_scale(model, pair: CounterfactualPair, components: list[str]) -> list[float]:
    """Each term pushed through ln_final on its own (its own scale, ln_final.b left out), projected on the answer
    direction: what the frozen scale avoids. [component]"""
    cfg = model.cfg
    hooks = ["hook_embed", "hook_pos_embed"] + [f"blocks.{layer}.attn.hook_result" for layer in range(cfg.n_layers)]
    hooks += [] if cfg.attn_only else [f"blocks.{layer}.hook_mlp_out" for layer in range(cfg.n_layers)]
    _, cache = model.run_with_cache(pair.clean.tokens, names=hooks)
    terms = [cache["hook_embed"], cache["hook_pos_embed"]]
    terms += [t for layer in range(cfg.n_layers) for t in cache[f"blocks.{layer}.attn.hook_result"].unbind(2)]
    bias = sum(block.attn.b_O for block in model.blocks)
    for layer in range(0 if cfg.attn_only else cfg.n_layers):
        b_out = model.blocks[layer].mlp.b_out
        terms.append(cache[f"blocks.{layer}.hook_mlp_out"] - b_out)
        bias = bias + b_out
    terms.append(bias.expand_as(terms[0]))
    assert len(terms) == len(components)
    direction, mask = FIXTURES.answer_direction(model, pair)
    ln = model.ln_final
    return [float(((ln(t) - ln.b) * direction).sum(-1)[mask].mean()) for t in terms]


@st.cache_data(show_spinner="Attributing...", max_entries=256)
def dla_view(name: str, seed: int, ln: bool, prompt_seed: int) -> dict[str, Any] | None:
    """``methods.direct_logit_attribution`` of the prompt and of ``N_PAIRS`` pairs of the task; with a LayerNorm,
    also each term through ln_final on its own. None when the prompt's two answers never differ."""
    zm, model = lab.zoo_model(name, seed), model_of(name, seed, ln)
    pair = prompt_pair(name, seed, prompt_seed)
    many_pairs = zm.task.counterfactual(N_PAIRS, seed=FIXTURES.LENS_SEED)
    with lab.FORWARD_LOCK, torch.no_grad():
        try:
            one = methods.direct_logit_attribution(model, pair)
        except ValueError:
            return None
        many = methods.direct_logit_attribution(model, many_pairs)
        measured = float(logit_diff(model(pair.clean.tokens), pair))
        own = _own_scale(model, pair, one.components) if ln else None
    return {"components": one.components, "one": one.total.tolist(), "many": many.total.tolist(),
            "metric": one.metric, "offset": one.offset, "measured": measured, "many_metric": many.metric, "own": own}


@st.cache_data(show_spinner="Splitting by source position...", max_entries=256)
def source_view(name: str, seed: int, ln: bool, prompt_seed: int) -> dict[str, Any]:
    """Every head's direct attribution on the prompt split by the position it reads (``fixtures.head_sources``):
    [head, key_pos]."""
    model = model_of(name, seed, ln)
    pair = prompt_pair(name, seed, prompt_seed)
    cfg = model.cfg
    heads = [f"L{layer}H{head}" for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    with lab.FORWARD_LOCK, torch.no_grad():
        values = np.stack([FIXTURES.head_sources(model, pair, *parse(h)[1:])[0].numpy() for h in heads])
    return {"heads": heads, "values": values}


st.title("14 Logit lens and DLA")
st.caption(
    "The residual stream is a sum, and the model reads its answer off the end of it with one linear map. The logit "
    "lens (nostalgebraist 2020) decodes the stream at an earlier stage with the model's own final LayerNorm and "
    "unembedding: where does the answer appear? Direct logit attribution (Elhage et al. 2021) splits the final "
    "stream into its components and projects each on the answer's direction (the answer's unembedding minus the "
    "counterfactual answer's): who writes the answer, and from which position did each head read it? Both see only "
    "the direct path to the logits: compare them with the truth's circuit.")

name, seed = lab.pick_model("lens", default=FIXTURES.MODEL)
zm = lab.zoo_model_or_stop(name, seed)
task, truth = zm.task, zm.truth
prompt_col, ln_col, truth_col = st.columns([1.2, 1.6, 1.2])
prompt_seed = int(prompt_col.number_input("Prompt", min_value=0, max_value=10_000, value=0, step=1, key="lens_prompt",
                                          help="The seed of the counterfactual pair drawn from the task."))
ln = ln_col.toggle("Insert LayerNorm", value=False, key="lens_ln",
                   help="The zoo has no model with LayerNorm: this puts one before every attention, MLP and the "
                        "unembedding, set from the model's own stream (lesson 14's fixtures), to show why its scale "
                        "must be frozen.")
show_truth = truth_col.toggle("Show ground truth", value=True, key="lens_truth")
known = show_truth and truth is not None

pair = prompt_pair(name, seed, prompt_seed)
str_tokens = task.to_str_tokens(pair.clean.tokens[0])
st.markdown("**Prompt:** `" + " ".join(str_tokens) + "`  \n**Counterfactual:** `"
            + " ".join(task.to_str_tokens(pair.corrupted.tokens[0])) + "`")
if ln:
    st.info("With LayerNorm inserted the model is no longer the zoo's: it has no certificate of its own, and the "
            "truth outlined is the zoo model's circuit.")

# ---- the logit lens ---------------------------------------------------------------------------------------------
st.header("The logit lens")
lens = lens_view(name, seed, ln, prompt_seed)
stage = FIXTURES.truth_stage(zm) if known and FIXTURES.direct_writers(truth) else None
cells = [(lens["stages"].index(stage), pos) for pos, scored in enumerate(lens["scored"]) if scored] if stage else []
st.altair_chart(viz.lens_chart(lens["logprob"], lens["stages"], str_tokens, top_tokens=lens["top"], highlight=cells,
                               title=f"{name}: log p(right next token) when each stage is decoded"),
                width="stretch")
st.dataframe([{"stage": s, "accuracy": round(a, 3), "loss": round(loss, 3),
               **({"the truth's writers have written": s == stage} if stage else {})}
              for s, a, loss in zip(lens["stages"], lens["accuracy"], lens["loss"])], hide_index=True, width="stretch")
st.caption(f"The map: one prompt; colour, the log-probability of the right next token when the stage is decoded "
           f"(blank where nothing is scored); text, the token the stage decodes to. The table: "
           f"`methods.logit_lens` on {FIXTURES.N_PROMPTS} prompts of the task."
           + (f" Outlined: {stage}, the first stage after the truth's direct writers "
              f"({', '.join(sorted(FIXTURES.direct_writers(truth)))})." if stage else
              " Ground truth hidden." if not show_truth else ""))

# ---- direct logit attribution -----------------------------------------------------------------------------------
st.header("Direct logit attribution")
dla = dla_view(name, seed, ln, prompt_seed)
if dla is None:
    st.warning("The prompt's answers are the same as its counterfactual's at every position: there is no logit "
               "difference to attribute. Pick another prompt.")
    st.stop()
parts = sorted(FIXTURES.circuit_components(truth) & set(dla["components"])) if known else []
metric_cols = st.columns(4 if ln else 3)
metric_cols[0].metric("Logit difference", f"{dla['measured']:.3f}", help="The model's, on this prompt.")
metric_cols[1].metric("Terms + offset", f"{sum(dla['one']) + dla['offset']:.3f}",
                      help="The components' attributions summed, plus the offset no component writes (b_U's, and "
                           "ln_final.b's with a LayerNorm): exactly the logit difference.")
metric_cols[2].metric(f"Over {N_PAIRS} pairs", f"{dla['many_metric']:.3f}")
series = {"this prompt": dla["one"], f"{N_PAIRS} pairs": dla["many"]}
if ln:
    metric_cols[3].metric("Each term's own scale", f"{sum(dla['own']) + dla['offset']:.3f}",
                          help="Each term pushed through ln_final on its own: the terms no longer add up.")
    series["this prompt, each term's own scale"] = dla["own"]
lab.show(viz.dla_plot, series, dla["components"], truth=set(parts),
         title=f"{name}{' with LayerNorm' if ln else ''}: direct logit attribution")
st.caption("Each component's term of the final residual stream projected on the answer direction (through "
           "ln_final's frozen scale where there is one; `methods.direct_logit_attribution`)."
           + (f" Outlined: the truth's components {parts}; those without an edge into the logits act through "
              "others and attribute about nothing directly." if parts else
              " Ground truth hidden." if not show_truth else ""))

# ---- by source position -----------------------------------------------------------------------------------------
st.header("Each head's share, by the position it reads")
sources = source_view(name, seed, ln, prompt_seed)
truth_heads = sorted(h for h in parts if h in sources["heads"])
st.altair_chart(viz.source_chart(sources["values"], sources["heads"], str_tokens, truth=truth_heads,
                                 title=f"{name}: direct attribution by head and key position, this prompt"),
                width="stretch")
st.caption("A head writes sum_k pattern[q, k] * (v[k] @ W_O) at each scored query q: each key position's term, "
           "projected on the answer direction and averaged over the scored queries. A row sums to the head's bar "
           "above." + (f" Outlined: the truth's heads {truth_heads}." if truth_heads else
                       " Ground truth hidden." if not show_truth else ""))
