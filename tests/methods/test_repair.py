"""Self-repair measured on the IOI model whose backup name mover was trained to take over."""

import pytest
import torch

from toylab import zoo
from toylab.methods.repair import check_negative, check_self_repair, self_repair


@pytest.fixture(scope="module")
def ioi():
    zm = zoo.load("ioi-siit")
    return zm, zm.task.counterfactual(256, 11)


def test_the_backup_takes_over_when_the_name_movers_are_knocked_out(ioi):
    zm, pair = ioi
    repair = zm.truth.claims["self_repair"]
    result = self_repair(zm.model, pair, repair["primaries"], repair["backups"])
    assert result.compensation > 0.15 and result.cost < 0.8
    assert abs(result.backups_clean) < 0.2 * result.clean.metric < result.backups_knocked_out
    # The figures are direct effects of the two runs: recompute the backup's by hand.
    assert result.backups_clean == pytest.approx(result.clean[repair["backups"][0]], rel=1e-4)
    # A head that is no backup compensates nothing: an inert head of the same layer.
    bystander = next(f"L3H{h}" for h in range(4) if f"L3H{h}" not in zm.truth.nodes and f"L3H{h}" not in repair["backups"])
    assert abs(self_repair(zm.model, pair, repair["primaries"], [bystander]).compensation) < 0.05
    assert "write back" in result.summary()


def test_the_checks_pass_for_the_truth_and_fail_for_wrong_heads(ioi):
    zm, pair = ioi
    repair = zm.truth.claims["self_repair"]
    assert all(c.passed for c in check_self_repair(zm.model, pair, repair["primaries"], repair["backups"], 200, 0))
    assert all(c.passed for c in check_negative(zm.model, pair, zm.truth.claims["negative"], 200, 0))
    # a name mover is not negative, and the negative head is no backup of the name movers
    assert not any(c.passed for c in check_negative(zm.model, pair, repair["primaries"][:1], 200, 0))
    wrong = check_self_repair(zm.model, pair, repair["primaries"], zm.truth.claims["negative"], 200, 0)
    assert not all(c.passed for c in wrong)


def test_mean_and_resample_knockouts_and_bad_input(ioi):
    zm, pair = ioi
    repair = zm.truth.claims["self_repair"]
    resampled = self_repair(zm.model, pair, repair["primaries"], repair["backups"], knockout="resample")
    assert resampled.knockout == "resample" and torch.isfinite(torch.tensor(resampled.compensation))
    with pytest.raises(ValueError, match="unknown knockout"):
        self_repair(zm.model, pair, repair["primaries"], repair["backups"], knockout="zero-ish")
    with pytest.raises(ValueError, match="both primary and backup"):
        self_repair(zm.model, pair, ["L2H0"], ["L2H0"])
    with pytest.raises(ValueError, match="is not a head"):
        self_repair(zm.model, pair, ["L2H0"], ["embed"])
    with pytest.raises(ValueError, match="at least one primary"):
        self_repair(zm.model, pair, [], ["L3H1"])
