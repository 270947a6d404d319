"""Checkers for lesson 04, superposition: the loss, feature dimensionality, which features a
model keeps (measured by feeding it each feature alone), and the phase change."""

from __future__ import annotations

from functools import lru_cache

import torch

from toylab import methods
from toylab.lessons.checking import call, expect_close, number
from toylab.lessons.exercise import Wrong, exercise, fast
from toylab.methods.superposition import dimensionality
from toylab.models import SuperpositionConfig, ToyModel

from .fixtures import DENSITIES, sweep_model


@exercise("superposition.loss", "The importance-weighted loss", "implement", "easy", 5,
          hint="importance * (batch - out) ** 2, summed over the feature axis (last), averaged over the "
               "batch axis (first): one number per instance")
def _loss(fn) -> str:
    cfg = SuperpositionConfig(n_instances=3, n_features=6, n_hidden=2)
    model = ToyModel(cfg, feature_probability=0.3, importance=0.8 ** torch.arange(6.0), seed=1)
    batch = model.generate_batch(64, torch.Generator().manual_seed(2))  # [batch, instance, feature]
    with torch.no_grad():
        out = model(batch)
    want = model.loss_per_instance(out, batch)
    expect_close(call(fn, out, batch, model.importance), want, "loss per instance", atol=1e-5,
                 hint="the answer has shape [instance]: sum over features, mean over the batch")
    return "your loss matches ToyModel.loss_per_instance"


@exercise("superposition.dimensionality", "Feature dimensionality", "implement", "medium", 15,
          hint="D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 where W_i = W[:, :, i] and the sum includes "
               "j = i; an all-zero feature (||W_i|| = 0) has D_i = 0, not NaN")
def _dimensionality(fn) -> str:
    g = torch.Generator().manual_seed(3)
    random = torch.randn(4, 3, 7, generator=g)  # [instance, hidden, feature]
    random[1, :, 2] = 0.0  # an ignored feature
    angles = torch.arange(5) * 2 * torch.pi / 5
    pentagon = torch.stack([angles.cos(), angles.sin()])[None]  # [1, hidden=2, feature=5]
    for what, W in (("random W", random), ("a pentagon", pentagon)):
        got = call(fn, W.clone())
        expect_close(got if not hasattr(got, "double") else got.double(), dimensionality(W),
                     f"dimensionality of {what}", atol=1e-4,
                     hint="shape [instance, feature]; normalise W_i (not W_j) inside the sum; guard ||W_i|| = 0")
    return "your D_i matches toylab.methods.superposition.dimensionality (a pentagon gives 2/5 each)"


@lru_cache(maxsize=1)
def _measured_counts() -> tuple[int, ...]:
    """Features each instance of the sweep passes through, by feeding each one alone."""
    model, _ = sweep_model()  # the lesson's sweep, retrained here from the same seed
    gain = methods.reconstruction(model)
    return tuple(int(n) for n in (gain > 0.5).sum(-1))


@exercise("superposition.represented", "How many features does each model keep?", "answer", "easy", 10,
          hint="feed each feature alone (toylab.methods.reconstruction) or classify the weights "
               "(toylab.methods.feature_status) and count, per instance, the features that get through")
def _represented(answer) -> str:
    try:
        counts = [int(number(n, "each count")) for n in answer]
    except TypeError:
        raise Wrong(f"answer with one count per density {list(DENSITIES)}, got {answer!r}") from None
    want = _measured_counts()
    if len(counts) != len(want):
        raise Wrong(f"give one count per density ({len(want)} of them), got {len(counts)}")
    if counts != list(want):
        i = next(i for i, (a, b) in enumerate(zip(counts, want)) if a != b)
        raise Wrong(f"at density {DENSITIES[i]}: you say {counts[i]} features, but fed each feature alone the "
                    f"model passes {want[i]} of them through")
    return (f"measured by feeding each feature alone: {want[0]} kept when dense, {want[-1]} when sparse; with "
            "2 dimensions, sparsity lets the model keep more features than it has dimensions")


@lru_cache(maxsize=1)
def _transition() -> tuple[float, float]:
    """Densities bracketing where the 0.5-importance feature joins: (sparsest ignored, densest superposed)."""
    pd = methods.phase_diagram(n_density=9 if fast() else 13, n_importance=1, importance_range=(0.5, 0.5),
                               steps=600 if fast() else 1000, seed=11)
    f1 = pd.feature1()[0]  # [density], dense to sparse
    joined = (f1 == methods.superposition.SUPERPOSED).nonzero().flatten()
    if joined.numel() == 0:
        raise RuntimeError("the checker's phase diagram found no superposition; please report this")
    first = int(joined[0])
    return float(pd.density[first - 1]) if first > 0 else 1.0, float(pd.density[first])


@exercise("superposition.phase_change", "Where does the phase change happen?", "answer", "medium", 15,
          hint="run toylab.methods.phase_diagram with n_importance=1 and importance_range=(0.5, 0.5) "
               "over densities from 1 to 0.01, and find the density where feature 1 stops being ignored")
def _phase_change(answer) -> str:
    density = number(answer, "your density")
    if not 0 < density <= 1:
        raise Wrong(f"a feature density lies in (0, 1], got {density}")
    ignored, joined = _transition()
    low, high = joined / 1.5, min(1.0, ignored * 1.5)
    if not low <= density <= high:
        side = "too sparse" if density < low else "too dense"
        raise Wrong(f"{density:g} is {side}: retrained here, feature 1 is ignored at density {ignored:.2g} and "
                    f"forms an antipodal pair with feature 0 at {joined:.2g}")
    return (f"the less important feature joins between density {ignored:.2g} and {joined:.2g}: once features are "
            "rarely on together, sharing a dimension costs less than dropping one")
