"""Conjunctions: which marked pair of features does a prompt hold? ``[BOS, a, b, =] -> class``.

Axis names used in shape comments:
    batch    -- prompts
    pos      -- 0 BOS, 1 and 2 the two features, 3 "=" (the answer position)
    feature  -- one of the n_features input features
    pair     -- one of the n_marked marked pairs (conjunctions); class pair + 1

A prompt holds two distinct input features, in either order. A seeded set of ``n_marked``
unordered pairs is *marked*: the answer is the pair's class (1 .. n_marked) when the two
features form a marked pair and 0 ("none") otherwise. Solving it means computing, at "=",
the conjunction (a AND b) of every marked pair, from a sparse input (two features of many
present): a boolean function of sparse features, as in computation in superposition (Hänni
et al. 2024), here for a model whose MLP has fewer neurons than there are conjunctions.
The zoo model ``conjunctions`` declares both levels as features: the input features at "="
after attention, and each conjunction in the MLP's output (``toylab.zoo.truths``).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import torch
from torch import Tensor

from toylab.tasks.algorithm import Algorithm
from toylab.tasks.base import IGNORE, Batch, CounterfactualPair, SampledTask, check_count, seeded_generator

BOS, EQUALS = 0, 1
ANSWER_POS = 3
N_CTX = 4
NONE = 0


def marked_pairs(n_features: int, n_marked: int, pair_seed: int) -> Tensor:
    """The marked pairs, [pair, 2] (a < b), drawn from a generator seeded with ``pair_seed``;
    pair k has class k + 1."""
    every = torch.tensor(list(combinations(range(n_features), 2)))  # [n_pairs, 2]
    order = torch.randperm(len(every), generator=seeded_generator(pair_seed))
    return every[order[:n_marked]].contiguous()


class Conjunctions(SampledTask):
    """Which marked pair do the prompt's two features form (0 if none)?

    Encoding:
        tokens 0 "BOS", 1 "=", features ``"f0" .. "f{F-1}"`` (ids 2 .. F + 1)  -> d_vocab = F + 2
        every prompt is ``[BOS, a, b, =]`` with a != b                        -> n_ctx = 4
        targets are IGNORE except at "=" (position 3): the class              -> d_vocab_out = n_marked + 1

    Data: ``marked_fraction`` of the prompts hold a marked pair (uniform over the marked pairs),
    the others a uniform unmarked pair; the order of a and b is random. The test set is every
    ordered pair of distinct features once.
    """

    kind = "conjunctions"

    def __init__(self, n_features: int = 16, n_marked: int = 24, pair_seed: int = 0,
                 marked_fraction: float = 0.5) -> None:
        for name, value, low in (("n_features", n_features, 3), ("n_marked", n_marked, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        n_pairs = n_features * (n_features - 1) // 2
        if n_marked >= n_pairs:
            raise ValueError(f"n_marked={n_marked} must be below the {n_pairs} pairs of {n_features} features, "
                             "so some pairs are unmarked")
        if isinstance(pair_seed, bool) or not isinstance(pair_seed, int):
            raise ValueError(f"pair_seed must be an int, got {pair_seed!r}")
        if not 0 < marked_fraction < 1:
            raise ValueError(f"marked_fraction must lie in (0, 1), got {marked_fraction!r}")
        self.n_features, self.n_marked, self.pair_seed = n_features, n_marked, pair_seed
        self.marked_fraction = float(marked_fraction)
        self.pairs = marked_pairs(n_features, n_marked, pair_seed)  # [pair, 2]
        table = torch.zeros(n_features, n_features, dtype=torch.long)  # [feature, feature] -> class
        table[self.pairs[:, 0], self.pairs[:, 1]] = torch.arange(1, n_marked + 1)
        self.table = table + table.T
        self._eval: dict[str, Batch] | None = None

    @property
    def d_vocab(self) -> int:
        return 2 + self.n_features

    @property
    def d_vocab_out(self) -> int:
        return 1 + self.n_marked

    @property
    def n_ctx(self) -> int:
        return N_CTX

    @property
    def token_names(self) -> list[str]:
        return ["BOS", "="] + [f"f{i}" for i in range(self.n_features)]

    @property
    def output_names(self) -> list[str]:
        return ["none"] + [f"f{a}&f{b}" for a, b in self.pairs.tolist()]

    def make_batch(self, a: Tensor, b: Tensor) -> Batch:
        """Prompts ``[BOS, a, b, =]`` for feature indices a, b ([batch] each, a != b) with their classes."""
        a, b = torch.as_tensor(a).long(), torch.as_tensor(b).long()
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must both have shape [batch]")
        if a.numel() and not (0 <= int(torch.minimum(a, b).min()) and int(torch.maximum(a, b).max()) < self.n_features):
            raise ValueError(f"feature indices must lie in [0, {self.n_features})")
        if (a == b).any():
            raise ValueError("a prompt holds two distinct features: a == b somewhere")
        n = len(a)
        tokens = torch.stack([torch.full((n,), BOS), a + 2, b + 2, torch.full((n,), EQUALS)], dim=1)  # [batch, pos]
        targets = torch.full_like(tokens, IGNORE)
        targets[:, ANSWER_POS] = self.table[a, b]
        return Batch(tokens, targets)

    def variables(self, tokens: Tensor) -> dict[str, Tensor]:
        """a, b (feature indices), conjunction (the class: marked pair + 1, or 0) and present
        ([batch, feature] bool: which features the prompt holds)."""
        self.check_tokens(tokens)
        if tokens.shape[1] != N_CTX or (tokens[:, 0] != BOS).any() or (tokens[:, ANSWER_POS] != EQUALS).any():
            raise ValueError("every prompt must read [BOS, a, b, =]")
        a, b = tokens[:, 1] - 2, tokens[:, 2] - 2
        if (a < 0).any() or (b < 0).any():
            raise ValueError("positions 1 and 2 must hold features")
        present = torch.zeros(len(tokens), self.n_features, dtype=torch.bool)
        present[torch.arange(len(tokens)), a] = True
        present[torch.arange(len(tokens)), b] = True
        return {"a": a, "b": b, "conjunction": self.table[a, b], "present": present}

    def _sample(self, n: int, g: torch.Generator) -> Batch:
        check_count("n", n)
        marked = torch.rand(n, generator=g) < self.marked_fraction
        which = torch.randint(self.n_marked, (n,), generator=g)
        a, b = self.pairs[which, 0].clone(), self.pairs[which, 1].clone()
        # unmarked rows: draw distinct features until the pair is unmarked
        redraw = ~marked
        for _ in range(1000):
            if not redraw.any():
                break
            k = int(redraw.sum())
            x = torch.randint(self.n_features, (k,), generator=g)
            y = (x + torch.randint(1, self.n_features, (k,), generator=g)) % self.n_features
            a[redraw], b[redraw] = x, y
            redraw = ~marked & (self.table[a, b] != NONE)
        swap = torch.rand(n, generator=g) < 0.5
        a, b = torch.where(swap, b, a), torch.where(swap, a, b)
        return self.make_batch(a, b)

    def sample(self, n: int, seed: int) -> Batch:
        return self._sample(n, seeded_generator(seed))

    def eval_batches(self) -> dict[str, Batch]:
        if self._eval is None:
            a, b = torch.meshgrid(torch.arange(self.n_features), torch.arange(self.n_features), indexing="ij")
            keep = a != b
            self._eval = {"test": self.make_batch(a[keep], b[keep])}
        return dict(self._eval)

    def counterfactual(self, n: int, seed: int) -> CounterfactualPair:
        """Clean prompts, and the same with one of the two features replaced so the class changes."""
        check_count("n", n)
        g = seeded_generator(seed)
        clean = self._sample(n, g)
        v = self.variables(clean.tokens)
        a, b = v["a"].clone(), v["b"].clone()
        first = torch.rand(n, generator=g) < 0.5  # which feature to replace
        redraw = torch.ones(n, dtype=torch.bool)
        for _ in range(1000):
            if not redraw.any():
                break
            k = int(redraw.sum())
            new = torch.randint(self.n_features, (k,), generator=g)
            a[redraw & first], b[redraw & ~first] = new[first[redraw]], new[~first[redraw]]
            redraw = (a == b) | (self.table[a, b] == v["conjunction"])
        else:  # pragma: no cover
            raise RuntimeError("could not draw a counterfactual that changes the class")
        return CounterfactualPair(clean=clean, corrupted=self.make_batch(a, b),
                                  description="one of the two features replaced: the conjunction, and the class, change")

    def params(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "n_marked": self.n_marked, "pair_seed": self.pair_seed,
                "marked_fraction": self.marked_fraction}


class ConjunctionsAlgorithm(Algorithm):
    """Conjunctions as a causal model: the class is the conjunction the two features form.

    Variables:
        conjunction  at "=": which marked pair (class), computed from the two features
    ``intervene(base, source, "conjunction")`` gives the source's class.
    """

    variables = ("conjunction",)

    def __init__(self, task: Conjunctions | None = None) -> None:
        self.task = task if task is not None else Conjunctions()
        if not isinstance(self.task, Conjunctions):
            raise TypeError(f"ConjunctionsAlgorithm needs a Conjunctions task, got {self.task!r}")

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        seeds = torch.randint(2**62, (2,), generator=generator).tolist()
        return self.task.sample(n, seeds[0]), self.task.sample(n, seeds[1])

    def intervene(self, base: Batch, source: Batch, variable: str) -> Tensor:
        self.check_variable(variable)
        return self.assign(base, variable, self.task.variables(source.tokens)["conjunction"])

    def assign(self, base: Batch, variable: str, values: Tensor) -> Tensor:
        self.check_variable(variable)
        values = torch.as_tensor(values)
        if values.shape != base.tokens.shape[:1] or values.is_floating_point():
            raise ValueError(f"values must be integer classes of shape [batch] = ({len(base.tokens)},)")
        if values.numel() and not (0 <= int(values.min()) and int(values.max()) <= self.task.n_marked):
            raise ValueError(f"conjunction takes the classes 0 .. {self.task.n_marked}")
        targets = torch.full_like(base.tokens, IGNORE)
        targets[:, ANSWER_POS] = values.long()
        return targets

