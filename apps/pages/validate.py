"""Lesson 7, Validate your method: score circuit-discovery baselines against every known circuit."""

import lab_common as lab
import streamlit as st

from toylab import zoo
from toylab.validate import zoo_names
from toylab.validate.baselines import BASELINES, DESCRIPTIONS

st.title("7 Validate your method")
st.caption(
    "Every zoo model ships a certified circuit, so a circuit-discovery method can be scored against the "
    "answer. The harness hands each method one model at a time with the truth hidden, then scores what it "
    "returns on counterfactual pairs it never saw: how well its scores rank the truth's nodes and edges "
    "(ROC, AUROC), how much of the behaviour its top-ranked parts keep (faithfulness, CPR, CMD), and how much "
    "of the truth its circuit holds. Your own method: `toylab validate my_method.py:find`, or lesson 7."
)

methods_col, models_col, pairs_col = st.columns([3, 3, 1])
chosen_methods = methods_col.multiselect(
    "Methods", list(BASELINES), default=list(lab.VALIDATE_METHODS), key="val_methods",
    help="; ".join(f"**{m}**: {DESCRIPTIONS[m]}" for m in BASELINES))
chosen_models = models_col.multiselect(
    "Models", zoo_names(), default=list(lab.VALIDATE_MODELS), key="val_models",
    help="Zoo models with a truth; every shipped seed is scored. acdc on the larger models takes a while.")
n_pairs = pairs_col.select_slider("Scoring pairs", [32, 64, 128], 64, key="val_pairs",
                                  help="Counterfactual pairs each faithfulness figure is measured on.")

if st.button("Run", key="val_run", type="primary", disabled=not (chosen_methods and chosen_models)):
    st.session_state["val_ran"] = (tuple(chosen_methods), tuple(chosen_models), int(n_pairs))
ran = st.session_state.get("val_ran")

if not chosen_methods or not chosen_models:
    st.info("Pick at least one method and one model.")
elif ran is None:
    st.info("Pick methods and models, then press **Run**. The defaults take a few seconds.")
else:
    methods_, models, pairs = ran
    if (methods_, models, pairs) != (tuple(chosen_methods), tuple(chosen_models), int(n_pairs)):
        st.caption("Showing the last run; press **Run** to score the current selection.")
    with st.spinner("Scoring..."):
        rows = lab.validation_rows(methods_, models, pairs)
    st.header("Scores")
    st.dataframe(rows, hide_index=True, width="stretch")
    st.caption(
        "Means over each model's seeds. **AUROC**: the chance that a true node (or edge) outscores a false one "
        "(0.5 is a coin). **CPR**: area under the faithfulness curve (higher is better), **CMD**: area between it "
        "and 1 (lower is better); **cpr_truth**: the truth's own CPR on the same graph. **completeness** / "
        "**minimality**: share of the truth in the method's top |T|, and share of its top |T| in the truth. "
        "A high AUROC can hide a poor circuit: read faithfulness and completeness beside it.")
    for row in rows:
        if row["errors"]:
            entries = lab.validation_report(row["method"], row["model"], pairs).entries
            st.warning(f"{row['method']} on {row['model']}: "
                       + "; ".join(f"seed {e.seed}: {e.error}" for e in entries if e.error))
    if any(row["read the answer key"] for row in rows):
        st.caption("A method that read the answer key (the `truth` baseline) is a ceiling, not a result.")

    roc_col, faith_col = st.columns(2)
    with roc_col:
        st.subheader("ROC curves")
        st.image(lab.validation_curves_png("roc", methods_, models, pairs), width="stretch")
        st.caption("One panel per model, one line per seed; edges at head granularity where a method scores "
                   "edges, else nodes. The dotted diagonal is chance.")
    with faith_col:
        st.subheader("Faithfulness curves")
        st.image(lab.validation_curves_png("faithfulness", methods_, models, pairs), width="stretch")
        st.caption("f of the method's top k% (resample-ablating everything else); 1 is the whole model's "
                   "behaviour.")

    st.header("The circuit a method found")
    pick_method, pick_model, pick_seed, truth_col = st.columns([2, 2, 1, 1.4])
    method = pick_method.selectbox("Method", methods_, key="val_show_method")
    model = pick_model.selectbox("Model", models, key="val_show_model")
    seed = pick_seed.selectbox("Seed", list(zoo.recipe(model).seeds), key="val_show_seed")
    show_truth = truth_col.toggle("Show ground truth", value=True, key="val_truth")
    entry = lab.validation_entry(method, model, int(seed), pairs)
    if entry.error:
        st.warning(f"{method} failed on {model} (seed {seed}): {entry.error}")
    else:
        found_col, truth_plot_col = st.columns(2)
        with found_col:
            st.image(lab.validation_circuit_png(method, model, int(seed), pairs, show_truth), width="stretch")
        with truth_plot_col:
            if show_truth:
                st.image(lab.truth_circuit_png(model, int(seed)), width="stretch")
            else:
                st.caption("Ground truth hidden.")
        figures = ", ".join(f"{k} {entry.metrics[k]:.3f}" for k in ("completeness", "minimality", "faithfulness")
                            if k in entry.metrics)
        st.caption(f"{method} on {model} (seed {seed}) answered with {entry.kind}; drawn: its top |T| "
                   f"candidates ({figures})."
                   + (" Wide translucent strokes and rings mark the truth: a found edge on one is a hit, a bare "
                      "stroke a miss." if show_truth else ""))
        if model == "induction-constructed" and method == "attention-heuristic":
            st.caption("The decoy heads L0H0 and L1H0 attend exactly like L0H1 and L1H1, but nothing reads what "
                       "they write: a method that goes by attention patterns cannot tell them apart.")
