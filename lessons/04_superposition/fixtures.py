"""Lesson 4's fixtures, shared by the lesson, its checkers and the lab's "4 Superposition" page.

The sweep: toy models of superposition with features of decaying importance, one instance per
feature density, dense to sparse, trained together in one run. The lesson's is 5 features in 2
dimensions over ``DENSITIES``; the lab's page trains the same sweep with its own sizes and
densities.
"""

from __future__ import annotations

import torch

from toylab.lessons import fast
from toylab.models import SuperpositionConfig, ToyModel, train_toy_model
from toylab.models.superposition import TrainHistory

DENSITIES = (1.0, 0.3, 0.1, 0.03, 0.01)  # the lesson's sweep, dense to sparse: one instance each
IMPORTANCE_DECAY = 0.9  # feature i has importance 0.9 ** i


def lesson_steps() -> int:
    """The lesson's training steps (fewer in fast mode, as the tests run)."""
    return 1000 if fast() else 3000


def train(model: ToyModel, steps: int, seed: int) -> TrainHistory:
    """Train a toy model in place with the lessons' recipe: AdamW, batches of 1024, cosine lr from 1e-2."""
    return train_toy_model(model, steps=steps, batch_size=1024, lr=1e-2, lr_schedule="cosine", seed=seed)


def sweep_model(steps: int | None = None, seed: int = 1, densities: tuple[float, ...] = DENSITIES,
                n_features: int = 5, n_hidden: int = 2,
                importance_decay: float = IMPORTANCE_DECAY) -> tuple[ToyModel, TrainHistory]:
    """The sweep trained from ``seed`` (``lesson_steps()`` steps by default), and its training history.

    ``n_features`` features in ``n_hidden`` dimensions, feature i of importance
    ``importance_decay ** i``, one instance per density of ``densities``."""
    cfg = SuperpositionConfig(n_instances=len(densities), n_features=n_features, n_hidden=n_hidden)
    importance = (importance_decay ** torch.arange(float(n_features)))[None, :]  # [1, feature]: every instance
    model = ToyModel(cfg, feature_probability=torch.tensor(densities)[:, None], importance=importance, seed=seed)
    history = train(model, steps=lesson_steps() if steps is None else steps, seed=seed)
    return model, history
