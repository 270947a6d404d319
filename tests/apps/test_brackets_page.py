"""The lab's "15 Balanced brackets" page: a sampled or typed string, the algorithm's and the model's answers, the
flags and attention on it, and the ablations of both failures, each number checked against the task, the model and
lesson 15's fixtures. Where the truth is outlined comes from the truth."""

import time
from functools import cache
from pathlib import Path

import pytest
import torch
from page_plots import image_urls, plots
from streamlit.testing.v1 import AppTest

from toylab import zoo
from toylab.lessons import lesson_fixtures

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"
PAGE = "lab_pages/brackets.py"
FIXTURES = lesson_fixtures("brackets")
ZM = zoo.load(FIXTURES.MODEL)
DIPS = "(())" + ")(" + "()" * 9  # ends at zero, below it at position 5


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@cache
def readout():
    """The page's flag readout, fitted as it fits it."""
    return FIXTURES.fit_flag_readout(ZM.model, ZM.task)


def open_page() -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=120).run()
    start = time.perf_counter()
    at.switch_page(PAGE).run()
    print(f"{PAGE}: first run {time.perf_counter() - start:.2f} s")
    assert not at.exception, at.exception
    return at


def run(at: AppTest) -> None:
    at.run()
    assert not at.exception, at.exception


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)




def failure_rows(at: AppTest) -> list[dict]:
    (records,) = [df.value.to_dict("records") for df in at.dataframe if "component" in df.value.columns]
    return records


def check_string(at: AppTest, string: str) -> None:
    """The three metrics are the algorithm's answer, the model's and its P(balanced) on ``string``; the caption under
    the gathering head gives the attention its last position pays to the positions below zero."""
    task = ZM.task
    tokens = task.make_tokens(string)
    logits, cache = ZM.model.run_with_cache(tokens)
    v = task.variables(tokens)
    assert metrics(at) == {"Algorithm says": task.output_names[int(v["answer"][0])],
                           "Model says": task.output_names[int(logits[0, -1].argmax())],
                           "P(balanced)": f"{float(logits[0, -1].softmax(-1)[1]):.3f}"}
    gather = int(FIXTURES.truth_sites(ZM.truth)["any_negative"][3:])
    attention = cache["pattern", 1][0, gather, -1]  # [pos]: the gathering head's last query
    share = float((attention * v["negative"][0]).sum())
    assert f"{share:.0%} of it on positions below zero" in texts(at.caption)
    (rows,) = [df.value.to_dict("records") for df in at.dataframe if "bracket" in df.value.columns]
    flags = FIXTURES.flag_readout(ZM.model, readout(), tokens)[0]
    assert [(r["bracket"], r["balance"], r["below zero"]) for r in rows] == \
        list(zip(task.to_str_tokens(tokens[0]), v["balance"][0].tolist(), v["negative"][0].tolist()))
    assert [r["flag"] for r in rows] == pytest.approx(flags.tolist(), abs=1e-3)
    assert [r[f"L1H{gather} attn"] for r in rows] == pytest.approx(attention.tolist(), abs=1e-3)


def test_the_page_starts_on_a_sampled_string_with_the_truths_heads_and_the_failures_measured():
    at = open_page()
    assert at.selectbox(key="brackets_model").value == FIXTURES.MODEL
    assert at.radio(key="brackets_input").value == "sample"
    string = ZM.task.to_strings(ZM.task.sample(1, seed=0).tokens)[0]
    assert [c.value for c in at.code] == [string]
    check_string(at, string)
    sites = FIXTURES.truth_sites(ZM.truth)
    assert [f"L{layer}H{at.selectbox(key=key).value}" for layer, key in
            ((0, "brackets_count_head"), (1, "brackets_gather_head"))] == [sites["balance"], sites["any_negative"]]
    assert len(plots(at)) == 3  # the trace, the counting head's pattern, the ablations
    pairs = FIXTURES.failure_pairs(ZM.task, FIXTURES.N_PAIRS, seed=0)
    truth = FIXTURES.truth_failures(ZM.truth, ZM.task, pairs)
    rows = failure_rows(at)
    assert [row["component"] for row in rows] == FIXTURES.components(ZM.model.cfg)
    for kind in FIXTURES.KINDS:
        scores = FIXTURES.destroyed(ZM.model, pairs[kind])
        assert [row[kind] for row in rows] == pytest.approx([scores[c] for c in scores], abs=1e-3)
        assert {row["component"] for row in rows if row[f"truth: {kind}"]} == truth[kind]

    at.selectbox(key="brackets_group").set_value("dips_once")
    at.number_input(key="brackets_sample_seed").set_value(3)
    run(at)
    string = ZM.task.to_strings(ZM.task.sample(1, seed=3, group="dips_once").tokens)[0]
    assert [c.value for c in at.code] == [string]
    check_string(at, string)
    assert metrics(at)["Algorithm says"] == "unbalanced"


def test_a_typed_string_is_classified_hiding_the_truth_removes_its_outlines_and_bad_strings_are_refused():
    at = open_page()
    at.radio(key="brackets_input").set_value("type")
    run(at)
    assert at.text_input(key="brackets_text").value == DIPS
    check_string(at, DIPS)
    assert "(1 of them)" in texts(at.caption)  # the one position below zero
    outlined = image_urls(at)
    assert "Outlined: the components the truth predicts" in texts(at.caption)
    declares = len(FIXTURES.truth_flag_directions(ZM.truth)) > 0  # flag features in the truth: the caption compares
    assert ("cosine" in texts(at.caption)) == declares

    at.toggle(key="brackets_truth").set_value(False)
    run(at)
    hidden = image_urls(at)
    assert hidden[1] == outlined[1]  # the counting head's pattern has no truth drawn on it
    assert [hidden[i] != outlined[i] for i in (0, 2)] == [True] * 2  # the flags, the ablations
    assert not any(key.startswith("truth") for key in failure_rows(at)[0])
    assert "Ground truth hidden" in texts(at.caption) and "cosine" not in texts(at.caption)

    string = " ".join("()" * 12)  # spaces are ignored
    at.text_input(key="brackets_text").set_value(string)
    run(at)
    check_string(at, "()" * 12)
    for bad, says in (("(", "you typed 1 characters"), ("(]" + "()" * 11, "including ']'")):
        at.text_input(key="brackets_text").set_value(bad)
        run(at)
        assert says in texts(at.warning)
        assert not at.metric and not plots(at)
