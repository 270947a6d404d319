"""The one timing rule every benchmark here uses: best of a few repeats, after a warm-up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_time(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """(the fastest of ``repeats`` timed calls in seconds, the warm-up call's result)."""
    result = fn()  # warm-up, and the result the caller compares
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), result
