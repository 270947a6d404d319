"""A zoo model's ground truth in TransformerLens's component naming (no TransformerLens needed).

Axis names (of the activations a site points into):
    batch, pos       sequence and token position
    head             attention head within a block (``TLSite.head`` indexes it)
    d_mlp            MLP neurons (``TLSite.neuron`` indexes it)
    d_model, d_head  residual stream width, width of one head's z

toylab names components by id (``L1H2``, ``MLP0``, ``MLP0N7``, ``embed``, ``logits``; see
``toylab.components``); a TransformerLens user addresses the same things by hook
name and head index. ``tl_site`` translates one, ``tl_truth`` a whole truth:

    output of a component (a sender, or a node's activation)
        embed        hook_embed
        pos_embed    hook_pos_embed
        L{l}H{h}     blocks.{l}.attn.hook_z, head h     (what TransformerLens's head patching patches)
        MLP{l}       blocks.{l}.hook_mlp_out
        MLP{l}N{i}   blocks.{l}.mlp.hook_post, neuron i (last axis)
        logits       blocks.{L-1}.hook_resid_post      (the stream the unembedding reads, before ln_final)
    input of a receiver, for an edge (sender, receiver, kind)
        q / k / v    blocks.{l}.hook_{q|k|v}_input, head h   needs cfg.use_split_qkv_input=True
        resid->MLP   blocks.{l}.hook_mlp_in                  needs cfg.use_hook_mlp_in=True
        resid->logits blocks.{L-1}.hook_resid_post

In TransformerLens those receiver hooks exist only when their flag is set (``TLSite.requires``
names it); ``toylab.interop.to_transformer_lens(..., use_split_qkv_input=True,
use_hook_mlp_in=True)`` sets them. In toylab every one of these hooks always fires, under the
same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toylab import components as comp
from toylab.components import Edge
from toylab.models import TransformerConfig
from toylab.truth import Truth

FLAG_FOR_HOOK = {"q_input": "use_split_qkv_input", "k_input": "use_split_qkv_input",
                 "v_input": "use_split_qkv_input", "mlp_in": "use_hook_mlp_in",
                 "result": "use_attn_result"}


@dataclass(frozen=True)
class TLSite:
    """Where a component lives in a TransformerLens model: a hook name and an index into it."""

    hook: str  # e.g. "blocks.1.attn.hook_z"
    head: int | None = None  # index along the head axis ([batch, pos, head, ...] or [batch, head, q, k])
    neuron: int | None = None  # index along the last (d_mlp) axis
    requires: str | None = None  # the HookedTransformerConfig flag without which the hook never fires

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}

    def __str__(self) -> str:
        index = f"[head {self.head}]" if self.head is not None else ""
        index += f"[neuron {self.neuron}]" if self.neuron is not None else ""
        return self.hook + index


def tl_site(component: str, cfg: TransformerConfig, kind: str | None = None) -> TLSite:
    """The TransformerLens site of ``component``: its output, or with ``kind`` its input.

    ``kind`` is an edge kind: "q", "k" or "v" for a head's input, "resid" for an MLP's or the
    logits' input. ``tl_site("L1H2", cfg) == TLSite("blocks.1.attn.hook_z", head=2)``;
    ``tl_site("L1H2", cfg, "k")`` is ``blocks.1.hook_k_input`` at head 2.
    """
    comp.check_component(component, cfg)
    what, layer, index = comp.parse(component)
    last = f"blocks.{cfg.n_layers - 1}.hook_resid_post"
    if kind is None:
        if what == "embed":
            return TLSite("hook_embed")
        if what == "pos_embed":
            return TLSite("hook_pos_embed")
        if what == "head":
            return TLSite(f"blocks.{layer}.attn.hook_z", head=index)
        if what == "mlp":
            return TLSite(f"blocks.{layer}.hook_mlp_out")
        if what == "neuron":
            return TLSite(f"blocks.{layer}.mlp.hook_post", neuron=index)
        return TLSite(last)  # logits: what the unembedding (after ln_final) reads
    if what == "head" and kind in comp.QKV:
        name = f"{kind}_input"
        return TLSite(f"blocks.{layer}.hook_{name}", head=index, requires=FLAG_FOR_HOOK[name])
    if what == "mlp" and kind == "resid":
        return TLSite(f"blocks.{layer}.hook_mlp_in", requires=FLAG_FOR_HOOK["mlp_in"])
    if what == "logits" and kind == "resid":
        return TLSite(last)
    valid = "q, k or v" if what == "head" else "resid"
    raise ValueError(f"{component!r} has no input of kind {kind!r}: a receiver {component!r} reads {valid} "
                     "(embed and pos_embed are never receivers; neurons are never edge ends)")


@dataclass(frozen=True)
class TLEdge:
    edge: Edge  # in toylab ids, e.g. Edge("L0H2", "L1H1", "k")
    sender: TLSite  # the sender's output
    receiver: TLSite  # the receiver's input that the edge feeds

    def to_dict(self) -> dict[str, Any]:
        return {"edge": self.edge.to_list(), "sender": self.sender.to_dict(), "receiver": self.receiver.to_dict()}


@dataclass(frozen=True)
class TLTruth:
    """A toylab ``Truth`` with every component and edge also given as TransformerLens sites.

    ``truth`` keeps the original (ids, roles, variables, claims, certificate); the other
    fields are views of it in TransformerLens naming.
    """

    truth: Truth
    nodes: dict[str, TLSite]  # component id -> its output site, for every circuit node
    edges: tuple[TLEdge, ...]  # the circuit's edges at qkv granularity
    attention: dict[str, tuple[TLSite, str, float]]  # head id -> (hook_pattern site, detector, min score)
    variables: dict[str, tuple[TLSite, ...]]  # causal variable -> the output sites that carry it
    flags: tuple[str, ...]  # HookedTransformerConfig flags the edges' receiver hooks need

    @property
    def model(self) -> str:
        return self.truth.model

    @property
    def provenance(self) -> str:
        return self.truth.provenance

    @property
    def roles(self) -> dict[str, str]:
        return dict(self.truth.nodes)

    def hook_names(self) -> list[str]:
        """Every hook name the circuit touches, outputs and inputs, sorted."""
        sites = list(self.nodes.values()) + [s for e in self.edges for s in (e.sender, e.receiver)]
        sites += [site for site, _, _ in self.attention.values()]
        return sorted({s.hook for s in sites})

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provenance": self.provenance,
            "nodes": {c: {"role": self.truth.nodes[c], **s.to_dict()} for c, s in self.nodes.items()},
            "edges": [e.to_dict() for e in self.edges],
            "attention": {h: {**s.to_dict(), "detector": d, "min_score": m}
                          for h, (s, d, m) in self.attention.items()},
            "variables": {v: [s.to_dict() for s in sites] for v, sites in self.variables.items()},
            "flags": list(self.flags),
        }

    def summary(self) -> str:
        lines = [f"{self.model} ({self.provenance}) in TransformerLens naming", "  nodes:"]
        lines += [f"    {c:<10} {self.truth.nodes[c]:<24} {s}" for c, s in self.nodes.items()]
        lines.append("  edges:")
        lines += [f"    {str(e.edge):<28} {e.sender} -> {e.receiver}" for e in self.edges]
        if self.flags:
            lines.append(f"  receiver hooks need: {', '.join(f'cfg.{f}=True' for f in self.flags)}")
        return "\n".join(lines)


def tl_truth(truth: Truth, cfg: TransformerConfig) -> TLTruth:
    """``truth`` (of a model with config ``cfg``) in TransformerLens naming; see the module docstring."""
    if not isinstance(truth, Truth):
        raise TypeError(f"tl_truth needs a toylab Truth (zoo_model.truth), got {type(truth).__name__}")
    truth.check_fits(cfg)
    nodes = {c: tl_site(c, cfg) for c in truth.nodes}
    edges = tuple(TLEdge(e, tl_site(e.sender, cfg), tl_site(e.receiver, cfg, e.kind)) for e in truth.edges)
    attention = {}
    for role in truth.attention:
        _, layer, head = comp.parse(role.head)
        attention[role.head] = (TLSite(f"blocks.{layer}.attn.hook_pattern", head=head), role.pattern, role.min_score)
    variables = {v.name: tuple(tl_site(c, cfg) for c in v.components) for v in truth.variables}
    flags = tuple(sorted({e.receiver.requires for e in edges if e.receiver.requires}))
    return TLTruth(truth, nodes, edges, attention, variables, flags)


__all__ = ["TLEdge", "TLSite", "TLTruth", "tl_site", "tl_truth"]
