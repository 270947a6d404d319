"""Every lesson runs top to bottom with the reference solutions, and without them too."""

import ast
import re

import pytest

from toylab.lessons import EXERCISES, cells, get, lessons, run_lesson, solved_source
from toylab.lessons.runner import solution_path

LESSONS = lessons()
ALLOWED_IMPORTS = {"toylab", "torch", "numpy", "matplotlib", "math", "itertools", "collections", "time"}


def exercise_ids(lesson):
    return [c.exercise for c in cells(lesson.read_text()) if c.exercise]


def test_there_are_lessons_and_each_has_exercises():
    assert len(LESSONS) >= 3
    for lesson in LESSONS:
        assert exercise_ids(lesson), f"{lesson.name} has no exercise"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_with_reference_solutions_and_passes_every_check(lesson):
    run = run_lesson(lesson, solutions=True, fast=True)
    assert run.returncode == 0, run.output[-3000:]
    checked = [f.exercise for f in run.checks]
    assert sorted(checked) == sorted(exercise_ids(lesson)), "every exercise is checked exactly once"
    assert all(f.passed for f in run.checks), run.output[-3000:]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_as_shipped_runs_to_the_end_and_marks_nothing_correct(lesson):
    """A learner who runs the lesson before solving anything gets 'not yet', never a crash."""
    run = run_lesson(lesson, solutions=False, fast=True)
    assert run.returncode == 0, run.output[-3000:]
    assert len(run.checks) == len(exercise_ids(lesson))
    assert not any(f.passed for f in run.checks), [str(f) for f in run.checks if f.passed]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_exercise_cards_in_the_prose_match_the_registry(lesson):
    """The heading above each exercise states its kind, difficulty and time, as registered."""
    text = lesson.read_text()
    for ex_id in exercise_ids(lesson):
        ex = get(ex_id)
        assert f"({ex.kind}, {ex.difficulty}, about {ex.minutes} min)" in text, ex_id


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_solutions_live_apart_and_match_the_exercises(lesson):
    solved = {c.exercise for c in cells(solution_path(lesson).read_text()) if c.exercise}
    assert solved == set(exercise_ids(lesson)), "one solution cell per exercise, no stale ones"
    assert solved_source(lesson) != lesson.read_text()


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lessons_import_only_toylab_public_api(lesson):
    for path in (lesson, solution_path(lesson)):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] in ALLOWED_IMPORTS, f"{path.name} imports {name}"
                assert not any(part.startswith("_") for part in name.split(".")), f"{path.name} imports private {name}"


def test_every_registered_exercise_belongs_to_a_lesson():
    in_lessons = {ex for lesson in LESSONS for ex in exercise_ids(lesson)}
    get(next(iter(in_lessons)))  # loads the registry
    assert set(EXERCISES) == in_lessons


def test_percent_cells_round_trip():
    for lesson in LESSONS:
        text = lesson.read_text()
        assert "".join(c.render() for c in cells(text)).rstrip("\n") == text.rstrip("\n")
        assert re.match(r"# %% \[markdown\]\n# # Lesson \d+: ", text), f"{lesson.name} opens with its title"
