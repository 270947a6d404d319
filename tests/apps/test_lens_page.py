"""The lab's "14 Logit lens and DLA" page: the logit lens of a prompt, its direct logit attribution and each head's
share by source position, each number checked against toylab.methods and the lesson's fixtures; the truth's stage
and components outlined, and the LayerNorm toggle's terms that do not add up."""

import json
import math
from pathlib import Path

import pyarrow
import pytest
import torch
from streamlit.testing.v1 import AppTest

from toylab import methods, zoo
from toylab.lessons import lesson_fixtures
from toylab.tasks import logit_diff

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"
PAGE = "lab_pages/lens.py"
FIXTURES = lesson_fixtures("lens")


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


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def charts(at: AppTest) -> list[list[dict]]:
    """Each Altair chart's cells: the records of its first layer. Where every layer shares them, Altair lifts them
    to the chart and Streamlit sends them as an Arrow table."""
    out = []
    for chart in at.get("vega_lite_chart"):
        layer = json.loads(chart.proto.spec)["layer"][0]
        if "data" in layer:
            out.append(layer["data"]["values"])
        else:
            records = pyarrow.ipc.open_stream(chart.proto.data.data).read_all().to_pylist()
            out.append([{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in records])
    return out


def grid(records: list[dict]) -> tuple[list[str], list[str], dict[tuple[str, str], dict]]:
    rows = list(dict.fromkeys(r["row"] for r in records))
    cols = list(dict.fromkeys(r["col"] for r in records))
    return rows, cols, {(r["row"], r["col"]): r for r in records}


def set_widgets(at: AppTest, **values) -> None:
    for key, value in values.items():
        widget = {"lens_model": at.selectbox, "lens_prompt": at.number_input}.get(key, at.toggle)(key=key)
        widget.set_value(value)
    at.run()
    assert not at.exception, at.exception


def check_numbers(at: AppTest, name: str, prompt_seed: int, ln: bool) -> None:
    """The metrics, the lens map and the source map are methods.logit_lens's, direct_logit_attribution's and
    fixtures.head_sources's on the page's prompt."""
    zm = zoo.load(name)
    model = FIXTURES.layernorm_model(name) if ln else zm.model
    pair = zm.task.counterfactual(1, seed=prompt_seed)
    dla = methods.direct_logit_attribution(model, pair)
    many = methods.direct_logit_attribution(model, zm.task.counterfactual(FIXTURES.N_PAIRS, seed=FIXTURES.LENS_SEED))
    shown = metrics(at)
    assert shown["Logit difference"] == f"{float(logit_diff(model(pair.clean.tokens), pair)):.3f}"
    assert shown["Terms + offset"] == f"{float(dla.total.sum()) + dla.offset:.3f}"
    assert shown[f"Over {FIXTURES.N_PAIRS} pairs"] == f"{many.metric:.3f}"
    lens_cells, source_cells = charts(at)
    lens = methods.logit_lens(model, pair.clean)
    rows, cols, cells = grid(lens_cells)
    assert rows == lens.stages and len(cols) == pair.clean.tokens.shape[1]
    for (i, stage), (j, col) in ((a, b) for a in enumerate(rows) for b in enumerate(cols)):
        want = float(lens.position_logprob[i, j])
        got = cells[(stage, col)]["value"]
        assert (got is None) if math.isnan(want) else got == pytest.approx(want, abs=1e-4)
    heads, _, cells = grid(source_cells)
    for head in heads:
        layer, index = int(head[1]), int(head[3:])
        want = FIXTURES.head_sources(model, pair, layer, index)[0]
        assert [cells[(head, col)]["value"] for col in cols] == pytest.approx(want.tolist(), abs=1e-4)
        assert sum(cells[(head, col)]["value"] for col in cols) == pytest.approx(dla[head], abs=1e-3)


def test_the_page_starts_on_the_lessons_model_with_the_truth_outlined():
    at = open_page()
    assert at.selectbox(key="lens_model").value == FIXTURES.MODEL
    check_numbers(at, FIXTURES.MODEL, 0, ln=False)
    zm = zoo.load(FIXTURES.MODEL)
    lens_cells, source_cells = charts(at)
    stage = FIXTURES.truth_stage(zm)
    scored = zm.task.counterfactual(1, seed=0).clean.scored[0]
    outlined = {(r["row"], int(r["col"].split(":")[0])) for r in lens_cells if r["truth"]}
    assert outlined == {(stage, pos) for pos in torch.nonzero(scored).flatten().tolist()}
    assert {r["row"] for r in source_cells if r["truth"]} == {h for h in zm.truth.nodes if h.startswith("L")}
    table = next(df.value for df in at.dataframe if "accuracy" in df.value.columns)
    lens = methods.logit_lens(zm.model, zm.task.sample(FIXTURES.N_PROMPTS, seed=FIXTURES.LENS_SEED))
    assert list(table["stage"]) == lens.stages
    assert list(table["accuracy"]) == pytest.approx(lens.accuracy.tolist(), abs=1e-3)
    assert list(table["the truth's writers have written"]) == [s == stage for s in lens.stages]
    assert len(at.get("image")) == 1  # the DLA bars
    assert "Outlined: the truth's components ['L0H2', 'L1H1']" in texts(at.caption)

    set_widgets(at, lens_truth=False)
    lens_cells, source_cells = charts(at)
    assert not any(r["truth"] for r in lens_cells + source_cells)
    assert texts(at.caption).count("Ground truth hidden") == 3


def test_inserting_layernorm_keeps_the_terms_exact_and_shows_the_own_scale_sum_that_is_not():
    at = open_page()
    set_widgets(at, lens_ln=True, lens_prompt=3)
    check_numbers(at, FIXTURES.MODEL, 3, ln=True)
    shown = metrics(at)
    assert shown["Terms + offset"] == shown["Logit difference"]
    assert abs(float(shown["Each term's own scale"]) - float(shown["Logit difference"])) > 0.05
    assert "no certificate of its own" in texts(at.info)


def test_other_models_and_prompts():
    """A model with MLPs, one with four layers and a negative name mover, and one whose truth's writer is an MLP."""
    at = open_page()
    for name in ("factual-recall", "ioi-siit", "modadd-tiny"):
        set_widgets(at, lens_model=name, lens_prompt=2)
        check_numbers(at, name, 2, ln=False)
        lens_cells, _ = charts(at)
        assert {r["row"] for r in lens_cells if r["truth"]} == {FIXTURES.truth_stage(zoo.load(name))}
