"""Every lesson runs top to bottom with the reference solutions, and without them too."""

import ast
import json
import re
import subprocess
import sys

import pytest

from toylab.lessons import EXERCISES, cells, exercises, find, get, lessons, run_lesson, solved_source
from toylab.lessons.runner import LESSONS_DIR, PACKAGE, Lesson, LessonRun, prepared_run

LESSONS = lessons()
ALLOWED_IMPORTS = {"toylab", "torch", "numpy", "matplotlib", "math", "itertools", "collections", "time",
                   "fixtures", "functools", "typing", "dataclasses"}  # fixtures: the lesson's own fixtures.py


def test_there_are_lessons_and_each_has_exercises():
    assert len(LESSONS) >= 3
    for lesson in LESSONS:
        assert lesson.exercises, f"{lesson.name} has no exercise"


def _passes_every_check(lesson, run) -> None:
    assert run.returncode == 0, run.output[-3000:]
    checked = [f.exercise for f in run.checks]
    assert sorted(checked) == sorted(lesson.exercises), "every exercise is checked exactly once"
    assert all(f.passed for f in run.checks), run.output[-3000:]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda le: le.name)
def test_lesson_runs_with_reference_solutions_and_passes_every_check(lesson, lesson_forks):
    """In a forked child (test_a_forked_run_is_a_script_run: the same as a fresh interpreter's run)."""
    _passes_every_check(lesson, lesson_forks(lesson, solutions=True))


def test_the_tour_with_its_solutions_passes_in_a_fresh_interpreter_too():
    """run_lesson itself, as `toylab lessons 01 --run --solutions` runs it: python, the script, nothing preloaded."""
    _passes_every_check(LESSONS[0], run_lesson(LESSONS[0], solutions=True, fast=True))


# The shipped lessons run as scripts too, but each in a child forked from one interpreter that
# imported torch, matplotlib and toylab once (the seconds every fresh interpreter pays for them):
# a process of its own per run, running the script as `python lesson.py` would, less the import.
# (The runs with the reference solutions above go through run_lesson: a fresh interpreter each.)
_FORK_SERVER = r"""
import atexit, json, os, runpy, signal, sys, traceback
os.environ["MPLBACKEND"] = "Agg"
import torch, numpy, matplotlib.pyplot, toylab, toylab.lessons  # what every lesson imports first
base_path = sys.path[1:]  # less -c's ""
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:  # as `python script` in the job's folder and environment
        code = 1
        try:
            signal.alarm(job["timeout"])
            null, out = os.open(os.devnull, os.O_RDONLY), os.open(job["output"], os.O_WRONLY | os.O_CREAT)
            os.dup2(null, 0), os.dup2(out, 1), os.dup2(out, 2)
            os.chdir(job["cwd"])
            os.environ.clear()
            os.environ.update(job["env"])
            path = [p for p in job["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
            sys.path[:] = [os.path.dirname(job["script"]), *path, *[p for p in base_path if p not in path]]
            sys.argv = [job["script"]]
            try:
                runpy.run_path(job["script"], run_name="__main__")
                code = 0
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
                if not isinstance(stop.code, (int, type(None))):
                    print(stop.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
            atexit._run_exitfuncs()
        finally:
            try:
                sys.stdout.flush(), sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
"""


@pytest.fixture(scope="module")
def lesson_forks(tmp_path_factory):
    """``run(lesson, solutions)``: the lesson run as run_lesson runs it (same script, folder and
    environment), in a child of the fork server; its stdout and stderr together, in order."""
    server = subprocess.Popen([sys.executable, "-c", _FORK_SERVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    outputs = tmp_path_factory.mktemp("lesson-output")

    def run(lesson, solutions: bool, fast: bool = True, timeout: int = 600) -> LessonRun:
        with prepared_run(lesson, solutions=solutions, fast=fast) as job:
            output = outputs / f"{job.lesson.name}-{'solved' if solutions else 'shipped'}.txt"
            server.stdin.write(json.dumps({"script": str(job.script), "cwd": str(job.cwd), "env": job.env,
                                           "output": str(output), "timeout": timeout}) + "\n")
            server.stdin.flush()
            reply = server.stdout.readline()
            assert reply, f"the fork server stopped with {server.wait()}"
            return job.result(json.loads(reply)["returncode"], output.read_text(errors="replace"))

    yield run
    server.stdin.close()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def test_a_forked_run_is_a_script_run(tmp_path, lesson_forks):
    """What the shipped runs below rely on: a forked run reports what run_lesson's fresh
    interpreter does (exit status, output, crashes) and runs the script as __main__, from its
    folder, with the lesson's own folder on the path and run_lesson's environment."""
    folder = tmp_path / "99_probe"
    folder.mkdir()
    (folder / "fixtures.py").write_text("VALUE = 7\n")
    probes = {
        "import os, sys\nfrom fixtures import VALUE\n"
        "print(__name__, VALUE, sys.argv[0] == os.path.join(os.getcwd(), 'lesson.py'), os.environ['TOYLAB_FAST'])\n"
        "raise SystemExit(3)\n": (3, "__main__ 7 True 1"),
        "print('before')\nraise ValueError('boom')\n": (1, "ValueError: boom"),
    }
    for source, (returncode, says) in probes.items():
        (folder / "lesson.py").write_text(source)
        for run in (lesson_forks(Lesson(folder), solutions=False), run_lesson(Lesson(folder), solutions=False)):
            assert run.returncode == returncode and says in run.output, run.output


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda le: le.name)
def test_lesson_as_shipped_runs_to_the_end_and_marks_nothing_correct(lesson, lesson_forks):
    """A learner who runs the lesson before solving anything gets 'not yet', never a crash."""
    run = lesson_forks(lesson, solutions=False)
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
