"""Score a method against every known circuit: ``score(method) -> Report``.

Axis names used in shape comments:
    batch, pos     as everywhere
    k              dimensions of a featuriser's subspace
    d              width of the activation it lives in
    feature        true feature directions; direction: the method's

For each model of the suite (``toylab.validate.suite``) and each of its seeds the harness
builds a ``Problem`` (the truth hidden), calls the method, checks what came back
(``protocol.normalise``), checks that the model was left as it was (same weights, no
hooks), and scores the answer (``metrics``) on counterfactual pairs drawn with a seed the
method never saw. A method that raises, returns garbage or changes the model gets an
error entry for that model; the other models and methods go on.

What each kind of answer is scored with (names of the figures in ``Entry.metrics``):
    node scores       node_auroc, node_ap, node_precision, node_recall (at |T| nodes),
                      node-level faithfulness curve (cpr, cmd), and the top |T| nodes as its
                      circuit: faithfulness, completeness, minimality
    edge scores       edge_auroc/edge_ap/edge_precision/edge_recall at the method's
                      granularity and, for "qkv", again at "head" after the promotion rule
                      (an edge into a head scores the max of its q, k, v scores), suffixed
                      [qkv] / [head]; node scores derived as each sender's best edge; the
                      edge-level faithfulness curve; the top |T| edges as its circuit
    (both)            cpr_truth: the CPR of the truth ranked first (its parts ordered by what
                      removing each from the truth costs), measured the same way. On a small
                      graph even the true circuit cannot be complete at 0.1% of the edges, so
                      read cpr against it. It is a reference, not a bound: below the circuit's
                      size f depends on the order of the circuit's own parts, and a method may
                      order them better than one-at-a-time necessity does.
    circuit           tpr, fpr (one ROC point), faithfulness, completeness, minimality
    feature dirs      mmcs and matched_cosine against the truth's features at that hook
    featuriser        iia of the subspace for its variable, and iia_truth: the same
                      intervention on the whole output of the truth's declared components
    feature graph     on GRAPH_PROMPTS prompts, each prompt's graph against the truth's feature
                      circuit (``feature_graphs``): feature_recovery, graph_node_auroc,
                      graph_edge_auroc, circuit_kept, replacement_score, completeness_score
Every figure is aggregated over seeds as mean and standard deviation (``Report.summary``).
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from toylab import checkpoint as ckpt
from toylab import components as comp
from toylab.components import Edge
from toylab.devices import DeviceLike
from toylab.interventions import (
    interchange_accuracy,
    orthonormal,
    patch_subspace,
    position_mask,
)
from toylab.methods.attribution_graph import AttributionGraph
from toylab.parallel import Job, run_jobs
from toylab.sae.metrics import matched_cosine, mmcs
from toylab.truth.certify import variable_accuracy
from toylab.validate import metrics as mt
from toylab.validate.feature_graphs import GRAPH_PROMPTS, score_feature_graphs
from toylab.validate.protocol import (
    KINDS,
    Circuit,
    EdgeScores,
    FeatureDirections,
    FeatureGraph,
    Featuriser,
    MethodOutputError,
    Problem,
    candidate_edges,
    candidate_nodes,
    normalise,
)
from toylab.validate.suite import Subject, SubjectSource, load_source, source_of, subjects

N_PAIRS = 128  # counterfactual pairs each figure is measured on
# Data seed of the scoring pairs. Even, so no method can draw them: a Problem's samplers
# draw only odd seeds (protocol.method_stream).
SCORING_SEED = 7_000_002
HEADLINE = ("node_auroc", "edge_auroc[head]", "edge_auroc[qkv]", "cpr", "cpr_truth", "cmd", "faithfulness",
            "completeness", "minimality", "iia", "mmcs", "feature_recovery", "graph_edge_auroc", "circuit_kept")


@dataclass
class Entry:
    """One method on one model and seed."""

    model: str
    seed: int
    kind: str = ""  # what the method answered: "node scores", "edge scores", ...
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)  # roc_node, roc_edge, faithfulness (for plots)
    circuit: list = field(default_factory=list)  # the method's circuit (nodes or edges), for drawing
    seconds: float = math.nan  # the method's own time
    error: str | None = None
    peeked: bool = False  # read the answer key (only the ceiling baseline should)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "seed": self.seed, "kind": self.kind, "metrics": self.metrics,
                "seconds": self.seconds, "error": self.error, "peeked": self.peeked,
                "circuit": [c if isinstance(c, str) else c.to_list() for c in self.circuit],
                "faithfulness_curve": _curve_dict(self.curves.get("faithfulness"))}


@dataclass
class Report:
    method: str
    entries: list[Entry]
    n_pairs: int = N_PAIRS  # scoring pairs per figure

    def summary(self) -> dict[str, dict[str, tuple[float, float, int]]]:
        """{model: {figure: (mean, std, n_seeds)}} over the seeds that ran without error."""
        out: dict[str, dict[str, tuple[float, float, int]]] = {}
        for model in dict.fromkeys(e.model for e in self.entries):
            ok = [e for e in self.entries if e.model == model and e.error is None]
            names = dict.fromkeys(k for e in ok for k in e.metrics)
            stats = {name: _mean_std([e.metrics.get(name, math.nan) for e in ok]) for name in names}
            stats["seconds"] = _mean_std([e.seconds for e in ok])
            out[model] = stats
        return out

    @property
    def errors(self) -> list[Entry]:
        return [e for e in self.entries if e.error is not None]

    def table(self, figures: Sequence[str] = HEADLINE) -> str:
        """A markdown table: a row per model, mean ± std over seeds of each figure it has."""
        summary = self.summary()
        shown = [f for f in figures if any(f in s for s in summary.values())]
        lines = ["| " + " | ".join(["model", "seeds", *shown, "time s"]) + " |", "|---" * (len(shown) + 3) + "|"]
        for model, stats in summary.items():
            n = sum(1 for e in self.entries if e.model == model)
            cells = [fmt_stat(stats[f]) if f in stats else "" for f in shown]
            lines.append("| " + " | ".join([model, str(n), *cells, fmt_stat(stats["seconds"], 2)]) + " |")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        lines = [f"# {self.method}: scored against every known circuit", "",
                 f"Each figure is the mean ± standard deviation over the model's seeds, measured on "
                 f"{self.n_pairs} counterfactual pairs the method never saw. Definitions: "
                 "`toylab.validate.metrics` and `toylab.validate.harness`.", "", self.table(), ""]
        peeked = sorted({e.model for e in self.entries if e.peeked})
        if peeked:
            lines += [f"**Read the answer key** on {', '.join(peeked)}: these figures are a ceiling, "
                      "not a result.", ""]
        if self.errors:
            lines += ["## Errors", ""] + [f"- {e.model} (seed {e.seed}): {e.error}" for e in self.errors] + [""]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "n_pairs": self.n_pairs, "scoring_seed": SCORING_SEED,
                "entries": [e.to_dict() for e in self.entries],
                "summary": {m: {k: {"mean": v[0], "std": v[1], "n": v[2]} for k, v in s.items()}
                            for m, s in self.summary().items()}}

    def write(self, folder: str | Path) -> dict[str, Path]:
        """report.md, report.json and roc.png (plus faithfulness.png) in ``folder``."""
        from toylab import viz  # matplotlib only when figures are wanted

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": folder / "report.md", "json": folder / "report.json",
                 "roc": folder / "roc.png", "faithfulness": folder / "faithfulness.png"}
        ckpt.atomic_write_bytes(paths["markdown"], self.to_markdown().encode())
        ckpt.atomic_write_json(paths["json"], _json_safe(self.to_json()))
        for key, draw in (("roc", viz.roc_curves), ("faithfulness", viz.faithfulness_curves)):
            fig = draw({self.method: self})
            png = io.BytesIO()  # written whole or not at all, like the report itself
            fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
            ckpt.atomic_write_bytes(paths[key], png.getvalue())
        return paths


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan, 0
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0, len(values)


def fmt_stat(stat: tuple[float, float, int], digits: int = 3) -> str:
    mean, std, n = stat
    if n == 0:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")


def _curve_dict(curve) -> dict | None:
    if curve is None:
        return None
    return {"level": curve.level, "sizes": list(curve.sizes), "counts": list(curve.counts), "f": list(curve.f),
            "cpr": curve.cpr, "cmd": curve.cmd}


def _json_safe(value):
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ---- running a method -------------------------------------------------------------------
def score(method: Callable[[Problem], Any], names: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
          label: str | None = None, n_pairs: int = N_PAIRS, suite: Sequence[Subject] | None = None,
          data_seed: int = 0, device: DeviceLike = "cpu", ray: str | None = None, progress: bool = False) -> Report:
    """Run ``method`` on every model with a truth (or those ``names``: zoo names or folders) and score it.

    With ``ray`` (``"local"`` or a cluster's address) each model is a Ray task
    (``toylab.parallel``); the entries are the serial run's, in the same order, and a model
    whose task is lost gets an error entry while the others are scored.

    The models are loaded on ``device``; a ``suite`` given ready-made stays where its models are.

    ``data_seed`` seeds the samplers the method gets (``problem.pair``); the scoring pairs
    are drawn with ``SCORING_SEED`` whatever it is, so a method tuned on its pairs is still
    scored on pairs it never saw.
    """
    label = label or getattr(method, "__name__", repr(method))
    subjects_ = list(suite) if suite is not None else subjects(list(names) if names else None,
                                                              list(seeds) if seeds else None, device)
    if ray is None:
        return Report(label, [run_one(method, s, n_pairs, data_seed) for s in subjects_], n_pairs)
    jobs = [Job(s.label, _score_source, (method, source_of(s), n_pairs, data_seed, str(device))) for s in subjects_]
    outcome = run_jobs(jobs, ray=ray, progress=progress, label=f"scoring {label}")
    return Report(label, [outcome.results.get(s.label) or lost_entry(s, outcome.failures[s.label])
                          for s in subjects_], n_pairs)


def _score_source(method: Callable[[Problem], Any], source: SubjectSource, n_pairs: int, data_seed: int,
                  device: str) -> Entry:
    """``run_one`` where the subject is loaded: a job of ``score(..., ray=...)``."""
    return run_one(method, load_source(source, device), n_pairs, data_seed)


def lost_entry(subject: Subject, failure: str) -> Entry:
    """The entry of a subject whose job was lost (its worker died, or loading it failed)."""
    return Entry(subject.name, subject.seed, error=f"not scored: its job failed ({failure})")


def run_one(method: Callable[[Problem], Any], subject: Subject, n_pairs: int = N_PAIRS, data_seed: int = 0) -> Entry:
    entry = Entry(subject.name, subject.seed)
    problem = Problem(subject.name, subject.seed, subject.model, subject.task, data_seed, _answer_key=subject.truth)
    before = {k: v.detach().clone() for k, v in subject.model.state_dict().items()}
    training = subject.model.training
    started = time.perf_counter()
    try:
        with _watching_truth() as touched:
            raw = method(problem)
        entry.seconds = time.perf_counter() - started
        entry.peeked = problem.peeked or touched[0]
        _check_untouched(subject.model, before, training)
        result = normalise(raw, problem)
    except Exception as err:  # a method's failure is reported, never fatal to the suite
        entry.seconds = time.perf_counter() - started
        entry.error = f"{type(err).__name__}: {err}" if not isinstance(err, MethodOutputError) else str(err)
        _restore(subject.model, before, training)
        return entry
    entry.kind = KINDS[type(result)]
    try:
        evaluate(result, subject, entry, n_pairs)
    except MethodOutputError as err:
        entry.error = str(err)
    except ValueError as err:  # the answer is valid but this model cannot score it (e.g. no effect)
        entry.error = f"cannot score on this model: {err}"
    return entry


@contextmanager
def _watching_truth():
    """Within the block, loading any truth (``Truth.from_dict``: truth.json, ``zoo.load``)
    or asking a recipe for one (``Recipe.truth_for``) is recorded: yields a one-item list
    that turns True. The harness's own truths are loaded before the method runs."""
    from toylab.truth.truth import Truth
    from toylab.zoo.recipes import Recipe

    touched = [False]
    from_dict, truth_for = Truth.__dict__["from_dict"], Recipe.truth_for

    def watched_from_dict(cls, data):
        touched[0] = True
        return from_dict.__func__(cls, data)

    def watched_truth_for(self, *args, **kwargs):
        touched[0] = True
        return truth_for(self, *args, **kwargs)

    Truth.from_dict = classmethod(watched_from_dict)
    Recipe.truth_for = watched_truth_for
    try:
        yield touched
    finally:
        Truth.from_dict = from_dict
        Recipe.truth_for = truth_for


def _check_untouched(model, before: Mapping[str, Tensor], training: bool) -> None:
    if model.training != training:
        raise MethodOutputError("the method switched the model to train/eval mode; leave it as it was")
    if model.has_hooks():
        raise MethodOutputError("the method left hooks attached to the model; use `with model.hooks(...)` "
                                "so they are removed on exit")
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    if changed:
        raise MethodOutputError(f"the method changed the model's weights ({changed[:3]}); methods must not "
                                "mutate the model (work on a copy: copy.deepcopy(problem.model))")


def _restore(model, before: Mapping[str, Tensor], training: bool) -> None:
    """Undo what a failed method left behind, so the next method sees the model as shipped."""
    for point in model.hook_points.values():
        point.fns.clear()
    model.load_state_dict(before)
    model.train(training)


def evaluate(result, subject: Subject, entry: Entry, n_pairs: int = N_PAIRS) -> None:
    """Fill ``entry.metrics`` (and curves) for a normalised result on ``subject``."""
    truth, cfg = subject.truth, subject.model.cfg
    if isinstance(result, FeatureGraph):
        entry.metrics.update(_feature_graph(result, subject, entry))
        return
    if isinstance(result, (FeatureDirections, Featuriser)):
        entry.metrics.update(_directions(result, subject) if isinstance(result, FeatureDirections)
                             else _featuriser(result, subject, n_pairs))
        return
    faith = _faithfulness(subject, n_pairs)
    nodes = candidate_nodes(cfg)
    true_nodes = [n for n in truth.nodes_at("head") if n in nodes]
    m = entry.metrics

    if isinstance(result, Circuit):
        if result.nodes:
            found, universe, positives, optional = set(result.nodes), nodes, true_nodes, set()
            m["faithfulness"] = faith.of_nodes(found)
        else:
            g = result.granularity
            found, universe = set(result.edges), candidate_edges(cfg, g)
            positives, optional = truth.required_edges(g), set(truth.optional_edges(g))
            m["faithfulness"] = faith.of_edges(found)
        # Optional edges count neither for nor against the circuit that holds them.
        found_decided = found - optional
        hit = len(found_decided & set(positives))
        m["tpr"] = hit / len(positives)
        negatives = len(universe) - len(optional) - len(positives)
        m["fpr"] = (len(found_decided) - hit) / negatives if negatives else math.nan
        m["completeness"], m["minimality"] = mt.circuit_overlap(found_decided, positives)
        entry.circuit = sorted(found)
        return

    if isinstance(result, EdgeScores):
        g = result.granularity
        for level in (("qkv", "head") if g == "qkv" else ("head",)):
            scores = result.scores if level == g else _promote(result.scores)
            universe, positives = _decided(candidate_edges(cfg, level), truth, level), truth.required_edges(level)
            _ranking_metrics(m, f"edge_%s[{level}]", scores, positives, universe)
            entry.curves[f"roc_edge[{level}]"] = mt.roc_curve(scores, positives, universe)
        universe = candidate_edges(cfg, g)
        ranking = mt.top(result.scores, universe, len(universe))
        entry.curves["faithfulness"] = faith.curve(ranking, "edge")
        found = ranking[:len(truth.edges_at(g))]
        m["faithfulness"] = faith.of_edges(found)
        node_scores = _sender_scores(result.scores)
    else:
        node_scores = result.scores
        ranking = mt.top(node_scores, nodes, len(nodes))
        entry.curves["faithfulness"] = faith.curve(ranking, "node")
        found = ranking[:len(true_nodes)]
        # Where the truth holds every candidate node, any node method's top |T| is all of them.
        m["faithfulness"] = faith.of_nodes(found) if len(found) < len(nodes) else math.nan
    _ranking_metrics(m, "node_%s", node_scores, true_nodes, nodes)
    entry.curves["roc_node"] = mt.roc_curve(node_scores, true_nodes, nodes)
    curve = entry.curves["faithfulness"]
    m["cpr"], m["cmd"] = curve.cpr, curve.cmd
    # On a small graph even the true circuit cannot reach f = 1 at 0.1% of the edges: the
    # reference is the curve of the truth ranked first, measured the same way.
    m["cpr_truth"] = _truth_cpr(subject, faith, curve.level,
                                result.granularity if isinstance(result, EdgeScores) else "head")
    entry.circuit = list(found)


def _decided(universe: Sequence[Edge], truth, granularity: str) -> list[Edge]:
    """The candidate edges less the truth's optional ones: the edges a method is scored on."""
    optional = set(truth.optional_edges(granularity))
    return [e for e in universe if e not in optional]


def _faithfulness(subject: Subject, n_pairs: int) -> mt.Faithfulness:
    """The model's scoring pairs and its full and empty runs, measured once for every method."""
    key = ("faithfulness", n_pairs)
    if key not in subject.cache:
        subject.cache[key] = mt.Faithfulness(subject.model, subject.task.counterfactual(n_pairs, SCORING_SEED))
    return subject.cache[key]


def _truth_cpr(subject: Subject, faith: mt.Faithfulness, level: str, granularity: str) -> float:
    key = ("cpr_truth", level, granularity, len(faith.pair))
    cache = subject.cache
    if key not in cache:
        cfg = subject.model.cfg
        if level == "edge":
            universe, positives = candidate_edges(cfg, granularity), subject.truth.edges_at(granularity)
        else:
            universe = candidate_nodes(cfg)
            positives = [n for n in subject.truth.nodes_at("head") if n in universe]
        # The truth's parts, most needed first: what each one's removal from the truth costs.
        without = faith.of_edges if level == "edge" else faith.of_nodes
        cost = {p: -without([q for q in positives if q != p]) for p in positives}
        ranking = sorted(positives, key=lambda p: -cost[p]) + [u for u in universe if u not in set(positives)]
        cache[key] = faith.curve(ranking, level).cpr
    return cache[key]


def _ranking_metrics(m: dict, pattern: str, scores, positives, universe) -> None:
    m[pattern % "auroc"] = mt.auroc(scores, positives, universe)
    m[pattern % "ap"] = mt.average_precision(scores, positives, universe)
    m[pattern % "precision"], m[pattern % "recall"] = mt.precision_recall_at_k(scores, positives, universe,
                                                                               len(positives))


def _promote(scores: Mapping) -> dict:
    """The promotion rule on scores: an edge into a head scores the max over its q, k and v."""
    out: dict = {}
    for edge, value in scores.items():
        head = comp.promote_edge(edge)
        out[head] = max(out.get(head, -math.inf), value)
    return out


def _sender_scores(scores: Mapping) -> dict[str, float]:
    """Node scores from edge scores: each sender's best outgoing edge."""
    out: dict[str, float] = {}
    for edge, value in scores.items():
        out[edge.sender] = max(out.get(edge.sender, -math.inf), value)
    return out


# ---- feature graphs, featurisers and feature directions -------------------------------------
def _feature_graph(result: FeatureGraph, subject: Subject, entry: Entry) -> dict[str, float]:
    """The method's graphs of GRAPH_PROMPTS scoring prompts against the truth's feature circuits.
    Building them is the method's work: its time counts in ``entry.seconds``, its failures are
    its own, and the model must come out of it as it went in."""
    if not subject.truth.features or not subject.truth.feature_edges:
        raise ValueError(f"{subject.label} declares no feature-level truth (features and feature edges); "
                         "score a feature graph on a model that does, e.g. conjunctions")
    model = subject.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    training = model.training

    def build(tokens: Tensor) -> AttributionGraph:
        started = time.perf_counter()
        try:
            graph = result.build(tokens)
        except Exception as err:
            _restore(model, before, training)
            raise MethodOutputError(f"FeatureGraph.build raised on a scoring prompt: {type(err).__name__}: {err}"
                                    ) from None
        finally:
            entry.seconds += time.perf_counter() - started
        if not isinstance(graph, AttributionGraph):
            raise MethodOutputError(f"FeatureGraph.build returns an AttributionGraph (toylab.methods), got "
                                    f"{type(graph).__name__}")
        _check_untouched(model, before, training)
        return graph

    try:
        return score_feature_graphs(subject.task, subject.truth, build, n_prompts=GRAPH_PROMPTS, seed=SCORING_SEED,
                                    node_threshold=result.node_threshold, edge_threshold=result.edge_threshold).row()
    except MethodOutputError:
        _restore(model, before, training)
        raise


# ---- featurisers and feature directions ---------------------------------------------------
def _featuriser(result: Featuriser, subject: Subject, n_pairs: int) -> dict[str, float]:
    declared = {v.name: v for v in subject.truth.variables}
    if subject.algorithm is None or result.variable not in declared:
        raise MethodOutputError(f"{subject.label} declares no causal variable {result.variable!r} "
                                f"(declared: {sorted(declared)}); a featuriser names one of them")
    model = subject.model
    basis = orthonormal(result.basis.T.to(model.device))  # [d, k]

    @contextmanager
    def swapped(source_tokens: Tensor):
        with torch.no_grad():
            _, cache = model.run_with_cache(source_tokens, names=[result.hook])
        src = cache[result.hook]  # [batch, pos, d]
        where = position_mask(result.positions, src.shape[1]).to(model.device).view(1, -1, 1)

        def swap(x: Tensor, hook) -> Tensor:  # x: [batch, pos, d]
            return torch.where(where, patch_subspace(x, src, basis), x)

        with model.hooks([(result.hook, swap)]):
            yield

    iia = interchange_accuracy(model, subject.algorithm, result.variable, swapped, n_pairs, SCORING_SEED)[0]
    reference = variable_accuracy(model, subject.algorithm, declared[result.variable], n_pairs, SCORING_SEED).value
    return {"iia": iia, "iia_truth": reference, "subspace_dims": float(basis.shape[1])}


def _directions(result: FeatureDirections, subject: Subject) -> dict[str, float]:
    true = [f for f in subject.truth.features if f.hook == result.hook]
    if not true:
        hooks = sorted({f.hook for f in subject.truth.features})
        raise MethodOutputError(f"{subject.label} declares no feature directions at {result.hook!r}"
                                + (f"; it declares some at {hooks}" if hooks else "; it declares none"))
    features = torch.tensor([f.vector for f in true], dtype=torch.float32, device="cpu")  # [feature, d]
    return {"mmcs": mmcs(features, result.directions, signed=False),
            "matched_cosine": matched_cosine(features, result.directions, signed=False)}


# ---- loading a method by name -------------------------------------------------------------
def load_method(spec: str) -> Callable[[Problem], Any]:
    """``"path/to/file.py:function"`` or ``"package.module:function"`` -> the callable.

    Loading a method file runs it, as ``python FILE.py`` would: its top-level code runs, not
    only its functions. So the file is first parsed, without running it, to check that it
    defines ``function``; and a lesson's file, which would run the lesson's every cell, is
    refused: put the method in a file of its own.
    """
    import ast

    def top_level_names(tree: ast.Module) -> tuple[set[str], list[str]] | None:
        """The names a module binds at its top level (blocks of if/try/with/for included, function
        and class bodies not) and its public functions; None where that cannot be read off."""
        names: set[str] = set()
        functions: list[str] = []

        def bind(node: ast.AST) -> None:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)  # its body is another scope
                if not isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    functions.append(node.name)
                return
            if isinstance(node, ast.Lambda):
                return
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[0])
            elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
                names.add(node.name)
            for child in ast.iter_child_nodes(node):
                bind(child)

        if any(isinstance(n, ast.alias) and n.name == "*" for n in ast.walk(tree)) or any(
                isinstance(n, ast.Name) and n.id in ("globals", "exec", "setattr") for n in ast.walk(tree)):
            return None  # a star import or a dynamic definition: only running the file tells
        bind(tree)
        return names, functions

    if ":" not in spec:
        raise ValueError(f"method {spec!r}: write FILE.py:function or module:function (e.g. my_method.py:find)")
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise FileNotFoundError(f"method file {path} not found")
        if (path.parent / "lesson.py").is_file() and (path.parent / "checks.py").is_file():
            raise ValueError(f"{path} belongs to a lesson: loading a method file runs it, and a lesson's would run "
                             f"all its cells. Copy {attr} into a file of its own (e.g. my_method.py) and give "
                             f"that: toylab validate my_method.py:{attr}")
        read = top_level_names(ast.parse(path.read_bytes(), filename=str(path)))  # a SyntaxError names the line
        if read is not None and attr not in read[0]:
            raise AttributeError(f"{path} has no function {attr!r}; its functions: {read[1]} (read without "
                                 "running the file: loading a method file runs it)")
        module_name = f"toylab_user_method_{abs(hash(path.resolve()))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    if not hasattr(module, attr):
        public = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
        raise AttributeError(f"{target} has no function {attr!r}; its functions: {public}")
    method = getattr(module, attr)
    if not callable(method):
        raise TypeError(f"{spec} is not callable")
    return method
