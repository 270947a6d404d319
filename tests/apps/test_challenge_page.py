"""The lab's "Blind challenges" page: make a challenge, submit a circuit and a baseline, see the harness's score and
the submissions; revealing the truth is recorded and marks the next score."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from toylab import challenges

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"
PAGE = "lab_pages/challenge.py"


def test_make_submit_and_reveal():
    at = AppTest.from_file(str(HOME), default_timeout=120).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert any("New challenge" in str(i.value) for i in at.info)
    at.selectbox(key="ch_level").set_value(1)
    at.number_input(key="ch_seed").set_value(4)
    at.button(key="ch_new").click().run()
    assert not at.exception, at.exception
    folder = at.session_state["ch_folder"]
    truth = challenges._truth(challenges.load_challenge(folder))  # the test's own look: not recorded
    heads = [n for n in truth.nodes if n.startswith("L")]
    at.multiselect(key="ch_nodes").set_value(["embed", *heads]).run()
    at.button(key="ch_submit").click().run()
    assert not at.exception, at.exception
    _, figures, looked = at.session_state["ch_last"]
    assert figures["tpr"] == 1.0 and figures["fpr"] == 0.0 and not looked
    at.radio(key="ch_kind").set_value("a built-in method").run()
    at.button(key="ch_submit").click().run()
    assert at.session_state["ch_last"][0] == "baseline resample-ablation"
    assert len(challenges.load_challenge(folder).submissions) == 2
    at.checkbox(key="ch_reveal").check().run()
    assert not at.exception, at.exception
    assert challenges.load_challenge(folder).revealed
    assert any("L" in str(c.value) for c in at.code)
