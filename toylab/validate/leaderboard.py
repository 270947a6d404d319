"""The leaderboard: every built-in baseline (or any methods) scored on every known circuit.

    board = leaderboard()                     # toylab.validate.baselines.BASELINES, all models
    print(board.to_markdown())                # what `toylab leaderboard` writes to docs/

Rows are methods, one table per model, each cell the mean ± standard deviation over the
model's seeds; a first table averages each figure over the models (each model weighs
once, whatever its number of seeds).

Where a truth locates a causal variable within its component, the featuriser track
(``toylab.validate.featurisers``) scores which subspace carries it, by held-out IIA.

Where a truth declares features (``Truth.features``, ``Truth.feature_edges``), the feature-graph
track (``toylab.validate.graph_baselines``) scores attribution graphs and their baselines
against the true feature circuit of each prompt (``toylab.validate.feature_graphs``).

On a method trap (``toylab.truth.traps``) the board also says which methods fell in:
a method's *shortfall* on one seed is the largest gap, over ``TRAP_FIGURES``, between the
best method's figure and its own (the best among the methods that do not read the answer
key); it fell in when the mean shortfall over the seeds is at least ``TRAP_MARGIN``. On a
featuriser trap, a featuriser's shortfall is its IIA gap below the best featuriser's.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toylab.devices import DeviceLike
from toylab.parallel import Job, run_jobs
from toylab.truth.truth import Trap
from toylab.validate.feature_graphs import FIGURES as GRAPH_FIGURES
from toylab.validate.feature_graphs import GRAPH_PROMPTS
from toylab.validate.featurisers import FEATURISERS, PEEK, Featuriser, FeaturiserEntry, score_featurisers
from toylab.validate.featurisers import table as featurisers_table
from toylab.validate.harness import N_PAIRS, Entry, Report, fmt_stat, lost_entry, run_one
from toylab.validate.suite import Subject, SubjectSource, load_source, source_of, subjects

TRAP_FIGURES = ("node_auroc", "edge_auroc[head]", "faithfulness")
TRAP_MARGIN = 0.2  # a shortfall this large is a fall, not noise (seed spreads are < 0.03)
COLUMNS = ("node_auroc", "edge_auroc[head]", "edge_auroc[qkv]", "edge_ap[head]", "edge_precision[head]", "cpr",
           "cpr_truth", "cmd", "faithfulness", "completeness", "minimality")


@dataclass
class Leaderboard:
    reports: dict[str, Report]  # method label -> its report
    traps: dict[str, Trap] = field(default_factory=dict)  # model -> the trap it is, for trap models
    features: list[FeaturiserEntry] = field(default_factory=list)  # the featuriser track (located variables)
    graphs: dict[str, Report] = field(default_factory=dict)  # the feature-graph track: method label -> report

    def shortfalls(self) -> dict[str, dict[str, tuple[float, float, int, str]]]:
        """{trap model: {method: (mean shortfall, std over seeds, n seeds, the figure it fell most on)}}."""
        from toylab.validate.baselines import PEEKS

        out: dict[str, dict[str, tuple[float, float, int, str]]] = {}
        for model in self.traps:
            entries = {label: {e.seed: e for e in r.entries if e.model == model and e.error is None}
                       for label, r in self.reports.items()}
            seeds = sorted({seed for by_seed in entries.values() for seed in by_seed})
            best = {(seed, f): max((by_seed[seed].metrics.get(f, math.nan) for label, by_seed in entries.items()
                                    if label not in PEEKS and seed in by_seed
                                    and not math.isnan(by_seed[seed].metrics.get(f, math.nan))), default=math.nan)
                    for seed in seeds for f in TRAP_FIGURES}
            out[model] = {}
            for label, by_seed in entries.items():
                if label in PEEKS or not by_seed:
                    continue
                per_seed, worst = [], {}
                for seed, entry in by_seed.items():
                    gaps = {f: best[seed, f] - entry.metrics[f] for f in TRAP_FIGURES
                            if not math.isnan(entry.metrics.get(f, math.nan)) and not math.isnan(best[seed, f])}
                    if gaps:
                        figure = max(gaps, key=gaps.get)
                        per_seed.append(gaps[figure])
                        worst[figure] = worst.get(figure, 0) + 1
                if per_seed:
                    out[model][label] = (statistics.fmean(per_seed),
                                         statistics.pstdev(per_seed) if len(per_seed) > 1 else 0.0,
                                         len(per_seed), max(worst, key=worst.get))
            out[model].update(self._featuriser_shortfalls(model))
        return out

    def _featuriser_shortfalls(self, model: str) -> dict[str, tuple[float, float, int, str]]:
        """On the featuriser track, a featuriser's shortfall on a seed is its largest gap in IIA,
        over the model's located variables, below the best featuriser's (the truth's excluded)."""
        entries = [e for e in self.features if e.model == model and e.featuriser != PEEK]
        best = {}
        for e in entries:
            best[e.seed, e.variable] = max(best.get((e.seed, e.variable), -math.inf), e.iia)
        gaps: dict[str, dict[int, float]] = {}
        for e in entries:
            per_seed = gaps.setdefault(e.featuriser, {})
            per_seed[e.seed] = max(per_seed.get(e.seed, -math.inf), best[e.seed, e.variable] - e.iia)
        return {label: (statistics.fmean(g.values()), statistics.pstdev(g.values()) if len(g) > 1 else 0.0, len(g),
                        "iia") for label, g in gaps.items()}

    def _trap_section(self) -> list[str]:
        lines = ["## Traps: which methods fell in", "",
                 "Each trap model reproduces a documented failure (`toylab/truth/traps.py`; its truth says which "
                 "methods it expects to fail and what recovers). *Shortfall*: the largest gap, over "
                 f"{', '.join(TRAP_FIGURES)}, between the best method's figure and this method's, mean ± std over "
                 f"the seeds, with the figure it fell most on; **fell in** when the shortfall is at least "
                 f"{TRAP_MARGIN}. *Expected*: the trap's own prediction (falls in / remedy).", ""]
        shortfalls = self.shortfalls()
        for model, trap in self.traps.items():
            lines += [f"### {model}: {trap.kind}", "", trap.mechanism, "",
                      "| method | shortfall | on | fell in | expected |", "|---|---|---|---|---|"]
            for label, (mean, std, n, figure) in shortfalls.get(model, {}).items():
                if label == "random":  # the floor falls into everything
                    continue
                expected = ("falls in" if label in trap.falls_in else "remedy" if label in trap.remedies else "")
                fell = "**yes**" if mean >= TRAP_MARGIN else "no"
                lines.append(f"| {label} | {fmt_stat((mean, std, n))} | {figure} | {fell} | {expected} |")
            lines.append("")
        return lines

    def _graph_section(self) -> list[str]:
        from toylab.validate.graph_baselines import PEEKS as GRAPH_PEEKS

        lines = ["## Feature graphs: attribution graphs against the true feature circuit", "",
                 "Where a truth declares features, each method draws one graph per prompt for "
                 f"{GRAPH_PROMPTS} prompts it never saw, scored against the prompt's true feature circuit "
                 "(`toylab/validate/feature_graphs.py`): `feature_recovery`, the best |cosine| of a graph "
                 "feature's write with each true feature the prompt turns on; `graph_node_auroc`, features "
                 "ranked by influence against matching a true feature (|cosine| >= 0.8); `graph_edge_auroc` and "
                 "`circuit_kept` (the share of the true edges the pruned graph keeps), over edges into or out of "
                 "features; circuit-tracer's `replacement_score` and `completeness_score`. Mean ± std over seeds.",
                 ""]
        models = list(dict.fromkeys(e.model for r in self.graphs.values() for e in r.entries))
        for model in models:
            rows = {(f"{label} (peeks)" if label in GRAPH_PEEKS else label): r.summary().get(model, {})
                    for label, r in self.graphs.items()}
            lines += [f"### {model}", "", _table(rows, GRAPH_FIGURES, "method"), ""]
        return lines

    def overall(self) -> dict[str, dict[str, tuple[float, float, int]]]:
        """{method: {figure: (mean over models, std over models, n models)}}."""
        out = {}
        for label, report in self.reports.items():
            per_model = report.summary()
            figures = dict.fromkeys(f for stats in per_model.values() for f in stats)
            out[label] = {}
            for figure in figures:
                means = [stats[figure][0] for stats in per_model.values()
                         if figure in stats and not math.isnan(stats[figure][0])]
                out[label][figure] = ((statistics.fmean(means), statistics.pstdev(means) if len(means) > 1 else 0.0,
                                       len(means)) if means else (math.nan, math.nan, 0))
        return out

    def to_markdown(self, columns: Sequence[str] = COLUMNS, command: str = "toylab leaderboard") -> str:
        models = list(dict.fromkeys(e.model for r in self.reports.values() for e in r.entries))
        lines = ["# Leaderboard: built-in methods against every known circuit", "",
                 f"Generated by `{command}`; do not edit by hand. Each cell is the mean ± standard deviation "
                 f"over the model's seeds, measured on {N_PAIRS} counterfactual pairs the methods never saw "
                 "(definitions: `toylab/validate/metrics.py`, `toylab/validate/harness.py`). `n/a`: the figure "
                 "is undefined there (e.g. node AUROC when every node is in the circuit) and is never averaged: "
                 "a mean over fewer models than all says over how many, as `(k/N)`. Edges a truth declares "
                 "optional (a circuit without one is as true) count neither for nor against a method. "
                 "`time s` is the method's own time per model and seed on this machine.", "",
                 "## Mean over models", "", _table(self.overall(), columns, "method", of=len(models)), ""]
        if self.traps:
            lines += self._trap_section()
        if self.features:
            lines += ["## Causal variables: which directions carry them (featuriser track)", "",
                      "Where a truth locates a variable within its component (`CausalVariable.basis`), each "
                      "featuriser proposes the subspace of that component's output that carries it, scored by the "
                      "interchange-intervention accuracy of patching that subspace alone on held-out pairs "
                      "(`toylab/validate/featurisers.py`); mean ± std over seeds.", "", featurisers_table(self.features)]
        if self.graphs:
            lines += self._graph_section()
        for model in models:
            rows = {label: r.summary().get(model, {}) for label, r in self.reports.items()}
            seeds = max(sum(1 for e in r.entries if e.model == model) for r in self.reports.values())
            lines += [f"## {model} ({seeds} seed{'s' if seeds > 1 else ''})", "", _table(rows, columns, "method"), ""]
        errors = [(label, e) for reports in (self.reports, self.graphs) for label, r in reports.items()
                  for e in r.errors]
        if errors:
            lines += ["## Errors", ""] + [f"- {label} on {e.model} (seed {e.seed}): {e.error}" for label, e in errors]
        return "\n".join(lines).rstrip() + "\n"


def _table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str], first: str, of: int | None = None) -> str:
    """A markdown table of mean ± std cells; with ``of``, a cell averaged over fewer than ``of``
    models says over how many."""
    shown = [c for c in columns if any(c in stats for stats in rows.values())] + ["seconds"]
    head = [first, *[c if c != "seconds" else "time s" for c in shown]]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]

    def cell(stat: tuple[float, float, int], column: str) -> str:
        text = fmt_stat(stat, 2 if column == "seconds" else 3)
        return text + (f" ({stat[2]}/{of})" if of is not None and 0 < stat[2] < of else "")

    for label, stats in rows.items():
        cells = [cell(stats[c], c) if c in stats else "" for c in shown]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def leaderboard(methods: Mapping[str, Callable] | None = None, names: Sequence[str] | None = None,
                seeds: Sequence[int] | None = None, progress: bool = False,
                featurisers: Mapping[str, Featuriser] | None = None,
                graph_methods: Mapping[str, Callable] | None = None, device: DeviceLike = "cpu",
                ray: str | None = None) -> Leaderboard:
    """Score each method (the built-in baselines by default) on the same suite of models, each
    featuriser (``featurisers.FEATURISERS`` by default; ``{}`` for none) on its models whose
    truth locates a variable within a component, and each feature-graph method
    (``graph_baselines.GRAPH_BASELINES`` by default; ``{}`` for none) on its models whose truth
    declares features. The models are loaded on ``device``.

    Each model (zoo name and seed, or folder) is one job of ``toylab.parallel``: run here one
    after another, or with ``ray`` (``"local"`` or an address) as Ray tasks, with the same
    figures. A model whose job is lost gets an error entry under every method; the others
    are scored. ``progress`` shows one bar over the models.
    """
    if methods is None:
        from toylab.validate.baselines import BASELINES
        methods = BASELINES
    if graph_methods is None:
        from toylab.validate.graph_baselines import GRAPH_BASELINES
        graph_methods = GRAPH_BASELINES
    featurisers = dict(FEATURISERS if featurisers is None else featurisers)
    suite = subjects(list(names) if names else None, list(seeds) if seeds else None, device)
    if ray is None:  # the suite is loaded already: no need to load it again from its sources
        jobs = [Job(s.label, _score_subject, (methods, featurisers, graph_methods, s)) for s in suite]
    else:
        jobs = [Job(s.label, _score_source, (methods, featurisers, graph_methods, source_of(s), str(device)))
                for s in suite]
    outcome = run_jobs(jobs, ray=ray, progress=progress, label="leaderboard")
    reports = {label: Report(label, [], N_PAIRS) for label in methods}
    graphs = {label: Report(label, [], N_PAIRS) for label in graph_methods}
    features: list[FeaturiserEntry] = []
    for subject in suite:
        part = outcome.results.get(subject.label)
        if part is None:  # the job was lost: say so under every method, keep the rest of the board
            failure = outcome.failures[subject.label]
            for label in methods:
                reports[label].entries.append(lost_entry(subject, failure))
            if _has_features(subject):
                for label in graph_methods:
                    graphs[label].entries.append(lost_entry(subject, failure))
            continue
        for label, entry in part.circuits.items():
            reports[label].entries.append(entry)
        features += part.features
        for label, entry in part.graphs.items():
            graphs[label].entries.append(entry)
    traps = {s.name: s.truth.trap for s in suite if s.truth.trap is not None}
    return Leaderboard(reports, traps, features, {k: v for k, v in graphs.items() if v.entries})


@dataclass
class _SubjectScores:
    """Everything the board measures on one model: a job's result."""

    circuits: dict[str, Entry]  # method -> its entry
    features: list[FeaturiserEntry]
    graphs: dict[str, Entry]  # feature-graph method -> its entry


def _has_features(subject: Subject) -> bool:
    return bool(subject.truth.features and subject.truth.feature_edges)


def _score_subject(methods: Mapping[str, Callable], featurisers: Mapping[str, Featuriser],
                   graph_methods: Mapping[str, Callable], subject: Subject) -> _SubjectScores:
    """Every method, featuriser and feature-graph method on one model: they share its cache."""
    circuits = {label: run_one(method, subject) for label, method in methods.items()}
    located = subject.algorithm is not None and any(v.basis for v in subject.truth.variables)
    features = score_featurisers(dict(featurisers), [subject]) if featurisers and located else []
    graphs = ({label: run_one(method, subject) for label, method in graph_methods.items()}
              if _has_features(subject) else {})
    return _SubjectScores(circuits, features, graphs)


def _score_source(methods, featurisers, graph_methods, source: SubjectSource, device: str) -> _SubjectScores:
    return _score_subject(methods, featurisers, graph_methods, load_source(source, device))


__all__ = ["COLUMNS", "TRAP_FIGURES", "TRAP_MARGIN", "Leaderboard", "leaderboard"]
