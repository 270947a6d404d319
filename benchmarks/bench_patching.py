"""What the fast patching sweeps save: each against its naive one-forward-per-patch loop.

Prints, for induction-2l (2 layers, d_model 64, 4 heads; a 64-row counterfactual pair of
32 tokens) and modadd-113 (1 layer, d_model 128, MLP 512; a 256-row pair of 3 tokens),
the seconds of the naive and the fast version of each sweep, the speed-up measured in
this run, and the largest |fast - naive| over the scores (which must stay below 1e-5).

    OMP_NUM_THREADS=1 python benchmarks/bench_patching.py
"""

from __future__ import annotations

import torch

from toylab.methods.patching import (
    activation_patching,
    naive_activation_patching,
    naive_path_patching,
    path_patching,
)
from toylab.zoo import load

from timing import best_time  # benchmarks/timing.py, beside this script


def bench(label: str, naive, fast) -> None:
    naive_s, slow = best_time(naive)
    fast_s, quick = best_time(fast)
    error = (slow.scores - quick.scores).nan_to_num(0).abs().max().item()
    assert torch.equal(slow.scores.isnan(), quick.scores.isnan())
    print(f"  {label:<28} naive {naive_s * 1e3:8.1f} ms | fast {fast_s * 1e3:7.1f} ms"
          f" | {naive_s / fast_s:5.1f}x | max |fast - naive| {error:.1e}")


def bench_model(name: str, batch: int, path_receiver: tuple[str, str]) -> None:
    zm = load(name)
    pair = zm.task.counterfactual(batch, seed=0)
    print(f"{name}: batch {batch} x {pair.clean.tokens.shape[1]} tokens ({zm.model.extra_repr()})")
    for target in ("resid_pre", "head", "head_pos"):
        bench(target, lambda t=target: naive_activation_patching(zm.model, pair, t),
              lambda t=target: activation_patching(zm.model, pair, t))
    receiver, kind = path_receiver
    bench(f"path -> {receiver} ({kind})", lambda: naive_path_patching(zm.model, pair, receiver, kind),
          lambda: path_patching(zm.model, pair, receiver, kind))


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_model("induction-2l", 64, ("L1H1", "k"))
    bench_model("modadd-113", 256, ("MLP0", "resid"))
