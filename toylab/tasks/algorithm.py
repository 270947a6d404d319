"""High-level causal models: the algorithm a task is solved by, with intervenable variables.

An ``Algorithm`` says what the output of a task would be if one of its variables took the
value it has on another input. That is what interchange interventions need: to train a
circuit into chosen components (SIIT, ``toylab.truth.siit``) and to measure whether a
component carries a variable (interchange-intervention accuracy, ``toylab.truth.certify``).

Axis names: batch, pos.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from toylab.tasks.base import Batch, Task, run_methods_on_cpu


class Algorithm(ABC):
    """The high-level model of a task.

    ``variables`` names the intermediate variables. For a variable ``v``,
    ``intervene(base, source, v)`` returns the targets [batch, pos] (``IGNORE`` where
    unscored or undefined) that the algorithm outputs on ``base`` when ``v`` takes at
    every position the value it has on ``source``. Intervening on the output itself gives
    ``source.targets``; intervening on nothing gives ``base.targets``.
    """

    task: Task
    variables: tuple[str, ...]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        run_methods_on_cpu(cls)  # algorithms compute targets on the CPU, as tasks draw data there

    @abstractmethod
    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        """``n`` (base, source) pairs whose interventions are informative."""

    @abstractmethod
    def intervene(self, base: Batch, source: Batch, variable: str) -> Tensor:
        """Targets [batch, pos] of the algorithm on ``base`` with ``variable`` from ``source``."""

    def assign(self, base: Batch, variable: str, values: Tensor) -> Tensor:
        """Targets [batch, pos] of the algorithm on ``base`` with ``variable`` set to ``values``.

        ``values`` [batch] (or [batch, pos] for per-position variables) in the variable's
        range. What a steer aiming at "variable := value" must produce (``toylab.methods.steering``).
        Algorithms that support it override this.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot set a variable to a given value; "
                                  "steering targets need an algorithm with assign()")

    def check_variable(self, variable: str) -> None:
        if variable not in self.variables:
            raise KeyError(f"{type(self).__name__} has no variable {variable!r}; its variables: {list(self.variables)}")
