"""Steering and editing, graded on the zoo: the tables of ``docs/steering_and_editing.md``.

``steering_report`` compares the direction sources of ``toylab.methods.steering`` on each
model's steering target; ``editing_report`` compares ROME, MEMIT and constrained
fine-tuning on the factual-recall models and asks, on ``factual-recall-split``, whether
causal tracing predicts where an edit works best. Each figure is a mean ± standard
deviation over seeds: the model's shipped seeds where it ships three, else three seeds of
the method's data on its one model. ``toylab report`` writes the page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from toylab import zoo
from toylab.methods.check import seed_spread
from toylab.methods.editing import (
    EDIT_METHODS,
    EditConfig,
    EditScores,
    compare_editing,
    localisation_vs_editing,
    random_edits,
)
from toylab.methods.steering import STEER_SOURCES, steer_and_score, steering_targets
from toylab.tasks.factual_recall import FactualRecallSplitAlgorithm

STEERING_MODELS = ("factual-recall", "brackets-siit", "modadd-113")
EDITING_MODELS = {"factual-recall": ((0,),), "factual-recall-split": ((0,), (1,), (0, 1))}


def _runs(name: str, seeds: Sequence[int]) -> list[tuple[int, int]]:
    """(model seed, method seed) pairs: one per seed, on the shipped seeds where there are enough."""
    shipped = zoo.recipe(name).seeds
    if all(s in shipped for s in seeds):
        return [(s, s) for s in seeds]
    return [(shipped[0], s) for s in seeds]


def steering_report(models: Sequence[str] = STEERING_MODELS, sources: Sequence[str] = STEER_SOURCES,
                    seeds: Sequence[int] = (0, 1, 2), n_fit: int = 2048, n: int = 512,
                    progress: Callable[[str], None] | None = None) -> str:
    """A markdown section: per model and direction source, held-out success, preservation, KL."""
    lines = ["## Steering", "",
             ("Held-out figures at the strength chosen on tuning prompts (success x preservation), mean ± std over "
              f"seeds {list(seeds)}. Success: prompts whose answer should change that give exactly the algorithm's "
              "answer. Preservation and KL (to the unsteered output): on prompts whose answer should not change; "
              "n/a where every answer changes."), ""]
    for name in models:
        runs = _runs(name, seeds)
        start = time.perf_counter()
        rows: dict[str, list] = {s: [] for s in sources}
        target_name = ""
        for model_seed, seed in runs:
            z = zoo.load(name, seed=model_seed)
            target = next(iter(steering_targets(z.task, z.truth).values()))
            target_name = target.name
            for source in sources:
                if progress:
                    progress(f"steering {name} seed {model_seed}: {source}")
                rows[source].append(steer_and_score(z.model, target, source, n_fit, n, seed).held_out)
        spread = ("model seeds" if runs[0][0] == runs[0][1] and len({m for m, _ in runs}) > 1
                  else f"method seeds on model seed {runs[0][0]}")
        lines += [f"### `{name}`: {target_name} ({spread}; {time.perf_counter() - start:.0f} s)", "",
                  "| source | success | preservation | KL | alpha |", "|---|---|---|---|---|"]
        for source, scores in rows.items():
            lines.append(f"| {source} | {seed_spread([s.success for s in scores])} | "
                         f"{seed_spread([s.preservation for s in scores])} | {seed_spread([s.kl for s in scores])} | "
                         f"{seed_spread([s.alpha for s in scores], 2)} |")
        lines.append("")
    return "\n".join(lines)


def editing_report(models: dict[str, tuple[tuple[int, ...], ...]] | None = None, methods: Sequence[str] = EDIT_METHODS,
                   seeds: Sequence[int] = (0, 1, 2), n_edits: int = 16, config: EditConfig = EditConfig(),
                   progress: Callable[[str], None] | None = None) -> str:
    """A markdown section: CounterFact's figures per model, method and layers; then, on the
    split model, localisation against editing."""
    models = EDITING_MODELS if models is None else models
    lines = ["## Editing", "",
             (f"{n_edits} random edits per seed, each made on its own to the original model (CounterFact's protocol), "
              f"then all {n_edits} held by one model at once; mean ± std over seeds {list(seeds)}. Efficacy: the "
              "edited prompt (form 0) answers the new attribute; generalisation: the same fact in the other prompt "
              "forms (n/a with one form); specificity: every other subject's facts unchanged; same subject: the "
              "edited subject's other relations unchanged."), ""]
    for name, layer_sets in models.items():
        runs = _runs(name, seeds)
        lines += [f"### `{name}`", "",
                  "| method | layers | edits | efficacy | generalisation | specificity | same subject |",
                  "|---|---|---|---|---|---|---|"]
        for layers in layer_sets:
            for method in methods:
                if method != "memit" and len(layers) > 1:  # ROME and fine-tuning edit one layer
                    continue
                for together in (False, True):
                    scores: list[EditScores] = []
                    for model_seed, seed in runs:
                        if progress:
                            progress(f"editing {name} seed {model_seed}: {method} at {layers}")
                        z = zoo.load(name, seed=model_seed)
                        c = compare_editing(z.model, z.task, (method,), n_edits, (seed,), layers,
                                            one_at_a_time=not together, config=config)
                        scores.append(c.results[method][0])
                    lines.append(f"| {method} | {', '.join(map(str, layers))} | "
                                 f"{'all at once' if together else 'one at a time'} | "
                                 + " | ".join(seed_spread([getattr(s, f) for s in scores])
                                              for f in ("efficacy", "generalisation", "specificity", "same_subject"))
                                 + " |")
        lines.append("")
    if "factual-recall-split" in models:
        lines += _localisation_section(seeds, n_edits, config, progress)
    return "\n".join(lines)


def _localisation_section(seeds: Sequence[int], n_edits: int, config: EditConfig,
                          progress: Callable[[str], None] | None) -> list[str]:
    name = "factual-recall-split"
    figures: dict[str, list] = {k: [] for k in ("finds", "edit_finds", "predicts", "corr")}
    by_cell: dict[tuple[int, int], list] = {(s, e): [] for s in (0, 1) for e in (0, 1)}
    for model_seed, seed in _runs(name, seeds):
        if progress:
            progress(f"localisation vs editing, {name} seed {model_seed}")
        z = zoo.load(name, seed=model_seed)
        algorithm = FactualRecallSplitAlgorithm(z.task)
        edits = random_edits(z.task, n_edits, seed)
        stored = [0 if algorithm.low(torch.tensor(e.subject, device="cpu")) else 1 for e in edits]
        r = localisation_vs_editing(z.model, z.task, edits, (0, 1), stored, seed=seed, config=config)
        figures["finds"].append(r.tracing_finds_storage)
        figures["edit_finds"].append(r.editing_finds_storage)
        figures["predicts"].append(r.tracing_predicts_editing)
        figures["corr"].append(r.correlation())
        for key in by_cell:
            by_cell[key].append(r.mean_edit_score(*key))
    return ["### Localisation against editing on `factual-recall-split`", "",
            ("Per fact: the MLP (0 or 1) whose restored output at the subject brings the answer back most under "
             "causal tracing, the MLP the truth stores it in, and CounterFact's score S (harmonic mean of efficacy, "
             "generalisation, specificity) of a ROME edit at each MLP."), "",
            "| figure | value |", "|---|---|",
            f"| tracing's peak is the storage MLP | {seed_spread(figures['finds'])} |",
            f"| the best edit layer is the storage MLP | {seed_spread(figures['edit_finds'])} |",
            f"| tracing's peak is the best edit layer | {seed_spread(figures['predicts'])} |",
            f"| correlation of tracing score and edit score over (fact, layer) | {seed_spread(figures['corr'])} |",
            *(f"| mean S, facts stored in MLP{s}, edited at MLP{e} | {seed_spread(by_cell[(s, e)])} |"
              for s in (0, 1) for e in (0, 1)),
            ""]
