"""What the phase diagram of 2 features in 1 dimension costs: toylab's recipe against the reference.

Trains the full 20 x 20 (relative importance x density) diagram twice in this run:
  - toylab's recipe (``methods.phase_diagram`` defaults): 1,000 steps, lr 1e-2 with a cosine
    decay, batch 256, 6 restarts per cell, the best restart kept;
  - the reference setup (the paper's colab, ARENA 1.5.4): 10,000 steps, lr 1e-3 constant,
    batch 1024, one run per cell;
and prints each one's seconds, the ratio, and how often the two agree on feature 1's status
(ignored / dedicated / superposed).

    OMP_NUM_THREADS=2 python benchmarks/bench_superposition.py [--skip-reference]
"""

from __future__ import annotations

import argparse
import time

import torch

from toylab.methods import phase_diagram
from toylab.methods.superposition import STATUS_NAMES


def timed(**kwargs):
    start = time.perf_counter()
    result = phase_diagram(n_density=20, n_importance=20, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-reference", action="store_true", help="time toylab's recipe only")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    fast, fast_s = timed()
    print(f"toylab recipe    (1k steps, lr 1e-2 cosine, batch 256, 6 restarts): {fast_s:6.1f} s")
    counts = {name: int((fast.feature1() == i).sum()) for i, name in enumerate(STATUS_NAMES)}
    print(f"  feature 1 over the 400 cells: {counts}")
    if args.skip_reference:
        return
    ref, ref_s = timed(steps=10_000, batch_size=1024, lr=1e-3, n_restarts=1)
    print(f"reference setup  (10k steps, lr 1e-3 cosine, batch 1024, 1 run):    {ref_s:6.1f} s")
    agree = float((fast.feature1() == ref.feature1()).float().mean())
    print(f"speed-up {ref_s / fast_s:.1f}x; the two agree on feature 1's status in {agree:.0%} of cells")


if __name__ == "__main__":
    main()
