"""Bad input at every `toylab` entry point: one `toylab: error:` line, status 2, nothing written.

A property-based sweep drives each subcommand with invalid values (in process, through
``toylab.cli.main``); every value must be refused before any work starts, so no model is
trained or scored here. Then the known cases one by one, a read-only folder, a full disk
during a save and a port in use.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toylab import checkpoint as ckpt
from toylab import cli, zoo
from toylab.cli import SEED_MAX, main

REPO = Path(cli.__file__).resolve().parents[1]
LESSON = REPO / "lessons" / "01_tour" / "lesson.py"
REAL_ACCESS = os.access
COMMANDS = ("list", "info", "train", "truth", "progress", "lab", "lessons", "validate", "leaderboard", "phase-diagram")

# A method file whose top level leaves a mark: it must not run when the input is refused.
METHOD = '''from pathlib import Path

Path(__file__).with_name("method-ran.txt").write_text("the method file ran")


def find(problem):
    return {n: 1.0 for n in problem.nodes()}
'''


def run(argv: list[str]) -> int:
    """``toylab ARGV`` in process: its exit status, whether main returns it or exits with it."""
    try:
        return main(argv)
    except SystemExit as stop:
        return 0 if stop.code is None else stop.code


def tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its kind, size and modification time."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def refused(argv: list[str], capsys, ws: SimpleNamespace) -> str:
    """Run ``argv``, assert it is refused cleanly with nothing written; return the error line."""
    capsys.readouterr()
    before = tree(ws.root)
    code = run(argv)
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("toylab: error: ")]
    assert code == 2, f"toylab {argv}: exit {code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err and len(errors) == 1, f"toylab {argv}:\n{err}"
    assert tree(ws.root) == before, f"toylab {argv} wrote something: {set(tree(ws.root)) ^ set(before)}"
    return errors[0]


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A workspace: TOYLAB_HOME, the working folder, and bad places to write."""
    root = tmp_path
    (root / "home").mkdir()
    (root / "cwd").mkdir()
    monkeypatch.setenv("TOYLAB_HOME", str(root / "home"))
    monkeypatch.chdir(root / "cwd")
    a_file = root / "a_file"
    a_file.write_text("a file, not a folder\n")
    foreign = root / "foreign"  # someone's folder: toylab must neither write a run into it nor delete it
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me\n")
    readonly = root / "readonly"
    readonly.mkdir()
    method = root / "method.py"
    method.write_text(METHOD)
    monkeypatch.setattr(cli, "LEADERBOARD", root / "docs" / "leaderboard.md")

    # Read-only as far as toylab's checks can tell (tests may run as root, whom no mode stops).
    def access(path, mode, *args, **kwargs):
        inside = Path(path).absolute() == readonly or readonly in Path(path).absolute().parents
        return False if inside and mode & os.W_OK else REAL_ACCESS(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)

    def no_lab(*args, **kwargs):
        raise AssertionError("the lab was started although its input was refused")

    monkeypatch.setattr(cli, "subprocess", SimpleNamespace(Popen=no_lab))  # toylab.cli's only: others keep theirs
    return SimpleNamespace(root=root, a_file=a_file, foreign=foreign, readonly=readonly, method=method,
                           new_run=root / "new-run")


@pytest.fixture
def busy_port():
    """A port on localhost that a server is listening on."""
    with socket.socket() as server:
        server.bind(("localhost", 0))
        server.listen()
        yield server.getsockname()[1]


# ---- strategies of invalid values ---------------------------------------------------------------
def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


# Text that argparse takes as a value, not as an option (which "-h" would be).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=16).filter(lambda t: not t.startswith("-"))
NOT_INT = TEXT.filter(lambda t: not _is_int(t))


def bad_int(low: int, high: int | None) -> st.SearchStrategy[str]:
    outside = [st.integers(max_value=low - 1)] + ([st.integers(min_value=high + 1)] if high is not None else [])
    return st.one_of(*[s.map(str) for s in outside], NOT_INT)


BAD_SEED = bad_int(0, SEED_MAX)
# --seeds: seeds and ranges; refused when a part is not a seed, a range runs backwards, or too many.
BAD_SEEDS = st.one_of(BAD_SEED.filter(lambda t: "-" not in t and "," not in t),
                      st.sampled_from(["5-1", ",", " , ", "1-2-3", "0-", "-", "a-3", "0-20000", f"0-{SEED_MAX + 1}"]))
# Devices no machine has: unknown kinds, meta (no data), a CUDA index past any machine's.
BAD_DEVICE = st.sampled_from(["gpu", "meta", "", "cuda:99", "cpu:x", "tpu"])
BAD_PORT = bad_int(1, 65535)
FUNCTION = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)


def bad_names(ws) -> st.SearchStrategy[str]:
    """Neither a zoo name nor an existing folder."""
    return st.one_of(TEXT.filter(lambda t: t not in zoo.RECIPES and not Path(t).is_dir()),
                     st.sampled_from([str(ws.a_file), str(ws.root / "missing"), "induction-2", "modadd"]))


def bad_out_folders(ws) -> st.SearchStrategy[str]:
    return st.sampled_from(["", "/dev/null", str(ws.a_file), str(ws.a_file / "run"), str(ws.readonly),
                            str(ws.readonly / "run"), str(ws.readonly / "deeper" / "run")])


def no_lesson(text: str) -> bool:
    from toylab import lessons

    try:
        lessons.find(text)
    except FileNotFoundError:
        return True
    return False


def bad_argv(command: str, ws, port: int) -> st.SearchStrategy[list[str]]:
    """``toylab COMMAND ...`` with one invalid value (or an invalid combination), the rest valid."""
    out = ["--out", str(ws.new_run)]
    names, outs = bad_names(ws), bad_out_folders(ws)
    if command == "list":
        return TEXT.map(lambda t: ["list", t])
    if command == "info":
        return names.map(lambda n: ["info", n])
    if command == "train":
        return st.one_of(
            names.map(lambda n: ["train", n, *out]),
            BAD_SEED.map(lambda s: ["train", "modadd-tiny", "--seed", s, *out]),
            outs.map(lambda o: ["train", "modadd-tiny", "--out", o]),
            st.booleans().map(lambda fresh: ["train", "modadd-tiny", "--out", str(ws.foreign)] + ["--fresh"] * fresh),
            BAD_SEEDS.map(lambda s: ["train", "modadd-tiny", "--seeds", s]),
            BAD_DEVICE.map(lambda d: ["train", "modadd-tiny", "--device", d, *out]),
            st.sampled_from([["train", "modadd-tiny", "--ray", *out],  # --ray is for a sweep of seeds
                             ["train", "modadd-tiny", "--seeds", "0-1", "--seed", "3"],
                             ["train", "modadd-tiny", "--seeds", "0-1", *out]]))
    if command == "truth":
        shipped = set(zoo.recipe("induction-siit").seeds)
        return st.one_of(
            names.map(lambda n: ["truth", n]),
            BAD_SEED.map(lambda s: ["truth", "induction-siit", "--seed", s]),
            st.integers(0, SEED_MAX).filter(lambda s: s not in shipped).map(
                lambda s: ["truth", "induction-siit", "--seed", str(s)]),
            st.just(["truth", str(ws.foreign), "--seed", "1"]))
    if command == "progress":
        steps = zoo.recipe("modadd-tiny").train.steps
        return st.one_of(
            st.one_of(names, st.sampled_from(["induction-tiny", "induction-constructed", "brackets-siit"])).map(
                lambda n: ["progress", n, *out]),
            st.one_of(bad_int(1, None), st.integers(min_value=steps + 1).map(str)).map(
                lambda e: ["progress", "modadd-tiny", "--every", e, *out]),
            BAD_SEED.map(lambda s: ["progress", "modadd-tiny", "--seed", s, *out]),
            outs.map(lambda o: ["progress", "modadd-tiny", "--out", o]),
            st.just(["progress", "modadd-tiny", "--fresh", "--out", str(ws.foreign)]))
    if command == "lab":
        return st.one_of(BAD_PORT.map(lambda p: ["lab", "--no-browser", "--port", p]),
                         st.just(["lab", "--no-browser", "--port", str(port)]))
    if command == "lessons":
        return st.one_of(
            st.one_of(TEXT, st.just(str(ws.foreign))).filter(no_lesson).map(lambda t: ["lessons", t]),
            st.sampled_from([["lessons", "01", "--solutions"], ["lessons", "01", "--fast"], ["lessons", "--run"],
                             ["lessons", "--run", "--fast"]]))
    if command == "validate":
        method = f"{ws.method}:find"
        return st.one_of(
            NOT_INT.filter(lambda t: ":" not in t).map(lambda t: ["validate", t]),  # not FILE.py:function
            TEXT.filter(lambda t: not Path(t + ".py").exists()).map(lambda t: ["validate", f"{t}.py:find"]),
            NOT_INT.filter(lambda t: not t.isidentifier()).map(lambda t: ["validate", f"{ws.method}:{t}"]),
            FUNCTION.filter(lambda f: f not in ("find", "Path")).map(lambda f: ["validate", f"{ws.method}:{f}"]),
            FUNCTION.map(lambda f: ["validate", f"{LESSON}:{f}"]),
            st.sampled_from(["no_such_module_xyz:find", "toylab.no_such_module:find", "os:no_such_function"]).map(
                lambda m: ["validate", m]),
            names.map(lambda n: ["validate", method, "--model", n]),
            st.just(["validate", method, "--model", str(ws.foreign)]),  # a folder, but not a model's
            BAD_SEED.map(lambda s: ["validate", method, "--seed", s]),
            st.just(["validate", method, "--model", "induction-siit", "--seed", "99"]),  # selects no model
            st.just(["validate", method, "--model", "trap-or-gate", "--seeds", "3-9"]),  # truth on shipped seeds only
            BAD_SEEDS.map(lambda s: ["validate", method, "--seeds", s]),
            BAD_DEVICE.map(lambda d: ["validate", method, "--device", d]),
            outs.map(lambda o: ["validate", method, "--out", o]))
    if command == "leaderboard":
        from toylab.validate.baselines import BASELINES

        return st.one_of(
            TEXT.filter(lambda t: t not in BASELINES).map(lambda t: ["leaderboard", "--method", t]),
            names.map(lambda n: ["leaderboard", "--model", n]),
            BAD_SEED.map(lambda s: ["leaderboard", "--seed", s]),
            st.sampled_from(["", str(ws.root), str(ws.a_file / "board.md"), str(ws.readonly / "board.md")]).map(
                lambda o: ["leaderboard", "--out", o]),
            st.just(["leaderboard", "--print", "--out", str(ws.root / "board.md")]),
            BAD_SEEDS.map(lambda s: ["leaderboard", "--seeds", s]),
            BAD_DEVICE.map(lambda d: ["leaderboard", "--device", d]),
            st.just(["leaderboard", "--model", "induction-siit", "--seeds", "7-8"]))  # not trained here
    if command == "phase-diagram":
        return st.one_of(
            BAD_SEEDS.map(lambda s: ["phase-diagram", "--seeds", s]),
            st.one_of(bad_int(2, 200)).map(lambda g: ["phase-diagram", "--grid", g]),
            bad_int(1, None).map(lambda n: ["phase-diagram", "--steps", n]),
            BAD_DEVICE.map(lambda d: ["phase-diagram", "--device", d]),
            st.sampled_from(["", str(ws.root), str(ws.a_file / "pd.safetensors"),
                             str(ws.readonly / "pd.safetensors")]).map(lambda o: ["phase-diagram", "--out", o]))
    raise AssertionError(command)


# ---- the sweep ----------------------------------------------------------------------------------
SWEEP = settings(max_examples=25, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much,
                                        HealthCheck.too_slow])


@pytest.mark.parametrize("command", COMMANDS)
@SWEEP
@given(data=st.data())
def test_every_invalid_value_is_one_error_line_and_writes_nothing(command, data, ws, busy_port, capsys):
    argv = data.draw(bad_argv(command, ws, busy_port), label="argv")
    refused(argv, capsys, ws)
    assert not (ws.root / "method-ran.txt").exists()


@SWEEP
@given(command=TEXT.filter(lambda t: t not in COMMANDS))
def test_an_unknown_command_is_one_error_line(command, ws, capsys):
    assert "invalid choice" in refused([command], capsys, ws)


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_help_still_exits_0(command, ws, capsys):
    assert run([command, "--help"] if command else ["--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: toylab {command}".rstrip())


# ---- the known cases ----------------------------------------------------------------------------
def test_an_unknown_lesson_lists_the_lessons(ws, capsys):
    line = refused(["lessons", "99"], capsys, ws)
    assert "no single lesson matches '99'" in line and "01_tour" in line


def test_train_into_an_existing_file_says_it_is_not_a_folder(ws, capsys):
    assert "/dev/null exists and is not a folder" in refused(["train", "modadd-tiny", "--out", "/dev/null"], capsys, ws)
    assert "is a file, not a folder" in refused(["train", "modadd-tiny", "--out", str(ws.a_file / "run")], capsys, ws)


def test_lab_refuses_a_port_out_of_range(ws, capsys):
    assert "a port is an integer from 1 to 65535, got '99999'" in refused(["lab", "--port", "99999"], capsys, ws)


def test_lab_refuses_a_port_in_use_before_starting_streamlit(ws, busy_port, capsys):
    line = refused(["lab", "--no-browser", "--port", str(busy_port)], capsys, ws)
    assert f"port {busy_port} on localhost is in use" in line and "--port" in line


def test_validate_refuses_a_lesson_file_without_running_it(ws, capsys):
    line = refused(["validate", f"{LESSON}:nofn"], capsys, ws)
    assert "belongs to a lesson" in line and "loading a method file runs it" in line
    assert capsys.readouterr().out == ""  # no cell of the lesson ran


def test_validate_checks_the_function_before_running_the_file(ws, capsys):
    line = refused(["validate", f"{ws.method}:nofn"], capsys, ws)
    assert "has no function 'nofn'; its functions: ['find']" in line and "loading a method file runs it" in line
    assert not (ws.root / "method-ran.txt").exists()


def test_validate_checks_the_models_before_running_the_method(ws, capsys):
    assert "cannot join the suite" in refused(["validate", f"{ws.method}:find", "--model", str(ws.foreign)], capsys, ws)
    assert not (ws.root / "method-ran.txt").exists()


def test_fresh_never_deletes_a_folder_that_is_not_a_run(ws, capsys):
    line = refused(["train", "induction-constructed", "--out", str(ws.foreign), "--fresh"], capsys, ws)
    assert "notes.txt" in line and "will not delete it" in line
    assert (ws.foreign / "notes.txt").read_text() == "keep me\n"


def test_a_read_only_output_folder_is_refused_before_any_work(ws, capsys, monkeypatch):
    for argv in (["train", "induction-constructed", "--out", str(ws.readonly / "run")],
                 ["progress", "modadd-tiny", "--out", str(ws.readonly)],
                 ["validate", f"{ws.method}:find", "--out", str(ws.readonly / "report")],
                 ["leaderboard", "--out", str(ws.readonly / "board.md")]):
        assert f"{ws.readonly} is read-only" in refused(argv, capsys, ws)
    # the default folders, under TOYLAB_HOME
    monkeypatch.setenv("TOYLAB_HOME", str(ws.readonly))
    line = refused(["train", "induction-constructed"], capsys, ws)
    assert "is read-only" in line and "TOYLAB_HOME" in line


def test_truth_record_into_a_read_only_folder_is_refused_before_certifying(ws, capsys, monkeypatch):
    shipped = zoo.shipped_path("induction-constructed")
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if Path(p) == shipped else REAL_ACCESS(p, m, *a, **k))
    monkeypatch.setattr(zoo, "record_truth", lambda *a, **k: pytest.fail("certified before refusing"))
    assert "--record writes" in refused(["truth", "induction-constructed", "--record"], capsys, ws)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_really_read_only_folder(ws, capsys, monkeypatch):
    monkeypatch.setattr(os, "access", REAL_ACCESS)
    locked = ws.root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert "is read-only" in refused(["train", "induction-constructed", "--out", str(locked / "run")], capsys, ws)
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_write_refused_by_the_system_is_one_error_line(ws, capsys, monkeypatch, code):
    """The checks passed, the write fails anyway (a read-only mount, a permission): no traceback."""
    def refuse(path, data):
        raise PermissionError(code, os.strerror(code), str(path)) if code == errno.EACCES else \
            OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(ckpt, "atomic_write_bytes", refuse)
    out = ws.root / "run"
    code_ = run(["train", "induction-constructed", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code_ == 2 and "Traceback" not in err, err
    assert str(out / "config.json") in err and ("read-only" in err or "permission denied" in err)


# ---- a full disk during a save ------------------------------------------------------------------
def _disk_full_at(monkeypatch, nth: int) -> dict:
    """Make the ``nth`` fsync of an atomic write fail as a full disk does (ENOSPC); set the
    returned dict's "nth" to None to free the disk again."""
    fault = {"calls": 0, "nth": nth}
    real = os.fsync

    def fsync(fd):
        fault["calls"] += 1
        if fault["calls"] == fault["nth"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(ckpt.os, "fsync", fsync)
    return fault


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_names_the_path(tmp_path, monkeypatch):
    target = tmp_path / "card.json"
    ckpt.atomic_write_json(target, {"old": True})
    _disk_full_at(monkeypatch, 1)
    with pytest.raises(OSError) as failure:
        ckpt.atomic_write_json(target, {"new": True})
    assert failure.value.errno == errno.ENOSPC and failure.value.filename == str(target)
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]  # no temporary file left


@pytest.mark.parametrize("nth", [1, 2])
def test_a_full_disk_during_a_save_is_one_error_line_and_leaves_nothing_half_written(ws, capsys, monkeypatch, nth):
    """`toylab train` of a constructed model (no training): the disk fills at its nth file."""
    out = ws.root / "run"
    _disk_full_at(monkeypatch, nth)
    assert run(["train", "induction-constructed", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("toylab: error: ")]
    assert "Traceback" not in err and len(lines) == 1, err
    written = ["config.json", "model.safetensors"][nth - 1]
    assert f"no space left on the device writing {out / written}" in lines[0]
    assert "run the same command again" in lines[0]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.json", "model.safetensors"][:nth - 1]  # whole files only, no temporary ones
    for name in files:
        if name.endswith(".json"):
            json.loads((out / name).read_text())
        else:
            ckpt.load_weights(out / name)


@pytest.mark.slow
def test_after_a_full_disk_the_same_command_finishes_the_save(ws, capsys, monkeypatch):
    out = ws.root / "run"
    fault = _disk_full_at(monkeypatch, 2)
    assert run(["train", "induction-constructed", "--out", str(out), "--quiet"]) == 2
    fault["nth"] = None  # space freed
    assert run(["train", "induction-constructed", "--out", str(out), "--quiet"]) == 0
    _, card = ckpt.load_model(out)
    assert card["constructed"] and (out / "truth.json").exists()


# ---- a bug still shows its traceback ------------------------------------------------------------
def test_an_unexpected_exception_keeps_its_traceback(ws, monkeypatch):
    def lookup_bug():
        return {}["seed"]  # a KeyError from a lookup, not a message toylab raised

    monkeypatch.setattr(zoo, "names", lookup_bug)
    with pytest.raises(KeyError):
        main(["list"])
    monkeypatch.setattr(zoo, "names", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["list"])


def test_a_message_toylab_raises_is_an_error_line(ws, capsys):
    """A ValueError toylab raises on purpose (here, the training loop's check of an existing run)."""
    out = ws.root / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"model": {}, "task": {}, "train": {}}))
    assert run(["train", "modadd-tiny", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds a different run" in err and "Traceback" not in err
