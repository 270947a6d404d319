"""Resample ablation of edges and nodes: run a model with only a circuit left intact.

Axis names used in shape comments:
    batch, pos     as everywhere
    sender         the upstream components feeding one receiver, in residual-stream order
    head           attention head of the receiving layer
    d_model        residual stream width
    d_mlp          MLP neurons

An edge ``(s, r, kind)`` is *ablated* when receiver ``r`` reads, through that input, the
output ``s`` had on the corrupted input instead of its output in the current run. Every
receiver input is patched on its own hook (``hook_q_input`` per head, ``hook_mlp_in``,
and the last ``hook_resid_post`` for the logits), so ablating an edge changes what one
receiver reads and nothing else:

    input_r = resid_r + sum over ablated senders s of (corrupted_s - current_s)

With every edge ablated the model computes exactly its corrupted output; with none, its
clean output. The corrupted activations come from one forward on the corrupted tokens;
the current ones are recorded during the patched forward, so ablations compose along
paths (the MIB / ACDC convention). Neurons are ablated node-wise at ``mlp.hook_post``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from toylab import components as comp
from toylab.components import Edge
from toylab.models import Transformer
from toylab.tasks.algorithm import Algorithm
from toylab.tasks.base import IGNORE, Batch, CounterfactualPair, logit_diff_mask, logit_diff_terms, normalised


def expand_to_qkv(edges: Iterable[Edge | tuple[str, str, str]]) -> set[Edge]:
    """Edges at qkv granularity: a promoted head edge stands for its q, k and v edges."""
    out: set[Edge] = set()
    for edge in edges:
        if type(edge) is not Edge:
            edge = Edge.parse(edge)
        if edge.kind == "head":
            out.update(Edge(edge.sender, edge.receiver, kind) for kind in comp.QKV)
        else:
            out.add(edge)
    return out


def edges_without(cfg, nodes: Iterable[str]) -> set[Edge]:
    """Every edge of the model except those leaving ``nodes``: node ablation, as edges."""
    removed = set(nodes)
    return {e for e in comp.edges(cfg) if e.sender not in removed}


@dataclass(frozen=True)
class _Receivers:
    """One group of receivers that read through one hook: a layer's heads' q, k or v input,
    an MLP's input, or the logits; with, for each of their upstream senders, the index of
    the edge (sender, receiver) in ``comp.edges(cfg)``."""

    hook: str
    senders: tuple[str, ...]  # upstream senders, in residual-stream order
    index: Tensor  # [sender, receiver] int64: the edges' positions in comp.edges(cfg)
    per_head: bool  # a head's q/k/v input ([batch, pos, head, d_model]) or a stream ([batch, pos, d_model])


@functools.lru_cache(maxsize=64)
def _receiver_groups(cfg) -> tuple[_Receivers, ...]:
    position = {e: i for i, e in enumerate(comp.edges(cfg))}
    all_senders = comp.senders(cfg)

    def group(hook: str, receivers: list[str], kind: str, per_head: bool) -> _Receivers:
        upstream = tuple(s for s in all_senders if Edge(s, receivers[0], kind) in position)
        index = torch.tensor([[position[Edge(s, r, kind)] for r in receivers] for s in upstream], dtype=torch.long,
                             device="cpu")  # cached for every model of this config: moved where used
        return _Receivers(hook, upstream, index.reshape(len(upstream), len(receivers)), per_head)

    groups = []
    for layer in range(cfg.n_layers):
        heads = [comp.head_id(layer, h) for h in range(cfg.n_heads)]
        groups += [group(f"blocks.{layer}.hook_{kind}_input", heads, kind, True) for kind in comp.QKV]
        if not cfg.attn_only:
            groups.append(group(f"blocks.{layer}.hook_mlp_in", [f"MLP{layer}"], "resid", False))
    groups.append(group(f"blocks.{cfg.n_layers - 1}.hook_resid_post", [comp.OUTPUT], "resid", False))
    return tuple(groups)


def _sender_hooks(cfg) -> dict[str, str]:
    """Output hook -> the sender it belongs to (a layer's hook_result holds all its heads: "L{l}")."""
    sender_of = {"hook_embed": "embed", "hook_pos_embed": "pos_embed"}
    for layer in range(cfg.n_layers):
        sender_of[f"blocks.{layer}.attn.hook_result"] = f"L{layer}"
        if not cfg.attn_only:
            sender_of[f"blocks.{layer}.hook_mlp_out"] = f"MLP{layer}"
    return sender_of


def corrupted_run(model: Transformer, corrupted_tokens: Tensor,
                  keep_neurons: Mapping[int, Sequence[int]] | None = None) -> dict[str, Tensor]:
    """What ``ablated`` patches in: every sender's output (and the MLP neurons ``keep_neurons``
    names layers of) on the corrupted input. Pass it as ``ablated(..., corrupted=...)`` to
    run many ablations against one corrupted input without rerunning it each time."""
    names = [*_sender_hooks(model.cfg), *(f"blocks.{layer}.mlp.hook_post" for layer in (keep_neurons or {}))]
    with torch.no_grad():
        _, cache = model.run_with_cache(corrupted_tokens, names=names)
    return {name: cache[name] for name in names}


@contextmanager
def ablated(
    model: Transformer,
    corrupted_tokens: Tensor,
    keep: Iterable[Edge | tuple[str, str, str]] | Mapping[Edge, Tensor],
    keep_neurons: Mapping[int, Sequence[int]] | None = None,
    *,
    corrupted: Mapping[str, Tensor] | None = None,
) -> Iterator[Transformer]:
    """Within the block, ``model(tokens)`` runs with every edge outside ``keep`` ablated.

    ``keep`` holds edges at either granularity, or maps qkv edges to how much of each is
    kept, a scalar tensor in [0, 1] (the receiver reads w * clean + (1 - w) * corrupted;
    edges it leaves out are ablated): soft masks, which gradients reach (edge pruning).
    ``keep_neurons`` maps a layer to the neurons of its MLP that stay intact; the MLP's
    other neurons take their corrupted values. ``tokens`` inside the block must have the
    shape of ``corrupted_tokens``. ``corrupted``: ``corrupted_run(model, corrupted_tokens,
    keep_neurons)``, computed once by a caller that ablates many times. Gradients flow
    through the current run, so the block also serves training objectives.
    """
    cfg = model.cfg
    if isinstance(keep, Mapping):
        for edge in set(keep) - comp.edge_set(cfg):
            comp.check_edge(edge, cfg)  # raises, saying what is wrong with it
        zero = torch.zeros((), device=model.device)
        kept = torch.stack([keep.get(e, zero) for e in comp.edges(cfg)]).unsqueeze(0)  # [1, edge]
    else:
        kept = _kept(cfg, [keep], model.device)  # [1, edge]
    if corrupted is None:
        corrupted = corrupted_run(model, corrupted_tokens, keep_neurons)
    with model.hooks(_ablation_hooks(model, kept, corrupted, keep_neurons)):
        yield model


def ablated_logits_batch(model: Transformer, clean_tokens: Tensor, corrupted_tokens: Tensor,
                         keeps: Sequence[Iterable[Edge]], *, corrupted: Mapping[str, Tensor] | None = None,
                         rows: int = 4096) -> Tensor:
    """``ablated_logits`` for many kept sets at once: [variant, batch, pos, d_vocab_out].

    The variants' runs are stacked along the batch, about ``rows`` token rows a forward, so
    one edge-at-a-time sweep (``methods.edge_patching``) costs a few forwards, not one per
    edge; each row reads exactly what ``ablated`` would give it alone.
    """
    if corrupted is None:
        corrupted = corrupted_run(model, corrupted_tokens)
    batch = clean_tokens.shape[0]
    per_forward = max(1, rows // max(1, batch))
    out = []
    with torch.no_grad():
        for start in range(0, len(keeps), per_forward):
            kept = _kept(model.cfg, keeps[start:start + per_forward], model.device)  # [variant, edge]
            with model.hooks(_ablation_hooks(model, kept, corrupted, None)):
                logits = model(clean_tokens.repeat(kept.shape[0], 1))  # [variant * batch, pos, d_vocab_out]
            out.append(logits.view(kept.shape[0], batch, *logits.shape[1:]))
    return torch.cat(out)


def _kept(cfg, keeps: Sequence[Iterable[Edge | tuple[str, str, str]]], device) -> Tensor:
    """Which edges each kept set keeps: [variant, edge] (1.0 kept, 0.0 ablated)."""
    everything, all_edges = comp.edge_set(cfg), comp.edges(cfg)
    rows = []
    for keep in keeps:
        wanted = expand_to_qkv(keep)
        for edge in wanted - everything:
            comp.check_edge(edge, cfg)  # raises, saying what is wrong with it
        rows.append([e in wanted for e in all_edges])
    return torch.tensor(rows, dtype=torch.float32, device=device)


def _ablation_hooks(model: Transformer, kept: Tensor, corrupted: Mapping[str, Tensor],
                    keep_neurons: Mapping[int, Sequence[int]] | None) -> list:
    """The hooks that ablate what ``kept`` [variant, edge] does not keep, for a batch of
    variant-major rows ([variant * batch, ...]) against the ``corrupted`` run ([batch, ...])."""
    cfg = model.cfg
    sender_of = _sender_hooks(cfg)
    variants = kept.shape[0]
    deltas: dict[str, Tensor] = {}  # sender id -> corrupted - current output [variant * batch, pos, d_model]

    def source(name: str) -> Tensor:
        x = corrupted[name]
        return x if variants == 1 else x.repeat(variants, *[1] * (x.ndim - 1))

    def record(x: Tensor, hook) -> None:
        if hook.name.endswith("hook_result"):  # x: [batch, pos, head, d_model]
            delta = source(hook.name) - x
            for h in range(cfg.n_heads):
                deltas[f"{sender_of[hook.name]}H{h}"] = delta[:, :, h]
        else:
            deltas[sender_of[hook.name]] = source(hook.name) - x

    hooks = [(name, record) for name in sender_of]
    for group in _receiver_groups(cfg):
        mask = 1 - kept[:, group.index.to(kept.device)]  # [variant, sender, receiver]: how much is ablated
        used = (mask.detach() != 0).any(dim=2).any(dim=0)  # [sender]: with an ablated edge anywhere
        if not bool(used.any()):
            continue
        senders = [s for s, u in zip(group.senders, used.tolist()) if u]
        patch = _patch_per_head if group.per_head else _patch_stream
        hooks.append((group.hook, patch(deltas, senders, mask[:, used])))
    for layer in keep_neurons or {}:
        name = f"blocks.{layer}.mlp.hook_post"
        keep_mask = torch.zeros(cfg.d_mlp, dtype=torch.bool, device=model.device)
        keep_mask[list(keep_neurons[layer])] = True
        hooks.append((name, _patch_neurons(source(name), keep_mask)))
    return hooks


def _patch_per_head(deltas: dict[str, Tensor], senders: list[str], mask: Tensor):
    def hook(x: Tensor, hook) -> Tensor:  # x: [variant * batch, pos, head, d_model]; mask: [variant, sender, head]
        stacked = torch.stack([deltas[s] for s in senders], dim=2)  # [variant * batch, pos, sender, d_model]
        if mask.shape[0] == 1:
            return x + torch.einsum("bpsm,sh->bphm", stacked, mask[0])
        stacked = stacked.view(mask.shape[0], -1, *stacked.shape[1:])  # [variant, batch, pos, sender, d_model]
        return x + torch.einsum("vbpsm,vsh->vbphm", stacked, mask).reshape(x.shape)
    return hook


def _patch_stream(deltas: dict[str, Tensor], senders: list[str], mask: Tensor):
    def hook(x: Tensor, hook) -> Tensor:  # x: [variant * batch, pos, d_model]; mask: [variant, sender, 1]
        if mask.shape[0] == 1:
            return x + sum(deltas[s] * mask[0, i, 0] for i, s in enumerate(senders))
        weight = mask[:, :, 0].repeat_interleave(x.shape[0] // mask.shape[0], dim=0)  # [variant * batch, sender]
        return x + sum(deltas[s] * weight[:, i, None, None] for i, s in enumerate(senders))
    return hook


def _patch_neurons(corrupted_post: Tensor, keep_mask: Tensor):
    def hook(x: Tensor, hook) -> Tensor:  # x: [batch, pos, d_mlp]
        return torch.where(keep_mask, x, corrupted_post)
    return hook


def ablated_logits(
    model: Transformer,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    keep: Iterable[Edge | tuple[str, str, str]],
    keep_neurons: Mapping[int, Sequence[int]] | None = None,
    *,
    corrupted: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Logits [batch, pos, d_vocab_out] of the clean run with only ``keep`` intact."""
    with torch.no_grad(), ablated(model, corrupted_tokens, keep, keep_neurons, corrupted=corrupted):
        return model(clean_tokens)


@dataclass(frozen=True)
class Estimate:
    """A figure measured on a sample of pairs, with its bootstrap replicates.

    Arithmetic with floats and other estimates of the same resamples acts on the value and
    on every replicate alike (paired), so a difference of two figures measured on the same
    pairs gets the narrow interval of a paired comparison.
    """

    value: float
    replicates: Tensor  # [replicate]: the figure on pairs resampled with replacement

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The percentile bootstrap interval holding ``level`` of the replicates."""
        tail = (1 - level) / 2
        low, high = torch.quantile(self.replicates.double(), self.replicates.new_tensor([tail, 1 - tail], dtype=torch.float64))
        return float(low), float(high)

    def __sub__(self, other: Estimate | float) -> Estimate:
        if isinstance(other, Estimate):
            return Estimate(self.value - other.value, self.replicates - other.replicates)
        return Estimate(self.value - other, self.replicates - other)

    def __rsub__(self, other: float) -> Estimate:
        return Estimate(other - self.value, other - self.replicates)

    def __abs__(self) -> Estimate:
        return Estimate(abs(self.value), self.replicates.abs())


def bootstrap_rows(batch: int, replicates: int, seed: int) -> Tensor:
    """``replicates`` resamples with replacement of ``batch`` rows: [replicate, batch] indices."""
    return torch.randint(batch, (replicates, batch), generator=torch.Generator().manual_seed(seed), device="cpu")


def ratio_estimate(numerator: Tensor, denominator: Tensor, replicates: int, seed: int) -> Estimate:
    """sum(numerator) / sum(denominator) over rows [batch] (a mean over positions scored per
    row, say), with the same ratio on each bootstrap resample of the rows."""
    numerator, denominator = numerator.double().cpu(), denominator.double().cpu()
    rows = bootstrap_rows(len(numerator), replicates, seed)  # [replicate, batch]
    return Estimate(float(numerator.sum() / denominator.sum()),
                    numerator[rows].sum(-1) / denominator[rows].sum(-1).clamp(min=1))


class Faithfulness:
    """The normalised metric of circuits, on one batch of counterfactual pairs:

        f(C) = (m(C) - m(empty)) / (m(full) - m(empty))        (MIB; ``toylab.tasks.normalised``)

    where m(C) is the logit difference (``toylab.tasks.logit_diff``) of the clean run with
    only the edges in C (and, of the MLPs, only the neurons in ``keep_neurons``) reading
    clean activations, every other edge resample-ablated from the corrupted run
    (``ablated``). So f(every edge) = 1 and f(no edge) = 0. The two ends are measured
    once, when it is made; ``f(keep)`` measures one more run.

    ``estimate(keep)`` gives f with ``replicates`` bootstrap resamples of the pairs (drawn
    once, from ``seed``, and shared by every circuit, so differences are paired). The
    logit difference averages over the same scored positions in every run, so f is a ratio
    of per-pair sums and each replicate recomputes it exactly on its resample.
    """

    def __init__(self, model: Transformer, pair: CounterfactualPair, replicates: int = 1000, seed: int = 0):
        self.model, self.pair = model, pair
        self.clean = pair.clean.tokens.to(model.device)
        self.corrupted = pair.corrupted.tokens.to(model.device)
        self._corrupted: dict[str, Tensor] | None = None
        batch = self.clean.shape[0]
        self._rows = bootstrap_rows(batch, replicates, seed)  # [replicate, batch]
        self._n_scored = logit_diff_mask(pair).sum().clamp(min=1).item()
        self._full = self._pair_sums(set(comp.edges(model.cfg)))  # [batch]
        self._empty = self._pair_sums(set())  # [batch]
        self.full = self._full.sum().item() / self._n_scored
        self.empty = self._empty.sum().item() / self._n_scored
        normalised(self.full, self.full, self.empty)  # raises now where f is undefined

    def _pair_sums(self, keep: Iterable[Edge], keep_neurons: Mapping[int, Sequence[int]] | None = None) -> Tensor:
        """Per pair, the sum of its logit differences over its scored positions: [batch] float64."""
        if self._corrupted is None:  # recorded once: every circuit is ablated against the same run
            layers = {} if self.model.cfg.attn_only else dict.fromkeys(range(self.model.cfg.n_layers), ())
            self._corrupted = corrupted_run(self.model, self.corrupted, layers)
        logits = ablated_logits(self.model, self.clean, self.corrupted, keep, keep_neurons, corrupted=self._corrupted)
        return logit_diff_terms(logits, self.pair).sum(-1).double().cpu()

    def m(self, keep: Iterable[Edge], keep_neurons: Mapping[int, Sequence[int]] | None = None) -> float:
        """The raw metric of the run with only ``keep`` intact."""
        return self._pair_sums(keep, keep_neurons).sum().item() / self._n_scored

    def __call__(self, keep: Iterable[Edge], keep_neurons: Mapping[int, Sequence[int]] | None = None) -> float:
        return normalised(self.m(keep, keep_neurons), self.full, self.empty)

    def estimate(self, keep: Iterable[Edge], keep_neurons: Mapping[int, Sequence[int]] | None = None) -> Estimate:
        """f(keep) with its bootstrap replicates."""
        sums = self._pair_sums(keep, keep_neurons)  # [batch]
        value = normalised(sums.sum().item(), self._full.sum().item(), self._empty.sum().item())
        kept, full, empty = (x.cpu()[self._rows].sum(-1) for x in (sums, self._full, self._empty))  # [replicate]
        return Estimate(value, (kept - empty) / (full - empty))


def position_mask(positions: str, n_pos: int) -> Tensor:
    """``"all"``, ``"last"`` or comma-separated indices such as ``"0,2"`` -> bool [pos]."""
    mask = torch.zeros(n_pos, dtype=torch.bool, device="cpu")  # indexes the model's tensors too
    if positions == "all":
        mask[:] = True
    elif positions == "last":
        mask[-1] = True
    else:
        try:
            index = [int(p) for p in positions.split(",")]
        except ValueError:
            raise ValueError(f"positions must be 'all', 'last' or indices like '0,2', got {positions!r}") from None
        if not all(-n_pos <= i < n_pos for i in index):
            raise ValueError(f"positions {positions!r} out of range for sequences of length {n_pos}")
        mask[index] = True
    return mask


@contextmanager
def interchanged(
    model: Transformer,
    source_tokens: Tensor,
    components: Iterable[str],
    positions: str | Tensor = "all",
    detach_source: bool = True,
) -> Iterator[Transformer]:
    """Within the block, ``components`` output what they output on ``source_tokens``.

    An interchange intervention: heads are patched at ``hook_z``, MLPs at ``hook_mlp_out``
    and neurons at ``mlp.hook_post``, at the given positions ("all", "last", "0,2" or a
    bool mask [pos]). The model run inside must have the shape of ``source_tokens``.
    """
    cfg = model.cfg
    mask = position_mask(positions, source_tokens.shape[-1]) if isinstance(positions, str) else positions
    mask = mask.to(model.device)
    targets: dict[str, list[int | None]] = {}  # hook name -> head / neuron indices (None: whole output)
    for component in components:
        comp.check_component(component, cfg)
        kind, layer, index = comp.parse(component)
        if kind == "head":
            targets.setdefault(f"blocks.{layer}.attn.hook_z", []).append(index)
        elif kind == "mlp":
            targets.setdefault(f"blocks.{layer}.hook_mlp_out", []).append(None)
        elif kind == "neuron":
            targets.setdefault(f"blocks.{layer}.mlp.hook_post", []).append(index)
        else:
            raise ValueError(f"cannot interchange {component!r}: only heads, MLPs and neurons carry variables")
    if detach_source:
        with torch.no_grad():
            _, source = model.run_with_cache(source_tokens, names=list(targets))
    else:
        source = cache_with_grad(model, source_tokens, list(targets))

    def patch(x: Tensor, hook) -> Tensor:
        index = targets[hook.name]
        src = source[hook.name]
        where = mask.view(1, -1, *([1] * (x.ndim - 2)))  # [1, pos, 1...]
        if None in index:
            return torch.where(where, src, x)
        select = torch.zeros(x.shape[2], dtype=torch.bool, device=x.device)
        select[index] = True
        select = select.view(1, 1, -1, *([1] * (x.ndim - 3)))  # [1, 1, head or neuron, 1...]
        return torch.where(where & select, src, x)

    with model.hooks([(name, patch) for name in targets]):
        yield model


STEER_MODES = ("add", "set")


@contextmanager
def steered(
    model: Transformer,
    hook: str,
    vector: Tensor,
    alpha: float = 1.0,
    positions: str | int | Tensor = "all",
    head: int | None = None,
    mode: str = "add",
    basis: Tensor | None = None,
) -> Iterator[Transformer]:
    """Within the block, the activation at ``hook`` is steered at ``positions`` (and ``head``).

    ``mode="add"``: x + alpha * vector (activation addition, Turner et al. 2023).
    ``mode="set"``: x + alpha * ((vector - x) @ B) @ B.T: x's coordinates in span(``basis``
    [d, k], orthonormal columns; None: the whole vector) move to ``vector``'s, all the way at
    alpha = 1 (an interchange with a fixed source). ``vector`` is [d] or one per prompt
    [batch, d]; positions are "all", "last", "0,2", one position (an int) or a bool mask [pos].
    """
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = str(positions)
    if hook not in model.hook_names():
        from toylab.hooks import UnknownNameError

        raise UnknownNameError(hook, model.hook_names())
    if mode not in STEER_MODES:
        raise ValueError(f"mode must be one of {STEER_MODES}, got {mode!r}")
    if mode == "add" and basis is not None:
        raise ValueError("a basis only makes sense with mode='set' (set the coordinates in its span)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a number, got {alpha!r}")
    per_head = hook.split(".")[-1] in comp.PER_HEAD_HOOKS
    if per_head != (head is not None):
        raise ValueError(f"{hook} " + ("holds one vector per head: give head=h" if per_head
                                       else "has no head axis: leave head=None"))
    if per_head and not 0 <= head < model.cfg.n_heads:
        raise ValueError(f"head {head} out of range; the model has {model.cfg.n_heads} heads")
    vector = torch.as_tensor(vector, device=model.device)
    if vector.ndim not in (1, 2):
        raise ValueError(f"the steering vector must be [d] or [batch, d], got shape {tuple(vector.shape)}")
    if basis is not None:
        basis = basis.to(model.device, vector.dtype)
        if basis.ndim != 2 or basis.shape[0] != vector.shape[-1]:
            raise ValueError(f"basis must be [d, k] with d = {vector.shape[-1]}, got {tuple(basis.shape)}")

    def steer(x: Tensor, hook) -> Tensor:  # x: [batch, pos, d] or [batch, pos, head, d_head]
        site = x[:, :, head] if per_head else x  # [batch, pos, d]
        if vector.shape[-1] != site.shape[-1]:
            raise ValueError(f"the steering vector has width {vector.shape[-1]} but {hook.name} has width "
                             f"{site.shape[-1]}: build it at this hook")
        if vector.ndim == 2 and vector.shape[0] != site.shape[0]:
            raise ValueError(f"{vector.shape[0]} steering vectors for a batch of {site.shape[0]} prompts")
        mask = position_mask(positions, site.shape[1]) if isinstance(positions, str) else positions
        v = vector.unsqueeze(-2) if vector.ndim == 2 else vector  # [batch or 1, 1 or d...]
        if mode == "add":
            delta = alpha * v.expand_as(site)
        else:
            gap = v - site  # [batch, pos, d]
            delta = alpha * (gap if basis is None else (gap @ basis) @ basis.T)
        delta = delta * mask.to(site.device).view(1, -1, 1)
        if not per_head:
            return x + delta
        x = x.clone()
        x[:, :, head] = site + delta
        return x

    with model.hooks([(hook, steer)]):
        yield model


def cache_with_grad(model: Transformer, tokens: Tensor, names: list[str]) -> dict[str, Tensor]:
    """Like run_with_cache, but the activations keep their graph (for training objectives)."""
    cache: dict[str, Tensor] = {}
    with model.hooks([(name, lambda x, hook: cache.__setitem__(hook.name, x)) for name in names]):
        model(tokens)
    return cache


def orthonormal(basis: Tensor) -> Tensor:
    """Orthonormal columns [d, k] spanning the columns of ``basis`` [d, k] (rank-deficient ones dropped)."""
    if basis.ndim != 2 or basis.shape[1] < 1:
        raise ValueError(f"a basis is a matrix [d, k] with k >= 1 columns, got shape {tuple(basis.shape)}")
    u, s, _ = torch.linalg.svd(basis.double(), full_matrices=False)
    rank = int((s > s.max() * 1e-6).sum())
    if rank == 0:
        raise ValueError("the basis is zero: it spans no subspace")
    return u[:, :rank].to(basis.dtype)  # [d, rank]


def patch_subspace(base: Tensor, source: Tensor, basis: Tensor | None) -> Tensor:
    """``base`` [..., d] with its component in span(basis [d, k]) replaced by ``source``'s."""
    if basis is None:
        return source
    return base + ((source - base) @ basis) @ basis.T


@torch.no_grad()
def interchange_accuracy(
    model: Transformer,
    algorithm: Algorithm,
    variable: str,
    intervention: Callable[[Tensor], AbstractContextManager],
    n: int,
    seed: int,
) -> tuple[float, Batch, Tensor, Tensor]:
    """Interchange-intervention accuracy (IIA; Geiger et al. 2021): the one definition.

    ``n`` (base, source) pairs come from ``algorithm.sample_pairs`` with ``seed``; the base
    runs inside ``intervention(source_tokens)`` (a context manager that patches the
    variable's activations in from the source run: ``interchanged`` for whole components,
    a subspace swap for a featuriser); IIA is the fraction of the scored positions where
    the model's arg-max is the algorithm's output under that intervention
    (``algorithm.intervene``). On tasks that score one position a pair, that is the
    fraction of pairs.

    Returns ``(iia, base, expected [batch, pos], logits [batch, pos, d_vocab_out])`` so that
    a caller can derive other figures from the same run.
    """
    algorithm.check_variable(variable)
    base, source = algorithm.sample_pairs(n, torch.Generator().manual_seed(seed))  # on the CPU, as tasks are
    expected = algorithm.intervene(base, source, variable).to(model.device)  # [batch, pos]
    scored = expected != IGNORE
    if not scored.any():
        raise ValueError(f"the algorithm defines no output under an intervention on {variable!r}")
    with intervention(source.tokens.to(model.device)):
        logits = model(base.tokens.to(model.device))  # [batch, pos, d_vocab_out]
    iia = (logits.argmax(-1)[scored] == expected[scored]).float().mean().item()
    return iia, base, expected, logits
