"""Lesson 2, Induction heads: attention patterns and head detectors against the ground truth."""

from collections.abc import Sequence

import lab_common as lab
import numpy as np
import streamlit as st
import torch

from toylab import methods, viz
from toylab.methods.circuits import copying_score
from toylab.methods.detectors import DETECTORS, head_scores, target_positions

N_SCORE_PROMPTS = 64  # prompts the detector scores average over


def parse_tokens(name: str, seed: int, text: str) -> list[int]:
    """Token ids from names separated by spaces or commas ("BOS t3 t7 t3"); raises ValueError."""
    vocab = lab.zoo_model(name, seed).task.token_names
    index = {token: i for i, token in enumerate(vocab)}
    words = text.replace(",", " ").split()
    unknown = [w for w in words if w not in index]
    if unknown:
        raise ValueError(f"unknown tokens {unknown[:5]}; this task's tokens are {vocab[0]}, {vocab[1]}, ..., {vocab[-1]}")
    n_ctx = lab.zoo_model(name, seed).model.cfg.n_ctx
    if not 1 <= len(words) <= n_ctx:
        raise ValueError(f"type between 1 and {n_ctx} tokens, got {len(words)}")
    return [index[w] for w in words]


@st.cache_data(show_spinner=False)
def attention_patterns(name: str, seed: int, tokens: tuple[int, ...]) -> np.ndarray:
    """Attention of every head on one prompt: [layer, head, query_pos, key_pos]."""
    model = lab.zoo_model(name, seed).model
    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    with lab.FORWARD_LOCK, torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([tokens]), names=hooks)
    return torch.stack([cache[h][0] for h in hooks]).numpy()


@st.cache_data(show_spinner=False)
def detector_scores(name: str, seed: int, sample_seed: int) -> dict[str, np.ndarray]:
    """Each detector's score per head, [layer, head], over ``N_SCORE_PROMPTS`` sampled prompts."""
    zm = lab.zoo_model(name, seed)
    tokens = zm.task.sample(N_SCORE_PROMPTS, seed=sample_seed).tokens
    with lab.FORWARD_LOCK:
        return {d: head_scores(zm.model, tokens, d).scores.numpy() for d in DETECTORS}


def detector_targets(tokens: Sequence[int], detector: str) -> list[tuple[int, int]]:
    """(query, key) cells where a head of the ``detector`` type attends on this prompt."""
    keys = target_positions(torch.tensor([list(tokens)]), detector)[0].tolist()
    return [(q, k) for q, k in enumerate(keys) if k >= 0]


@st.cache_data(show_spinner=False)
def ov_circuit(name: str, seed: int, layer: int, head: int) -> tuple[np.ndarray, float]:
    """The head's full OV circuit [d_vocab, d_vocab_out] and its copying score."""
    ov = methods.ov_circuit(lab.zoo_model(name, seed).model, layer, head)
    return ov.numpy(), copying_score(ov)


@st.cache_data(show_spinner=False)
def pos_qk_circuit(name: str, seed: int, layer: int, head: int) -> np.ndarray:
    """The head's positional QK circuit [query_pos, key_pos], NaN (not -inf) where it cannot attend."""
    scores = methods.pos_qk_circuit(lab.zoo_model(name, seed).model, layer, head).numpy()
    return np.where(np.isneginf(scores), np.nan, scores)


@st.cache_data(show_spinner=False)
def composition(name: str, seed: int, kind: str) -> tuple[np.ndarray, float]:
    """Composition scores [sender_layer, sender_head, receiver_layer, receiver_head] and the random baseline."""
    result = methods.composition_scores(lab.zoo_model(name, seed).model, kind)
    return result.scores.numpy(), result.baseline


st.title("2 Induction heads")
st.caption(
    "An induction head finds the earlier occurrence of the current token and copies the token "
    "that followed it. It needs a previous-token head in an earlier layer. Look at the heads' "
    "attention, score every head with the detectors, then compare with the ground truth."
)

name, seed = lab.pick_model("ind", kind="induction", default="induction-siit")
zm = lab.zoo_model(name, seed)
cfg = zm.model.cfg
roles = {a.head: a.pattern for a in zm.truth.attention} if zm.truth else {}

# ---- the prompt and the head --------------------------------------------------------------
prompt_col, layer_col, head_col, truth_col = st.columns([3, 1, 1, 1.4])
with prompt_col:
    source = st.radio("Prompt", ["sampled", "typed"], horizontal=True, key="ind_source")
    if source == "sampled":
        prompt_seed = st.number_input("Prompt seed", min_value=0, max_value=1_000_000, value=0, key="ind_prompt_seed")
        tokens = tuple(lab.sample(name, seed, int(prompt_seed))[0][0].tolist())
    else:
        example = " ".join(lab.str_tokens(name, seed, lab.sample(name, seed, 0)[0][0].tolist()))
        text = st.text_input("Tokens, separated by spaces", value=example, key="ind_tokens")
        try:
            tokens = tuple(parse_tokens(name, seed, text))
        except ValueError as err:
            st.error(str(err))
            st.stop()
layer = layer_col.selectbox("Layer", range(cfg.n_layers), index=cfg.n_layers - 1, key="ind_layer")
head = head_col.selectbox("Head", range(cfg.n_heads), key="ind_head")
show_truth = truth_col.toggle("Show ground truth", value=True, key="ind_truth")

head_id = f"L{layer}H{head}"
str_toks = lab.str_tokens(name, seed, tokens)
patterns = attention_patterns(name, seed, tokens)  # [layer, head, query_pos, key_pos]

pattern_col, scores_col = st.columns([3, 2])
with pattern_col:
    st.subheader(f"Attention of {head_id}")
    role = roles.get(head_id)
    cells = detector_targets(tokens, role) if show_truth and role else []
    lab.show(viz.attention_pattern, patterns[layer, head], str_toks, title=f"{head_id} on this prompt",
             highlight=cells)
    if not show_truth:
        st.caption(f"{head_id}: ground truth hidden.")
    elif role:
        st.caption(f"{head_id}: the ground truth makes it a **{role}** head; the outlined cells are "
                   f"where a {role} head attends on this prompt.")
    else:
        st.caption(f"{head_id}: no attention role in the ground truth.")

with scores_col:
    st.subheader("Head detectors")
    scores = detector_scores(name, seed, 0)
    st.caption(f"Mean attention on each detector's target key, over {N_SCORE_PROMPTS} sampled prompts. "
               "A high score says where a head looks, not that the model uses it.")
    for detector in DETECTORS:
        truth_heads = {h for h, r in roles.items() if r == detector} if show_truth else set()
        lab.show(viz.head_heatmap, scores[detector], f"{detector} score", highlight=truth_heads)
    if show_truth:
        listed = ", ".join(f"{h} ({r})" for h, r in roles.items()) or "none"
        st.caption(f"Ground truth ({zm.truth.provenance if zm.truth else 'none'}): attention roles {listed}.")

# ---- QK and OV circuits, composition scores (from the weights alone) ----------------------
st.subheader(f"What {head_id}'s weights compute: OV and QK circuits")
vocab = zm.task.token_names
ov, copying = ov_circuit(name, seed, layer, head)  # [d_vocab, d_vocab_out]
n_show = min(16, ov.shape[0], ov.shape[1])
out_names = vocab if ov.shape[1] == len(vocab) else [str(i) for i in range(ov.shape[1])]
ov_col, ov_text = st.columns([3, 2])
with ov_col:
    lab.show(viz.heatmap, ov[:n_show, :n_show], list(vocab[:n_show]), list(out_names[:n_show]),
             title=f"{head_id} OV circuit" + (f" (first {n_show} tokens)" if n_show < max(ov.shape) else ""),
             xlabel="logit raised", ylabel="token attended to", cbar_label="logit")
ov_text.caption(f"{head_id}'s full OV circuit `W_E W_OV W_U` [{ov.shape[0]} x {ov.shape[1]}]: for each token "
                f"the head attends to, how much each output logit goes up. Copying score "
                f"**{copying:.2f}** (fraction of tokens whose own logit is raised most, over all "
                f"{min(ov.shape)} tokens): a copying head has a bright diagonal.")
qk_col, qk_text = st.columns([3, 2])
with qk_col:
    pos_qk = pos_qk_circuit(name, seed, layer, head)  # [query_pos, key_pos], NaN where masked
    positions = [str(p) for p in range(pos_qk.shape[0])]
    lab.show(viz.heatmap, pos_qk, positions, positions, title=f"{head_id} positional QK circuit",
             xlabel="key position", ylabel="query position", cbar_label="attention score")
qk_text.caption(f"`W_pos W_QK W_pos^T` [{pos_qk.shape[0]} x {pos_qk.shape[1]}]: how much a query at each "
                "position wants each key position from position embeddings alone (blank: a causal head "
                "cannot look ahead). A previous-token head peaks just below the diagonal.")

st.subheader("Composition scores")
COMPOSITION = {"k": "K-composition: the receiver's key reads the sender",
               "q": "Q-composition: the receiver's query reads the sender",
               "v": "V-composition: the receiver's value reads the sender"}
kind = st.radio("Composition", list(COMPOSITION), format_func=lambda k: f"{k.upper()}-composition",
                horizontal=True, key="ind_comp")
comp_scores, baseline = composition(name, seed, kind)  # [s_layer, s_head, r_layer, r_head]
senders = [(lay, h) for lay in range(cfg.n_layers - 1) for h in range(cfg.n_heads)]
receivers = [(lay, h) for lay in range(1, cfg.n_layers) for h in range(cfg.n_heads)]
grid = [[comp_scores[s_l, s_h, r_l, r_h] for s_l, s_h in senders] for r_l, r_h in receivers]
truth_edges = {(e.sender, e.receiver) for e in zm.truth.edges if e.kind == kind} if show_truth and zm.truth else set()
sender_ids = [f"L{a}H{b}" for a, b in senders]
receiver_ids = [f"L{a}H{b}" for a, b in receivers]
cells = {(r, s) for r, rid in enumerate(receiver_ids) for s, sid in enumerate(sender_ids) if (sid, rid) in truth_edges}
comp_col, comp_text = st.columns([3, 2])
with comp_col:
    lab.show(viz.heatmap, grid, receiver_ids, sender_ids, title=f"{kind.upper()}-composition scores",
             highlight=cells, diverging=False, xlabel="sender (earlier head)", ylabel="receiver (later head)",
             cbar_label="score")
with comp_text:
    st.caption(f"{COMPOSITION[kind]}: `||W_OV(sender) W(receiver)||_F / (||W_OV|| ||W||)` for every pair of "
               f"an earlier and a later head. Random matrices of the same shapes score **{baseline:.3f}** on "
               "average (the baseline): only scores well above it suggest the pair composes. The induction "
               "circuit is K-composition: the induction head's key reads the previous-token head.")
    if show_truth:
        listed = ", ".join(f"{s} -> {r}" for s, r in sorted(truth_edges)) or "none between heads"
        st.caption(f"Ground truth {kind.upper()}-composition edges (outlined): {listed}.")
