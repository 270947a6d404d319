"""What every lesson's checkers share: cached zoo models, and comparisons that say what is wrong.

A lesson's checkers (``lessons/NN_name/checks.py``) import these::

    from toylab.lessons.checking import call, expect_close, zoo_model
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from toylab import zoo
from toylab.lessons.exercise import Wrong


@lru_cache(maxsize=None)
def zoo_model(name: str, seed: int | None = None) -> zoo.ZooModel:
    """Loaded once per process; checkers never mutate it."""
    return zoo.load(name, seed=seed)


def call(fn: Any, *args: Any) -> Any:
    if not callable(fn):
        raise Wrong(f"expected a function, got {type(fn).__name__}", "pass the function itself, not its result")
    return fn(*args)


def expect_close(got: Any, want: Tensor, what: str, atol: float = 1e-4, hint: str | None = None) -> None:
    """Raise Wrong unless ``got`` is a tensor of ``want``'s shape and values."""
    if not isinstance(got, Tensor):
        raise Wrong(f"{what}: expected a tensor, got {type(got).__name__}", hint)
    if got.shape != want.shape:
        raise Wrong(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}", hint)
    got = got.detach().to(want.dtype)
    if not torch.allclose(got, want, atol=atol, rtol=1e-4):
        err = (got - want).abs()
        where = tuple(int(i) for i in torch.nonzero(err == err.max())[0])
        raise Wrong(f"{what}: values differ, by up to {float(err.max()):.3g} (at index {where}: "
                    f"got {float(got[where]):.4g}, expected {float(want[where]):.4g})", hint)


def number(value: Any, what: str) -> float:
    """A learner's numeric answer as a float, or Wrong saying what came back instead."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Wrong(f"{what}: expected a number, got {type(value).__name__}") from None


def first_difference(heads: set[str], truth: set[str]) -> tuple[str, bool] | None:
    """The first head where an answer and the truth disagree, and whether the answer had it extra."""
    if extra := sorted(heads - truth):
        return extra[0], True
    if missing := sorted(truth - heads):
        return missing[0], False
    return None


def head_set(answer: Any, what: str) -> set[str]:
    """An answer given as one head id or a collection of them, validated."""
    from toylab.components import parse

    items = [answer] if isinstance(answer, str) else answer
    try:
        items = list(items)
    except TypeError:
        raise Wrong(f"{what}: expected head ids such as 'L1H1', got {answer!r}") from None
    for item in items:
        try:
            kind = parse(item)[0] if isinstance(item, str) else None
        except ValueError:
            kind = None
        if kind != "head":
            raise Wrong(f"{what}: {item!r} is not a head id; write heads as 'L{{layer}}H{{head}}', e.g. 'L1H1'")
    return set(items)
