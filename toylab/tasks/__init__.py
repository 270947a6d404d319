"""Algorithmic tasks: encodings, seeded samplers, counterfactual pairs and metrics."""

from __future__ import annotations

from typing import Any

from toylab.tasks.base import (
    IGNORE,
    Batch,
    CounterfactualPair,
    Task,
    accuracy,
    logit_diff,
    loss,
    normalised,
)
from toylab.tasks.brackets import Brackets
from toylab.tasks.conjunctions import Conjunctions
from toylab.tasks.factual_recall import FactualRecall
from toylab.tasks.induction import Induction
from toylab.tasks.ioi import IOI
from toylab.tasks.logic import Logic
from toylab.tasks.modular_addition import ModularAddition

TASKS: dict[str, type[Task]] = {cls.kind: cls for cls in (ModularAddition, Induction, Brackets, FactualRecall, Logic, IOI, Conjunctions)}


def task_from_dict(data: dict[str, Any]) -> Task:
    """Rebuild a task from ``task.to_dict()``."""
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in TASKS:
        raise ValueError(f"unknown task kind {kind!r}; known kinds: {sorted(TASKS)}")
    try:
        return TASKS[kind](**data)
    except TypeError as err:
        raise ValueError(f"bad parameters for task {kind!r}: {err}") from None


__all__ = [
    "IGNORE",
    "TASKS",
    "Batch",
    "Brackets",
    "Conjunctions",
    "CounterfactualPair",
    "FactualRecall",
    "IOI",
    "Induction",
    "Logic",
    "ModularAddition",
    "Task",
    "accuracy",
    "logit_diff",
    "loss",
    "normalised",
    "task_from_dict",
]
