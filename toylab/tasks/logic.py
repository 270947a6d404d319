"""Logic gates over named input bits: ``[BOS, a, b, s, filler..., ?] -> true / false``.

Axis names: batch, pos (as everywhere).

The smallest task on which a circuit can be an OR of two paths, a switch, or a signal
that cancels itself: three input bits ``a``, ``b`` and ``s`` sit at fixed positions, each
with its own pair of tokens (``a0``/``a1``, ...), so a head reading "which value does a
have" reads one position only. Filler tokens vary the input around them. The gate decides
the answer:

    copy   a
    or     a or b
    mux    b if s else a
    xor    a xor b

The method traps of ``toylab.truth.traps`` are built on it. Each gate has the
counterfactual its trap needs (a task-level choice, documented on ``counterfactual``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from toylab.tasks.algorithm import Algorithm
from toylab.tasks.base import IGNORE, Batch, CounterfactualPair, SampledTask, seeded_generator

BOS = 0
BITS = ("a", "b", "s")
BIT_POS = {"a": 1, "b": 2, "s": 3}  # where each input bit sits
QUERY = 7  # the "?" token, at the last position, where the answer is read
FIRST_FILLER = 8
FALSE, TRUE = 0, 1  # output classes
GATES = ("copy", "or", "mux", "xor")


def bit_token(bit: str, value: int) -> int:
    """The token id of ``bit`` (a, b or s) holding ``value`` (0 or 1): a0=1, a1=2, b0=3, ..."""
    return 1 + 2 * BITS.index(bit) + value


class Logic(SampledTask):
    """A boolean gate of the input bits, answered at the last position.

    Encoding:
        tokens 0 "BOS", 1-6 "a0" "a1" "b0" "b1" "s0" "s1", 7 "?", then fillers
        "f0" .. "f{F-1}" (ids 8 ..)                                   -> d_vocab = 8 + F
        every prompt is ``[BOS, a, b, s, n_filler fillers, ?]``       -> n_ctx = 5 + n_filler
        targets are IGNORE except at "?", which holds gate(a, b, s):
        0 "false" or 1 "true"                                         -> d_vocab_out = 2

    Data: bits and fillers uniform and independent.
    """

    kind = "logic"

    def __init__(self, gate: str = "copy", n_filler: int = 4, n_filler_tokens: int = 8) -> None:
        if gate not in GATES:
            raise ValueError(f"unknown gate {gate!r}; the gates are {list(GATES)}")
        for name, value, low in (("n_filler", n_filler, 0), ("n_filler_tokens", n_filler_tokens, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.gate, self.n_filler, self.n_filler_tokens = gate, n_filler, n_filler_tokens
        self._eval: dict[str, Batch] | None = None

    # ---- shape of the problem -------------------------------------------------------
    @property
    def d_vocab(self) -> int:
        return FIRST_FILLER + self.n_filler_tokens

    @property
    def d_vocab_out(self) -> int:
        return 2

    @property
    def n_ctx(self) -> int:
        return len(BITS) + 2 + self.n_filler

    @property
    def token_names(self) -> list[str]:
        bits = [f"{bit}{value}" for bit in BITS for value in (0, 1)]
        return ["BOS", *bits, "?"] + [f"f{i}" for i in range(self.n_filler_tokens)]

    @property
    def output_names(self) -> list[str]:
        return ["false", "true"]

    # ---- the gate -------------------------------------------------------------------
    def answer(self, a: Tensor, b: Tensor, s: Tensor) -> Tensor:
        """gate(a, b, s) for bit tensors of one shape (0/1 int64)."""
        if self.gate == "copy":
            return a.clone()
        if self.gate == "or":
            return a | b
        if self.gate == "xor":
            return a ^ b
        return torch.where(s == 1, b, a)

    def bits(self, tokens: Tensor) -> dict[str, Tensor]:
        """The input bits of each row: {"a": [batch], "b": ..., "s": ...} (0/1)."""
        return {bit: tokens[:, BIT_POS[bit]] - bit_token(bit, 0) for bit in BITS}

    def _encode(self, bits: dict[str, Tensor], filler: Tensor) -> Batch:
        n = filler.shape[0]
        tokens = torch.empty(n, self.n_ctx, dtype=torch.int64)  # [batch, pos]
        tokens[:, 0] = BOS
        for bit in BITS:
            tokens[:, BIT_POS[bit]] = bit_token(bit, 0) + bits[bit]
        tokens[:, len(BITS) + 1:-1] = FIRST_FILLER + filler
        tokens[:, -1] = QUERY
        targets = torch.full_like(tokens, IGNORE)
        targets[:, -1] = self.answer(bits["a"], bits["b"], bits["s"])
        return Batch(tokens, targets)

    def _draw(self, n: int, g: torch.Generator) -> tuple[dict[str, Tensor], Tensor]:
        bits = {bit: torch.randint(2, (n,), generator=g) for bit in BITS}
        filler = torch.randint(self.n_filler_tokens, (n, self.n_filler), generator=g)  # [batch, filler]
        return bits, filler

    # ---- data ---------------------------------------------------------------------
    def _sample(self, n: int, g: torch.Generator) -> Batch:
        return self._encode(*self._draw(n, g))

    def sample(self, n: int, seed: int) -> Batch:
        return self._sample(n, seeded_generator(seed))

    def counterfactual(self, n: int, seed: int) -> CounterfactualPair:
        """Clean and corrupted prompts with the same fillers, whose answers differ:

        copy   a flipped (b and s as drawn, the same in both);
        xor    a or b flipped, which one drawn per row (both inputs matter, each in half);
        or     a = b = 1 in the clean prompt, a = b = 0 in the corrupted one: from the state
               where both inputs are on, so that turning either off alone changes nothing
               (Heimersheim & Nanda 2024 on noising an OR);
        mux    s flipped, with a != b so that the answer flips.
        """
        g = seeded_generator(seed)
        bits, filler = self._draw(n, g)
        corrupted = dict(bits)
        if self.gate == "xor":
            flip_a = torch.randint(2, (n,), generator=g).bool()
            corrupted["a"] = torch.where(flip_a, 1 - bits["a"], bits["a"])
            corrupted["b"] = torch.where(flip_a, bits["b"], 1 - bits["b"])
            what = "a or b flipped (one per row)"
        elif self.gate == "copy":
            corrupted["a"] = 1 - bits["a"]
            what = "a flipped"
        elif self.gate == "or":
            bits = {**bits, "a": torch.ones_like(bits["a"]), "b": torch.ones_like(bits["b"])}
            corrupted = {**bits, "a": torch.zeros_like(bits["a"]), "b": torch.zeros_like(bits["b"])}
            what = "a = b = 1 turned to a = b = 0"
        else:
            bits = {**bits, "b": 1 - bits["a"]}
            corrupted = {**bits, "s": 1 - bits["s"]}
            what = "s flipped (with a != b)"
        return CounterfactualPair(self._encode(bits, filler), self._encode(corrupted, filler), what)

    # ---- serialisation --------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"gate": self.gate, "n_filler": self.n_filler, "n_filler_tokens": self.n_filler_tokens}


class LogicAlgorithm(Algorithm):
    """The gate as a causal model: the input bits a, b, s are its variables.

    Intervening on a bit gives the gate's answer on the base prompt with that bit taken
    from the source. Pairs are two independent prompts (fillers too), so a bit differs
    in half the pairs, and under a gate that reads two bits a method that swaps both at
    once is right only where the other bit happens to agree.
    """

    variables = BITS

    def __init__(self, task: Logic) -> None:
        self.task = task

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        return self.task._sample(n, generator), self.task._sample(n, generator)

    def intervene(self, base: Batch, source: Batch, variable: str) -> Tensor:
        self.check_variable(variable)
        bits = self.task.bits(base.tokens)
        bits[variable] = self.task.bits(source.tokens)[variable]
        targets = torch.full_like(base.targets, IGNORE)
        targets[:, -1] = self.task.answer(bits["a"], bits["b"], bits["s"])
        return targets
