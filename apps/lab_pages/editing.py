"""Lesson 12, Editing facts: rewrite one fact with ROME, MEMIT or constrained fine-tuning, score it exactly, see
which other facts it changed, and compare where causal tracing points with where editing works."""

from typing import Any

import lab_common as lab
import streamlit as st
import torch

from toylab import methods, viz
from toylab.lessons import lesson_fixtures
from toylab.methods import FactEdit

FIXTURES = lesson_fixtures("editing")  # lesson 12's models, facts and the truth's stores
Edit = tuple[int, int, int]  # subject, relation, new attribute
SCORES = (("Efficacy", "efficacy"), ("Generalisation", "generalisation"), ("Specificity", "specificity"),
          ("Same subject", "same_subject"))


@st.cache_data(show_spinner="Editing...", max_entries=256)
def edit_view(name: str, seed: int, edit: Edit, method: str, layer: int) -> dict[str, Any]:
    """``methods.apply_edits`` of one edit and ``methods.score_edits`` of it; the edited fact's answer in each form;
    every other prompt of the task whose answer the edit changed."""
    zm = lab.zoo_model(name, seed)
    task, fact = zm.task, FactEdit(*edit)
    everything = task.all_facts()  # every fact in every form
    with lab.FORWARD_LOCK:  # ROME and MEMIT hook the shared model while they optimise
        result = methods.apply_edits(zm.model, task, [fact], method, (layer,))
        scores = methods.score_edits(zm.model, result.model, task, [fact])
        with torch.no_grad():
            before = zm.model(everything.tokens)[:, -1].argmax(-1)  # [prompt]
            after = result.model(everything.tokens)[:, -1].argmax(-1)
    v = task.variables(everything.tokens)
    names = task.output_names
    edited_rows, changed = [], []
    for i in range(len(everything.tokens)):
        s, r, form = int(v["subject"][i]), int(v["relation"][i]), int(v["form"][i])
        if (s, r) == (fact.subject, fact.relation):
            edited_rows.append({"form": form, "prompt": " ".join(task.to_str_tokens(everything.tokens[i])[1:]),
                                "before": names[int(before[i])], "after": names[int(after[i])]})
        elif before[i] != after[i]:
            changed.append((s, r, form, int(before[i]), int(after[i])))
    changed = [{"fact": f"s{s} r{r}", "form": form, "table": names[int(task.table[s, r])], "before": names[was],
                "after": names[now], "subject": "same subject" if s == fact.subject else "other subject"}
               for s, r, form, was, now in sorted(changed)]
    return {"scores": {key: getattr(scores, key) for _, key in SCORES}, "S": methods.edit_score(scores),
            "edited": edited_rows, "changed": changed, "n_prompts": len(everything.tokens)}


@st.cache_data(show_spinner="Tracing...", max_entries=256)
def traced(name: str, seed: int, edit: Edit, n_noise: int, trace_seed: int) -> list[float]:
    """Causal tracing of the fact as ``methods.localisation_vs_editing`` traces its fact number ``trace_seed``: the
    fraction of p(answer) restored by each MLP's output at the subject, ``n_noise`` noise draws per form: [layer]."""
    zm = lab.zoo_model(name, seed)
    task, subject = zm.task, zm.task.positions["subject"]
    forms = torch.arange(task.n_forms).repeat(n_noise)
    batch = task.make_batch(torch.full_like(forms, edit[0]), torch.full_like(forms, edit[1]), forms)
    with lab.FORWARD_LOCK:
        result = methods.causal_trace(zm.model, batch, [subject], kinds=("mlp_out",),
                                      config=methods.TracingConfig(seed=trace_seed))
    return result.scores("mlp_out")[:, subject].float().tolist()


def localisation(name: str, seed: int, edits: tuple[Edit, ...], n_noise: int) -> dict[str, Any]:
    """``methods.localisation_vs_editing`` at every MLP layer, from the pieces cached one by one (an edit the page
    showed above is not made again): tracing and ROME's S per fact and layer, [fact, layer], with the layer the truth
    stores each fact in."""
    zm = lab.zoo_model(name, seed)
    facts = [FactEdit(*e) for e in edits]
    stored = [FIXTURES.stored_layer(zm, e.subject) for e in facts]
    layers = tuple(range(zm.model.cfg.n_layers))
    trace = torch.tensor([traced(name, seed, e, n_noise, i) for i, e in enumerate(edits)])  # [fact, layer]
    scores = torch.tensor([[edit_view(name, seed, e, "rome", layer)["S"] for layer in layers] for e in edits])
    result = methods.LocalisationVsEditing(layers, tuple(facts), trace, scores,
                                           None if None in stored else tuple(stored))
    return {"labels": [FIXTURES.fact_label(zm.task, e) for e in facts], "layers": list(layers), "stored": stored,
            "trace": result.trace.numpy(), "scores": result.edit_scores.numpy(),
            "peak": result.trace_peak.tolist(), "best": result.best_edit_layer.tolist()}


st.title("12 Editing facts")
st.caption(
    "ROME (Meng et al. 2022) rewrites one fact by a rank-one change of an MLP's output weights: the neurons' "
    "activation at the subject is the key, the change of the MLP's output the value. MEMIT edits many facts at "
    "once; constrained fine-tuning (FT-L) is the baseline. Each edit is scored as CounterFact does, but exactly: "
    "every paraphrase, every other subject's fact and every other fact of the subject is asked. On "
    "factual-recall-split, half the facts live in MLP0 and half in MLP1: compare where causal tracing points with "
    "where an edit works (Hase et al. 2023).")

name, seed = lab.pick_model("edit", kind="factual_recall", default=FIXTURES.SPLIT_MODEL)
zm = lab.zoo_model_or_stop(name, seed)
task, cfg = zm.task, zm.model.cfg
show_truth = st.toggle("Show ground truth", value=True, key="edit_truth")

# ---- the edit -----------------------------------------------------------------------------------
st.header("The edit")
first = FIXTURES.first_edit(task)  # the lesson's first edit of this model: the page starts on it
subject_col, relation_col, attribute_col, method_col, layer_col = st.columns([1, 1, 1, 2.2, 1])
subject = int(subject_col.selectbox("Subject", list(range(task.n_subjects)), index=first.subject, key="edit_subject",
                                    format_func=lambda s: f"s{s}"))
relation = int(relation_col.selectbox("Relation", list(range(task.n_relations)), index=first.relation,
                                      key="edit_relation", format_func=lambda r: f"r{r}"))
old = int(task.table[subject, relation])
new = first.attribute if (subject, relation) == (first.subject, first.relation) else (old + 1) % task.n_attributes
attribute = int(attribute_col.selectbox("New attribute", list(range(task.n_attributes)), index=new,
                                        key="edit_attribute", format_func=task.output_names.__getitem__))
method = method_col.radio("Method", list(methods.EDIT_METHODS), horizontal=True, key="edit_method",
                          help="rome: a rank-one update of W_out; memit: a least-squares update that keeps every "
                               "other fact's key in place; fine-tune: Adam on W_out, each weight's change clamped.")
layer = int(layer_col.selectbox("MLP layer", list(range(cfg.n_layers)), key="edit_layer",
                                help="The MLP whose output weights the edit changes, at the subject position."))
store = FIXTURES.stored_layer(zm, subject)
prompt = " ".join(task.to_str_tokens(FIXTURES.edit_prompt(task, FactEdit(subject, relation, attribute))[0])[1:])
st.markdown(f"**Fact:** `{prompt}` ... `{task.output_names[old]}`"
            + (f"; the truth stores it in MLP{store}." if show_truth and store is not None else "."))
if attribute == old:
    st.warning(f"s{subject} r{relation} already answers {task.output_names[old]}: pick another attribute, an edit "
               "must change the fact.")
    st.stop()

view = edit_view(name, seed, (subject, relation, attribute), method, layer)
columns = st.columns(len(SCORES) + 1)
for col, (label, key) in zip(columns, SCORES):
    value = view["scores"][key]
    col.metric(label, "n/a" if value is None else f"{value:.3f}")
columns[-1].metric("Edit score S", f"{view['S']:.3f}",
                   help="CounterFact's overall score: the harmonic mean of efficacy, generalisation (where defined) "
                        "and specificity.")
st.caption(f"Efficacy: the edited prompt (form 0) answers {task.output_names[attribute]}. Generalisation: the same "
           "fact in the other prompt forms does too (n/a with one form). Specificity: every other subject's facts, "
           "in every form, that the model knew, still answered right. Same subject: the subject's other relations.")
fact_col, changed_col = st.columns([2, 3])
with fact_col:
    st.subheader("The edited fact")
    st.dataframe(view["edited"], hide_index=True, width="stretch")
with changed_col:
    st.subheader("Collateral damage")
    if view["changed"]:
        st.dataframe(view["changed"], hide_index=True, width="stretch")
        same = sum(row["subject"] == "same subject" for row in view["changed"])
        st.caption(f"{len(view['changed'])} of the {view['n_prompts'] - len(view['edited'])} other prompts changed "
                   f"their answer ({same} of the same subject). 'table' is the right answer.")
    else:
        st.caption(f"No other prompt of the {view['n_prompts'] - len(view['edited'])} changed its answer.")

# ---- tracing against editing --------------------------------------------------------------------
st.header("Where the fact lives, and where editing works")
if not lab.on_request("Trace and edit at every MLP", key="edit_localise",
                      help="Causal tracing of the fact and a ROME edit at each MLP layer: about a second per fact."):
    st.stop()
which = st.radio("Facts", ["this fact", "the lesson's facts (two from each store)"], horizontal=True,
                 key="edit_facts", help="The lesson's facts: fixtures.split_facts, edited as the lesson does.")
if which == "this fact":
    edits = ((subject, relation, attribute),)
else:
    edits = tuple((e.subject, e.relation, e.attribute) for e in FIXTURES.split_facts(zm))
panel = localisation(name, seed, edits, FIXTURES.N_NOISE)
known = show_truth and None not in panel["stored"]
lab.show(viz.editing_map, panel["trace"], panel["scores"], panel["labels"], panel["layers"],
         stored=panel["stored"] if known else None, title=f"{name}: tracing against ROME at each MLP")
st.dataframe([{"fact": label, **({"stored in": f"MLP{stored}"} if known else {}), "tracing peak": f"MLP{peak}",
               "best edit layer": f"MLP{best}",
               **{f"S at MLP{layer}": round(float(s), 3) for layer, s in zip(panel["layers"], scores)}}
              for label, stored, peak, best, scores in zip(panel["labels"], panel["stored"], panel["peak"],
                                                           panel["best"], panel["scores"])],
             hide_index=True, width="stretch")
st.caption(f"Left: causal tracing, the fraction of p(answer) restored by restoring one MLP's output at the subject "
           f"({FIXTURES.N_NOISE} noise draws per prompt form). Right: S of a ROME edit at that MLP "
           "(`methods.localisation_vs_editing`)."
           + (" Outlined: the MLP the truth stores each fact in." if known else " Ground truth hidden."
              if not show_truth else ""))
