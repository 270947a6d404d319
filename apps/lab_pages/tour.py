"""Lesson 1, Tour of the lab: a zoo model's card, a prompt, its hooks and its ground truth."""

import lab_common as lab
import streamlit as st
import torch

from toylab import viz
from toylab.checkpoint import read_json
from toylab.tasks.base import IGNORE


@st.cache_data(show_spinner=False)
def hook_shapes(name: str, seed: int, sample_seed: int, n: int = 2) -> list[dict[str, str]]:
    """Every hook of the model with the shape it records on ``n`` sampled prompts."""
    zm = lab.zoo_model(name, seed)
    tokens = zm.task.sample(n, seed=sample_seed).tokens
    with lab.FORWARD_LOCK, torch.no_grad():
        _, cache = zm.model.run_with_cache(tokens)
    return [{"hook": hook, "shape": str(list(act.shape))} for hook, act in cache.items()]


@st.cache_data(show_spinner=False)
def training_history(name: str, seed: int) -> list[dict[str, float]]:
    """The run's evaluations (``history.json``); empty for a constructed model."""
    path = lab.zoo_model(name, seed).path / "history.json"
    return read_json(path, "training history") if path.exists() else []


st.title("1 Tour of the lab")
st.caption("Everything a zoo model comes with: its card, its task, its hooks and its ground-truth circuit.")

name, seed = lab.pick_model("tour", default="induction-siit")
zm = lab.zoo_model(name, seed)
card, cfg, truth = zm.card, zm.model.cfg, zm.truth

# ---- the card ---------------------------------------------------------------------------
st.header(f"The card of {name}, seed {seed}", anchor="card")
st.markdown(card.get("description", ""))
cert = card.get("certificate")
verdict = "not recorded" if not cert else "passed" if cert["passed"] else "FAILED"
cols = st.columns(4)
cols[0].metric("Parameters", f"{zm.model.n_params:,}")
cols[1].metric("Hooks", len(zm.model.hook_names()))
cols[2].metric("Training steps", "built by hand" if card.get("constructed") else card.get("steps"))
cols[3].metric("Certificate", verdict)
st.markdown(f"**Task** `{zm.task!r}`")
if cert:
    summary = f"faithfulness {cert['faithfulness']:.3f}, completeness {cert['completeness']:.3f}"
    if cert["passed"]:
        st.success(f"The ground truth's certificate passed: {summary}.", icon=":material/verified:")
    else:  # a warning, not an error: a failing certificate is a recorded fact about the model
        st.warning(f"The certificate FAILED: {summary}; {'; '.join(cert['failures'])}")

config_col, train_col = st.columns([1, 2])
with config_col:
    st.markdown("**Config**")
    st.dataframe([{"field": k, "value": str(v)} for k, v in cfg.to_dict().items()], hide_index=True)
with train_col:
    st.markdown("**Training**")
    history = training_history(name, seed)
    if history:
        lab.show(viz.training_curves, history, f"{name} (seed {seed}), {card.get('train_time_s')} s")
    else:
        st.info("A constructed model: every weight was set by hand, so there is no training curve.")
    claims = ", ".join(f"`{c}`" for c in card.get("claims", []))
    st.caption(f"Claims the recipe makes: {claims or 'none'}. `toylab info {name}` re-measures them.")

# ---- a prompt ---------------------------------------------------------------------------
st.header("A prompt", anchor="prompt")
sample_seed = st.number_input("Sample seed", min_value=0, max_value=1_000_000, value=0, key="tour_sample")
tokens, targets = (rows[0].tolist() for rows in lab.sample(name, seed, int(sample_seed)))
token_strs = lab.str_tokens(name, seed, tokens)
answers = ["" if t == IGNORE else str(t) for t in targets]
# One column per position, so the prompt reads left to right.
st.dataframe([{"": "token", **{str(i): t for i, t in enumerate(token_strs)}},
              {"": "target (output id)", **{str(i): t for i, t in enumerate(answers)}}], hide_index=True)
st.caption("`task.sample(n, seed)` gives `tokens` and `targets`, both [batch, pos]; "
           "a target is the answer the model must give *at* that position, blank where unscored.")

# ---- hooks ------------------------------------------------------------------------------
st.header("Hooks", anchor="hooks")
st.caption("`model.run_with_cache(tokens)` on two prompts: every hook fires, so every one is cached. "
           "Names and shapes follow TransformerLens.")
st.dataframe(hook_shapes(name, seed, int(sample_seed)), hide_index=True, height=300)

# ---- ground truth -----------------------------------------------------------------------
st.header("Ground truth", anchor="truth")
if truth is None:
    st.info(f"{name} has no ground truth.")
else:
    st.markdown(f"**Provenance: {truth.provenance}.** {truth.description}")
    nodes_col, edges_col = st.columns(2)
    with nodes_col:
        st.markdown("**Nodes**")
        st.dataframe([{"component": n, "role": r} for n, r in truth.nodes.items()], hide_index=True)
    with edges_col:
        st.markdown("**Edges** (q, k or v into heads; resid otherwise)")
        st.dataframe([{"sender": e.sender, "receiver": e.receiver, "kind": e.kind} for e in truth.edges],
                     hide_index=True)
    if truth.attention:
        st.markdown("**Attention roles** (the detector score each head must reach)")
        st.dataframe([{"head": a.head, "pattern": a.pattern, "min score": a.min_score} for a in truth.attention],
                     hide_index=True)
    with st.expander("The whole truth, as `toylab truth` prints it"):
        st.code(truth.summary(), language=None)
