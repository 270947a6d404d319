"""Lesson 10's fixtures, shared by the lesson, its checkers and the lab's "10 Indirect object identification" page.

Which head plays which part is always read from the model's truth, never written here: the
roles of its nodes (``truth.nodes``) and its claims (``truth.claims["self_repair"]`` for the
backup, ``truth.claims["negative"]`` for the negative name mover).
"""

from typing import Any

import torch

from toylab import zoo
from toylab.tasks import IGNORE, Batch, CounterfactualPair

MODEL = "ioi-siit"  # the zoo's IOI model: the circuit of Wang et al. (2022) trained in by SIIT
SEED = zoo.recipe(MODEL).seeds[0]  # the seed the lesson and the page start on: the recipe's own
KNOCKOUT = "mean"  # Wang et al. knock the name movers out with their mean over the ABC distribution
KNOCKOUT_PAIRS = 64  # random ABC prompts a knockout of one prompt takes its mean over (knockout_pair)
# The roles of the truth's nodes, in the order the information flows.
ROLES = ("duplicate-token", "s-inhibition", "name-mover", "negative-name-mover")
BACKUP_ROLE = "backup-name-mover"  # a claim of the truth (self-repair), not a node of its circuit


def role_heads(truth: Any, role: str) -> list[str]:
    """The heads the truth gives ``role`` (one of ``ROLES``), in layer order."""
    return sorted(node for node, r in truth.nodes.items() if r == role and node.startswith("L"))


def name_movers(truth: Any) -> list[str]:
    return role_heads(truth, "name-mover")


def backups(truth: Any) -> list[str]:
    """The backup name movers: the heads that take over when the name movers are knocked out."""
    return list(truth.claims.get("self_repair", {}).get("backups", []))


def negative_heads(truth: Any) -> list[str]:
    """The heads that write against the answer (negative name movers)."""
    return list(truth.claims.get("negative", []))


def head_roles(truth: Any) -> dict[str, str]:
    """Every head the truth names, with its part: the circuit's roles, then the claims' backups."""
    roles = {node: role for node, role in truth.nodes.items() if node.startswith("L")}
    for head in negative_heads(truth):
        roles.setdefault(head, "negative-name-mover")
    for head in backups(truth):
        roles[head] = BACKUP_ROLE
    return dict(sorted(roles.items()))


def head_grid(values: dict[str, float], cfg: Any) -> torch.Tensor:
    """Per-head values (keyed "L{layer}H{head}") as a [layer, head] grid; heads not given are 0."""
    return torch.tensor([[float(values.get(f"L{layer}H{head}", 0.0)) for head in range(cfg.n_heads)]
                         for layer in range(cfg.n_layers)])


def abc_pair(task: Any, template: int, io: int, s: int, order: int, place: int = 0, obj: int = 0) -> CounterfactualPair:
    """One prompt and its ABC counterfactuals: the clean prompt once per third name C (every name that is
    neither IO nor S), the second mention of S replaced by C. The metric contrasts IO with S, as
    ``task.counterfactual(n, seed, "abc")`` does, and a mean over the corrupted rows is the mean over the ABC
    distribution of this prompt. ``order``: 0 for ABBA (IO first), 1 for BABA."""
    if io == s:
        raise ValueError("IO and S must be different names")
    others = torch.tensor([c for c in range(task.n_names) if c not in (io, s)])
    k = len(others)
    fields = {"template": torch.full((k,), template), "io": torch.full((k,), io), "s": torch.full((k,), s),
              "order": torch.full((k,), order), "place": torch.full((k,), place), "obj": torch.full((k,), obj)}
    clean = task.make_batch(**fields)
    corrupted = task.make_batch(**fields, second=others).tokens
    contrast = torch.where(clean.scored, task.name_token(s), IGNORE)  # S at the answer position
    return CounterfactualPair(clean, Batch(corrupted, contrast),
                              "the second mention of S replaced by each third name C (ABC)")


def knockout_pair(task: Any, template: int, io: int, s: int, order: int, place: int = 0, obj: int = 0,
                  n: int = KNOCKOUT_PAIRS, seed: int = 0) -> CounterfactualPair:
    """One prompt (repeated ``n`` times) against ``n`` ABC prompts drawn from the task (every template, random
    names, order, place and object): the reference ``self_repair``/``methods.ablate`` knock components out with.
    The mean over them is Wang et al.'s mean over the ABC distribution, which favours no name, and the knockout the
    model's certificate measures (``task.counterfactual``'s pairs); the mean over the prompt's own ABC
    counterfactuals (``abc_pair``) would still carry its IO and S. The metric contrasts the prompt's IO with its S."""
    if io == s:
        raise ValueError("IO and S must be different names")
    full = {"template": torch.full((n,), template), "io": torch.full((n,), io), "s": torch.full((n,), s),
            "order": torch.full((n,), order), "place": torch.full((n,), place), "obj": torch.full((n,), obj)}
    clean = task.make_batch(**full)
    reference = task.counterfactual(n, seed).corrupted.tokens
    contrast = torch.where(clean.scored, task.name_token(s), IGNORE)
    return CounterfactualPair(clean, Batch(reference, contrast),
                              f"the prompt against {n} ABC prompts of the task (a knockout's reference)")
