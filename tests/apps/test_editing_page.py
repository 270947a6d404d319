"""The lab's "12 Editing facts" page: a fact edited from widgets, its four figures, the other facts it changed and
tracing against editing, each number checked against toylab.methods. Where each fact is stored is read from the
truth."""

from pathlib import Path

import pytest
import torch
from page_plots import image_urls, plots
from streamlit.testing.v1 import AppTest

from toylab import methods, zoo
from toylab.lessons import lesson_fixtures, load
from toylab.methods import FactEdit

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"
PAGE = "lab_pages/editing.py"
FIXTURES = lesson_fixtures("editing")
SPLIT = zoo.load(FIXTURES.SPLIT_MODEL)
FIRST = FIXTURES.first_edit(SPLIT.task)  # the lesson's first edit, where the page starts
LABELS = ("Efficacy", "Generalisation", "Specificity", "Same subject")


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def open_page() -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=120).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frame(at: AppTest, *columns: str) -> list[dict]:
    """The one dataframe on the page with these columns, as records."""
    (records,) = [df.value.to_dict("records") for df in at.dataframe if set(columns) <= set(df.value.columns)]
    return records


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def set_edit(at: AppTest, subject: int, relation: int, attribute: int, method: str = "rome", layer: int = 0) -> None:
    at.selectbox(key="edit_subject").set_value(subject)
    at.selectbox(key="edit_relation").set_value(relation)
    at.selectbox(key="edit_attribute").set_value(attribute)
    at.radio(key="edit_method").set_value(method)
    at.selectbox(key="edit_layer").set_value(layer)
    at.run()
    assert not at.exception, at.exception


def check_edit(at: AppTest, zm, edit: FactEdit, method: str, layer: int) -> None:
    """The metrics, the edited fact's answers and the collateral table are those of apply_edits and score_edits."""
    task = zm.task
    edited = methods.apply_edits(zm.model, task, [edit], method, (layer,)).model
    scores = methods.score_edits(zm.model, edited, task, [edit])
    shown = metrics(at)
    for label, value in zip(LABELS, (scores.efficacy, scores.generalisation, scores.specificity, scores.same_subject)):
        assert shown[label] == ("n/a" if value is None else f"{value:.3f}"), label
    assert shown["Edit score S"] == f"{methods.edit_score(scores):.3f}"
    everything = task.all_facts()
    v = task.variables(everything.tokens)
    before = zm.model(everything.tokens)[:, -1].argmax(-1)
    after = edited(everything.tokens)[:, -1].argmax(-1)
    fact = (v["subject"] == edit.subject) & (v["relation"] == edit.relation)
    rows = frame(at, "form", "prompt", "before", "after")
    assert [row["after"] for row in rows] == [f"a{int(a)}" for a in after[fact]]
    assert [row["before"] for row in rows] == [f"a{int(task.table[edit.subject, edit.relation])}"] * task.n_forms
    changed = sorted((int(v["subject"][i]), int(v["relation"][i]), int(v["form"][i]), int(after[i]))
                     for i in torch.nonzero(~fact & (before != after)).flatten().tolist())
    shown_changed = frame(at, "fact", "form", "table", "before", "after", "subject") if changed else []
    assert [(row["fact"], row["form"], row["after"]) for row in shown_changed] == \
        [(f"s{s} r{r}", form, f"a{a}") for s, r, form, a in changed]
    if not changed:
        assert "No other prompt" in texts(at.caption)


def test_the_page_starts_on_the_split_model_with_the_lessons_edit_scored_exactly():
    at = open_page()
    assert at.selectbox(key="edit_model").value == FIXTURES.SPLIT_MODEL
    assert [at.selectbox(key=f"edit_{w}").value for w in ("subject", "relation", "attribute")] == \
        [FIRST.subject, FIRST.relation, FIRST.attribute]
    check_edit(at, SPLIT, FIRST, "rome", 0)
    assert f"the truth stores it in MLP{FIXTURES.stored_layer(SPLIT, FIRST.subject)}" in texts(at.markdown)
    assert not plots(at)  # tracing against editing waits for its button
    at.button(key="edit_localise").click().run()
    assert not at.exception, at.exception
    assert len(plots(at)) == 1


def test_the_edit_widgets_follow_the_method_and_the_layer():
    at = open_page()
    # a fact MLP1 stores: the lesson's first of them (the page's ROME edits of it serve its tracing panel too)
    edit = next(e for e in FIXTURES.split_facts(SPLIT) if FIXTURES.stored_layer(SPLIT, e.subject) == 1)
    assert edit.subject >= SPLIT.algorithm.boundary
    for method, layer in (("memit", 1), ("fine-tune", 1), ("rome", 2)):
        set_edit(at, edit.subject, edit.relation, edit.attribute, method, layer)
        check_edit(at, SPLIT, edit, method, layer)
    assert metrics(at)["Efficacy"] == "0.000"  # MLP2 writes after L2H1 has read the subject: the edit cannot take


def test_a_one_form_model_has_no_generalisation():
    at = open_page()
    at.selectbox(key="edit_model").set_value(FIXTURES.MODEL).run()
    assert not at.exception, at.exception
    fr = zoo.load(FIXTURES.MODEL)
    edit = FactEdit(*(int(at.selectbox(key=f"edit_{w}").value) for w in ("subject", "relation", "attribute")))
    check_edit(at, fr, edit, "rome", 0)
    assert metrics(at)["Generalisation"] == "n/a"


def test_an_edit_that_changes_nothing_is_refused_in_words():
    at = open_page()
    at.selectbox(key="edit_attribute").set_value(int(SPLIT.task.table[FIRST.subject, FIRST.relation])).run()
    assert not at.exception, at.exception
    assert "already answers" in texts(at.warning)
    assert not at.metric and not plots(at)


def test_tracing_against_editing_matches_the_method_and_outlines_the_truths_store():
    at = open_page()
    at.button(key="edit_localise").click().run()
    at.radio(key="edit_facts").set_value("the lesson's facts (two from each store)").run()
    assert not at.exception, at.exception
    facts = FIXTURES.split_facts(SPLIT)
    stored = [FIXTURES.stored_layer(SPLIT, e.subject) for e in facts]
    layers = tuple(range(SPLIT.model.cfg.n_layers))
    # methods.localisation_vs_editing at every layer: at MLP0 and MLP1 as lesson 12's checker computes it for these
    # facts (once per process), at the other layers here. Each fact's noise and edits do not depend on the layers.
    lesson = load("editing")._localisation()
    assert lesson.edits == tuple(facts) and lesson.layers == (0, 1) and layers[:2] == (0, 1)
    rest = methods.localisation_vs_editing(SPLIT.model, SPLIT.task, facts, layers=layers[2:], stored=stored,
                                           n_noise=FIXTURES.N_NOISE)
    result = methods.LocalisationVsEditing(layers, tuple(facts), torch.cat([lesson.trace, rest.trace], 1),
                                           torch.cat([lesson.edit_scores, rest.edit_scores], 1), tuple(stored))
    rows = frame(at, "fact", "tracing peak", "best edit layer")
    assert [row["fact"] for row in rows] == [FIXTURES.fact_label(SPLIT.task, e) for e in facts]
    assert [row["stored in"] for row in rows] == [f"MLP{layer}" for layer in stored]
    assert [row["tracing peak"] for row in rows] == [f"MLP{layer}" for layer in result.trace_peak.tolist()]
    for row, scores in zip(rows, result.edit_scores):
        assert [row[f"S at MLP{layer}"] for layer in layers] == pytest.approx(scores.tolist(), abs=1e-3)
    outlined = image_urls(at)[0]

    at.toggle(key="edit_truth").set_value(False).run()
    assert not at.exception, at.exception
    assert "stored in" not in frame(at, "fact", "tracing peak")[0]
    assert image_urls(at)[0] != outlined  # the outlines go
    assert "Ground truth hidden" in texts(at.caption) and "truth stores" not in texts(at.markdown)
