"""What the lab's pages share: cached zoo models, the model picker, sampled prompts, and figures.

Imported as ``import lab_common``: ``streamlit run apps/Home.py`` puts ``apps/`` on
``sys.path`` and ``Home.py`` does the same for ``AppTest``, which does not. Pages always
run through ``Home.py`` (``st.navigation``), so they can import this too.

Only what several pages use lives here; a computation one page shows is defined in that page
(``apps/lab_pages/*.py``), and what a page shares with its lesson comes from the lesson's
``fixtures.py`` (``toylab.lessons.lesson_fixtures``).

Caches are keyed on plain values only (names, seeds, token tuples), never on a model, and
nothing here changes a cached model: every session shares the same object.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import streamlit as st
import torch
from matplotlib.figure import Figure

from toylab import zoo
from toylab.checkpoint import CheckpointError

# Hook points are shared state on the model: two sessions running forwards with hooks on
# the same cached model at once would record each other's activations. Every page holds
# this lock around forward passes on a cached model.
FORWARD_LOCK = threading.Lock()


@st.cache_resource(show_spinner="Loading model...")
def _load(name: str, seed: str) -> zoo.ZooModel:
    return zoo.load(name, seed=int(seed))


def zoo_model(name: str, seed: int) -> zoo.ZooModel:
    """The shipped model ``name`` trained with ``seed``, loaded once per process. Do not modify it."""
    return _load(name, str(seed))


def zoo_model_or_stop(name: str, seed: int) -> zoo.ZooModel:
    """``zoo_model``, or the page stops with what went wrong (a checkpoint missing or damaged)."""
    try:
        return zoo_model(name, seed)
    except CheckpointError as err:
        st.error(f"{name} (seed {seed}) cannot be loaded: {err}")
        st.stop()


def _names_of_kind(kind: str | None = None) -> list[str]:
    """Zoo names, only those whose task is of ``kind`` ("induction", ...) if given."""
    return [n for n in zoo.names() if kind is None or zoo.recipe(n).task.kind == kind]


def pick_model(prefix: str, kind: str | None = None, default: str | None = None,
               where: Callable[[str], bool] | None = None) -> tuple[str, int]:
    """Model and seed select boxes (keys ``{prefix}_model`` and ``{prefix}_seed``); ``where(name)``
    narrows the models offered to those the page can show."""
    options = [n for n in _names_of_kind(kind) if where is None or where(n)]
    index = options.index(default) if default in options else 0
    col_model, col_seed = st.columns([3, 1])
    name = col_model.selectbox("Zoo model", options, index=index, key=f"{prefix}_model")
    seeds = list(zoo.recipe(name).seeds)
    seed = col_seed.selectbox("Seed", seeds, key=f"{prefix}_seed",
                              help="Enforced recipes ship several seeds; the circuit sits in the same heads in each.")
    return name, int(seed)


def on_request(label: str, key: str, help: str | None = None) -> bool:
    """A button for a computation that takes seconds: False until it is pressed, then True for the
    rest of the session (the button goes), so the computation then follows the page's widgets."""
    pressed = f"{key}_pressed"
    if not st.session_state.get(pressed) and st.button(label, key=key, help=help, type="primary"):
        st.session_state[pressed] = True
    return bool(st.session_state.get(pressed))


# ---- prompts -------------------------------------------------------------------------------


@st.cache_data(show_spinner=False)
def sample(name: str, seed: int, sample_seed: int, n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` prompts from the model's task: tokens and targets, both [batch, pos]."""
    batch = zoo_model(name, seed).task.sample(n, seed=sample_seed)
    return batch.tokens.numpy(), batch.targets.numpy()


def str_tokens(name: str, seed: int, tokens: Sequence[int]) -> list[str]:
    return zoo_model(name, seed).task.to_str_tokens(torch.tensor(list(tokens)))


# ---- figures ------------------------------------------------------------------------------


def figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=512)
def _png(_plot: Callable[..., Figure], plot_name: str, args: tuple, kwargs: dict) -> bytes:
    return figure_png(_plot(*args, **kwargs))


def show(plot: Callable[..., Figure], *args: Any, **kwargs: Any) -> None:
    """Display ``plot(*args, **kwargs)``, a toylab.viz figure: as its interactive twin where it
    has one (``viz.INTERACTIVE``: heatmaps, attention patterns, bars and curves become Altair
    charts with tooltips, zoom and the truth outlined), else as a PNG rendered once per
    distinct input (a figure costs a few tenths of a second, most of a page's run, so a rerun
    that changes one widget redraws only the figures whose inputs changed).
    """
    from toylab import viz

    twin = viz.INTERACTIVE.get(plot)
    if twin is not None:
        st.altair_chart(twin(*args, **kwargs), width="content")
        return
    frozen = {k: tuple(sorted(v)) if isinstance(v, (set, frozenset)) else v for k, v in kwargs.items()}
    st.image(_png(plot, f"{plot.__module__}.{plot.__qualname__}", args, frozen), width="stretch")
