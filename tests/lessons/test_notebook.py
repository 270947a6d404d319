"""Lessons as Jupyter notebooks: every lesson converts, the tour runs in a kernel with the
reference solutions and without them, and `toylab lessons --notebook` keeps a learner's edits."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import nbformat
import pytest

from toylab.cli import main
from toylab.lessons import cells, lessons, solved_source
from toylab.lessons import notebook as nbmod

LESSONS = lessons()
TOUR = LESSONS[0]  # the smallest lesson: its notebook runs in about 5 s in fast mode


def _code(cell) -> str:
    """A cell's source as the script has it (the notebook ends a bare check(...) with ';')."""
    return re.sub(r"\);$", ")", cell.source.rstrip(), flags=re.MULTILINE)


@pytest.mark.parametrize("solutions", [False, True], ids=["shipped", "solutions"])
def test_every_lesson_converts_with_its_markdown_exercise_and_check_cells(solutions):
    for lesson in LESSONS:
        nb = nbmod.notebook(lesson, solutions=solutions)
        nbformat.validate(nb)
        source = solved_source(lesson) if solutions else lesson.read_text()
        script = [c for c in cells(source) if c.header]
        setup = [c for c in nb.cells if c.metadata.get("toylab") == "setup"]
        body = [c for c in nb.cells if c.metadata.get("toylab") != "setup"]
        assert len(setup) == 1 and nb.cells.index(setup[0]) == 1, "the setup cell follows the title"
        assert [c.cell_type for c in body] == ["markdown" if c.markdown else "code" for c in script], lesson.name
        for cell, original in zip(body, script):
            if cell.cell_type == "markdown":  # the prose, without its leading "# "
                assert cell.source.splitlines()[0] in original.body, lesson.name
            else:
                assert _code(cell) == original.body.strip(), (lesson.name, cell.id)
        exercises = [c for c in body if c.metadata.get("exercise")]
        assert tuple(c.metadata["exercise"] for c in exercises) == lesson.exercises
        assert all("exercise" in c.metadata["tags"] for c in exercises)
        code = "\n".join(c.source for c in body if c.cell_type == "code")
        checked = re.findall(r'^check\("([\w.]+)"', code, re.MULTILINE)
        assert sorted(checked) == sorted(lesson.exercises), f"{lesson.name}: every check(...) cell is kept"
        assert nb.metadata["kernelspec"]["name"] == "python3" and "jupytext" not in nb.metadata
        assert nb.metadata["toylab"]["solutions"] is solutions
    assert nbmod.notebook_text(TOUR, solutions) == nbmod.notebook_text(TOUR, solutions), "deterministic text"


def test_the_tour_notebook_runs_with_the_solutions_and_passes_every_check(tmp_path, capsys):
    # As a learner gets it: written by the command into a folder far from the lesson's.
    assert main(["lessons", "01", "--notebook", "--solutions", "--out", str(tmp_path / "nb")]) == 0
    nb = nbformat.read(tmp_path / "nb" / "01_tour.solutions.ipynb", as_version=4)
    run = nbmod.execute(TOUR, solutions=True, fast=True, timeout=120, nb=nb)
    assert run.returncode == 0, run.output[-3000:]
    assert sorted(f.exercise for f in run.checks) == sorted(TOUR.exercises), "every exercise is checked once"
    assert all(f.passed for f in run.checks), run.output[-3000:]
    assert run.output.count("[correct]") == len(TOUR.exercises)
    outputs = [o for c in run.notebook.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "toylab.viz figures show as images"
    assert "Feedback(" not in run.output, "a check cell prints its verdict once, as in the script"


def test_the_tour_notebook_unsolved_says_not_yet_and_the_checker_works_in_the_kernel():
    """Shipped: 'not yet', no crash. Then, in the same kernel, what a learner does: re-run
    cells (the setup cell, a check), redefine a function and check it again, reload checks."""
    exercise = "tour.head_output"
    solution = next(c.body for c in cells(TOUR.solutions.read_text()) if c.exercise == exercise)
    nb = nbmod.notebook(TOUR, solutions=False)
    setup = next(c for c in nb.cells if c.metadata.get("toylab") == "setup")
    check_cell = next(c for c in nb.cells if c.source.startswith(f'check("{exercise}"'))
    new = nbformat.v4.new_code_cell
    nb.cells += [
        new(check_cell.source),  # re-run, unchanged: still not yet
        new(solution), new(check_cell.source),  # the learner's redefinition, checked: correct
        new(setup.source),  # the setup cell again: the folder on the path once
        new("import importlib\nfrom toylab.lessons import fast, get\n"
            f"importlib.reload(importlib.import_module(get('{exercise}').checker.__module__))  # %autoreload's\n"
            "print('folder on path', sys.path.count(LESSON_FOLDER), 'fast', fast())"),
        new(check_cell.source),
    ]
    run = nbmod.execute(TOUR, solutions=False, fast=True, timeout=120, nb=nb)
    assert run.returncode == 0, run.output[-3000:]
    outputs = [o for c in run.notebook.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"], run.output[-3000:]
    assert "not yet" in run.output
    first = run.checks[:len(TOUR.exercises)]
    assert [f.exercise for f in first] == list(TOUR.exercises) and not any(f.passed for f in first)
    again = [f for f in run.checks[len(TOUR.exercises):]]
    assert [(f.exercise, f.passed) for f in again] == [(exercise, False), (exercise, True), (exercise, True)], again
    assert "folder on path 1 fast True" in run.output


# ---- the command ----------------------------------------------------------------------------


def _refused(argv, capsys, root: Path) -> str:
    before = {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("toylab: error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, (argv, out, err)
    assert {str(p): p.stat().st_mtime_ns for p in root.rglob("*")} == before, f"{argv} wrote something"
    return errors[0]


def test_rerunning_never_overwrites_an_edited_notebook_without_force(tmp_path, capsys):
    out = tmp_path / "nb"
    path = out / "01_tour.ipynb"
    argv = ["lessons", "01", "--notebook", "--out", str(out)]
    assert main(argv) == 0 and path.is_file()
    assert f"wrote {path}" in capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask(), "permissions as any new file's, not mkstemp's"
    assert [p.name for p in out.iterdir()] == ["01_tour.ipynb"], "no temporary file left behind"

    # Run and saved, not edited: left alone, its outputs kept.
    nb = json.loads(path.read_text())
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "ran\n"}]
    path.write_text(json.dumps(nb))
    assert main(argv) == 0 and "up to date" in capsys.readouterr().out
    assert json.loads(path.read_text())["cells"][2]["outputs"], "outputs kept"

    # As toylab wrote it from an older lesson: brought up to date.
    nb["cells"][2]["source"] = "print('an older lesson')\n"
    nb["metadata"]["toylab"]["cells_sha256"] = nbmod._digest(nb)
    path.write_text(json.dumps(nb))
    assert main(argv) == 0 and f"updated {path}" in capsys.readouterr().out
    assert path.read_text() == nbmod.notebook_text(TOUR)

    # Edited by the learner: refused, the file untouched, for one lesson and for all of them.
    nb = json.loads(path.read_text())
    nb["cells"][4]["source"] = "# my answer\n"
    edited = json.dumps(nb)
    path.write_text(edited)
    for args in (argv, ["lessons", "--notebook", "--out", str(out)]):
        line = _refused(args, capsys, tmp_path)
        assert f"{path} has been edited since toylab wrote it" in line and "--force" in line and "--out" in line
        assert path.read_text() == edited
    assert [p.name for p in out.iterdir()] == ["01_tour.ipynb"], "a refusal writes no other lesson"

    # The solutions go to their own file, beside the learner's: nothing to refuse.
    assert main(argv + ["--solutions"]) == 0 and (out / "01_tour.solutions.ipynb").is_file()
    assert path.read_text() == edited

    assert main(argv + ["--force"]) == 0 and f"replaced {path}" in capsys.readouterr().out
    assert path.read_text() == nbmod.notebook_text(TOUR)

    path.write_text("not a notebook")  # someone else's file of that name
    assert "is not a notebook toylab wrote" in _refused(argv, capsys, tmp_path)
    path.unlink()
    path.mkdir()  # a folder of that name: not even --force replaces it
    line = _refused(argv + ["--force"], capsys, tmp_path)
    assert "is a folder or a link" in line and "--force" not in line


def test_writing_every_lesson(tmp_path, capsys):
    assert main(["lessons", "--notebook", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{le.name}.ipynb" for le in LESSONS]
    assert main(["lessons", "--notebook", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("up to date") == len(LESSONS)


@pytest.mark.parametrize("argv, expected", [
    (["lessons", "99", "--notebook"], "no single lesson matches '99'"),
    (["lessons", "01", "--solutions"], "--solutions only applies with --run or --notebook"),
    (["lessons", "01", "--out", "nb"], "--out only applies with --notebook: `toylab lessons 01 --notebook --out nb`"),
    (["lessons", "01", "--force"], "--force only applies with --notebook"),
    (["lessons", "01", "--notebook", "--fast"], "--fast applies only with --run, not with --notebook"),
    (["lessons", "01", "--run", "--out", "nb"], "--out applies only with --notebook, not with --run"),
    (["lessons", "01", "--run", "--notebook"], "give one of them"),
    (["lessons", "01", "--notebook", "--out", "{file}"], "exists and is not a folder"),
    (["lessons", "01", "--notebook", "--out", "{file}/sub"], "is a file, not a folder"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(argv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("a file\n")
    argv = [a.replace("{file}", str(tmp_path / "a_file")) for a in argv]
    assert expected in _refused(argv, capsys, tmp_path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
