"""Lesson 15, Balanced brackets: type or sample a bracket string and see its running balance, the model's answer and
confidence, the counting head's attention, the flags read off MLP0 at each position and the gathering head's look at
them; then the ablations of the two ways to fail, with the truth's components outlined."""

from typing import Any

import lab_common as lab
import streamlit as st
import torch

from toylab import viz
from toylab.lessons import lesson_fixtures
from toylab.tasks.brackets import GROUPS

FIXTURES = lesson_fixtures("brackets")  # lesson 15's model, failure pairs, flag readout and the truth's sites
MIX = "the task's mix"
DEFAULT_STRING = "(())" + ")(" + "()" * 9  # ends at zero, dips below it once: unbalanced


@st.cache_resource(show_spinner="Fitting the flag readout...", max_entries=16)
def readout(name: str, seed: int) -> Any:
    """``fixtures.fit_flag_readout``: the difference in means of MLP0's output where the balance is below zero and
    elsewhere (exercise 15.3's direction), once per model; shared, never modified."""
    zm = lab.zoo_model(name, seed)
    with lab.FORWARD_LOCK:
        return FIXTURES.fit_flag_readout(zm.model, zm.task)


@st.cache_data(show_spinner=False, max_entries=256)
def sampled(name: str, seed: int, group: str, sample_seed: int) -> str:
    """One string of ``group`` (or of the task's mix), drawn with ``sample_seed``."""
    task = lab.zoo_model(name, seed).task
    return task.to_strings(task.sample(1, seed=sample_seed, group=None if group == MIX else group).tokens)[0]


@st.cache_data(show_spinner=False, max_entries=512)
def analyse(name: str, seed: int, string: str, count_head: int, gather_head: int) -> dict[str, Any]:
    """The algorithm's variables on ``string``, the model's answer and P(balanced), the attention of L0H``count_head``
    and of L1H``gather_head`` (the last query's row), and the flags read off MLP0 at every position."""
    zm = lab.zoo_model(name, seed)
    task = zm.task
    tokens = task.make_tokens(string)  # [1, pos]
    v = task.variables(tokens)
    flag_readout = readout(name, seed)  # outside the lock: fitting it takes the lock itself
    with lab.FORWARD_LOCK, torch.no_grad():
        logits, cache = zm.model.run_with_cache(tokens)
        flags = FIXTURES.flag_readout(zm.model, flag_readout, tokens)[0]
    return {"str_tokens": task.to_str_tokens(tokens[0]), "balance": v["balance"][0].tolist(),
            "negative": v["negative"][0].tolist(), "final_zero": bool(v["final_zero"][0]),
            "any_negative": bool(v["any_negative"][0]), "answer": task.output_names[int(v["answer"][0])],
            "model": task.output_names[int(logits[0, -1].argmax())],
            "p_balanced": float(logits[0, -1].softmax(-1)[1]),
            "count_pattern": cache["pattern", 0][0, count_head].numpy(),
            "gather_last": cache["pattern", 1][0, gather_head, -1].tolist(), "flags": flags.tolist()}


@st.cache_data(show_spinner="Ablating every component on both kinds of pair...", max_entries=16)
def failures(name: str, seed: int) -> dict[str, Any]:
    """``fixtures.destroyed`` of every component on each kind of ``fixtures.failure_pairs``, and the truth's
    prediction of which matter."""
    zm = lab.zoo_model(name, seed)
    pairs = FIXTURES.failure_pairs(zm.task, FIXTURES.N_PAIRS, seed=0)
    with lab.FORWARD_LOCK:
        scores = {kind: FIXTURES.destroyed(zm.model, pairs[kind]) for kind in FIXTURES.KINDS}
    truth = FIXTURES.truth_failures(zm.truth, zm.task, pairs) if zm.truth is not None else None
    return {"scores": scores, "truth": truth, "n": {kind: len(pairs[kind].clean) for kind in FIXTURES.KINDS}}


st.title("15 Balanced brackets")
st.caption(
    "A string is balanced when its running count #'(' - #')' never drops below zero and ends at zero. "
    "brackets-siit counts with a uniformly attending head, flags the positions below zero in MLP0, gathers the "
    "flags at the last position with a layer-1 head and combines them with the final count in MLP1. Type or "
    "sample a string and see each step; then ablate each component on the two ways to fail.")

name, seed = lab.pick_model("brackets", kind="brackets", default=FIXTURES.MODEL)
zm = lab.zoo_model_or_stop(name, seed)
task, cfg = zm.task, zm.model.cfg
show_truth = st.toggle("Show ground truth", value=True, key="brackets_truth")
sites = FIXTURES.truth_sites(zm.truth) if zm.truth is not None else {}

# ---- the string ---------------------------------------------------------------------------------
st.header("The string")
input_col, group_col, seed_col = st.columns([1.2, 2, 1])
how = input_col.radio("Input", ["sample", "type"], horizontal=True, key="brackets_input")
if how == "sample":
    group = group_col.selectbox("Group", [MIX, *GROUPS], key="brackets_group",
                                help="The task samples each string uniformly within one of these groups.")
    sample_seed = int(seed_col.number_input("Sample seed", min_value=0, max_value=100_000, value=0, step=1,
                                            key="brackets_sample_seed"))
    string = sampled(name, seed, group, sample_seed)
    st.code(string, language=None)
else:
    typed = group_col.text_input(f"Brackets ({task.length} of '(' and ')')", value=DEFAULT_STRING,
                                 key="brackets_text")
    string = "".join(typed.split())
    bad = sorted(set(string) - {"(", ")"})
    if bad or len(string) != task.length:
        st.warning(f"Type exactly {task.length} brackets, '(' or ')' only (you typed {len(string)} characters"
                   + (f", including {', '.join(repr(c) for c in bad)}" if bad else "") + ").")
        st.stop()

head_col, gather_col = st.columns(2)
count_head = int(head_col.selectbox("Counting head (layer 0)", list(range(cfg.n_heads)), key="brackets_count_head",
                                    index=int(sites.get("balance", "L0H0")[3:]),
                                    format_func=lambda h: f"L0H{h}"))
gather_head = int(gather_col.selectbox("Gathering head (layer 1)", list(range(cfg.n_heads)),
                                       key="brackets_gather_head",
                                       index=int(sites.get("any_negative", "L1H0")[3:]),
                                       format_func=lambda h: f"L1H{h}"))
view = analyse(name, seed, string, count_head, gather_head)
answer_m, model_m, p_m = st.columns(3)
answer_m.metric("Algorithm says", view["answer"],
                help=f"ends at zero: {view['final_zero']}; below zero somewhere: {view['any_negative']}")
model_m.metric("Model says", view["model"])
p_m.metric("P(balanced)", f"{view['p_balanced']:.3f}")
lab.show(viz.bracket_trace, view["str_tokens"], view["balance"], flags=view["flags"],
         negative=view["negative"] if show_truth else None, title=f"{string}: the running balance")
st.caption("Below: the flag read off MLP0's output at each position, along the difference in means of its output "
           "where the balance is below zero and elsewhere (0 at the mean elsewhere, 1 at the mean below zero)."
           + (" Outlined: the positions where the algorithm's balance is below zero." if show_truth else ""))
declared = FIXTURES.truth_flag_directions(zm.truth) if zm.truth is not None else torch.zeros(0, 0)
if show_truth and len(declared):
    cosine = declared @ readout(name, seed).direction
    st.caption(f"The truth declares {len(declared)} flag directions in MLP0's output; the readout's direction has "
               f"cosine {float(cosine.min()):.3f} or more with each.")

pattern_col, table_col = st.columns([2, 3])
with pattern_col:
    lab.show(viz.attention_pattern, view["count_pattern"], view["str_tokens"], title=f"L0H{count_head}'s attention")
    st.caption("A counting head attends evenly to every position so far: its output is the fraction of open "
               "brackets. L0H0 and L0H1 both do; only one is read downstream.")
with table_col:
    st.dataframe([{"pos": i, "bracket": token, "balance": balance, "below zero": negative,
                   "flag": round(flag, 3), f"L1H{gather_head} attn": round(attention, 3)}
                  for i, (token, balance, negative, flag, attention) in enumerate(zip(
                      view["str_tokens"], view["balance"], view["negative"], view["flags"], view["gather_last"]))],
                 hide_index=True, width="stretch", height=300)
    share = sum(a for a, neg in zip(view["gather_last"], view["negative"]) if neg)
    st.caption(f"Position by position: the algorithm's balance and whether it is below zero, the flag read off "
               f"MLP0, and the attention the last position pays it through L1H{gather_head}: {share:.0%} of it on "
               f"positions below zero ({sum(view['negative'])} of them).")

# ---- two ways to fail ---------------------------------------------------------------------------
st.header("Two ways to fail")
result = failures(name, seed)
truth = result["truth"] if show_truth else None
lab.show(viz.failure_bars, result["scores"], truth=truth, bar=FIXTURES.DESTROYS,
         title=f"{name}: fraction of the logit difference each ablation destroys")
st.dataframe([{"component": c, **{kind: round(result["scores"][kind][c], 3) for kind in FIXTURES.KINDS},
               **({f"truth: {kind}": c in truth[kind] for kind in FIXTURES.KINDS} if truth else {})}
              for c in FIXTURES.components(cfg)], hide_index=True, width="stretch")
st.caption(f"task.counterfactual's pairs split by their edit: 'dips' swaps a matched pair (the unbalanced string "
           f"ends at zero but dips below it; {result['n']['dips']} pairs), 'unclosed' turns one ')' into '(' (it "
           f"never dips but ends at +2; {result['n']['unclosed']} pairs). Each component is resample-ablated, its "
           "output taken from the other string (`methods.ablation_scores`); dashed: half the difference."
           + (" Outlined: the components the truth predicts each failure runs through." if truth
              else " Ground truth hidden." if not show_truth else ""))
