"""Lesson 9, Why methods fail: run circuit-discovery baselines on a method trap and see which fall in."""

import math
import threading
from collections.abc import Sequence
from typing import Any

import lab_common as lab
import streamlit as st
import torch

from toylab import viz, zoo
from toylab.lessons import lesson_fixtures
from toylab.methods import interchange_accuracy, variable_site
from toylab.validate import Report, Subject, score, subjects
from toylab.validate.baselines import BASELINES, DESCRIPTIONS, PEEKS
from toylab.validate.leaderboard import TRAP_FIGURES, TRAP_MARGIN, Leaderboard

FIXTURES = lesson_fixtures("traps")  # lesson 9's seed, default methods and shortfall rows, shared with the lesson
TRAP_FIGURES_SHOWN = ("node_auroc", "edge_auroc[head]", "faithfulness")  # what a shortfall is measured on


def trap_models() -> list[str]:
    """The zoo's method traps (their truth says which methods fall in), the lesson's five first."""
    traps = [n for n in zoo.names() if zoo.recipe(n).truth is not None and zoo.recipe(n).truth.trap is not None]
    first = [FIXTURES.model_name(t) for t in FIXTURES.LESSON_TRAPS if FIXTURES.model_name(t) in traps]
    return first + [n for n in traps if n not in first]


@st.cache_resource(show_spinner=False, max_entries=64)
def trap_subject(model: str, seed: int) -> tuple[Subject, threading.Lock]:
    """The harness's own copy of one trap and seed, for every method scored on it: they share its
    measurements of the model (a third of the page's first scoring). The lock keeps two
    sessions' methods from hooking the one model at once."""
    (subject,) = subjects([model], [seed])
    return subject, threading.Lock()


@st.cache_resource(show_spinner=False, max_entries=256)
def trap_report(method: str, model: str, seed: int, n_pairs: int) -> Report:
    """``validate.score`` of baseline ``method`` on one trap and seed: a Report shared by every
    session (do not modify it)."""
    subject, lock = trap_subject(model, seed)
    with lock:
        return score(BASELINES[method], suite=[subject], label=method, n_pairs=n_pairs)


def trap_board(methods_: Sequence[str], model: str, seed: int, n_pairs: int) -> Leaderboard:
    """The chosen methods' reports on the trap, as a leaderboard: its shortfalls say who fell in."""
    zm = lab.zoo_model(model, seed)
    return Leaderboard({m: trap_report(m, model, seed, n_pairs) for m in methods_}, {model: zm.truth.trap})


def trap_rows(board: Leaderboard) -> list[dict[str, Any]]:
    """One row per method: the lesson's shortfall row, the figures it is measured on, errors."""
    rows = []
    (trap,) = board.traps.values()
    shortfalls = {row["method"]: row for row in FIXTURES.shortfall_rows(board)}
    for method, report in board.reports.items():
        (entry,) = report.entries
        row = shortfalls.get(method, {"shortfall": None, "on": None, "fell in": None})
        out: dict[str, Any] = {"method": method, "shortfall": row["shortfall"], "on": row["on"],
                               "fell in": row["fell in"],
                               "expected": FIXTURES.expected(trap, method) or "-"}
        for figure in TRAP_FIGURES_SHOWN:
            value = entry.metrics.get(figure)
            out[figure] = None if value is None or math.isnan(value) else round(value, 3)  # n/a
        # The share of the truth in the method's top |T| (edges where it scores edges, else nodes).
        recall = entry.metrics.get("edge_recall[qkv]", entry.metrics.get("node_recall"))
        out["recall at |T|"] = None if recall is None or math.isnan(recall) else round(recall, 3)
        out["seconds"] = None if math.isnan(entry.seconds) else round(entry.seconds, 2)
        out["error"] = entry.error or ""
        rows.append(out)
    return rows


@st.cache_data(show_spinner=False, max_entries=64)
def variable_rows(model: str, seed: int, n_pairs: int) -> list[dict[str, Any]]:
    """For a trap whose truth locates its variables within their component (``CausalVariable.basis``): the
    IIA of each variable interchanging the component's whole output, each channel the declared directions
    use alone, and the declared direction (lesson 9, section 6)."""
    zm = lab.zoo_model(model, seed)
    located = [v for v in zm.truth.variables if v.basis]
    if not located or zm.algorithm is None:
        return []
    channels = sorted({i for v in located for row in v.basis for i, x in enumerate(row) if x != 0})
    d = zm.model.cfg.d_model
    subspaces = [("whole output", None)] + [(f"channel {c} alone", torch.eye(d)[:, [c]]) for c in channels]
    rows = []
    for label, basis in subspaces:
        row: dict[str, Any] = {"interchanged": label}
        for variable in located:
            site = variable_site(zm.truth, variable.name, zm.task.n_ctx)
            row[f"IIA of {variable.name}"] = round(interchange_accuracy(zm.model, zm.algorithm, variable.name, site,
                                                                       basis, n_pairs, seed=0).accuracy, 3)
        rows.append(row)
    truth_row: dict[str, Any] = {"interchanged": "the truth's direction of the variable"}
    for variable in located:
        site = variable_site(zm.truth, variable.name, zm.task.n_ctx)
        basis = torch.tensor(variable.basis).T
        truth_row[f"IIA of {variable.name}"] = round(interchange_accuracy(zm.model, zm.algorithm, variable.name, site,
                                                                          basis, n_pairs, seed=0).accuracy, 3)
    return rows + [truth_row]


@st.cache_data(show_spinner=False, max_entries=256)
def found_circuit_png(method: str, model: str, seed: int, n_pairs: int, show_truth: bool) -> bytes:
    """The circuit ``method`` found on the trap (its top |T| edges or nodes), the truth outlined when ``show_truth``."""
    zm = lab.zoo_model(model, seed)
    (entry,) = trap_report(method, model, seed, n_pairs).entries
    what = "edges" if "edge" in entry.kind else "nodes"
    return lab.figure_png(viz.circuit_graph(zm.model.cfg, entry.circuit, zm.truth.edges, show_truth=show_truth,
                                            title=f"{method}: its top |T| {what}"))


@st.cache_data(show_spinner=False, max_entries=64)
def true_circuit_png(model: str, seed: int) -> bytes:
    zm = lab.zoo_model(model, seed)
    return lab.figure_png(viz.circuit_graph(zm.model.cfg, zm.truth.edges, show_truth=False,
                                            title=f"the true circuit ({zm.truth.provenance})"))


st.title("9 Why methods fail")
st.caption(
    "Each method trap is a model whose circuit is known and whose mechanism reproduces a documented failure of a "
    "family of circuit-discovery methods. Among them: self-repair hides a head from ablation, an OR gate hides both "
    "paths from noising, a saturated softmax hides an edge from the gradient, a narrow switch hides it from "
    "integrated gradients, first-order cancellation hides a head from attribution patching, and a distributed code "
    "hides a variable from any unit-level featuriser. Run baselines on a trap, see which fell in, and compare the "
    "circuit each found with the true one. Lesson 9 takes these six apart.")

traps = trap_models()
trap_col, seed_col, methods_col, pairs_col = st.columns([2, 1, 4, 1])
model = trap_col.selectbox("Trap", traps, key="traps_model", format_func=lambda n: n.removeprefix("trap-"))
seed = int(seed_col.selectbox("Seed", list(zoo.recipe(model).seeds), key="traps_seed",
                              help="Which heads play the roles is drawn from the seed."))
chosen = methods_col.multiselect(
    "Methods", [m for m in BASELINES if m not in PEEKS], default=list(FIXTURES.METHODS), key="traps_methods",
    help="; ".join(f"**{m}**: {DESCRIPTIONS[m]}" for m in BASELINES if m not in PEEKS))
n_pairs = int(pairs_col.select_slider("Scoring pairs", [32, 64, 128], 64, key="traps_pairs",
                                      help="Counterfactual pairs each faithfulness figure is measured on."))

zm = lab.zoo_model_or_stop(model, seed)
trap = zm.truth.trap

st.header(f"{model}: {trap.kind}")
st.markdown(zm.truth.description)
st.markdown(f"**Mechanism.** {trap.mechanism}")
roles = "; ".join(f"{role}: {', '.join(heads)}" for role, heads in trap.nodes.items())
paths = "; ".join(" then ".join(str(e) for e in path) for path in trap.paths)
st.caption(f"Reference: {trap.reference}. "
           + (f"On seed {seed}, {roles}. " if roles else "")
           + (f"Paths, each sufficient alone: {paths}. " if paths else "")
           + f"The truth expects to fall in: {', '.join(trap.falls_in) or 'none'}; to recover: "
           + f"{', '.join(trap.remedies) or 'none'}.")

variables = variable_rows(model, seed, 4 * n_pairs)
if variables:
    st.header("Where the variable lives")
    st.dataframe(variables, hide_index=True, width="stretch")
    st.caption(
        "This trap is about featurisers, not circuits: the truth declares its variables at one component, each "
        "along its own direction of that component's output. **IIA**: the share of (base, source) pairs on which "
        "the model, with the named subspace of the output taken from the source, gives the algorithm's answer with "
        f"that variable taken from the source ({4 * n_pairs} pairs). Interchanging the whole output swaps every "
        "variable at once; each channel mixes them; only the direction (learned by DAS, `methods.das`) holds one "
        "alone. The circuit methods below find the circuit, which is easy here: the trap expects "
        f"{', '.join(trap.falls_in)} (featurisers) to fall in, and no circuit method.")

if not chosen:
    st.info("Pick at least one method.")
    st.stop()

with st.spinner("Scoring..."):
    board = trap_board(chosen, model, seed, n_pairs)
    rows = trap_rows(board)

st.header("Which methods fell in")
st.dataframe(rows, hide_index=True, width="stretch")
st.caption(
    f"**shortfall**: the largest gap, over {', '.join(TRAP_FIGURES)}, between the best chosen method's figure and "
    f"this method's (**on**: the figure it fell most on); **fell in** at {TRAP_MARGIN} or more, as in "
    "`toylab leaderboard`. **expected**: the trap's own prediction. **recall at |T|**: the share of the truth among "
    "the method's top |T| edges (nodes, for a method that scores nodes). Figures are measured by the validation "
    "harness on pairs the methods never saw.")
if len(chosen) < 2:
    st.info("A shortfall is measured against the best of the chosen methods: pick two or more.")
for row in rows:
    if row["error"]:
        st.warning(f"{row['method']} failed on {model} (seed {seed}): {row['error']}")

st.header("The circuit each method found")
if not lab.on_request("Draw the circuits", key="traps_draw",
                      help="One graph per method and one of the truth: a few tenths of a second each."):
    st.stop()
show_truth = st.toggle("Show ground truth", value=True, key="traps_truth")
ok = [m for m, row in zip(chosen, rows) if not row["error"]]
panels = (["(truth)"] if show_truth else []) + ok
for start in range(0, len(panels), 3):
    for col, name in zip(st.columns(3), panels[start:start + 3]):
        with col:
            if name == "(truth)":
                st.image(true_circuit_png(model, seed), width="stretch")
                st.caption("The certified circuit.")
            else:
                row = next(r for r in rows if r["method"] == name)
                st.image(found_circuit_png(name, model, seed, n_pairs, show_truth), width="stretch")
                verdict = "fell in" if row["fell in"] else "did not fall in"
                st.caption(f"{name} {verdict} (shortfall {row['shortfall']}); recall at |T| {row['recall at |T|']}.")
st.caption("Each method's top |T| candidates (|T|: the size of the truth)."
           + (" Wide translucent strokes and rings mark the truth: a found edge on one is a hit, a bare stroke a miss."
              if show_truth else " Ground truth hidden."))
