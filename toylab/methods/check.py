"""A measured claim: a value, the bound it must meet, and whether it does.

Methods that test a claim (``fourier.check_key_frequencies``, the grokking story in
``progress.ProgressMeasures.phases``) return ``Check`` objects, and certificates
(``toylab.truth.certify``) are lists of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    op: str  # ">=" or "<="
    threshold: float

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold

    def __str__(self) -> str:
        mark = "pass" if self.passed else "FAIL"
        return f"{mark}  {self.name}: {self.value:.3f} (needs {self.op} {self.threshold:g})"
