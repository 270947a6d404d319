"""Attention-head detectors: how much each head attends where a known head type would.

Axis names used in shape comments:
    batch, pos        as everywhere (query_pos / key_pos for the two ends of attention)
    layer, head       a head's address

Each score is the mean attention probability, over the query positions where the head
type is defined, on the key position that type attends to (Olsson et al. 2022; ARENA 1.2):

    previous-token   query i -> key i - 1                         (i >= 1)
    duplicate-token  query i -> the earlier key j < i with tokens[j] == tokens[i]
    induction        query i -> key j + 1 for that earlier j      (j + 1 <= i)

A task may define head types of its own (``task.attention_targets(tokens)``, e.g. IOI's
name movers): pass ``task=`` to score them.

Scores lie in [0, 1]; a perfect head of that type scores 1. A score is correlational: it
says where a head looks, not whether the model uses what it reads (the zoo's constructed
model has decoys that score high and do nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from toylab.models import Transformer
from toylab.tasks import Task

DETECTORS = ("previous-token", "duplicate-token", "induction")


@dataclass(frozen=True)
class HeadScores:
    detector: str
    scores: Tensor  # [layer, head]

    def __getitem__(self, head: str) -> float:
        """The score of a head by component id, e.g. ``scores["L1H2"]``."""
        from toylab.components import parse

        kind, layer, index = parse(head)
        if kind != "head":
            raise ValueError(f"{head!r} is not a head id such as 'L1H2'")
        return float(self.scores[layer, index])

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` highest-scoring heads as (id, score), best first."""
        flat = self.scores.flatten()
        order = flat.argsort(descending=True)[:k]
        n_heads = self.scores.shape[1]
        return [(f"L{int(i) // n_heads}H{int(i) % n_heads}", float(flat[i])) for i in order]


def detectors_of(task: Task | None = None) -> tuple[str, ...]:
    """The detectors that apply to ``task``'s inputs: the token rules and the task's own."""
    return DETECTORS + tuple(getattr(task, "detectors", ()))


def target_positions(tokens: Tensor, detector: str, task: Task | None = None) -> Tensor:
    """For each query position, the key position the detector's head type attends to.

    Returns [batch, query_pos] int64, -1 where the head type is undefined at that query.
    A detector that is not a token rule is looked up in ``task.attention_targets``.
    """
    if detector not in DETECTORS:
        own = task.attention_targets(tokens.cpu()) if hasattr(task, "attention_targets") else {}
        if detector not in own:
            raise ValueError(f"unknown detector {detector!r}; choose one of {detectors_of(task)}"
                             + ("" if task is not None else " (task-defined ones need task=)"))
        return own[detector].to(tokens.device)
    batch, n = tokens.shape
    pos = torch.arange(n, device=tokens.device)
    if detector == "previous-token":
        target = (pos - 1).expand(batch, n).clone()  # [batch, query_pos]
        return target
    same = tokens.unsqueeze(2) == tokens.unsqueeze(1)  # [batch, query_pos, key_pos]
    earlier = same & (pos.unsqueeze(1) > pos.unsqueeze(0))  # key strictly before query
    # The most recent earlier occurrence: largest key index with a match.
    key = torch.where(earlier, pos, torch.full_like(pos, -1)).amax(dim=-1)  # [batch, query_pos]
    if detector == "duplicate-token":
        return key
    return torch.where(key >= 0, key + 1, key)


@torch.no_grad()
def head_scores(model: Transformer, tokens: Tensor, detector: str, task: Task | None = None) -> HeadScores:
    """Mean attention to the detector's target position, per head: scores [layer, head]."""
    sums, counts = row_scores(model, tokens, detector, task)  # [batch, layer, head], [batch]
    return HeadScores(detector, sums.sum(0) / counts.sum())  # [layer, head]


@torch.no_grad()
def row_scores(model: Transformer, tokens: Tensor, detector: str,
               task: Task | None = None) -> tuple[Tensor, Tensor]:
    """``head_scores`` before averaging: per row, the attention summed over its defined
    queries [batch, layer, head], and how many queries are defined [batch]."""
    tokens = model._check_tokens(tokens)
    target = target_positions(tokens, detector, task)  # [batch, query_pos]
    valid = target >= 0
    if not valid.any():
        raise ValueError(f"no query position in these tokens has a {detector} target "
                         "(induction and duplicate-token need repeated tokens)")
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names=names)
    sums = []
    for name in names:
        pattern = cache[name]  # [batch, head, query_pos, key_pos]
        index = target.clamp(min=0)[:, None, :, None].expand(-1, pattern.shape[1], -1, 1)
        attn = pattern.gather(-1, index).squeeze(-1)  # [batch, head, query_pos]
        sums.append((attn * valid[:, None]).sum(dim=2))  # [batch, head]
    return torch.stack(sums, dim=1), valid.sum(-1)  # [batch, layer, head], [batch]


def uniform_score(tokens: Tensor, detector: str, task: Task | None = None) -> float:
    """What a head attending uniformly over the causal context scores on ``tokens``: the
    baseline a role's score must be read against (query i gives each key 1 / (i + 1))."""
    target = target_positions(tokens, detector, task)  # [batch, query_pos]
    valid = target >= 0
    if not valid.any():
        raise ValueError(f"no query position in these tokens has a {detector} target")
    share = 1.0 / torch.arange(1, tokens.shape[1] + 1, dtype=torch.float64, device=tokens.device)  # [query_pos]
    return float((share * valid).sum() / valid.sum())
