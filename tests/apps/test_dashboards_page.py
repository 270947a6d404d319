"""The lab's "Feature dashboards" page: the dashboard of the feature picked by index or by prev / next, its figures
those of methods.feature_dashboard on the page's data, the table of every feature sorted by truth match, and the
SAE and transcoder sources trained on the fly."""

from html import escape
from pathlib import Path

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from toylab import methods, zoo
from toylab.methods import Neuron

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"
PAGE = "lab_pages/dashboards.py"
ZM = zoo.load("conjunctions")  # the page's first model: its truth declares features where MLP0 writes


@pytest.fixture(scope="module")
def cache():
    """The page's data: methods.dashboard_activations as the page builds it."""
    from toylab.methods.dashboard import N_PROMPTS, SEED

    return methods.dashboard_activations(ZM.model, ZM.task, n_prompts=N_PROMPTS, seed=SEED)


def open_page() -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=120).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def html(at: AppTest) -> str:
    return at.html[0].proto.body  # the top activating inputs


def chart_data(at: AppTest) -> list[list[dict]]:
    """The rows of each Altair chart on the page (Streamlit sends a chart's inline data as Arrow)."""
    return [pa.ipc.open_stream(c.proto.data.data).read_all().to_pylist() for c in at.get("vega_lite_chart")]


def check_neuron(at: AppTest, cache, index: int) -> None:
    d = methods.feature_dashboard(ZM.model, cache, Neuron(0, index), truth=ZM.truth)
    assert at.number_input(key="dash_index").value == index
    assert at.header[0].value == f"MLP0N{index}"
    shown = metrics(at)
    assert shown["Max activation"] == f"{d.max_activation:.3g}"
    assert shown["Density"] == f"{100 * d.density:.2f}%"
    assert shown["Truth match"] == d.truth_match.name and shown["Cosine"] == f"{d.truth_match.cosine:.3f}"
    body = html(at)
    assert body.count("<tr>") == 1 + len(d.top)
    assert f">{d.top[0].max_activation:.3g}</td>" in body
    assert all(f">{escape(t)}</span>" in body for t in d.top[0].tokens)
    histogram, logits = chart_data(at)
    assert [row["count"] for row in histogram] == list(d.hist_counts)
    assert [row["output"] for row in logits] == [n for n, _ in d.promoted] + [n for n, _ in d.suppressed]


def test_the_dashboard_follows_the_index_and_the_prev_next_buttons(cache):
    at = open_page()
    assert at.title[0].value == "Feature dashboards"
    assert at.selectbox(key="dash_model").value == "conjunctions" and at.radio(key="dash_source").value == "MLP neurons"
    check_neuron(at, cache, 0)
    first = html(at)
    at.number_input(key="dash_index").set_value(5).run()
    assert not at.exception, at.exception
    check_neuron(at, cache, 5)
    assert html(at) != first
    at.button(key="dash_next").click().run()
    check_neuron(at, cache, 6)
    at.button(key="dash_prev").click().run()
    at.button(key="dash_prev").click().run()
    check_neuron(at, cache, 4)

    # every neuron of MLP0, sorted by the cosine of its truth match; with the truth hidden, no truth column
    table = methods.feature_table(ZM.model, cache, Neuron(0, 0), truth=ZM.truth).rows()
    (shown,) = [df.value.to_dict("records") for df in at.dataframe]
    assert [(r["index"], r["truth match"]) for r in shown] == [(r["index"], r["truth match"]) for r in table]
    assert [r["cosine"] for r in shown] == sorted((r["cosine"] for r in shown), reverse=True)
    at.toggle(key="dash_truth").set_value(False).run()
    assert not at.exception, at.exception
    assert metrics(at)["Truth match"] == metrics(at)["Cosine"] == "n/a" and "truth match" not in at.dataframe[0].value.columns
    assert any("Ground truth hidden" in c.value for c in at.caption)


def test_sae_and_transcoder_sources_are_trained_on_the_fly_and_shown(cache):
    at = open_page()
    at.number_input(key="dash_index").set_value(7).run()
    at.session_state["dash_steps"] = 300  # the fewest steps, before the steps box shows (it has 1000 by default)
    at.radio(key="dash_source").set_value("transcoder features").run()
    assert not at.exception, at.exception
    assert at.header[0].value == "transcoder L0 F7" and len(at.dataframe[0].value) == 2 * ZM.model.cfg.d_model
    at.session_state["dash_hook"] = "blocks.0.mlp.hook_post"  # d_mlp wide: no direct logit effect
    at.radio(key="dash_source").set_value("SAE latents").run()
    assert not at.exception, at.exception
    assert at.header[0].value == "SAE latent 7 @ blocks.0.mlp.hook_post"
    assert any("Logit effects n/a" in c.value for c in at.caption)
    assert len(at.get("vega_lite_chart")) == 1  # the histogram only
