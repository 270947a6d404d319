"""The lab's "11 Steering" page: a model, a direction source and a strength; success, preservation and KL at that
strength and the sweep, each number checked against toylab.methods.steering on the same prompts."""

from pathlib import Path

import pytest
import torch
from page_plots import image_urls
from streamlit.testing.v1 import AppTest

from toylab import methods, viz, zoo
from toylab.lessons import lesson_fixtures

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"
PAGE = "lab_pages/steering.py"
FIXTURES = lesson_fixtures("steering")
GRADED_SEED = 2  # the page fits on seed 0, tunes on 1 and grades on 2, as steer_and_score(seed=0)


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


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)




def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def expected(name: str, source: str, alpha: float, seed: int | None = None) -> methods.SteeringScore:
    zm = zoo.load(name, seed=seed)
    target = FIXTURES.target(zm)
    steer = methods.fit_steer(zm.model, target, source, n=FIXTURES.n_fit(name), seed=0, sae_steps=FIXTURES.SAE_STEPS)
    return methods.score_steer(zm.model, target, steer, target.sample(FIXTURES.N, GRADED_SEED), alpha)


def check_metrics(at: AppTest, name: str, source: str, alpha: float) -> None:
    want = expected(name, source, alpha)
    assert metrics(at) == {"Success": fmt(want.success), "Preservation": fmt(want.preservation), "KL": fmt(want.kl)}


def test_the_page_starts_on_the_lessons_model_and_grades_the_steer_as_score_steer_does():
    at = open_page()
    assert at.selectbox(key="steer_model").value == FIXTURES.MODEL
    assert at.selectbox(key="steer_model").options == list(FIXTURES.MODELS)
    assert at.radio(key="steer_source").value == "diff-in-means"
    assert at.slider(key="steer_alpha_add").value == 1.0
    check_metrics(at, FIXTURES.MODEL, "diff-in-means", 1.0)
    assert "relation := r1" in texts(at.markdown)
    assert len(image_urls(at)) == 1  # the sweep, with the truth's ceiling


def test_the_examples_are_the_algorithms_answer_key():
    at = open_page()
    (table,) = [df.value for df in at.dataframe if "algorithm's answer" in df.value.columns]
    zm = zoo.load(FIXTURES.MODEL)
    target = FIXTURES.target(zm)
    batch = target.sample(FIXTURES.N, GRADED_SEED)
    rows = table.to_dict("records")
    want = target.expected(batch)[:len(rows), zm.task.positions["answer"]]
    names = zm.task.output_names
    assert [row["algorithm's answer"] for row in rows] == [names[int(a)] for a in want]
    assert [row["should change"] for row in rows] == [int(r) != 1 for r in zm.task.variables(batch.tokens[:len(rows)])
                                                      ["relation"]]
    assert all(row["right"] == (row["steered answer"] == row["algorithm's answer"]) for row in rows)


def test_the_strength_slider_moves_every_number_and_the_mark_on_the_sweep():
    at = open_page()
    before = image_urls(at)
    for alpha in (0.5, 4.0):
        at.slider(key="steer_alpha_add").set_value(alpha).run()
        assert not at.exception, at.exception
        check_metrics(at, FIXTURES.MODEL, "diff-in-means", alpha)
        assert image_urls(at) != before
    at.slider(key="steer_alpha_add").set_value(0.0).run()  # no steer: nothing changes, nothing is right
    assert not at.exception, at.exception
    assert metrics(at)["Success"] == "0.000" and metrics(at)["Preservation"] == "1.000"


def test_a_setting_source_gets_its_own_slider_and_reaches_the_ceiling():
    at = open_page()
    at.radio(key="steer_source").set_value("truth").run()
    assert not at.exception, at.exception
    assert [s.key for s in at.slider] == ["steer_alpha_set"] and at.slider(key="steer_alpha_set").value == 1.0
    check_metrics(at, FIXTURES.MODEL, "truth", 1.0)
    assert metrics(at)["Success"] == "1.000"
    assert "a setting steer at `blocks.0.attn.hook_z[2][head 1]`" in texts(at.caption)


@pytest.mark.parametrize("name", [n for n in FIXTURES.MODELS if n != FIXTURES.MODEL])
def test_the_other_models_are_graded_by_their_own_algorithm(name):
    at = open_page()
    at.selectbox(key="steer_model").set_value(name).run()
    assert not at.exception, at.exception
    check_metrics(at, name, "diff-in-means", 1.0)
    target = FIXTURES.target(zoo.load(name))
    assert f"`{target.name}`" in texts(at.markdown)
    if name == "modadd-113":  # every answer changes: preservation and KL are n/a, and the sweep says so
        assert metrics(at)["Preservation"] == "n/a" and metrics(at)["KL"] == "n/a"


def test_the_truth_toggle_takes_the_ceiling_off_the_sweep():
    at = open_page()
    shown = image_urls(at)
    at.toggle(key="steer_truth").set_value(False).run()
    assert not at.exception, at.exception
    assert image_urls(at) != shown
    assert "ground-truth colour" not in texts(at.caption)


def test_the_sweep_plot_draws_the_truth_as_the_ground_truth():
    """The figure the page shows, built from the same sweeps: the ceiling carries the truth's outline gid."""
    zm = zoo.load(FIXTURES.MODEL)
    target = FIXTURES.target(zm)
    results = {s: methods.steer_and_score(zm.model, target, s, n_fit=FIXTURES.n_fit(FIXTURES.MODEL), n=FIXTURES.N)
               for s in ("diff-in-means", "truth")}
    fig = viz.steering_curves(results, title=target.name, marks={"add": 1.0})
    assert len(viz.truth_outlines(fig)) == 2  # success and preservation
