"""Lesson 13, Attribution graphs: train a transcoder, build the graph of one prompt, prune it, and see which of the
prompt's true features it found, in an interactive graph whose features show their top activating inputs."""

from typing import Any

import lab_common as lab
import streamlit as st
import torch

from toylab import sae, viz
from toylab.lessons import lesson_fixtures
from toylab.validate import map_nodes, true_feature_circuit

FIXTURES = lesson_fixtures("graphs")  # lesson 13's transcoders, prompts and readings of a graph
Feature = tuple[int, int, int]  # layer, position, latent


@st.cache_resource(show_spinner="Training the transcoder (about a second)...", max_entries=32)
def transcoder(name: str, seed: int, kind: str, architecture: str) -> tuple[sae.Transcoder, dict[str, Any]]:
    """The lesson's transcoder of ``kind`` and ``architecture`` (FIXTURES.train, FIXTURES.STEPS steps) for the zoo
    model, and its figures on the task's test set. Shared by every session: never modified."""
    zm = lab.zoo_model(name, seed)
    with lab.FORWARD_LOCK:  # collecting the MLP activations hooks the shared model
        tc = FIXTURES.train(zm.model, zm.task, name, kind, architecture, n_steps=FIXTURES.STEPS)
        scores = sae.transcoder_scores(zm.model, tc, zm.task.eval_batches()["test"])
    return tc, {"fvu": list(scores.fvu), "l0": list(scores.l0), "loss_recovered": scores.loss_recovered}


@st.cache_data(show_spinner=False, max_entries=64)
def top_inputs(name: str, seed: int, kind: str, architecture: str) -> dict[Feature, list[tuple[str, float]]]:
    """Every feature's top activating inputs (FIXTURES.top_inputs) on the task's test set, at every position."""
    zm = lab.zoo_model(name, seed)
    tc, _ = transcoder(name, seed, kind, architecture)
    n_pos = zm.task.eval_batches()["test"].tokens.shape[1]
    every = [(layer, pos, index) for layer in range(tc.cfg.n_layers) for pos in range(n_pos)
             for index in range(tc.cfg.d_latent)]
    with lab.FORWARD_LOCK:
        return FIXTURES.top_inputs(zm.model, tc, zm.task, every)


@st.cache_data(show_spinner="Building the graph...", max_entries=256)
def graph_view(name: str, seed: int, kind: str, architecture: str, tokens: tuple[int, ...],
               answer: int) -> dict[str, Any]:
    """The prompt's attribution graph (FIXTURES.graph) and, where the truth declares features, the true circuit
    of the prompt with answer class ``answer`` and the truth's name for every node (``validate.feature_graphs``)."""
    zm = lab.zoo_model(name, seed)
    tc, _ = transcoder(name, seed, kind, architecture)
    prompt = torch.tensor(tokens)
    with lab.FORWARD_LOCK, torch.no_grad():
        graph = FIXTURES.graph(zm.model, tc, prompt)
        predicted = int(zm.model(prompt[None])[0, -1].argmax())
    view: dict[str, Any] = {"graph": graph, "predicted": predicted, "on": None, "edges": None, "mapped": None,
                            "best": {}, "cosines": {}}
    truth = zm.truth
    if truth is not None and truth.features:
        on, edges = true_feature_circuit(truth, zm.task, prompt, answer)
        mapped, best = map_nodes(graph, truth, zm.task, on)
        view.update(on=on, edges=edges, mapped=mapped, best=best, cosines=FIXTURES.node_cosines(graph, truth, mapped))
    return view


def truth_rows(view: dict[str, Any], kept: set[int], truth: Any) -> list[dict[str, Any]]:
    """One row per feature of the prompt's true circuit: what became of it in the pruned graph."""
    graph, mapped = view["graph"], view["mapped"]
    causal = {f.name for f in truth.features if f.variable is not None}
    rows = []
    for name in sorted(view["on"], key=lambda n: (n.startswith("logit:"), n in causal, n)):
        nodes = [str(graph.nodes[i]) for i, m in enumerate(mapped) if m == name]
        kept_nodes = [str(graph.nodes[i]) for i in sorted(kept) if mapped[i] == name]
        status = "found" if kept_nodes else "missed: pruned" if nodes else "missed: no node maps onto it"
        rows.append({"true feature": name,
                     "kind": "logit" if name.startswith("logit:") else "computed" if name in causal else "input",
                     "status": status, "kept nodes": ", ".join(kept_nodes),
                     "nodes of the full graph": ", ".join(nodes[:8]) + (" ..." if len(nodes) > 8 else ""),
                     "best |cosine|": round(view["best"][name], 3) if name in view["best"] else None})
    return rows


st.title("13 Attribution graphs")
st.caption(
    "Replace the MLPs by a transcoder, freeze attention on one prompt, and every node's input is a sum of direct "
    "effects: the attribution graph (Ameisen et al. 2025). Pruned to the nodes and edges that carry most of the "
    "influence on the output, it is read as the circuit of the prompt. On conjunctions the truth declares every "
    "feature, so each node of the graph can be checked: a true feature found, a node no true feature explains, "
    "or a true feature the graph missed.")

name, seed = lab.pick_model("ag", default=FIXTURES.MODEL, where=lambda n: n in FIXTURES.MODELS)
zm = lab.zoo_model_or_stop(name, seed)
task = zm.task
has_truth = zm.truth is not None and bool(zm.truth.features)

kind_col, arch_col, truth_col = st.columns([2, 2, 1])
kind = kind_col.radio("Transcoder", list(FIXTURES.KINDS), horizontal=True, key="ag_kind",
                      help="per-layer: one transcoder per MLP; skip: with a linear skip path from the MLP's input to "
                           "its output; cross-layer: a feature read at one layer writes to every later MLP.")
architecture = arch_col.radio("Architecture", list(FIXTURES.ARCHITECTURES), horizontal=True, key="ag_arch",
                              help="relu with an L1 penalty (coefficient 1), TopK (k = 4), JumpReLU with an L0 "
                                   "penalty.")
show_truth = truth_col.toggle("Show ground truth", value=True, key="ag_truth", disabled=not has_truth)

# ---- the prompt -----------------------------------------------------------------------------------
prompt_col, a_col, b_col, node_col, edge_col = st.columns([1.4, 1, 1, 1.6, 1.6])
choose = name == FIXTURES.MODEL and prompt_col.radio(
    "Prompt", ["choose the features", "random"], key="ag_prompt", help="A random prompt of the task's sampler.",
) == "choose the features"
if choose:
    first = task.pairs[FIXTURES.PAIR].tolist()  # the lesson's prompt: the page starts on it
    features = list(range(task.n_features))
    a = int(a_col.selectbox("First feature", features, index=first[0], key="ag_a", format_func=lambda i: f"f{i}"))
    b = int(b_col.selectbox("Second feature", features, index=first[1], key="ag_b", format_func=lambda i: f"f{i}"))
    if a == b:
        st.warning(f"A prompt holds two different features: pick another than f{a}.")
        st.stop()
    tokens = task.make_batch(torch.tensor([a]), torch.tensor([b])).tokens[0]
    answer = FIXTURES.answer(task, tokens)
else:
    sample_seed = int(a_col.number_input("Prompt seed", min_value=0, max_value=1_000_000, value=0, key="ag_sample"))
    sampled, targets = lab.sample(name, seed, sample_seed)
    scored = int((torch.tensor(targets[0]) != -1).nonzero().flatten()[-1])
    tokens, answer = torch.tensor(sampled[0][:scored + 1]), int(targets[0][scored])
node_threshold = node_col.slider("Node threshold", min_value=0.5, max_value=1.0, value=FIXTURES.NODE_THRESHOLD,
                                 step=0.01, key="ag_node",
                                 help="Keep the nodes that carry this share of the influence on the logits.")
edge_threshold = edge_col.slider("Edge threshold", min_value=0.5, max_value=1.0, value=FIXTURES.EDGE_THRESHOLD,
                                 step=0.01, key="ag_edge", help="Then keep the edges that carry this share.")

tc, figures = transcoder(name, seed, kind, architecture)
view = graph_view(name, seed, kind, architecture, tuple(tokens.tolist()), answer)
graph = view["graph"]
pruned = graph.prune(node_threshold, edge_threshold)
kept = set(pruned.node_mask.nonzero().flatten().tolist())
truth_known = show_truth and view["on"] is not None
text = FIXTURES.prompt_text(task, tokens)
st.markdown(f"**Prompt:** `{text}` - the model says **{task.output_names[view['predicted']]}**; the answer is "
            f"**{task.output_names[answer]}**.")

replacement, completeness = graph.scores()
columns = st.columns(5)
columns[0].metric("Replacement score", f"{replacement:.3f}",
                  help="The share of the tokens' and errors' influence on the logits that comes from the tokens.")
columns[1].metric("Completeness score", f"{completeness:.3f}",
                  help="The influence-weighted share of every node's input that does not come from error nodes.")
columns[2].metric("FVU", ", ".join(f"{v:.3f}" for v in figures["fvu"]),
                  help="Fraction of each MLP's output variance the transcoder leaves unexplained (test set).")
columns[3].metric("Loss recovered", f"{figures['loss_recovered']:.3f}",
                  help="(loss with the MLPs zeroed - loss replaced) / (zeroed - clean), on the test set.")
columns[4].metric("Features kept", f"{len(pruned.features())} of {len(graph.indices('feature'))}")

# ---- the graph ------------------------------------------------------------------------------------
index = {(n.layer, n.pos, n.index): i for i, n in enumerate(graph.nodes) if n.kind == "feature"}
tops = top_inputs(name, seed, kind, architecture)
node_tops = {index[f]: inputs for f, inputs in tops.items() if f in index and index[f] in kept}
truth_args = (view["mapped"], view["on"], zm.truth) if truth_known else (None, None, None)
chart = viz.graph_chart(pruned, task, *truth_args, cosines=view["cosines"] if truth_known else None,
                        top_inputs=node_tops, title=f"{name}, {kind} {architecture} transcoder: {text}")
st.altair_chart(chart, width="stretch", key="ag_chart")
if truth_known:
    st.caption("Filled in the truth colour: a true feature of the prompt that a kept node maps onto; grey: a kept "
               "node no true feature of the prompt explains; hollow and dashed, at its site: a true feature the "
               "pruned graph lacks. Squares are tokens, circles features, diamonds error nodes, triangles logits; "
               "edges are direct effects (blue positive, red negative), as wide as their size. Hover a node for its "
               "activation, influence, true feature and top activating inputs; scroll to zoom.")
elif has_truth:
    st.caption("Ground truth hidden.")
else:
    st.info(f"{name}'s truth declares no features: the graph is shown without a truth status.")

# ---- against the truth ----------------------------------------------------------------------------
if truth_known:
    st.subheader("Against the truth")
    rows = truth_rows(view, kept, zm.truth)
    st.dataframe(rows, hide_index=True, width="stretch")
    missed = [row["true feature"] for row in rows if row["status"] != "found"]
    st.caption(f"{len(rows) - len(missed)} of the {len(rows)} features of the prompt's true circuit found"
               + (f"; missed: {', '.join(missed)}." if missed else ".")
               + " A feature node maps onto a true feature when the |cosine| of what it writes with the feature's "
                 "direction is at least 0.8 (`validate.feature_graphs.map_nodes`); best |cosine|: the best of any "
                 "node of the full graph.")

st.subheader("The kept features")
feature_rows = []
influence = graph.influence()
for i in sorted(kept):
    node = graph.nodes[i]
    if node.kind != "feature":
        continue
    inputs = tops.get((node.layer, node.pos, node.index), [])
    feature_rows.append({"feature": str(node), "activation": round(node.value, 3),
                         "influence": round(float(influence[i]), 4),
                         **({"true feature": view["mapped"][i] or "",
                             "|cosine|": round(view["cosines"][i], 3) if i in view["cosines"] else None}
                            if truth_known else {}),
                         "top activating inputs": "; ".join(f"{t} ({act:.1f})" for t, act in inputs)})
if feature_rows:
    st.dataframe(feature_rows, hide_index=True, width="stretch")
    st.caption("Top activating inputs: the prompts of the test set on which the feature is most active at its "
               "position (what a person labelling features reads).")
else:
    st.caption("The pruning kept no feature: the tokens reach the logits directly (through attention, and the "
               "skip path of a skip transcoder). Raise the node threshold to keep more.")
