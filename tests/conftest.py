"""Fixtures shared across the test tree."""

import os
import signal

import pytest
import torch

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
