"""The ground truth of a zoo model, as data: its circuit, roles, variables and claims.

    truth = toylab.zoo.load("induction-2l").truth
    truth.provenance            # "constructed", "enforced" or "certified"
    truth.nodes                 # {"L0H2": "previous-token", "L1H1": "induction", ...}
    truth.edges                 # (Edge("L0H2", "L1H1", "k"), ...)
    truth.edges_at("head")      # the same circuit after the promotion rule
    truth.certificate           # the figures that prove it (see toylab.truth.certify)

Provenance:
    constructed  weights set by hand; the circuit is what was built.
    enforced     trained from scratch with an objective that forces the circuit into
                 components chosen before training (interchange-intervention training).
    certified    trained naturally; the circuit was identified afterwards.
In every case the circuit is believed only because ``certify`` passes: interventions on
the weights, recomputed by the tests.

Circuits are position-agnostic: an edge stands for the sender's effect on the receiver at
every position. ``pos_embed`` is identical in a clean input and its counterfactual (both
have the same length), so resample ablation cannot remove it: it is never a circuit node
and is always kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from toylab import checkpoint as ckpt
from toylab import components as comp
from toylab.components import Edge
from toylab.models import TransformerConfig

PROVENANCES = ("constructed", "enforced", "certified")
TRUTH_FILE = "truth.json"
FORMAT = "toylab-truth/1"


@dataclass(frozen=True)
class AttentionRole:
    """What a head is expected to attend to, and the detector score that confirms it."""

    head: str  # "L0H2"
    pattern: str  # a detector of toylab.methods.detectors: "previous-token", "induction", ...
    min_score: float  # the detector's score on the task's data must reach this


@dataclass(frozen=True)
class CausalVariable:
    """A variable of the algorithm and where the model computes it."""

    name: str  # "previous_token"
    description: str
    components: tuple[str, ...]  # component ids whose outputs carry the variable
    positions: str  # "all", "last", "scored", or comma-separated indices "0,2"
    # Where within the (one) component's output it lives: orthonormal vectors spanning its
    # subspace (d_model wide for an MLP's hook_mlp_out, d_head for a head's hook_z). Empty:
    # the whole output. A distributed variable shares its component with others.
    basis: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", tuple(self.components))
        object.__setattr__(self, "basis", tuple(tuple(float(x) for x in v) for v in self.basis))
        if self.basis and len(self.components) != 1:
            raise ValueError(f"variable {self.name!r}: a basis locates it within one component, "
                             f"got {list(self.components)}")


@dataclass(frozen=True)
class FeatureDirection:
    """A direction in an activation space that encodes a known feature.

    Without ``variable`` the direction is an input feature (e.g. a token's embedding at
    ``hook_embed``, named by the token). With ``variable`` set it is a causal feature, read at
    ``hook`` at position ``pos`` (required), and on where the task's variable equals ``value``:
    ``task.variables(tokens)[variable] == value`` for a variable with one value per prompt
    ([batch]), ``task.variables(tokens)[variable][:, pos] == value`` for one with a value per
    position ([batch, pos], e.g. brackets' ``negative``). ``certify`` checks each causal
    feature by intervention along its (unit) direction on held-out prompts, against random
    directions at the same site treated the same way (``toylab.truth.certify``):

    binary (``off`` set)   removal: on the prompts where the feature is on and
                           ``variable := off`` (at ``pos`` alone, for a per-position variable)
                           changes the algorithm's answer, its coordinate is set to its mean
                           over the prompts where the feature is off, and the output must be
                           the algorithm's answer with ``variable := off``. Where fewer than
                           two sampled prompts are such (a flag redundant wherever it is on: the
                           balance is below zero at an even position only if it was one
                           position earlier), writing instead: on the prompts where it is off
                           and ``variable := value`` changes the answer, the coordinate is set
                           to its mean where the feature is on, and the output must be the
                           algorithm's with ``variable := value``.
    multi-valued           interchange (``off`` None: "off" has no answer when the variable
    (``off`` None)         takes many values; every value has its own feature at the same
                           site): on the prompts where the variable is ``value``, with another
                           declared value v' drawn per prompt, the activation's component in
                           the span of the two features' directions is replaced by that
                           component of the mean activation over the prompts where the
                           variable is v', and the output must be the algorithm's with
                           ``variable := v'``.

    Either way the declared direction must give the algorithm's answer on >= 0.9 of those
    prompts (at most ``certify.FEATURE_ROWS`` of them; prompts where the algorithm's answer
    would not change are left out, as any direction would pass there), and 16 random
    directions (random planes, for an interchange), treated the same way, move the answer on
    <= 0.25 of them on average.
    """

    name: str
    hook: str  # e.g. "blocks.0.hook_mlp_out"
    vector: tuple[float, ...]
    description: str = ""
    pos: int | None = None  # the position it is read at; None: every position (input features only)
    variable: str | None = None  # the task variable whose value it carries (``task.variables``)
    value: int | None = None  # it is active where variable == value (at pos, for a per-position variable)
    off: int | None = None  # binary: the variable's value once the feature is ablated; None: multi-valued

    def __post_init__(self) -> None:
        object.__setattr__(self, "vector", tuple(self.vector))
        if self.variable is None:
            if self.value is not None or self.off is not None:
                raise ValueError(f"feature {self.name!r}: value and off describe a causal feature; "
                                 "set its variable too (or neither, for an input feature)")
        elif self.pos is None or self.value is None:
            raise ValueError(f"feature {self.name!r} carries {self.variable!r}: a causal feature needs the "
                             "position it is read at (pos) and the value it stands for (value)")
        elif self.off == self.value:
            raise ValueError(f"feature {self.name!r}: off ({self.off}) must differ from value ({self.value})")


def _dumps(data: Any, indent: int = 0) -> str:
    """JSON as ``json.dumps(data, indent=2)`` writes it, except that a list of plain values (a
    feature's vector, an interval, an edge) stays on one line: feature vectors one number a
    line made most of a truth's bytes, and the shipped zoo's size is bounded."""
    pad = " " * (indent + 2)
    if isinstance(data, dict) and data:
        items = ",\n".join(f"{pad}{json.dumps(str(k))}: {_dumps(v, indent + 2)}" for k, v in data.items())
        return "{\n" + items + "\n" + " " * indent + "}"
    if isinstance(data, (list, tuple)) and data:
        if not any(isinstance(x, (dict, list, tuple)) for x in data):
            return json.dumps(list(data))
        items = ",\n".join(pad + _dumps(v, indent + 2) for v in data)
        return "[\n" + items + "\n" + " " * indent + "]"
    return json.dumps(data)


TRAP_KINDS = ("self-repair", "or-gate", "saturation", "cancellation", "decoys", "long-chain", "distributed-variable")


@dataclass(frozen=True)
class Trap:
    """A documented failure of a family of methods that this model reproduces, as data.

    ``certify`` checks the mechanism by intervention (``toylab.truth.certify``), the harness
    says which methods fell in (``toylab.validate``).
    """

    kind: str  # one of TRAP_KINDS
    mechanism: str  # in words: what the trap does to which methods, and why
    reference: str  # where the failure is documented
    falls_in: tuple[str, ...]  # baselines expected to fail on it
    remedies: tuple[str, ...]  # baselines expected to recover the truth
    # The components the mechanism names, by role: "primary"/"backup" (self-repair),
    # "cancelling" (cancellation), "saturated" (saturation), "decoy" (decoys: heads outside
    # the circuit whose attention roles, in the truth's ``attention``, mimic its heads').
    nodes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # or-gate: alternative paths, each sufficient alone (each a tuple of edges of the truth).
    paths: tuple[tuple[Edge, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in TRAP_KINDS:
            raise ValueError(f"unknown trap kind {self.kind!r}; known: {list(TRAP_KINDS)}")
        object.__setattr__(self, "falls_in", tuple(self.falls_in))
        object.__setattr__(self, "remedies", tuple(self.remedies))
        object.__setattr__(self, "nodes", {role: tuple(ids) for role, ids in self.nodes.items()})
        object.__setattr__(self, "paths", tuple(tuple(Edge.parse(e) for e in path) for path in self.paths))
        for ids in self.nodes.values():
            for node in ids:
                comp.parse(node)

    def path_edges(self) -> set[Edge]:
        return {e for path in self.paths for e in path}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mechanism": self.mechanism, "reference": self.reference,
                "falls_in": list(self.falls_in), "remedies": list(self.remedies),
                "nodes": {role: list(ids) for role, ids in self.nodes.items()},
                "paths": [[e.to_list() for e in path] for path in self.paths]}


@dataclass(frozen=True)
class Truth:
    model: str  # the zoo name it belongs to
    provenance: str
    description: str  # the algorithm, in words
    nodes: dict[str, str]  # component id -> role; includes embed and logits when they take part
    edges: tuple[Edge, ...]  # at qkv granularity (edges into heads carry q, k or v)
    # Edges of ``edges`` the circuit stays faithful without (each alone): circuits with and
    # without one are equally true, so a method is scored neither up nor down for it.
    optional: tuple[Edge, ...] = ()
    attention: tuple[AttentionRole, ...] = ()
    variables: tuple[CausalVariable, ...] = ()
    features: tuple[FeatureDirection, ...] = ()
    # (source, target) between feature names; a target "logit:<output name>" is an output class.
    feature_edges: tuple[tuple[str, str], ...] = ()
    claims: dict[str, Any] = field(default_factory=dict)  # algorithm-level, e.g. {"key_frequencies": [...]}
    trap: Trap | None = None  # the method trap this model is, where it is one
    certificate: dict[str, Any] | None = None  # written by certify(); see Certificate.to_dict

    def __post_init__(self) -> None:
        if self.provenance not in PROVENANCES:
            raise ValueError(f"provenance must be one of {PROVENANCES}, got {self.provenance!r}")
        object.__setattr__(self, "edges", tuple(sorted({Edge.parse(e) for e in self.edges})))
        object.__setattr__(self, "optional", tuple(sorted({Edge.parse(e) for e in self.optional})))
        if not set(self.optional) <= set(self.edges):
            raise ValueError(f"optional edges {sorted(map(str, set(self.optional) - set(self.edges)))} are not "
                             "edges of the circuit")
        object.__setattr__(self, "attention", tuple(self.attention))
        object.__setattr__(self, "variables", tuple(self.variables))
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "feature_edges", tuple(tuple(e) for e in self.feature_edges))
        names = {f.name for f in self.features}
        for source, target in self.feature_edges:
            if source not in names or (target not in names and not target.startswith("logit:")):
                raise ValueError(f"feature edge {source!r} -> {target!r}: both ends must be declared features "
                                 "(or the target 'logit:<output name>')")
        for node in self.nodes:
            comp.parse(node)
        ends = {end for e in self.edges for end in (e.sender, e.receiver)}
        missing = sorted(ends - set(self.nodes))
        if missing:
            raise ValueError(f"edges of the circuit touch {missing}, which are not among its nodes")
        if "pos_embed" in self.nodes:
            raise ValueError("pos_embed cannot be a circuit node: resample ablation never changes it")
        for role in self.attention:
            if comp.parse(role.head)[0] != "head":
                raise ValueError(f"attention role for {role.head!r}: not a head id")
        for variable in self.variables:
            for c in variable.components:
                comp.parse(c)
        if self.trap is not None and not self.trap.path_edges() <= set(self.edges):
            raise ValueError(f"the trap's paths use edges {sorted(map(str, self.trap.path_edges() - set(self.edges)))}, "
                             "which are not edges of the circuit")

    # ---- views ----------------------------------------------------------------------
    def edges_at(self, granularity: str) -> tuple[Edge, ...]:
        """The circuit's edges at "qkv" (as written) or "head" granularity (promoted)."""
        comp.check_granularity(granularity)
        if granularity == "qkv":
            return self.edges
        return tuple(sorted({comp.promote_edge(e) for e in self.edges}))

    def nodes_at(self, granularity: str) -> tuple[str, ...]:
        """The circuit's components; at "head" granularity neurons are promoted to their MLP."""
        comp.check_granularity(granularity)
        if granularity == "qkv":
            return tuple(self.nodes)
        return tuple(dict.fromkeys(comp.promote_node(n) for n in self.nodes))

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(n for n in self.nodes if comp.parse(n)[0] == "head")

    def neurons(self) -> dict[int, list[int]]:
        """Circuit neurons by layer, for MLPs whose truth goes down to neurons."""
        out: dict[int, list[int]] = {}
        for node in self.nodes:
            kind, layer, index = comp.parse(node)
            if kind == "neuron":
                out.setdefault(layer, []).append(index)
        return out

    def check_fits(self, cfg: TransformerConfig) -> None:
        """Raise if a component or edge does not exist in a model with config ``cfg``."""
        for node in self.nodes:
            comp.check_component(node, cfg)
        for edge in self.edges:
            comp.check_edge(edge, cfg)
            if edge.kind == "head":
                raise ValueError(f"edge {edge}: a truth is written at qkv granularity (q, k or v into heads)")
        if self.trap is not None:
            for ids in self.trap.nodes.values():
                for node in ids:
                    comp.check_component(node, cfg)
        for variable in self.variables:
            for c in variable.components:
                comp.check_component(c, cfg)
            if variable.basis:
                width = cfg.d_head if comp.parse(variable.components[0])[0] == "head" else cfg.d_model
                if any(len(v) != width for v in variable.basis):
                    raise ValueError(f"variable {variable.name!r}: its basis vectors must have {width} entries "
                                     f"(the width of {variable.components[0]}'s output)")

    def with_certificate(self, certificate: dict[str, Any]) -> Truth:
        return Truth(**{**self._fields(), "certificate": certificate})

    def required_edges(self, granularity: str = "qkv") -> tuple[Edge, ...]:
        """The edges no faithful circuit can do without: ``edges`` less ``optional``. At "head"
        granularity a promoted edge is required when any of its q, k, v edges is."""
        required = [e for e in self.edges if e not in set(self.optional)]
        comp.check_granularity(granularity)
        if granularity == "qkv":
            return tuple(required)
        return tuple(sorted({comp.promote_edge(e) for e in required}))

    def optional_edges(self, granularity: str = "qkv") -> tuple[Edge, ...]:
        """The optional edges at a granularity: a promoted edge is optional when all of its are."""
        return tuple(sorted(set(self.edges_at(granularity)) - set(self.required_edges(granularity))))

    # ---- JSON -----------------------------------------------------------------------
    def _fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            **self._fields(),
            "edges": [e.to_list() for e in self.edges],
            "optional": [e.to_list() for e in self.optional],
            "attention": [vars(a) for a in self.attention],
            "variables": [{**vars(v), "components": list(v.components), "basis": [list(b) for b in v.basis]}
                          for v in self.variables],
            "features": [{**vars(f), "vector": list(f.vector)} for f in self.features],
            "feature_edges": [list(e) for e in self.feature_edges],
            "trap": None if self.trap is None else self.trap.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Truth:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a toylab truth (format {got!r}, expected {FORMAT!r})")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - {"format"})
        if unknown:
            raise ValueError(f"unknown truth fields {unknown}; valid fields: {sorted(names)}")
        try:
            return cls(**{
                **{k: v for k, v in data.items() if k != "format"},
                "edges": tuple(Edge.parse(e) for e in data.get("edges", ())),
                "optional": tuple(Edge.parse(e) for e in data.get("optional", ())),
                "attention": tuple(AttentionRole(**a) for a in data.get("attention", ())),
                "variables": tuple(CausalVariable(**{**v, "components": tuple(v["components"]),
                                                     "basis": tuple(tuple(b) for b in v.get("basis", ()))})
                                   for v in data.get("variables", ())),
                "features": tuple(FeatureDirection(**{**f, "vector": tuple(f["vector"])})
                                  for f in data.get("features", ())),
                "feature_edges": tuple(tuple(e) for e in data.get("feature_edges", ())),
                "trap": None if data.get("trap") is None else Trap(**data["trap"]),
            })
        except (TypeError, KeyError, AttributeError) as err:
            raise ValueError(f"malformed truth: {err}") from None

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / TRUTH_FILE
        ckpt.atomic_write_bytes(path, (_dumps(self.to_dict()) + "\n").encode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Truth:
        path = Path(path)
        if path.is_dir():
            path = path / TRUTH_FILE
        try:
            return cls.from_dict(ckpt.read_json(path, "ground truth"))
        except ValueError as err:
            raise ckpt.CheckpointError(f"{path}: {err}") from None

    # ---- display --------------------------------------------------------------------
    def summary(self) -> str:
        lines = [f"{self.model}: {self.provenance} ground truth", f"  {self.description}", "  nodes:"]
        lines += [f"    {node:<10} {role}" for node, role in self.nodes.items()]
        lines.append("  edges:")
        lines += [f"    {e}" + ("   (optional)" if e in self.optional else "") for e in self.edges]
        if self.attention:
            lines.append("  attention:")
            lines += [f"    {a.head:<10} {a.pattern} (score >= {a.min_score})" for a in self.attention]
        if self.variables:
            lines.append("  causal variables:")
            lines += [f"    {v.name:<16} at {', '.join(v.components)} [{v.positions}]: {v.description}"
                      for v in self.variables]
        for key, value in self.claims.items():
            lines.append(f"  {key}: {json.dumps(value)}")
        if self.trap is not None:
            lines.append(f"  trap: {self.trap.kind} ({self.trap.reference})")
            lines.append(f"    {self.trap.mechanism}")
            lines.append(f"    falls in: {', '.join(self.trap.falls_in)}; remedies: {', '.join(self.trap.remedies)}")
            lines += [f"    {role}: {', '.join(ids)}" for role, ids in self.trap.nodes.items()]
            lines += [f"    path {i + 1}: {', '.join(map(str, path))}" for i, path in enumerate(self.trap.paths)]
        return "\n".join(lines)
