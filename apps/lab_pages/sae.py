"""Lesson 5, Sparse autoencoders: train one on data whose features are known and see which it found."""

from collections.abc import Callable
from typing import Any

import lab_common as lab
import numpy as np
import streamlit as st
import torch

from toylab import viz
from toylab.lessons import lesson_fixtures
from toylab.sae import SAE, SAEConfig, cosine_matrix, score_sae
from toylab.sae import train_sae as sae_train

SAE_DATA = {
    "synthetic dictionary (128 features in 32 dims)": "synthetic",
    "toy model: 20 features in 10 dims": "toy-20-10",
    "toy model: 5 features in 2 dims (a pentagon)": "toy-5-2",
}


@st.cache_resource(show_spinner="Training the toy model...", max_entries=16)
def sae_source(data: str, seed: int) -> tuple[Callable[[int, torch.Generator], tuple], torch.Tensor]:
    """A sampler ``(n, generator) -> (activations, true coefficients)`` and the true features
    [feature, d_in], from lesson 5's fixtures: its dictionary, or its toy model at another size.
    Once per process (a toy model trains in seconds), shared by every SAE trained on it; never modified."""
    fixtures = lesson_fixtures("sae")
    if data == "synthetic":
        synthetic = fixtures.dictionary(seed)
        return synthetic.sample, synthetic.features
    n_features, n_hidden = {"toy-20-10": (20, 10), "toy-5-2": (5, 2)}[data]
    toy = fixtures.toy_model(n_features, n_hidden, steps=3000, seed=seed)
    return fixtures.activation_sampler(toy), fixtures.feature_directions(toy).clone()


@st.cache_data(show_spinner="Training the SAE...", max_entries=64)
def train_sae(data: str, architecture: str, d_sae: int, sparsity: float, steps: int, seed: int) -> dict[str, Any]:
    """An SAE trained on ``data`` (a value of ``SAE_DATA``) and scored against the true features
    on fresh samples. ``sparsity`` is k for topk, the L1 coefficient for relu and the L0
    coefficient for jumprelu."""
    sample, features = sae_source(data, seed)
    extra = {"topk": {"k": int(sparsity)}, "relu": {"l1_coefficient": sparsity},
             "jumprelu": {"l0_coefficient": sparsity}}[architecture]
    sae = SAE(SAEConfig(d_in=features.shape[1], d_sae=d_sae, architecture=architecture, seed=seed, **extra))
    history = sae_train(sae, sample, steps=steps, batch_size=256, lr=3e-3, seed=seed, resample_every=500)
    x, c = sample(8192, torch.Generator().manual_seed(10_000 + seed))
    scores = score_sae(sae, features, x, c)
    return {"scores": {k: v for k, v in vars(scores).items() if isinstance(v, float)},
            "matched": np.array(scores.matched_latent), "f1": np.array(scores.f1_per_feature),
            "cos": cosine_matrix(features, sae.W_dec.detach()).numpy(), "features": features.numpy(),
            "W_dec": sae.W_dec.detach().numpy(), "true_l0": float((c > 0).sum(-1).float().mean()),
            "seconds": history.seconds}


st.title("5 Sparse autoencoders")
st.caption(
    "An SAE maps activations to many sparse latents and back. Here the true features are known, so its "
    "decoder rows can be matched to them one to one and scored: did it find every feature, and does each "
    "latent fire when its feature is on?"
)

data_col, arch_col, width_col = st.columns([2, 1, 1])
data_name = data_col.selectbox("Activations", list(SAE_DATA), key="sae_data")
data = SAE_DATA[data_name]
architecture = arch_col.selectbox("Architecture", ["topk", "relu", "jumprelu"], key="sae_arch")
n_true = {"synthetic": 128, "toy-20-10": 20, "toy-5-2": 5}[data]
ratio = width_col.select_slider("Latents per true feature", [1, 2, 4], 2, key="sae_ratio")

sparsity_col, steps_col, seed_col, truth_col = st.columns([2, 1, 1, 1])
if architecture == "topk":
    sparsity = sparsity_col.slider("k (active latents per input)", 1, 16, 4 if data == "synthetic" else 2,
                                   key="sae_k")
elif architecture == "relu":
    sparsity = sparsity_col.select_slider("L1 coefficient", [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3], 0.1, key="sae_l1")
else:
    sparsity = sparsity_col.select_slider("L0 coefficient", [1e-2, 3e-2, 0.1, 0.3, 1.0], 0.3, key="sae_l0")
steps = steps_col.select_slider("Steps", [250, 500, 1000, 2000, 3000], 1000, key="sae_steps")
seed = seed_col.number_input("Seed", 0, 1000, 0, key="sae_seed")
show_truth = truth_col.toggle("Show ground truth", value=True, key="sae_truth")

if not lab.on_request("Train the SAE", key="sae_train",
                      help="A few seconds at 1,000 steps. After this, changing a setting retrains it."):
    st.caption(f"The SAE, {ratio * n_true} latents wide, trains for {steps:,} steps on batches of 256 fresh "
               "activations; then it is scored against the true features.")
    st.stop()
result = train_sae(data, architecture, ratio * n_true, float(sparsity), int(steps), int(seed))
scores = result["scores"]

metric_cols = st.columns(5)
for col, (name, key) in zip(metric_cols, [("MMCS", "mmcs"), ("MCC", "mcc"), ("F1", "f1"),
                                           ("L0", "l0"), ("explained variance", "explained_variance")]):
    col.metric(name, f"{scores[key]:.3f}")
st.caption(f"On 8,192 fresh samples; the data's true L0 is {result['true_l0']:.2f}. Trained in "
           f"{result['seconds']:.1f} s. MMCS: mean over true features of the best cosine with a decoder row; "
           "MCC: correlation of each matched latent with its feature's coefficient; F1: the matched latent "
           "as a detector of its feature.")

plot_col, table_col = st.columns([3, 2])
with plot_col:
    if data == "toy-5-2":
        st.subheader("Decoder rows and the true directions")
        lab.show(viz.feature_geometry, result["W_dec"].T, labels=[f"z{j}" for j in range(len(result["W_dec"]))],
                 truth=result["features"].T if show_truth else None, title="SAE decoder rows (arrows)")
    else:
        st.subheader("True features x latents")
        lab.show(viz.latent_cosines, result["cos"], result["matched"], show_truth=show_truth,
                 title="cosine of each true feature with each latent")
with table_col:
    st.subheader("Which latent found which feature")
    matched, cos, f1 = result["matched"], result["cos"], result["f1"]
    rows = [{"feature": f, "latent": int(matched[f]) if matched[f] >= 0 else None,
             "cosine": round(float(cos[f, matched[f]]), 3) if matched[f] >= 0 else None,
             "F1": round(float(f1[f]), 2)} for f in range(len(matched))]
    st.dataframe(rows, hide_index=True, width="stretch", height=360)
    found = int((np.array([r["cosine"] or 0 for r in rows]) > 0.9).sum())
    st.markdown(f"**{found} of {len(rows)}** true features have a matched latent with cosine above 0.9.")
    st.dataframe([{"metric": k, "value": round(v, 4)} for k, v in scores.items()], hide_index=True,
                 width="stretch")
