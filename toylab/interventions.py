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
    for edge in map(Edge.parse, edges):
        if edge.kind == "head":
            out.update(Edge(edge.sender, edge.receiver, kind) for kind in comp.QKV)
        else:
            out.add(edge)
    return out


def edges_without(cfg, nodes: Iterable[str]) -> set[Edge]:
    """Every edge of the model except those leaving ``nodes``: node ablation, as edges."""
    removed = set(nodes)
    return {e for e in comp.edges(cfg) if e.sender not in removed}


@contextmanager
def ablated(
    model: Transformer,
    corrupted_tokens: Tensor,
    keep: Iterable[Edge | tuple[str, str, str]] | Mapping[Edge, Tensor],
    keep_neurons: Mapping[int, Sequence[int]] | None = None,
) -> Iterator[Transformer]:
    """Within the block, ``model(tokens)`` runs with every edge outside ``keep`` ablated.

    ``keep`` holds edges at either granularity, or maps qkv edges to how much of each is
    kept, a scalar tensor in [0, 1] (the receiver reads w * clean + (1 - w) * corrupted;
    edges it leaves out are ablated): soft masks, which gradients reach (edge pruning).
    ``keep_neurons`` maps a layer to the neurons of its MLP that stay intact; the MLP's
    other neurons take their corrupted values. ``tokens`` inside the block must have the
    shape of ``corrupted_tokens``. Gradients flow through the current run, so the block
    also serves training objectives.
    """
    cfg = model.cfg
    weights = dict(keep) if isinstance(keep, Mapping) else None
    kept = set(weights) if weights is not None else expand_to_qkv(keep)
    all_edges = set(comp.edges(cfg))
    for edge in kept - all_edges:
        comp.check_edge(edge, cfg)  # raises, saying what is wrong with it
    sender_names = comp.senders(cfg)
    # Output hook -> the sender it belongs to (a layer's hook_result holds all its heads).
    sender_of = {"hook_embed": "embed", "hook_pos_embed": "pos_embed"}
    for layer in range(cfg.n_layers):
        sender_of[f"blocks.{layer}.attn.hook_result"] = f"L{layer}"
        if not cfg.attn_only:
            sender_of[f"blocks.{layer}.hook_mlp_out"] = f"MLP{layer}"
    neuron_hooks = {f"blocks.{layer}.mlp.hook_post": layer for layer in (keep_neurons or {})}
    with torch.no_grad():
        _, corrupted = model.run_with_cache(corrupted_tokens, names=[*sender_of, *neuron_hooks])

    deltas: dict[str, Tensor] = {}  # sender id -> corrupted - current output [batch, pos, d_model]

    def record(x: Tensor, hook) -> None:
        if hook.name.endswith("hook_result"):  # x: [batch, pos, head, d_model]
            for h in range(cfg.n_heads):
                deltas[f"{sender_of[hook.name]}H{h}"] = corrupted[hook.name][:, :, h] - x[:, :, h]
        else:
            deltas[sender_of[hook.name]] = corrupted[hook.name] - x

    def ablate_mask(receivers: Sequence[str], kind: str) -> tuple[list[str], Tensor]:
        """The upstream senders with an ablated edge into any of ``receivers``, and how much
        of each is ablated: [sender, receiver]."""
        upstream = [s for s in sender_names if Edge(s, receivers[0], kind) in all_edges]
        if weights is None:
            mask = torch.tensor([[float(Edge(s, r, kind) not in kept) for r in receivers] for s in upstream])
        else:
            one = torch.ones((), device=model.device)
            rows = [[one - weights[Edge(s, r, kind)] if Edge(s, r, kind) in weights else one for r in receivers]
                    for s in upstream]
            mask = torch.stack([torch.stack(row) for row in rows]) if rows else one.new_zeros(0, len(receivers))
        rows = (mask.detach().reshape(len(upstream), -1) != 0).any(dim=1)  # [sender, receiver] -> [sender]
        return [s for s, row in zip(upstream, rows) if row], mask[rows].to(model.device)

    fwd_hooks = [(name, record) for name in sender_of]
    for layer in range(cfg.n_layers):
        heads = [comp.head_id(layer, h) for h in range(cfg.n_heads)]
        for kind in comp.QKV:
            senders, mask = ablate_mask(heads, kind)
            if senders:
                fwd_hooks.append((f"blocks.{layer}.hook_{kind}_input", _patch_per_head(deltas, senders, mask)))
        if not cfg.attn_only:
            senders, mask = ablate_mask([f"MLP{layer}"], "resid")
            if senders:
                fwd_hooks.append((f"blocks.{layer}.hook_mlp_in", _patch_stream(deltas, senders, mask)))
    senders, mask = ablate_mask([comp.OUTPUT], "resid")
    if senders:
        fwd_hooks.append((f"blocks.{cfg.n_layers - 1}.hook_resid_post", _patch_stream(deltas, senders, mask)))
    for name, layer in neuron_hooks.items():
        keep_mask = torch.zeros(cfg.d_mlp, dtype=torch.bool, device=model.device)
        keep_mask[list(keep_neurons[layer])] = True
        fwd_hooks.append((name, _patch_neurons(corrupted[name], keep_mask)))

    with model.hooks(fwd_hooks):
        yield model


def _patch_per_head(deltas: dict[str, Tensor], senders: list[str], mask: Tensor):
    def hook(x: Tensor, hook) -> Tensor:  # x: [batch, pos, head, d_model]
        stacked = torch.stack([deltas[s] for s in senders], dim=2)  # [batch, pos, sender, d_model]
        return x + torch.einsum("bpsm,sh->bphm", stacked, mask)
    return hook


def _patch_stream(deltas: dict[str, Tensor], senders: list[str], mask: Tensor):
    def hook(x: Tensor, hook) -> Tensor:  # x: [batch, pos, d_model]; mask: [sender, 1]
        return x + sum(deltas[s] * mask[i, 0] for i, s in enumerate(senders))
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
) -> Tensor:
    """Logits [batch, pos, d_vocab_out] of the clean run with only ``keep`` intact."""
    with torch.no_grad(), ablated(model, corrupted_tokens, keep, keep_neurons):
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
        low, high = torch.quantile(self.replicates.double(), torch.tensor([tail, 1 - tail], dtype=torch.float64))
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
    return torch.randint(batch, (replicates, batch), generator=torch.Generator().manual_seed(seed))


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
        logits = ablated_logits(self.model, self.clean, self.corrupted, keep, keep_neurons)
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
        kept, full, empty = (x[self._rows].sum(-1) for x in (sums, self._full, self._empty))  # [replicate]
        return Estimate(value, (kept - empty) / (full - empty))


def position_mask(positions: str, n_pos: int) -> Tensor:
    """``"all"``, ``"last"`` or comma-separated indices such as ``"0,2"`` -> bool [pos]."""
    mask = torch.zeros(n_pos, dtype=torch.bool)
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
        source = _cache_with_grad(model, source_tokens, list(targets))

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


def _cache_with_grad(model: Transformer, tokens: Tensor, names: list[str]) -> dict[str, Tensor]:
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
    base, source = algorithm.sample_pairs(n, torch.Generator().manual_seed(seed))
    expected = algorithm.intervene(base, source, variable).to(model.device)  # [batch, pos]
    scored = expected != IGNORE
    if not scored.any():
        raise ValueError(f"the algorithm defines no output under an intervention on {variable!r}")
    with intervention(source.tokens.to(model.device)):
        logits = model(base.tokens.to(model.device))  # [batch, pos, d_vocab_out]
    iia = (logits.argmax(-1)[scored] == expected[scored]).float().mean().item()
    return iia, base, expected, logits
