"""Lesson 5, Sparse autoencoders: train one on data whose features are known and see which it found."""

import lab_common as lab
import numpy as np
import streamlit as st

from toylab import viz

st.title("5 Sparse autoencoders")
st.caption(
    "An SAE maps activations to many sparse latents and back. Here the true features are known, so its "
    "decoder rows can be matched to them one to one and scored: did it find every feature, and does each "
    "latent fire when its feature is on?"
)

data_col, arch_col, width_col = st.columns([2, 1, 1])
data_name = data_col.selectbox("Activations", list(lab.SAE_DATA), key="sae_data")
data = lab.SAE_DATA[data_name]
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

result = lab.train_sae(data, architecture, ratio * n_true, float(sparsity), int(steps), int(seed))
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
