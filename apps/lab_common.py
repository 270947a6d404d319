"""What the lab's pages share: cached zoo models, the arrays they show, and the model picker.

Imported as ``import lab_common``: ``streamlit run apps/Home.py`` puts ``apps/`` on
``sys.path`` and ``Home.py`` does the same for ``AppTest``, which does not. Pages always
run through ``Home.py`` (``st.navigation``), so they can import this too.

Caches are keyed on plain values only (names, seeds, token tuples), never on a model, and
nothing here changes a cached model: every session shares the same object.
"""

from __future__ import annotations

import dataclasses
import io
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import streamlit as st
import torch
from matplotlib.figure import Figure

from toylab import methods, zoo
from toylab.models import SuperpositionConfig, ToyModel, train_toy_model
from toylab.sae import SAE, SAEConfig, SyntheticFeatures, cosine_matrix, score_sae
from toylab.sae import train_sae as sae_train
from toylab.tasks import ModularAddition
from toylab.train import Callback, train
from toylab.checkpoint import read_json
from toylab.methods.detectors import DETECTORS, head_scores, target_positions
from toylab import components as comp
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


# ---- weights: QK/OV circuits and composition (lesson 2) ----------------------------------


@st.cache_data(show_spinner=False)
def ov_circuit(name: str, seed: int, layer: int, head: int) -> tuple[np.ndarray, float]:
    """The head's full OV circuit [d_vocab, d_vocab_out] and its copying score."""
    ov = methods.ov_circuit(zoo_model(name, seed).model, layer, head)
    return ov.numpy(), methods.copying_score(ov)


@st.cache_data(show_spinner=False)
def pos_qk_circuit(name: str, seed: int, layer: int, head: int) -> np.ndarray:
    """The head's positional QK circuit [query_pos, key_pos], NaN (not -inf) where it cannot attend."""
    scores = methods.pos_qk_circuit(zoo_model(name, seed).model, layer, head).numpy()
    return np.where(np.isneginf(scores), np.nan, scores)


@st.cache_data(show_spinner=False)
def composition(name: str, seed: int, kind: str) -> tuple[np.ndarray, float]:
    """Composition scores [sender_layer, sender_head, receiver_layer, receiver_head] and the random baseline."""
    result = methods.composition_scores(zoo_model(name, seed).model, kind)
    return result.scores.numpy(), result.baseline


# ---- patching (lesson 3) ------------------------------------------------------------------


def patch_targets(name: str, seed: int) -> list[str]:
    """The ``PATCH_TARGETS`` worth offering for this model: ``mlp_out`` needs an MLP (the
    function refuses it otherwise) and ``resid_mid`` is left out of attention-only models,
    where it is the same stream as ``resid_post``."""
    attn_only = zoo_model(name, seed).model.cfg.attn_only
    return [t for t in methods.PATCH_TARGETS if not (attn_only and t in ("mlp_out", "resid_mid"))]


def path_receivers(name: str, seed: int) -> list[str]:
    """Components path patching can take as receivers: those with at least one head upstream."""
    cfg = zoo_model(name, seed).model.cfg
    first_heads = comp.layer_of(comp.head_id(0, 0))
    return [r for r in comp.receivers(cfg) if comp.layer_of(r) > first_heads]


@st.cache_data(show_spinner=False)
def pair_example(name: str, seed: int, n: int, pair_seed: int) -> dict[str, Any]:
    """What the counterfactual pairs change, and the first pair as token strings."""
    zm = zoo_model(name, seed)
    pair = zm.task.counterfactual(n, seed=pair_seed)
    return {"description": pair.description,
            "clean": zm.task.to_str_tokens(pair.clean.tokens[0]),
            "corrupted": zm.task.to_str_tokens(pair.corrupted.tokens[0])}


def _patching_summary(result: methods.PatchingResult, seconds: float, top: int) -> dict[str, Any]:
    return {"scores": result.scores.numpy(), "axes": result.axes, "seconds": seconds,
            "clean": float(result.clean_metric), "corrupted": float(result.corrupted_metric),
            "top": result.top(top) if len(result.axes) else []}


@st.cache_data(show_spinner=False, max_entries=256)
def activation_patching(name: str, seed: int, n: int, pair_seed: int, target: str,
                        direction: str = "denoise", top: int = 5) -> dict[str, Any]:
    """``methods.activation_patching`` on ``n`` counterfactual pairs: scores, axes, metrics,
    top entries and the seconds the sweep took (not counting making the pairs)."""
    zm = zoo_model(name, seed)
    pair = zm.task.counterfactual(n, seed=pair_seed)
    with _FORWARD_LOCK:
        start = time.perf_counter()
        result = methods.activation_patching(zm.model, pair, target, direction=direction)
        seconds = time.perf_counter() - start
    return _patching_summary(result, seconds, top)


@st.cache_data(show_spinner=False, max_entries=256)
def path_patching(name: str, seed: int, n: int, pair_seed: int, receivers: tuple[str, ...],
                  receiver_input: str, direction: str = "denoise", top: int = 5) -> dict[str, Any]:
    """``methods.path_patching`` from every upstream head into ``receivers`` through ``receiver_input``."""
    zm = zoo_model(name, seed)
    pair = zm.task.counterfactual(n, seed=pair_seed)
    with _FORWARD_LOCK:
        start = time.perf_counter()
        result = methods.path_patching(zm.model, pair, list(receivers), receiver_input, direction=direction)
        seconds = time.perf_counter() - start
    return _patching_summary(result, seconds, top)


# ---- superposition and SAEs (lessons 4 and 5) ----------------------------------------------

SWEEP_DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005)  # one toy-model instance each
TOY_STEPS = 2000


@st.cache_data(show_spinner="Training the toy models...", max_entries=64)
def toy_sweep(n_features: int, n_hidden: int, importance_decay: float, seed: int) -> dict[str, Any]:
    """``n_features`` in ``n_hidden`` dimensions with importance ``decay**i``, one instance per
    density of ``SWEEP_DENSITIES``, trained in one run: weights, the weights' classification,
    dimensionality, and what gets through when each feature is fed alone."""
    cfg = SuperpositionConfig(n_instances=len(SWEEP_DENSITIES), n_features=n_features, n_hidden=n_hidden)
    importance = (importance_decay ** torch.arange(float(n_features)))[None, :]  # [1, feature]
    model = ToyModel(cfg, feature_probability=torch.tensor(SWEEP_DENSITIES)[:, None], importance=importance,
                     seed=seed)
    start = time.perf_counter()
    history = train_toy_model(model, steps=TOY_STEPS, batch_size=1024, lr=1e-2, lr_schedule="cosine", seed=seed)
    seconds = time.perf_counter() - start
    fs = methods.feature_status(model)
    return {"W": model.W.detach().numpy(), "importance": importance[0].numpy(), "status": fs.status.numpy(),
            "norms": fs.norms.numpy(), "D": fs.dimensionality.numpy(),
            "gain": methods.reconstruction(model).numpy(), "loss": history.loss[-1].numpy(), "seconds": seconds}


@st.cache_data(show_spinner="Training every cell of the phase diagram...", max_entries=8)
def phase_diagram(n: int, seed: int) -> dict[str, Any]:
    """``methods.phase_diagram`` on an n x n grid: feature 1's status, the axes and the seconds it took."""
    start = time.perf_counter()
    pd = methods.phase_diagram(n_density=n, n_importance=n, seed=seed)
    return {"status": pd.feature1().numpy(), "density": pd.density.numpy(),
            "importance": pd.relative_importance.numpy(), "seconds": time.perf_counter() - start}


SAE_DATA = {
    "synthetic dictionary (128 features in 32 dims)": "synthetic",
    "toy model: 20 features in 10 dims": "toy-20-10",
    "toy model: 5 features in 2 dims (a pentagon)": "toy-5-2",
}


def _sae_source(data: str, seed: int) -> tuple[Callable[[int, torch.Generator], tuple], torch.Tensor]:
    """A sampler ``(n, generator) -> (activations, true coefficients)`` and the true features [feature, d_in]."""
    if data == "synthetic":
        synthetic = SyntheticFeatures(d_in=32, n_features=128, feature_probability=0.03, seed=seed)
        return synthetic.sample, synthetic.features
    n_features, n_hidden = {"toy-20-10": (20, 10), "toy-5-2": (5, 2)}[data]
    toy = ToyModel(SuperpositionConfig(n_instances=1, n_features=n_features, n_hidden=n_hidden),
                   feature_probability=0.03, seed=seed)
    train_toy_model(toy, steps=3000, batch_size=1024, lr=1e-2, lr_schedule="cosine", seed=seed)

    def sample(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            features = toy.generate_batch(n, generator)  # [n, instance=1, feature]
            return toy.hidden(features)[:, 0], features[:, 0]

    return sample, toy.W[0].detach().T.clone()


@st.cache_data(show_spinner="Training the SAE...", max_entries=64)
def train_sae(data: str, architecture: str, d_sae: int, sparsity: float, steps: int, seed: int) -> dict[str, Any]:
    """An SAE trained on ``data`` (a value of ``SAE_DATA``) and scored against the true features
    on fresh samples. ``sparsity`` is k for topk, the L1 coefficient for relu and the L0
    coefficient for jumprelu."""
    sample, features = _sae_source(data, seed)
    extra = {"topk": {"k": int(sparsity)}, "relu": {"l1_coefficient": sparsity},
             "jumprelu": {"l0_coefficient": sparsity}}[architecture]
    sae = SAE(SAEConfig(d_in=features.shape[1], d_sae=d_sae, architecture=architecture, seed=seed, **extra))
    history = sae_train(sae, sample, steps=steps, batch_size=256, lr=3e-3, seed=seed, resample_every=500)
    x, c = sample(8192, torch.Generator().manual_seed(10_000 + seed))
    scores = score_sae(sae, features, x, c)
    return {"scores": {k: v for k, v in vars(scores).items() if isinstance(v, float)},
            "matched": np.array(scores.matched_latent), "f1": np.array(scores.f1_per_feature),
            "cos": cosine_matrix(features, sae.W_dec.detach()).numpy(), "features": features.numpy(),
            "W_dec": sae.W_dec.detach().numpy(), "true_l0": float((c > 0).sum(-1).float().mean()),
            "seconds": history.seconds}


# ---- grokking (lesson 6) -------------------------------------------------------------------

LIVE_PRIMES = (53, 59, 61)  # small enough to grok in seconds with modadd-tiny's recipe


@st.cache_data(show_spinner="Loading the shipped run's progress measures...")
def shipped_progress(name: str) -> methods.ProgressMeasures:
    """The progress measures shipped with zoo model ``name`` (``progress.json``)."""
    return zoo.load_shipped_progress(name)


def live_run(p: int, seed: int, on_step: Callable[[int, int], None]) -> dict[str, Any]:
    """Train modadd-tiny's recipe on Z_p from ``seed`` until it generalises, calling
    ``on_step(step, total)`` as it goes; then measure what it learned. Not cached: the
    page keeps the result in the session."""
    rec = zoo.recipe("modadd-tiny")
    task = ModularAddition(p=p, train_frac=rec.task.train_frac, split_seed=rec.task.split_seed)
    model_cfg = dataclasses.replace(rec.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out)
    train_cfg = dataclasses.replace(rec.train, seed=seed)

    class Report(Callback):
        def on_step_end(self, run: Any) -> None:
            if run.step % 10 == 0:
                on_step(run.step, train_cfg.steps)

    start = time.perf_counter()
    result = train(model_cfg, task, train_cfg, callbacks=[Report()], progress=False)
    seconds = time.perf_counter() - start
    freqs = methods.key_frequencies(result.model, task)
    losses = methods.frequency_losses(result.model, task, freqs) if freqs else None
    return {"history": result.history, "steps": result.steps, "seconds": seconds, "key_frequencies": freqs,
            "spectrum": methods.embedding_frequency_norms(result.model, task.p).numpy(),
            "losses": dataclasses.asdict(losses) if losses else None, "metrics": result.metrics}


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


# ---- probes, interchange interventions and causal tracing (lesson 8) ----------------------------

PROBE_HOOKS = ("hook_embed", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post", "blocks.1.hook_resid_mid",
               "blocks.1.hook_resid_post")
PROBE_CONFIG = methods.ProbeConfig(steps=100, lr=0.1)


def variable_values(name: str, seed: int, variable: str, tokens: torch.Tensor) -> torch.Tensor:
    """The algorithm's value of ``variable`` on each prompt ([batch])."""
    return zoo_model(name, seed).algorithm.value(tokens, variable)


@st.cache_data(show_spinner="Training probes at every site...", max_entries=64)
def probe_grid(name: str, seed: int, variable: str, n: int, sample_seed: int) -> dict[str, Any]:
    """Probe accuracy, control accuracy and selectivity at each PROBE_HOOKS x position, [hook, pos]."""
    zm = zoo_model(name, seed)
    tokens = zm.task.sample(n, seed=sample_seed).tokens
    hooks = [h for h in PROBE_HOOKS if h in zm.model.hook_names()]
    labels = variable_values(name, seed, variable, tokens)
    with _FORWARD_LOCK:
        grid = methods.probe_grid(zm.model, tokens, labels, hooks, config=PROBE_CONFIG,
                                  types=zm.task.variables(tokens)["fact"])
    return {"hooks": hooks, "accuracy": grid.accuracy.numpy(), "selectivity": grid.selectivity.numpy(),
            "control": grid.control_accuracy.numpy(), "majority": grid.majority}


def probe_truth_cell(name: str, seed: int, variable: str) -> tuple[str, int] | None:
    """(hook, pos) in the probe grid right after the component the truth declares ``variable`` in."""
    zm = zoo_model(name, seed)
    if zm.truth is None or variable not in {v.name for v in zm.truth.variables}:
        return None
    site = methods.variable_site(zm.truth, variable, zm.task.n_ctx)
    layer = int(site.hook.split(".")[1])
    return (f"blocks.{layer}.hook_resid_post" if "mlp" in site.hook else f"blocks.{layer}.hook_resid_mid"), site.pos


def iia_sites(name: str, seed: int, variable: str) -> list[tuple[str, int, int | None, str]]:
    """Sites to score for ``variable``: (hook, pos, head, role) with role "truth" or "decoy"."""
    zm = zoo_model(name, seed)
    positions = zm.task.positions
    site = methods.variable_site(zm.truth, variable, zm.task.n_ctx)
    hook, pos = probe_truth_cell(name, seed, variable)
    rows = [(site.hook, site.pos, site.head, "truth"), (hook, pos, None, "truth")]
    for decoy in (("blocks.1.hook_resid_post", positions["subject"]), ("blocks.0.hook_resid_post", positions["answer"]),
                  ("blocks.0.hook_resid_post", positions["relation"])):
        if decoy != (hook, pos):
            rows.append((*decoy, None, "decoy"))
    return rows


@st.cache_data(show_spinner="Measuring interchange-intervention accuracy...", max_entries=64)
def iia_table(name: str, seed: int, variable: str, k: int, n: int, sample_seed: int) -> list[dict[str, Any]]:
    """Per site: probe accuracy, IIA of the whole vector, of the probe's directions and of a k-dim DAS subspace."""
    zm = zoo_model(name, seed)
    tokens = zm.task.sample(n, seed=sample_seed).tokens
    labels = variable_values(name, seed, variable, tokens)
    rows = []
    with _FORWARD_LOCK:
        for hook, pos, head, role in iia_sites(name, seed, variable):
            site = methods.Site(hook, pos, head)
            probe = methods.train_probe(zm.model, tokens, labels, site, PROBE_CONFIG)
            full = methods.interchange_accuracy(zm.model, zm.algorithm, variable, site, seed=sample_seed)
            through = methods.interchange_accuracy(zm.model, zm.algorithm, variable, site,
                                                   methods.probe_subspace(probe.probe), seed=sample_seed)
            d = methods.activations(zm.model, tokens[:1], site).shape[-1]
            learned = methods.das(zm.model, zm.algorithm, variable, site,
                                  methods.DASConfig(k=min(k, d), steps=150, n_train=384, seed=sample_seed))
            rows.append({"site": str(site), "ground truth": role == "truth", "probe accuracy": probe.accuracy,
                         "IIA whole vector": full.accuracy, "IIA probe directions": through.accuracy,
                         f"IIA DAS (k={min(k, d)})": learned.test_iia})
    return rows


@st.cache_data(show_spinner="Tracing...", max_entries=64)
def causal_trace(name: str, seed: int, n: int, sample_seed: int, corruption: str) -> dict[str, Any]:
    """Causal tracing of the subject: restored fraction per kind, [layer, pos], and the two probabilities."""
    zm = zoo_model(name, seed)
    batch = zm.task.sample(n, seed=sample_seed)
    source = zm.algorithm.sample_pairs(n, torch.Generator().manual_seed(sample_seed))[1].tokens
    with _FORWARD_LOCK:
        result = methods.causal_trace(zm.model, batch, [zm.task.positions["subject"]],
                                      config=methods.TracingConfig(corruption=corruption, seed=sample_seed),
                                      source_tokens=source)
    return {"scores": {kind: result.scores(kind).numpy() for kind in result.kinds}, "p_clean": result.p_clean,
            "p_corrupted": result.p_corrupted, "peaks": {kind: result.peak(kind) for kind in result.kinds}}


# ---- validating circuit-discovery methods (lesson 7) ----------------------------------------

VALIDATE_METHODS = ("eap", "attention-heuristic", "random")  # the page's default: fast, and tells the story
VALIDATE_MODELS = ("induction-constructed",)
VALIDATE_FIGURES = ("node_auroc", "edge_auroc[head]", "edge_auroc[qkv]", "cpr", "cpr_truth", "cmd", "faithfulness",
                    "completeness", "minimality")


@st.cache_resource(show_spinner=False, max_entries=128)
def validation_report(method: str, model: str, n_pairs: int) -> Any:
    """``validate.score`` of baseline ``method`` on every seed of zoo model ``model``: a Report,
    shared by every session (do not modify it). The harness loads its own copy of the model."""
    from toylab.validate import score
    from toylab.validate.baselines import BASELINES

    return score(BASELINES[method], names=[model], label=method, n_pairs=n_pairs)


def validation_reports(methods_: Sequence[str], models: Sequence[str], n_pairs: int) -> dict[str, Any]:
    """{method: one Report over all ``models``}, from the per-(method, model) cached reports."""
    from toylab.validate import Report

    return {m: Report(m, [e for model in models for e in validation_report(m, model, n_pairs).entries])
            for m in methods_}


def validation_rows(methods_: Sequence[str], models: Sequence[str], n_pairs: int) -> list[dict[str, Any]]:
    """One row per method and model: mean over seeds of each headline figure, errors and peeking."""
    rows = []
    for method, report in validation_reports(methods_, models, n_pairs).items():
        for model, stats in report.summary().items():
            entries = [e for e in report.entries if e.model == model]
            row: dict[str, Any] = {"method": method, "model": model, "seeds": len(entries)}
            for figure in VALIDATE_FIGURES:
                mean = stats.get(figure, (float("nan"), 0.0, 0))[0]
                row[figure] = None if math.isnan(mean) else round(mean, 3)
            row["seconds"] = round(stats["seconds"][0], 3) if stats["seconds"][2] else None
            row["read the answer key"] = any(e.peeked for e in entries)
            row["errors"] = sum(e.error is not None for e in entries)
            rows.append(row)
    return rows


def _figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=128)
def validation_curves_png(kind: str, methods_: tuple[str, ...], models: tuple[str, ...], n_pairs: int) -> bytes:
    """``viz.roc_curves`` (kind "roc") or ``viz.faithfulness_curves`` ("faithfulness") of the reports, as PNG."""
    from toylab import viz

    draw = {"roc": viz.roc_curves, "faithfulness": viz.faithfulness_curves}[kind]
    return _figure_png(draw(validation_reports(methods_, models, n_pairs)))


def validation_entry(method: str, model: str, seed: int, n_pairs: int) -> Any:
    """The harness's Entry for ``method`` on ``model`` trained with ``seed``."""
    return next(e for e in validation_report(method, model, n_pairs).entries if e.seed == seed)


@st.cache_data(show_spinner=False, max_entries=256)
def validation_circuit_png(method: str, model: str, seed: int, n_pairs: int, show_truth: bool) -> bytes:
    """The circuit ``method`` found on ``model`` (seed), the truth outlined when ``show_truth``."""
    from toylab import viz

    zm = zoo_model(model, seed)
    entry = validation_entry(method, model, seed, n_pairs)
    return _figure_png(viz.circuit_graph(zm.model.cfg, entry.circuit, zm.truth.edges, show_truth=show_truth,
                                         title=f"{method}: its top |T| {'edges' if 'edge' in entry.kind else 'nodes'}"
                                               + (" (truth outlined)" if show_truth else "")))


@st.cache_data(show_spinner=False, max_entries=64)
def truth_circuit_png(model: str, seed: int) -> bytes:
    """The certified circuit of ``model`` (seed), drawn like a found one."""
    from toylab import viz

    zm = zoo_model(model, seed)
    return _figure_png(viz.circuit_graph(zm.model.cfg, zm.truth.edges, show_truth=False,
                                         title=f"the true circuit ({zm.truth.provenance})"))
