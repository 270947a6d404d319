"""Balanced brackets: classify a string of "(" and ")" as balanced or not.

Axis names used in shape comments:
    batch  -- independent sequences
    pos    -- token position, 0 .. n_ctx - 1 (0 holds BOS, i >= 1 holds bracket x_i)
    cls    -- one of the four classes of CLASSES, by (final_zero, any_negative)
    group  -- one of the five groups of GROUPS that make up the data mix
    height -- a bracket count offset by ``length``, 0 .. 2 * length
    neg    -- how many positions so far had a negative count: 0, 1, or 2 for "2 or more"

The task of Redwood Research's paren-balancer challenge, with its algorithm written out
as causal variables (``BracketsAlgorithm``): a string is balanced iff its running count
``#"(" - #")"`` never drops below zero and ends at zero. A two-layer transformer can
compute the count at every position with one uniformly attending head, threshold it in an
MLP, and gather "went negative somewhere" at the last position with a second-layer head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from toylab.tasks.algorithm import Algorithm
from toylab.tasks.base import (
    IGNORE,
    Batch,
    CounterfactualPair,
    SampledTask,
    check_count,
    seeded_generator,
)

BOS, OPEN, CLOSE = 0, 1, 2
UNBALANCED, BALANCED = 0, 1  # output classes
BRACKET_CHARS = {OPEN: "(", CLOSE: ")"}

# The four classes of a string, by (final_zero, any_negative).
CLASSES = ("balanced", "dips", "unclosed", "dips_unclosed")
# The data mix is made of five groups, each sampled uniformly among its strings. Half the
# strings are balanced; of the unbalanced half, half end at zero but dip below it (a final
# count alone cannot tell them from balanced strings), and half of those dip at exactly
# one position (the hardest case: one brief dip, which a model must find at any position);
# the rest end non-zero, with or without a dip.
GROUPS = ("balanced", "dips_once", "dips", "unclosed", "dips_unclosed")
MIX = (0.5, 0.125, 0.125, 0.125, 0.125)
_GROUP_CLASS = (0, 1, 1, 2, 3)  # index into CLASSES
_GROUP_FINAL_ZERO = (True, True, True, False, False)
_GROUP_N_NEGATIVE = ((0,), (1,), (1, 2), (0,), (1, 2))  # allowed counts of negative positions

MIN_LENGTH = 4
MAX_LENGTH = 256  # the sampler counts paths in float64; 2^256 is far inside its range


def bracket_variables(tokens: Tensor) -> dict[str, Tensor]:
    """The algorithm's variables on token sequences ``[BOS, x_1 .. x_n]``.

    Returns
        balance       [batch, pos] int64: #"(" - #")" among x_1 .. x_i (0 at BOS)
        negative      [batch, pos] bool:  balance < 0
        any_negative  [batch] bool: negative anywhere (the value read at the last position)
        final_zero    [batch] bool: balance at the last position == 0
        answer        [batch] int64: BALANCED (1) iff final_zero and not any_negative, else 0
    """
    step = torch.where(tokens == OPEN, 1, torch.where(tokens == CLOSE, -1, 0))  # [batch, pos]
    balance = step.cumsum(-1)  # [batch, pos]
    negative = balance < 0
    any_negative = negative.any(-1)  # [batch]
    final_zero = balance[:, -1] == 0  # [batch]
    return {
        "balance": balance,
        "negative": negative,
        "any_negative": any_negative,
        "final_zero": final_zero,
        "answer": _answer(final_zero, any_negative),
    }


def _answer(final_zero: Tensor, any_negative: Tensor) -> Tensor:
    return (final_zero & ~any_negative).long()  # [batch]


def _class_index(final_zero: Tensor, any_negative: Tensor) -> Tensor:
    # CLASSES order: (fz, an) = (1, 0), (1, 1), (0, 0), (0, 1)
    return 2 * (~final_zero).long() + any_negative.long()  # [batch]


def _last_position_targets(answer: Tensor, n_ctx: int) -> Tensor:
    targets = torch.full((answer.shape[0], n_ctx), IGNORE, dtype=torch.int64)  # [batch, pos]
    targets[:, -1] = answer
    return targets


class Brackets(SampledTask):
    """Is a string of ``length`` brackets balanced?

    Encoding:
        tokens 0 "BOS", 1 "(", 2 ")"                                   -> d_vocab = 3
        every sequence is ``[BOS, x_1 .. x_length]``                     -> n_ctx = length + 1
        targets are IGNORE except at the last position, which holds
        1 ("balanced") or 0 ("unbalanced")                               -> d_vocab_out = 2

    ``length`` is even (an odd-length string is never balanced: that would give the answer away)
    and the same for every sequence, so no padding is needed. Balanced means the running
    count ``#"(" - #")"`` never goes below zero and ends at zero.

    The default length 24 is long enough that the two-layer algorithm is needed: in our
    runs one-layer transformers (4 heads, d_model 64, 5000 steps; 8 heads, d_model 128,
    2000 steps) stayed below 98% test accuracy, missing brief dips, while at length 12 to
    20 one layer reaches 99% by reading the whole string from the last position. A
    two-layer model with one head per layer learns length 24 to >= 99.9% in a few hundred
    steps.

    Data mix (``sample``, ``train_batch``, the test set): each row first draws a group,
    then a string uniformly among the strings of that group:

        group          share  strings                                         example
        balanced       1/2    final count 0, never below 0                    "(())()"
        dips_once      1/8    final count 0, below 0 at exactly one position  "())(()"
        dips           1/8    final count 0, below 0 somewhere                "))()(("
        unclosed       1/8    never below 0, final count > 0                  "(()(()"
        dips_unclosed  1/8    below 0 somewhere, final count != 0             ")))(()"

    So the answer is balanced half the time; a model that only checks the final count is
    right 3/4 of the time, and one that misses brief dips fails on the ``dips_once`` group
    (uniform ``dips`` strings mostly dip long or deep, which even a one-layer model
    detects). The four classes of CLASSES, by (final_zero, any_negative), have shares
    1/2, 1/4, 1/8, 1/8 ("dips" being dips_once and dips together; the dips group, uniform
    over the whole class, holds some dips_once strings too). Uniform sampling within
    a group is exact: the sampler walks the string left to right, choosing "(" with the
    fraction of the group's completions that continue with "(" (path counts by dynamic
    programming).
    """

    kind = "brackets"
    eval_size = 2048

    def __init__(self, length: int = 24) -> None:
        if isinstance(length, bool) or not isinstance(length, int):
            raise ValueError(f"length must be an int (an even number such as 24), got {length!r}")
        if length < MIN_LENGTH:
            raise ValueError(
                f"length={length} is too short: need an even length >= {MIN_LENGTH} so that every "
                f"group of strings ({', '.join(GROUPS)}) has more than one member"
            )
        if length % 2:
            raise ValueError(
                f"length must be even, got {length}: a string of odd length is never balanced, "
                f"so the answer would be given away; use {length - 1} or {length + 1}"
            )
        if length > MAX_LENGTH:
            raise ValueError(f"length={length} is too long: the sampler supports up to {MAX_LENGTH}")
        self.length = length
        self._p_open = _open_probabilities(length)  # [remaining, group, height, neg]
        self._eval: dict[str, Batch] | None = None

    # ---- shape of the problem -------------------------------------------------------
    @property
    def d_vocab(self) -> int:
        return 3

    @property
    def d_vocab_out(self) -> int:
        return 2

    @property
    def n_ctx(self) -> int:
        return self.length + 1

    @property
    def token_names(self) -> list[str]:
        return ["BOS", "(", ")"]

    @property
    def output_names(self) -> list[str]:
        """Name of each output class: index 0 "unbalanced", 1 "balanced"."""
        return ["unbalanced", "balanced"]

    # ---- encoding -------------------------------------------------------------------
    def make_tokens(self, strings: str | Sequence[str]) -> Tensor:
        """``"(())"`` or a list of such strings -> token rows ``[BOS, x_1 .. x_n]`` [batch, pos]."""
        if isinstance(strings, str):
            strings = [strings]
        rows = []
        for s in strings:
            if not isinstance(s, str) or len(s) != self.length or set(s) - {"(", ")"}:
                raise ValueError(
                    f"each string must hold exactly length={self.length} characters, all '(' or "
                    f"')'; got {s!r}"
                )
            rows.append([BOS] + [OPEN if c == "(" else CLOSE for c in s])
        return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), self.n_ctx)

    def to_strings(self, tokens: Tensor) -> list[str]:
        """Token rows [batch, pos] (or one row [pos]) -> bracket strings, BOS dropped."""
        self._check_layout(tokens if tokens.ndim == 2 else tokens.unsqueeze(0))
        rows = tokens.reshape(-1, self.n_ctx)[:, 1:].tolist()
        return ["".join(BRACKET_CHARS[t] for t in row) for row in rows]

    def make_batch(self, tokens: Tensor | str | Sequence[str]) -> Batch:
        """A Batch with this task's targets, from token rows or bracket strings."""
        if not isinstance(tokens, Tensor):
            tokens = self.make_tokens(tokens)
        self._check_layout(tokens)
        answer = bracket_variables(tokens)["answer"]
        return Batch(tokens.long(), _last_position_targets(answer, self.n_ctx))

    def variables(self, tokens: Tensor) -> dict[str, Tensor]:
        """``bracket_variables(tokens)`` plus ``class``, the index into CLASSES ([batch])."""
        self._check_layout(tokens)
        out = bracket_variables(tokens)
        out["class"] = _class_index(out["final_zero"], out["any_negative"])
        return out

    def _check_layout(self, tokens: Tensor) -> None:
        self.check_tokens(tokens)
        if tokens.shape[1] != self.n_ctx:
            raise ValueError(
                f"sequences must have length n_ctx={self.n_ctx} (BOS + {self.length} brackets), "
                f"got {tokens.shape[1]}"
            )
        if tokens.numel() and ((tokens[:, 0] != BOS).any() or (tokens[:, 1:] == BOS).any()):
            raise ValueError("every row must be [BOS, x_1 .. x_n] with BOS only at position 0")

    # ---- generation -----------------------------------------------------------------
    def _draw_groups(self, n: int, g: torch.Generator) -> Tensor:
        return torch.multinomial(torch.tensor(MIX), n, replacement=True, generator=g)  # [batch]

    def _sample_groups(self, groups: Tensor, g: torch.Generator) -> Tensor:
        """One string per row, uniform within that row's group; returns tokens [batch, pos]."""
        n = groups.shape[0]
        length = self.length
        tokens = torch.full((n, self.n_ctx), BOS, dtype=torch.int64)  # [batch, pos]
        height = torch.full((n,), length, dtype=torch.int64)  # offset by length: 0 -> index length
        n_negative = torch.zeros(n, dtype=torch.int64)  # capped at 2 [batch]
        uniform = torch.rand(n, length, generator=g, dtype=torch.float64)  # [batch, length]
        for t in range(length):
            p_open = self._p_open[length - t, groups, height, n_negative]  # [batch]
            is_open = uniform[:, t] < p_open
            tokens[:, t + 1] = torch.where(is_open, OPEN, CLOSE)
            height = height + torch.where(is_open, 1, -1)
            n_negative = (n_negative + (height < length).long()).clamp(max=2)
        return tokens

    def _sample(self, n: int, g: torch.Generator) -> Batch:
        check_count("n", n)
        return self.make_batch(self._sample_groups(self._draw_groups(n, g), g))

    # ---- data -----------------------------------------------------------------------
    def sample(self, n: int, seed: int, group: str | None = None) -> Batch:
        """``n`` strings from the task's mix, or, with ``group`` (one of GROUPS), all from that group."""
        if group is None:
            return self._sample(n, seeded_generator(seed))
        check_count("n", n)
        if group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS} or None, got {group!r}")
        groups = torch.full((n,), GROUPS.index(group), dtype=torch.int64)
        return self.make_batch(self._sample_groups(groups, seeded_generator(seed)))

    def counterfactual(self, n: int, seed: int) -> CounterfactualPair:
        """A balanced string and a one-edit unbalanced version of it, in random order.

        Every pair starts from a uniform balanced string B. Half the pairs turn it into U by
        swapping a top-level matched pair "(" ... ")" into ")" ... "(" (U dips to exactly
        -1 inside the pair and still ends at 0: only ``any_negative`` changes); the other
        half turn one ")" into "(" (U never dips and ends at +2: only ``final_zero``
        changes). Then, per row at random, clean = B and corrupted = U, or the reverse, so
        each side is balanced half the time and the two answers always differ.
        """
        check_count("n", n)
        g = seeded_generator(seed)
        balanced = self._sample_groups(torch.zeros(n, dtype=torch.int64), g)  # [batch, pos]
        unbalanced = balanced.clone()
        rows = torch.arange(n)
        pos = torch.arange(self.n_ctx)  # [pos]
        balance = bracket_variables(balanced)["balance"]  # [batch, pos]
        before = torch.cat([torch.zeros(n, 1, dtype=torch.int64), balance[:, :-1]], dim=-1)

        # Swap: a uniform top-level "(" (count 0 just before it) and its matching ")", the
        # first later position where the count is back at 0.
        top_open = (balanced == OPEN) & (before == 0)  # [batch, pos]
        i = _uniform_choice(top_open, g)  # [batch]
        j = ((pos > i.unsqueeze(-1)) & (balance == 0)).long().argmax(-1)  # first match [batch]
        # Flip: a uniform ")" becomes "(".
        k = _uniform_choice(balanced == CLOSE, g)  # [batch]

        swap = torch.rand(n, generator=g) < 0.5  # [batch]
        unbalanced[rows[swap], i[swap]] = CLOSE
        unbalanced[rows[swap], j[swap]] = OPEN
        unbalanced[rows[~swap], k[~swap]] = OPEN

        flip_order = (torch.rand(n, generator=g) < 0.5).unsqueeze(-1)  # [batch, 1]
        clean = torch.where(flip_order, unbalanced, balanced)
        corrupted = torch.where(flip_order, balanced, unbalanced)
        return CounterfactualPair(
            clean=self.make_batch(clean),
            corrupted=self.make_batch(corrupted),
            description="one of each pair is balanced, the other the same string with one edit: "
            "a top-level matched pair swapped (dips to -1, ends at 0) or one ')' turned '(' "
            "(never dips, ends at +2); the answers always differ",
        )

    # ---- serialisation --------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"length": self.length}


def _uniform_choice(mask: Tensor, g: torch.Generator) -> Tensor:
    """Per row, a uniformly chosen index where ``mask`` [batch, pos] is True (it must be somewhere)."""
    keys = torch.rand(mask.shape, generator=g)  # [batch, pos]
    return torch.where(mask, keys, -1.0).argmax(-1)  # [batch]


def _open_probabilities(length: int) -> Tensor:
    """P("(" next) for uniform sampling within each group, [remaining, group, height, neg].

    ``count[r][c, h, k]`` is the number of ways to finish a string with ``r`` brackets to go
    from count ``h - length``, with ``k`` positions below zero so far (capped at 2), so that
    the string lands in group ``c``. Counts reach 2^length, exact enough in float64 for
    ratios. Unreachable states (count 0) get probability 0.
    """
    n_heights = 2 * length + 1
    heights = torch.arange(n_heights) - length  # [height]
    final_zero = torch.tensor(_GROUP_FINAL_ZERO).view(-1, 1, 1)  # [group, 1, 1]
    allowed = torch.tensor([[k in ks for k in range(3)] for ks in _GROUP_N_NEGATIVE])  # [group, neg]
    at_zero = (heights == 0).view(1, -1, 1)  # [1, height, 1]
    count = ((at_zero == final_zero) & allowed.unsqueeze(1)).double()  # r = 0: [group, height, neg]

    # Moving to height h' adds one to the negative count if h' < 0 (capped at 2).
    neg = torch.arange(3)  # [neg]
    up_neg = ((neg + (heights + 1 < 0).long().unsqueeze(-1)).clamp(max=2)).expand(len(GROUPS), -1, -1)
    down_neg = ((neg + (heights - 1 < 0).long().unsqueeze(-1)).clamp(max=2)).expand(len(GROUPS), -1, -1)
    p_open = torch.zeros(length + 1, len(GROUPS), n_heights, 3, dtype=torch.float64)
    for r in range(1, length + 1):
        shifted_up = torch.zeros_like(count)  # count[r-1] at height + 1
        shifted_up[:, :-1] = count[:, 1:]
        shifted_down = torch.zeros_like(count)  # count[r-1] at height - 1
        shifted_down[:, 1:] = count[:, :-1]
        after_open = shifted_up.gather(-1, up_neg)  # [group, height, neg]
        after_close = shifted_down.gather(-1, down_neg)
        total = after_open + after_close
        p_open[r] = torch.where(total > 0, after_open / total.clamp(min=1.0), 0.0)
        count = total
    return p_open


class BracketsAlgorithm(Algorithm):
    """The balancer as a causal model, with interchange interventions on its variables.

    Variables (on ``[BOS, x_1 .. x_n]``; see ``bracket_variables``):
        balance       at every position i: #"(" - #")" among x_1 .. x_i (0 at BOS)
        negative      at every position i: balance_i < 0
        any_negative  at the last position: negative at some position
        final_zero    at the last position: balance at the last position == 0
    and the output at the last position: balanced iff final_zero and not any_negative.
    Causal graph: balance_i -> negative_i -> any_negative -> output, and
    balance_last -> final_zero -> output.

    ``intervene(base, source, variable, positions=None)`` sets ``variable`` to its value on
    ``source`` (at every position, or only where the bool mask ``positions`` [pos] or
    [batch, pos] is True; ``any_negative`` and ``final_zero`` live at the last position, so
    only the mask's last entry matters for them), recomputes everything downstream from the
    mixed values, and keeps everything else at its value on ``base``. Besides the
    variables, ``variable="output"`` takes the source's answer and ``variable=None``
    intervenes on nothing (the base's answer). Returns targets [batch, pos], IGNORE except
    at the last position.
    """

    variables = ("balance", "negative", "any_negative", "final_zero")

    def __init__(self, task: Brackets | None = None) -> None:
        if task is None:
            task = Brackets()
        if not isinstance(task, Brackets):
            raise TypeError(f"BracketsAlgorithm needs a Brackets task, got {task!r}")
        self.task = task

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        """Base from the task's mix; source from the mix restricted to the other three classes.

        A source never shares its base's (final_zero, any_negative) class, so every
        variable's intervention (at all positions) moves the answer off the base's on a good
        share of pairs: about 81% for balance (where the answers differ), 58% for negative
        and any_negative, 35% for final_zero. Every ordered pair of distinct classes
        occurs; the source is balanced about 31% of the time (not 50%).
        """
        check_count("n", n)
        task = self.task
        base_groups = task._draw_groups(n, generator)  # [batch]
        group_class = torch.tensor(_GROUP_CLASS)  # [group]
        same_class = group_class[base_groups].unsqueeze(-1) == group_class  # [batch, group]
        probs = torch.where(same_class, 0.0, torch.tensor(MIX))  # [batch, group]
        source_groups = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # [batch]
        base = task.make_batch(task._sample_groups(base_groups, generator))
        source = task.make_batch(task._sample_groups(source_groups, generator))
        return base, source

    def intervene(
        self, base: Batch, source: Batch, variable: str | None, positions: Tensor | None = None
    ) -> Tensor:
        """Targets [batch, pos] of the algorithm on ``base`` with ``variable`` from ``source``."""
        if variable is not None and variable != "output":
            self.check_variable(variable)
        if base.tokens.shape != source.tokens.shape:
            raise ValueError(
                f"base {tuple(base.tokens.shape)} and source {tuple(source.tokens.shape)} must have "
                "the same shape [batch, pos]"
            )
        if variable is None:
            return _last_position_targets(self.task.variables(base.tokens)["answer"], self.task.n_ctx)
        s = self.task.variables(source.tokens)
        return self.assign(base, variable, s["answer"] if variable == "output" else s[variable], positions)

    def assign(self, base: Batch, variable: str, values: Tensor, positions: Tensor | None = None) -> Tensor:
        """Targets [batch, pos] with ``variable`` := ``values`` where ``positions`` says (as ``intervene``).

        ``values``: for ``balance`` and ``negative`` [batch, pos] or [batch] (one value for every
        position), a balance in [-length, length] or a bool; for ``any_negative``,
        ``final_zero`` (bool) and ``output`` (0 or 1) [batch]. Everything downstream is
        recomputed from the mixed values.
        """
        if variable != "output":
            self.check_variable(variable)
        n_ctx = self.task.n_ctx
        b = self.task.variables(base.tokens)
        mask = self._mask(positions, base.tokens.shape)  # [batch, pos]
        last = mask[:, -1]  # [batch]
        values = torch.as_tensor(values)
        per_position = variable in ("balance", "negative")
        if per_position and values.ndim == 1:
            values = values.unsqueeze(-1).expand(base.tokens.shape)
        shape = base.tokens.shape if per_position else base.tokens.shape[:1]
        if values.shape != shape:
            raise ValueError(f"values for {variable!r} must have shape {tuple(shape)}"
                             + (" (or [batch])" if per_position else "") + f", got {tuple(values.shape)}")
        if variable == "balance":
            limit = self.task.length
            if values.is_floating_point() or (values.numel() and values.abs().max() > limit):
                raise ValueError(f"balance takes integer values in [-{limit}, {limit}] (strings of {limit} brackets)")
        elif values.numel() and not ((values == 0) | (values == 1)).all():
            raise ValueError(f"{variable} takes the values 0/1 (False/True), got {values.unique().tolist()}")

        final_zero, any_negative = b["final_zero"], b["any_negative"]
        if variable == "output":
            answer = torch.where(last, values.long(), b["answer"])
        else:
            if variable == "balance":
                balance = torch.where(mask, values.long(), b["balance"])
                any_negative = (balance < 0).any(-1)
                final_zero = balance[:, -1] == 0
            elif variable == "negative":
                any_negative = torch.where(mask, values.bool(), b["negative"]).any(-1)
            elif variable == "any_negative":
                any_negative = torch.where(last, values.bool(), b["any_negative"])
            else:  # final_zero
                final_zero = torch.where(last, values.bool(), b["final_zero"])
            answer = _answer(final_zero, any_negative)
        return _last_position_targets(answer, n_ctx)

    def _mask(self, positions: Tensor | None, shape: torch.Size) -> Tensor:
        if positions is None:
            return torch.ones(shape, dtype=torch.bool)
        if not isinstance(positions, Tensor) or positions.dtype != torch.bool:
            raise TypeError(f"positions must be a bool tensor [pos] or [batch, pos], or None; got {positions!r}")
        if positions.ndim not in (1, 2) or positions.shape[-1] != shape[1]:
            raise ValueError(
                f"positions must have shape [pos] or [batch, pos] with pos = n_ctx = {shape[1]}, "
                f"got {tuple(positions.shape)}"
            )
        return positions.expand(shape)
