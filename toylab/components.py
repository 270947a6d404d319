"""Component ids, the computational graph they form, and the rule that coarsens it.

Component ids (the names every truth, method and score in toylab uses):

    embed          token embedding (sender)
    pos_embed      positional embedding (sender)
    L{l}H{h}       attention head h of layer l (sender and receiver)
    MLP{l}         the MLP of layer l (sender and receiver)
    MLP{l}N{i}     neuron i of MLP{l}: a node of a finer granularity, never an edge end
    logits         the unembedding's input (receiver)

Edges are ``(sender, receiver, kind)``. Into a head the kind says which of its inputs the
sender reaches: ``q``, ``k`` or ``v``; into an MLP or the logits it is ``resid``. A sender
reaches every receiver downstream of it in the residual stream: heads of later layers, the
MLP of its own layer or later ones, and the logits.

Granularity and the promotion rule (one rule, used to score every method fairly):
    "qkv"   edges carry q/k/v into heads; nodes may be neurons.
    "head"  edges into a head lose their kind: (s, r, q|k|v) -> (s, r, "head"),
            duplicates merge; a neuron node MLP{l}N{i} is promoted to MLP{l}.
A method that answers at head granularity is scored against the promoted truth; one that
answers at qkv granularity against the truth as written.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

from toylab.models import TransformerConfig

EdgeKind = Literal["q", "k", "v", "resid", "head"]
QKV = ("q", "k", "v")
INPUTS = ("embed", "pos_embed")
OUTPUT = "logits"
# Hooks whose activation holds one vector per head: [batch, pos, head, d].
PER_HEAD_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_result", "hook_q_input", "hook_k_input", "hook_v_input")

_HEAD = re.compile(r"L(\d+)H(\d+)")
_MLP = re.compile(r"MLP(\d+)")
_NEURON = re.compile(r"MLP(\d+)N(\d+)")


@dataclass(frozen=True, order=True)
class Edge:
    sender: str
    receiver: str
    kind: str  # "q", "k", "v" into a head, "resid" into an MLP or the logits; "head" once promoted

    def __str__(self) -> str:
        return f"{self.sender} -> {self.receiver} ({self.kind})"

    def to_list(self) -> list[str]:
        return [self.sender, self.receiver, self.kind]

    @classmethod
    def parse(cls, value: Edge | tuple[str, str, str] | list[str]) -> Edge:
        if isinstance(value, Edge):
            return value
        if not isinstance(value, (tuple, list)) or len(value) != 3:
            raise ValueError(f"an edge is (sender, receiver, kind), got {value!r}")
        return cls(*(str(v) for v in value))


def head_id(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


@functools.lru_cache(maxsize=4096)  # ids repeat endlessly in graph code; parsing is pure
def parse(component: str) -> tuple[str, int | None, int | None]:
    """``"L1H2"`` -> ("head", 1, 2); ``"MLP0"`` -> ("mlp", 0, None); ``"MLP0N7"`` -> ("neuron", 0, 7)."""
    if component in INPUTS or component == OUTPUT:
        return component, None, None
    for kind, pattern in (("head", _HEAD), ("neuron", _NEURON), ("mlp", _MLP)):
        match = pattern.fullmatch(component)
        if match:
            numbers = [int(g) for g in match.groups()] + [None]
            return kind, numbers[0], numbers[1]
    raise ValueError(
        f"{component!r} is not a component id; ids are embed, pos_embed, L{{l}}H{{h}}, MLP{{l}}, "
        f"MLP{{l}}N{{i}} and logits (e.g. 'L1H2', 'MLP0N17')"
    )


def layer_of(component: str) -> float:
    """Where a component sits in the residual stream: inputs -1, logits +inf, MLP after heads."""
    kind, layer, _ = parse(component)
    if kind in INPUTS:
        return -1.0
    if kind == OUTPUT:
        return float("inf")
    return layer + (0.5 if kind in ("mlp", "neuron") else 0.0)


def nodes(cfg: TransformerConfig, neurons: bool = False) -> list[str]:
    """Every component of a model, in residual-stream order."""
    out = list(INPUTS)
    for layer in range(cfg.n_layers):
        out += [head_id(layer, h) for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            out.append(f"MLP{layer}")
            if neurons:
                out += [f"MLP{layer}N{i}" for i in range(cfg.d_mlp)]
    return out + [OUTPUT]


def senders(cfg: TransformerConfig) -> list[str]:
    return [n for n in nodes(cfg) if n != OUTPUT]


def receivers(cfg: TransformerConfig) -> list[str]:
    return [n for n in nodes(cfg) if n not in INPUTS]


def edges(cfg: TransformerConfig, granularity: str = "qkv") -> list[Edge]:
    """Every edge of the model's graph at ``granularity`` ("qkv" or "head")."""
    check_granularity(granularity)
    return list(_edges(cfg, granularity))


@functools.lru_cache(maxsize=64)
def edge_set(cfg: TransformerConfig) -> frozenset[Edge]:
    """``edges(cfg)`` as a set (qkv granularity), built once per config."""
    return frozenset(_edges(cfg, "qkv"))


@functools.lru_cache(maxsize=64)
def _edges(cfg: TransformerConfig, granularity: str) -> tuple[Edge, ...]:
    out = []
    for receiver in receivers(cfg):
        kinds = (QKV if granularity == "qkv" else ("head",)) if parse(receiver)[0] == "head" else ("resid",)
        for sender in senders(cfg):
            if layer_of(sender) < layer_of(receiver) or (
                    parse(sender)[0] == "head" and parse(receiver)[0] == "mlp"
                    and parse(sender)[1] == parse(receiver)[1]):
                out += [Edge(sender, receiver, kind) for kind in kinds]
    return tuple(out)


def check_granularity(granularity: str) -> None:
    if granularity not in ("qkv", "head"):
        raise ValueError(f"granularity must be 'qkv' or 'head', got {granularity!r}")


def promote_edge(edge: Edge) -> Edge:
    """The promotion rule: an edge into a head keeps its ends and loses its q/k/v kind."""
    return Edge(edge.sender, edge.receiver, "head") if edge.kind in QKV else edge


def promote_node(component: str) -> str:
    """The promotion rule for nodes: a neuron becomes its MLP."""
    kind, layer, _ = parse(component)
    return f"MLP{layer}" if kind == "neuron" else component


def check_component(component: str, cfg: TransformerConfig) -> None:
    """Raise if ``component`` is not a component of a model with config ``cfg``."""
    kind, layer, index = parse(component)
    if layer is not None and not 0 <= layer < cfg.n_layers:
        raise ValueError(f"{component!r} names layer {layer}, but the model has {cfg.n_layers} layers")
    if kind == "head" and not 0 <= index < cfg.n_heads:
        raise ValueError(f"{component!r} names head {index}, but each layer has {cfg.n_heads} heads")
    if kind in ("mlp", "neuron") and cfg.attn_only:
        raise ValueError(f"{component!r} names an MLP, but the model is attention-only")
    if kind == "neuron" and not 0 <= index < cfg.d_mlp:
        raise ValueError(f"{component!r} names neuron {index}, but d_mlp is {cfg.d_mlp}")


def check_edge(edge: Edge, cfg: TransformerConfig) -> None:
    """Raise if ``edge`` is not an edge of the model's graph (at either granularity)."""
    for end in (edge.sender, edge.receiver):
        check_component(end, cfg)
    kind = parse(edge.receiver)[0]
    valid = QKV + ("head",) if kind == "head" else ("resid",)
    if edge.kind not in valid:
        raise ValueError(f"edge {edge}: an edge into {edge.receiver} has kind one of {list(valid)}")
    if Edge(edge.sender, edge.receiver, "resid" if kind != "head" else "q") not in edge_set(cfg):
        raise ValueError(
            f"edge {edge} does not exist: {edge.sender} is not upstream of {edge.receiver} "
            "(senders are embed, pos_embed, heads and MLPs; a head reaches later layers, its own "
            "layer's MLP and the logits)"
        )
