"""Lesson 3, Activation and path patching: what each component does on a counterfactual pair."""

import time
from typing import Any

import lab_common as lab
import numpy as np
import streamlit as st

from toylab import components as comp
from toylab import methods, viz
from toylab.methods.patching import DIRECTIONS


def patch_targets(name: str, seed: int) -> list[str]:
    """The ``PATCH_TARGETS`` worth offering for this model: ``mlp_out`` needs an MLP (the
    function refuses it otherwise) and ``resid_mid`` is left out of attention-only models,
    where it is the same stream as ``resid_post``."""
    attn_only = lab.zoo_model(name, seed).model.cfg.attn_only
    return [t for t in methods.PATCH_TARGETS if not (attn_only and t in ("mlp_out", "resid_mid"))]


def path_receivers(name: str, seed: int) -> list[str]:
    """Components path patching can take as receivers: those with at least one head upstream."""
    cfg = lab.zoo_model(name, seed).model.cfg
    first_heads = comp.layer_of(comp.head_id(0, 0))
    return [r for r in comp.receivers(cfg) if comp.layer_of(r) > first_heads]


@st.cache_data(show_spinner=False)
def pair_example(name: str, seed: int, n: int, pair_seed: int) -> dict[str, Any]:
    """What the counterfactual pairs change, and the first pair as token strings."""
    zm = lab.zoo_model(name, seed)
    pair = zm.task.counterfactual(n, seed=pair_seed)
    return {"description": pair.description,
            "clean": zm.task.to_str_tokens(pair.clean.tokens[0]),
            "corrupted": zm.task.to_str_tokens(pair.corrupted.tokens[0])}


def _patching_summary(result: methods.PatchingResult, seconds: float, top: int) -> dict[str, Any]:
    return {"scores": result.scores.numpy(), "axes": result.axes, "seconds": seconds,
            "clean": float(result.clean_metric), "corrupted": float(result.corrupted_metric),
            "top": result.top(top) if len(result.axes) else []}


@st.cache_data(show_spinner=False, max_entries=256)
def activation_patching(name: str, seed: int, n: int, pair_seed: int, target: str,
                        direction: str = "denoise", top: int = 5) -> dict[str, Any]:
    """``methods.activation_patching`` on ``n`` counterfactual pairs: scores, axes, metrics,
    top entries and the seconds the sweep took (not counting making the pairs)."""
    zm = lab.zoo_model(name, seed)
    pair = zm.task.counterfactual(n, seed=pair_seed)
    with lab.FORWARD_LOCK:
        start = time.perf_counter()
        result = methods.activation_patching(zm.model, pair, target, direction=direction)
        seconds = time.perf_counter() - start
    return _patching_summary(result, seconds, top)


@st.cache_data(show_spinner=False, max_entries=256)
def path_patching(name: str, seed: int, n: int, pair_seed: int, receivers: tuple[str, ...],
                  receiver_input: str, direction: str = "denoise", top: int = 5) -> dict[str, Any]:
    """``methods.path_patching`` from every upstream head into ``receivers`` through ``receiver_input``."""
    zm = lab.zoo_model(name, seed)
    pair = zm.task.counterfactual(n, seed=pair_seed)
    with lab.FORWARD_LOCK:
        start = time.perf_counter()
        result = methods.path_patching(zm.model, pair, list(receivers), receiver_input, direction=direction)
        seconds = time.perf_counter() - start
    return _patching_summary(result, seconds, top)


st.title("3 Activation and path patching")
st.caption(
    "Run a clean and a corrupted input, then run one again with a single activation copied in "
    "from the other. The score `(patched - corrupted) / (clean - corrupted)` of the logit "
    "difference says how much of the difference that activation carries: 1 clean-like, 0 "
    "corrupted-like. Path patching narrows a head's effect to one edge: what one receiver reads "
    "from each sender through its query, key or value."
)

name, seed = lab.pick_model("patch", default="induction-siit")
zm = lab.zoo_model(name, seed)
cfg = zm.model.cfg
truth_heads = set(zm.truth.heads) if zm.truth else set()

n_col, seed_col, dir_col, truth_col = st.columns([2, 1, 1.4, 1.4])
n_pairs = n_col.slider("Counterfactual pairs", min_value=8, max_value=256, value=32, step=8, key="patch_n",
                       help="Scores average the metric over this many pairs; more pairs, slower sweeps.")
pair_seed = seed_col.number_input("Pair seed", min_value=0, max_value=1_000_000, value=0, key="patch_pair_seed")
direction = dir_col.radio("Direction", DIRECTIONS, horizontal=True, key="patch_direction",
                          help="denoise: run the corrupted input, patch in clean activations (the fraction "
                               "restored); noise: run the clean input, patch in corrupted ones (the fraction "
                               "left standing).")
show_truth = truth_col.toggle("Show ground truth", value=True, key="patch_truth")
n_pairs, pair_seed = int(n_pairs), int(pair_seed)

example = pair_example(name, seed, n_pairs, pair_seed)
st.markdown(f"**The pairs:** {example['description']}.")
st.caption("First pair, clean: `" + " ".join(example["clean"]) + "`  \ncorrupted: `"
           + " ".join(example["corrupted"]) + "`")

LAYERS = [f"L{layer}" for layer in range(cfg.n_layers)]
HEADS = [f"H{h}" for h in range(cfg.n_heads)]


def head_cells(heads: set[str], n_layers: int) -> set[tuple[int, int]]:
    """(layer, head) cells of ``heads`` (head ids) in the first ``n_layers`` layers."""
    cells = set()
    for head in heads:
        kind, layer, index = comp.parse(head)
        if kind == "head" and layer < n_layers:
            cells.add((layer, index))
    return cells


def score_grid(scores: np.ndarray, title: str, highlight: set[tuple[int, int]]) -> None:
    """A layer x head grid of patching scores (colours centred on 0: effects can have either sign)."""
    lab.show(viz.heatmap, scores, LAYERS[:scores.shape[0]], HEADS, title=title, highlight=highlight,
             cbar_label="score", xlabel="head", ylabel="layer")


# ---- activation patching --------------------------------------------------------------------
st.header("Activation patching")
targets = patch_targets(name, seed)
if st.session_state.get("patch_target") not in targets:
    st.session_state.pop("patch_target", None)  # e.g. mlp_out on a model without MLPs
TARGET_HELP = {
    "resid_pre": "the residual stream entering each layer, at each position",
    "resid_mid": "the residual stream between attention and MLP, at each position",
    "resid_post": "the residual stream leaving each layer, at each position",
    "attn_out": "the attention layer's output, at each position",
    "mlp_out": "the MLP's output, at each position",
    "head": "one head's output (hook_z) at every position",
    "head_pos": "one head's output at one position",
    "q": "one head's queries at every position",
    "k": "one head's keys at every position",
    "v": "one head's values at every position",
    "pattern": "one head's attention pattern",
}
target_col, layer_col = st.columns([3, 1])
target = target_col.selectbox("Patch", targets, index=targets.index("head") if "head" in targets else 0,
                              format_func=lambda t: f"{t}: {TARGET_HELP[t]}", key="patch_target")
result = activation_patching(name, seed, n_pairs, pair_seed, target, direction)
scores, axes = result["scores"], result["axes"]

clean_m, corrupt_m, time_m = st.columns(3)
clean_m.metric("Clean logit difference", f"{result['clean']:.2f}")
corrupt_m.metric("Corrupted logit difference", f"{result['corrupted']:.2f}")
time_m.metric("Sweep time", f"{result['seconds'] * 1000:.0f} ms",
              help=f"{int(np.prod(scores.shape))} patches on {n_pairs} pairs, computed once and cached.")

plot_col, top_col = st.columns([3, 2])
with plot_col:
    if axes == ("layer", "pos"):
        positions = [str(p) for p in range(scores.shape[1])]
        lab.show(viz.heatmap, scores, LAYERS, positions, title=f"{name}: {target} patching ({direction})",
                 cbar_label="score", xlabel="position", ylabel="layer")
        st.caption(f"**{target}** patching, scores [layer, pos]: {TARGET_HELP[target]}, patched one "
                   "(layer, position) at a time. Ground truth names components, not positions, so "
                   "nothing is outlined here.")
    elif axes == ("layer", "head", "pos"):
        pos_layer = layer_col.selectbox("Layer", range(cfg.n_layers), index=cfg.n_layers - 1, key="patch_layer")
        positions = [str(p) for p in range(scores.shape[2])]
        lab.show(viz.heatmap, scores[pos_layer], HEADS, positions,
                 title=f"{name}: {target} patching, layer {pos_layer} ({direction})",
                 cbar_label="score", xlabel="position", ylabel="head")
        in_layer = sorted(h for h in truth_heads if comp.parse(h)[1] == pos_layer)
        st.caption(f"**{target}** patching of layer {pos_layer}, scores [head, pos]: {TARGET_HELP[target]}."
                   + (f" Ground truth heads in this layer: {', '.join(in_layer) or 'none'}." if show_truth else ""))
    else:
        highlight = head_cells(truth_heads, cfg.n_layers) if show_truth else set()
        score_grid(scores, f"{name}: {target} patching ({direction})", highlight)
        st.caption(f"**{target}** patching, scores [layer, head]: {TARGET_HELP[target]}."
                   + (f" Outlined: the ground truth's heads ({', '.join(sorted(truth_heads)) or 'none'})."
                      if show_truth else " Ground truth hidden."))
with top_col:
    st.subheader("Top entries")
    rows = [{"patched": label, "score": round(value, 3)} for label, value in result["top"]]
    if show_truth and axes[:2] == ("layer", "head"):
        for row in rows:
            row["ground truth"] = row["patched"].split(" ")[0] in truth_heads
    st.dataframe(rows, hide_index=True, width="stretch")

# ---- path patching ------------------------------------------------------------------------------
st.header("Path patching")
receiver_options = path_receivers(name, seed)
head_edges = [e for e in (zm.truth.edges if zm.truth else ()) if comp.parse(e.sender)[0] == "head"
              and e.receiver in receiver_options]
default_receivers = [head_edges[0].receiver] if head_edges else [comp.OUTPUT]
default_input = head_edges[0].kind if head_edges else "resid"
if st.session_state.get("patch_path_model") != (name, seed):  # a new model: start from its truth's first edge
    st.session_state["patch_path_model"] = (name, seed)
    st.session_state.pop("patch_receivers", None)
    st.session_state.pop("patch_receiver_input", None)
recv_col, input_col = st.columns([3, 1])
receivers = recv_col.multiselect("Receivers", receiver_options, default=default_receivers, key="patch_receivers",
                                 help="Later heads (read through q, k or v), MLPs or the logits (read the "
                                      "residual stream). Several receivers are patched together.")
is_head = [comp.parse(r)[0] == "head" for r in receivers]
inputs = list(comp.QKV) if receivers and all(is_head) else ["resid"]
if st.session_state.get("patch_receiver_input") not in inputs:
    st.session_state.pop("patch_receiver_input", None)
receiver_input = input_col.radio("Receiver input", inputs, horizontal=True, key="patch_receiver_input",
                                 index=inputs.index(default_input) if default_input in inputs else 0)
if not receivers:
    st.info("Pick at least one receiver.")
elif any(is_head) and not all(is_head):
    st.warning("Pick heads only (read through q, k or v) or MLPs and logits only (read the residual stream).")
else:
    path = path_patching(name, seed, n_pairs, pair_seed, tuple(receivers), receiver_input, direction)
    earliest = min(comp.layer_of(r) for r in receivers)  # senders: the heads of layers before it
    senders = path["scores"][:cfg.n_layers if earliest == float("inf") else int(np.ceil(earliest))]
    truth_senders = {e.sender for e in head_edges if e.receiver in receivers and e.kind == receiver_input}
    path_col, path_text = st.columns([3, 2])
    with path_col:
        score_grid(senders, f"path patching into {'+'.join(receivers)} via {receiver_input}",
                   head_cells(truth_senders, senders.shape[0]) if show_truth else set())
    with path_text:
        st.caption(f"Each sender head's effect through **{receiver_input}** of {', '.join(receivers)} only, "
                   f"rows [layer, head] over the heads upstream of the receivers; the sweep took "
                   f"{path['seconds'] * 1000:.0f} ms.")
        if show_truth:
            st.caption(f"Outlined: the ground truth's {receiver_input} senders into these receivers "
                       f"({', '.join(sorted(truth_senders)) or 'none'}).")
        st.dataframe([{"sender": label, "score": round(value, 3),
                       **({"ground truth": label in truth_senders} if show_truth else {})}
                      for label, value in path["top"]], hide_index=True, width="stretch")
