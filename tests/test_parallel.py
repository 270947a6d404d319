"""toylab.parallel: sweeps run serially or on a real local Ray cluster, with the same results.

Starting a Ray cluster takes 10-20 s on two cores, so one test starts it and runs every check
that needs it; the serial path is tested on its own, without Ray."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from toylab import parallel
from toylab.methods import phase_diagram_seeds
from toylab.parallel import LOCAL, Job, run_jobs
from toylab.validate import load_method, score
from toylab.validate.baselines import BASELINES
from toylab.validate.leaderboard import leaderboard
from toylab.zoo.seeds import is_trained, seed_dir, train_seeds, write_run


# ---- jobs for the tests (sent to Ray workers by value: a test module is not importable there)
def square(x: int) -> int:
    return x * x


def fail(x: int) -> int:
    raise ValueError(f"no good: {x}")


def die(x: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)


def test_serial_jobs_keep_order_name_failures_and_hand_each_result_over():
    kept = []
    outcome = run_jobs([Job("a", square, (3,)), Job("bad", fail, (1,)), Job("b", square, (4,))],
                       on_result=lambda job, result: kept.append((job.name, result)), progress=False)
    assert outcome.results == {"a": 9, "b": 16} and kept == [("a", 9), ("b", 16)]
    assert outcome.failures == {"bad": "ValueError: no good: 1"} and not outcome.ok
    assert "2 of 3 jobs done" in outcome.summary() and "bad (ValueError: no good: 1)" in outcome.summary()
    assert torch.get_num_threads() == 1  # restored after each job


def test_bad_sweeps_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="unique; repeated: \\['a'\\]"):
        run_jobs([Job("a", square, (1,)), Job("a", square, (2,))], progress=False)
    with pytest.raises(ValueError, match="0 or more"):
        run_jobs([Job("a", square, (1,))], retries=-1, progress=False)


def test_a_run_written_back_replaces_the_folder_whole(tmp_path):
    folder = tmp_path / "runs" / "seed-3"
    write_run(folder, {"card.json": b"{}", "model.safetensors": b"old"})
    write_run(folder, {"card.json": b"{}", "model.safetensors": b"new"})
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.safetensors"]
    assert (folder / "model.safetensors").read_bytes() == b"new"
    assert [p.name for p in folder.parent.iterdir()] == ["seed-3"]  # no staging or old folder left behind
    with pytest.raises(ValueError, match="outside its folder"):
        write_run(folder, {"../escape": b"x"})
    assert (folder / "model.safetensors").read_bytes() == b"new"


def _ray_workers() -> list[int]:
    """Pids of Ray workers running a toylab job now (Ray titles them by the task's function)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::_toylab_job"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _kill_workers_after(path: Path, timeout_s: float = 120) -> threading.Thread:
    """Once ``path`` exists (a run's first checkpoint), SIGKILL every worker running a job."""
    def watch():
        deadline = time.monotonic() + timeout_s
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in _ray_workers():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killed: list[int] = []
    thread = threading.Thread(target=watch, daemon=True)
    thread.killed = killed
    thread.start()
    return thread


def _entries(board) -> list[tuple]:
    """A board's scores without the seconds each method took (the one figure runs may differ in)."""
    def row(entry):
        return (entry.model, entry.seed, entry.kind, entry.error, entry.peeked, entry.metrics)

    return ([(label, row(e)) for label, report in board.reports.items() for e in report.entries]
            + [(label, row(e)) for label, report in board.graphs.items() for e in report.entries]
            + [(f.model, f.seed, f.variable, f.featuriser, f.iia, f.k) for f in board.features])


@pytest.mark.skipif(sys.platform != "linux", reason="finds Ray's workers in /proc")
def test_sweeps_on_a_local_ray_cluster_match_the_serial_runs_and_lose_nothing_to_a_killed_worker(
        tmp_path, monkeypatch, induction_tiny_retrained):
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setenv("TOYLAB_HOME", str(tmp_path / "home"))
    parallel.connect(LOCAL)
    try:
        # Jobs: results; a job that raises and one whose worker dies (no retries here) are named.
        kept = []
        jobs = [Job(f"square {i}", square, (i,)) for i in range(3)] + [Job("fails", fail, (1,)), Job("dies", die, (1,))]
        outcome = run_jobs(jobs, ray=LOCAL, retries=0, progress=False,
                           on_result=lambda job, result: kept.append(job.name))
        assert outcome.results == {"square 0": 0, "square 1": 1, "square 2": 4}
        assert sorted(kept) == sorted(outcome.results)
        assert outcome.failures["fails"] == "ValueError: no good: 1"
        assert "the worker running it was lost, 1 attempt" in outcome.failures["dies"]

        # A sweep whose worker is killed mid-training: the retry resumes from the run's last
        # checkpoint, and the weights are those of a serial run straight through, bit for bit.
        watcher = _kill_workers_after(seed_dir("induction-tiny", 0) / "checkpoints" / "LATEST")
        outcome, skipped = train_seeds("induction-tiny", [0], ray=LOCAL, progress=False)
        watcher.join(timeout=1)
        assert outcome.ok and skipped == [] and watcher.killed, outcome.summary()
        assert is_trained(seed_dir("induction-tiny", 0))
        ours = load_file(seed_dir("induction-tiny", 0) / "model.safetensors")
        serial = load_file(Path(induction_tiny_retrained) / "model.safetensors")
        assert ours.keys() == serial.keys() and all(torch.equal(ours[k], serial[k]) for k in ours)
        assert train_seeds("induction-tiny", [0], ray=LOCAL, progress=False)[1] == [0]  # kept, not redone

        # Workers without this machine's file system: each run comes back as files, written here.
        monkeypatch.setenv("TOYLAB_HOME", str(tmp_path / "files"))
        assert train_seeds("trap-or-gate", [5, 6], ray=LOCAL, shared_filesystem=False, progress=False)[0].ok
        monkeypatch.setenv("TOYLAB_HOME", str(tmp_path / "serial"))
        assert train_seeds("trap-or-gate", [5, 6], progress=False)[0].ok
        for seed in (5, 6):
            there, here = tmp_path / "files" / "runs" / "trap-or-gate" / f"seed-{seed}", seed_dir("trap-or-gate", seed)
            assert sorted(p.name for p in there.iterdir()) == sorted(p.name for p in here.iterdir())
            assert (there / "model.safetensors").read_bytes() == (here / "model.safetensors").read_bytes()

        # A leaderboard: the same entries, figure for figure, as the serial board.
        methods = {name: BASELINES[name] for name in ("attention-heuristic", "eap")}
        runs = [leaderboard(methods, names=["trap-or-gate"], seeds=[0, 1], featurisers={}, graph_methods={},
                            ray=ray_address) for ray_address in (None, LOCAL)]
        assert _entries(runs[0]) == _entries(runs[1]) and len(runs[0].reports["eap"].entries) == 2

        # A researcher's method from a file loaded at run time travels to the workers by value.
        method_file = tmp_path / "my_method.py"
        method_file.write_text("from toylab.validate.baselines import BASELINES\n\n\n"
                               "def find(problem):\n    return BASELINES['eap'](problem)\n")
        method = load_method(f"{method_file}:find")
        reports = [score(method, names=["trap-or-gate"], seeds=[0, 2], ray=r) for r in (None, LOCAL)]
        assert [e.metrics for e in reports[0].entries] == [e.metrics for e in reports[1].entries]
        assert all(e.error is None for e in reports[1].entries)

        # Superposition: a phase diagram per seed.
        options = {"n_density": 3, "n_importance": 3, "steps": 40, "n_restarts": 2}
        serial, _ = phase_diagram_seeds([0, 1], **options)
        spread, outcome = phase_diagram_seeds([0, 1], ray=LOCAL, **options)
        assert outcome.ok and all(torch.equal(serial[s].W, spread[s].W) for s in (0, 1))
    finally:
        ray.shutdown()
