"""Lesson 16, Attribution patching: every node or edge of a zoo model scored by attribution patching (EAP, or EAP-IG
with a chosen number of steps) and patched for real, one against the other, the truth's components coloured."""

import math
from typing import Any

import lab_common as lab
import streamlit as st
import torch

from toylab import viz
from toylab.lessons import lesson_fixtures
from toylab.tasks import logit_diff

FIXTURES = lesson_fixtures("atp")  # lesson 16's model, pairs, tables and sweep
LEVEL_LABELS = {"edges": "edges (EAP against edge patching)", "nodes": "heads and MLPs (node attribution against ablation)"}
STEPS = (0, 1, 2, 3, 4, 5, 8, 10, 16, 32, 64)  # 0: plain EAP; otherwise EAP-IG with that many steps


def _pair(name: str, seed: int):
    return FIXTURES.pair(lab.zoo_model(name, seed))


@st.cache_data(show_spinner="Patching every component for real...", max_entries=64)
def real_scores(name: str, seed: int, level: str) -> dict[str, float]:
    """Each node resample-ablated (its share of the effect removed), or each edge patched alone (edge_patching)."""
    zm, pair = lab.zoo_model(name, seed), _pair(name, seed)
    with lab.FORWARD_LOCK:  # the methods hook the shared model
        real = FIXTURES.real_patch(zm.model, pair, level)
    return {str(k): v for k, v in real.items()}


@st.cache_data(show_spinner="Attributing...", max_entries=256)
def estimates(name: str, seed: int, level: str, steps: int) -> dict[str, float]:
    """Attribution patching of every node (``eap(...).nodes()``) or edge (``eap``), by EAP-IG with ``steps`` > 0."""
    zm, pair = lab.zoo_model(name, seed), _pair(name, seed)
    with lab.FORWARD_LOCK:
        estimate = FIXTURES.estimates(zm.model, pair, level, steps)
    return {str(k): v for k, v in estimate.items()}


@st.cache_data(show_spinner=False, max_entries=64)
def metrics_of(name: str, seed: int) -> tuple[float, float]:
    zm, pair = lab.zoo_model(name, seed), _pair(name, seed)
    with lab.FORWARD_LOCK, torch.no_grad():
        return (float(logit_diff(zm.model(pair.clean.tokens), pair)),
                float(logit_diff(zm.model(pair.corrupted.tokens), pair)))


def truth_components(zm: Any, level: str) -> set[str]:
    """The truth's heads and MLPs, or its edges, as the tables name them."""
    if zm.truth is None:
        return set()
    if level == "nodes":
        return {n for n in zm.truth.nodes if n not in ("embed", "pos_embed", "logits")}
    return {str(e) for e in zm.truth.edges}


st.title("16 Attribution patching")
st.caption(
    "Attribution patching (Nanda 2023) estimates what patching a component from the corrupted input into the clean "
    "one does to the metric, to first order: (a_corr - a_clean) . dm/da, every component from one backward pass. EAP "
    "(Syed et al. 2023) does it for every edge; EAP-IG (Hanna et al. 2024) averages the gradient along the path from "
    "the corrupted to the clean embeddings. Here each estimate is set against patching the same component for real: "
    "on the diagonal the estimate is right, below it the estimate understates what patching does.")

name, seed = lab.pick_model("atp", default=FIXTURES.MODEL)
zm = lab.zoo_model_or_stop(name, seed)
show_truth = st.toggle("Show ground truth", value=True, key="atp_truth")
level_col, steps_col = st.columns([2, 3])
level = level_col.radio("Components", list(LEVEL_LABELS), format_func=LEVEL_LABELS.get, key="atp_level")
steps = int(steps_col.select_slider(
    "EAP-IG steps", STEPS, value=0, key="atp_steps",
    format_func=lambda s: "0 (plain EAP)" if s == 0 else str(s),
    help="0: plain attribution patching, the gradient at the clean run. n > 0: EAP-IG, the gradient averaged over "
         "n points alpha = 0, 1/n, ..., (n-1)/n between the corrupted (alpha = 0) and the clean embeddings."))

m_clean, m_corr = metrics_of(name, seed)
if abs(m_clean - m_corr) < 1e-6:
    st.warning(f"{name}'s metric is the same on the clean and the corrupted inputs: there is no effect to attribute.")
    st.stop()
real = real_scores(name, seed, level)
estimate = estimates(name, seed, level, steps)
truth = truth_components(zm, level) if show_truth else set()
method = "EAP" if steps == 0 else f"EAP-IG ({steps} steps)"
if level == "nodes":
    method = "attribution patching" if steps == 0 else f"integrated gradients ({steps} steps)"
missed = sorted(c for c in truth if c in real and real[c] > 0 and estimate[c] < FIXTURES.UNDERSTATED * real[c])

columns = st.columns(4)
columns[0].metric("Clean logit difference", f"{m_clean:.3f}")
columns[1].metric("Corrupted logit difference", f"{m_corr:.3f}")
r = FIXTURES.correlation(estimate, real)
columns[2].metric("Correlation", "n/a" if math.isnan(r) else f"{r:+.3f}",
                  help="Pearson's r of the estimate with the real patch, over every component shown.")
if show_truth and zm.truth is not None:
    columns[3].metric("Truth components understated", f"{len(missed)} of {len(truth)}",
                      help=f"The truth's components the estimate scores below {FIXTURES.UNDERSTATED} of what patching "
                           "them for real removes.")

kind = "edge" if level == "edges" else "node"
real_label = "edge patched for real (share removed)" if level == "edges" else "resample-ablated (share removed)"
st.altair_chart(viz.attribution_chart(estimate, real, truth, title=f"{name}: {method} against the real patch",
                                      estimate_label=f"{method} (estimated share removed)", real_label=real_label),
                width="stretch")
st.caption(f"Each point is one {kind}, scored as the share of the clean-minus-corrupted effect that patching it "
           f"removes, on {FIXTURES.N_PAIRS} counterfactual pairs (seed {FIXTURES.PAIR_SEED}); hover for its name. "
           + ("Coloured: the truth's components." if truth else "Ground truth hidden." if not show_truth else
              "This model has no ground truth.")
           + (f" Understated: {', '.join(missed)}." if missed else ""))
rows = viz.scatter_table(estimate, real, truth)
if not show_truth:
    rows = [{k: v for k, v in row.items() if k != "truth"} for row in rows]
st.dataframe(rows, hide_index=True, width="stretch")
st.caption("Sorted by |estimate - real|, largest first.")

# ---- EAP-IG against its steps -------------------------------------------------------------------
st.header("EAP-IG against its steps")
sweep = st.toggle("Draw the sweep", value=False, key="atp_sweep",
                  help=f"EAP-IG at {', '.join(map(str, FIXTURES.IG_SWEEP))} steps: the sum of their steps in forward "
                       "and backward passes.")
if sweep:
    chosen = missed or sorted(c for c in truth if c in real) or [row["component"] for row in rows[:3]]
    series = [estimates(name, seed, level, s) for s in FIXTURES.IG_SWEEP]
    lab.show(viz.ig_steps_plot, list(FIXTURES.IG_SWEEP), {c: [s[c] for s in series] for c in chosen},
             {c: real[c] for c in chosen}, tolerance=FIXTURES.IG_TOLERANCE,
             eap={c: estimates(name, seed, level, 0)[c] for c in chosen},
             title=f"{name}: EAP-IG of " + ("the understated truth components" if missed else
                                           "the truth's components" if truth else "the largest gaps"))
    st.caption(f"Dashed: patched for real, with a band of +-{FIXTURES.IG_TOLERANCE}; x at the left: plain EAP. The "
               "left Riemann sum needs a step small against the width of the switch it must see (lesson 16, "
               "section 5; lesson 9's trap-narrow-switch for a switch even 20 steps miss).")
else:
    st.caption("Turn the sweep on to draw EAP-IG's score of the truth's components against its number of steps.")
