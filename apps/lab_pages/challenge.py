"""Blind challenges: a model whose circuit you are not told, and an exact score (``toylab.challenges``)."""

import secrets
import tempfile
from pathlib import Path

import streamlit as st

from toylab import challenges
from toylab.validate.baselines import BASELINES, DESCRIPTIONS
from toylab.validate.protocol import candidate_nodes

st.title("Blind challenges")
st.markdown(
    "Each challenge is a certified zoo model of one family whose heads have been shuffled and whose residual "
    "stream has been rotated: which head plays which role is drawn at random, and the ground truth is sealed. "
    "Find the circuit with any method you like, submit it, and get the validation harness's exact score. "
    "Revealing the truth is allowed; it is recorded, and every later score is marked as having looked. "
    "The same from the shell: `toylab challenge new --level N`, then `toylab challenge submit FOLDER ANSWER`."
)

levels = challenges.LEVELS
level_col, seed_col, make_col = st.columns([3, 1, 1])
level = level_col.selectbox("Level", list(levels), format_func=lambda n: f"{n}: {levels[n].title}", key="ch_level")
if "ch_seed_default" not in st.session_state:
    st.session_state["ch_seed_default"] = secrets.randbelow(10**6)
seed = int(seed_col.number_input("Draw", min_value=0, value=st.session_state["ch_seed_default"], step=1, key="ch_seed",
                                 help="The seed of the draw: the same seed gives the same challenge."))
if make_col.button("New challenge", key="ch_new", type="primary"):
    folder = Path(tempfile.mkdtemp(prefix="toylab-challenge-")) / f"L{level}-{seed}"
    with st.spinner("Drawing the challenge..."):
        challenges.new_challenge(level, seed, folder)
    st.session_state["ch_folder"] = str(folder)

folder = st.session_state.get("ch_folder")
if folder is None:
    st.info("Pick a level and press **New challenge**.")
    st.stop()

challenge = challenges.load_challenge(folder)
cfg = challenge.model.cfg
st.subheader(f"Level {challenge.level}: {challenge.title}")
st.markdown(challenge.brief)
st.caption(f"Model: {cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}"
           + ("" if cfg.d_mlp is None else f", MLPs of {cfg.d_mlp}") + f"; task {challenge.task!r}. "
           f"Files in `{folder}` (config.json, model.safetensors, task.json). Certified: the disguise computes its "
           f"source's function to {challenge.record['certified_by']['max_logit_diff']:.1e} in the logits.")

st.subheader("Your answer")
nodes = [n for n in candidate_nodes(cfg)]
answer_kind = st.radio("Submit", ["a circuit (components)", "a built-in method"], horizontal=True, key="ch_kind")
if answer_kind == "a circuit (components)":
    chosen = st.multiselect("Components in the circuit", nodes, key="ch_nodes",
                            help="The inputs (embed) count as a node; the output (logits) is implied.")
    label = "circuit " + ", ".join(chosen)
    answer = {"nodes": chosen}
    ready = bool(chosen)
else:
    method = st.selectbox("Method", list(BASELINES), format_func=lambda m: f"{m}: {DESCRIPTIONS[m]}",
                          index=list(BASELINES).index("resample-ablation"), key="ch_method")
    label, answer, ready = f"baseline {method}", BASELINES[method], True
if st.button("Submit", key="ch_submit", disabled=not ready):
    with st.spinner("Scoring on pairs your answer never saw..."):
        score = challenges.submit(folder, answer, label=label)
    if score.entry.error:
        st.error(f"Not scored: {score.entry.error}")
    else:
        st.session_state["ch_last"] = (label, score.figures(), score.looked)

if "ch_last" in st.session_state:
    label, figures, looked = st.session_state["ch_last"]
    st.markdown(f"**Score of {label}**" + (" (looked at the truth: not a blind score)" if looked else ""))
    st.dataframe([{"figure": k, "value": round(v, 3)} for k, v in figures.items()], hide_index=True)

history = challenge.submissions
if history:
    st.subheader("Submissions")
    st.dataframe([{"answer": s["label"], "looked": s["looked"], "error": s["error"] or "",
                   **{k: round(v, 3) for k, v in s["figures"].items()
                      if k in ("tpr", "fpr", "faithfulness", "node_auroc", "edge_auroc[head]")}}
                  for s in history], hide_index=True)

st.subheader("The truth")
if st.checkbox("Reveal the truth (recorded: later scores are marked as having looked)", key="ch_reveal"):
    truth = challenges.reveal(folder)
    st.code(truth.summary(), language=None)
