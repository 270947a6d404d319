"""Lesson 9's fixtures, shared by the lesson, its checkers and the lab's "9 Why methods fail" page."""

from typing import Any

from toylab.truth.traps import TRAPS
from toylab.validate.leaderboard import TRAP_MARGIN

SEED = 0  # the trap seed the lesson works on (the checkers test implementations on the others)
# The hand-built circuit traps the lesson takes apart, one section each, and scores circuit methods on in its
# closing table (toylab.truth.traps may hold more).
LESSON_TRAPS = ("self-repair", "or-gate", "saturation", "narrow-switch", "cancellation")
# The featuriser traps it takes apart after them: the circuit is easy, where the variable lives within its node
# is not. They are scored by interchange-intervention accuracy (IIA), not by circuits.
VARIABLE_TRAPS = ("distributed",)
CODE_SITE = ("blocks.0.hook_mlp_out", -1)  # the distributed trap's code: MLP0's output at the last position
# methods.DASConfig's fields for the lesson's DAS on the distributed trap: k = 1, converged in ~1 s (the check
# asks for |cos| > 0.95 with the truth's direction, which the default lr reaches only after ~100 steps).
DAS_CONFIG = {"k": 1, "steps": 100, "lr": 0.05, "n_train": 256, "batch_size": 64}

# The baselines the lesson's closing table and the page start with: one of each family (node
# noising, node denoising, attribution patching, integrated gradients, greedy pruning).
# Together they fall into every trap, and on every trap one of them gets out.
METHODS = ("resample-ablation", "denoising", "eap", "eap-ig", "acdc")


def code_channels(truth: Any) -> list[int]:
    """The residual channels the distributed trap's code uses: those its variables' directions touch."""
    return sorted({i for v in truth.variables for row in v.basis for i, x in enumerate(row) if x != 0})


def model_name(trap: str) -> str:
    """The zoo name of a trap: "or-gate" -> "trap-or-gate"."""
    if trap not in TRAPS:
        raise ValueError(f"unknown trap {trap!r}; the traps are {list(TRAPS)}")
    return f"trap-{trap}"


def expected(trap: Any, method: str) -> str:
    """What the trap's truth predicts for ``method``: "falls in", "remedy" or ""."""
    return "falls in" if method in trap.falls_in else "remedy" if method in trap.remedies else ""


def shortfall_rows(board: Any) -> list[dict[str, Any]]:
    """One row per trap model and method of a ``toylab.validate.leaderboard.Leaderboard``:
    the shortfall (mean over seeds), the figure it fell most on, whether it fell in (at least
    ``TRAP_MARGIN``) and what the trap's truth expected."""
    rows = []
    for model, by_method in board.shortfalls().items():
        trap = board.traps[model]
        for method, (mean, _std, n, figure) in by_method.items():
            rows.append({"trap": model, "method": method, "shortfall": round(mean, 3), "on": figure,
                         "fell in": mean >= TRAP_MARGIN, "expected": expected(trap, method), "seeds": n})
    return rows
