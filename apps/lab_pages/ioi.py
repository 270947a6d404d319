"""Lesson 10, Indirect object identification: build a prompt, see who writes the answer, trace the circuit back
from the name movers, and knock them out."""

from typing import Any

import lab_common as lab
import numpy as np
import streamlit as st
import torch

from toylab import components as comp
from toylab import methods, viz
from toylab.lessons import lesson_fixtures
from toylab.methods.repair import KNOCKOUTS, self_repair
from toylab.tasks import logit_diff
from toylab.tasks.ioi import ORDERS, TEMPLATES

FIXTURES = lesson_fixtures("ioi")  # lesson 10's model, the ABC pairs of one prompt and the truth's roles
INPUTS = ("q", "k", "v")
Prompt = tuple[int, int, int, int]  # template, IO, S, order (0 ABBA, 1 BABA)


def prompt_pair(name: str, seed: int, prompt: Prompt):
    """The prompt and its ABC counterfactuals, one per third name C (``fixtures.abc_pair``)."""
    template, io, s, order = prompt
    return FIXTURES.abc_pair(lab.zoo_model(name, seed).task, template, io, s, order)


def knockout_pair(name: str, seed: int, prompt: Prompt):
    """The prompt against ABC prompts of the task, the knockout's reference (``fixtures.knockout_pair``)."""
    template, io, s, order = prompt
    return FIXTURES.knockout_pair(lab.zoo_model(name, seed).task, template, io, s, order)


def head_ids(cfg) -> list[str]:
    return [comp.head_id(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]


@st.cache_data(show_spinner=False, max_entries=256)
def prompt_view(name: str, seed: int, prompt: Prompt) -> dict[str, Any]:
    """The prompt as tokens, the model's top answers at the answer position, and the logit difference IO - S on
    the prompt and, averaged, on its ABC counterfactuals."""
    zm = lab.zoo_model(name, seed)
    task = zm.task
    pair = prompt_pair(name, seed, prompt)
    answer_pos = task.positions(prompt[0])["answer"]
    with lab.FORWARD_LOCK, torch.no_grad():
        clean = zm.model(pair.clean.tokens)  # [batch, pos, d_vocab_out]: one prompt, repeated
        corrupted = zm.model(pair.corrupted.tokens)
    top = clean[0, answer_pos].softmax(-1).topk(5)
    return {"clean": task.to_str_tokens(pair.clean.tokens[0]),
            "corrupted": task.to_str_tokens(pair.corrupted.tokens[0]),
            "answer_pos": answer_pos, "n_abc": len(pair.corrupted.tokens),
            "top": [(task.token_names[int(i)], float(p)) for p, i in zip(top.values, top.indices)],
            "logit_diff": float(logit_diff(clean, pair)), "abc_logit_diff": float(logit_diff(corrupted, pair))}


@st.cache_data(show_spinner=False, max_entries=256)
def direct_effects(name: str, seed: int, prompt: Prompt) -> dict[str, Any]:
    """``methods.direct_logit_attribution`` of the prompt: each head's direct effect on logit(IO) - logit(S)."""
    zm = lab.zoo_model(name, seed)
    with lab.FORWARD_LOCK, torch.no_grad():
        dla = methods.direct_logit_attribution(zm.model, prompt_pair(name, seed, prompt))
    return {"heads": {h: dla[h] for h in head_ids(zm.model.cfg)}, "metric": dla.metric,
            "rest": dla.metric - sum(dla[h] for h in head_ids(zm.model.cfg))}


@st.cache_data(show_spinner=False, max_entries=256)
def path_scores(name: str, seed: int, prompt: Prompt, receivers: tuple[str, ...]) -> dict[str, Any]:
    """``methods.path_patching`` into the receivers' q, k and v in turn, on the prompt's ABC pairs: the senders
    (every head upstream of the earliest receiver) and their scores [sender, input]."""
    zm = lab.zoo_model(name, seed)
    pair = prompt_pair(name, seed, prompt)
    earliest = min(comp.parse(r)[1] for r in receivers)
    senders = [h for h in head_ids(zm.model.cfg) if comp.parse(h)[1] < earliest]
    with lab.FORWARD_LOCK, torch.no_grad():
        results = [methods.path_patching(zm.model, pair, list(receivers), receiver_input) for receiver_input in INPUTS]
    scores = np.array([[result[s] for result in results] for s in senders])  # [sender, input]
    return {"senders": senders, "scores": scores}


@st.cache_data(show_spinner=False, max_entries=256)
def knockout(name: str, seed: int, prompt: Prompt, primaries: tuple[str, ...], method: str) -> dict[str, Any]:
    """``self_repair`` on the prompt with the primaries knocked out (their mean, or row by row, over random ABC
    prompts of the task): every head's direct effect clean and knocked out, and the logit difference."""
    zm = lab.zoo_model(name, seed)
    others = [h for h in head_ids(zm.model.cfg) if h not in primaries]
    with lab.FORWARD_LOCK, torch.no_grad():
        repair = self_repair(zm.model, knockout_pair(name, seed, prompt), list(primaries), others, knockout=method)
    return {"clean": {h: repair.clean[h] for h in head_ids(zm.model.cfg)},
            "knocked_out": {h: repair.knocked_out[h] for h in head_ids(zm.model.cfg)},
            "metric_clean": repair.clean.metric, "metric_knocked_out": repair.knocked_out.metric,
            "primaries_clean": repair.primaries_clean}


@st.cache_data(show_spinner=False, max_entries=16)
def truth_circuit_png(name: str, seed: int) -> bytes:
    zm = lab.zoo_model(name, seed)
    return lab.figure_png(viz.circuit_graph(zm.model.cfg, zm.truth.edges, show_truth=False,
                                            title=f"the truth's circuit ({zm.truth.provenance})"))


st.title("10 Indirect object identification")
st.caption(
    "\"When Mary and John went to the store, John gave a drink to\" ... Mary. Wang et al. (2022) traced the circuit "
    "GPT-2 small uses for this task: duplicate-token heads notice that S is repeated, S-inhibition heads move that "
    "to the last position, name movers attend to the other name (the indirect object, IO) and copy it; negative "
    "name movers write against it, and backup name movers take over when the name movers are knocked out. Here "
    "the task is in a synthetic vocabulary and the circuit was trained into chosen heads (SIIT): build a prompt and "
    "check each step against the truth. The metric is logit(IO) - logit(S); the counterfactuals are the prompt with "
    "the second mention of S replaced by each third name C (Wang et al.'s ABC).")

name, seed = lab.pick_model("ioi", kind="ioi", default=FIXTURES.MODEL)
zm = lab.zoo_model_or_stop(name, seed)
task, cfg, truth = zm.task, zm.model.cfg, zm.truth

# ---- the prompt ---------------------------------------------------------------------------------
st.header("The prompt")
template_col, io_col, s_col, order_col = st.columns([4, 1, 1, 1.4])
template = int(template_col.selectbox("Template", list(task.templates), key="ioi_template",
                                      format_func=lambda t: TEMPLATES[t]))
names = [f"N{i}" for i in range(task.n_names)]
io = int(io_col.selectbox("IO", list(range(task.n_names)), index=0, key="ioi_io", format_func=names.__getitem__,
                          help="The indirect object: the name said once, the answer."))
s = int(s_col.selectbox("S", list(range(task.n_names)), index=1, key="ioi_s", format_func=names.__getitem__,
                        help="The subject: the name the second clause repeats."))
order = int(order_col.radio("Order", list(range(len(ORDERS))), key="ioi_order", horizontal=True,
                            format_func=ORDERS.__getitem__, help="ABBA: IO first in the first clause; BABA: S first."))
if io == s:
    st.warning("IO and S are the same name: pick two different names (the subject is the one the second clause "
               "repeats, the indirect object the other).")
    st.stop()
prompt = (template, io, s, order)

view = prompt_view(name, seed, prompt)
shown = [t for t in view["clean"] if t != "PAD"]
st.markdown("**Prompt:** `" + " ".join(shown[1:]) + "` ...")
answer, prob = view["top"][0]
answer_col, ld_col, abc_col = st.columns(3)
answer_col.metric("Model's answer", answer, help=f"The top token at the answer position (position "
                                                 f"{view['answer_pos']}), with probability {prob:.3f}.")
ld_col.metric("Logit difference IO - S", f"{view['logit_diff']:.2f}")
abc_col.metric("On the ABC prompts", f"{view['abc_logit_diff']:.2f}",
               help=f"Mean over the {view['n_abc']} prompts with the second mention of S replaced by a third name.")
st.caption(f"Top answers: {', '.join(f'{t} ({p:.3f})' for t, p in view['top'])}. The right answer is {names[io]}. "
           f"First ABC counterfactual: `{' '.join(t for t in view['corrupted'][1:] if t != 'PAD')}`.")

roles = FIXTURES.head_roles(truth) if truth else {}
effects = direct_effects(name, seed, prompt)

# ---- the truth ----------------------------------------------------------------------------------
st.header("The circuit the truth gives")
if truth is None:
    st.info(f"{name} has no ground truth.")
else:
    graph_col, roles_col = st.columns([3, 2])
    with graph_col:
        st.image(truth_circuit_png(name, seed), width="stretch")
    with roles_col:
        st.dataframe([{"head": h, "role": role, "direct effect": round(effects["heads"][h], 2)}
                      for h, role in roles.items()], hide_index=True, width="stretch")
        st.caption(f"Roles: the truth's nodes; the backup name mover{'s' if len(FIXTURES.backups(truth)) > 1 else ''} "
                   "(a claim of the truth, not a node: it does nothing while the name movers work) and the negative "
                   "name mover from its claims. Direct effects on this prompt.")

# ---- direct logit attribution ---------------------------------------------------------------------
st.header("Who writes the answer: direct logit attribution")
LAYERS = [f"L{layer}" for layer in range(cfg.n_layers)]
HEADS = [f"H{head}" for head in range(cfg.n_heads)]
show_truth = st.toggle("Show ground truth", value=True, key="ioi_truth")
truth_cells = {(comp.parse(h)[1], comp.parse(h)[2]) for h in roles} if show_truth else set()
dla_col, dla_text = st.columns([3, 2])
with dla_col:
    lab.show(viz.heatmap, FIXTURES.head_grid(effects["heads"], cfg).numpy(), LAYERS, HEADS,
             title=f"direct effect of each head on logit({names[io]}) - logit({names[s]})", highlight=truth_cells,
             cbar_label="direct effect", xlabel="head", ylabel="layer")
with dla_text:
    ranked = sorted(effects["heads"].items(), key=lambda kv: -abs(kv[1]))[:6]
    st.dataframe([{"head": h, "direct effect": round(v, 3), **({"role": roles.get(h, "-")} if show_truth else {})}
                  for h, v in ranked], hide_index=True, width="stretch")
    st.caption(f"Each head's output at the answer position times W_U[:, IO] - W_U[:, S] "
               "(`methods.direct_logit_attribution`); with the embeddings and biases "
               f"({effects['rest']:+.2f}) they add up to the logit difference {effects['metric']:.2f}."
               + (" Outlined: the heads the truth names." if show_truth else " Ground truth hidden."))

# ---- path patching --------------------------------------------------------------------------------
st.header("Tracing back: path patching")
receiver_options = [h for h in head_ids(cfg) if comp.parse(h)[1] > 0]
default_receivers = [h for h in FIXTURES.name_movers(truth) if h in receiver_options] if truth else []
receivers = st.multiselect("Receivers", receiver_options, default=default_receivers or receiver_options[-1:],
                           key="ioi_receivers",
                           help="Heads patched together: each sender's clean output reaches their query, key or "
                                "value only. Start at the name movers, then follow the top sender back.")
if not receivers:
    st.info("Pick at least one receiver head.")
else:
    path = path_scores(name, seed, prompt, tuple(receivers))
    senders, scores = path["senders"], path["scores"]
    edges = {(e.sender, e.kind) for e in (truth.edges if truth else ()) if e.receiver in receivers}
    cells = {(i, INPUTS.index(k)) for i, h in enumerate(senders) for k in INPUTS if (h, k) in edges}
    path_col, path_text = st.columns([3, 2])
    with path_col:
        lab.show(viz.heatmap, scores, senders, list(INPUTS), title=f"path patching into {'+'.join(receivers)}",
                 highlight=cells if show_truth else set(), cbar_label="score", xlabel="receiver input",
                 ylabel="sender")
    with path_text:
        flat = sorted(((h, k, float(scores[i, j])) for i, h in enumerate(senders) for j, k in enumerate(INPUTS)),
                      key=lambda row: -abs(row[2]))[:5]
        st.dataframe([{"sender": h, "input": k, "score": round(v, 3),
                       **({"ground truth": (h, k) in edges} if show_truth else {})} for h, k, v in flat],
                     hide_index=True, width="stretch")
        st.caption("The share of the logit difference restored on the ABC prompts when only this path carries the "
                   "clean sender's output (`methods.path_patching`, denoising)."
                   + (f" Outlined: the truth's edges into the receivers ({', '.join(f'{h} ({k})' for h, k in sorted(edges)) or 'none'})."
                      if show_truth else ""))

# ---- self-repair ----------------------------------------------------------------------------------
st.header("Self-repair: knock the name movers out")
movers = FIXTURES.name_movers(truth) if truth else []
backup_heads, negatives = (FIXTURES.backups(truth), FIXTURES.negative_heads(truth)) if truth else ([], [])
if not movers:
    st.info("The truth names no name movers to knock out.")
else:
    ko_col, method_col = st.columns([2, 2])
    knocked = ko_col.checkbox(f"Knock out the name movers ({', '.join(movers)})", value=False, key="ioi_knockout")
    method = method_col.radio("Knockout", KNOCKOUTS, horizontal=True, key="ioi_knockout_method",
                              help=f"mean: each name mover outputs its mean over {FIXTURES.KNOCKOUT_PAIRS} random "
                                   "ABC prompts of the template (Wang et al.); resample: each copy of the prompt "
                                   "takes the name mover's output on one of them.")
    repair = knockout(name, seed, prompt, tuple(movers), method)
    side = "knocked_out" if knocked else "clean"
    metric = repair["metric_knocked_out"] if knocked else repair["metric_clean"]
    cols = st.columns(1 + len(backup_heads) + len(negatives))
    cols[0].metric("Self-repair: logit difference", f"{metric:.2f}",
                   delta=f"{metric - repair['metric_clean']:+.2f}" if knocked else None)
    for col, head, what in zip(cols[1:], [*backup_heads, *negatives],
                               ["backup"] * len(backup_heads) + ["negative name mover"] * len(negatives)):
        value = repair[side][head]
        col.metric(f"Direct effect of {head} ({what})", f"{value:+.2f}",
                   delta=f"{value - repair['clean'][head]:+.2f}" if knocked else None)
    lost = repair["metric_clean"] - repair["metric_knocked_out"]
    if knocked:
        change = {h: repair["knocked_out"][h] - repair["clean"][h] for h in head_ids(cfg)}
        lab.show(viz.heatmap, FIXTURES.head_grid(change, cfg).numpy(), LAYERS, HEADS,
                 title=f"change in direct effect, name movers knocked out ({method})", highlight=truth_cells,
                 cbar_label="knocked out - clean", xlabel="head", ylabel="layer")
        gained = sum(change[h] for h in backup_heads)
        st.caption(f"The name movers wrote {repair['primaries_clean']:.2f} directly; knocking them out costs "
                   f"{lost:.2f} of the logit difference. The backup{'s' if len(backup_heads) > 1 else ''} "
                   f"{', '.join(backup_heads)} write{'' if len(backup_heads) > 1 else 's'} back {gained:+.2f} "
                   f"({gained / repair['primaries_clean']:.0%} of what the name movers wrote: the compensation).")
    else:
        st.caption("Tick the box to knock the name movers out: the backup's direct effect and the logit difference "
                   "then show what the rest of the model does about it.")
