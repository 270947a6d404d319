"""Lessons: one folder each under ``lessons/``, found, loaded and run from here.

A lesson is a folder ``lessons/NN_name/`` holding

- ``lesson.py``: percent-cell Python that runs as a script (``python lessons/01_tour/lesson.py``)
  and opens as a notebook. Cells start with ``# %%`` (code) or ``# %% [markdown]`` (prose), the
  format of Jupytext, VS Code and PyCharm. An exercise cell carries its id as cell metadata,
  ``# %% exercise="induction.previous_token_score"``;
- ``solutions.py``: the reference solution of each exercise, the cell with the same header;
- ``checks.py``: the ``@exercise`` checkers of its exercises (ids ``prefix.name``, one prefix per
  lesson: ``tour``, ``induction``, ...);
- ``fixtures.py``, where the lesson has any: what the lesson, its checkers and its page in the
  lab all use (a toy model, a sweep, model names), defined once. The lesson imports it as
  ``from fixtures import ...`` (its own folder is on ``sys.path`` when it runs); the checkers as
  ``from .fixtures import ...``; the lab as ``lesson_fixtures("superposition")``.

Nothing here imports a lesson's files when ``toylab`` or ``toylab.lessons`` is imported:
``load`` reads them by path, on first use (``check("tour.x", ...)`` loads the tour's checks).
``solved_source`` splices the solutions in, and ``run_lesson`` runs a lesson in a fresh
interpreter and reports every check it made (``prepared_run`` writes out what it runs, for
whoever runs the script some other way).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from toylab.lessons.exercise import EXERCISES, Feedback

LESSONS_DIR = Path(__file__).resolve().parents[2] / "lessons"
PACKAGE = "toylab_lessons"  # lessons load as toylab_lessons.<prefix>.checks / .fixtures
_HEADER = re.compile(r"^# %%(?P<rest>.*)$")
_EXERCISE = re.compile(r'exercise="(?P<id>[\w.]+)"')


@dataclass(frozen=True)
class Cell:
    header: str  # the "# %% ..." line; "" for text before the first cell
    body: str

    @property
    def markdown(self) -> bool:
        return "[markdown]" in self.header

    @property
    def exercise(self) -> str | None:
        match = _EXERCISE.search(self.header)
        return match.group("id") if match else None

    def render(self) -> str:
        return (self.header + "\n" if self.header else "") + self.body


def cells(source: str) -> list[Cell]:
    """Split a percent-format file into cells (the text before the first header is a cell too)."""
    out: list[Cell] = []
    header, lines = "", []
    for line in source.splitlines():
        if _HEADER.match(line):
            if header or any(s.strip() for s in lines):
                out.append(Cell(header, "\n".join(lines) + "\n"))
            header, lines = line, []
        else:
            lines.append(line)
    out.append(Cell(header, "\n".join(lines) + "\n"))
    return out


@dataclass(frozen=True)
class Lesson:
    """One lesson's folder, ``lessons/NN_name/``, and the files in it."""

    folder: Path

    @property
    def name(self) -> str:  # "01_tour"
        return self.folder.name

    @property
    def number(self) -> str:  # "01"
        return self.name.split("_", 1)[0]

    @property
    def path(self) -> Path:
        """The lesson itself, the file a learner runs."""
        return self.folder / "lesson.py"

    @property
    def solutions(self) -> Path:
        return self.folder / "solutions.py"

    @property
    def checks(self) -> Path:
        return self.folder / "checks.py"

    @property
    def fixtures(self) -> Path:
        return self.folder / "fixtures.py"

    def read_text(self) -> str:
        return self.path.read_text()

    @cached_property
    def exercises(self) -> tuple[str, ...]:
        """The exercise ids, in the order the lesson's cells give them."""
        return tuple(c.exercise for c in cells(self.read_text()) if c.exercise)

    @cached_property
    def prefix(self) -> str:
        """What this lesson's exercise ids start with ("tour" for "tour.head_output")."""
        prefixes = {ex.split(".", 1)[0] for ex in self.exercises}
        if len(prefixes) > 1:
            raise ValueError(f"{self.path}: exercise ids with several prefixes {sorted(prefixes)}; one per lesson")
        return prefixes.pop() if prefixes else self.name.split("_", 1)[-1]

    def __str__(self) -> str:
        return str(self.path)


def lessons() -> list[Lesson]:
    """The lessons, in order."""
    if not LESSONS_DIR.is_dir():
        raise FileNotFoundError(
            f"no lessons folder at {LESSONS_DIR}; lessons ship with a source checkout "
            "(git clone, then pip install -e .)"
        )
    return [Lesson(p) for p in sorted(LESSONS_DIR.glob("[0-9][0-9]_*")) if (p / "lesson.py").is_file()]


def find(name: str | Path | Lesson) -> Lesson:
    """A lesson by number, folder name, exercise prefix or path: '02', '02_induction_heads',
    'induction', 'lessons/02_induction_heads' or 'lessons/02_induction_heads/lesson.py'."""
    if isinstance(name, Lesson):
        return name
    path = Path(name)
    if path.is_file() and path.name == "lesson.py":
        path = path.parent
    if path.is_dir() and (path / "lesson.py").is_file():
        return Lesson(path.resolve())
    text = str(name)
    matches = [le for le in lessons() if text in (le.name, le.number) or le.name.startswith(f"{text}_")]
    if not matches:
        matches = [le for le in lessons() if le.prefix == text]
    if len(matches) != 1:
        raise FileNotFoundError(f"no single lesson matches {text!r}; lessons: {[le.name for le in lessons()]}")
    return matches[0]


def solution_path(lesson: str | Path | Lesson) -> Path:
    return find(lesson).solutions


def solved_source(lesson: str | Path | Lesson) -> str:
    """The lesson with each exercise cell replaced by its reference solution."""
    lesson = find(lesson)
    solutions = {c.exercise: c for c in cells(lesson.solutions.read_text()) if c.exercise}
    out = []
    for cell in cells(lesson.read_text()):
        if cell.exercise:
            if cell.exercise not in solutions:
                raise KeyError(f"{lesson.solutions} has no solution cell for exercise {cell.exercise!r}")
            cell = solutions[cell.exercise]
        out.append(cell.render())
    return "".join(out)


# ---- loading a lesson's checks and fixtures by path ------------------------------------------


def _package(lesson: Lesson) -> str:
    """Register the lesson's folder as the package ``toylab_lessons.<prefix>`` (no file is run)."""
    if PACKAGE not in sys.modules:
        root = types.ModuleType(PACKAGE, "The lessons' checks and fixtures, loaded by toylab.lessons.load.")
        root.__path__ = []  # a package, whose children are registered here one by one
        sys.modules[PACKAGE] = root
    name = f"{PACKAGE}.{lesson.prefix}"
    if name not in sys.modules:
        package = types.ModuleType(name, f"lessons/{lesson.name}")
        package.__path__ = [str(lesson.folder)]  # so that `from .fixtures import x` finds the folder's file
        sys.modules[name] = package
    return name


def load(lesson: str | Path | Lesson, part: str = "checks") -> types.ModuleType:
    """The module ``lessons/NN_name/<part>.py`` ("checks" or "fixtures"), loaded once per process
    as ``toylab_lessons.<prefix>.<part>``."""
    lesson = find(lesson)
    name = f"{_package(lesson)}.{part}"
    if name in sys.modules:
        return sys.modules[name]
    path = lesson.folder / f"{part}.py"
    if not path.is_file():
        raise FileNotFoundError(f"lesson {lesson.name} has no {part}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def lesson_fixtures(lesson: str | Path | Lesson) -> types.ModuleType:
    """A lesson's ``fixtures.py`` (``lesson_fixtures("superposition")``): what its lesson, its
    checkers and its page in the lab share."""
    return load(lesson, "fixtures")


def load_checks(prefix: str | None = None) -> None:
    """Register the checkers of the lesson whose exercises start with ``prefix``; of every lesson
    when ``prefix`` is None. A prefix no lesson has loads nothing."""
    for lesson in lessons():
        if prefix is None or lesson.prefix == prefix:
            before = set(EXERCISES)
            try:
                load(lesson, "checks")
            except BaseException:  # a checks file that failed half-way: forget what it registered
                for key in set(EXERCISES) - before:
                    del EXERCISES[key]
                raise


# ---- running a lesson --------------------------------------------------------------------------


@dataclass(frozen=True)
class LessonRun:
    lesson: Lesson
    returncode: int
    output: str  # stdout and stderr together
    checks: list[Feedback]

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and all(f.passed for f in self.checks)


def run_lesson(lesson: str | Path | Lesson, solutions: bool = True, fast: bool = True, strict: bool | None = None,
               timeout: float = 600) -> LessonRun:
    """Run a lesson top to bottom in a fresh interpreter (as a learner's ``python lesson.py``).

    ``solutions`` splices in the reference solutions; ``strict`` (default: with solutions)
    makes a failed check stop the lesson.
    """
    with prepared_run(lesson, solutions, fast, strict) as job:
        proc = subprocess.run([sys.executable, str(job.script)], cwd=job.cwd, env=job.env, capture_output=True,
                              text=True, timeout=timeout)
        return job.result(proc.returncode, proc.stdout + proc.stderr)


@dataclass(frozen=True)
class PreparedRun:
    """What ``run_lesson`` runs, written out: the script in a temporary folder, its environment
    and the log its checks append to (``prepared_run``)."""

    lesson: Lesson
    script: Path  # the lesson's source, solutions spliced in or not, as a file to run
    cwd: Path  # the temporary folder the script runs from
    env: dict[str, str]  # the environment to run it in (the log, fast and strict modes, the lesson's folder on the path)
    log: Path  # where its checks are reported, one JSON line each

    def result(self, returncode: int, output: str) -> LessonRun:
        """The run's report, from its exit status, its output and the checks it logged."""
        checks = ([Feedback(**json.loads(line)) for line in self.log.read_text().splitlines()]
                  if self.log.exists() else [])
        return LessonRun(self.lesson, returncode, output, checks)


@contextmanager
def prepared_run(lesson: str | Path | Lesson, solutions: bool = True, fast: bool = True,
                 strict: bool | None = None) -> Iterator[PreparedRun]:
    """The script, folder and environment ``run_lesson`` runs a lesson with (its arguments), for
    whoever runs the script some other way; the folder is removed when the block ends."""
    lesson = find(lesson)
    source = solved_source(lesson) if solutions else lesson.read_text()
    strict = solutions if strict is None else strict
    with tempfile.TemporaryDirectory() as tmp:
        script, log = Path(tmp) / "lesson.py", Path(tmp) / "checks.jsonl"
        script.write_text(source)
        # The script runs from a copy, so put the lesson's folder on the path as running it in
        # place would (its `from fixtures import ...`).
        path = os.pathsep.join(p for p in (str(lesson.folder), os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, TOYLAB_LESSONS_LOG=str(log), MPLBACKEND="Agg", PYTHONPATH=path,
                   TOYLAB_FAST="1" if fast else "0", TOYLAB_LESSONS_STRICT="1" if strict else "0")
        yield PreparedRun(lesson, script, Path(tmp), env, log)
