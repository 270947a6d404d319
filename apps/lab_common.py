"""What the lab's pages share: cached zoo models, the arrays they show, and the model picker.

Imported as ``import lab_common``: ``streamlit run apps/Home.py`` puts ``apps/`` on
``sys.path`` and ``Home.py`` does the same for ``AppTest``, which does not. Pages always
run through ``Home.py`` (``st.navigation``), so they can import this too.

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

from toylab import zoo
from toylab.checkpoint import read_json
from toylab.methods.detectors import DETECTORS, head_scores, target_positions
from matplotlib.figure import Figure

from toylab.viz import TRUTH_COLOR  # noqa: F401  (the landing page shows the outline style)

# Hook points are shared state on the model: two sessions running forwards with hooks on
# the same cached model at once would record each other's activations.
_FORWARD_LOCK = threading.Lock()
N_SCORE_PROMPTS = 64  # prompts the detector scores average over


@st.cache_resource(show_spinner="Loading model...")
def _load(name: str, seed: str) -> zoo.ZooModel:
    return zoo.load(name, seed=int(seed))


def zoo_model(name: str, seed: int) -> zoo.ZooModel:
    """The shipped model ``name`` trained with ``seed``, loaded once per process. Do not modify it."""
    return _load(name, str(seed))


def names_of_kind(kind: str | None = None) -> list[str]:
    """Zoo names, only those whose task is of ``kind`` ("induction", ...) if given."""
    return [n for n in zoo.names() if kind is None or zoo.recipe(n).task.kind == kind]


def pick_model(prefix: str, kind: str | None = None, default: str | None = None) -> tuple[str, int]:
    """Model and seed select boxes (keys ``{prefix}_model`` and ``{prefix}_seed``)."""
    options = names_of_kind(kind)
    index = options.index(default) if default in options else 0
    col_model, col_seed = st.columns([3, 1])
    name = col_model.selectbox("Zoo model", options, index=index, key=f"{prefix}_model")
    seeds = list(zoo.recipe(name).seeds)
    seed = col_seed.selectbox("Seed", seeds, key=f"{prefix}_seed",
                              help="Enforced recipes ship several seeds; the circuit sits in the same heads in each.")
    return name, int(seed)


# ---- data shown by the pages -------------------------------------------------------------


def zoo_table() -> list[dict[str, Any]]:
    """One row per zoo recipe, from the recipes alone (no model is loaded)."""
    rows = []
    for name in zoo.names():
        rec = zoo.recipe(name)
        cfg = rec.model
        rows.append({
            "name": name,
            "truth provenance": rec.provenance or "-",
            "seeds": ", ".join(map(str, rec.seeds)),
            "model": f"{cfg.n_layers}L x {cfg.n_heads}H, d_model {cfg.d_model}"
                     + (", attn only" if cfg.attn_only else f", d_mlp {cfg.d_mlp}"),
            "task": repr(rec.task),
        })
    return rows


@st.cache_data(show_spinner=False)
def sample(name: str, seed: int, sample_seed: int, n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` prompts from the model's task: tokens and targets, both [batch, pos]."""
    batch = zoo_model(name, seed).task.sample(n, seed=sample_seed)
    return batch.tokens.numpy(), batch.targets.numpy()


def parse_tokens(name: str, seed: int, text: str) -> list[int]:
    """Token ids from names separated by spaces or commas ("BOS t3 t7 t3"); raises ValueError."""
    vocab = zoo_model(name, seed).task.token_names
    index = {token: i for i, token in enumerate(vocab)}
    words = text.replace(",", " ").split()
    unknown = [w for w in words if w not in index]
    if unknown:
        raise ValueError(f"unknown tokens {unknown[:5]}; this task's tokens are {vocab[0]}, {vocab[1]}, ..., {vocab[-1]}")
    n_ctx = zoo_model(name, seed).model.cfg.n_ctx
    if not 1 <= len(words) <= n_ctx:
        raise ValueError(f"type between 1 and {n_ctx} tokens, got {len(words)}")
    return [index[w] for w in words]


def str_tokens(name: str, seed: int, tokens: Sequence[int]) -> list[str]:
    return zoo_model(name, seed).task.to_str_tokens(torch.tensor(list(tokens)))


@st.cache_data(show_spinner=False)
def hook_shapes(name: str, seed: int, sample_seed: int, n: int = 2) -> list[dict[str, str]]:
    """Every hook of the model with the shape it records on ``n`` sampled prompts."""
    zm = zoo_model(name, seed)
    tokens = zm.task.sample(n, seed=sample_seed).tokens
    with _FORWARD_LOCK, torch.no_grad():
        _, cache = zm.model.run_with_cache(tokens)
    return [{"hook": hook, "shape": str(list(act.shape))} for hook, act in cache.items()]


@st.cache_data(show_spinner=False)
def attention_patterns(name: str, seed: int, tokens: tuple[int, ...]) -> np.ndarray:
    """Attention of every head on one prompt: [layer, head, query_pos, key_pos]."""
    model = zoo_model(name, seed).model
    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    with _FORWARD_LOCK, torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([tokens]), names=hooks)
    return torch.stack([cache[h][0] for h in hooks]).numpy()


@st.cache_data(show_spinner=False)
def detector_scores(name: str, seed: int, sample_seed: int) -> dict[str, np.ndarray]:
    """Each detector's score per head, [layer, head], over ``N_SCORE_PROMPTS`` sampled prompts."""
    zm = zoo_model(name, seed)
    tokens = zm.task.sample(N_SCORE_PROMPTS, seed=sample_seed).tokens
    with _FORWARD_LOCK:
        return {d: head_scores(zm.model, tokens, d).scores.numpy() for d in DETECTORS}


def detector_targets(tokens: Sequence[int], detector: str) -> list[tuple[int, int]]:
    """(query, key) cells where a head of the ``detector`` type attends on this prompt."""
    keys = target_positions(torch.tensor([list(tokens)]), detector)[0].tolist()
    return [(q, k) for q, k in enumerate(keys) if k >= 0]


@st.cache_data(show_spinner=False)
def training_history(name: str, seed: int) -> list[dict[str, float]]:
    """The run's evaluations (``history.json``); empty for a constructed model."""
    path = zoo_model(name, seed).path / "history.json"
    return read_json(path, "training history") if path.exists() else []


# ---- figures ------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=512)
def _png(_plot: Callable[..., Figure], plot_name: str, args: tuple, kwargs: dict) -> bytes:
    buf = io.BytesIO()
    _plot(*args, **kwargs).savefig(buf, format="png", dpi=150, bbox_inches="tight")
    return buf.getvalue()


def show(plot: Callable[..., Figure], *args: Any, **kwargs: Any) -> None:
    """Display ``plot(*args, **kwargs)``, a toylab.viz figure, rendered once per distinct input.

    Rendering a figure costs a few tenths of a second, most of a page's run; caching the PNG
    makes a rerun that changes one widget redraw only the figures whose inputs changed.
    """
    frozen = {k: tuple(sorted(v)) if isinstance(v, (set, frozenset)) else v for k, v in kwargs.items()}
    st.image(_png(plot, f"{plot.__module__}.{plot.__qualname__}", args, frozen), width="stretch")
