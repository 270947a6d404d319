"""Lesson 17, Build the transformer: one forward pass of a zoo model, hook point by hook point. Each hook's tensor,
the step that computes it recomputed from the hooks before (the arithmetic the lesson asks the learner to write),
and one head's scores and pattern. Visualisation only: the lesson's checks are where a learner's code is marked."""

import math
from typing import Any

import lab_common as lab
import numpy as np
import streamlit as st
import torch

from toylab import viz
from toylab.lessons import lesson_fixtures
from toylab.models.mlp import ACTIVATIONS

FIXTURES = lesson_fixtures("build")  # lesson 17's table of steps and its default model


@st.cache_data(show_spinner="Running the model...", max_entries=64)
def forward_pass(name: str, seed: int, sample_seed: int) -> dict[str, np.ndarray]:
    """Every hook point's tensor on one sampled prompt (batch axis kept, as the cache has it), and the logits."""
    zm = lab.zoo_model(name, seed)
    tokens = torch.from_numpy(lab.sample(name, seed, sample_seed)[0])  # [1, pos]
    with lab.FORWARD_LOCK, torch.no_grad():
        logits, cache = zm.model.run_with_cache(tokens)
    return {"tokens": tokens.numpy(), **{hook: act.numpy() for hook, act in cache.items()}, "logits": logits.numpy()}


def _norm(ln: Any, x: torch.Tensor) -> torch.Tensor:
    """A block's pre-norm: toylab's LayerNorm without its hooks, or the identity (every zoo model)."""
    return ln.normalize(x) if hasattr(ln, "normalize") else x


@st.cache_data(show_spinner=False, max_entries=64)
def recomputed(name: str, seed: int, sample_seed: int) -> dict[str, np.ndarray]:
    """Each hook's tensor computed again from the recorded hooks before it and the weights, as the lesson writes
    it (einsum over TransformerLens's shapes, the mask with IGNORE, the softmax over keys): by hook name."""
    model = lab.zoo_model(name, seed).model
    acts = {k: torch.from_numpy(v) for k, v in forward_pass(name, seed, sample_seed).items()}
    tokens = acts["tokens"]
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out["hook_embed"] = model.embed.W_E[tokens]
        out["hook_pos_embed"] = model.pos_embed.W_pos[: tokens.shape[1]].expand(*tokens.shape, -1)
        for layer, block in enumerate(model.blocks):
            at = f"blocks.{layer}."
            attn = block.attn
            out[at + "hook_resid_pre"] = (acts["hook_embed"] + acts["hook_pos_embed"] if layer == 0
                                          else acts[f"blocks.{layer - 1}.hook_resid_post"])
            x = _norm(block.ln1, acts[at + "hook_resid_pre"])  # [batch, pos, d_model]
            for kind, W, b in (("q", attn.W_Q, attn.b_Q), ("k", attn.W_K, attn.b_K), ("v", attn.W_V, attn.b_V)):
                out[f"{at}attn.hook_{kind}"] = torch.einsum("bpm,hmd->bphd", x, W) + b
            q, k, v = (acts[f"{at}attn.hook_{kind}"] for kind in "qkv")
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
            n = q.shape[1]
            later = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)  # key_pos > query_pos
            out[at + "attn.hook_attn_scores"] = scores.masked_fill(later, FIXTURES.IGNORE)
            out[at + "attn.hook_pattern"] = acts[at + "attn.hook_attn_scores"].softmax(dim=-1)
            out[at + "attn.hook_z"] = torch.einsum("bhqk,bkhd->bqhd", acts[at + "attn.hook_pattern"], v)
            out[at + "attn.hook_result"] = torch.einsum("bqhd,hdm->bqhm", acts[at + "attn.hook_z"], attn.W_O)
            out[at + "hook_attn_out"] = acts[at + "attn.hook_result"].sum(dim=2) + attn.b_O
            out[at + "hook_resid_mid"] = acts[at + "hook_resid_pre"] + acts[at + "hook_attn_out"]
            if block.mlp is None:
                out[at + "hook_resid_post"] = acts[at + "hook_resid_mid"]
                continue
            mlp = block.mlp
            out[at + "mlp.hook_pre"] = _norm(block.ln2, acts[at + "hook_resid_mid"]) @ mlp.W_in + mlp.b_in
            out[at + "mlp.hook_post"] = ACTIVATIONS[model.cfg.act_fn](acts[at + "mlp.hook_pre"])
            out[at + "hook_mlp_out"] = acts[at + "mlp.hook_post"] @ mlp.W_out + mlp.b_out
            out[at + "hook_resid_post"] = acts[at + "hook_resid_mid"] + acts[at + "hook_mlp_out"]
        final = acts[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
        out["logits"] = _norm(model.ln_final, final) @ model.unembed.W_U + model.unembed.b_U
    return {hook: value.detach().numpy() for hook, value in out.items()}


def gap(a: np.ndarray, b: np.ndarray) -> float:
    """The largest |a - b|, equal infinities (masked scores) counting as equal."""
    same = a == b
    return float(np.abs(np.where(same, 0.0, a) - np.where(same, 0.0, b)).max())


def at_position(value: np.ndarray, hook: str, pos: int) -> tuple[list[str], np.ndarray]:
    """A hook's tensor at one query position, [rows, width]: a row per head where it has heads, else one row."""
    shape = FIXTURES.step_of(hook)
    axes = shape[0] if shape else "[batch, pos, d_model]"
    if "query_pos" in axes:  # [batch, head, query_pos, key_pos]: each head's row of the query
        return [f"head {h}" for h in range(value.shape[1])], value[0, :, pos, : pos + 1]
    if value.ndim == 4:  # [batch, pos, head, d]
        return [f"head {h}" for h in range(value.shape[2])], value[0, pos]
    return ["all"], value[0, pos][None]


st.title("17 Build the transformer")
st.caption(
    "One forward pass of a zoo model, hook point by hook point, with TransformerLens's names and shapes: what each "
    "hook records, and the step that computes it, recomputed here from the hooks before it exactly as lesson 17 "
    "asks you to write it. Then one head's attention: q·k scores, the causal mask, the softmax.")

name, seed = lab.pick_model("build", default=FIXTURES.ATTN_ONLY)
zm = lab.zoo_model(name, seed)
cfg = zm.model.cfg
columns = st.columns(5)
for col, (label, value) in zip(columns, (("Layers", cfg.n_layers), ("Heads", cfg.n_heads), ("d_model", cfg.d_model),
                                         ("d_head", cfg.d_head),
                                         ("d_mlp", "none" if cfg.attn_only else cfg.d_mlp))):
    col.metric(label, value, help="attention only: no MLP" if value == "none" else None)
with st.expander("The state dict: TransformerLens's names and shapes"):
    st.dataframe([{"parameter": key, "shape": str(list(param.shape))} for key, param in zm.model.state_dict().items()],
                 hide_index=True, width="stretch")

# ---- the prompt -----------------------------------------------------------------------------------
st.header("A prompt")
sample_seed = int(st.number_input("Sample seed", min_value=0, max_value=1_000_000, value=0, key="build_sample"))
acts = forward_pass(name, seed, sample_seed)
tokens = acts["tokens"][0].tolist()
words = lab.str_tokens(name, seed, tokens)
labels = [f"{i}:{w}" for i, w in enumerate(words)]
st.dataframe([{"": "token", **{str(i): w for i, w in enumerate(words)}}], hide_index=True)

# ---- the forward pass ------------------------------------------------------------------------------
st.header("One forward pass, hook by hook")
layer = int(st.selectbox("Block", list(range(cfg.n_layers)), key="build_layer", format_func=lambda i: f"blocks.{i}"))
again = recomputed(name, seed, sample_seed)
shown = ["hook_embed", "hook_pos_embed", *[h for h in again if h.startswith(f"blocks.{layer}.")], "logits"]
rows = []
for hook in shown:
    shape, formula = FIXTURES.step_of(hook) or ("", "")
    rows.append({"hook": hook, "shape": str(list(acts[hook].shape)), "axes": shape, "computed as": formula,
                 "max |recomputed - hook|": gap(again[hook], acts[hook])})
st.dataframe(rows, hide_index=True, width="stretch")
worst = max(row["max |recomputed - hook|"] for row in rows)
st.caption(
    "Each tensor recomputed from the recorded hooks just before it and the weights: "
    + ("every one **bitwise identical** to the hook's. " if worst == 0 else f"the largest difference is {worst:.2g}. ")
    + "The batch axis is 1 (one prompt). No zoo model has LayerNorm: ln1, ln2 and ln_final are the identity, so q, k "
      "and v read resid_pre itself.")

# ---- one head ---------------------------------------------------------------------------------------
st.header(f"Attention of one head of block {layer}")
head_col, pos_col = st.columns(2)
head = int(head_col.selectbox("Head", list(range(cfg.n_heads)), key="build_head", format_func=lambda h: f"H{h}"))
query = int(pos_col.selectbox("Query position", list(range(len(tokens))), index=len(tokens) - 1, key="build_pos",
                              format_func=lambda p: labels[p]))
scores = acts[f"blocks.{layer}.attn.hook_attn_scores"][0, head]  # [query_pos, key_pos]
pattern = acts[f"blocks.{layer}.attn.hook_pattern"][0, head]
st.altair_chart(viz.qk_chart(scores, pattern, words, title=f"{name}, L{layer}H{head}", size=220), width="content")
roles = {a.head: a.pattern for a in zm.truth.attention} if zm.truth else {}
role = roles.get(f"L{layer}H{head}")
st.caption(f"Left: hook_attn_scores, q·k / sqrt(d_head) = q·k / {math.sqrt(cfg.d_head):g}; grey: the keys after "
           "each query, masked with IGNORE (-inf). Right: hook_pattern, the softmax over each row. "
           + (f"The ground truth makes L{layer}H{head} a **{role}** head." if role else
              f"L{layer}H{head} has no attention role in the ground truth."))

q = acts[f"blocks.{layer}.attn.hook_q"][0, query, head]  # [d_head]
k = acts[f"blocks.{layer}.attn.hook_k"][0, :, head]  # [pos, d_head]
v = acts[f"blocks.{layer}.attn.hook_v"][0, :, head]
st.subheader(f"Query {labels[query]}, key by key")
st.dataframe([{"key": labels[key], "q·k": float(q @ k[key]), "q·k / sqrt(d_head)": float(q @ k[key]) / math.sqrt(
    cfg.d_head), "hook_attn_scores": float(scores[query, key]), "hook_pattern": float(pattern[query, key]),
    "|pattern x v|": float(pattern[query, key] * np.linalg.norm(v[key]))} for key in range(len(tokens))],
    hide_index=True, width="stretch")
st.caption(f"hook_z at {labels[query]} is the sum of pattern x v over the keys; the keys after the query "
           "have score -inf and probability 0.")

# ---- one hook's tensor --------------------------------------------------------------------------------
st.header("A hook's tensor at the query position")
hook = st.selectbox("Hook", shown[:-1], key="build_hook", index=shown.index(f"blocks.{layer}.attn.hook_z"))
rows_at, values = at_position(acts[hook], hook, query)
axes = (FIXTURES.step_of(hook) or ("",))[0]
st.dataframe([{"part": label, **{str(i): float(x) for i, x in enumerate(row)}} for label, row in zip(rows_at, values)],
             hide_index=True, width="stretch")
st.caption(f"{hook} {axes}, at {labels[query]}"
           + (" (each head's row of the query, over the keys up to it)" if "query_pos" in axes else "") + ".")
st.info("This page shows what the lesson's checks compare: `check('build.attention', Attention)` and the others "
        "run your modules on these same hook points, in `lessons/17_build_the_transformer/lesson.py`.")
