"""Lesson 2, Induction heads: attention patterns and head detectors against the ground truth."""

import lab_common as lab
import streamlit as st

from toylab import viz
from toylab.methods.detectors import DETECTORS

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
            tokens = tuple(lab.parse_tokens(name, seed, text))
        except ValueError as err:
            st.error(str(err))
            st.stop()
layer = layer_col.selectbox("Layer", range(cfg.n_layers), index=cfg.n_layers - 1, key="ind_layer")
head = head_col.selectbox("Head", range(cfg.n_heads), key="ind_head")
show_truth = truth_col.toggle("Show ground truth", value=True, key="ind_truth")

head_id = f"L{layer}H{head}"
str_toks = lab.str_tokens(name, seed, tokens)
patterns = lab.attention_patterns(name, seed, tokens)  # [layer, head, query_pos, key_pos]

pattern_col, scores_col = st.columns([3, 2])
with pattern_col:
    st.subheader(f"Attention of {head_id}")
    role = roles.get(head_id)
    cells = lab.detector_targets(tokens, role) if show_truth and role else []
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
    scores = lab.detector_scores(name, seed, 0)
    st.caption(f"Mean attention on each detector's target key, over {lab.N_SCORE_PROMPTS} sampled prompts. "
               "A high score says where a head looks, not that the model uses it.")
    for detector in DETECTORS:
        truth_heads = {h for h, r in roles.items() if r == detector} if show_truth else set()
        lab.show(viz.head_heatmap, scores[detector], f"{detector} score", highlight=truth_heads)
    if show_truth:
        listed = ", ".join(f"{h} ({r})" for h, r in roles.items()) or "none"
        st.caption(f"Ground truth ({zm.truth.provenance if zm.truth else 'none'}): attention roles {listed}.")

# ==== EXTENSION POINT: QK/OV circuits and composition scores ================================
# The next step of lesson 2 goes here, below the detectors, once toylab.methods provides it:
# the selected head's QK circuit (which token attends to which) and OV circuit (what it copies),
# and the K/Q/V composition scores between layer-0 and layer-1 heads, as viz.heatmap /
# viz.head_heatmap figures with the truth's edges (zm.truth.edges, kind "k"/"q"/"v") outlined.
st.subheader("QK and OV circuits, composition scores")
st.info("Coming next: the selected head's QK and OV circuits, and the composition scores that show "
        "which earlier head each induction head reads from.", icon=":material/construction:")
