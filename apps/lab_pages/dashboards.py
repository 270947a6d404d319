"""Feature dashboards: for any MLP neuron, SAE latent or transcoder feature of a zoo model, its top activating inputs
with the tokens highlighted, its activation histogram, the outputs it promotes and suppresses (direct path), and the
declared true feature it matches, as ``methods.feature_dashboard`` computes them."""

from typing import Any

import lab_common as lab
import streamlit as st

from toylab import methods, sae, viz, zoo
from toylab.methods.dashboard import N_PROMPTS, SEED, n_features, with_index

SOURCES = ("MLP neurons", "SAE latents", "transcoder features")
STEPS = (300, 1000, 3000)  # training steps of the SAE or transcoder (Adam, batch 256, lr 3e-3)
N_TRAIN, TRAIN_SEED = 2048, 1  # prompts whose activations (every position) train them; the dashboards use others
DATA_SEED = SEED  # N_PROMPTS prompts sampled with this seed: the data of every dashboard
EXPANSION = 4  # SAE latents per dimension of the hook (topk, k = SAE_K), at most MAX_LATENTS
MAX_LATENTS = 256  # so that an SAE of modadd-113's neurons (512 wide) still trains in seconds
TRANSCODER_EXPANSION = 2  # transcoder features per MLP, per dimension of d_model
SAE_K = 4
TRANSCODER_L1 = 1.0


def has_mlps(name: str) -> bool:
    cfg = zoo.recipe(name).model
    return not cfg.attn_only and cfg.d_mlp is not None


@st.cache_resource(show_spinner="Running the model over the prompts...", max_entries=16)
def activations(name: str, seed: int) -> methods.DashboardActivations:
    """The shared precompute of every dashboard of the model: N_PROMPTS prompts (seed DATA_SEED), one forward pass;
    each source's activations are added the first time it is shown. Shared by every session."""
    zm = lab.zoo_model(name, seed)
    with lab.FORWARD_LOCK:
        return methods.dashboard_activations(zm.model, zm.task, n_prompts=N_PROMPTS, seed=DATA_SEED)


@st.cache_resource(show_spinner="Training the SAE (a few seconds)...", max_entries=32)
def trained_sae(name: str, seed: int, hook: str, steps: int) -> tuple[sae.SAE, float]:
    """A topk SAE (EXPANSION x the hook's width latents, at most MAX_LATENTS; k = SAE_K) trained on the hook's
    activations at every position of N_TRAIN prompts (seed TRAIN_SEED), and its training time. Never modified."""
    zm = lab.zoo_model(name, seed)
    with lab.FORWARD_LOCK:
        x = sae.model_activations(zm.model, zm.task.sample(N_TRAIN, seed=TRAIN_SEED).tokens, hook)
    d_sae = min(EXPANSION * x.shape[1], MAX_LATENTS)
    trained = sae.SAE(sae.SAEConfig(d_in=x.shape[1], d_sae=d_sae, architecture="topk", k=SAE_K))
    history = sae.train_sae(trained, x, steps=steps, batch_size=256, lr=3e-3, seed=0)
    return trained.requires_grad_(False), history.seconds


@st.cache_resource(show_spinner="Training the transcoder (a few seconds)...", max_entries=32)
def trained_transcoder(name: str, seed: int, steps: int) -> tuple[sae.Transcoder, float]:
    """A per-layer ReLU transcoder (TRANSCODER_EXPANSION x d_model features per MLP) of every MLP, trained on the
    MLPs' inputs and outputs at every position of N_TRAIN prompts (seed TRAIN_SEED). Never modified."""
    zm = lab.zoo_model(name, seed)
    cfg = zm.model.cfg
    with lab.FORWARD_LOCK:
        x, y = sae.mlp_activations(zm.model, zm.task.sample(N_TRAIN, seed=TRAIN_SEED).tokens)
    tc = sae.Transcoder(sae.TranscoderConfig(n_layers=cfg.n_layers, d_in=cfg.d_model, d_out=cfg.d_model,
                                             d_latent=TRANSCODER_EXPANSION * cfg.d_model, l1_coefficient=TRANSCODER_L1))
    history = sae.train_transcoder(tc, x, y, steps=steps, batch_size=256, lr=3e-3, seed=0)
    return tc.requires_grad_(False), history.seconds


def sae_hooks(cfg: Any) -> list[str]:
    hooks = [f"blocks.{l}.{h}" for l in range(cfg.n_layers) for h in ("hook_mlp_out", "hook_resid_post",
                                                                         "mlp.hook_post")]
    return hooks + ["hook_embed"]


def step(delta: int, n: int) -> None:
    """The prev / next buttons: move the feature index, within 0 .. n - 1."""
    st.session_state["dash_index"] = min(max(int(st.session_state.get("dash_index", 0)) + delta, 0), n - 1)


st.title("Feature dashboards")
st.caption(
    "What does one unit of a model respond to, and what does it do? As sae_vis and Neuronpedia show it: the inputs "
    "on which it fires most (each token shaded by its activation), how often and how strongly it fires, and the "
    "outputs its output direction pushes up and down straight through the unembedding. Where a model's truth declares "
    "features, it says which true feature a unit is: the declared one its output direction matches best.")

name, seed = lab.pick_model("dash", where=has_mlps, default="conjunctions")
zm = lab.zoo_model_or_stop(name, seed)
cfg = zm.model.cfg
show_truth = st.toggle("Show ground truth", value=True, key="dash_truth")
truth = zm.truth if show_truth else None

source_col, where_col, steps_col = st.columns([2, 2, 1])
source = source_col.radio("Source", SOURCES, horizontal=True, key="dash_source")
note = ""
if source == "MLP neurons":
    layer = int(where_col.selectbox("MLP layer", list(range(cfg.n_layers)), key="dash_layer"))
    proto: methods.Neuron | methods.SAELatent | methods.TranscoderFeature = methods.Neuron(layer, 0)
elif source == "SAE latents":
    hook = where_col.selectbox("Hook", sae_hooks(cfg), key="dash_hook",
                               help="The SAE reads this hook's activations at every position. mlp.hook_post is "
                                    "d_mlp wide, not the residual stream: its latents have no direct logit effect.")
    steps = int(steps_col.selectbox("Steps", STEPS, index=1, key="dash_steps"))
    model_sae, seconds = trained_sae(name, seed, hook, steps)
    proto = methods.SAELatent(model_sae, hook, 0)
    note = (f"A topk SAE (k={SAE_K}, {model_sae.cfg.d_sae} latents) trained for {steps} steps in {seconds:.1f} s on "
            f"{hook} at every position of {N_TRAIN} other prompts.")
else:
    layer = int(where_col.selectbox("MLP layer", list(range(cfg.n_layers)), key="dash_layer"))
    steps = int(steps_col.selectbox("Steps", STEPS, index=1, key="dash_steps"))
    tc, seconds = trained_transcoder(name, seed, steps)
    proto = methods.TranscoderFeature(tc, layer, 0)
    note = (f"A per-layer ReLU transcoder ({tc.cfg.d_latent} features per MLP) trained for {steps} steps in "
            f"{seconds:.1f} s on the MLPs' inputs and outputs at every position of {N_TRAIN} other prompts.")

n = n_features(zm.model, proto)
if int(st.session_state.get("dash_index", 0)) > n - 1:  # a source with fewer features than the last one
    st.session_state["dash_index"] = n - 1
index_col, prev_col, next_col = st.columns([3, 1, 1], vertical_alignment="bottom")
index = int(index_col.number_input(f"Feature (0 to {n - 1})", 0, n - 1, key="dash_index"))
prev_col.button("Previous", key="dash_prev", on_click=step, args=(-1, n), disabled=index == 0, width="stretch")
next_col.button("Next", key="dash_next", on_click=step, args=(1, n), disabled=index == n - 1, width="stretch")

cache = activations(name, seed)
feature = with_index(proto, index)
with lab.FORWARD_LOCK:  # the first dashboard of a source computes its activations (a hook may need a forward)
    d = methods.feature_dashboard(zm.model, cache, feature, truth=truth, n_quantiles=4)
    table = methods.feature_table(zm.model, cache, proto, truth=truth)

st.header(d.label)
if note:
    st.caption(note)
columns = st.columns(5)
columns[0].metric("Max activation", f"{d.max_activation:.3g}")
columns[1].metric("Density", f"{100 * d.density:.2f}%", help="Fraction of the (prompt, position) pairs where it "
                  "fires (activation > 0).")
columns[2].metric("Prompts firing", f"{100 * d.prompt_density:.1f}%")
columns[3].metric("Truth match", "n/a" if d.truth_match is None else d.truth_match.name,
                  help="The declared true feature whose direction is closest to this one's output direction.")
columns[4].metric("Cosine", "n/a" if d.truth_match is None else f"{d.truth_match.cosine:.3f}")
if d.truth_match is not None:
    m = d.truth_match
    at = m.hook + ("" if m.pos is None else f", position {m.pos}")
    st.markdown(f"<span style='border:2px solid {viz.TRUTH_COLOR};padding:0 4px'>ground truth</span> Its output "
                f"direction matches the declared feature **{m.name}** at {at} with cosine **{m.cosine:.3f}** (best of "
                f"{m.n_declared})" + ("" if m.fires_at_pos is None or m.pos is None else
                                      f"; it fires there on {100 * m.fires_at_pos:.1f}% of prompts") + ".",
                unsafe_allow_html=True)
elif show_truth:
    st.caption(f"Truth match: none, {d.truth_note}.")
else:
    st.caption("Ground truth hidden.")

inputs_col, charts_col = st.columns([3, 2])
with inputs_col:
    st.subheader("Top activating inputs")
    st.caption(f"Distinct prompts among {d.n_prompts} (seed {DATA_SEED}) by their largest activation; each token "
               "shaded by its activation over the maximum, the peak outlined; hover a token for its value.")
    if d.top:
        st.html(viz.prompts_html(d.top, d.max_activation))
    else:
        st.info(f"{d.label} never fires on these {d.n_prompts} prompts.")
    if d.quantiles:
        with st.expander("Samples across the activation range"):
            for q in reversed(d.quantiles):
                st.markdown(f"**({q.low:.3g}, {q.high:.3g}]**: {q.n_prompts} prompts")
                if q.examples:
                    st.html(viz.prompts_html(q.examples, d.max_activation))
with charts_col:
    st.altair_chart(viz.activation_histogram_chart(d), width="stretch", key="dash_hist")
    logits = viz.logit_chart(d)
    if logits is None:
        st.caption(f"Logit effects {d.logits_note}.")
    else:
        st.altair_chart(logits, width="stretch", key="dash_logits")
        st.caption(f"Logit effects: {d.logits_note}.")

st.subheader(f"Every feature of {table.source}")
rows = table.rows(by_truth=True)
for row in rows:
    for key in ("density", "max activation", "cosine"):
        if row.get(key) is not None:
            row[key] = round(row[key], 4)
st.dataframe(rows, hide_index=True, width="stretch", height=320)
if any(m is not None for m in table.match):
    st.caption("Sorted by the cosine of each feature's output direction with its best-matching declared feature.")
elif show_truth:
    st.caption(f"No truth match to sort by: {table.truth_note}.")
