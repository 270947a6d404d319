"""Lesson 11's fixtures, shared by the lesson, its checkers and the lab's "11 Steering" page.

What each steer must do is never written here: it is the task's algorithm, through the target
``methods.steering_targets(task, truth)`` defines on each model (``target(zm)``).
"""

from typing import Any

from toylab import methods

MODEL = "factual-recall"  # the lesson's model: "relation := r1", the answer becomes table[subject, r1]
MODELS = ("factual-recall", "brackets-siit", "modadd-113")  # the zoo models steering targets are defined on
COMPARE_MODEL = "brackets-siit"  # exercise 11.5: "balance := 0"
# Prompts a steer is fitted on. Every value the steer aims at must occur among them: a := a + 1 on modadd-113
# aims at all 113 values of a, and 512 prompts miss one or two of them.
N_FIT = {"factual-recall": 512, "brackets-siit": 512, "modadd-113": 1024}
N = 256  # prompts each alpha is tuned on, and as many fresh ones the chosen alpha is graded on
SAE_STEPS = 300  # the SAE source's training steps (fit_steer's default is 1500)
# The lesson in fast mode (as the tests run it; never the checkers or the lab): half the prompts, half the SAE's
# steps. modadd-113 keeps its 1024 fitting prompts, which it needs to see every value of a.
N_FIT_FAST = {"factual-recall": 256, "brackets-siit": 256, "modadd-113": 1024}
N_FAST = 128
SAE_STEPS_FAST = 150
# The DAS source's training (das_config): fit_steer's default, 300 steps on 1024 pairs, takes about 5 s on
# brackets-siit; these reach the same held-out success (at least 0.96 there over twelve seeds) in a fifth of it.
DAS_STEPS = 100
DAS_PAIRS = 256
SOURCES = ("diff-in-means", "probe", "sae", "das", "truth")  # methods.STEER_SOURCES, in the order compared
SUCCESS_BAR = 0.9  # exercise 11.5: a steer that works
# Exercise 11.3: (subject, relation) of the prompts whose steered answers are predicted; one already asks for r1.
PREDICT_PROMPTS = ((5, 0), (12, 2), (30, 3), (7, 1), (41, 0), (19, 2))


def target(zm: Any) -> methods.SteeringTarget:
    """The one steering target toylab defines on the zoo model ``zm`` (with its truth: the ceiling steer too)."""
    (only,) = methods.steering_targets(zm.task, zm.truth).values()
    return only


def das_config(target: methods.SteeringTarget, seed: int = 0) -> methods.DASConfig:
    """How the DAS source is trained for ``target`` (``das_config=`` of fit_steer and compare_steering): a
    ``target.das_k``-dimensional subspace, DAS_STEPS steps on DAS_PAIRS pairs drawn with ``seed``."""
    return methods.DASConfig(k=target.das_k, steps=DAS_STEPS, n_train=DAS_PAIRS, batch_size=64, seed=seed)


def n_fit(name: str, fast: bool = False) -> int:
    """Prompts a steer on the zoo model ``name`` is fitted on (``fast``: in the lesson's fast mode)."""
    return (N_FIT_FAST if fast else N_FIT).get(name, 1024)
