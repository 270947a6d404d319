"""The lab's "16 Attribution patching" page: every node or edge's attribution score against its real patch, checked
against toylab.methods (eap, eap_ig, edge_patching, ablation_scores) through the lesson's fixtures; the truth's
components coloured, the steps slider switching to EAP-IG, and the sweep of EAP-IG's steps."""

import json
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from toylab import methods, zoo
from toylab.lessons import lesson_fixtures

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"
PAGE = "lab_pages/attribution_patching.py"
FIXTURES = lesson_fixtures("atp")


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


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


def points(at: AppTest) -> dict[str, dict]:
    """The chart's points by component: what the browser is sent."""
    (chart,) = at.get("vega_lite_chart")
    _, layer = json.loads(chart.proto.spec)["layer"]
    return {row["component"]: row for row in layer["data"]["values"]}


def table(at: AppTest) -> list[dict]:
    (frame,) = [df.value for df in at.dataframe if "estimate" in df.value.columns]
    return frame.to_dict("records")


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def expect(at: AppTest, name: str, level: str, steps: int, truth: set[str]) -> None:
    """The chart and the table hold the fixtures' estimate and real patch of every component, the truth's coloured."""
    zm = zoo.load(name)
    pair = FIXTURES.pair(zm)
    estimate = {str(k): v for k, v in FIXTURES.estimates(zm.model, pair, level, steps).items()}
    real = {str(k): v for k, v in FIXTURES.real_patch(zm.model, pair, level).items()}
    shown = points(at)
    assert set(shown) == set(real)
    for component, row in shown.items():
        assert row["estimate"] == pytest.approx(estimate[component], abs=1e-6), component
        assert row["real"] == pytest.approx(real[component], abs=1e-6), component
    assert {c for c, row in shown.items() if row["in truth"] == "ground truth"} == truth
    rows = table(at)
    assert [row["component"] for row in rows] == sorted(real, key=lambda c: -abs(estimate[c] - real[c]))
    assert metrics(at)["Correlation"] == f"{FIXTURES.correlation(estimate, real):+.3f}"


def test_the_page_starts_on_the_lessons_model_with_eap_against_edge_patching_then_nodes():
    at = open_page()
    assert at.selectbox(key="atp_model").value == FIXTURES.MODEL
    assert at.radio(key="atp_level").value == "edges" and at.select_slider(key="atp_steps").value == 0
    zm = zoo.load(FIXTURES.MODEL)
    truth = {str(e) for e in zm.truth.edges}
    expect(at, FIXTURES.MODEL, "edges", 0, truth)
    pair = FIXTURES.pair(zm)
    eap, real = methods.eap(zm.model, pair), methods.edge_patching(zm.model, pair)
    missed = FIXTURES.understated(eap.scores, real.scores, zm.truth.edges)
    assert metrics(at)["Truth components understated"] == f"{len(missed)} of {len(truth)}"
    assert all(str(e) in texts(at.caption) for e in missed)
    assert not at.get("image")  # the sweep waits for its toggle

    at.toggle(key="atp_truth").set_value(False)
    run(at)
    assert {row["in truth"] for row in points(at).values()} == {"not in the truth"}
    assert "truth" not in table(at)[0] and "Truth components understated" not in metrics(at)
    assert "Ground truth hidden" in texts(at.caption)

    at.toggle(key="atp_truth").set_value(True)  # nodes: attribution patching against resample ablation
    at.selectbox(key="atp_model").set_value("factual-recall")
    at.radio(key="atp_level").set_value("nodes")
    run(at)
    recall = zoo.load("factual-recall")
    expect(at, "factual-recall", "nodes", 0, {n for n in recall.truth.nodes if n not in ("embed", "logits")})
    pair = FIXTURES.pair(recall)
    ablation = methods.ablation_scores(recall.model, pair, method="resample")
    shown, scale = points(at), FIXTURES.estimate_scale(recall.model, pair)
    for component, effect in zip(ablation.components, ablation.effect.tolist()):
        assert shown[component]["real"] == pytest.approx(effect / scale, abs=1e-5)


def test_the_steps_slider_turns_the_trap_into_eap_ig_and_the_sweep_draws_it():
    at = open_page()
    at.selectbox(key="atp_model").set_value(FIXTURES.TRAP)
    run(at)
    trap = zoo.load(FIXTURES.TRAP)
    truth = {str(e) for e in trap.truth.edges}
    expect(at, FIXTURES.TRAP, "edges", 0, truth)
    assert metrics(at)["Truth components understated"] == f"2 of {len(truth)}"  # the query edge and the mover's input
    at.select_slider(key="atp_steps").set_value(16)
    at.toggle(key="atp_sweep").set_value(True)
    run(at)
    expect(at, FIXTURES.TRAP, "edges", 16, truth)
    assert metrics(at)["Truth components understated"] == f"0 of {len(truth)}"
    assert len(at.get("image")) == 1 and "Dashed: patched for real" in texts(at.caption)

