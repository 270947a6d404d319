"""Zero, mean and resample ablation of any hook or component, and per-component scores.

Axis names used in shape comments:
    batch, pos        as everywhere (the reference batch has the same pos)
    head, d_head      a head within a layer, and its value width (``hook_z``)
    d_mlp             MLP neurons (``mlp.hook_post``)
    component         one entry per ablated component, in the order given

A target is a hook name (the whole activation is replaced) or a component id, which
ablates just that component's slice of one activation:

    L{l}H{h}     head h of blocks.{l}.attn.hook_z      [batch, pos, head, d_head]
    MLP{l}       blocks.{l}.hook_mlp_out               [batch, pos, d_model]
    MLP{l}N{i}   neuron i of blocks.{l}.mlp.hook_post  [batch, pos, d_mlp]
    embed        hook_embed;  pos_embed  hook_pos_embed

Methods (Wang et al. 2022; Chan et al. 2022 for resampling; ARENA 1.4):
    zero      the activation becomes 0
    mean      its mean over the reference batch, per position
    resample  row i takes the activation of reference row i (the reference has the
              input's shape, e.g. the corrupted half of a CounterfactualPair)

Zero ablation takes the model off its distribution (a head's z is rarely 0), so its
effects can overstate; resampling from a counterfactual keeps the model on it and
measures what the component contributes to the difference between the two inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from toylab import components as comp
from toylab.hooks import HookPoint, UnknownNameError
from toylab.models import Transformer
from toylab.tasks.base import CounterfactualPair, logit_diff

ABLATIONS = ("zero", "mean", "resample")

Index = tuple  # an index into an activation: (..., head, slice) for one head, () for all


def _resolve(model: Transformer, target: str) -> tuple[str, Index]:
    """A hook name or component id -> (hook name, index of the slice to ablate)."""
    if target in model.hook_points:
        return target, (...,)
    try:
        kind, layer, index = comp.parse(target)
    except ValueError:
        ids = comp.nodes(model.cfg, neurons=False)
        raise UnknownNameError(target, list(model.hook_points) + ids, what="hook name or component id") from None
    if kind == "logits":
        raise ValueError("'logits' is a receiver, not an activation; ablate a sender (a head, MLP or embedding)")
    try:
        comp.check_component(target, model.cfg)
    except ValueError as reason:  # a well-formed id this model lacks, e.g. L5H0 in a 2-layer model
        error = UnknownNameError(target, comp.nodes(model.cfg, neurons=False), what="component id")
        error.message = f"{reason}; {error.message}"
        raise error from None
    if kind == "head":
        return f"blocks.{layer}.attn.hook_z", (slice(None), slice(None), index)  # [batch, pos, d_head]
    if kind == "mlp":
        return f"blocks.{layer}.hook_mlp_out", (...,)
    if kind == "neuron":
        return f"blocks.{layer}.mlp.hook_post", (..., index)  # [batch, pos]
    return f"hook_{kind}", (...,)  # embed, pos_embed


@contextmanager
def ablate(model: Transformer, targets: str | Sequence[str], method: str = "zero",
           reference: Tensor | None = None) -> Iterator[Transformer]:
    """Within the block, every forward pass of ``model`` runs with ``targets`` ablated.

    ``reference`` (tokens [batch, pos]) is required for "mean" and "resample"; its
    activations are recorded once, on entry, from the unablated model. The hooks are
    removed on exit, also when the block raises; the model's weights are never touched.

        with ablate(model, ["L0H1", "L1H1"], "resample", pair.corrupted.tokens):
            logits = model(pair.clean.tokens)
    """
    if method not in ABLATIONS:
        raise ValueError(f"unknown ablation method {method!r}; choose one of {ABLATIONS}")
    targets = [targets] if isinstance(targets, str) else list(targets)
    specs = [_resolve(model, t) for t in targets]
    if method != "zero" and reference is None:
        raise ValueError(f"{method} ablation needs reference tokens [batch, pos]: pass reference=...")
    if method == "zero" and reference is not None:
        raise ValueError("zero ablation takes no reference; drop reference=, or use method='mean'/'resample'")
    values: dict[str, Tensor] = {}
    if reference is not None:
        reference = model._check_tokens(reference)
        with torch.no_grad():
            _, cache = model.run_with_cache(reference, names=sorted({hook for hook, _ in specs}))
        values = {hook: cache[hook] for hook, _ in specs}  # [batch_ref, pos, ...]
        if method == "mean":
            values = {hook: act.mean(0, keepdim=True) for hook, act in values.items()}  # [1, pos, ...]

    def make_hook(index: Index) -> Callable[[Tensor, HookPoint], Tensor]:
        def hook(x: Tensor, point: HookPoint) -> Tensor:
            x = x.clone()  # never write into the forward pass's own tensor
            if method == "zero":
                x[index] = 0.0
                return x
            value = values[point.name]
            if method == "resample" and value.shape[0] != x.shape[0]:
                raise ValueError(
                    f"resample ablation: the reference has {value.shape[0]} rows but the input has "
                    f"{x.shape[0]}; row i is resampled from reference row i, so pass a reference "
                    "of the input's shape"
                )
            if value.shape[1] != x.shape[1]:
                raise ValueError(
                    f"{method} ablation: the reference has {value.shape[1]} positions but the input "
                    f"has {x.shape[1]}; pass a reference of the input's sequence length"
                )
            x[index] = value.expand_as(x)[index]
            return x
        return hook

    with model.hooks([(hook, make_hook(index)) for hook, index in specs]):
        yield model


@dataclass(frozen=True)
class AblationScores:
    method: str
    components: list[str]
    baseline: float  # the metric without ablation
    scores: Tensor  # [component]: the metric with that component ablated alone

    @property
    def effect(self) -> Tensor:
        """How much ablating each component lowers the metric: baseline - scores, [component]."""
        return self.baseline - self.scores

    def __getitem__(self, component: str) -> float:
        """The effect of ablating one component, e.g. ``scores["L1H1"]``."""
        if component not in self.components:
            raise UnknownNameError(component, self.components, what="scored component")
        return float(self.effect[self.components.index(component)])

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` components whose ablation lowers the metric most, as (id, effect)."""
        order = self.effect.argsort(descending=True)[:k]
        return [(self.components[int(i)], float(self.effect[i])) for i in order]


@torch.no_grad()
def ablation_scores(model: Transformer, pair: CounterfactualPair, components: Sequence[str] | None = None,
                    method: str = "resample", metric: Callable[[Tensor], Tensor] | None = None) -> AblationScores:
    """Ablate each component alone on ``pair.clean`` and record the metric.

    ``components`` defaults to every head, then every MLP. ``metric(logits)`` maps the
    logits of the clean input [batch, pos, d_vocab_out] to a scalar; by default the
    clean-minus-corrupted logit difference. Mean ablation averages over ``pair.clean``;
    resample ablation takes row i's activation from ``pair.corrupted`` row i.
    """
    if method not in ABLATIONS:
        raise ValueError(f"unknown ablation method {method!r}; choose one of {ABLATIONS}")
    cfg = model.cfg
    if components is None:
        components = [comp.head_id(layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
        components += [] if cfg.attn_only else [f"MLP{layer}" for layer in range(cfg.n_layers)]
    components = list(components)
    if metric is None:
        def metric(logits: Tensor) -> Tensor:
            return logit_diff(logits, pair)
    reference = {"zero": None, "mean": pair.clean.tokens, "resample": pair.corrupted.tokens}[method]
    tokens = pair.clean.tokens
    baseline = float(metric(model(tokens)))
    scores = []
    for component in components:
        with ablate(model, component, method, reference):
            scores.append(float(metric(model(tokens))))
    return AblationScores(method, components, baseline, torch.tensor(scores, device="cpu"))  # [component]
