"""The lab's "17 Build the transformer" page: one forward pass of a zoo model, every hook's tensor with the step
that computes it recomputed (bitwise) from the hooks before, one head's scores and pattern (an Altair chart), each
number checked against toylab's run_with_cache on the same sampled prompt."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from toylab import zoo
from toylab.lessons import lesson_fixtures

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"
PAGE = "lab_pages/build.py"
FIXTURES = lesson_fixtures("build")


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def open_page() -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=120).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def frame(at: AppTest, *columns: str) -> list[dict]:
    """The one dataframe on the page with these columns, as records."""
    (records,) = [df.value.to_dict("records") for df in at.dataframe if set(columns) <= set(df.value.columns)]
    return records


def toylab_cache(name: str, sample_seed: int = 0):
    zm = zoo.load(name)
    tokens = zm.task.sample(1, seed=sample_seed).tokens
    logits, cache = zm.model.run_with_cache(tokens)
    return zm, tokens, logits, cache


def chart_cells(at: AppTest) -> dict[tuple[int, int], tuple[float, float]]:
    """The Altair chart's cells: (query, key) -> (score, probability), NaN where the mask hides the key."""
    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert len(spec["hconcat"]) == 2  # scores, pattern
    rows = convert_arrow_bytes_to_pandas_df(chart.proto.data.data).to_dict("records")
    return {(row["query_pos"], row["key_pos"]): (row["score"], row["pattern"]) for row in rows}


def check_head(at: AppTest, cache, layer: int, head: int, query: int) -> None:
    scores = cache["attn_scores", layer][0, head]  # [query_pos, key_pos], -inf where masked
    pattern = cache["pattern", layer][0, head]
    cells = chart_cells(at)
    n = scores.shape[0]
    assert set(cells) == {(q, k) for q in range(n) for k in range(n)}
    for (q, k), (score, prob) in cells.items():
        assert (math.isnan(score) if k > q else score == pytest.approx(float(scores[q, k]), abs=1e-6)), (q, k)
        assert prob == pytest.approx(float(pattern[q, k]), abs=1e-6)
    rows = frame(at, "key", "q·k", "hook_pattern")
    assert len(rows) == n
    for key, row in enumerate(rows):
        assert row["hook_pattern"] == pytest.approx(float(pattern[query, key]), abs=1e-6)
        assert row["hook_attn_scores"] == (-math.inf if key > query else pytest.approx(float(scores[query, key]),
                                                                                       abs=1e-6))
        q = cache["q", layer][0, query, head]
        k = cache["k", layer][0, key, head]
        assert row["q·k"] == pytest.approx(float(q @ k), abs=1e-5)


def test_the_page_walks_a_forward_pass_hook_by_hook_bitwise_and_follows_its_widgets():
    """One session (AppTest's first run loads the lab): the defaults, then each widget, then a model with MLPs."""
    at = open_page()
    assert at.selectbox(key="build_model").value == FIXTURES.ATTN_ONLY
    zm, tokens, logits, cache = toylab_cache(FIXTURES.ATTN_ONLY)
    rows = frame(at, "hook", "shape", "computed as", "max |recomputed - hook|")
    hooks = [row["hook"] for row in rows]
    in_block = [h for h in cache if h.startswith("blocks.0.") and not h.endswith("_input")]
    assert hooks == ["hook_embed", "hook_pos_embed", *in_block, "logits"]
    for row in rows:
        want = logits if row["hook"] == "logits" else cache[row["hook"]]
        assert row["shape"] == str(list(want.shape)), row
        assert row["max |recomputed - hook|"] == 0.0, row  # the lesson's arithmetic reproduces every hook exactly
        assert row["computed as"], row
    assert any("bitwise identical" in c.value for c in at.caption)
    last = tokens.shape[1] - 1
    assert at.selectbox(key="build_pos").value == last
    check_head(at, cache, 0, 0, last)
    tensor = frame(at, "part")  # the hook's tensor at the query position: hook_z by default, a row per head
    assert at.selectbox(key="build_hook").value == "blocks.0.attn.hook_z"
    np.testing.assert_allclose([[row[str(i)] for i in range(cache["z", 0].shape[-1])] for row in tensor],
                               cache["z", 0][0, last].numpy(), atol=1e-6)
    roles = {a.head: a.pattern for a in zm.truth.attention}
    assert any(f"a **{roles['L0H0']}** head" in c.value for c in at.caption)
    layer_head_query_and_hook_follow_the_widgets(at)
    a_model_with_mlps_shows_and_recomputes_them(at)


def layer_head_query_and_hook_follow_the_widgets(at: AppTest) -> None:
    at.selectbox(key="build_layer").set_value(1).run()
    at.selectbox(key="build_head").set_value(1).run()
    at.selectbox(key="build_pos").set_value(5).run()
    at.selectbox(key="build_hook").set_value("blocks.1.attn.hook_pattern").run()
    assert not at.exception, at.exception
    _, _, _, cache = toylab_cache(FIXTURES.ATTN_ONLY)
    check_head(at, cache, 1, 1, 5)
    assert all(row["hook"].startswith(("hook_", "blocks.1.", "logits"))
               for row in frame(at, "hook", "max |recomputed - hook|"))
    tensor = frame(at, "part")  # each head's row of query 5, over keys 0 .. 5
    np.testing.assert_allclose([[row[str(i)] for i in range(6)] for row in tensor],
                               cache["pattern", 1][0, :, 5, :6].numpy(), atol=1e-6)
    before = chart_cells(at)
    at.number_input(key="build_sample").set_value(3).run()  # another prompt
    _, _, _, cache = toylab_cache(FIXTURES.ATTN_ONLY, 3)
    assert chart_cells(at) != before
    check_head(at, cache, 1, 1, 5)


def a_model_with_mlps_shows_and_recomputes_them(at: AppTest) -> None:
    at.number_input(key="build_sample").set_value(0).run()
    at.selectbox(key="build_model").set_value(FIXTURES.WITH_MLP).run()
    assert not at.exception, at.exception
    _, tokens, _, cache = toylab_cache(FIXTURES.WITH_MLP)
    last = tokens.shape[1] - 1
    assert at.selectbox(key="build_pos").options == [f"{i}:{t}" for i, t in
                                                     enumerate(zoo.load(FIXTURES.WITH_MLP).task.to_str_tokens(tokens[0]))]
    at.selectbox(key="build_layer").set_value(0).run()
    at.selectbox(key="build_head").set_value(0).run()
    at.selectbox(key="build_pos").set_value(last).run()
    assert not at.exception, at.exception
    rows = frame(at, "hook", "max |recomputed - hook|")
    hooks = [row["hook"] for row in rows]
    assert {"blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out"} <= set(hooks)
    assert all(row["max |recomputed - hook|"] == 0.0 for row in rows)
    assert {m.label: m.value for m in at.metric}["d_mlp"] == "64"
    check_head(at, cache, 0, 0, last)
