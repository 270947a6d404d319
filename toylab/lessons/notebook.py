"""Lessons as Jupyter notebooks: ``toylab lessons 01 --notebook`` writes ``01_tour.ipynb``.

A lesson is a percent-cell script (``lessons/NN_name/lesson.py``); Jupytext reads it into a
notebook cell for cell: the markdown cells, the exercise cells (their id kept as the cell's
``exercise`` metadata, tagged ``exercise``) and the ``check(...)`` cells, so the same checks run
in the notebook as in the script. One cell comes first, written here: it puts the lesson's
folder on ``sys.path``, as running ``lesson.py`` in place does, so that ``from fixtures import
...`` works wherever the notebook is written and whatever the kernel's working folder.

    from toylab.lessons.notebook import notebook, write
    nb = notebook("01", solutions=True)     # an nbformat NotebookNode
    write("01", "notebooks/")               # -> Written(path, "new" | "updated" | "unchanged")

The text written is deterministic (cell ids from the lesson, no timestamps), and each notebook
records a digest of its cells' sources. ``write`` never replaces a notebook a learner has edited:
it refuses (``NotebookEdited``) unless ``force``. A notebook that is as toylab wrote it, run or
not, is brought up to date when the lesson changed, and left alone when it did not. Writes are
atomic (a temporary file in the same folder, then a rename).

``execute`` runs a notebook in a Jupyter kernel (nbclient and ipykernel, the ``dev`` extra) and
reports its checks as ``run_lesson`` does; the tests use it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toylab.lessons.exercise import Feedback
from toylab.lessons.runner import LESSONS_DIR, Lesson, LessonRun, find, solved_source

SUFFIX = ".ipynb"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
SETUP_ID = "toylab-setup"
# Jupytext keeps a cell's metadata; these are its own bookkeeping, meaningless in a notebook.
_JUPYTEXT_CELL_KEYS = ("lines_to_next_cell", "lines_to_end_of_cell_marker", "cell_marker")


class NotebookEdited(Exception):
    """The notebook at ``path`` differs from what toylab wrote there: a learner's work, kept."""

    def __init__(self, path: Path, why: str, forceable: bool = True):
        super().__init__(f"{path} {why}")
        self.path = path
        self.why = why
        self.forceable = forceable  # False: not even ``force`` replaces it (a folder, a link)


def _jupytext():
    try:
        import jupytext
    except ImportError as err:  # a core dependency; missing only in a hand-made environment
        raise ImportError("writing notebooks needs jupytext: pip install torch==2.13.0 -e . "
                          "(or pip install jupytext)") from err
    return jupytext


def notebook_name(lesson: str | Path | Lesson, solutions: bool = False) -> str:
    """``01_tour.ipynb``, or ``01_tour.solutions.ipynb`` with the reference solutions."""
    return find(lesson).name + (".solutions" if solutions else "") + SUFFIX


def _setup_source(lesson: Lesson, solutions: bool) -> str:
    flag = " --solutions" if solutions else ""
    if lesson.folder.parent == LESSONS_DIR:  # found again from the installed toylab: no absolute path
        where, rel, imports = f'find("{lesson.name}").folder', lesson.path.relative_to(LESSONS_DIR.parent), \
            "from toylab.lessons import find\n\n"
    else:  # a lesson folder outside the checkout's lessons/
        where, rel, imports = repr(str(lesson.folder)), lesson.path, ""
    return (f"# Written by `toylab lessons {lesson.number} --notebook{flag}` from {rel}. Run this cell first:\n"
            "# it puts the lesson's folder on the path, as running lesson.py does (its `from fixtures import ...`).\n"
            "%matplotlib inline\n"  # toylab.viz figures, a cell's last value, then show as images
            "import sys\n\n"
            f"{imports}"
            f"LESSON_FOLDER = str({where})\n"
            "if LESSON_FOLDER not in sys.path:\n"
            "    sys.path.insert(0, LESSON_FOLDER)")


def _cell_id(index: int, exercise: str | None) -> str:
    # nbformat ids: 1-64 characters of [a-zA-Z0-9-_]; stable, so the same lesson writes the same text
    if exercise:
        return ("exercise-" + re.sub(r"[^A-Za-z0-9_-]", "-", exercise))[:64]
    return f"cell-{index:03d}"


def _quiet_check(source: str) -> str:
    """``check(...);`` where a cell ends with a bare ``check(...)``: the verdict it prints is the
    script's output; without the semicolon IPython would echo the returned Feedback below it."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    last = tree.body[-1] if tree.body else None
    if not (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
            and isinstance(last.value.func, ast.Name) and last.value.func.id == "check"):
        return source
    lines = source.split("\n")
    line = lines[last.end_lineno - 1].encode()  # ast's columns count UTF-8 bytes
    lines[last.end_lineno - 1] = (line[:last.end_col_offset] + b";" + line[last.end_col_offset:]).decode()
    return "\n".join(lines)


def _digest(nb: Any) -> str:
    """A digest of the notebook's cells (type and source): what a learner edits, not outputs."""
    cells = [[c["cell_type"], c["source"] if isinstance(c["source"], str) else "".join(c["source"])]
             for c in nb["cells"]]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def notebook(lesson: str | Path | Lesson, solutions: bool = False):
    """The lesson as an nbformat v4 notebook; ``solutions`` fills the exercise cells with the
    reference solutions (as ``solved_source``)."""
    import nbformat

    lesson = find(lesson)
    source = solved_source(lesson) if solutions else lesson.read_text()
    read = _jupytext().reads(source, fmt="py:percent")
    setup = nbformat.v4.new_code_cell(_setup_source(lesson, solutions), id=SETUP_ID,
                                      metadata={"toylab": "setup", "tags": ["toylab-setup"]})
    cells = []
    for index, cell in enumerate(read.cells):
        metadata = {k: v for k, v in cell.metadata.items() if k not in _JUPYTEXT_CELL_KEYS}
        exercise = metadata.get("exercise")
        if exercise:
            metadata["tags"] = sorted(set(metadata.get("tags", [])) | {"exercise"})
        if cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source, id=_cell_id(index, None), metadata=metadata)
        else:
            new = nbformat.v4.new_code_cell(_quiet_check(cell.source), id=_cell_id(index, exercise), metadata=metadata)
        cells.append(new)
    # The setup cell goes before the first code cell: below the lesson's title, above any import.
    first_code = next((i for i, c in enumerate(cells) if c.cell_type == "code"), len(cells))
    cells.insert(first_code, setup)
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": dict(KERNELSPEC),
        "language_info": {"name": "python"},
        "toylab": {"lesson": lesson.name, "solutions": solutions},
    })
    nb.metadata["toylab"]["cells_sha256"] = _digest(nb)
    nbformat.validate(nb)
    return nb


def notebook_text(lesson: str | Path | Lesson, solutions: bool = False) -> str:
    """The ``.ipynb`` text ``write`` writes: the same for the same lesson, byte for byte."""
    import nbformat

    return nbformat.writes(notebook(lesson, solutions)) + "\n"


@dataclass(frozen=True)
class Written:
    path: Path
    status: str  # "new", "updated" (as toylab wrote it, the lesson changed), "unchanged", "replaced" (--force)


def plan(lesson: str | Path | Lesson, out: str | Path = ".", solutions: bool = False,
         force: bool = False) -> tuple[Path, str, str]:
    """``(path, text, status)`` of writing the lesson's notebook into folder ``out``, nothing written.

    Raises ``NotebookEdited`` when ``path`` holds anything but a notebook as toylab wrote it
    (a learner's edits, another file), unless ``force``."""
    path = Path(out) / notebook_name(lesson, solutions)
    text = notebook_text(lesson, solutions)
    if not os.path.lexists(path):
        return path, text, "new"
    if path.is_dir() or path.is_symlink():
        raise NotebookEdited(path, "is a folder or a link, not a notebook toylab wrote", forceable=False)
    old_text = path.read_text(errors="replace")
    if old_text == text:
        return path, text, "unchanged"
    try:
        old = json.loads(old_text)
        recorded = old["metadata"]["toylab"]["cells_sha256"]
        edited = _digest(old) != recorded
        same_cells = _digest(old) == json.loads(text)["metadata"]["toylab"]["cells_sha256"]
    except (ValueError, KeyError, TypeError):
        if force:
            return path, text, "replaced"
        raise NotebookEdited(path, "exists and is not a notebook toylab wrote") from None
    if same_cells and not edited:
        return path, text, "unchanged"  # run, saved, not edited: keep its outputs
    if not edited:
        return path, text, "updated"  # as toylab wrote it, from an older lesson
    if force:
        return path, text, "replaced"
    raise NotebookEdited(path, "has been edited since toylab wrote it")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the notebook from a shared server
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def write(lesson: str | Path | Lesson, out: str | Path = ".", solutions: bool = False,
          force: bool = False) -> Written:
    """Write the lesson's notebook into folder ``out`` (see ``plan`` for what is refused)."""
    path, text, status = plan(lesson, out, solutions, force)
    if status != "unchanged":
        write_text(path, text)
    return Written(path, status)


# ---- running a notebook in a kernel (the tests) ------------------------------------------------


@dataclass(frozen=True)
class NotebookRun(LessonRun):
    notebook: Any = None  # the executed notebook, outputs and all


def output_text(nb: Any) -> str:
    """The text a notebook's cells printed (streams, results, errors), in order."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif output.get("output_type") in ("execute_result", "display_data"):
                parts.append(output.get("data", {}).get("text/plain", ""))
            elif output.get("output_type") == "error":
                parts.append("\n".join(output.get("traceback", [])))
    return "".join(p if p.endswith("\n") else p + "\n" for p in parts)


def execute(lesson: str | Path | Lesson, solutions: bool = True, fast: bool = True, strict: bool | None = None,
            timeout: float = 600, nb: Any = None) -> NotebookRun:
    """Run the lesson's notebook (or ``nb``) top to bottom in a fresh Python kernel, from a
    temporary working folder, and report every check it made (``run_lesson``'s arguments).

    Needs nbclient and ipykernel (the ``dev`` extra). The kernel is this interpreter's."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    lesson = find(lesson)
    nb = notebook(lesson, solutions) if nb is None else nb
    strict = solutions if strict is None else strict
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "checks.jsonl"
        env = dict(os.environ, TOYLAB_LESSONS_LOG=str(log), TOYLAB_FAST="1" if fast else "0",
                   TOYLAB_LESSONS_STRICT="1" if strict else "0")
        env.pop("MPLBACKEND", None)  # the kernel's own inline backend, as a learner's
        # Only the kernel ipykernel provides for this interpreter: not a "python3" of some other
        # environment that the user's Jupyter folders might hold.
        km = KernelManager(kernel_name=KERNELSPEC["name"], kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
        client = NotebookClient(nb, km=km, timeout=timeout, startup_timeout=120,
                                resources={"metadata": {"path": tmp}})
        error = ""
        try:
            client.execute(env=env)
        except (CellExecutionError, CellTimeoutError) as err:
            error = str(err)
        checks = [Feedback(**json.loads(line)) for line in log.read_text().splitlines()] if log.exists() else []
    return NotebookRun(lesson, 1 if error else 0, output_text(nb) + error, checks, nb)
