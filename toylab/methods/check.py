"""A measured claim: a value, the bound it must meet, and whether it does.

Methods that test a claim (``fourier.check_key_frequencies``, the grokking story in
``progress.ProgressMeasures.phases``) return ``Check`` objects, and certificates
(``toylab.truth.certify``) are lists of them. A value measured on a sample carries its
confidence interval, and then the check passes only when the whole interval clears the
bound: a claim is not believed on the luck of one sample.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    op: str  # ">=" or "<="
    threshold: float
    interval: tuple[float, float] | None = None  # (low, high); None where the value is exact

    def __post_init__(self) -> None:
        if self.op not in (">=", "<="):
            raise ValueError(f"a check's op is '>=' or '<=', got {self.op!r}")

    @property
    def passed(self) -> bool:
        low, high = self.interval if self.interval is not None else (self.value, self.value)
        return low >= self.threshold if self.op == ">=" else high <= self.threshold

    @property
    def margin(self) -> float:
        """How far the interval's near end (the value, if exact) clears the bound; negative if it does not."""
        low, high = self.interval if self.interval is not None else (self.value, self.value)
        return low - self.threshold if self.op == ">=" else self.threshold - high

    def __str__(self) -> str:
        mark = "pass" if self.passed else "FAIL"
        ci = "" if self.interval is None else f" [{self.interval[0]:.3f}, {self.interval[1]:.3f}]"
        return f"{mark}  {self.name}: {self.value:.3f}{ci} (needs {self.op} {self.threshold:g})"


def seed_spread(values, digits: int = 3) -> str:
    """Figures over seeds as "mean ± std"; one figure alone (no spread to show); "n/a" where
    any is undefined (None), never averaged in."""
    values = list(values)
    if not values or any(v is None for v in values):
        return "n/a"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
