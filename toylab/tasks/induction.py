"""Induction: continue a segment that is being repeated, by looking up its first copy.

Axis names used in shape comments:
    batch  -- independent sequences
    pos    -- token position, 0 .. n_ctx - 1
    slot   -- index into one sequence's list of distinct ordinary tokens

The induction rule: at a token x that occurred earlier, predict the token that followed
x's earlier occurrence. A two-layer attention-only transformer learns it with a
previous-token head feeding an induction head (Olsson et al. 2022).
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
    SampledTask,
    check_count,
    seeded_generator,
)

BOS = 0


class Induction(SampledTask):
    """Repeated random segments; the second copy is predicted from the first.

    Encoding:
        token 0 is "BOS"; ordinary tokens are 1 .. n_tokens, token id ``i + 1`` named
        ``f"t{i}"``; d_vocab = d_vocab_out = n_tokens + 1.

        Every sequence has length exactly n_ctx::

            [BOS, prefix..., s_0 .. s_{L-1}, s_0 .. s_{L-1}]

        a segment ``s`` of length L repeated once at the end, after a random prefix of
        length ``n_ctx - 1 - 2L``. The first copy starts at ``first_start = n_ctx - 2L``,
        the second at ``n_ctx - L``. All prefix and segment tokens of one sequence are
        distinct, so each token of the second copy has exactly one earlier occurrence
        and the induction answer is unambiguous.

        L is drawn uniformly from ``[min_seg_len, max_seg_len]`` per sequence. Varying
        L varies the distance between the two copies, so a model cannot solve the task
        by attending a fixed number of positions back: it has to find the earlier copy.

    Targets: second-copy position j (0 .. L-2) holding s_j has target s_{j+1}; the last
    position has no next token and, like everything else, is IGNORE. So every sequence
    has L - 1 scored positions. Counterfactual (shuffled) sequences are scored at the
    same positions by the same rule: the token after x's earlier occurrence.
    """

    kind = "induction"

    def __init__(
        self,
        n_tokens: int = 64,
        n_ctx: int = 32,
        min_seg_len: int = 4,
        max_seg_len: int | None = None,
    ) -> None:
        for name, value in (("n_tokens", n_tokens), ("n_ctx", n_ctx), ("min_seg_len", min_seg_len)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if n_tokens < 2:
            raise ValueError(f"n_tokens must be >= 2, got {n_tokens}")
        if n_ctx < 5:
            raise ValueError(
                f"n_ctx must be >= 5 (BOS plus two copies of a segment of length >= 2), got {n_ctx}"
            )
        longest = (n_ctx - 1) // 2  # two copies must fit after BOS
        if max_seg_len is None:
            max_seg_len = longest
        if isinstance(max_seg_len, bool) or not isinstance(max_seg_len, int):
            raise ValueError(f"max_seg_len must be an int or None, got {max_seg_len!r}")
        if not 2 <= min_seg_len <= max_seg_len <= longest:
            raise ValueError(
                f"need 2 <= min_seg_len <= max_seg_len <= (n_ctx - 1) // 2 = {longest}, got "
                f"min_seg_len={min_seg_len}, max_seg_len={max_seg_len}; lower the segment "
                "lengths or raise n_ctx"
            )
        n_distinct = n_ctx - 1 - min_seg_len  # prefix + segment of the shortest-segment rows
        if n_tokens < n_distinct:
            raise ValueError(
                f"n_tokens={n_tokens} is too small: a sequence with n_ctx={n_ctx} and a segment "
                f"of length min_seg_len={min_seg_len} holds {n_distinct} distinct tokens. Raise "
                f"n_tokens to >= {n_distinct}, or lower n_ctx, or raise min_seg_len."
            )
        self.n_tokens = n_tokens
        self._n_ctx = n_ctx
        self.min_seg_len = min_seg_len
        self.max_seg_len = max_seg_len
        self._eval: dict[str, Batch] | None = None

    # ---- shape of the problem -------------------------------------------------------
    @property
    def d_vocab(self) -> int:
        return self.n_tokens + 1

    @property
    def d_vocab_out(self) -> int:
        return self.n_tokens + 1

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def token_names(self) -> list[str]:
        return ["BOS"] + [f"t{i}" for i in range(self.n_tokens)]

    # ---- generation -----------------------------------------------------------------
    def _sample_with_info(self, n: int, g: torch.Generator) -> tuple[Batch, dict[str, Tensor]]:
        check_count("n", n)
        n_ctx = self.n_ctx
        lo, hi = self.min_seg_len, self.max_seg_len
        seg_len = torch.randint(lo, hi + 1, (n,), generator=g)  # [batch]
        # Row-wise sampling without replacement: the indices of the k largest of
        # n_tokens i.i.d. uniforms are k distinct tokens in uniformly random order
        # (the head of an argsort, without sorting the whole row).
        n_slots = n_ctx - 1 - self.min_seg_len
        noise = torch.rand(n, self.n_tokens, generator=g)  # [batch, n_tokens]
        distinct = noise.topk(n_slots, dim=-1).indices + 1  # [batch, slot]

        # Position i >= 1 reads slot i - 1 up to the end of the first copy; the second
        # copy reads the same slots as the first, L positions earlier.
        pos = torch.arange(n_ctx)  # [pos]
        second_start = (n_ctx - seg_len).unsqueeze(-1)  # [batch, 1]
        slot = pos - 1 - torch.where(pos >= second_start, seg_len.unsqueeze(-1), 0)  # [batch, pos]
        tokens = distinct.gather(1, slot.clamp(min=0))  # [batch, pos]
        tokens[:, 0] = BOS

        # Within a clean repeat the induction answer is just the next token, so the
        # targets are the tokens shifted left, kept on the second copy. The last
        # position has no next token and stays IGNORE.
        targets = torch.full_like(tokens, IGNORE)  # [batch, pos]
        in_second = pos[:-1] >= second_start  # [batch, pos - 1]
        targets[:, :-1] = torch.where(in_second, tokens[:, 1:], IGNORE)
        info = {"seg_len": seg_len, "first_start": n_ctx - 2 * seg_len}
        return Batch(tokens, targets), info

    def _sample(self, n: int, g: torch.Generator) -> Batch:
        return self._sample_with_info(n, g)[0]

    # ---- data -----------------------------------------------------------------------
    def sample(self, n: int, seed: int) -> Batch:
        return self._sample(n, seeded_generator(seed))

    def sample_with_info(self, n: int, seed: int) -> tuple[Batch, dict[str, Tensor]]:
        """``sample(n, seed)`` plus where the segments are.

        info["seg_len"] is L per row ([batch]) and info["first_start"] the position of
        s_0's first copy ([batch]); the second copy starts at first_start + seg_len.
        """
        return self._sample_with_info(n, seeded_generator(seed))

    def segment_info(self, batch: Batch) -> dict[str, Tensor]:
        """Recover ``seg_len`` and ``first_start`` from any batch of this task's layout.

        Works for counterfactual batches too, since each row has L - 1 scored positions.
        """
        seg_len = batch.scored.sum(-1) + 1  # [batch]
        return {"seg_len": seg_len, "first_start": self.n_ctx - 2 * seg_len}

    def counterfactual(self, n: int, seed: int) -> CounterfactualPair:
        """Clean sequences, and the same with the first copy of the segment shuffled.

        The shuffle is never the identity, so every corrupted row differs from its
        clean row; single positions may still share an answer, which ``logit_diff``
        masks out.
        """
        g = seeded_generator(seed)
        clean, info = self._sample_with_info(n, g)
        seg_len, first_start = info["seg_len"], info["first_start"]  # [batch]
        n_ctx = self.n_ctx
        pos = torch.arange(n_ctx)  # [pos]
        start = first_start.unsqueeze(-1)  # [batch, 1]
        in_first = (pos >= start) & (pos < start + seg_len.unsqueeze(-1))  # [batch, pos]

        # Sorting these keys moves only first-copy positions, all of which get keys in
        # [first_start, first_start + 1): a random permutation of the first copy. Rows
        # whose draw left the copy in place are redrawn (at worst half of them, for L=2).
        order = pos.expand(n, n_ctx).clone()  # [batch, pos]
        redraw = torch.ones(n, dtype=torch.bool)  # [batch]
        while redraw.any():
            noise = torch.rand(int(redraw.sum()), n_ctx, generator=g)  # [redrawn, pos]
            keys = torch.where(in_first[redraw], start[redraw] + noise, pos.float())
            order[redraw] = keys.argsort(dim=-1)
            redraw = (order == pos).all(dim=-1)
        corrupted_tokens = clean.tokens.gather(1, order)  # [batch, pos]

        # Induction rule on the corrupted sequence: the second-copy token at i first
        # occurred (in the clean sequence) at i - L, and the shuffle moved it to
        # inverse[i - L]; its answer is whatever now follows it there, which for the
        # last slot of the first copy is s_0, the start of the second copy.
        inverse = torch.empty_like(order).scatter_(1, order, pos.expand(n, n_ctx))
        earlier = (pos - seg_len.unsqueeze(-1)).clamp(min=0)  # [batch, pos]
        follower = inverse.gather(1, earlier) + 1  # [batch, pos]
        # Only unscored positions can point past the end; clamp them to stay in range.
        answer = corrupted_tokens.gather(1, follower.clamp(max=n_ctx - 1))  # [batch, pos]
        targets = torch.where(clean.scored, answer, IGNORE)  # [batch, pos]

        return CounterfactualPair(
            clean=clean,
            corrupted=Batch(corrupted_tokens, targets),
            description="first occurrence of the repeated segment shuffled: "
            "induction now points to other tokens",
        )

    # ---- serialisation --------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {
            "n_tokens": self.n_tokens,
            "n_ctx": self.n_ctx,
            "min_seg_len": self.min_seg_len,
            "max_seg_len": self.max_seg_len,
        }


class InductionAlgorithm(Algorithm):
    """The induction algorithm as a two-step causal model.

    Variables (each defined at every position):
        previous_token   the token before position k (a previous-token head writes it at k)
        induction        the predicted next token at position i: the token at the k <= i
                         whose previous_token equals the token at i

    Interventions take a variable's values from a source sequence: with previous_token
    from source, position i predicts ``base[k]`` for the latest k <= i with
    ``source[k-1] == base[i]`` (IGNORE if there is none); with induction from source, the
    prediction is the source's own. Pairs are (clean, first copy shuffled), so the
    previous-token variable differs exactly where the first copy was moved.
    """

    variables = ("previous_token", "induction")

    def __init__(self, task: Induction) -> None:
        self.task = task

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        seed = int(torch.randint(2**62, (), generator=generator))
        pair = self.task.counterfactual(n, seed)
        return pair.clean, pair.corrupted

    def intervene(self, base: Batch, source: Batch, variable: str) -> Tensor:
        self.check_variable(variable)
        if variable == "induction":
            return torch.where(base.scored, source.targets, IGNORE)
        n = base.tokens.shape[1]
        pos = torch.arange(n)
        prev = torch.cat([torch.full_like(source.tokens[:, :1], -1), source.tokens[:, :-1]], dim=1)  # [batch, pos]
        match = prev.unsqueeze(1) == base.tokens.unsqueeze(2)  # [batch, query_pos, key_pos]
        match &= pos.unsqueeze(0) <= pos.unsqueeze(1)  # keys at or before the query
        key = torch.where(match, pos, -1).amax(dim=-1)  # [batch, query_pos], latest match
        answer = base.tokens.gather(1, key.clamp(min=0))
        return torch.where(base.scored & (key >= 0), answer, IGNORE)
