"""Lessons with checked exercises: the checker a lesson calls, and the runner tests use.

    from toylab.lessons import check, fast
    check("tour.resid_after_layer0", resid_after_layer0)   # prints a verdict and a hint

Each lesson is a folder in ``lessons/`` at the top of the repository: ``lesson.py`` (what a
learner runs), ``solutions.py``, ``checks.py`` (the checkers, loaded on first use) and, where
the lesson has any, ``fixtures.py`` (what the lesson, its checkers and its page in the lab
share). ``toylab lessons`` lists them with every exercise; ``toylab lessons 01 --notebook``
writes one as a Jupyter notebook (``toylab.lessons.notebook``, imported only by that command).
This package holds only the exercise framework (``exercise``, ``checking``), the runner and the
notebook writer.
"""

from toylab.lessons.exercise import (
    EXERCISES,
    Exercise,
    ExerciseFailed,
    Feedback,
    Wrong,
    check,
    exercise,
    exercises,
    fast,
    get,
)
from toylab.lessons.runner import (
    Lesson,
    LessonRun,
    cells,
    find,
    lesson_fixtures,
    lessons,
    load,
    run_lesson,
    solved_source,
)

__all__ = [
    "EXERCISES",
    "Exercise",
    "ExerciseFailed",
    "Feedback",
    "Lesson",
    "LessonRun",
    "Wrong",
    "cells",
    "check",
    "exercise",
    "exercises",
    "find",
    "fast",
    "get",
    "lesson_fixtures",
    "lessons",
    "load",
    "run_lesson",
    "solved_source",
]
