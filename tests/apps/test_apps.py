"""The Streamlit lab, run headless with AppTest: every page renders, and widgets change content."""

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from toylab import zoo

APPS = Path(__file__).resolve().parents[2] / "apps"
HOME = APPS / "Home.py"


def image_urls(at: AppTest) -> list[str]:
    """Media URLs of the images on the page; a URL is a hash of the PNG, so it changes with the plot."""
    return [image.proto.imgs[0].url for image in at.get("image")]


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def frame_with(at: AppTest, column: str):
    """The one dataframe on the page that has ``column``."""
    frames = [df.value for df in at.dataframe if column in df.value.columns]
    assert len(frames) == 1, f"{len(frames)} dataframes with a {column!r} column"
    return frames[0]


def open_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=30).run()
    assert not at.exception, at.exception
    if page is not None:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


def test_home_lists_the_zoo_with_provenance_and_links_every_lesson(lessons):
    at = open_page()
    assert texts(at.title) == ["toylab: the lab"]
    table = frame_with(at, "truth provenance")
    assert list(table["name"]) == zoo.names()
    assert dict(zip(table["name"], table["truth provenance"])) == {
        n: zoo.recipe(n).provenance or "-" for n in zoo.names()}
    links = [link.proto.label for link in at.get("page_link")]
    assert links == [title for _, title in lessons]


def test_every_lesson_page_renders(lesson):
    path, title = lesson
    assert (APPS / path).is_file()
    at = open_page()
    start = time.perf_counter()
    at.switch_page(path).run()
    first = time.perf_counter() - start
    assert not at.exception, at.exception
    assert texts(at.title) == [title]
    start = time.perf_counter()
    at.run()
    rerun = time.perf_counter() - start
    print(f"{path}: first run {first:.2f} s, rerun {rerun:.2f} s")
    assert rerun < 5.0, f"{path} takes {rerun:.1f} s to rerun with warm caches"


def test_tour_card_follows_the_model_and_the_prompt_follows_the_seed():
    at = open_page("pages/tour.py")
    assert any("induction-siit, seed 0" in h for h in texts(at.header))
    assert "enforced" in " ".join(texts(at.markdown))
    hooks = frame_with(at, "hook")
    assert "blocks.1.attn.hook_pattern" in list(hooks["hook"])
    prompt = list(frame_with(at, "0").iloc[0])
    assert prompt[:2] == ["token", "BOS"]

    at.selectbox(key="tour_seed").set_value(2).run()
    assert any("induction-siit, seed 2" in h for h in texts(at.header))

    at.number_input(key="tour_sample").set_value(7).run()
    assert list(frame_with(at, "0").iloc[0]) != prompt

    at.selectbox(key="tour_model").set_value("modadd-tiny").run()
    assert not at.exception, at.exception
    assert any("modadd-tiny, seed 0" in h for h in texts(at.header))
    assert "ModularAddition" in " ".join(texts(at.markdown))
    assert "certified" in " ".join(texts(at.markdown))
    assert {m.label: m.value for m in at.metric}["Certificate"] == "passed"


def test_tour_shows_a_constructed_model_without_training_curves():
    at = open_page("pages/tour.py")
    at.selectbox(key="tour_model").set_value("induction-constructed").run()
    assert not at.exception, at.exception
    assert any("constructed model" in t for t in texts(at.info))
    assert image_urls(at) == []


def test_induction_page_offers_only_induction_models():
    at = open_page("pages/induction.py")
    options = at.selectbox(key="ind_model").options
    assert options == [n for n in zoo.names() if zoo.recipe(n).task.kind == "induction"]
    assert "modadd-113" not in options


def test_induction_head_choice_changes_the_pattern_and_its_caption():
    at = open_page("pages/induction.py")
    at.selectbox(key="ind_layer").set_value(1).run()
    at.selectbox(key="ind_head").set_value(1).run()
    pattern, *heatmaps = image_urls(at)
    assert len(heatmaps) == 3
    assert any("L1H1: the ground truth makes it a **induction** head" in c for c in texts(at.caption))

    at.selectbox(key="ind_head").set_value(0).run()
    pattern0, *heatmaps0 = image_urls(at)
    assert pattern0 != pattern and heatmaps0 == heatmaps  # only the selected head's plot changes
    assert any("L1H0: no attention role" in c for c in texts(at.caption))


def test_ground_truth_toggle_changes_the_outlined_plots():
    at = open_page("pages/induction.py")
    at.selectbox(key="ind_layer").set_value(0).run()
    at.selectbox(key="ind_head").set_value(2).run()  # L0H2, the previous-token head of induction-siit
    shown = image_urls(at)
    at.toggle(key="ind_truth").set_value(False).run()
    hidden = image_urls(at)
    assert hidden[0] != shown[0]  # the pattern loses its outlined cells
    assert hidden[1] != shown[1] and hidden[3] != shown[3]  # previous-token and induction heatmaps
    assert hidden[2] == shown[2]  # no head has the duplicate-token role, so nothing to outline
    assert any("ground truth hidden" in c for c in texts(at.caption))


def test_induction_prompt_can_be_sampled_or_typed():
    at = open_page("pages/induction.py")
    sampled = image_urls(at)[0]
    at.number_input(key="ind_prompt_seed").set_value(3).run()
    assert image_urls(at)[0] != sampled

    at.radio(key="ind_source").set_value("typed").run()
    at.text_input(key="ind_tokens").input("BOS t1 t2 t3 t1 t2 t3").run()
    assert not at.exception and not at.error
    assert image_urls(at)[0] != sampled

    at.text_input(key="ind_tokens").input("BOS t1 nonsense").run()
    assert "unknown tokens ['nonsense']" in at.error[0].value
    assert image_urls(at) == []  # the page stops before plotting


def test_induction_page_works_for_every_induction_model_and_seed():
    at = open_page("pages/induction.py")
    for name in at.selectbox(key="ind_model").options:
        at.selectbox(key="ind_model").set_value(name).run()
        for seed in at.selectbox(key="ind_seed").options:
            at.selectbox(key="ind_seed").set_value(seed).run()
            assert not at.exception, (name, seed, at.exception)
            assert len(image_urls(at)) == 4, (name, seed)
