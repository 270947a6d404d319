"""Activation patching and path patching, fast and exact.

Axis names used in shape comments and in ``PatchingResult.axes``:
    batch            independent sequences (rows of a counterfactual pair)
    pos              token position (query_pos / key_pos for the two ends of attention)
    layer, head      a head's address; ``layer`` alone indexes a block
    d_model, d_head  residual stream width, width of one head's query/key/value
    d_vocab_out      output logits
    rows             patches of one chunk stacked along batch: [patch * batch]

The *base* run is the input the model runs on; the *source* run supplies the activation
patched in. ``direction="denoise"`` runs the corrupted input and patches in clean
activations (TransformerLens's convention); ``"noise"`` runs the clean input and patches
in corrupted ones. Either way a score is normalised the same way,

    score = (metric(patched) - metric(corrupted)) / (metric(clean) - metric(corrupted)),

so 1 means clean-like and 0 corrupted-like: denoising scores the fraction of the effect a
patch restores, noising the fraction left standing after it (1 - score is what it destroyed).

Targets (``PATCH_TARGETS``) and the axes of their scores:
    resid_pre, resid_mid, resid_post, attn_out, mlp_out   (layer, pos)
    head       hook_z of one head, every position         (layer, head)
    head_pos   hook_z of one head at one position         (layer, head, pos)
    q, k, v, pattern   one head's slice, every position   (layer, head)

``naive_activation_patching`` and ``naive_path_patching`` are the references: one hooked
forward of the whole model per patch. The fast versions give the same scores (to float
rounding) by recomputing only what a patch can change. They cache the base run once; a
patch at layer l starts from the cached residual stream there; in a causal model a patch
whose first change is at position p leaves positions < p alone, so only positions >= p are
computed, attending to the cached keys and values of the earlier ones; a patch that
changes nothing is not run at all; and patches of one layer run together in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from toylab.models import Transformer
from toylab.models.layernorm import LayerNorm
from toylab.tasks.base import CounterfactualPair, logit_diff
from toylab.truth import components as comp

PATCH_TARGETS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out",
                 "head", "head_pos", "q", "k", "v", "pattern")
DIRECTIONS = ("denoise", "noise")
RECEIVER_INPUTS = ("q", "k", "v", "resid")

Metric = Callable[[Tensor], Tensor]

_STREAM = {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"}
_HEAD_HOOK = {"head": "z", "head_pos": "z", "q": "q", "k": "k", "v": "v", "pattern": "pattern"}
# Rows (patch x batch x suffix positions) per chunked forward. On a 2-core CPU stacking
# patches did not pay (a chunk of 64 x 32 rows ran slower than one forward per patch: the ops
# are memory-bound), so a chunk holds one patch unless the patch itself is this small.
_CHUNK_ROWS = 512


@dataclass(frozen=True)
class PatchingResult:
    target: str  # one of PATCH_TARGETS, or "path:<receivers>.<input>" for path patching
    scores: Tensor  # shape given by axes, e.g. [layer, pos]; NaN where nothing was patched
    axes: tuple[str, ...]  # ("layer", "pos"), ("layer", "head") or ("layer", "head", "pos")
    clean_metric: float
    corrupted_metric: float
    direction: str

    def __getitem__(self, head: str) -> float:
        """The score of a head by component id, e.g. ``result["L1H2"]`` (axes (layer, head))."""
        if self.axes != ("layer", "head"):
            raise ValueError(f"head ids index results with axes ('layer', 'head'), not {self.axes}; "
                             "index .scores instead")
        kind, layer, index = comp.parse(head)
        if kind != "head":
            raise ValueError(f"{head!r} is not a head id such as 'L1H2'")
        if not (0 <= layer < self.scores.shape[0] and 0 <= index < self.scores.shape[1]):
            raise ValueError(f"{head!r} is outside this model's {tuple(self.scores.shape)} heads")
        return float(self.scores[layer, index])

    def top(self, k: int = 3, absolute: bool = False) -> list[tuple[str, float]]:
        """The ``k`` highest scores as (label, score), best first; by |score| if ``absolute``.

        Labels are "L1H1" for (layer, head), "L0 pos 5" for (layer, pos), "L1H1 pos 5" for
        (layer, head, pos). Unpatched (NaN) entries are skipped.
        """
        flat = self.scores.flatten()
        key = flat.abs() if absolute else flat
        order = [int(i) for i in key.nan_to_num(float("-inf")).argsort(descending=True) if not flat[i].isnan()]
        return [(self._label(i), float(flat[i])) for i in order[:k]]

    def _label(self, flat_index: int) -> str:
        index = [int(i) for i in torch.unravel_index(torch.tensor(flat_index), self.scores.shape)]
        if self.axes == ("layer", "pos"):
            return f"L{index[0]} pos {index[1]}"
        label = comp.head_id(index[0], index[1])
        return label + (f" pos {index[2]}" if len(index) == 3 else "")


# ---- the public functions --------------------------------------------------------------


@torch.no_grad()
def activation_patching(model: Transformer, pair: CounterfactualPair, target: str,
                        metric: Metric | None = None, direction: str = "denoise") -> PatchingResult:
    """Patch ``target`` from the source run into the base run, one patch per score entry.

    The same scores as ``naive_activation_patching``, computed by recomputing only what
    each patch can change (see the module docstring).
    """
    setup = _Setup.make(model, pair, target, metric, direction)
    patches = [_activation_patch(setup, target, index) for index in _indices(setup.model.cfg, target, setup.n)]
    return setup.result(target, _axes(target), _run_patches(setup, patches, _shape(setup.model.cfg, target, setup.n)))


@torch.no_grad()
def naive_activation_patching(model: Transformer, pair: CounterfactualPair, target: str,
                              metric: Metric | None = None, direction: str = "denoise") -> PatchingResult:
    """The reference: one hooked forward of the whole model per patch."""
    setup = _Setup.make(model, pair, target, metric, direction)
    shape = _shape(model.cfg, target, setup.n)
    scores = torch.full(shape, float("nan"))
    for index in _indices(model.cfg, target, setup.n):
        name, select = _hook_and_slice(target, index)
        source = setup.source[name]

        def patch(x: Tensor, hook, select=select, source=source) -> Tensor:
            x = x.clone()
            x[select] = source[select]
            return x

        with model.hooks([(name, patch)]):
            scores[index] = setup.score(model(setup.base_tokens))
    return setup.result(target, _axes(target), scores)


@torch.no_grad()
def path_patching(model: Transformer, pair: CounterfactualPair, receivers: str | Sequence[str],
                  receiver_input: str, senders: Sequence[str] | None = None,
                  metric: Metric | None = None, direction: str = "denoise") -> PatchingResult:
    """The effect of each sender head on the metric through one input of the receivers only.

    For each sender, every receiver's ``receiver_input`` ("q", "k", "v" of a head, "resid"
    for an MLP or the logits) reads the base run's residual stream plus the sender's
    source-minus-base output; nothing else changes, and the rest of the forward runs on from
    there. Scores [layer, head] over sender heads (default: every head upstream of the
    earliest receiver), NaN for heads that are not senders. The edge-level resample
    ablation of ``toylab.truth.ablation`` with one edge flipped computes the same thing.
    """
    setup = _Setup.make(model, pair, None, metric, direction)
    plan = _PathPlan.make(model, receivers, receiver_input, senders)
    patches = [_path_patch(setup, plan, sender) for sender in plan.senders]
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    return setup.result(plan.target, ("layer", "head"), _run_patches(setup, patches, shape))


@torch.no_grad()
def naive_path_patching(model: Transformer, pair: CounterfactualPair, receivers: str | Sequence[str],
                        receiver_input: str, senders: Sequence[str] | None = None,
                        metric: Metric | None = None, direction: str = "denoise") -> PatchingResult:
    """The reference for ``path_patching``: one hooked forward per sender."""
    setup = _Setup.make(model, pair, None, metric, direction)
    plan = _PathPlan.make(model, receivers, receiver_input, senders)
    cfg = model.cfg
    scores = torch.full((cfg.n_layers, cfg.n_heads), float("nan"))
    for layer, head in plan.senders:
        name = f"blocks.{layer}.attn.hook_result"
        delta = setup.source[name][:, :, head] - setup.base[name][:, :, head]  # [batch, pos, d_model]
        hooks = []
        for r_layer, r_head in plan.heads:
            def add(x: Tensor, hook, r_head=r_head, delta=delta) -> Tensor:  # x: [batch, pos, head, d_model]
                x = x.clone()
                x[:, :, r_head] += delta
                return x
            hooks.append((f"blocks.{r_layer}.hook_{receiver_input}_input", add))
        for r_layer in plan.mlps:
            hooks.append((f"blocks.{r_layer}.hook_mlp_in", lambda x, hook, delta=delta: x + delta))
        if plan.logits:
            hooks.append((f"blocks.{cfg.n_layers - 1}.hook_resid_post", lambda x, hook, delta=delta: x + delta))
        with model.hooks(hooks):
            scores[layer, head] = setup.score(model(setup.base_tokens))
    return setup.result(plan.target, ("layer", "head"), scores)


# ---- shared setup: the two runs, the metric, normalisation ----------------------------


def _cache_names(cfg) -> list[str]:
    names = []
    for layer in range(cfg.n_layers):
        names += [f"blocks.{layer}.hook_{n}" for n in ("resid_pre", "attn_out", "resid_mid", "resid_post")]
        names += [f"blocks.{layer}.attn.hook_{n}" for n in ("q", "k", "v", "pattern", "z", "result")]
        if not cfg.attn_only:
            names.append(f"blocks.{layer}.hook_mlp_out")
    return names


@dataclass
class _Setup:
    model: Transformer
    metric: Metric
    direction: str
    base_tokens: Tensor  # [batch, pos]
    base: dict[str, Tensor]  # hook name -> activation of the base run
    source: dict[str, Tensor]  # hook name -> activation of the source run
    base_logits: Tensor  # [batch, pos, d_vocab_out]
    clean_metric: float
    corrupted_metric: float
    base_metric: float
    n: int  # sequence length

    @classmethod
    def make(cls, model, pair, target, metric, direction) -> _Setup:
        cfg = model.cfg
        if not isinstance(pair, CounterfactualPair):
            raise TypeError(f"pair must be a CounterfactualPair, got {type(pair).__name__}")
        if target is not None and target not in PATCH_TARGETS:
            raise ValueError(f"unknown patching target {target!r}; choose one of {PATCH_TARGETS}")
        if target == "mlp_out" and cfg.attn_only:
            raise ValueError("target 'mlp_out' needs an MLP, but the model is attention-only")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        n = pair.clean.tokens.shape[1]
        if n > cfg.n_ctx:
            raise ValueError(f"the pair's sequences have {n} positions but the model's n_ctx is {cfg.n_ctx}; "
                             "truncate the pair or use a task that fits the model")
        if metric is None:
            def metric(logits: Tensor) -> Tensor:
                return logit_diff(logits, pair)
        names = _cache_names(cfg)
        clean_logits, clean = model.run_with_cache(pair.clean.tokens, names=names)
        corrupt_logits, corrupt = model.run_with_cache(pair.corrupted.tokens, names=names)
        clean_metric, corrupted_metric = _scalar(metric(clean_logits)), _scalar(metric(corrupt_logits))
        if clean_metric == corrupted_metric:
            raise ValueError(f"the metric is {clean_metric} on both the clean and the corrupted run, so a "
                             "patch's effect cannot be normalised; choose a pair or metric that differ")
        denoise = direction == "denoise"
        return cls(
            model=model, metric=metric, direction=direction,
            base_tokens=model._check_tokens(pair.corrupted.tokens if denoise else pair.clean.tokens),
            base=dict(corrupt if denoise else clean), source=dict(clean if denoise else corrupt),
            base_logits=corrupt_logits if denoise else clean_logits,
            clean_metric=clean_metric, corrupted_metric=corrupted_metric,
            base_metric=corrupted_metric if denoise else clean_metric, n=n,
        )

    def score(self, logits: Tensor) -> float:
        value = _scalar(self.metric(logits))
        return (value - self.corrupted_metric) / (self.clean_metric - self.corrupted_metric)

    def result(self, target: str, axes: tuple[str, ...], scores: Tensor) -> PatchingResult:
        return PatchingResult(target, scores, axes, self.clean_metric, self.corrupted_metric, self.direction)


def _scalar(value) -> float:
    if not isinstance(value, Tensor) or value.numel() != 1:
        got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"the metric must return a scalar tensor (one number for the whole batch), got {got}; "
                         "average over batch and positions, e.g. logit_diff(logits, pair)")
    return float(value.detach())


def _axes(target: str) -> tuple[str, ...]:
    if target in _STREAM:
        return ("layer", "pos")
    return ("layer", "head", "pos") if target == "head_pos" else ("layer", "head")


def _shape(cfg, target: str, n: int) -> tuple[int, ...]:
    return {("layer", "pos"): (cfg.n_layers, n), ("layer", "head"): (cfg.n_layers, cfg.n_heads),
            ("layer", "head", "pos"): (cfg.n_layers, cfg.n_heads, n)}[_axes(target)]


def _indices(cfg, target: str, n: int) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in index) for index in torch.cartesian_prod(
        *[torch.arange(s) for s in _shape(cfg, target, n)]).reshape(-1, len(_axes(target)))]


def _hook_and_slice(target: str, index: tuple[int, ...]) -> tuple[str, tuple]:
    """The hook a patch replaces and the part of its tensor it replaces."""
    layer = index[0]
    if target in _STREAM:
        return f"blocks.{layer}.hook_{target}", (slice(None), index[1])  # [batch, pos, d_model]
    name = f"blocks.{layer}.attn.hook_{_HEAD_HOOK[target]}"
    if target == "pattern":
        return name, (slice(None), index[1])  # [batch, head, query_pos, key_pos]
    if target == "head_pos":
        return name, (slice(None), index[2], index[1])  # [batch, pos, head, d_head]
    return name, (slice(None), slice(None), index[1])


# ---- the fast path: patches, chunks, and a forward that starts part-way ---------------


@dataclass
class _Patch:
    """One score entry's forward: start at ``(layer, stage)`` with what changed there.

    ``build(start)`` gives, for positions >= start, the residual stream at the entry point
    [batch, pos - start, d_model] and the replacements the forward applies on the way:
    a whole activation of the entry layer ({"z": [batch, pos - start, head, d_head], ...}),
    or deltas added to receivers' inputs ({(layer, "k", head): [batch, pos - start, d_model]}).
    """

    index: tuple[int, ...]
    layer: int  # n_layers for "only the unembedding is left"
    stage: str  # "pre": the block's input; "mid": after its attention
    first: int | None  # first position the patch changes; None: it changes nothing
    build: Callable[[int], tuple[Tensor, dict]] = field(repr=False)
    group: tuple = ()  # patches of one group can share a forward


def _first_change(setup: _Setup, name: str, select: tuple, pos_dim: int) -> int | None:
    """The first position where the source differs from the base in the patched slice."""
    differs = setup.source[name][select] != setup.base[name][select]
    if pos_dim is None:  # the slice holds one position
        return None if not differs.any() else -1
    other = [d for d in range(differs.ndim) if d != pos_dim]
    where = differs.any(dim=other) if other else differs  # [pos]
    if not where.any():
        return None
    return int(where.nonzero()[0])


def _activation_patch(setup: _Setup, target: str, index: tuple[int, ...]) -> _Patch:
    cfg, base, source = setup.model.cfg, setup.base, setup.source
    layer = index[0]
    name, select = _hook_and_slice(target, index)
    causal = cfg.attention_dir == "causal"
    if target in _STREAM:
        pos = index[1]
        first = _first_change(setup, name, select, None)
        first = None if first is None else (pos if causal else 0)
        # The stream where the patch lands, and the activation the patched one adds to there,
        # added as the model adds it so the two paths round alike.
        entry, stream, addend = {
            "resid_pre": ((layer, "pre"), f"blocks.{layer}.hook_resid_pre", None),
            "resid_mid": ((layer, "mid"), f"blocks.{layer}.hook_resid_mid", None),
            "resid_post": ((layer + 1, "pre"), f"blocks.{layer}.hook_resid_post", None),
            "attn_out": ((layer, "mid"), f"blocks.{layer}.hook_resid_mid", f"blocks.{layer}.hook_resid_pre"),
            "mlp_out": ((layer + 1, "pre"), f"blocks.{layer}.hook_resid_post", f"blocks.{layer}.hook_resid_mid"),
        }[target]

        def build(start: int) -> tuple[Tensor, dict]:
            resid = base[stream][:, start:].clone()  # [batch, pos - start, d_model]
            patched = source[name][:, pos]
            resid[:, pos - start] = patched if addend is None else base[addend][:, pos] + patched
            return resid, {}

        return _Patch(index, *entry, first, build, group=entry)

    hook = _HEAD_HOOK[target]
    head = index[1]
    if target == "head_pos":
        pos = index[2]
        first = _first_change(setup, name, select, None)
        first = None if first is None else (pos if causal else 0)
    else:
        pos_dim = 2 if target == "pattern" else 1
        first = _first_change(setup, name, select, pos_dim - 1)
        first = None if first is None else (first if causal else 0)

    def build(start: int) -> tuple[Tensor, dict]:
        resid = base[f"blocks.{layer}.hook_resid_pre"][:, start:]  # [batch, pos - start, d_model]
        if hook == "pattern":
            value = base[name][:, :, start:].clone()  # [batch, head, query_pos - start, key_pos]
            value[:, head] = source[name][:, head, start:]
        else:
            value = base[name][:, start:].clone()  # [batch, pos - start, head, d_head]
            if target == "head_pos":
                value[:, pos - start, head] = source[name][:, pos, head]
            else:
                value[:, :, head] = source[name][:, start:, head]
        return resid, {hook: value}

    return _Patch(index, layer, "pre", first, build, group=(layer, hook))


@dataclass(frozen=True)
class _PathPlan:
    heads: tuple[tuple[int, int], ...]  # receiving heads (layer, head)
    mlps: tuple[int, ...]  # receiving MLPs by layer
    logits: bool
    receiver_input: str
    senders: tuple[tuple[int, int], ...]  # sender heads (layer, head)
    target: str

    @classmethod
    def make(cls, model, receivers, receiver_input, senders) -> _PathPlan:
        cfg = model.cfg
        receivers = [receivers] if isinstance(receivers, str) else list(receivers)
        if not receivers:
            raise ValueError("path patching needs at least one receiver, e.g. 'L1H1' or 'logits'")
        if receiver_input not in RECEIVER_INPUTS:
            raise ValueError(f"receiver_input must be one of {RECEIVER_INPUTS}, got {receiver_input!r}")
        heads, mlps, logits = [], [], False
        for receiver in receivers:
            comp.check_component(receiver, cfg)
            kind, layer, index = comp.parse(receiver)
            if kind == "head":
                heads.append((layer, index))
            elif kind == "mlp":
                mlps.append(layer)
            elif kind == comp.OUTPUT:
                logits = True
            else:
                raise ValueError(f"{receiver!r} cannot receive: receivers are heads, MLPs and 'logits'")
            wanted = comp.QKV if kind == "head" else ("resid",)
            if receiver_input not in wanted:
                raise ValueError(f"{receiver!r} reads through {list(wanted)}, not {receiver_input!r}")
        earliest = min(comp.layer_of(r) for r in receivers)
        if senders is None:
            senders = [comp.head_id(layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)
                       if comp.layer_of(comp.head_id(layer, h)) < earliest]
        sender_heads = []
        for sender in senders:
            comp.check_component(sender, cfg)
            kind, layer, index = comp.parse(sender)
            if kind != "head":
                raise ValueError(f"senders are heads (scores are [layer, head]), got {sender!r}")
            if comp.layer_of(sender) >= earliest:
                raise ValueError(f"sender {sender!r} is not upstream of every receiver {receivers}")
            sender_heads.append((layer, index))
        if not sender_heads:
            raise ValueError(f"no head lies upstream of {receivers}, so there is nothing to patch")
        return cls(tuple(heads), tuple(mlps), logits, receiver_input, tuple(sender_heads),
                   f"path:{'+'.join(receivers)}.{receiver_input}")


def _path_patch(setup: _Setup, plan: _PathPlan, sender: tuple[int, int]) -> _Patch:
    cfg = setup.model.cfg
    layer, head = sender
    name = f"blocks.{layer}.attn.hook_result"
    delta = setup.source[name][:, :, head] - setup.base[name][:, :, head]  # [batch, pos, d_model]
    first = _first_change(setup, name, (slice(None), slice(None), head), 1)
    if first is not None and cfg.attention_dir != "causal":
        first = 0
    entries = [(r_layer, "pre") for r_layer, _ in plan.heads] + [(r_layer, "mid") for r_layer in plan.mlps]
    entries.append((cfg.n_layers, "pre") if plan.logits else (cfg.n_layers + 1, "pre"))
    entry = min(entries, key=lambda e: (e[0], e[1] == "mid"))
    stream = (f"blocks.{entry[0]}.hook_resid_{entry[1]}" if entry[0] < cfg.n_layers
              else f"blocks.{cfg.n_layers - 1}.hook_resid_post")

    def build(start: int) -> tuple[Tensor, dict]:
        d = delta[:, start:]
        reads = {(r_layer, plan.receiver_input, r_head): d for r_layer, r_head in plan.heads}
        reads.update({(r_layer, "mlp"): d for r_layer in plan.mlps})
        if plan.logits:
            reads[(cfg.n_layers, "logits")] = d
        return setup.base[stream][:, start:], reads

    return _Patch(sender, *entry, first, build, group=entry)


def _run_patches(setup: _Setup, patches: list[_Patch], shape: tuple[int, ...]) -> Tensor:
    """Score every patch, running those of a group together in chunks."""
    scores = torch.full(shape, float("nan"))
    base_score = setup.score(setup.base_logits)
    todo: dict[tuple, list[_Patch]] = {}
    for patch in patches:
        if patch.first is None:  # source == base where it patches: the base run, exactly
            scores[patch.index] = base_score
        else:
            todo.setdefault((patch.group, patch.layer, patch.stage), []).append(patch)
    batch, n = setup.base_tokens.shape
    for group in todo.values():
        group.sort(key=lambda p: p.first)
        i = 0
        while i < len(group):
            start = group[i].first
            size = max(1, _CHUNK_ROWS // (batch * (n - start)))
            chunk = group[i:i + size]
            i += len(chunk)
            built = [p.build(start) for p in chunk]
            resid = torch.cat([r for r, _ in built])  # [rows, pos - start, d_model]
            extras = {key: torch.cat([e[key] for _, e in built]) for key in built[0][1]}
            logits = _run_from(setup, chunk[0].layer, chunk[0].stage, resid, start, extras)
            prefix = setup.base_logits[:, :start]  # [batch, start, d_vocab_out]: unchanged
            for patch, suffix in zip(chunk, logits.split(batch)):
                scores[patch.index] = setup.score(torch.cat([prefix, suffix], dim=1))
    return scores


def _norm(ln, x: Tensor) -> Tensor:
    return ln.normalize(x) if isinstance(ln, LayerNorm) else x


def _run_from(setup: _Setup, layer: int, stage: str, resid: Tensor, start: int, extras: dict) -> Tensor:
    """The base run's logits at positions >= ``start``, resumed at ``(layer, stage)``.

    Mirrors ``TransformerBlock.forward`` on the model's weights without firing hooks.
    ``resid`` [rows, pos - start, d_model] is the stream entering there, rows = patch x batch.
    In a causal model positions < start are the base run's, so attention reads their cached
    keys and values. ``extras``: whole activations of the entry layer that replace the
    computed ones ("q", "k", "v", "pattern", "z"), and deltas added to receivers' inputs
    ((layer, "q"|"k"|"v", head), (layer, "mlp"), (n_layers, "logits")).
    """
    model = setup.model
    cfg = model.cfg
    replace = {key: value for key, value in extras.items() if isinstance(key, str)}
    reads = {key: value for key, value in extras.items() if isinstance(key, tuple)}
    for index in range(layer, cfg.n_layers):
        block = model.blocks[index]
        if not (index == layer and stage == "mid"):
            resid = resid + _attention(setup, index, resid, start, replace if index == layer else {}, reads)
        if block.mlp is not None:
            mlp_in = resid + reads.get((index, "mlp"), 0)
            mlp = block.mlp
            hidden = mlp.act(_norm(block.ln2, mlp_in) @ mlp.W_in + mlp.b_in)  # [rows, pos - start, d_mlp]
            resid = resid + (hidden @ mlp.W_out + mlp.b_out)
    resid = resid + reads.get((cfg.n_layers, "logits"), 0)
    return _norm(model.ln_final, resid) @ model.unembed.W_U + model.unembed.b_U  # [rows, pos - start, d_vocab_out]


def _attention(setup: _Setup, layer: int, resid: Tensor, start: int, replace: dict, reads: dict) -> Tensor:
    """One block's attention output [rows, pos - start, d_model] for queries >= start."""
    block = setup.model.blocks[layer]
    attn = block.attn
    rows, n = resid.shape[0], setup.n
    if "z" in replace:
        z = replace["z"]
    else:
        x = _norm(block.ln1, resid)  # [rows, pos - start, d_model]
        qkv = {}
        for kind, W, b in (("q", attn.W_Q, attn.b_Q), ("k", attn.W_K, attn.b_K), ("v", attn.W_V, attn.b_V)):
            if kind in replace:
                qkv[kind] = replace[kind]
                continue
            out = torch.einsum("bpm,hmd->bphd", x, W) + b  # [rows, pos - start, head, d_head]
            for (r_layer, r_kind, *r_head), delta in reads.items():
                if r_layer == layer and r_kind == kind:  # a receiver reading the stream plus a delta
                    h = r_head[0]
                    out[:, :, h] = _norm(block.ln1, resid + delta) @ W[h] + b[h]
            qkv[kind] = out
        q = qkv["q"]
        k, v = (_with_prefix(setup, f"blocks.{layer}.attn.hook_{kind}", qkv[kind], start, rows)
                for kind in ("k", "v"))  # [rows, pos, head, d_head]
        if "pattern" in replace:
            pattern = replace["pattern"]  # [rows, head, query_pos - start, key_pos]
        else:
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / attn.scale
            scores = scores.masked_fill(~attn.mask[start:n, :n], float("-inf"))
            pattern = scores.softmax(dim=-1)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)  # [rows, pos - start, head, d_head]
    result = torch.einsum("bphd,hdm->bphm", z, attn.W_O)  # [rows, pos - start, head, d_model]
    return result.sum(dim=2) + attn.b_O


def _with_prefix(setup: _Setup, name: str, suffix: Tensor, start: int, rows: int) -> Tensor:
    if start == 0:
        return suffix
    prefix = setup.base[name][:, :start]  # [batch, start, head, d_head]
    return torch.cat([prefix.repeat(rows // prefix.shape[0], 1, 1, 1), suffix], dim=1)
