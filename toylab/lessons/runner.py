"""Lesson files: percent-cell Python that runs as a script and opens as a notebook.

A lesson is ``lessons/NN_name.py``; cells start with ``# %%`` (code) or ``# %% [markdown]``
(prose), the format of Jupytext, VS Code and PyCharm. An exercise cell carries its id as cell
metadata, ``# %% exercise="induction.previous_token_score"``; the reference solution is the
cell with the same header in ``lessons/solutions/NN_name.py``. ``solved_source`` splices the
solutions in, and ``run_lesson`` runs a lesson in a fresh interpreter and reports every
check it made.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from toylab.lessons.exercise import Feedback

LESSONS_DIR = Path(__file__).resolve().parents[2] / "lessons"
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


def lessons() -> list[Path]:
    """The lesson files, in order."""
    if not LESSONS_DIR.is_dir():
        raise FileNotFoundError(
            f"no lessons folder at {LESSONS_DIR}; lessons ship with a source checkout "
            "(git clone, then pip install -e .)"
        )
    return sorted(LESSONS_DIR.glob("[0-9][0-9]_*.py"))


def find(name: str) -> Path:
    """A lesson by file name, stem or number: '02', '02_induction_heads' or the path."""
    path = Path(name)
    if path.is_file():
        return path
    matches = [p for p in lessons() if p.stem == name or p.stem.startswith(f"{name}_") or p.name == name]
    if len(matches) != 1:
        raise FileNotFoundError(f"no single lesson matches {name!r}; lessons: {[p.stem for p in lessons()]}")
    return matches[0]


def solution_path(lesson: Path) -> Path:
    return lesson.parent / "solutions" / lesson.name


def solved_source(lesson: str | Path) -> str:
    """The lesson with each exercise cell replaced by its reference solution."""
    lesson = find(str(lesson))
    solutions = {c.exercise: c for c in cells(solution_path(lesson).read_text()) if c.exercise}
    out = []
    for cell in cells(lesson.read_text()):
        if cell.exercise:
            if cell.exercise not in solutions:
                raise KeyError(f"{solution_path(lesson)} has no solution cell for exercise {cell.exercise!r}")
            cell = solutions[cell.exercise]
        out.append(cell.render())
    return "".join(out)


@dataclass(frozen=True)
class LessonRun:
    lesson: Path
    returncode: int
    output: str  # stdout and stderr together
    checks: list[Feedback]

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and all(f.passed for f in self.checks)


def run_lesson(lesson: str | Path, solutions: bool = True, fast: bool = True, strict: bool | None = None,
               timeout: float = 600) -> LessonRun:
    """Run a lesson top to bottom in a fresh interpreter (as a learner's ``python lesson.py``).

    ``solutions`` splices in the reference solutions; ``strict`` (default: with solutions)
    makes a failed check stop the lesson.
    """
    lesson = find(str(lesson))
    source = solved_source(lesson) if solutions else lesson.read_text()
    strict = solutions if strict is None else strict
    with tempfile.TemporaryDirectory() as tmp:
        script, log = Path(tmp) / lesson.name, Path(tmp) / "checks.jsonl"
        script.write_text(source)
        env = dict(os.environ, TOYLAB_LESSONS_LOG=str(log), MPLBACKEND="Agg",
                   TOYLAB_FAST="1" if fast else "0", TOYLAB_LESSONS_STRICT="1" if strict else "0")
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp, env=env, capture_output=True,
                              text=True, timeout=timeout)
        checks = [Feedback(**json.loads(line)) for line in log.read_text().splitlines()] if log.exists() else []
    return LessonRun(lesson, proc.returncode, proc.stdout + proc.stderr, checks)
