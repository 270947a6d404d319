"""Lesson 8, Probes and factual recall: where information lives, and whether the model uses it."""

import lab_common as lab
import streamlit as st

from toylab import methods, viz

st.title("8 Probes and factual recall")
st.caption(
    "A model that recalls facts, `[BOS, relation, subject, =] -> attribute`, with a known circuit: "
    "L0H1 reads the relation at the subject, MLP0 there stores the facts, L1H1 moves the answer out. "
    "Causal tracing finds where the facts are recalled; probes find where a variable can be read; "
    "interchange interventions find where it is used."
)

name, seed = lab.pick_model("probe", kind="factual_recall")
zm = lab.zoo_model(name, seed)
task = zm.task
labels = ["BOS", "relation", "subject", "="]

n_col, seed_col, truth_col = st.columns([2, 1, 1.4])
n = int(n_col.select_slider("Prompts", options=[256, 512, 1024], value=512, key="probe_n",
                            help="Prompts the probes are trained and tested on, and traced."))
sample_seed = int(seed_col.number_input("Sample seed", min_value=0, max_value=1_000_000, value=0, key="probe_sample"))
show_truth = truth_col.toggle("Show ground truth", value=True, key="probe_truth")
if zm.truth is not None:
    st.caption("Ground truth: " + zm.truth.description)

# ---- causal tracing ----------------------------------------------------------------------------
st.header("Causal tracing")
corruption = st.radio("Corrupt the subject by", ["noise", "resample"], horizontal=True, key="probe_corruption",
                      help="noise: Gaussian noise of 3 x the embedding's std on the subject's embedding (ROME); "
                           "resample: another subject's embedding.")
trace = lab.causal_trace(name, seed, n, sample_seed, corruption)
clean_m, corrupt_m, peak_m = st.columns(3)
clean_m.metric("p(answer), clean", f"{trace['p_clean']:.3f}")
corrupt_m.metric("p(answer), subject corrupted", f"{trace['p_corrupted']:.3f}")
layer, pos = trace["peaks"]["mlp_out"]
peak_m.metric("MLP state restoring most", f"MLP{layer} at {labels[pos]}")
store = methods.variable_site(zm.truth, "attribute", task.n_ctx)
mover = methods.variable_site(zm.truth, "moved_attribute", task.n_ctx)
highlight = {"mlp_out": ((int(store.hook.split(".")[1]), store.pos),),
             "attn_out": ((int(mover.hook.split(".")[1]), mover.pos),)} if show_truth else None
lab.show(viz.tracing_map, trace["scores"], labels, title=f"{name}: fraction of p(answer) restored",
         highlight=highlight)
st.caption("Each cell: the corrupted run with one state (a layer's residual stream, attention output or MLP "
           "output at one position) restored from the clean run."
           + (" Outlined: the truth's fact store (MLP0 at the subject) and its mover head's layer at '='."
              if show_truth else ""))

# ---- probes --------------------------------------------------------------------------------------
st.header("Probes: where can a variable be read?")
variables = [v.name for v in zm.truth.variables]
variable = st.selectbox("Variable", variables, index=variables.index("attribute"), key="probe_variable",
                        help="A causal variable of the truth; its value on each prompt is the probe's label.")
grid = lab.probe_grid(name, seed, variable, n, sample_seed)
cell = lab.probe_truth_cell(name, seed, variable)
cells = ((grid["hooks"].index(cell[0]), cell[1]),) if show_truth and cell and cell[0] in grid["hooks"] else ()
lab.show(viz.probe_map, grid["accuracy"], grid["selectivity"], grid["hooks"], labels,
         title=f"probing for {variable} (majority class {grid['majority']:.2f})", highlight=cells)
st.caption("Accuracy on held-out prompts; selectivity is accuracy minus that of the same probe trained on a "
           "control task (a random label per fact, Hewitt & Liang 2019): high only where the variable is "
           "linearly there beyond what memorising facts gives."
           + (f" Outlined: just after where the truth computes {variable}." if cells else ""))

# ---- interventions -------------------------------------------------------------------------------
st.header("Intervening: where is it used?")
k = int(st.slider("DAS subspace dimension k", min_value=1, max_value=8, value=8 if variable != "relation" else 4,
                  key="probe_k", help="Distributed alignment search learns a k-dim subspace whose interchange "
                                      "gives the algorithm's counterfactual answer; IIA is on held-out pairs."))
rows = lab.iia_table(name, seed, variable, k, n, sample_seed)
table = [{key: (round(value, 3) if isinstance(value, float) else value) for key, value in row.items()
          if show_truth or key != "ground truth"} for row in rows]
table_col, bar_col = st.columns([3, 2])
table_col.dataframe(table, hide_index=True, width="stretch")
das_key = next(key for key in rows[0] if key.startswith("IIA DAS"))
with bar_col:
    lab.show(viz.bar, [row[das_key] for row in rows], [row["site"] for row in rows],
             title=f"{variable}: interchange-intervention accuracy, {das_key[4:]}",
             highlight={row["site"] for row in rows if row["ground truth"]} if show_truth else set(), ylabel="IIA")
st.caption("IIA: the fraction of (base, source) pairs where patching the site (or its subspace) from the source "
           "gives the answer the algorithm predicts. Decoys can be decoded (see the probe accuracy) but nothing "
           "that reaches the answer reads them there, so patching them changes nothing.")
