"""Activations for SAEs: a synthetic data set with a known dictionary, and a toylab model's hooks.

Axis names used in shape comments:
    batch        independent samples (activation vectors)
    d_in         width of an activation vector
    feature      a ground-truth feature: a unit-norm direction in d_in with a sparse,
                 non-negative coefficient per sample
    pos          token position (model activations only)

A synthetic activation is ``x = sum_f c_f * features[f] (+ noise)``: each feature is present
with probability ``feature_probability``, with a magnitude drawn uniform in
``magnitude_range`` or exponential with mean ``magnitude_mean``. Features may come in
correlated groups of ``group_size``: with probability ``group_correlation`` a whole group
shares one presence draw (the marginal probability of each feature is unchanged).

Usage::

    data = SyntheticFeatures(d_in=32, n_features=128, feature_probability=0.03, seed=0)
    x, c = data.sample(1024, torch.Generator().manual_seed(1))   # [1024, 32], [1024, 128]
    data.features                                                # [128, 32], unit rows
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

MAGNITUDES = ("uniform", "exponential")
_DICTIONARY_SALT = 0x5EED_D1C7


@dataclass(frozen=True)
class SyntheticFeatures:
    d_in: int  # activation width
    n_features: int  # number of true features (may exceed d_in: superposition)
    feature_probability: float = 0.03  # chance that a feature is present in a sample
    magnitude: str = "uniform"  # coefficient law when present, one of MAGNITUDES
    magnitude_range: tuple[float, float] = (0.5, 1.5)  # uniform: [low, high]
    magnitude_mean: float = 1.0  # exponential: mean coefficient
    group_size: int = 1  # consecutive features per correlated group (1: independent)
    group_correlation: float = 0.0  # chance that a group shares one presence draw
    noise_std: float = 0.0  # std of isotropic Gaussian noise added to x
    seed: int = 0  # seeds the dictionary (sampling uses the caller's generator)
    features: Tensor = field(init=False, repr=False, compare=False)  # [feature, d_in] unit rows

    def __post_init__(self) -> None:
        for name in ("d_in", "n_features", "group_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SyntheticFeatures.{name} must be a positive int, got {value!r}")
        if not 0 < self.feature_probability <= 1:
            raise ValueError(f"SyntheticFeatures.feature_probability must be in (0, 1], got {self.feature_probability!r}")
        if self.magnitude not in MAGNITUDES:
            raise ValueError(f"SyntheticFeatures.magnitude must be one of {MAGNITUDES}, got {self.magnitude!r}")
        low, high = self.magnitude_range
        if not 0 <= low <= high:
            raise ValueError(f"SyntheticFeatures.magnitude_range must be (low, high) with 0 <= low <= high, got {self.magnitude_range!r}")
        if not self.magnitude_mean > 0:
            raise ValueError(f"SyntheticFeatures.magnitude_mean must be > 0, got {self.magnitude_mean!r}")
        if not 0 <= self.group_correlation <= 1:
            raise ValueError(f"SyntheticFeatures.group_correlation must be in [0, 1], got {self.group_correlation!r}")
        if self.n_features % self.group_size:
            raise ValueError(
                f"SyntheticFeatures.n_features={self.n_features} must be a multiple of group_size={self.group_size}"
            )
        if not self.noise_std >= 0:
            raise ValueError(f"SyntheticFeatures.noise_std must be >= 0, got {self.noise_std!r}")
        # Salted: an SAE initialises its decoder with randn from its own seed, and an SAE and a
        # dictionary of the same shape and seed would otherwise start out identical.
        generator = torch.Generator().manual_seed(_DICTIONARY_SALT + self.seed)
        features = torch.randn(self.n_features, self.d_in, generator=generator, device="cpu")  # [feature, d_in]
        object.__setattr__(self, "features", features / features.norm(dim=-1, keepdim=True))

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(activations [n, d_in], coefficients [n, feature]) drawn with ``generator``, on its device."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        with torch.device(generator.device):  # each draw on the generator's device, as torch requires
            return self._sample(n, generator)

    def _sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        p = self.feature_probability
        n_groups = self.n_features // self.group_size
        independent = torch.rand(n, self.n_features, generator=generator) < p  # [n, feature]
        shared = torch.rand(n, n_groups, generator=generator) < p  # [n, group]
        use_shared = torch.rand(n, n_groups, generator=generator) < self.group_correlation  # [n, group]
        shared = shared.repeat_interleave(self.group_size, dim=1)  # [n, feature]
        use_shared = use_shared.repeat_interleave(self.group_size, dim=1)  # [n, feature]
        present = torch.where(use_shared, shared, independent)  # [n, feature]
        if self.magnitude == "uniform":
            low, high = self.magnitude_range
            mags = low + (high - low) * torch.rand(n, self.n_features, generator=generator)
        else:
            mags = torch.empty(n, self.n_features).exponential_(1.0 / self.magnitude_mean, generator=generator)
        coefficients = present.float() * mags  # [n, feature]
        x = coefficients @ self.features.to(generator.device)  # [n, d_in]
        if self.noise_std > 0:
            x = x + self.noise_std * torch.randn(n, self.d_in, generator=generator)
        return x, coefficients


@torch.no_grad()
def model_activations(
    model: torch.nn.Module,
    tokens: Tensor,
    hook_name: str,
    positions: int | Sequence[int] | slice | None = None,
) -> Tensor:
    """Activations of a toylab model at ``hook_name``, flattened to [batch * n_pos, d].

    ``tokens`` [batch, pos]; ``positions`` picks positions (an int, a list, a slice; None: all).
    Trailing axes after pos (e.g. head, d_head of ``hook_z``) are flattened into d.
    """
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
    _, cache = model.run_with_cache(tokens, names=[hook_name])
    acts = cache[hook_name]  # [batch, pos, ...]
    if acts.ndim < 3:
        raise ValueError(f"hook {hook_name!r} gives shape {tuple(acts.shape)}; expected [batch, pos, ...]")
    if positions is not None:
        if isinstance(positions, int):
            positions = [positions]
        acts = acts[:, positions] if isinstance(positions, slice) else acts[:, list(positions)]
    return acts.reshape(acts.shape[0] * acts.shape[1], -1).clone()  # [batch * n_pos, d]


__all__ = ["MAGNITUDES", "SyntheticFeatures", "model_activations"]
