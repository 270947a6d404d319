"""The lab's pages under widget sweeps (two sessions computing at once: tests/apps/test_browser.py).

The sweep is one-factor-at-a-time: each page is opened with its defaults, then every widget
it shows is set, on its own, to each of its first two options (choices: options 0 and 1;
numbers and sliders: min and min + step; toggles and checkboxes: the state that is not the
default; text inputs: empty and a one-token prompt) that differs from the default, and the
page is run. A widget that only appears after another setting (the typed prompt of the
induction page) is swept with that setting held. Every page's full cross product would be
thousands of runs; one factor at a time is at most ``2 x widgets`` runs, and each page is
capped at ``MAX_RUNS``. Buttons are not pressed here, except those that show part of a page on
request (``lab_common.on_request``), pressed as the page opens so that the sweep runs what they
show; the others (superposition's phase diagram, grokking's live run, validate's Run) are covered
by test_apps.py.
"""

import ast
import re
from pathlib import Path

import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"
LESSONS = [path for node in ast.parse(HOME.read_text()).body  # Home.py's LESSONS, as conftest.py reads it
           if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "LESSONS"
           for path, _ in ast.literal_eval(node.value)]
# Most settings retrain (a model, an SAE or a transcoder).
TRAINING = ["lab_pages/superposition.py", "lab_pages/sae.py", "lab_pages/probes.py", "lab_pages/attribution_graphs.py",
            "lab_pages/dashboards.py"]
# The keys of each page's lab_common.on_request buttons.
ON_REQUEST = {path: re.findall(r'on_request\(\s*"[^"]*",\s*key="(\w+)"', (HOME.parent / path).read_text())
              for path in LESSONS}
MAX_RUNS = 12  # runs per page, on top of the default render
KINDS = ("selectbox", "radio", "select_slider", "multiselect", "number_input", "slider",
         "checkbox", "toggle", "text_input")
TRACEBACK = re.compile(r"Traceback|File \"|line \d+, in ")


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=60).run()
    assert not at.exception, at.exception
    at.switch_page(page).run()
    assert not at.exception, at.exception
    for key in ON_REQUEST[page]:
        at.button(key=key).click().run()
        assert not at.exception, at.exception
    return at


def widgets(at: AppTest) -> dict[str, object]:
    """The page's keyed input widgets, by key (every widget of the lab has a key)."""
    return {w.key: w for kind in KINDS for w in at.get(kind) if w.key}


def by_label(widget, label: str | list[str]) -> None:
    """Set a choice widget by its option label(s), as the browser does.

    AppTest otherwise wants the raw option value, which it does not expose (it only has the
    labels that ``format_func`` made), so the widget's state is built from the label.
    """
    class ByLabel(type(widget)):
        @property
        def _widget_state(self) -> WidgetState:
            ws = WidgetState()
            ws.id = self.id
            if isinstance(label, str):
                ws.string_value = label
            else:
                ws.string_array_value.data[:] = label
            return ws

    widget.__class__ = ByLabel


def candidates(widget) -> list[tuple[str, object]]:
    """(description, setter) for the widget's first two options that differ from its current value."""
    kind = widget.type
    out = []
    if kind in ("selectbox", "radio"):
        current = widget.options[widget.index] if widget.index is not None else None
        for label in widget.options[:2]:
            if label != current:
                out.append((label, lambda w, label=label: by_label(w, label)))
    elif kind == "select_slider":
        current = widget._widget_state.string_array_value.data[:]
        for label in widget.options[:2]:
            if [label] != list(current):
                out.append((label, lambda w, label=label: by_label(w, [label])))
    elif kind == "multiselect":
        for label in widget.options[:2]:
            if list(widget.values) != [label]:
                out.append(([label], lambda w, label=label: by_label(w, [label])))
    elif kind in ("number_input", "slider"):
        proto = widget.proto
        as_int = proto.data_type == proto.DataType.INT
        low = proto.min if (kind == "slider" or proto.has_min) else widget.value
        for v in (low, low + proto.step):
            if (kind == "slider" or proto.has_max) and v > proto.max:
                continue
            v = int(v) if as_int else float(v)
            if v != widget.value:
                out.append((v, lambda w, v=v: w.set_value(v)))
    elif kind in ("checkbox", "toggle"):
        out.append((not widget.value, lambda w: w.set_value(not w.value)))
    elif kind == "text_input":
        for v in ("", (widget.value or "").split()[:1]):
            v = " ".join(v) if isinstance(v, list) else v
            if v != widget.value:
                out.append((repr(v), lambda w, v=v: w.set_value(v)))
    return out


def check(at: AppTest, what: str) -> None:
    assert not at.exception, f"{what}: {[e.value for e in at.exception]}"
    for error in at.error:  # a page may refuse a choice, but in words, not with a traceback
        text = str(error.value)
        assert text.strip() and not TRACEBACK.search(text), f"{what}: unclear error {text!r}"


def restorer(widget):
    """A setter that puts the widget back to its current value."""
    if widget.type in ("selectbox", "radio"):
        label = widget.options[widget.index]
        return lambda w: by_label(w, label)
    if widget.type in ("select_slider", "multiselect"):
        labels = list(widget._widget_state.string_array_value.data)
        return lambda w: by_label(w, labels)
    value = widget.value
    return lambda w: w.set_value(value)


def sweep(page: str) -> list[str]:
    """Run the page once per (widget, option), one factor at a time; return what was run.

    One AppTest per page: each run sets one widget to one option and puts the widget set
    by the run before back to its default, so every run differs from the defaults in one
    widget (plus the setting that revealed it, for a revealed widget).
    """
    at = open_page(page)
    queue = [((), key, candidates(w), restorer(w)) for key, w in widgets(at).items()]
    seen = {key for _, key, _, _ in queue}
    pending = []  # (key, setter) restoring what the last run changed

    def apply(settings):
        tree = widgets(at)
        for key, setter in settings:
            if key in tree:
                setter(tree[key])
        at.run()

    runs = []
    while queue and len(runs) < MAX_RUNS:
        held, key, choices, restore = queue.pop(0)
        if held:
            apply([*pending, *((k, s) for k, _, s, _ in held)])
            pending = []
        for choice, setter in choices[:MAX_RUNS - len(runs)]:
            apply([*pending, (key, setter)])
            pending = [(key, restore)]
            what = ", ".join(f"{k}={c!r}" for k, c, _, _ in (*held, (key, choice, None, None)))
            check(at, f"{page}: {what}")
            runs.append(what)
            revealed = widgets(at)
            for new in revealed.keys() - seen:  # sweep what this choice revealed, with it held
                seen.add(new)
                queue.append(((*held, (key, choice, setter, restore)), new,
                              candidates(revealed[new]), restorer(revealed[new])))
        pending += [(k, r) for k, _, _, r in held]
    return runs


@pytest.mark.parametrize("page", [p for p in LESSONS if p not in TRAINING])
def test_every_widget_option_runs_without_an_exception(page):
    runs = sweep(page)
    assert runs, f"{page}: no widget to sweep"
    print(f"{page}: {len(runs)} runs\n  " + "\n  ".join(runs))


@pytest.mark.slow
@pytest.mark.lab_sweep
@pytest.mark.parametrize("page", TRAINING)
def test_every_widget_option_of_a_training_page_runs_without_an_exception(page):
    """As above, for the pages that train a model on most settings (about 3 CPU minutes together,
    as much as a third of the README's test command, so on demand: ``python -m pytest -m lab_sweep``)."""
    test_every_widget_option_runs_without_an_exception(page)
