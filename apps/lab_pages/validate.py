"""Lesson 7, Validate your method: score circuit-discovery baselines against every known circuit."""

import math
from collections.abc import Sequence
from typing import Any

import lab_common as lab
import streamlit as st

from toylab import viz, zoo
from toylab.validate import Report, score, zoo_names
from toylab.validate.baselines import BASELINES, DESCRIPTIONS

VALIDATE_METHODS = ("eap", "attention-heuristic", "random")  # the page's default: fast, and tells the story
VALIDATE_MODELS = ("induction-constructed",)
VALIDATE_FIGURES = ("node_auroc", "edge_auroc[head]", "edge_auroc[qkv]", "cpr", "cpr_truth", "cmd", "faithfulness",
                    "completeness", "minimality")


@st.cache_resource(show_spinner=False, max_entries=128)
def validation_report(method: str, model: str, n_pairs: int) -> Report:
    """``validate.score`` of baseline ``method`` on every seed of zoo model ``model``: a Report,
    shared by every session (do not modify it). The harness loads its own copy of the model."""
    return score(BASELINES[method], names=[model], label=method, n_pairs=n_pairs)


def validation_reports(methods_: Sequence[str], models: Sequence[str], n_pairs: int) -> dict[str, Report]:
    """{method: one Report over all ``models``}, from the per-(method, model) cached reports."""
    return {m: Report(m, [e for model in models for e in validation_report(m, model, n_pairs).entries])
            for m in methods_}


def validation_rows(methods_: Sequence[str], models: Sequence[str], n_pairs: int) -> list[dict[str, Any]]:
    """One row per method and model: mean over seeds of each headline figure, errors and peeking."""
    rows = []
    for method, report in validation_reports(methods_, models, n_pairs).items():
        for model, stats in report.summary().items():
            entries = [e for e in report.entries if e.model == model]
            row: dict[str, Any] = {"method": method, "model": model, "seeds": len(entries)}
            for figure in VALIDATE_FIGURES:
                mean = stats.get(figure, (float("nan"), 0.0, 0))[0]
                row[figure] = None if math.isnan(mean) else round(mean, 3)
            row["seconds"] = round(stats["seconds"][0], 3) if stats["seconds"][2] else None
            row["read the answer key"] = any(e.peeked for e in entries)
            row["errors"] = sum(e.error is not None for e in entries)
            rows.append(row)
    return rows


@st.cache_data(show_spinner=False, max_entries=128)
def validation_curves_png(kind: str, methods_: tuple[str, ...], models: tuple[str, ...], n_pairs: int) -> bytes:
    """``viz.roc_curves`` (kind "roc") or ``viz.faithfulness_curves`` ("faithfulness") of the reports, as PNG."""
    draw = {"roc": viz.roc_curves, "faithfulness": viz.faithfulness_curves}[kind]
    return lab.figure_png(draw(validation_reports(methods_, models, n_pairs)))


def validation_entry(method: str, model: str, seed: int, n_pairs: int) -> Any:
    """The harness's Entry for ``method`` on ``model`` trained with ``seed``."""
    return next(e for e in validation_report(method, model, n_pairs).entries if e.seed == seed)


@st.cache_data(show_spinner=False, max_entries=256)
def validation_circuit_png(method: str, model: str, seed: int, n_pairs: int, show_truth: bool) -> bytes:
    """The circuit ``method`` found on ``model`` (seed), the truth outlined when ``show_truth``."""
    zm = lab.zoo_model(model, seed)
    entry = validation_entry(method, model, seed, n_pairs)
    title = (f"{method}: its top |T| {'edges' if 'edge' in entry.kind else 'nodes'}"
             + (" (truth outlined)" if show_truth else ""))
    return lab.figure_png(viz.circuit_graph(zm.model.cfg, entry.circuit, zm.truth.edges, show_truth=show_truth,
                                            title=title))


@st.cache_data(show_spinner=False, max_entries=64)
def truth_circuit_png(model: str, seed: int) -> bytes:
    """The certified circuit of ``model`` (seed), drawn like a found one."""
    zm = lab.zoo_model(model, seed)
    return lab.figure_png(viz.circuit_graph(zm.model.cfg, zm.truth.edges, show_truth=False,
                                            title=f"the true circuit ({zm.truth.provenance})"))


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
    "Methods", list(BASELINES), default=list(VALIDATE_METHODS), key="val_methods",
    help="; ".join(f"**{m}**: {DESCRIPTIONS[m]}" for m in BASELINES))
chosen_models = models_col.multiselect(
    "Models", zoo_names(), default=list(VALIDATE_MODELS), key="val_models",
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
        rows = validation_rows(methods_, models, pairs)
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
            entries = validation_report(row["method"], row["model"], pairs).entries
            st.warning(f"{row['method']} on {row['model']}: "
                       + "; ".join(f"seed {e.seed}: {e.error}" for e in entries if e.error))
    if any(row["read the answer key"] for row in rows):
        st.caption("A method that read the answer key (the `truth` baseline) is a ceiling, not a result.")

    roc_col, faith_col = st.columns(2)
    with roc_col:
        st.subheader("ROC curves")
        st.image(validation_curves_png("roc", methods_, models, pairs), width="stretch")
        st.caption("One panel per model, one line per seed; edges at head granularity where a method scores "
                   "edges, else nodes. The dotted diagonal is chance.")
    with faith_col:
        st.subheader("Faithfulness curves")
        st.image(validation_curves_png("faithfulness", methods_, models, pairs), width="stretch")
        st.caption("f of the method's top k% (resample-ablating everything else); 1 is the whole model's "
                   "behaviour.")

    st.header("The circuit a method found")
    pick_method, pick_model, pick_seed, truth_col = st.columns([2, 2, 1, 1.4])
    method = pick_method.selectbox("Method", methods_, key="val_show_method")
    model = pick_model.selectbox("Model", models, key="val_show_model")
    seed = pick_seed.selectbox("Seed", list(zoo.recipe(model).seeds), key="val_show_seed")
    show_truth = truth_col.toggle("Show ground truth", value=True, key="val_truth")
    entry = validation_entry(method, model, int(seed), pairs)
    if entry.error:
        st.warning(f"{method} failed on {model} (seed {seed}): {entry.error}")
    else:
        found_col, truth_plot_col = st.columns(2)
        with found_col:
            st.image(validation_circuit_png(method, model, int(seed), pairs, show_truth), width="stretch")
        with truth_plot_col:
            if show_truth:
                st.image(truth_circuit_png(model, int(seed)), width="stretch")
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
