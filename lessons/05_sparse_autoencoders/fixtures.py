"""Lesson 5's fixtures, shared by the lesson, its checkers and the lab's "5 Sparse autoencoders" page.

Two sources of activations whose true features are known: a synthetic dictionary, and a toy
model of superposition (lesson 4's model) whose hidden layer holds more features than it has
dimensions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from toylab.lessons import fast
from toylab.models import SuperpositionConfig, ToyModel, train_toy_model
from toylab.sae import SyntheticFeatures


def dictionary(seed: int = 0) -> SyntheticFeatures:
    """The lesson's dictionary: 128 features in 32 dimensions, each on 3% of the time."""
    return SyntheticFeatures(d_in=32, n_features=128, feature_probability=0.03, seed=seed)


def toy_model(n_features: int = 20, n_hidden: int = 10, steps: int | None = None, seed: int = 0) -> ToyModel:
    """A toy model squeezing ``n_features`` sparse features (each on 3% of the time, all of
    importance 1) into ``n_hidden`` dimensions, trained from ``seed``. The lesson's is 20 in 10,
    trained 3000 steps (1500 in fast mode)."""
    model = ToyModel(SuperpositionConfig(n_instances=1, n_features=n_features, n_hidden=n_hidden),
                     feature_probability=0.03, importance=1.0, seed=seed)
    steps = (1500 if fast() else 3000) if steps is None else steps
    train_toy_model(model, steps=steps, batch_size=1024, lr=1e-2, lr_schedule="cosine", seed=seed)
    return model


def activation_sampler(toy: ToyModel) -> Callable[[int, torch.Generator], tuple[Tensor, Tensor]]:
    """A sampler ``(n, generator) -> (hidden activations [n, hidden], true coefficients [n, feature])``
    of the toy model, as ``toylab.sae.train_sae`` takes one."""

    def sample(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            features = toy.generate_batch(n, generator)  # [n, instance=1, feature]
            return toy.hidden(features)[:, 0], features[:, 0]

    return sample


def feature_directions(toy: ToyModel) -> Tensor:
    """The toy model's feature directions in its hidden space: the columns of W, [feature, hidden]."""
    return toy.W[0].detach().T
