"""Lesson 4, Superposition: toy models that retrain in seconds, their geometry, and the phase diagram."""

import time
from typing import Any

import lab_common as lab
import numpy as np
import streamlit as st

from toylab import methods, viz
from toylab.lessons import lesson_fixtures
from toylab.methods.superposition import STATUS_NAMES

SWEEP_DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005)  # one toy-model instance each
TOY_STEPS = 2000


@st.cache_data(show_spinner="Training the toy models...", max_entries=64)
def toy_sweep(n_features: int, n_hidden: int, importance_decay: float, seed: int) -> dict[str, Any]:
    """Lesson 4's sweep (its fixture) with ``n_features`` in ``n_hidden`` dimensions and importance
    ``decay**i``, one instance per density of ``SWEEP_DENSITIES``, trained in one run: weights,
    the weights' classification, dimensionality, and what gets through when each feature is fed alone."""
    start = time.perf_counter()
    model, history = lesson_fixtures("superposition").sweep_model(
        TOY_STEPS, seed, densities=SWEEP_DENSITIES, n_features=n_features, n_hidden=n_hidden,
        importance_decay=importance_decay)
    seconds = time.perf_counter() - start
    fs = methods.feature_status(model)
    return {"W": model.W.detach().numpy(), "importance": model.importance[0].numpy(), "status": fs.status.numpy(),
            "norms": fs.norms.numpy(), "D": fs.dimensionality.numpy(),
            "gain": methods.reconstruction(model).numpy(), "loss": history.loss[-1].numpy(), "seconds": seconds}


@st.cache_data(show_spinner="Training every cell of the phase diagram...", max_entries=8)
def phase_diagram(n: int, seed: int) -> dict[str, Any]:
    """``methods.phase_diagram`` on an n x n grid: feature 1's status, the axes and the seconds it took."""
    start = time.perf_counter()
    pd = methods.phase_diagram(n_density=n, n_importance=n, seed=seed)
    return {"status": pd.feature1().numpy(), "density": pd.density.numpy(),
            "importance": pd.relative_importance.numpy(), "seconds": time.perf_counter() - start}


st.title("4 Superposition")
st.caption(
    "The toy model of Elhage et al. (2022): x' = ReLU(W^T W x + b) squeezes n features into m < n "
    "dimensions. The ground truth is the data generator: every feature's importance and density are "
    "known. Change the model and the sparsity; a sweep of 8 densities retrains in seconds."
)

feat_col, hid_col, imp_col, seed_col = st.columns(4)
n_features = feat_col.slider("Features", 2, 12, 5, key="sup_features")
n_hidden = hid_col.slider("Hidden dimensions", 1, 6, 2, key="sup_hidden")
decay = imp_col.select_slider("Importance decay (feature i has decay^i)", [0.7, 0.8, 0.9, 0.95, 1.0], 0.9,
                              key="sup_decay")
seed = seed_col.number_input("Seed", 0, 1000, 1, key="sup_seed")
if lab.on_request("Train the sweep", key="sup_train",
                  help=f"{len(SWEEP_DENSITIES)} toy models, one per density, trained together for {TOY_STEPS} steps: "
                       "a few seconds. After this, changing the model retrains it."):
    sweep = toy_sweep(n_features, n_hidden, float(decay), int(seed))

    density = st.select_slider("Feature density (1 - sparsity): which instance of the sweep to show",
                               list(SWEEP_DENSITIES), SWEEP_DENSITIES[-1], key="sup_density")
    i = SWEEP_DENSITIES.index(density)
    W = sweep["W"][i]  # [hidden, feature]
    labels = [f"f{f}" for f in range(n_features)]

    geometry_col, table_col = st.columns([1, 1])
    with geometry_col:
        if n_hidden == 2:
            st.subheader("Feature directions")
            lab.show(viz.feature_geometry, W, importance=sweep["importance"], title=f"density {density}")
        else:
            st.subheader("W^T W")
            lab.show(viz.heatmap, W.T @ W, labels, labels, title=f"W^T W at density {density}")
    with table_col:
        st.subheader("Each feature")
        st.dataframe([{"feature": labels[f], "importance": round(float(sweep["importance"][f]), 3),
                       "density": density, "norm": round(float(sweep["norms"][i, f]), 3),
                       "weights say": STATUS_NAMES[int(sweep["status"][i, f])],
                       "fed alone, passes": round(float(sweep["gain"][i, f]), 2),
                       "dimensionality": round(float(sweep["D"][i, f]), 3)} for f in range(n_features)],
                     hide_index=True, width="stretch")
        kept = int((sweep["gain"][i] > 0.5).sum())
        st.markdown(f"**{kept} of {n_features} features** get through at this density with {n_hidden} "
                    f"dimension{'s' if n_hidden > 1 else ''} (trained in {sweep['seconds']:.1f} s).")
        st.caption("'weights say' reads W (ignored: short W_i; superposed: overlaps others). 'fed alone, passes' "
                   "runs the model on that feature alone: x'_i(e_i) - x'_i(0), near 1 when it gets through.")

    st.subheader("Dimensionality across the sweep")
    lab.show(viz.dimensionality_plot, np.array(SWEEP_DENSITIES), sweep["D"],
             title=f"{n_features} features in {n_hidden} dims")
else:
    st.caption(f"The sweep trains {len(SWEEP_DENSITIES)} instances, densities {SWEEP_DENSITIES[0]} to "
               f"{SWEEP_DENSITIES[-1]}, for {TOY_STEPS} steps; then pick a density to see its geometry and features.")

st.subheader("The phase change: 2 features in 1 dimension")
st.caption("Feature 0 has importance 1, feature 1 the relative importance on the y axis; both have the "
           "density on the x axis. Every cell is trained (6 restarts each, the best kept) in one run.")
size_col, run_col = st.columns([2, 1])
size = size_col.radio("Grid", ["8 x 8 (seconds)", "20 x 20 (about a minute)"], horizontal=True, key="sup_grid")
n = 8 if size.startswith("8") else 20
if run_col.button("Train the phase diagram", key="sup_train_pd") or st.session_state.get(f"sup_pd_{n}"):
    st.session_state[f"sup_pd_{n}"] = True
    pd = phase_diagram(n, 0)
    lab.show(viz.phase_map, pd["status"], pd["density"], pd["importance"], title=f"feature 1, {n} x {n} cells")
    st.caption(f"Trained in {pd['seconds']:.1f} s.")
