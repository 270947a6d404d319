"""The lab's "10 Indirect object identification" page: a prompt built from widgets, its answer, the truth's
circuit, direct effects, path patching and self-repair, each number checked against the method functions.
Which head plays which part is read from the truth."""

from pathlib import Path

import pytest
import torch
from page_plots import image_urls, plots
from streamlit.testing.v1 import AppTest

from toylab import methods, zoo
from toylab.lessons import lesson_fixtures
from toylab.methods.repair import self_repair
from toylab.tasks import logit_diff

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"
PAGE = "lab_pages/ioi.py"
FIXTURES = lesson_fixtures("ioi")
ZM = zoo.load(FIXTURES.MODEL, seed=FIXTURES.SEED)
TRUTH = ZM.truth
MOVERS = FIXTURES.name_movers(TRUTH)
(S_INHIBITION,) = FIXTURES.role_heads(TRUTH, "s-inhibition")
(DUPLICATE,) = FIXTURES.role_heads(TRUTH, "duplicate-token")
HEADS = [f"L{layer}H{head}" for layer in range(ZM.model.cfg.n_layers) for head in range(ZM.model.cfg.n_heads)]


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def open_page() -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=60).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def deltas(at: AppTest) -> dict[str, str]:
    return {m.label: m.proto.delta for m in at.metric}


def frames(at: AppTest, *columns: str) -> list[list[dict]]:
    """The dataframes on the page that have these columns, as records."""
    return [df.value.to_dict("records") for df in at.dataframe if set(columns) <= set(df.value.columns)]


def frame(at: AppTest, *columns: str) -> list[dict]:
    """The one dataframe on the page with these columns, as records."""
    (records,) = frames(at, *columns)
    return records


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def set_prompt(at: AppTest, template: int, io: int, s: int, order: int) -> None:
    at.selectbox(key="ioi_template").set_value(template)
    at.selectbox(key="ioi_io").set_value(io)
    at.selectbox(key="ioi_s").set_value(s)
    at.radio(key="ioi_order").set_value(order)
    at.run()
    assert not at.exception, at.exception


def expected_prompt(template: int, io: int, s: int, order: int) -> dict:
    task = ZM.task
    pair = FIXTURES.abc_pair(task, template, io, s, order)
    logits = ZM.model(pair.clean.tokens)
    answer = int(logits[0, task.positions(template)["answer"]].argmax())
    return {"text": " ".join(t for t in task.to_str_tokens(pair.clean.tokens[0])[1:] if t != "PAD"),
            "answer": task.token_names[answer], "logit_diff": f"{float(logit_diff(logits, pair)):.2f}",
            "abc": f"{float(logit_diff(ZM.model(pair.corrupted.tokens), pair)):.2f}",
            "dla": methods.direct_logit_attribution(ZM.model, pair), "pair": pair}


def check_prompt(at: AppTest, prompt: tuple[int, int, int, int]) -> None:
    want = expected_prompt(*prompt)
    assert f"`{want['text']}`" in texts(at.markdown)
    shown = metrics(at)
    assert shown["Model's answer"] == want["answer"] == f"N{prompt[1]}"  # the model answers IO
    assert shown["Logit difference IO - S"] == want["logit_diff"]
    assert shown["On the ABC prompts"] == want["abc"]
    tables = frames(at, "head", "direct effect")  # the roles and the direct effects
    assert len(tables) == 2
    for row in (row for table in tables for row in table):
        assert row["direct effect"] == pytest.approx(want["dla"][row["head"]], abs=1e-2)


def test_the_page_starts_on_the_lessons_model_with_the_truths_circuit():
    at = open_page()
    assert at.selectbox(key="ioi_model").value == FIXTURES.MODEL
    prompt = (ZM.task.templates[0], 0, 1, 0)
    check_prompt(at, prompt)
    roles = [{row["head"]: row["role"] for row in table} for table in frames(at, "head", "role")]
    assert FIXTURES.head_roles(TRUTH) in roles  # the roles table: every head the truth names, with its part
    assert len(plots(at)) == 3  # the truth's circuit, the direct effects, path patching


def test_the_prompt_widgets_rebuild_the_prompt_and_every_number_follows():
    at = open_page()
    for prompt in [(3, 5, 2, 1), (1, 14, 7, 0)]:
        set_prompt(at, *prompt)
        check_prompt(at, prompt)


def test_the_same_name_for_io_and_s_is_refused_in_words():
    at = open_page()
    at.selectbox(key="ioi_s").set_value(0).run()  # IO is N0 by default
    assert not at.exception, at.exception
    assert "pick two different names" in texts(at.warning)
    assert not at.metric and not plots(at)


def test_path_patching_starts_at_the_name_movers_and_follows_the_receivers():
    at = open_page()
    assert at.multiselect(key="ioi_receivers").value == MOVERS
    pair = FIXTURES.abc_pair(ZM.task, ZM.task.templates[0], 0, 1, 0)
    for receivers, (sender, kind) in [(MOVERS, (S_INHIBITION, "q")),
                                      ([S_INHIBITION], (DUPLICATE, next(e.kind for e in TRUTH.edges if
                                                                       e.sender == DUPLICATE and
                                                                       e.receiver == S_INHIBITION)))]:
        at.multiselect(key="ioi_receivers").set_value(receivers).run()
        assert not at.exception, at.exception
        rows = frame(at, "sender", "input", "score")
        assert (rows[0]["sender"], rows[0]["input"]) == (sender, kind) and rows[0]["ground truth"]
        for row in rows:
            want = methods.path_patching(ZM.model, pair, receivers, row["input"])[row["sender"]]
            assert row["score"] == pytest.approx(want, abs=1e-3)
    at.multiselect(key="ioi_receivers").set_value([]).run()
    assert not at.exception and "Pick at least one receiver" in texts(at.info)


def test_the_truth_toggle_hides_the_outlines_and_the_truth_columns():
    at = open_page()
    shown = image_urls(at)
    at.toggle(key="ioi_truth").set_value(False).run()
    assert not at.exception, at.exception
    hidden = image_urls(at)
    assert shown[0] == hidden[0] and shown[1:] != hidden[1:]  # the truth's circuit stays; the outlines go
    assert "ground truth" not in frame(at, "sender", "input", "score")[0]
    assert "Ground truth hidden" in texts(at.caption)


def test_knocking_the_name_movers_out_shows_the_backup_taking_over():
    at = open_page()
    prompt = (ZM.task.templates[0], 0, 1, 0)
    (backup,), (negative,) = FIXTURES.backups(TRUTH), FIXTURES.negative_heads(TRUTH)
    labels = ("Self-repair: logit difference", f"Direct effect of {backup} (backup)",
              f"Direct effect of {negative} (negative name mover)")
    pair = FIXTURES.knockout_pair(ZM.task, *prompt)
    others = [h for h in HEADS if h not in MOVERS]
    clean = self_repair(ZM.model, pair, MOVERS, others, knockout="mean")
    assert [metrics(at)[label] for label in labels] == [
        f"{clean.clean.metric:.2f}", f"{clean.clean[backup]:+.2f}", f"{clean.clean[negative]:+.2f}"]
    assert not any(deltas(at)[label] for label in labels)

    at.checkbox(key="ioi_knockout").set_value(True).run()
    assert not at.exception, at.exception
    for method in ("mean", "resample"):
        at.radio(key="ioi_knockout_method").set_value(method).run()
        assert not at.exception, at.exception
        repair = self_repair(ZM.model, pair, MOVERS, others, knockout=method)
        shown = metrics(at)
        assert [shown[label] for label in labels] == [f"{repair.knocked_out.metric:.2f}",
                                                      f"{repair.knocked_out[backup]:+.2f}",
                                                      f"{repair.knocked_out[negative]:+.2f}"]
        assert deltas(at)[labels[1]] == f"{repair.knocked_out[backup] - repair.clean[backup]:+.2f}"
        if method == "mean":  # the backup takes over, as the truth claims
            assert repair.knocked_out[backup] > repair.clean[backup]
            compensation = self_repair(ZM.model, pair, MOVERS, [backup], knockout="mean").compensation
            assert f"{compensation:.0%} of what the name movers wrote" in texts(at.caption)
        assert len(plots(at)) == 4  # plus the change in direct effects
