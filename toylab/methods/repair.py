"""Self-repair: other heads take over when some are knocked out, and heads that write against the answer.

Axis names used in shape comments: batch (a counterfactual pair), as everywhere.

Wang et al. 2022 found *backup name movers* in GPT-2 small's IOI circuit: heads that do
little while the name movers work and copy the indirect object once the name movers are
knocked out; McGrath et al. 2023 (the Hydra effect) and Rushing & Nanda 2024 measure it in
general. It is why ablating a head can understate what the head does: the model repairs
itself, and a method that ranks heads by their ablation effect ranks the primaries too low.

``self_repair`` measures it with direct logit attribution (``lens.direct_logit_attribution``:
each head's output read along W_U[answer] - W_U[counterfactual answer] at the scored
positions), once in the clean run and once with the primaries knocked out:

    knockout "mean"      each primary outputs its mean over the corrupted inputs (Wang et al.
                         knock name movers out with their mean over the ABC distribution)
    knockout "resample"  row i takes the primary's output on corrupted row i

    compensation = (backups' direct effect knocked out - clean) / primaries' clean direct effect
    cost         = (logit difference clean - knocked out) / primaries' clean direct effect

the share of the primaries' lost direct effect that the backups write back, and what the
knockout costs as a share of what direct attribution says it should: below 1, the model
repaired itself (through the backups, or through a negative head that stops writing against
the answer, as GPT-2 small's negative name movers do). The same
measurement gives each head's direct effect, which is how a *negative* head (IOI's negative
name movers, writing against the answer) is shown: its direct effect is below zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from toylab import components as comp
from toylab.interventions import Estimate, ratio_estimate
from toylab.methods.ablation import ablate
from toylab.methods.check import Check
from toylab.methods.lens import DirectLogitAttribution, direct_logit_attribution
from toylab.models import Transformer
from toylab.tasks.base import CounterfactualPair

KNOCKOUTS = ("mean", "resample")
SELF_REPAIR_THRESHOLDS = {
    "compensation": 0.15,  # the backups write back at least this share of the primaries' lost direct effect
    "cost": 0.8,  # the knockout costs at most this share of the primaries' direct effect
    "quiet": 0.2,  # while the primaries work, the backups write at most this share of the logit difference, either way
    "negative": -0.05,  # a negative head's direct effect is below this share of the logit difference
}


@dataclass(frozen=True)
class SelfRepair:
    primaries: tuple[str, ...]
    backups: tuple[str, ...]
    knockout: str
    clean: DirectLogitAttribution  # every component's direct effect in the clean run
    knocked_out: DirectLogitAttribution  # the same with the primaries knocked out

    def direct(self, heads: Sequence[str], knocked_out: bool = False) -> Tensor:
        """The summed direct effect of ``heads`` on each pair's logit difference: [batch]."""
        dla = self.knocked_out if knocked_out else self.clean
        return sum(dla.per_row[dla.components.index(h)] for h in heads)

    @property
    def backups_clean(self) -> float:
        return float(self.direct(self.backups).mean())

    @property
    def backups_knocked_out(self) -> float:
        return float(self.direct(self.backups, knocked_out=True).mean())

    @property
    def primaries_clean(self) -> float:
        return float(self.direct(self.primaries).mean())

    @property
    def compensation(self) -> float:
        """(backups' direct effect knocked out - clean) / primaries' clean direct effect."""
        return (self.backups_knocked_out - self.backups_clean) / self.primaries_clean

    @property
    def cost(self) -> float:
        """(logit difference clean - knocked out) / primaries' clean direct effect."""
        return (self.clean.metric - self.knocked_out.metric) / self.primaries_clean

    def cost_estimate(self, replicates: int, seed: int) -> Estimate:
        lost = self.clean.metric_per_row - self.knocked_out.metric_per_row  # [batch]
        return ratio_estimate(lost, self.direct(self.primaries), replicates, seed)

    def compensation_estimate(self, replicates: int, seed: int) -> Estimate:
        gained = self.direct(self.backups, knocked_out=True) - self.direct(self.backups)  # [batch]
        return ratio_estimate(gained, self.direct(self.primaries), replicates, seed)

    def summary(self) -> str:
        p, b = "+".join(self.primaries), "+".join(self.backups)
        return (f"logit difference {self.clean.metric:.2f} clean, {self.knocked_out.metric:.2f} with {p} knocked out "
                f"({self.knockout}); direct effect of {p} {self.primaries_clean:.2f} clean; of the backups {b} "
                f"{self.backups_clean:.2f} clean and {self.backups_knocked_out:.2f} knocked out: they write back "
                f"{self.compensation:.0%} of what the primaries wrote; the knockout costs {self.cost:.0%} of it")


def self_repair(model: Transformer, pair: CounterfactualPair, primaries: Sequence[str], backups: Sequence[str],
                knockout: str = "mean") -> SelfRepair:
    """Direct effects in the clean run and with ``primaries`` knocked out (see the module docstring)."""
    if knockout not in KNOCKOUTS:
        raise ValueError(f"unknown knockout {knockout!r}; choose one of {KNOCKOUTS}")
    primaries, backups = tuple(primaries), tuple(backups)
    if not primaries or not backups:
        raise ValueError("self_repair needs at least one primary and one backup head")
    for head in (*primaries, *backups):
        comp.check_component(head, model.cfg)
        if comp.parse(head)[0] != "head":
            raise ValueError(f"{head!r} is not a head; self-repair is measured between heads such as 'L2H0'")
    if set(primaries) & set(backups):
        raise ValueError(f"{sorted(set(primaries) & set(backups))} cannot be both primary and backup")
    clean = direct_logit_attribution(model, pair)
    with ablate(model, list(primaries), knockout, pair.corrupted.tokens):
        knocked_out = direct_logit_attribution(model, pair)
    return SelfRepair(primaries, backups, knockout, clean, knocked_out)


def check_self_repair(model: Transformer, pair: CounterfactualPair, primaries: Sequence[str],
                      backups: Sequence[str], replicates: int, seed: int) -> list[Check]:
    """The backups take over (compensation), the knockout costs less than the primaries'
    direct effect (cost), and the backups are quiet while the primaries work, with bootstrap
    intervals over the pairs (``SELF_REPAIR_THRESHOLDS``)."""
    t = SELF_REPAIR_THRESHOLDS
    result = self_repair(model, pair, primaries, backups)
    p, b = "+".join(result.primaries), "+".join(result.backups)
    compensation, cost = result.compensation_estimate(replicates, seed), result.cost_estimate(replicates, seed)
    quiet = abs(ratio_estimate(result.direct(result.backups), result.clean.metric_per_row, replicates, seed))
    return [Check(f"self-repair: {b} write back this share of the direct effect of {p} knocked out", compensation.value,
                  ">=", t["compensation"], compensation.interval()),
            Check(f"self-repair: knocking {p} out costs this share of their direct effect", cost.value, "<=", t["cost"],
                  cost.interval()),
            Check(f"self-repair: |share of the clean logit difference written by {b} directly|", quiet.value, "<=",
                  t["quiet"], quiet.interval())]


def check_negative(model: Transformer, pair: CounterfactualPair, heads: Sequence[str], replicates: int,
                   seed: int) -> list[Check]:
    """Each head's direct effect is a negative share of the logit difference (it writes against the answer)."""
    dla = direct_logit_attribution(model, pair)
    checks = []
    for head in heads:
        share = ratio_estimate(dla.per_row[dla.components.index(head)], dla.metric_per_row, replicates, seed)
        checks.append(Check(f"negative head: share of the logit difference written by {head} directly", share.value,
                            "<=", SELF_REPAIR_THRESHOLDS["negative"], share.interval()))
    return checks


__all__ = ["KNOCKOUTS", "SelfRepair", "check_negative", "check_self_repair", "self_repair"]
