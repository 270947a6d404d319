"""Lesson 8, Probes and factual recall: where information lives, and whether the model uses it."""

from typing import Any

import lab_common as lab
import streamlit as st
import torch

from toylab import methods, viz, zoo
from toylab.lessons import lesson_fixtures
from toylab.methods.interchange import activations

FIXTURES = lesson_fixtures("probes")  # lesson 8's probe sites and probe training, shared with the lesson


def variable_values(name: str, seed: int, variable: str, tokens: torch.Tensor) -> torch.Tensor:
    """The algorithm's value of ``variable`` on each prompt ([batch])."""
    return lab.zoo_model(name, seed).algorithm.value(tokens, variable)


@st.cache_data(show_spinner="Training probes at every site...", max_entries=64)
def probe_grid(name: str, seed: int, variable: str, n: int, sample_seed: int) -> dict[str, Any]:
    """Probe accuracy, control accuracy and selectivity at each of lesson 8's probe hooks x position, [hook, pos]."""
    zm = lab.zoo_model(name, seed)
    tokens = zm.task.sample(n, seed=sample_seed).tokens
    hooks = [h for h in FIXTURES.PROBE_HOOKS if h in zm.model.hook_names()]
    labels = variable_values(name, seed, variable, tokens)
    with lab.FORWARD_LOCK:
        grid = methods.probe_grid(zm.model, tokens, labels, hooks, config=FIXTURES.PROBE_CONFIG,
                                  types=zm.task.variables(tokens)["fact"])
    return {"hooks": hooks, "accuracy": grid.accuracy.numpy(), "selectivity": grid.selectivity.numpy(),
            "control": grid.control_accuracy.numpy(), "majority": grid.majority}


def probe_truth_cell(name: str, seed: int, variable: str) -> tuple[str, int] | None:
    """(hook, pos) in the probe grid right after the component the truth declares ``variable`` in."""
    zm = lab.zoo_model(name, seed)
    if zm.truth is None or variable not in {v.name for v in zm.truth.variables}:
        return None
    site = methods.variable_site(zm.truth, variable, zm.task.n_ctx)
    layer = int(site.hook.split(".")[1])
    return (f"blocks.{layer}.hook_resid_post" if "mlp" in site.hook else f"blocks.{layer}.hook_resid_mid"), site.pos


def iia_sites(name: str, seed: int, variable: str) -> list[tuple[str, int, int | None, str]]:
    """Sites to score for ``variable``: (hook, pos, head, role) with role "truth" or "decoy"."""
    zm = lab.zoo_model(name, seed)
    positions = zm.task.positions
    site = methods.variable_site(zm.truth, variable, zm.task.n_ctx)
    hook, pos = probe_truth_cell(name, seed, variable)
    rows = [(site.hook, site.pos, site.head, "truth"), (hook, pos, None, "truth")]
    for decoy in (("blocks.1.hook_resid_post", positions["subject"]), ("blocks.0.hook_resid_post", positions["answer"]),
                  ("blocks.0.hook_resid_post", positions["relation"])):
        if decoy != (hook, pos):
            rows.append((*decoy, None, "decoy"))
    return rows


@st.cache_data(show_spinner="Measuring interchange-intervention accuracy...", max_entries=64)
def iia_table(name: str, seed: int, variable: str, k: int, n: int, sample_seed: int) -> list[dict[str, Any]]:
    """Per site: probe accuracy, IIA of the whole vector, of the probe's directions and of a k-dim DAS subspace."""
    zm = lab.zoo_model(name, seed)
    tokens = zm.task.sample(n, seed=sample_seed).tokens
    labels = variable_values(name, seed, variable, tokens)
    rows = []
    with lab.FORWARD_LOCK:
        for hook, pos, head, role in iia_sites(name, seed, variable):
            site = methods.Site(hook, pos, head)
            probe = methods.train_probe(zm.model, tokens, labels, site, FIXTURES.PROBE_CONFIG)
            full = methods.interchange_accuracy(zm.model, zm.algorithm, variable, site, seed=sample_seed)
            through = methods.interchange_accuracy(zm.model, zm.algorithm, variable, site,
                                                   methods.probe_subspace(probe.probe), seed=sample_seed)
            d = activations(zm.model, tokens[:1], site).shape[-1]
            learned = methods.das(zm.model, zm.algorithm, variable, site,
                                  methods.DASConfig(k=min(k, d), steps=150, n_train=384, seed=sample_seed))
            rows.append({"site": str(site), "ground truth": role == "truth", "probe accuracy": probe.accuracy,
                         "IIA whole vector": full.accuracy, "IIA probe directions": through.accuracy,
                         f"IIA DAS (k={min(k, d)})": learned.test_iia})
    return rows


@st.cache_data(show_spinner="Tracing...", max_entries=64)
def causal_trace(name: str, seed: int, n: int, sample_seed: int, corruption: str) -> dict[str, Any]:
    """Causal tracing of the subject: restored fraction per kind, [layer, pos], and the two probabilities."""
    zm = lab.zoo_model(name, seed)
    batch = zm.task.sample(n, seed=sample_seed)
    source = zm.algorithm.sample_pairs(n, torch.Generator().manual_seed(sample_seed))[1].tokens
    with lab.FORWARD_LOCK:
        result = methods.causal_trace(zm.model, batch, [zm.task.positions["subject"]],
                                      config=methods.TracingConfig(corruption=corruption, seed=sample_seed),
                                      source_tokens=source)
    return {"scores": {kind: result.scores(kind).numpy() for kind in result.kinds}, "p_clean": result.p_clean,
            "p_corrupted": result.p_corrupted, "peaks": {kind: result.peak(kind) for kind in result.kinds}}


st.title("8 Probes and factual recall")
st.caption(
    "A model that recalls facts, `[BOS, relation, subject, =] -> attribute`, with a known circuit: "
    "L0H1 reads the relation at the subject, MLP0 there stores the facts, L1H1 moves the answer out. "
    "Causal tracing finds where the facts are recalled; probes find where a variable can be read; "
    "interchange interventions find where it is used."
)

# The page reads one fact store (the truth's variable "attribute"); factual-recall-split has two (lesson 12).
name, seed = lab.pick_model("probe", kind="factual_recall",
                            where=lambda n: "attribute" in [v.name for v in zoo.recipe(n).truth.variables])
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
trace = causal_trace(name, seed, n, sample_seed, corruption)
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
grid = probe_grid(name, seed, variable, n, sample_seed)
cell = probe_truth_cell(name, seed, variable)
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
st.caption("For each site: a probe, the interchange of the whole vector and of the probe's directions, and DAS "
           "trained for 150 steps: a few seconds per variable and k.")
if not lab.on_request("Measure interchange-intervention accuracy", key="probe_iia"):
    st.stop()
rows = iia_table(name, seed, variable, k, n, sample_seed)
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
