"""toylab: a laboratory for mechanistic interpretability on toy models with known circuits.

    import toylab
    zm = toylab.zoo.load("induction-2l")        # model, task and card
    logits, cache = zm.model.run_with_cache(zm.task.sample(8, seed=0).tokens)

The parts stand in layers, each importing only from those below it (README, "Layout"):

    hooks, components, models, tasks, interventions     the ground floor
    devices, parallel                                     which torch device; jobs serially or on Ray
    checkpoint, train, snapshots                          training
    methods, sae                                          methods: (model, data, options) -> result
    truth                                                 ground truth: data, certify, SIIT, construct
    zoo                                                   recipes and shipped checkpoints
    validate, viz, interop, challenges                    scoring methods, plots, other libraries, blind challenges
    lessons, cli                                          the runner and the command line

``import toylab`` loads the models and hooks only; every other part is imported the
first time it is used (``toylab.zoo``, ``toylab.methods``, ...).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from toylab.hooks import ActivationCache, HookPoint, UnknownNameError, act_name  # noqa: E402
from toylab.models import Transformer, TransformerConfig  # noqa: E402

_PARTS = ("components", "interventions", "tasks", "devices", "parallel", "checkpoint", "train", "snapshots", "methods", "sae", "truth",
          "zoo", "validate", "viz", "interop", "challenges", "lessons")


def __getattr__(name: str) -> Any:
    if name in _PARTS:
        return importlib.import_module(f"toylab.{name}")
    raise AttributeError(f"module 'toylab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PARTS])


__all__ = [
    "ActivationCache",
    "HookPoint",
    "Transformer",
    "TransformerConfig",
    "UnknownNameError",
    "act_name",
    "methods",
    "tasks",
    "truth",
    "validate",
    "zoo",
]
