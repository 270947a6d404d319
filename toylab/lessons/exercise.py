"""Exercises and the checker that marks them.

An exercise is either a function the learner implements (checked against toylab's own
implementation on zoo models) or an interpretive answer ("which heads form the induction
circuit?", checked against the model's ground truth). Each has a difficulty and a time
estimate; wrong answers get a message that says what is wrong and a hint.

In a lesson::

    from toylab.lessons import check
    check("induction.previous_token_score", previous_token_score)

``check`` prints its verdict and returns a ``Feedback``. With ``TOYLAB_LESSONS_STRICT=1`` a
failed check raises, which is how the tests run every lesson with the reference solutions.

The checkers live beside their lesson, in ``lessons/NN_name/checks.py``, and register
themselves with ``@exercise`` when loaded. ``get`` loads them on first use of a prefix:
``check("tour.x", ...)`` loads the checks of the lesson whose exercises are ``tour.*``.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

DIFFICULTIES = ("easy", "medium", "hard")
# implement: write a function; answer: an interpretive question; build: train or construct
# something (an SAE, a model) that the checker measures on data it never saw.
KINDS = ("implement", "answer", "build")


class Wrong(Exception):
    """Raised by a checker: ``message`` says what is wrong, ``hint`` how to get it right."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class ExerciseFailed(AssertionError):
    """A failed check in strict mode (tests, or a learner who wants a hard stop)."""


@dataclass(frozen=True)
class Exercise:
    id: str  # "lesson.name", e.g. "induction.previous_token_score"
    title: str
    kind: str  # one of KINDS
    difficulty: str  # one of DIFFICULTIES
    minutes: int  # a typical learner's time
    checker: Callable[[Any], str]  # returns a success message or raises Wrong
    hint: str  # shown with any failure that has no more specific hint

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"exercise {self.id}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"exercise {self.id}: difficulty must be one of {DIFFICULTIES}")
        if "." not in self.id:
            raise ValueError(f"exercise id {self.id!r} must read 'lesson.name'")

    @property
    def lesson(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def card(self) -> str:
        """The line lessons print above the exercise: title, kind, difficulty, time."""
        return f"{self.title} ({self.kind}, {self.difficulty}, about {self.minutes} min)"


@dataclass(frozen=True)
class Feedback:
    exercise: str
    passed: bool
    message: str
    hint: str | None = None
    done: bool = True  # False while the learner's function still raises NotImplementedError

    def __str__(self) -> str:
        mark = "correct" if self.passed else "not yet" if not self.done else "wrong"
        text = f"[{mark}] {self.exercise}: {self.message}"
        return text + (f"\n  hint: {self.hint}" if self.hint and not self.passed else "")


EXERCISES: dict[str, Exercise] = {}


def exercise(id: str, title: str, kind: str, difficulty: str, minutes: int, hint: str):
    """Register a checker function as an exercise (the decorator form of ``Exercise``)."""

    def register(checker: Callable[[Any], str]) -> Callable[[Any], str]:
        old = EXERCISES.get(id)
        # The same checker of the same module again is that checks file reloaded (IPython's
        # autoreload in a notebook kernel): it replaces the old one. Anything else is a clash.
        if old is not None and (old.checker.__module__, old.checker.__qualname__) != \
                (checker.__module__, checker.__qualname__):
            raise ValueError(f"exercise {id!r} is registered twice")
        EXERCISES[id] = Exercise(id, title, kind, difficulty, minutes, checker, hint)
        return checker

    return register


def get(exercise_id: str) -> Exercise:
    """The exercise ``exercise_id``, its lesson's checks loaded if they were not yet."""
    if exercise_id not in EXERCISES:
        _load(exercise_id.split(".", 1)[0])
    if exercise_id not in EXERCISES:
        _load(None)  # for the nearest names
        nearest = difflib.get_close_matches(exercise_id, list(EXERCISES), n=3, cutoff=0.3)
        raise KeyError(f"unknown exercise {exercise_id!r}; nearest: {nearest or sorted(EXERCISES)}")
    return EXERCISES[exercise_id]


def check(exercise_id: str, answer: Any) -> Feedback:
    """Mark ``answer`` (a function or a value) for an exercise, print and return the verdict."""
    ex = get(exercise_id)
    try:
        if answer is None:  # the lesson's placeholder: not attempted yet, rather than wrong
            raise NotImplementedError
        feedback = Feedback(ex.id, True, ex.checker(answer))
    except Wrong as wrong:
        feedback = Feedback(ex.id, False, wrong.message, wrong.hint or ex.hint)
    except NotImplementedError:
        placeholder = "`None`" if answer is None else "`raise NotImplementedError`"
        feedback = Feedback(ex.id, False, f"not done yet: replace the {placeholder} with your answer, "
                            "then run this cell again", ex.hint, done=False)
    except Exception as err:  # the learner's code crashed: say where, never crash the lesson
        feedback = Feedback(ex.id, False, f"your code raised {type(err).__name__}: {err}", ex.hint)
    print(feedback)
    _log(feedback)
    if not feedback.passed and os.environ.get("TOYLAB_LESSONS_STRICT") == "1":
        raise ExerciseFailed(str(feedback))
    return feedback


def _log(feedback: Feedback) -> None:
    """Append the verdict to ``$TOYLAB_LESSONS_LOG`` so a test can see every check a lesson ran."""
    path = os.environ.get("TOYLAB_LESSONS_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(asdict(feedback)) + "\n")


def fast() -> bool:
    """True in fast mode (``TOYLAB_FAST=1``): lessons use smaller batches so tests run quickly."""
    return os.environ.get("TOYLAB_FAST") == "1"


def exercises() -> dict[str, Exercise]:
    """Every lesson's exercises, by id (loads every lesson's checks)."""
    _load(None)
    return dict(EXERCISES)


def _load(prefix: str | None) -> None:
    # A lesson's checks register themselves when loaded; they are loaded by path, lazily, so
    # that importing toylab never runs a file from lessons/.
    from toylab.lessons.runner import load_checks

    load_checks(prefix)
