"""Fourier analysis of modular addition: basis, frequencies, restricted/excluded loss, checks."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

import toylab
from toylab import zoo
from toylab.methods import fourier
from toylab.methods.fourier import (
    check_key_frequencies,
    embedding_frequency_norms,
    excluded_loss,
    fourier_basis,
    frequency_losses,
    key_frequencies,
    mlp_frequency_spectrum,
    neuron_frequencies,
    restricted_loss,
)
from toylab.models import Transformer
from toylab.tasks import Induction, ModularAddition

# The certified key frequencies of the zoo's truths (certified by restricted/excluded loss).
TINY_KEY = zoo.recipe("modadd-tiny").truth.claims["key_frequencies"]
BIG_KEY = zoo.recipe("modadd-113").truth.claims["key_frequencies"]


@pytest.fixture(scope="module")
def tiny():
    return toylab.zoo.load("modadd-tiny")


def _all_pass(checks) -> bool:
    return all(check.passed for check in checks)


# ---- basis ---------------------------------------------------------------------------
@pytest.mark.parametrize("p", [3, 7, 53, 113])
def test_basis_is_orthonormal(p: int) -> None:
    basis, names = fourier_basis(p, torch.float64)
    assert basis.shape == (p, p)
    torch.testing.assert_close(basis @ basis.T, torch.eye(p, dtype=torch.float64))
    assert names[:3] == ["const", "cos 1", "sin 1"]
    assert names[-2:] == [f"cos {(p - 1) // 2}", f"sin {(p - 1) // 2}"]
    assert len(set(names)) == p


def test_basis_rows_are_the_named_functions() -> None:
    p = 13
    basis, names = fourier_basis(p)
    assert basis.dtype == torch.float32
    x = torch.arange(p, dtype=torch.float64)
    row = basis[names.index("sin 5")].double()
    torch.testing.assert_close(row, math.sqrt(2 / p) * torch.sin(2 * math.pi * 5 * x / p), atol=1e-6, rtol=0)
    torch.testing.assert_close(basis[0], torch.full((p,), 1 / math.sqrt(p)))


@pytest.mark.parametrize("w", [1, 7, 26])
def test_synthetic_cosine_is_found_at_its_frequency(w: int) -> None:
    p = 53
    x = torch.arange(p, dtype=torch.float64)
    f = torch.cos(2 * math.pi * w * x / p)
    basis, names = fourier_basis(p, torch.float64)
    coef = basis @ f
    assert names[int(coef.abs().argmax())] == f"cos {w}"
    assert (coef.abs() > 1e-9).sum() == 1

    # the same function read as an embedding: its norm is at frequency w only
    cfg = toylab.zoo.load("modadd-tiny").model.cfg
    model = Transformer(cfg, seed=0)
    with torch.no_grad():
        model.embed.W_E.zero_()
        model.embed.W_E[:p, 0] = f.float()
        model.embed.W_E[:p, 1] = 3 * torch.sin(2 * math.pi * w * x / p).float()
    norms = embedding_frequency_norms(model, p)
    assert norms.shape == ((p - 1) // 2,)
    assert int(norms.argmax()) + 1 == w
    expected = math.sqrt(p / 2 * (1 + 9))  # |cos|^2 = |sin|^2 = p / 2 over Z_p
    assert norms[w - 1].item() == pytest.approx(expected, rel=1e-5)
    assert norms.sum().item() == pytest.approx(expected, rel=1e-5)


def test_grid_spectrum_attributes_2d_terms_to_their_frequency() -> None:
    p = 31
    a = torch.arange(p, dtype=torch.float64)[:, None]
    b = torch.arange(p, dtype=torch.float64)[None, :]

    def ang(w: int, x: torch.Tensor) -> torch.Tensor:
        return 2 * math.pi * w * x / p

    pure = torch.cos(ang(4, a)) * torch.sin(ang(4, b)) + torch.cos(ang(4, a + b)) + 5.0  # freq 4 only
    mixed = torch.cos(ang(3, a + b)) * 2 + torch.sin(ang(9, a)) * 1  # variance 4 : 1
    dead = torch.full((p, p), 2.0)
    per_freq, total = fourier.grid_spectrum(torch.stack([pure, mixed, dead]))
    freq, frac = fourier.dominant_frequency(per_freq, total)
    assert freq.tolist() == [4, 3, 0]
    assert frac[0].item() == pytest.approx(1.0, abs=1e-6)
    assert frac[1].item() == pytest.approx(0.8, abs=1e-6)
    assert frac[2].item() == 0.0


def test_projection_keeps_a_pure_circuit_and_excluded_removes_it() -> None:
    # logits = 4 cos(w(a + b - c)): restricted to {w} is the same model, excluded is uniform
    p, w = 29, 5
    task = ModularAddition(p=p, train_frac=0.5)
    x = torch.arange(p, dtype=torch.float64)
    logits = 4 * torch.cos(2 * math.pi * w * (x[:, None, None] + x[None, :, None] - x[None, None, :]) / p)
    losses = fourier._losses(logits, task, (w,), "train")
    assert losses.restricted == pytest.approx(losses.full, abs=1e-9)
    assert losses.excluded == pytest.approx(math.log(p), abs=1e-9)
    other = fourier._losses(logits, task, (w + 1,), "all")
    assert other.excluded == pytest.approx(other.full, abs=1e-9)
    assert other.restricted == pytest.approx(math.log(p), abs=1e-9)


# ---- a grokked model ------------------------------------------------------------------
def test_key_frequencies_of_modadd_tiny_are_stable(tiny) -> None:
    model, task = tiny.model, tiny.task
    assert key_frequencies(model, task) == TINY_KEY
    assert key_frequencies(model, task, k=len(TINY_KEY)) == TINY_KEY
    share = mlp_frequency_spectrum(model, task)
    key = share[[w - 1 for w in TINY_KEY]]
    rest = share[[w - 1 for w in range(1, 27) if w not in TINY_KEY]]
    assert key.min() > 10 * rest.max()  # a wide gap, not a threshold on a slope
    # the embedding agrees, and small weight noise does not move the answer
    assert sorted((embedding_frequency_norms(model, task.p).topk(len(TINY_KEY)).indices + 1).tolist()) == TINY_KEY
    noisy = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in noisy.parameters():
            param.add_(0.05 * param.std() * torch.randn(param.shape, generator=gen))
    assert key_frequencies(noisy, task) == TINY_KEY


def test_neurons_cluster_on_the_key_frequencies(tiny) -> None:
    freq, frac = neuron_frequencies(tiny.model, tiny.task)
    assert freq.shape == frac.shape == (tiny.model.cfg.d_mlp,)
    assert ((frac >= 0) & (frac <= 1 + 1e-6)).all()
    on_key = torch.isin(freq, torch.tensor(TINY_KEY)) & (frac > 0.5)
    assert on_key.float().mean() > 0.9  # measured 0.94 (seed 0 as shipped in 2026-12; 0.96 before)
    assert frac.median() > 0.9


def test_restricted_low_excluded_high_and_check_passes(tiny) -> None:
    model, task = tiny.model, tiny.task
    losses = frequency_losses(model, task, TINY_KEY)
    assert losses.freqs == tuple(TINY_KEY) and losses.split == "train"
    assert losses.restricted <= losses.full + 1e-3  # no worse than the whole model
    assert losses.excluded > losses.full + math.log(task.p)
    test_loss = frequency_losses(model, task, TINY_KEY, split="test").full
    assert restricted_loss(model, task, TINY_KEY, split="test") <= test_loss + 1e-3
    assert excluded_loss(model, task, TINY_KEY, split="all") > math.log(task.p)
    checks = check_key_frequencies(model, task, TINY_KEY)
    assert len(checks) == 2 + len(TINY_KEY)
    assert _all_pass(checks), "\n".join(map(str, checks))


def test_wrong_frequency_sets_fail_the_check(tiny) -> None:
    model, task = tiny.model, tiny.task
    others = [w for w in range(1, 27) if w not in TINY_KEY]
    rng = random.Random(0)
    for _ in range(3):
        wrong = rng.sample(others, len(TINY_KEY))
        checks = check_key_frequencies(model, task, wrong)
        assert not checks[0].passed and not checks[1].passed  # neither sufficient nor necessary
    assert not _all_pass(check_key_frequencies(model, task, TINY_KEY[:-1]))  # one missing
    extra = check_key_frequencies(model, task, [*TINY_KEY, others[0]])  # one unused
    assert not _all_pass(extra)
    assert [c.passed for c in extra[2:]] == [w != others[0] for w in sorted([*TINY_KEY, others[0]])]


def test_untrained_model_has_no_key_frequencies(tiny) -> None:
    untrained = Transformer(tiny.model.cfg, seed=1)
    assert key_frequencies(untrained, tiny.task) == []
    assert not _all_pass(check_key_frequencies(untrained, tiny.task, TINY_KEY))


@pytest.mark.slow
def test_modadd_113() -> None:
    zm = toylab.zoo.load("modadd-113")
    assert key_frequencies(zm.model, zm.task) == BIG_KEY
    losses = frequency_losses(zm.model, zm.task, BIG_KEY)
    assert losses.restricted <= losses.full + 0.005 and losses.excluded > math.log(113)
    assert _all_pass(check_key_frequencies(zm.model, zm.task, BIG_KEY))
    unused = next(w for w in range(2, 57) if w not in BIG_KEY)
    assert not _all_pass(check_key_frequencies(zm.model, zm.task, [*BIG_KEY, unused]))


SHIPPED_MODADD = [pytest.param(name, seed, marks=[pytest.mark.slow] if name == "modadd-113" else [])
                  for name in ("modadd-tiny", "modadd-113") for seed in zoo.recipe(name).seeds]


@pytest.mark.parametrize("name,seed", SHIPPED_MODADD)
def test_key_frequencies_of_each_shipped_seed_are_its_certified_ones(name, seed) -> None:
    zm = toylab.zoo.load(name, seed=seed)
    key = zoo.recipe(name).truth_for(seed).claims["key_frequencies"]
    assert zm.truth.claims["key_frequencies"] == key  # the shipped truth.json is the recipe's
    assert key_frequencies(zm.model, zm.task) == key
    assert _all_pass(check_key_frequencies(zm.model, zm.task, key))


# ---- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2, 4, 100, True, 7.0, "53"])
def test_bad_p(p) -> None:
    with pytest.raises(ValueError, match="p must be"):
        fourier_basis(p)


@pytest.mark.parametrize(
    ("freqs", "match"),
    [
        ([0, 16], "out of range"),
        ([27], "out of range: for p=53 frequencies run over 1 .. 26 \\(frequency 27 is the same as 26\\)"),
        ([-3], "out of range"),
        ([16, 16], "distinct"),
        ([2.5], "must be ints"),
        ([True], "must be ints"),
        (16, "list of ints"),
        ("16", "list of ints"),
    ],
)
def test_bad_frequencies(tiny, freqs, match) -> None:
    with pytest.raises(ValueError, match=match):
        restricted_loss(tiny.model, tiny.task, freqs)


def test_bad_arguments(tiny) -> None:
    model, task = tiny.model, tiny.task
    with pytest.raises(ValueError, match="does not match the model"):
        embedding_frequency_norms(model, 113)
    with pytest.raises(ValueError, match="does not fit the task"):
        key_frequencies(model, ModularAddition(p=113))
    with pytest.raises(ValueError, match="ModularAddition"):
        neuron_frequencies(model, Induction())
    with pytest.raises(ValueError, match="split"):
        frequency_losses(model, task, TINY_KEY, split="val")
    with pytest.raises(ValueError, match="k must be"):
        key_frequencies(model, task, k=0)
    with pytest.raises(ValueError, match="layer"):
        neuron_frequencies(model, task, layer=1)
    with pytest.raises(ValueError, match="at least one"):
        check_key_frequencies(model, task, [])
    assert frequency_losses(model, task, torch.tensor(TINY_KEY)).freqs == tuple(TINY_KEY)  # tensors are fine


def test_losses_honour_hooks_attached_by_the_caller(tiny):
    """The all-pairs logits take a hook-free fast path, except when a hook is attached."""
    freqs = tiny.truth.claims["key_frequencies"]
    plain = frequency_losses(tiny.model, tiny.task, freqs)
    with tiny.model.hooks([("blocks.0.hook_resid_pre", lambda x, hook: x)]):
        same = frequency_losses(tiny.model, tiny.task, freqs)
    assert same.full == pytest.approx(plain.full, rel=1e-3, abs=1e-5)
    with tiny.model.hooks([("blocks.0.mlp.hook_post", lambda x, hook: torch.zeros_like(x))]):
        ablated = frequency_losses(tiny.model, tiny.task, freqs)
    assert ablated.full > plain.full + 1.0  # the MLP carries the answer
