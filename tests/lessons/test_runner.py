"""Every lesson runs top to bottom with the reference solutions, and without them too."""

import ast
import re
import subprocess
import sys

import pytest

from toylab.lessons import EXERCISES, cells, exercises, find, get, lessons, run_lesson, solved_source
from toylab.lessons.runner import LESSONS_DIR, PACKAGE

LESSONS = lessons()
ALLOWED_IMPORTS = {"toylab", "torch", "numpy", "matplotlib", "math", "itertools", "collections", "time",
                   "fixtures", "functools", "typing", "dataclasses"}  # fixtures: the lesson's own fixtures.py


def test_there_are_lessons_and_each_has_exercises():
    assert len(LESSONS) >= 3
    for lesson in LESSONS:
        assert lesson.exercises, f"{lesson.name} has no exercise"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda le: le.name)
def test_lesson_runs_with_reference_solutions_and_passes_every_check(lesson):
    run = run_lesson(lesson, solutions=True, fast=True)
    assert run.returncode == 0, run.output[-3000:]
    checked = [f.exercise for f in run.checks]
    assert sorted(checked) == sorted(lesson.exercises), "every exercise is checked exactly once"
    assert all(f.passed for f in run.checks), run.output[-3000:]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda le: le.name)
def test_lesson_as_shipped_runs_to_the_end_and_marks_nothing_correct(lesson):
    """A learner who runs the lesson before solving anything gets 'not yet', never a crash."""
    run = run_lesson(lesson, solutions=False, fast=True)
    assert run.returncode == 0, run.output[-3000:]
    assert len(run.checks) == len(lesson.exercises)
    assert not any(f.passed for f in run.checks), [str(f) for f in run.checks if f.passed]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda le: le.name)
def test_exercise_cards_in_the_prose_match_the_registry(lesson):
    """The heading above each exercise states its kind, difficulty and time, as registered."""
    text = lesson.read_text()
    for ex_id in lesson.exercises:
        ex = get(ex_id)
        assert f"({ex.kind}, {ex.difficulty}, about {ex.minutes} min)" in text, ex_id


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda le: le.name)
def test_solutions_live_apart_and_match_the_exercises(lesson):
    solved = {c.exercise for c in cells(lesson.solutions.read_text()) if c.exercise}
    assert solved == set(lesson.exercises), "one solution cell per exercise, no stale ones"
    assert solved_source(lesson) != lesson.read_text()


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda le: le.name)
def test_lessons_import_only_toylab_public_api(lesson):
    """Lesson, solutions, checks and fixtures import modules of the public API, and no name
    with a leading underscore from them (a checker leaning on a private helper breaks with it)."""
    files = [lesson.path, lesson.solutions, lesson.checks] + ([lesson.fixtures] if lesson.fixtures.is_file() else [])
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if isinstance(node, ast.ImportFrom) and node.level:  # checks.py: from .fixtures import ...
                assert node.module == "fixtures", f"{path} imports .{node.module}"
                names = []
            for name in (n for n in names if n != "__future__"):
                assert name.split(".")[0] in ALLOWED_IMPORTS, f"{path} imports {name}"
                assert not any(part.startswith("_") for part in name.split(".")), f"{path} imports private {name}"
                if name == "fixtures":
                    assert lesson.fixtures.is_file(), f"{path} imports fixtures, but there is no {lesson.fixtures}"
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path} imports private {private} from {node.module}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda le: le.name)
def test_each_lesson_is_a_triplet_with_one_exercise_prefix(lesson):
    assert lesson.path.is_file() and lesson.solutions.is_file() and lesson.checks.is_file()
    assert {ex.split(".")[0] for ex in lesson.exercises} == {lesson.prefix}
    checks = lesson.checks.read_text()
    for ex_id in lesson.exercises:  # the checkers of a lesson's exercises live in its own checks.py
        assert f'"{ex_id}"' in checks, f"{ex_id} is not registered in {lesson.checks}"


def test_every_registered_exercise_belongs_to_a_lesson():
    in_lessons = {ex for lesson in LESSONS for ex in lesson.exercises}
    assert set(exercises()) == in_lessons
    assert set(EXERCISES) == in_lessons


def test_percent_cells_round_trip():
    for lesson in LESSONS:
        text = lesson.read_text()
        assert "".join(c.render() for c in cells(text)).rstrip("\n") == text.rstrip("\n")
        assert re.match(r"# %% \[markdown\]\n# # Lesson \d+: ", text), f"{lesson.name} opens with its title"


def test_a_lesson_is_found_by_number_name_prefix_or_path():
    tour = LESSONS[0]
    assert tour.name == "01_tour" and tour.prefix == "tour"
    for name in ("01", "01_tour", "tour", str(tour.folder), str(tour.path)):
        assert find(name) == tour, name
    with pytest.raises(FileNotFoundError, match="no single lesson"):
        find("99")


def test_importing_toylab_lessons_runs_nothing_from_the_lessons_folder():
    """The checks load on first use, by path: importing the package reads no lesson file."""
    code = ("import sys, toylab, toylab.lessons; "
            f"assert not [m for m in sys.modules if m.startswith({PACKAGE!r})], 'a lesson loaded'; "
            "toylab.lessons.get('tour.head_output'); "
            f"loaded = sorted(m for m in sys.modules if m.startswith({PACKAGE!r})); "
            f"assert loaded == [{PACKAGE!r}, '{PACKAGE}.tour', '{PACKAGE}.tour.checks'], loaded")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_checks_and_fixtures_load_once_and_share_their_fixtures():
    from toylab.lessons import lesson_fixtures, load

    checks = load("superposition")
    fixtures = lesson_fixtures("04")
    assert load("04_superposition", "checks") is checks
    assert checks.sweep_model is fixtures.sweep_model  # the checker uses the lesson's fixture, not a copy
    assert fixtures.__file__ == str(LESSONS_DIR / "04_superposition" / "fixtures.py")
