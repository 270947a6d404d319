"""Feature dashboards (sae_vis, Neuronpedia): what a neuron, an SAE latent or a transcoder feature reads and writes.

Axis names used in shape comments:
    batch, pos     prompts of the data set and their token positions
    d              the width of the activation a feature reads or writes (d_model, d_mlp, ...)
    latent         the features of one source (the neurons of one MLP, an SAE's latents, a transcoder's
                   features at one layer)
    d_vocab_out    the model's output classes

A dashboard of one feature over one data set:

    top            the prompts on which it fires most, each with its activation at every token (for
                   highlighting) and the position of its maximum; a prompt repeated in the data is listed once
    quantiles      optional, as sae_vis: the range of the prompts' maxima cut into equal-width intervals, a
                   few prompts drawn from each (seeded), with how many prompts fall in each
    histogram      counts and edges over the activations at the positions where it fires (activation > 0),
                   and the firing density: the fraction of all (prompt, position) pairs where it fires
    logits         the output tokens its output direction promotes and suppresses through the unembedding
                   (direct path only, see ``feature_dashboard``)
    truth_match    the declared feature of the model's truth whose direction its output direction matches
                   best (cosine) at the same hook, or None where the truth declares none there

Browsing many features of one source reuses one forward pass: ``dashboard_activations`` runs the
model once, caches the hooks the features read and, per source, the activations of all its features.

    zm = toylab.zoo.load("conjunctions")
    cache = methods.dashboard_activations(zm.model, zm.task, methods.Neuron(0, 0))   # one forward pass
    for i in range(zm.model.cfg.d_mlp):
        d = methods.feature_dashboard(zm.model, cache, methods.Neuron(0, i), truth=zm.truth)
    d.top[0].tokens, d.top[0].activations, d.density, d.promoted, d.truth_match
    methods.feature_table(zm.model, cache, methods.Neuron(0, 0), truth=zm.truth).rows()   # every neuron of MLP0

Features: ``Neuron(layer, index)`` reads ``blocks.{layer}.mlp.hook_post`` and writes ``W_out[index]`` to
``blocks.{layer}.hook_mlp_out``; ``SAELatent(sae, hook, index)`` reads ``sae.encode`` of the activations at
``hook`` and writes ``W_dec[index]`` to ``hook``; ``TranscoderFeature(transcoder, layer, index)`` reads
``transcoder.encode`` of every MLP's input (``blocks.{l}.hook_mlp_in``), its ``[..., layer, index]`` entry, and
writes ``W_dec[layer, dest, index]`` to ``blocks.{dest}.hook_mlp_out`` for every destination it writes
(``layer`` alone for a per-layer transcoder, every later layer too for a cross-layer one). A feature fires
where its activation is > 0.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from toylab.hooks import UnknownNameError
from toylab.sae.sae import SAE
from toylab.sae.transcoder import Transcoder
from toylab.tasks.base import Batch, Task

# Hooks whose activation is the residual stream or a term added to it: [batch, pos, d_model], so a direction
# there reaches the logits through the unembedding directly.
RESIDUAL_HOOKS = ("hook_embed", "hook_pos_embed", "hook_resid_pre", "hook_resid_mid", "hook_resid_post",
                  "hook_attn_out", "hook_mlp_out", "hook_mlp_in")
N_PROMPTS = 1024  # prompts sampled from a task when a dashboard is given a task
SEED = 0


# ---- the features --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Neuron:
    """Neuron ``index`` of MLP ``layer``: its activation ``blocks.{layer}.mlp.hook_post[..., index]``."""

    layer: int
    index: int

    @property
    def label(self) -> str:
        return f"MLP{self.layer}N{self.index}"


@dataclass(frozen=True)
class SAELatent:
    """Latent ``index`` of ``sae``, an SAE of the activations at ``hook`` (a hook name of the model)."""

    sae: SAE = field(repr=False)
    hook: str
    index: int

    @property
    def label(self) -> str:
        return f"SAE latent {self.index} @ {self.hook}"


@dataclass(frozen=True)
class TranscoderFeature:
    """Feature ``index`` that ``transcoder`` reads at MLP ``layer``'s input."""

    transcoder: Transcoder = field(repr=False)
    layer: int
    index: int

    @property
    def label(self) -> str:
        return f"transcoder L{self.layer} F{self.index}"


Feature = Neuron | SAELatent | TranscoderFeature
FEATURE_KINDS = (Neuron, SAELatent, TranscoderFeature)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {value!r}")
    return int(value)


def _check_layer(model: Any, feature: Feature) -> int:
    layer = _int(feature.layer, f"{type(feature).__name__}.layer")
    n = model.cfg.n_layers
    if not 0 <= layer < n:
        raise ValueError(f"{feature.label}: layer {layer} is out of range; the model has {n} layer"
                         f"{'s' if n != 1 else ''} (0..{n - 1})")
    return layer


def _check_index(feature: Feature, n: int, what: str) -> None:
    index = _int(feature.index, f"{type(feature).__name__}.index")
    if not 0 <= index < n:
        raise ValueError(f"{feature.label}: index {index} is out of range; {what} has {n} (0..{n - 1})")


def _hook_width(model: Any, hook: str) -> int | None:
    """The width of ``hook``'s activation from the config ([batch, pos, d]); None when it has more axes."""
    cfg = model.cfg
    leaf = hook.rsplit(".", 1)[-1]
    if leaf in RESIDUAL_HOOKS:
        return cfg.d_model
    if leaf in ("hook_pre", "hook_post") and ".mlp." in hook:
        return cfg.d_mlp
    return None


def is_residual(model: Any, hook: str) -> bool:
    """Whether ``hook`` carries the residual stream or a term added to it (width d_model)."""
    return hook.rsplit(".", 1)[-1] in RESIDUAL_HOOKS and hook in model.hook_points


def check_feature(model: Any, feature: Feature) -> None:
    """Raise a clear error if ``feature`` does not exist in ``model`` (or does not fit it)."""
    cfg = model.cfg
    if isinstance(feature, Neuron):
        if cfg.attn_only or cfg.d_mlp is None:
            raise ValueError(f"{feature.label}: the model is attention-only, it has no MLP neurons; "
                             "look at SAELatent(sae, hook, index) of one of its hooks instead")
        _check_layer(model, feature)
        _check_index(feature, cfg.d_mlp, f"MLP{feature.layer} (d_mlp)")
    elif isinstance(feature, SAELatent):
        if not isinstance(feature.sae, SAE):
            raise TypeError(f"SAELatent.sae must be a toylab.sae.SAE, got {type(feature.sae).__name__}")
        if not isinstance(feature.hook, str) or feature.hook not in model.hook_points:
            raise UnknownNameError(str(feature.hook), model.hook_points)
        width = _hook_width(model, feature.hook)
        if width is not None and width != feature.sae.cfg.d_in:
            fits = [h for h in model.hook_points if _hook_width(model, h) == feature.sae.cfg.d_in][:4]
            raise ValueError(f"{feature.label}: the SAE reads d_in={feature.sae.cfg.d_in}, but {feature.hook} has "
                             f"width {width}; give the hook the SAE was trained on"
                             + (f" (hooks of width {feature.sae.cfg.d_in}: {', '.join(fits)}, ...)" if fits else
                                "") + ", or train an SAE of d_in " + str(width) + " on this hook")
        _check_index(feature, feature.sae.cfg.d_sae, "the SAE (d_sae)")
    elif isinstance(feature, TranscoderFeature):
        if not isinstance(feature.transcoder, Transcoder):
            raise TypeError(f"TranscoderFeature.transcoder must be a toylab.sae.Transcoder, "
                            f"got {type(feature.transcoder).__name__}")
        tc = feature.transcoder.cfg
        if cfg.attn_only or cfg.d_mlp is None:
            raise ValueError(f"{feature.label}: the model is attention-only; a transcoder replaces MLPs")
        if (tc.n_layers, tc.d_in, tc.d_out) != (cfg.n_layers, cfg.d_model, cfg.d_model):
            raise ValueError(f"{feature.label}: the transcoder has {tc.n_layers} layers of width {tc.d_in} -> "
                             f"{tc.d_out}, but the model has {cfg.n_layers} MLPs of width {cfg.d_model}; use a "
                             "transcoder trained on this model (toylab.sae.mlp_activations)")
        _check_layer(model, feature)
        _check_index(feature, tc.d_latent, f"layer {feature.layer} of the transcoder (d_latent)")
    else:
        raise TypeError(f"a feature is Neuron(layer, index), SAELatent(sae, hook, index) or "
                        f"TranscoderFeature(transcoder, layer, index), got {type(feature).__name__}")


def _reads(model: Any, feature: Feature) -> list[str]:
    """The hooks whose activations a feature's activation is computed from."""
    if isinstance(feature, Neuron):
        return [f"blocks.{feature.layer}.mlp.hook_post"]
    if isinstance(feature, SAELatent):
        return [feature.hook]
    return [f"blocks.{l}.hook_mlp_in" for l in range(model.cfg.n_layers)]


def n_features(model: Any, feature: Feature) -> int:
    """How many features the source of ``feature`` has (its MLP's neurons, the SAE's latents, the transcoder's
    features per layer)."""
    check_feature(model, feature)
    if isinstance(feature, Neuron):
        return model.cfg.d_mlp
    if isinstance(feature, SAELatent):
        return feature.sae.cfg.d_sae
    return feature.transcoder.cfg.d_latent


def with_index(feature: Feature, index: int) -> Feature:
    """The feature ``index`` of the same source."""
    if isinstance(feature, Neuron):
        return Neuron(feature.layer, index)
    if isinstance(feature, SAELatent):
        return SAELatent(feature.sae, feature.hook, index)
    return TranscoderFeature(feature.transcoder, feature.layer, index)


@torch.no_grad()
def output_directions(model: Any, feature: Feature) -> dict[str, Tensor]:
    """Where every feature of ``feature``'s source writes: ``{hook: directions [latent, d]}`` (float32, cpu).

    Neurons: ``W_out`` [d_mlp, d_model] at ``blocks.{layer}.hook_mlp_out``; an SAE: ``W_dec`` [d_sae, d_in] at its
    hook; a transcoder: ``W_dec[layer, dest]`` [latent, d_model] at ``blocks.{dest}.hook_mlp_out`` for every
    destination layer it writes.
    """
    check_feature(model, feature)
    if isinstance(feature, Neuron):
        W = model.blocks[feature.layer].mlp.W_out
        return {f"blocks.{feature.layer}.hook_mlp_out": W.detach().float().cpu()}
    if isinstance(feature, SAELatent):
        return {feature.hook: feature.sae.W_dec.detach().float().cpu()}
    tc = feature.transcoder
    writes = tc.write_mask(tc.cfg)[feature.layer]  # [dest]
    return {f"blocks.{dest}.hook_mlp_out": tc.W_dec[feature.layer, dest].detach().float().cpu()
            for dest in range(tc.cfg.n_layers) if writes[dest]}


# ---- the data, once -----------------------------------------------------------------------------


def _output_names(model: Any, task: Task | None) -> list[str]:
    n = model.cfg.d_vocab_out
    names = getattr(task, "output_names", None) if task is not None else None
    if names is not None and len(names) == n:
        return list(names)
    if task is not None and len(task.token_names) == n:
        return list(task.token_names)
    return [str(i) for i in range(n)]


class DashboardActivations:
    """The activations of one data set, computed once and shared by every dashboard of it.

    Holds the prompts (tokens [batch, pos] and their token strings), the activations of the hooks the
    features read (one forward pass for all hooks asked at once; a hook asked later costs one more), and,
    per source (an MLP's neurons, an SAE at a hook, a transcoder), the activations of all its features
    [batch, pos, latent], for the ``max_sources`` sources used last (an older one is recomputed when asked
    again). A source (SAE or transcoder) must not change after its activations are cached. Build it with
    ``dashboard_activations``.
    """

    def __init__(self, model: Any, tokens: Tensor, str_tokens: list[list[str]], output_names: list[str],
                 max_sources: int = 16):
        self.model = model
        self.tokens = tokens.detach().cpu()  # [batch, pos]
        self.str_tokens = str_tokens  # [batch][pos]
        self.output_names = output_names  # [d_vocab_out]
        self.hooks: dict[str, Tensor] = {}  # hook -> [batch, pos, d] (on the model's device)
        # key -> (the source object, kept so that its id stays its own; acts [batch, pos, latent]), oldest first
        self._sources: OrderedDict[tuple, tuple[Any, Tensor]] = OrderedDict()
        self.max_sources = max_sources
        self.forward_passes = 0

    @property
    def n_prompts(self) -> int:
        return int(self.tokens.shape[0])

    @torch.no_grad()
    def cache_hooks(self, hooks: Sequence[str]) -> None:
        """Run the model once for the hooks not cached yet."""
        missing = [h for h in dict.fromkeys(hooks) if h not in self.hooks]
        if not missing:
            return
        _, cache = self.model.run_with_cache(self.tokens.to(self.model.device), names=missing)
        for hook in missing:
            acts = cache[hook]
            if acts.ndim != 3:
                raise ValueError(f"{hook} gives activations of shape {tuple(acts.shape)}; a dashboard reads "
                                 "[batch, pos, d] hooks (e.g. hook_mlp_out, hook_resid_post, mlp.hook_post)")
            self.hooks[hook] = acts
        self.forward_passes += 1

    def _key(self, feature: Feature) -> tuple:
        if isinstance(feature, Neuron):
            return ("neuron", feature.layer)
        if isinstance(feature, SAELatent):
            return ("sae", id(feature.sae), feature.hook)
        return ("transcoder", id(feature.transcoder), feature.layer)

    @torch.no_grad()
    def source_activations(self, feature: Feature) -> Tensor:
        """Activations of every feature of ``feature``'s source: [batch, pos, latent] (float32, cpu)."""
        check_feature(self.model, feature)
        key = self._key(feature)
        if key in self._sources:
            self._sources.move_to_end(key)
        else:
            self.cache_hooks(_reads(self.model, feature))
            if isinstance(feature, Neuron):
                acts = self.hooks[f"blocks.{feature.layer}.mlp.hook_post"]
                entries = {key: (None, acts.detach().float().cpu())}
            elif isinstance(feature, SAELatent):
                x = self.hooks[feature.hook]  # [batch, pos, d_in]
                if x.shape[-1] != feature.sae.cfg.d_in:
                    raise ValueError(f"{feature.label}: the SAE reads d_in={feature.sae.cfg.d_in}, but "
                                     f"{feature.hook} has width {x.shape[-1]}; train an SAE on this hook")
                acts = feature.sae.encode(x.to(feature.sae.W_enc.device))
                entries = {key: (feature.sae, acts.detach().float().cpu())}
            else:
                tc = feature.transcoder  # one encoding serves every layer of the transcoder
                x = torch.stack([self.hooks[f"blocks.{l}.hook_mlp_in"] for l in range(self.model.cfg.n_layers)],
                                dim=2)  # [batch, pos, layer, d_model]
                z = tc.encode(x.to(tc.W_enc.device)).float().cpu()  # [batch, pos, layer, latent]
                entries = {("transcoder", id(tc), l): (tc, z[:, :, l]) for l in range(tc.cfg.n_layers)}
            self._sources.update(entries)
            self._sources.move_to_end(key)
            while len(self._sources) > max(self.max_sources, 1):
                self._sources.popitem(last=False)
        return self._sources[key][1]

    def activations(self, feature: Feature) -> Tensor:
        """The activations of one feature: [batch, pos] (float32, cpu)."""
        return self.source_activations(feature)[:, :, feature.index]


def _resolve(model: Any, task_or_tokens: Any, task: Task | None, n_prompts: int, seed: int) -> tuple[Any, Tensor, Any]:
    """(model, tokens [batch, pos], task or None) from what the caller gave."""
    if isinstance(task_or_tokens, Task):
        task = task_or_tokens if task is None else task
        if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
            raise ValueError(f"n_prompts must be a positive int, got {n_prompts!r}")
        tokens = task_or_tokens.sample(n_prompts, seed=seed).tokens
    elif isinstance(task_or_tokens, Batch):
        tokens = task_or_tokens.tokens
    elif isinstance(task_or_tokens, Tensor):
        tokens = task_or_tokens
    else:
        raise TypeError(f"task_or_tokens must be a Task, a Batch, tokens [batch, pos] or a DashboardActivations, "
                        f"got {type(task_or_tokens).__name__}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.ndim != 2 or len(tokens) == 0:
        raise ValueError(f"tokens must be a non-empty integer tensor [batch, pos], got {tokens.dtype} of shape "
                         f"{tuple(tokens.shape)}")
    if task is not None:
        task.check_tokens(tokens)
    return model, tokens, task


def _unzoo(model: Any, truth: Any) -> tuple[Any, Any, Any]:
    """A zoo model (``.model``, ``.task``, ``.truth``) -> (its Transformer, its task, truth unless given)."""
    if hasattr(model, "cfg") and hasattr(model, "hook_points"):
        return model, None, truth
    if all(hasattr(model, a) for a in ("model", "task", "truth")):
        return model.model, model.task, model.truth if truth is None else truth
    raise TypeError(f"model must be a toylab Transformer or a zoo model, got {type(model).__name__}")


def dashboard_activations(model: Any, task_or_tokens: Any, *features: Feature, task: Task | None = None,
                          n_prompts: int = N_PROMPTS, seed: int = SEED) -> DashboardActivations:
    """The shared precompute of many dashboards over one data set: one forward pass for the hooks
    ``features`` read (every MLP's neurons and inputs when none is given) and, per source, the activations
    of all its features.

    ``task_or_tokens``: a Task (``n_prompts`` prompts sampled with ``seed``), a Batch or tokens [batch, pos]
    (token strings from ``task`` when given, else token ids). ``model`` may be a zoo model (its task names
    the tokens).
    """
    model, zoo_task, _ = _unzoo(model, None)
    task = task if task is not None else (task_or_tokens if isinstance(task_or_tokens, Task) else zoo_task)
    model, tokens, task = _resolve(model, task_or_tokens, task, n_prompts, seed)
    str_tokens = (task.to_str_tokens(tokens) if task is not None
                  else [[str(t) for t in row] for row in tokens.tolist()])
    cache = DashboardActivations(model, tokens, str_tokens, _output_names(model, task))
    for feature in features:
        check_feature(model, feature)
    if features:
        hooks = [h for f in features for h in _reads(model, f)]
    elif model.cfg.d_mlp is not None and not model.cfg.attn_only:
        hooks = [f"blocks.{l}.{h}" for l in range(model.cfg.n_layers) for h in ("mlp.hook_post", "hook_mlp_in")]
    else:
        hooks = []
    cache.cache_hooks(hooks)
    for feature in features:
        cache.source_activations(feature)
    return cache


# ---- one dashboard ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivatingPrompt:
    """One prompt with a feature's activation at each of its tokens."""

    row: int  # the prompt's row in the data set
    tokens: tuple[str, ...]  # [pos] token strings
    activations: tuple[float, ...]  # [pos] the feature's activation at each token
    max_pos: int  # the position of the largest activation (the first, on ties)

    @property
    def max_activation(self) -> float:
        return self.activations[self.max_pos]


@dataclass(frozen=True)
class QuantileGroup:
    """Prompts whose maximum activation lies in (low, high]: how many, and a few of them."""

    low: float
    high: float
    n_prompts: int  # prompts of the data set (repeats included) whose maximum lies in the interval
    examples: tuple[ActivatingPrompt, ...]  # distinct prompts drawn from them (seeded), largest maximum first


@dataclass(frozen=True)
class TruthMatch:
    """The declared feature of the truth closest to a feature's output direction at one hook."""

    name: str  # the declared feature's name
    cosine: float  # cosine of its direction with the feature's output direction at ``hook``
    hook: str
    pos: int | None  # where the truth declares it is read (None: every position)
    variable: str | None  # the task variable it carries (None: an input feature)
    value: int | None
    # fraction of prompts on which the feature fires at ``pos`` (of all positions if pos is None); None where the
    # prompts are shorter than pos
    fires_at_pos: float | None
    n_declared: int  # declared features at that hook it was compared with (all hooks it writes, summed)


@dataclass(frozen=True)
class FeatureDashboard:
    """Everything a feature dashboard shows, for one feature over one data set (``feature_dashboard``)."""

    feature: Feature
    label: str  # "MLP0N3", "SAE latent 12 @ blocks.0.hook_mlp_out", "transcoder L0 F5"
    n_prompts: int
    n_positions: int  # prompts x positions
    max_activation: float
    density: float  # fraction of the (prompt, position) pairs where the feature fires (activation > 0)
    prompt_density: float  # fraction of the prompts on which it fires somewhere
    top: tuple[ActivatingPrompt, ...]  # distinct prompts by their maximum activation, largest first
    quantiles: tuple[QuantileGroup, ...]  # lowest interval first; () when not asked or the feature never fires
    hist_counts: tuple[int, ...]  # [bin] firing positions per bin; they sum to n_positions * density
    hist_edges: tuple[float, ...]  # [bin + 1]
    writes_to: tuple[str, ...]  # the hooks its output direction is written to
    promoted: tuple[tuple[str, float], ...] | None  # (output name, direct logit effect), largest first; None: n/a
    suppressed: tuple[tuple[str, float], ...] | None  # (output name, effect), most negative first; None: n/a
    logits_note: str  # how the logit effects were computed, or why they are n/a
    truth_match: TruthMatch | None  # None: no truth given, or it declares no feature where this one writes
    truth_note: str  # what truth_match is, or why it is None

    @property
    def n_firing(self) -> int:
        return int(sum(self.hist_counts))


def _prompt(cache: DashboardActivations, acts: Tensor, row: int) -> ActivatingPrompt:
    values = acts[row]
    return ActivatingPrompt(row, tuple(cache.str_tokens[row]), tuple(float(v) for v in values.tolist()),
                            int(values.argmax()))


def _distinct(cache: DashboardActivations, rows: list[int]) -> list[int]:
    """``rows`` without the prompts whose tokens repeat an earlier row's (first kept)."""
    seen, out = set(), []
    for row in rows:
        key = tuple(cache.tokens[row].tolist())
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def _logits(model: Any, directions: dict[str, Tensor], index: int, names: list[str],
            n_logits: int) -> tuple[Any, Any, str]:
    residual = [h for h in directions if is_residual(model, h)]
    if not residual:
        hook = next(iter(directions))
        return None, None, (f"n/a: {hook} has width {directions[hook].shape[1]}, not the residual stream's "
                            f"(d_model={model.cfg.d_model}); its direction has no direct path to the logits")
    W_U = model.unembed.W_U.detach().float().cpu()  # [d_model, d_vocab_out]
    effect = sum(directions[h][index] for h in residual) @ W_U  # [d_vocab_out]
    k = min(n_logits, max(1, len(effect) // 2))  # promoted and suppressed never share an output
    top = effect.topk(k)
    bottom = (-effect).topk(k)
    promoted = tuple((names[i], float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist()))
    suppressed = tuple((names[i], -float(v)) for v, i in zip(bottom.values.tolist(), bottom.indices.tolist()))
    via = " + ".join(residual)
    norm = "" if type(model.ln_final).__name__ == "Identity" else " (ln_final's scale ignored)"
    return promoted, suppressed, f"direct path only: the output direction at {via} times W_U{norm}"


def _declared(truth: Any) -> tuple:
    return tuple(getattr(truth, "features", ()) or ()) if truth is not None else ()


def _candidates(truth: Any, directions: dict[str, Tensor]) -> list[Any]:
    return [f for f in _declared(truth) if f.hook in directions and len(f.vector) == directions[f.hook].shape[1]]


def _match_matrix(truth: Any, directions: dict[str, Tensor]) -> tuple[list[Any], Tensor]:
    """(declared features at the hooks written, cosines [latent, declared])."""
    candidates = _candidates(truth, directions)
    if not candidates:
        return [], torch.empty(0, device="cpu")
    columns = []
    for f in candidates:
        W = directions[f.hook]  # [latent, d]
        v = torch.tensor(f.vector, dtype=torch.float32, device=W.device)
        columns.append((W @ v) / (W.norm(dim=-1) * v.norm()).clamp(min=1e-12))
    return candidates, torch.stack(columns, dim=1)


def _truth_note(truth: Any, directions: dict[str, Tensor]) -> str:
    if truth is None:
        return "no truth given"
    hooks = ", ".join(directions)
    declared = sorted({f.hook for f in _declared(truth)})
    if not declared:
        return "the truth declares no features"
    return f"the truth declares no feature where this one writes ({hooks}); it declares some at {', '.join(declared)}"


def _fires_at(acts: Tensor, pos: int | None) -> float | None:
    if pos is None:
        return float((acts > 0).float().mean())
    if not -acts.shape[1] <= pos < acts.shape[1]:
        return None
    return float((acts[:, pos] > 0).float().mean())


@torch.no_grad()
def feature_dashboard(model: Any, task_or_tokens: Any, feature: Feature, *, truth: Any = None,
                      task: Task | None = None, n_top: int = 10, n_logits: int = 10, n_bins: int = 30,
                      n_quantiles: int = 0, n_per_quantile: int = 3, n_prompts: int = N_PROMPTS,
                      seed: int = SEED) -> FeatureDashboard:
    """The dashboard of one neuron, SAE latent or transcoder feature over a data set.

    ``model``: a Transformer, or a zoo model (its task names the tokens and its truth is matched, unless
    ``task`` or ``truth`` are given). ``task_or_tokens``: a ``DashboardActivations`` (the shared precompute:
    browsing many features costs no forward pass), a Task (``n_prompts`` prompts sampled with ``seed``), a
    Batch or tokens [batch, pos]. ``feature``: ``Neuron(layer, index)``, ``SAELatent(sae, hook, index)`` or
    ``TranscoderFeature(transcoder, layer, index)``.

    ``top``: the ``n_top`` distinct prompts with the largest maximum activation (a prompt that repeats in the
    data is listed once; prompts where the feature never fires are not listed). ``quantiles``: with
    ``n_quantiles`` > 0, the range (0, max] of the prompts' maxima cut into that many equal-width intervals,
    ``n_per_quantile`` distinct prompts drawn from each with ``seed``. Histogram: ``n_bins`` equal bins over
    the activations > 0.

    Logit effects (``promoted``, ``suppressed``, ``n_logits`` each): the feature's output direction times the
    unembedding W_U, the direct path only (what it adds to the logits straight through the residual stream;
    effects through later layers are not counted, nor ln_final's scale where the model has one). The output
    direction is the neuron's ``W_out`` row, the SAE latent's ``W_dec`` row at its hook, or the sum of the
    transcoder feature's decoder rows over the layers it writes. For an SAE at a hook whose width is not the
    residual stream's (d_model), e.g. ``mlp.hook_post``, there is no direct path: both are None, and
    ``logits_note`` says so.

    ``truth_match``: among the truth's declared features (``truth.features``) at a hook the feature writes to
    (with a matching width), the one whose direction has the largest cosine with the feature's output
    direction there (signed: a feature that writes against a declared direction does not match it), with the position where the truth declares it (and how often the feature fires there);
    None when no truth is given or it declares no feature at those hooks, never a made-up number.
    """
    model, zoo_task, truth = _unzoo(model, truth)
    if isinstance(task_or_tokens, DashboardActivations):
        cache = task_or_tokens
        if cache.model is not model:
            raise ValueError("these DashboardActivations were computed with another model; build them with "
                             "dashboard_activations(model, ...) for this one")
    else:
        cache = dashboard_activations(model, task_or_tokens, feature, task=task if task is not None else zoo_task,
                                      n_prompts=n_prompts, seed=seed)
    for name, value, low in (("n_top", n_top, 1), ("n_logits", n_logits, 1), ("n_bins", n_bins, 1),
                             ("n_quantiles", n_quantiles, 0), ("n_per_quantile", n_per_quantile, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    check_feature(model, feature)
    acts = cache.activations(feature)  # [batch, pos]
    n_prompts_ = acts.shape[0]
    firing = acts[acts > 0]
    maxima = acts.max(dim=1).values  # [batch]

    order = sorted(torch.nonzero(maxima > 0).flatten().tolist(), key=lambda r: (-float(maxima[r]), r))
    top = tuple(_prompt(cache, acts, row) for row in _distinct(cache, order)[:n_top])

    quantiles: list[QuantileGroup] = []
    if n_quantiles and len(firing):
        edges = torch.linspace(0, float(maxima.max()), n_quantiles + 1, device=maxima.device)
        generator = torch.Generator().manual_seed(seed)
        for i in range(n_quantiles):
            inside = (maxima > edges[i]) & (maxima <= edges[i + 1]) if i < n_quantiles - 1 else (maxima > edges[i])
            rows = _distinct(cache, torch.nonzero(inside).flatten().tolist())
            picks = [rows[j] for j in torch.randperm(len(rows), generator=generator, device="cpu")[:n_per_quantile].tolist()]
            picks.sort(key=lambda r: (-float(maxima[r]), r))
            quantiles.append(QuantileGroup(float(edges[i]), float(edges[i + 1]), int(inside.sum()),
                                           tuple(_prompt(cache, acts, r) for r in picks)))

    if len(firing):
        counts, edges_ = np.histogram(firing.double().numpy(), bins=n_bins)
    else:
        counts, edges_ = np.zeros(0, dtype=int), np.zeros(0)

    directions = output_directions(model, feature)
    promoted, suppressed, logits_note = _logits(model, directions, feature.index, cache.output_names, n_logits)

    candidates, cosines = _match_matrix(truth, directions)
    match, truth_note = None, _truth_note(truth, directions)
    if candidates:
        best = int(cosines[feature.index].argmax())
        f = candidates[best]
        match = TruthMatch(f.name, float(cosines[feature.index, best]), f.hook, f.pos, f.variable, f.value,
                           _fires_at(acts, f.pos), len(candidates))
        truth_note = (f"best of the {len(candidates)} declared features at {', '.join(sorted({c.hook for c in candidates}))}"
                      " by cosine with the output direction")

    return FeatureDashboard(
        feature=feature, label=feature.label, n_prompts=int(n_prompts_), n_positions=int(acts.numel()),
        max_activation=float(acts.max()), density=float(len(firing) / acts.numel()),
        prompt_density=float((maxima > 0).float().mean()), top=top, quantiles=tuple(quantiles),
        hist_counts=tuple(int(c) for c in counts), hist_edges=tuple(float(e) for e in edges_),
        writes_to=tuple(directions), promoted=promoted, suppressed=suppressed, logits_note=logits_note,
        truth_match=match, truth_note=truth_note)


# ---- every feature of a source ------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureTable:
    """Summary figures of every feature of one source (``feature_table``), indexed by feature."""

    source: str  # "MLP0", "SAE @ blocks.0.hook_mlp_out", "transcoder L0"
    density: Tensor  # [latent] fraction of positions where each fires
    max_activation: Tensor  # [latent]
    match: tuple[TruthMatch | None, ...]  # [latent] as FeatureDashboard.truth_match
    truth_note: str

    def rows(self, by_truth: bool = True) -> list[dict[str, Any]]:
        """One dict per feature; sorted by truth-match cosine (largest first, unmatched last) when the truth
        declares features where the source writes and ``by_truth``, else by index."""
        rows = []
        for i, (density, peak, m) in enumerate(zip(self.density.tolist(), self.max_activation.tolist(), self.match)):
            row = {"index": i, "density": density, "max activation": peak}
            if any(x is not None for x in self.match):
                row.update({"truth match": m.name if m else None, "cosine": m.cosine if m else None,
                            "declared at pos": m.pos if m else None})
            rows.append(row)
        if by_truth and any(m is not None for m in self.match):
            rows.sort(key=lambda r: (r["cosine"] is None, -(r["cosine"] or 0.0), r["index"]))
        return rows


def _source_label(feature: Feature) -> str:
    if isinstance(feature, Neuron):
        return f"MLP{feature.layer}"
    if isinstance(feature, SAELatent):
        return f"SAE @ {feature.hook}"
    return f"transcoder L{feature.layer}"


@torch.no_grad()
def feature_table(model: Any, data: DashboardActivations, source: Feature, *, truth: Any = None) -> FeatureTable:
    """Density, maximum and truth match of every feature of ``source``'s source (its index is ignored) over
    the cached data: the table a dashboard browser sorts and picks from."""
    model, _, truth = _unzoo(model, truth)
    if not isinstance(data, DashboardActivations):
        raise TypeError(f"data must be DashboardActivations (dashboard_activations(model, ...)), got "
                        f"{type(data).__name__}")
    check_feature(model, with_index(source, 0))
    acts = data.source_activations(with_index(source, 0))  # [batch, pos, latent]
    flat = acts.flatten(0, 1)  # [batch * pos, latent]
    directions = output_directions(model, with_index(source, 0))
    candidates, cosines = _match_matrix(truth, directions)
    matches: list[TruthMatch | None] = []
    for i in range(flat.shape[1]):
        if not candidates:
            matches.append(None)
            continue
        best = int(cosines[i].argmax())
        f = candidates[best]
        matches.append(TruthMatch(f.name, float(cosines[i, best]), f.hook, f.pos, f.variable, f.value,
                                  _fires_at(acts[:, :, i], f.pos), len(candidates)))
    note = _truth_note(truth, directions) if not candidates else "best declared feature by cosine"
    return FeatureTable(_source_label(source), (flat > 0).float().mean(0), flat.max(0).values, tuple(matches), note)


__all__ = [
    "ActivatingPrompt",
    "DashboardActivations",
    "FeatureDashboard",
    "FeatureTable",
    "Neuron",
    "QuantileGroup",
    "SAELatent",
    "TranscoderFeature",
    "TruthMatch",
    "check_feature",
    "dashboard_activations",
    "feature_dashboard",
    "feature_table",
    "n_features",
    "output_directions",
    "with_index",
]
