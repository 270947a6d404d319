"""The method protocol: what a method under test receives and what it may return.

Axis names used in shape comments:
    batch, pos     as everywhere
    direction      feature directions a method proposes
    k              the dimensions of a featuriser's subspace
    d              the width of the activation the directions live in (d_model, d_mlp, ...)

A *method* is any callable ``method(problem) -> result``. ``problem`` is a ``Problem``: one
model with a known circuit (the truth stays hidden), its task, and seeded samplers of clean
and corrupted inputs. ``result`` is one of

    NodeScores          {component id: score}            higher = more likely in the circuit
    EdgeScores          {Edge: score}                    at "qkv" or "head" granularity
    Circuit             a set of component ids or of edges
    FeatureDirections   directions [direction, d] at one hook, for features the truth declares
    Featuriser          a subspace [k, d] at one hook and positions, for one causal variable
    FeatureGraph        a builder of one prompt's graph of features (``build(tokens [pos])``
                        -> ``methods.AttributionGraph``), for models that declare features

Plain Python values are accepted too and read as the obvious type: a dict keyed by
component ids is ``NodeScores``; a dict keyed by edges (``Edge`` or 3-tuples) is
``EdgeScores``; a set, frozenset or list of ids or of edges is a ``Circuit``.

Component ids and edges are those of ``toylab.components``: ``embed``, ``L1H2``,
``MLP0``, ``logits``; edges ``(sender, receiver, kind)`` with kind q, k or v into a head at
"qkv" granularity ("head" once promoted) and "resid" into an MLP or the logits.
Scores rank as given (higher first): return absolute effects if your method's sign means
direction rather than importance. ``pos_embed`` never counts: it is identical in a clean
input and its counterfactual, so no circuit can contain it; scores for it are ignored.

``normalise(result, problem)`` turns any accepted value into one of the six types and
raises ``MethodOutputError`` saying what was wrong (unknown id with the nearest valid
ones, NaN, wrong shape, unknown hook) and what the protocol expects.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch
from torch import Tensor

from toylab import components as comp
from toylab.components import Edge
from toylab.hooks import UnknownNameError
from toylab.methods.attribution_graph import AttributionGraph
from toylab.models import Transformer
from toylab.tasks import Batch, CounterfactualPair, Task, logit_diff

GRANULARITIES = ("qkv", "head")


class MethodOutputError(ValueError):
    """A method returned something the protocol does not accept; the message says what to fix."""


@dataclass(frozen=True)
class NodeScores:
    scores: Mapping[str, float]  # component id -> score (neurons are promoted to their MLP by max)


@dataclass(frozen=True)
class EdgeScores:
    scores: Mapping[Edge, float]  # edge -> score
    granularity: str  # "qkv" (q/k/v into heads) or "head"


@dataclass(frozen=True)
class Circuit:
    nodes: frozenset[str] = frozenset()  # component ids, when the method answers with nodes
    edges: frozenset[Edge] = frozenset()  # edges, when it answers with edges (never both)
    granularity: str = "head"  # of the edges


@dataclass(frozen=True)
class FeatureDirections:
    hook: str  # a hook name of the model, e.g. "blocks.0.hook_resid_post"
    directions: Tensor  # [direction, d]


@dataclass(frozen=True)
class Featuriser:
    variable: str  # a causal variable the truth declares
    hook: str  # where the subspace lives
    basis: Tensor  # [k, d]: the variable is claimed to live in the span of these rows
    positions: str = "all"  # "all", "last" or indices "0,2"


@dataclass(frozen=True)
class FeatureGraph:
    """A graph per prompt: ``build(tokens [pos])`` returns that prompt's ``AttributionGraph``
    (``toylab.methods.attribution_graph``: token, feature, error and logit nodes, direct
    effects, and for each feature node the direction it writes at each ``hook_mlp_out``).
    The harness builds one per scoring prompt and prunes it at the two thresholds."""

    build: Callable[[Tensor], AttributionGraph]
    node_threshold: float = 0.8
    edge_threshold: float = 0.98


Result = Union[NodeScores, EdgeScores, Circuit, FeatureDirections, Featuriser, FeatureGraph]
Method = Callable[["Problem"], Any]
KINDS = {NodeScores: "node scores", EdgeScores: "edge scores", Circuit: "circuit",
         FeatureDirections: "feature directions", Featuriser: "featuriser", FeatureGraph: "feature graph"}


@dataclass
class Problem:
    """One model with a known circuit, as a method under test sees it.

    ``pair(n)`` gives ``n`` clean inputs and their counterfactuals (row i of
    ``pair.corrupted`` is row i of ``pair.clean`` with one controlled change); ``clean(n)``
    and ``corrupted(n)`` are the two halves. The metric the truth was certified with is
    ``metric(logits, pair)``: the logit difference between the clean and the
    counterfactual answer. The model must not be changed: the harness checks its weights
    after the method returns.
    """

    name: str  # zoo name, or the folder a model was loaded from
    seed: int  # the model's training seed
    model: Transformer
    task: Task
    data_seed: int = 0  # seeds the samplers; the harness scores on other seeds
    _answer_key: Any = field(default=None, repr=False)  # the Truth: for the ceiling baseline only
    peeked: bool = field(default=False, repr=False)

    @property
    def cfg(self):
        return self.model.cfg

    def pair(self, n: int = 64, seed: int | None = None) -> CounterfactualPair:
        """``n`` pairs from ``seed`` (default ``data_seed``). Whatever the seed, the pairs come
        from a stream the harness never scores on (``method_stream``)."""
        return self.task.counterfactual(n, method_stream(self.data_seed if seed is None else seed))

    def clean(self, n: int = 64, seed: int | None = None) -> Batch:
        return self.pair(n, seed).clean

    def corrupted(self, n: int = 64, seed: int | None = None) -> Batch:
        return self.pair(n, seed).corrupted

    @staticmethod
    def metric(logits: Tensor, pair: CounterfactualPair) -> Tensor:
        return logit_diff(logits, pair)

    def nodes(self) -> list[str]:
        """The candidate nodes: every component a circuit may contain (inputs but pos_embed, heads, MLPs)."""
        return candidate_nodes(self.cfg)

    def edges(self, granularity: str = "qkv") -> list[Edge]:
        """The candidate edges at ``granularity``: the model's graph without pos_embed's edges."""
        return candidate_edges(self.cfg, granularity)

    def answer_key(self):
        """The truth. Only the ceiling baseline may read it; the report marks any method that does."""
        self.peeked = True
        return self._answer_key


def method_stream(seed: int) -> int:
    """The sampler seed behind a method's ``seed``: always odd, so it is never the harness's
    scoring seed (even), whatever seed a method passes."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"a data seed is an int >= 0, got {seed!r}")
    return 2 * seed + 1


def candidate_nodes(cfg) -> list[str]:
    return [n for n in comp.senders(cfg) if n != "pos_embed"]


def candidate_edges(cfg, granularity: str = "qkv") -> list[Edge]:
    return [e for e in comp.edges(cfg, granularity) if e.sender != "pos_embed"]


# ---- normalising what a method returned -------------------------------------------
def normalise(result: Any, problem: Problem) -> Result:
    """``result`` as one of the six protocol types, validated against ``problem``'s model."""
    if isinstance(result, Mapping):
        if not result:
            raise MethodOutputError("the method returned an empty dict; return scores for the model's "
                                    f"components, e.g. {{{problem.nodes()[1]!r}: 0.7, ...}}")
        keys = list(result)
        if all(isinstance(k, str) for k in keys):
            result = NodeScores(dict(result))
        elif all(isinstance(k, (Edge, tuple, list)) for k in keys):
            result = EdgeScores({_edge(k): v for k, v in result.items()}, _granularity_of(keys))
        else:
            raise MethodOutputError("a dict of scores is keyed by component ids (str) or by edges "
                                    f"(sender, receiver, kind); got keys like {keys[0]!r}")
    elif isinstance(result, (set, frozenset, list, tuple)) and not isinstance(result, Edge):
        items = list(result)
        if all(isinstance(i, str) for i in items):
            result = Circuit(nodes=frozenset(items))
        elif all(isinstance(i, (Edge, tuple, list)) for i in items):
            edges = frozenset(_edge(i) for i in items)
            result = Circuit(edges=edges, granularity=_granularity_of(edges))
        else:
            raise MethodOutputError("a circuit is a set of component ids (str) or of edges "
                                    f"(sender, receiver, kind); got items like {items[0]!r}")

    cfg = problem.cfg
    if isinstance(result, NodeScores):
        return NodeScores(_promoted_node_scores(result.scores, cfg))
    if isinstance(result, EdgeScores):
        return EdgeScores(_checked_edge_scores(result.scores, result.granularity, cfg), result.granularity)
    if isinstance(result, Circuit):
        if result.nodes and result.edges:
            raise MethodOutputError("a Circuit holds nodes or edges, not both")
        for node in result.nodes:
            _check_node(node, cfg)
        for edge in result.edges:
            _check_edge(edge, cfg)
        if result.edges:
            return Circuit(edges=frozenset(result.edges), granularity=_granularity_of(result.edges))
        return Circuit(nodes=frozenset(comp.promote_node(n) for n in result.nodes))
    if isinstance(result, FeatureDirections):
        width = _hook_width(problem, result.hook)
        d = _matrix(result.directions, "FeatureDirections.directions", width)
        return FeatureDirections(result.hook, d)
    if isinstance(result, Featuriser):
        width = _hook_width(problem, result.hook)
        basis = _matrix(result.basis, "Featuriser.basis", width)
        if torch.linalg.matrix_rank(basis) == 0:
            raise MethodOutputError("Featuriser.basis is zero: it spans no subspace")
        return Featuriser(result.variable, result.hook, basis, result.positions)
    if isinstance(result, FeatureGraph):
        if not callable(result.build):
            raise MethodOutputError(f"FeatureGraph.build must be callable (tokens [pos] -> AttributionGraph), "
                                    f"got {type(result.build).__name__}")
        for name in ("node_threshold", "edge_threshold"):
            value = getattr(result, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise MethodOutputError(f"FeatureGraph.{name} must be a number in [0, 1], got {value!r}")
        return result
    raise MethodOutputError(
        f"the method returned {type(result).__name__}; return one of NodeScores, EdgeScores, Circuit, "
        "FeatureDirections, Featuriser, FeatureGraph (toylab.validate), a dict of scores or a set of ids/edges")


def _edge(value) -> Edge:
    try:
        return Edge.parse(value)
    except ValueError as err:
        raise MethodOutputError(str(err)) from None


def _granularity_of(edges) -> str:
    kinds = {_edge(e).kind for e in edges}
    if kinds & set(comp.QKV) and "head" in kinds:
        raise MethodOutputError("edges mix q/k/v kinds with 'head': answer at one granularity "
                                "(q, k, v into heads, or 'head' for the promoted edge)")
    return "head" if "head" in kinds or not kinds & set(comp.QKV) else "qkv"


def _finite(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MethodOutputError(f"the score of {what} is {value!r}, not a number") from None
    if math.isnan(number):
        raise MethodOutputError(f"the score of {what} is NaN")
    return number


def _check_node(node: str, cfg) -> None:
    try:
        comp.check_component(node, cfg)
    except ValueError as err:
        valid = comp.nodes(cfg)
        near = difflib.get_close_matches(str(node), valid, n=4, cutoff=0.3)
        raise MethodOutputError(f"{err}" + (f"; nearest valid ids: {near}" if near else "")) from None
    if node == comp.OUTPUT:
        raise MethodOutputError("'logits' is the circuit's output, not a node to score; score embed, heads and MLPs")


def _check_edge(edge: Edge, cfg) -> None:
    try:
        comp.check_edge(edge, cfg)
    except ValueError as err:
        raise MethodOutputError(str(err)) from None


def _promoted_node_scores(scores: Mapping[str, Any], cfg) -> dict[str, float]:
    out: dict[str, float] = {}
    for node, value in scores.items():
        _check_node(node, cfg)
        number = _finite(value, node)
        node = comp.promote_node(node)
        out[node] = max(out.get(node, -math.inf), number)  # a neuron scores its MLP by the max
    out.pop("pos_embed", None)
    return out


def _checked_edge_scores(scores: Mapping[Edge, Any], granularity: str, cfg) -> dict[Edge, float]:
    if granularity not in GRANULARITIES:
        raise MethodOutputError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    out = {}
    for edge, value in scores.items():
        edge = _edge(edge)
        _check_edge(edge, cfg)
        out[edge] = _finite(value, str(edge))
    return {e: v for e, v in out.items() if e.sender != "pos_embed"}


def _hook_width(problem: Problem, hook: str) -> int:
    try:
        problem.model.resolve_hook_names(hook)
    except UnknownNameError as err:
        raise MethodOutputError(str(err)) from None
    with torch.no_grad():
        tokens = problem.clean(1).tokens.to(problem.model.device)
        _, cache = problem.model.run_with_cache(tokens, names=[hook])
    act = cache[hook]
    if act.ndim != 3:
        raise MethodOutputError(f"{hook} has shape {tuple(act.shape)}; directions live in a [batch, pos, d] "
                                "activation such as hook_resid_post, hook_mlp_out or mlp.hook_post")
    return act.shape[-1]


def _matrix(value, what: str, width: int) -> Tensor:
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value, dtype=torch.float32, device="cpu")
        except (TypeError, ValueError):
            raise MethodOutputError(f"{what} must be a tensor [n, {width}], got {type(value).__name__}") from None
    value = value.detach().float().cpu()
    if value.ndim == 1:
        value = value.unsqueeze(0)
    if value.ndim != 2 or value.shape[1] != width or value.shape[0] == 0:
        raise MethodOutputError(f"{what} must have shape [n, {width}] (n >= 1), got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise MethodOutputError(f"{what} contains NaN or infinite values")
    return value
