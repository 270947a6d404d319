"""Fixtures shared across the test tree."""

import signal

import pytest

from toylab.train import Callback


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
