"""Modular addition: predict (a + b) mod p from the tokens ``a b =``.

Axis names used in shape comments:
    batch  -- independent examples (one (a, b) pair each)
    pos    -- token position: 0 holds a, 1 holds b, 2 holds "="
    pair   -- one of the p^2 pairs (a, b), indexed a * p + b

The task of the grokking papers (Power et al. 2022; Nanda et al. 2023): a small fixed
data set, a fixed train/test split, and full-batch training on the train fraction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from toylab.tasks.algorithm import Algorithm
from toylab.tasks.base import (
    IGNORE,
    Batch,
    CounterfactualPair,
    Task,
    check_count,
    seeded_generator,
    step_generator,
)

MAX_P = 10_000  # every one of the p^2 pairs is materialised, so p must stay modest
SPLITS = ("train", "test", "all")


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


def nearest_primes(n: int) -> tuple[int | None, int]:
    """The largest prime below ``n`` (None if there is none) and the smallest above it."""
    below = next((m for m in range(n - 1, 1, -1) if is_prime(m)), None)
    above = next(m for m in range(max(n + 1, 2), 2 * n + 3) if is_prime(m))  # Bertrand
    return below, above


class ModularAddition(Task):
    """Predict ``(a + b) % p`` for ``a, b`` in ``0 .. p-1``.

    Encoding:
        tokens   ``[a, b, =]`` where ``=`` is token id ``p``          -> d_vocab = p + 1
        targets  ``[IGNORE, IGNORE, (a + b) % p]``; only "=" is scored -> d_vocab_out = p
        names    ``"0" .. str(p - 1)`` and ``"="``; n_ctx = 3

    ``p`` must be prime: the known circuit computes the answer with Fourier features on
    Z_p, and the analysis relies on Z_p being a field (every non-zero frequency has an
    inverse, so each key frequency covers all of Z_p).

    All p^2 pairs are enumerated (pair index ``a * p + b``), permuted by a generator
    seeded with ``split_seed``, and the first ``round(train_frac * p^2)`` form the train
    set; the rest are the test set. The split is fixed for the life of the task.
    """

    kind = "modular_addition"

    def __init__(self, p: int = 113, train_frac: float = 0.3, split_seed: int = 0) -> None:
        if isinstance(p, bool) or not isinstance(p, int):
            raise ValueError(f"p must be an int (a prime such as 113), got {p!r}")
        if p < 2:
            raise ValueError(f"p must be a prime >= 2, got {p}; the smallest prime is 2 (try 113)")
        if p > MAX_P:
            raise ValueError(
                f"p={p} is too large: all p^2 pairs are enumerated, so p must be <= {MAX_P}"
            )
        if not is_prime(p):
            below, above = nearest_primes(p)
            raise ValueError(
                f"p={p} is not prime; the nearest primes are {below} and {above}. "
                "The modulus must be prime because the Fourier analysis of the learned "
                "circuit assumes Z_p is a field."
            )
        if isinstance(train_frac, bool) or not isinstance(train_frac, (int, float)):
            raise ValueError(f"train_frac must be a float in (0, 1), got {train_frac!r}")
        if not 0 < train_frac < 1:
            raise ValueError(
                f"train_frac must be strictly between 0 and 1 (e.g. 0.3), got {train_frac}"
            )
        n_pairs = p * p
        n_train = round(train_frac * n_pairs)
        if not 0 < n_train < n_pairs:
            raise ValueError(
                f"train_frac={train_frac} leaves an empty train or test set out of the "
                f"{n_pairs} pairs for p={p}; choose a train_frac nearer 0.5 or a larger p"
            )
        if isinstance(split_seed, bool) or not isinstance(split_seed, int):
            raise ValueError(f"split_seed must be an int, got {split_seed!r}")

        self.p = p
        self.train_frac = float(train_frac)
        self.split_seed = split_seed

        a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
        self._all_pairs = torch.stack([a.flatten(), b.flatten()], dim=-1)  # [pair, 2]
        order = torch.randperm(n_pairs, generator=seeded_generator(split_seed))  # [pair]
        self._train_pairs = self._all_pairs[order[:n_train]]  # [n_train, 2]
        self._test_pairs = self._all_pairs[order[n_train:]]  # [n_test, 2]
        self._eval: dict[str, Batch] | None = None
        self._all_batch: Batch | None = None

    # ---- shape of the problem -------------------------------------------------------
    @property
    def d_vocab(self) -> int:
        return self.p + 1

    @property
    def d_vocab_out(self) -> int:
        return self.p

    @property
    def n_ctx(self) -> int:
        return 3

    @property
    def token_names(self) -> list[str]:
        return [str(i) for i in range(self.p)] + ["="]

    @property
    def eq_token(self) -> int:
        return self.p

    # ---- the fixed split ------------------------------------------------------------
    @property
    def train_pairs(self) -> Tensor:
        """The train pairs, ``[n_train, 2]`` rows of (a, b), in split order."""
        return self._train_pairs

    @property
    def test_pairs(self) -> Tensor:
        """The test pairs, ``[n_test, 2]`` rows of (a, b), in split order."""
        return self._test_pairs

    def all_pairs(self) -> Batch:
        """Every pair in order (row ``a * p + b``), for Fourier analysis over the grid."""
        if self._all_batch is None:
            self._all_batch = self._batch(self._all_pairs)
        return self._all_batch

    # ---- encoding -------------------------------------------------------------------
    def make_tokens(self, a: Tensor | int, b: Tensor | int) -> Tensor:
        """``[a, b, =]`` rows from operands of equal shape (ints give a single row)."""
        a = torch.as_tensor(a, dtype=torch.int64).reshape(-1)  # [batch]
        b = torch.as_tensor(b, dtype=torch.int64).reshape(-1)  # [batch]
        if a.shape != b.shape:
            raise ValueError(
                f"a and b must have the same number of elements, got {a.numel()} and {b.numel()}"
            )
        for name, x in (("a", a), ("b", b)):
            if x.numel() and (x.min() < 0 or x.max() >= self.p):
                bad = x[(x < 0) | (x >= self.p)].unique()[:5].tolist()
                raise ValueError(f"{name} values {bad} are outside 0 .. {self.p - 1} (p={self.p})")
        eq = torch.full_like(a, self.eq_token)
        return torch.stack([a, b, eq], dim=-1)  # [batch, pos]

    def _batch(self, pairs: Tensor) -> Batch:
        # pairs: [batch, 2]
        a, b = pairs[:, 0], pairs[:, 1]
        tokens = self.make_tokens(a, b)  # [batch, pos]
        targets = torch.full_like(tokens, IGNORE)  # [batch, pos]
        targets[:, 2] = (a + b) % self.p
        return Batch(tokens, targets)

    def _pool(self, split: str) -> Tensor:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return {"train": self._train_pairs, "test": self._test_pairs, "all": self._all_pairs}[split]

    # ---- data -----------------------------------------------------------------------
    def sample(self, n: int, seed: int, split: str = "all") -> Batch:
        """``n`` pairs drawn uniformly with replacement from ``split`` ("train", "test", "all")."""
        check_count("n", n)
        pool = self._pool(split)  # [n_pool, 2]
        idx = torch.randint(len(pool), (n,), generator=seeded_generator(seed))  # [batch]
        return self._batch(pool[idx])

    def train_batch(self, step: int, seed: int, batch_size: int | None) -> Batch:
        """The full train set if ``batch_size`` is None (grokking setup), else a minibatch.

        Minibatches are drawn with replacement from the train pairs with
        ``step_generator(seed, step)``; the full batch does not depend on step or seed.
        """
        if batch_size is None:
            return self.eval_batches()["train"]
        check_count("batch_size", batch_size)
        idx = torch.randint(
            len(self._train_pairs), (batch_size,), generator=step_generator(seed, step)
        )  # [batch]
        return self._batch(self._train_pairs[idx])

    def eval_batches(self) -> dict[str, Batch]:
        """Every train pair and every test pair, in split order (built once, then cached)."""
        if self._eval is None:
            self._eval = {
                "train": self._batch(self._train_pairs),
                "test": self._batch(self._test_pairs),
            }
        return dict(self._eval)  # a fresh dict, so callers cannot swap out the cached sets

    def counterfactual(self, n: int, seed: int) -> CounterfactualPair:
        """Clean (a, b) uniform over all pairs; corrupted (a, b') with b' != b uniform."""
        check_count("n", n)
        g = seeded_generator(seed)
        clean = torch.randint(self.p, (n, 2), generator=g)  # [batch, 2]
        # A non-zero shift makes b' uniform over the p - 1 values other than b.
        shift = torch.randint(1, self.p, (n,), generator=g)  # [batch]
        corrupted = clean.clone()
        corrupted[:, 1] = (clean[:, 1] + shift) % self.p
        return CounterfactualPair(
            clean=self._batch(clean),
            corrupted=self._batch(corrupted),
            description="b resampled (a kept), so the answer changes",
        )

    # ---- serialisation --------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"p": self.p, "train_frac": self.train_frac, "split_seed": self.split_seed}


class ModularAdditionAlgorithm(Algorithm):
    """Modular addition as a causal model with one intermediate variable.

    ``sum``: (a + b) mod p, computed at the "=" position (as the Fourier features of
    w(a + b) in the zoo's models). With ``sum`` taken from a source the answer is the
    source's answer. Pairs are (a, b) and (a, b') from ``counterfactual``.
    """

    variables = ("sum",)

    def __init__(self, task: ModularAddition) -> None:
        self.task = task

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        pair = self.task.counterfactual(n, int(torch.randint(2**62, (), generator=generator)))
        return pair.clean, pair.corrupted

    def intervene(self, base: Batch, source: Batch, variable: str) -> Tensor:
        self.check_variable(variable)
        return torch.where(base.scored, source.targets, IGNORE)

    def assign(self, base: Batch, variable: str, values: Tensor) -> Tensor:
        """Targets [batch, pos] with ``sum`` := ``values`` [batch] in [0, p): the answer becomes the value."""
        self.check_variable(variable)
        values = torch.as_tensor(values)
        if values.shape != base.tokens.shape[:1]:
            raise ValueError(f"values must have shape [batch] = ({base.tokens.shape[0]},), got {tuple(values.shape)}")
        if values.is_floating_point() or (values.numel() and not (0 <= int(values.min()) and int(values.max()) < self.task.p)):
            raise ValueError(f"sum takes integer values in [0, {self.task.p}); got values in "
                             f"[{values.min().item()}, {values.max().item()}]")
        return torch.where(base.scored, values.long().unsqueeze(-1), IGNORE)
