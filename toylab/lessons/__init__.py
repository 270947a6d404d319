"""Lessons with checked exercises: the checker a lesson calls, and the runner tests use.

    from toylab.lessons import check, fast
    check("tour.resid_after_layer0", resid_after_layer0)   # prints a verdict and a hint

Lesson files live in ``lessons/`` at the top of the repository; reference solutions in
``lessons/solutions/``. ``toylab lessons`` lists them with every exercise.
"""

from toylab.lessons.exercise import (
    EXERCISES,
    Exercise,
    ExerciseFailed,
    Feedback,
    Wrong,
    check,
    exercise,
    fast,
    get,
)
from toylab.lessons.runner import LessonRun, cells, find, lessons, run_lesson, solved_source

__all__ = [
    "EXERCISES",
    "Exercise",
    "ExerciseFailed",
    "Feedback",
    "LessonRun",
    "Wrong",
    "cells",
    "check",
    "exercise",
    "find",
    "fast",
    "get",
    "lessons",
    "run_lesson",
    "solved_source",
]
