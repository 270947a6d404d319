"""Fixtures shared across the test tree."""

import os
import pickle
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from filelock import FileLock  # a dependency of torch

from toylab.train import Callback

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The README's test command runs one worker per core (pytest -n 2): each worker's torch (and
    # every subprocess it starts) gets one thread, so two workers never oversubscribe two cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


class _InterruptAt(Callback):
    """Interrupts training during step ``step``: as the user's Ctrl-C ("sigint") or as a crash."""

    def __init__(self, kind: str, step: int):
        self.kind, self.step = kind, step

    def on_step_end(self, run):
        if run.step == self.step:
            if self.kind == "sigint":
                signal.raise_signal(signal.SIGINT)
            else:
                raise RuntimeError("power cut")


@pytest.fixture
def interrupt_at():
    """``interrupt_at("sigint" | "crash", step)``: a callback that interrupts a training run."""
    return _InterruptAt


@pytest.fixture(scope="session")
def computed_once(tmp_path_factory) -> Callable[[str, Callable[[], Any]], Any]:
    """``computed_once(key, compute)``: ``compute()``, run once per test run, whichever xdist
    worker asks first; the others wait for it and get a pickled copy (pytest-xdist's recipe
    for a session fixture that runs once). For costly results several tests read."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, which every worker's own folder sits in
    folder = root / "computed-once"
    folder.mkdir(exist_ok=True)
    here: dict[str, Any] = {}

    def get(key: str, compute: Callable[[], Any]) -> Any:
        if key not in here:
            path = folder / f"{key}.pickle"
            with FileLock(str(folder / f"{key}.lock")):
                if path.exists():
                    here[key] = pickle.loads(path.read_bytes())
                else:
                    here[key] = compute()
                    path.with_suffix(".part").write_bytes(pickle.dumps(here[key]))
                    path.with_suffix(".part").replace(path)
        return here[key]

    return get


@pytest.fixture(scope="session")
def induction_tiny_retrained(computed_once, tmp_path_factory) -> Path:
    """The run folder of induction-tiny retrained from its recipe straight through, as
    ``toylab train induction-tiny`` trains it, on the thread count its card records: trained
    once per test run for the tests that compare a run with it (with the shipped model in
    tests/zoo/test_zoo.py, with an interrupted and resumed run in tests/test_cli.py)."""

    def train() -> Path:
        from toylab import zoo

        out = tmp_path_factory.mktemp("induction-tiny-retrained") / "run"
        threads = torch.get_num_threads()
        torch.set_num_threads(int(zoo.load("induction-tiny").card["versions"]["threads"]))
        try:
            zoo.train_recipe("induction-tiny", out=out, progress=False)
        finally:
            torch.set_num_threads(threads)
        return out

    return computed_once("induction-tiny-retrained", train)
