"""What `toylab leaderboard` costs: every built-in baseline on every shipped model and seed.

Prints the wall time of the whole board (the issue's budget: 5 minutes on a 2-core laptop),
and each method's own time summed over the suite, slowest first, with its share of the
total (the featuriser track's featurisers on one line), so that a method that grows with the graph (ACDC, edge patching, edge pruning on the
long-chain trap's ~1,600 edges) shows where the time goes.

    python benchmarks/bench_leaderboard.py           # the whole suite
    python benchmarks/bench_leaderboard.py trap-long-chain
"""

from __future__ import annotations

import sys
import time

from toylab.validate.leaderboard import leaderboard

BUDGET_S = 300.0


def main(names: list[str]) -> None:
    start = time.perf_counter()
    board = leaderboard(names=names or None)
    total = time.perf_counter() - start
    own = {label: sum(e.seconds for e in report.entries if e.error is None) for label, report in board.reports.items()}
    runs = {label: len(report.entries) for label, report in board.reports.items()}
    print(f"leaderboard: {total:.1f} s wall for {len(board.reports)} methods on "
          f"{max(runs.values())} model-seeds ({'within' if total <= BUDGET_S else 'OVER'} the {BUDGET_S:.0f} s budget)")
    print(f"{'method':<22} {'own s':>8} {'share':>7}")
    for label, seconds in sorted(own.items(), key=lambda kv: -kv[1]):
        print(f"{label:<22} {seconds:8.1f} {seconds / total:7.1%}")
    features = sum(e.seconds for e in board.features)  # each featuriser's own time plus its IIA scoring
    if board.features:
        print(f"{'featurisers (+ IIA)':<22} {features:8.1f} {features / total:7.1%}")
    rest = total - sum(own.values()) - features
    print(f"{'harness (scoring)':<22} {rest:8.1f} {rest / total:7.1%}")


if __name__ == "__main__":
    main(sys.argv[1:])
