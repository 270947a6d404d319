"""The lab's "9 Why methods fail" page: each trap's mechanism, which baselines fell in, and their circuits."""

from pathlib import Path

from page_plots import image_urls, plots
from streamlit.testing.v1 import AppTest

from toylab import zoo
from toylab.lessons import lesson_fixtures

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"
PAGE = "lab_pages/traps.py"


def open_page() -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=60).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def table(at: AppTest) -> dict[str, dict]:
    """The shortfall table, by method."""
    (frame,) = [df.value for df in at.dataframe if "shortfall" in df.value.columns]
    return {row["method"]: row for row in frame.to_dict("records")}


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def test_the_page_starts_on_self_repair_with_the_lessons_methods_and_says_who_fell_in():
    at = open_page()
    assert at.selectbox(key="traps_model").value == "trap-self-repair"
    assert at.multiselect(key="traps_methods").value == list(lesson_fixtures("traps").METHODS)
    roles = zoo.load("trap-self-repair", seed=0).truth.trap.nodes  # which heads play them is drawn from the seed
    assert "backup" in texts(at.markdown)
    assert f"primary: {roles['primary'][0]}; backup: {roles['backup'][0]}" in texts(at.caption)
    rows = table(at)
    assert list(rows) == list(lesson_fixtures("traps").METHODS)
    # Node ablation, either direction, misses the primary; the edge methods see its direct path.
    assert {m for m, row in rows.items() if row["fell in"]} == {"resample-ablation", "denoising"}
    assert all(rows[m]["expected"] == "falls in" for m in ("resample-ablation", "denoising"))
    assert all(rows[m]["expected"] == "remedy" for m in ("eap", "eap-ig", "acdc"))
    assert not plots(at)  # the circuits are drawn on request
    at.button(key="traps_draw").click().run()
    assert not at.exception, at.exception
    assert len(plots(at)) == 6  # the truth, then one circuit per method

    shown = image_urls(at)
    at.toggle(key="traps_truth").set_value(False).run()
    assert not at.exception, at.exception
    hidden = image_urls(at)
    assert len(hidden) == 5 and not set(hidden) & set(shown)  # no truth panel, no outlines
    assert "Ground truth hidden" in texts(at.caption)


def test_the_or_gate_catches_noising_and_the_gradient_but_not_denoising():
    at = open_page()
    at.selectbox(key="traps_model").set_value("trap-or-gate").run()
    assert not at.exception, at.exception
    assert "Paths, each sufficient alone" in texts(at.caption)
    rows = table(at)
    fell = {m for m, row in rows.items() if row["fell in"]}
    assert {"resample-ablation", "eap", "acdc"} <= fell and not fell & {"denoising", "eap-ig"}


def test_too_few_methods_are_explained_not_scored():
    at = open_page()
    at.multiselect(key="traps_methods").set_value(["eap"]).run()
    assert not at.exception, at.exception
    assert "pick two or more" in texts(at.info)
    assert table(at)["eap"]["shortfall"] == 0.0  # against itself
    at.multiselect(key="traps_methods").set_value([]).run()
    assert not at.exception and "Pick at least one method" in texts(at.info)
    assert not at.dataframe and not plots(at)


def test_the_distributed_trap_shows_where_its_variables_live():
    at = open_page()
    at.selectbox(key="traps_model").set_value("trap-distributed").run()
    assert not at.exception, at.exception
    (frame,) = [df.value for df in at.dataframe if "interchanged" in df.value.columns]
    rows = {row["interchanged"]: row for row in frame.to_dict("records")}
    truth = rows.pop("the truth's direction of the variable")
    whole = rows.pop("whole output")
    assert truth["IIA of a"] > 0.95 and truth["IIA of b"] > 0.95
    assert whole["IIA of a"] < 0.7 and whole["IIA of b"] < 0.7  # it swaps both bits: right where the other agrees
    assert rows and all(row["IIA of a"] < 0.8 for row in rows.values())  # no channel holds a alone
    assert "featurisers" in texts(at.caption)
