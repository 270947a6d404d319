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
rounding) by recomputing only what a patch can change. They run the clean and corrupted
inputs once, stacked in one batch, through the hook-free forward of ``toylab.models.fast``
(``HookFree``), caching what patches read (a model with hooks attached goes to the naive
references instead, which fire them); a patch at layer l resumes that forward from the
cached residual stream there (a head's z, q, k, v or pattern patch starts after that
layer's attention, adding that one head's changed output, recomputed from its patched
inputs and the base run's others); only the batch rows
whose patched slice differs from the base run's are recomputed, the others keep the base
logits; in a causal model a row whose first change is at position p keeps positions < p
(a chunk starts at its rows' least p, attending to the cached keys and values before it);
with the default metric (logit_diff) positions after the last scored one, queries of the
last block before the first scored one, and logits at unscored positions are not computed,
and rows whose change comes after everything scored are skipped; a patch that changes
nothing read is not run at all; and the changed rows of one layer's patches are stacked
into forwards of about ``_CHUNK_ROWS`` token rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from toylab import components as comp
from toylab.interventions import ablated_logits_batch
from toylab.methods.attribution import EdgeAttribution
from toylab.models import Transformer
from toylab.models.fast import HookFree
from toylab.tasks.base import CounterfactualPair, logit_diff, logit_diff_mask, logit_diff_terms, normalised

PATCH_TARGETS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out",
                 "head", "head_pos", "q", "k", "v", "pattern")
DIRECTIONS = ("denoise", "noise")
RECEIVER_INPUTS = ("q", "k", "v", "resid")

Metric = Callable[[Tensor], Tensor]

_STREAM = {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"}
_HEAD_HOOK = {"head": "z", "head_pos": "z", "q": "q", "k": "k", "v": "v", "pattern": "pattern"}
# Token rows (changed rows x positions) per stacked forward. Once each patch recomputes only
# its changed rows, stacking patches pays up to about this size (measured on induction-2l:
# 512 -> 2048 saved ~10%, 8192 and more was slower again: the ops turn memory-bound).
_CHUNK_ROWS = 2048


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
        index = [int(i) for i in torch.unravel_index(torch.tensor(flat_index, device="cpu"), self.scores.shape)]
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
    if model.has_hooks():  # the fast path fires no hooks; the reference fires them all
        return naive_activation_patching(model, pair, target, metric, direction)
    setup = _Setup.make(model, pair, target, metric, direction)
    patches = [_activation_patch(setup, target, index) for index in _indices(setup.model.cfg, target, setup.n)]
    return setup.result(target, _axes(target), _run_patches(setup, patches, _shape(setup.model.cfg, target, setup.n)))


@torch.no_grad()
def naive_activation_patching(model: Transformer, pair: CounterfactualPair, target: str,
                              metric: Metric | None = None, direction: str = "denoise") -> PatchingResult:
    """The reference: one hooked forward of the whole model per patch."""
    setup = _Setup.make(model, pair, target, metric, direction, hooked=True)
    shape = _shape(model.cfg, target, setup.n)
    scores = torch.full(shape, float("nan"), device="cpu")  # figures for the reader, filled one by one
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
    ablation of ``toylab.interventions`` with one edge flipped computes the same thing.
    """
    if model.has_hooks():  # the fast path fires no hooks; the reference fires them all
        return naive_path_patching(model, pair, receivers, receiver_input, senders, metric, direction)
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
    setup = _Setup.make(model, pair, None, metric, direction, hooked=True)
    plan = _PathPlan.make(model, receivers, receiver_input, senders)
    cfg = model.cfg
    scores = torch.full((cfg.n_layers, cfg.n_heads), float("nan"), device="cpu")  # [layer, head]
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


@torch.no_grad()
def edge_patching(model: Transformer, pair: CounterfactualPair, *, direction: str = "noise",
                  metric: Metric | None = None) -> EdgeAttribution:
    """Every edge of the graph patched alone, for real: what EAP estimates, measured.

    For edge (s, r, kind) the receiver's input reads the base run's stream plus s's
    source-minus-base output, and the forward runs on from there (path patching of one
    edge). ``direction="noise"``: the clean run with the corrupted sender,
    ``scores[e] = (m_clean - m) / (m_clean - m_corr)``, the share noising e destroys;
    ``"denoise"``: the corrupted run with the clean sender, ``scores[e] = (m - m_corr) /
    (m_clean - m_corr)``, the share it restores. Every edge but pos_embed's (the same in
    both runs). Each patch resumes the forward at its receiver's layer on the rows the edge
    changes; patches into one receiver input share forwards. ``naive_edge_patching``, one
    hooked forward per edge through ``toylab.interventions``, gives the same scores.
    """
    if direction not in ("noise", "denoise"):
        raise ValueError(f"direction must be 'noise' or 'denoise', got {direction!r}")
    if model.has_hooks():  # the fast path fires no hooks; the reference fires them all
        return naive_edge_patching(model, pair, direction=direction, metric=metric)
    setup = _Setup.make(model, pair, None, metric, direction)
    edges = [e for e in comp.edges(model.cfg) if e.sender != "pos_embed"]
    patched = _run_patches(setup, [_edge_patch(setup, i, e) for i, e in enumerate(edges)], (len(edges),))
    # patched is the normalised metric: 1 clean-like, 0 corrupted-like.
    shares = 1 - patched if direction == "noise" else patched  # [edge]
    return EdgeAttribution(f"edge-patching-{direction}", {e: float(v) for e, v in zip(edges, shares)},
                           setup.clean_metric, setup.corrupted_metric)


@torch.no_grad()
def naive_edge_patching(model: Transformer, pair: CounterfactualPair, *, direction: str = "noise",
                        metric: Metric | None = None) -> EdgeAttribution:
    """The reference for ``edge_patching``: each edge ablated alone by ``toylab.interventions``
    (the edge-ablation engine the certificates use), the runs stacked along the batch."""
    if direction not in ("noise", "denoise"):
        raise ValueError(f"direction must be 'noise' or 'denoise', got {direction!r}")
    if metric is None:
        def metric(logits: Tensor) -> Tensor:
            return logit_diff(logits.cpu(), pair)
    clean_tokens, corrupted_tokens = pair.clean.tokens.to(model.device), pair.corrupted.tokens.to(model.device)
    edges = [e for e in comp.edges(model.cfg) if e.sender != "pos_embed"]
    everything = set(comp.edges(model.cfg))
    m_clean, m_corr = _scalar(metric(model(clean_tokens))), _scalar(metric(model(corrupted_tokens)))
    normalised(m_clean, m_clean, m_corr)  # raises where no score is defined
    # Noising runs the clean input and patches from the corrupted one; denoising the reverse.
    base, source = (clean_tokens, corrupted_tokens) if direction == "noise" else (corrupted_tokens, clean_tokens)
    logits = ablated_logits_batch(model, base, source, [everything - {edge} for edge in edges])  # [edge, b, p, v]
    scores = {}
    for edge, one in zip(edges, logits):
        m = _scalar(metric(one))
        scores[edge] = (m_clean - m if direction == "noise" else m - m_corr) / (m_clean - m_corr)
    return EdgeAttribution(f"edge-patching-{direction}", scores, m_clean, m_corr)


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
    metric: Metric | None
    direction: str
    base_tokens: Tensor  # [batch, pos]
    n: int  # sequence length
    reads_until: Tensor  # [batch]: the metric reads no position >= this of a row (causal, default metric)
    scored: Tensor | None = None  # [batch, pos] positions logit_diff scores; None for a user metric
    answers: tuple[Tensor, Tensor] | None = None  # [batch, pos] clean and corrupted answers (clamped), or None
    # Filled from the two runs:
    base: dict[str, Tensor] = field(default_factory=dict)  # hook name -> activation of the base run
    source: dict[str, Tensor] = field(default_factory=dict)  # hook name -> activation of the source run
    base_logits: Tensor | None = None  # [batch, pos, d_vocab_out]; None when only logit_diff's terms were computed
    base_diff: Tensor | None = None  # [batch, pos] logit_diff's terms on the base run, or None
    clean_metric: float = float("nan")
    corrupted_metric: float = float("nan")
    base_metric: float = float("nan")
    forward: HookFree | None = None  # the hook-free forward of the model, its weights laid out once per call
    differs: dict = field(default_factory=dict)  # hook name -> where the two runs differ (_changed_rows)

    @classmethod
    @torch.no_grad()
    def make(cls, model, pair, target, metric, direction, hooked: bool = False) -> _Setup:
        """Validate, then run the clean and corrupted inputs once and cache what patches read.

        ``hooked``: cache through ``model.run_with_cache`` (every hook fires, every logit is
        computed), as the naive references do; otherwise through ``HookFree.resid_from``
        (toylab.models.fast), both inputs stacked in one batch, unembedding only the scored positions.
        """
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
        denoise = direction == "denoise"
        clean_tokens, corrupt_tokens = model._check_tokens(pair.clean.tokens), model._check_tokens(pair.corrupted.tokens)
        batch = clean_tokens.shape[0]
        setup = cls(model=model, metric=metric, direction=direction,
                    base_tokens=corrupt_tokens if denoise else clean_tokens, n=n,
                    reads_until=torch.full((batch,), n, device=model.device), forward=HookFree(model))
        if metric is None:  # logit_diff reads only the scored positions: skip the rest
            setup.metric = lambda logits: logit_diff(logits, pair)
            setup.scored = logit_diff_mask(pair, model.device)  # [batch, pos]
            setup.answers = (pair.clean.targets.to(model.device).clamp(min=0),
                             pair.corrupted.targets.to(model.device).clamp(min=0))
            reads = setup.scored.any(dim=1)
            last = torch.where(reads, n - 1 - setup.scored.flip(1).int().argmax(dim=1), -1)
            setup.reads_until = last + 1 if cfg.attention_dir == "causal" else torch.where(reads, n, 0)
        if hooked:
            names = _cache_names(cfg)
            clean_logits, clean = model.run_with_cache(clean_tokens, names=names)
            corrupt_logits, corrupt = model.run_with_cache(corrupt_tokens, names=names)
            clean, corrupt = dict(clean), dict(corrupt)
            clean_metric, corrupted_metric = _scalar(setup.metric(clean_logits)), _scalar(setup.metric(corrupt_logits))
            setup.base_logits = corrupt_logits if denoise else clean_logits
            if setup.scored is not None:
                setup.base_diff = logit_diff_terms(setup.base_logits, pair)
        else:
            stacked = torch.cat([clean_tokens, corrupt_tokens])  # [2 * batch, pos]
            cache: dict[str, Tensor] = {}
            final, _ = setup.forward.resid_from(setup.forward.embed(stacked), record=cache)  # [2 * batch, pos, d_model]
            clean, corrupt = ({name: x[:batch] for name, x in cache.items()},
                              {name: x[batch:] for name, x in cache.items()})
            if setup.scored is None:
                clean_logits, corrupt_logits = setup.forward.unembed(final).split(batch)
                clean_metric, corrupted_metric = _scalar(setup.metric(clean_logits)), _scalar(setup.metric(corrupt_logits))
                setup.base_logits = corrupt_logits if denoise else clean_logits
            else:  # logit_diff from its terms, summed as it sums them
                clean_terms, corrupt_terms = setup.score_rows(final, 0, n, torch.arange(batch, device=final.device).repeat(2)).split(batch)
                count = setup.scored.sum().clamp(min=1)
                clean_metric, corrupted_metric = float(clean_terms.sum() / count), float(corrupt_terms.sum() / count)
                setup.base_diff = corrupt_terms if denoise else clean_terms
        normalised(clean_metric, clean_metric, corrupted_metric)  # raises now where no score is defined
        setup.base, setup.source = (corrupt, clean) if denoise else (clean, corrupt)
        setup.clean_metric, setup.corrupted_metric = clean_metric, corrupted_metric
        setup.base_metric = corrupted_metric if denoise else clean_metric
        return setup

    def score(self, logits: Tensor) -> float:
        return normalised(_scalar(self.metric(logits)), self.clean_metric, self.corrupted_metric)

    def score_rows(self, resid: Tensor, start: int, end: int, rows: Tensor) -> Tensor:
        """What the metric needs of a patched forward's final stream [rows, end - start, d_model].

        For logit_diff its terms [rows, end - start], unembedding only the scored positions;
        for a user metric the logits [rows, end - start, d_vocab_out].
        """
        if self.scored is None:
            return self.forward.unembed(resid)
        scored = self.scored[rows, start:end]  # [rows, end - start]
        terms = torch.zeros(scored.shape, device=resid.device)  # [rows, end - start]
        logits = self.forward.unembed(resid[scored])  # [scored, d_vocab_out]
        clean, corrupt = (a[rows, start:end][scored] for a in self.answers)
        terms[scored] = logits.gather(-1, clean[:, None])[:, 0] - logits.gather(-1, corrupt[:, None])[:, 0]
        return terms

    def score_patched(self, patches: list[_Patch], start: int, end: int, value: Tensor) -> list[float]:
        """The scores of a chunk of patches: for each, the base run with its rows at positions
        start..end-1 replaced by its part of ``value`` (``score_rows`` of the chunk)."""
        parts = value.split([len(p.rows) for p in patches])
        if self.scored is None:
            scores = []
            for patch, part in zip(patches, parts):
                logits = self.base_logits.clone()
                logits[patch.rows, start:end] = part
                scores.append(self.score(logits))
            return scores
        # logit_diff's sum over the base run's terms, changed by each patch's rows.
        base = self.base_diff[:, start:end]  # [batch, end - start]
        changes = torch.stack([(part - base[patch.rows]).sum() for patch, part in zip(patches, parts)])
        totals = (self.base_diff.sum() + changes) / self.scored.sum().clamp(min=1)  # [patches]
        return normalised(totals, self.clean_metric, self.corrupted_metric).tolist()

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
        *[torch.arange(s, device="cpu") for s in _shape(cfg, target, n)]).reshape(-1, len(_axes(target)))]


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


# ---- the fast path: patches and chunks, each run by HookFree.resid_from part-way ------


@dataclass
class _Patch:
    """One score entry's forward: start at ``(layer, stage)`` with what changed there.

    Only ``rows`` (the batch rows whose patched slice differs from the base run's and whose
    metric can see it) are recomputed; every other row keeps the base run's logits, exactly.
    ``firsts`` [len(rows)] holds each row's first changed position (0 in a bidirectional
    model). ``apply(resid, start, end, rows)`` patches, in place, those rows' residual
    stream at the entry point for positions start..end-1 ([rows, end - start, d_model],
    holding the base run's ``stream`` there), and returns the deltas the forward adds to
    receivers' inputs on the way ({(layer, "k", head): [rows, end - start, d_model]}, path
    patching; empty otherwise).
    """

    index: tuple[int, ...]
    layer: int  # n_layers for "only the unembedding is left"
    stage: str  # "pre": the block's input; "mid": after its attention
    rows: Tensor  # [changed rows], long; empty: the patch changes nothing the metric reads
    firsts: Tensor  # [changed rows], long
    stream: str  # the cached stream at the entry point, e.g. "blocks.1.hook_resid_mid"
    apply: Callable[[Tensor, int, int, Tensor], dict] = field(repr=False)
    group: tuple = ()  # patches of one group can share a forward


def _changed_rows(setup: _Setup, name: str, head: int | None = None,
                  pos: int | None = None) -> tuple[Tensor, Tensor]:
    """The rows a patch of ``name`` changes and each one's first changed position.

    The patch replaces one head's slice if ``head`` is given, one position if ``pos`` is,
    every position otherwise. Rows whose change lies past every position the metric reads
    (causal models) are left out: the metric cannot see it.
    """
    if name not in setup.differs:  # once per hook: where the two runs differ
        differs = (setup.source[name] != setup.base[name]).any(dim=-1)
        # [batch, pos] for the stream, [batch, pos, head] for q, k, v and z; the pattern's
        # [batch, head, query_pos] turned to match (a head's z changes from its first changed query).
        setup.differs[name] = differs.transpose(1, 2) if name.endswith("hook_pattern") else differs
    per_pos = setup.differs[name] if head is None else setup.differs[name][:, :, head]  # [batch, pos]
    if pos is None:
        changed = per_pos.any(dim=1)
        firsts = per_pos.int().argmax(dim=1)  # the first True
    else:
        changed = per_pos[:, pos]
        firsts = torch.full_like(changed, pos, dtype=torch.long)
    if setup.model.cfg.attention_dir != "causal":
        firsts = torch.zeros_like(firsts)
    keep = changed & (firsts < setup.reads_until)
    rows = keep.nonzero().flatten()
    return rows, firsts[rows].long()


def _activation_patch(setup: _Setup, target: str, index: tuple[int, ...]) -> _Patch:
    if target not in _STREAM:
        return _head_patch(setup, target, index)
    base, source = setup.base, setup.source
    layer, pos = index
    name = f"blocks.{layer}.hook_{target}"
    rows, firsts = _changed_rows(setup, name, pos=pos)
    # The stream where the patch lands, and the activation the patched one adds to there,
    # added as the model adds it so the two paths round alike.
    entry, stream, addend = {
        "resid_pre": ((layer, "pre"), f"blocks.{layer}.hook_resid_pre", None),
        "resid_mid": ((layer, "mid"), f"blocks.{layer}.hook_resid_mid", None),
        "resid_post": ((layer + 1, "pre"), f"blocks.{layer}.hook_resid_post", None),
        "attn_out": ((layer, "mid"), f"blocks.{layer}.hook_resid_mid", f"blocks.{layer}.hook_resid_pre"),
        "mlp_out": ((layer + 1, "pre"), f"blocks.{layer}.hook_resid_post", f"blocks.{layer}.hook_resid_mid"),
    }[target]

    def apply(resid: Tensor, start: int, end: int, rows: Tensor) -> dict:
        if start <= pos < end:
            patched = source[name][rows, pos]
            resid[:, pos - start] = patched if addend is None else base[addend][rows, pos] + patched
        return {}

    return _Patch(index, *entry, rows, firsts, stream, apply, group=entry)


def _head_patch(setup: _Setup, target: str, index: tuple[int, ...]) -> _Patch:
    """One head's z, q, k, v or pattern patched: the forward starts after the layer's attention.

    Only that head's output changes: its z becomes the source run's (z targets), or what its
    attention gives with the patched q, k, v or pattern and the base run's others. The
    stream after the layer's attention is then the base run's plus (z_patched - z_base) @
    W_O[head], so neither the layer's other heads nor its input are recomputed.
    """
    base, source = setup.base, setup.source
    layer, head = index[:2]
    pos = index[2] if target == "head_pos" else None
    hook = _HEAD_HOOK[target]
    name = f"blocks.{layer}.attn.hook_{hook}"
    rows, firsts = _changed_rows(setup, name, head, pos)
    attn = setup.model.blocks[layer].attn
    W_O = attn.W_O[head]  # [d_head, d_model]
    prefix = f"blocks.{layer}.attn.hook_"

    def patched_z(start: int, end: int, rows: Tensor) -> Tensor:  # [rows, end - start, d_head]
        if hook == "z":
            return source[name][rows, start:end, head]
        if hook in ("pattern", "v"):
            pattern = (source if hook == "pattern" else base)[prefix + "pattern"][rows, head, start:end, :end]
        else:  # the head's pattern from the patched query or keys
            q, k = ((source if hook == kind else base)[prefix + kind] for kind in "qk")
            scores = torch.baddbmm(setup.forward.mask_bias(start, end), q[rows, start:end, head],
                                   k[rows, :end, head].transpose(1, 2), alpha=1 / attn.scale)
            pattern = scores.softmax(dim=-1)  # [rows, end - start, key_pos]
        v = (source if hook == "v" else base)[prefix + "v"][rows, :end, head]  # [rows, end, d_head]
        return torch.bmm(pattern, v)

    def apply(resid: Tensor, start: int, end: int, rows: Tensor) -> dict:
        z_base = base[prefix + "z"]  # [batch, pos, head, d_head]
        if pos is None:
            resid += (patched_z(start, end, rows) - z_base[rows, start:end, head]) @ W_O
        elif start <= pos < end:
            resid[:, pos - start] += (source[name][rows, pos, head] - z_base[rows, pos, head]) @ W_O
        return {}

    return _Patch(index, layer, "mid", rows, firsts, f"blocks.{layer}.hook_resid_mid", apply, group=(layer, "mid"))


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
    name = f"blocks.{layer}.attn.hook_z"
    W_O = setup.model.blocks[layer].attn.W_O[head]  # [d_head, d_model]
    # The head's hook_result in the source run minus the base run's: z @ W_O of each.
    delta = setup.source[name][:, :, head] @ W_O - setup.base[name][:, :, head] @ W_O  # [batch, pos, d_model]
    rows, firsts = _changed_rows(setup, name, head)
    entries = [(r_layer, "pre") for r_layer, _ in plan.heads] + [(r_layer, "mid") for r_layer in plan.mlps]
    entries.append((cfg.n_layers, "pre") if plan.logits else (cfg.n_layers + 1, "pre"))
    entry = min(entries, key=lambda e: (e[0], e[1] == "mid"))
    stream = (f"blocks.{entry[0]}.hook_resid_{entry[1]}" if entry[0] < cfg.n_layers
              else f"blocks.{cfg.n_layers - 1}.hook_resid_post")

    def apply(resid: Tensor, start: int, end: int, rows: Tensor) -> dict:
        d = delta[rows, start:end]
        reads = {(r_layer, plan.receiver_input, r_head): d for r_layer, r_head in plan.heads}
        reads.update({(r_layer, "mlp"): d for r_layer in plan.mlps})
        if plan.logits:
            reads[(cfg.n_layers, "logits")] = d
        return reads

    return _Patch(sender, *entry, rows, firsts, stream, apply, group=entry)


def _edge_patch(setup: _Setup, index: int, edge: comp.Edge) -> _Patch:
    """One edge: the receiver's input plus the sender's source-minus-base output."""
    cfg, model = setup.model.cfg, setup.model
    kind, layer, head = comp.parse(edge.sender)
    if kind == "head":
        name = f"blocks.{layer}.attn.hook_z"
        W_O = model.blocks[layer].attn.W_O[head]  # [d_head, d_model]
        delta = setup.source[name][:, :, head] @ W_O - setup.base[name][:, :, head] @ W_O  # [batch, pos, d_model]
        rows, firsts = _changed_rows(setup, name, head)
    else:  # embed (pos_embed is the same in both runs: the stream entering block 0 differs by it alone) or an MLP
        name = "blocks.0.hook_resid_pre" if edge.sender == "embed" else f"blocks.{layer}.hook_mlp_out"
        delta = setup.source[name] - setup.base[name]  # [batch, pos, d_model]
        rows, firsts = _changed_rows(setup, name)
    r_kind, r_layer, r_head = comp.parse(edge.receiver)
    if r_kind == "head":
        entry, key = (r_layer, "pre"), (r_layer, edge.kind, r_head)
        stream = f"blocks.{r_layer}.hook_resid_pre"
    elif r_kind == "mlp":
        entry, key = (r_layer, "mid"), (r_layer, "mlp")
        stream = f"blocks.{r_layer}.hook_resid_mid"
    else:
        entry, key = (cfg.n_layers, "pre"), (cfg.n_layers, "logits")
        stream = f"blocks.{cfg.n_layers - 1}.hook_resid_post"

    def apply(resid: Tensor, start: int, end: int, rows: Tensor) -> dict:
        return {key: delta[rows, start:end]}

    return _Patch((index,), *entry, rows, firsts, stream, apply, group=key)


def _chunks(setup: _Setup, group: list[_Patch]):
    """Patches of one group stacked into forwards of about ``_CHUNK_ROWS`` token rows.

    Sorted by first change so that a chunk's start (the least first change in it) costs
    its other patches few positions they would not have computed alone.
    """
    group.sort(key=lambda p: int(p.firsts.min()))
    chunk, size = [], 0
    for patch in group:
        cost = len(patch.rows) * (setup.n - int(patch.firsts.min()))
        if chunk and size + cost > _CHUNK_ROWS:
            yield chunk
            chunk, size = [], 0
        chunk.append(patch)
        size += cost
    if chunk:
        yield chunk


def _run_patches(setup: _Setup, patches: list[_Patch], shape: tuple[int, ...]) -> Tensor:
    """Score every patch, recomputing only its changed rows, stacked with its group's."""
    scores = torch.full(shape, float("nan"), device="cpu")  # figures for the reader, filled one by one
    base_score = normalised(setup.base_metric, setup.clean_metric, setup.corrupted_metric)
    todo: dict[tuple, list[_Patch]] = {}
    for patch in patches:
        if len(patch.rows) == 0:  # nothing the metric reads changes: the base run, exactly
            scores[patch.index] = base_score
        else:
            todo.setdefault((patch.group, patch.layer, patch.stage), []).append(patch)
    for group in todo.values():
        for chunk in _chunks(setup, group):
            rows = torch.cat([p.rows for p in chunk])  # [rows]
            start = int(torch.cat([p.firsts for p in chunk]).min())
            end = int(setup.reads_until[rows].max())
            resid = setup.base[chunk[0].stream][rows, start:end]  # [rows, end - start, d_model], a copy
            applied = [p.apply(part, start, end, p.rows) for p, part in zip(chunk, resid.split(
                [len(p.rows) for p in chunk]))]
            reads = {key: torch.cat([a[key] for a in applied]) for key in applied[0]}
            resid, start = setup.forward.resid_from(resid, chunk[0].layer, chunk[0].stage, start,
                                                    first_query=_first_read(setup, rows, start),
                                                    past=_base_run_before(setup, rows, start), deltas=reads)
            value = setup.score_rows(resid, start, end, rows)
            for patch, score in zip(chunk, setup.score_patched(chunk, start, end, value)):
                scores[patch.index] = score
    return scores


def _first_read(setup: _Setup, rows: Tensor, start: int) -> int:
    """The first position >= start whose logits the metric reads in any of ``rows``."""
    if setup.scored is None or setup.model.cfg.attention_dir != "causal":
        return start
    read = setup.scored[rows, start:].any(dim=0).nonzero()
    return start + int(read[0]) if len(read) else start


def _base_run_before(setup: _Setup, rows: Tensor, start: int) -> Callable[[str], Tensor]:
    """The base run's activations of ``rows`` at positions < start, by hook name: the keys
    and values a patched forward resumed at ``start`` attends to there."""
    return lambda name: setup.base[name][rows, :start]
