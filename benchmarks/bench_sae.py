"""How fast an SAE recovers a known dictionary: time to MMCS >= 0.99, per architecture.

The data: ``SyntheticFeatures(d_in=32, n_features=128, feature_probability=0.03)`` (the
dictionary lesson 5 uses); each SAE has 256 latents, Adam lr 3e-3, batch 256, dead
latents resampled every 500 steps. MMCS is checked every 50 steps. The baseline is the
classic ReLU SAE with an L1 penalty (Bricken et al. 2023); the ratio is its time over
each architecture's, all measured in this run. A run that never reaches the bar within
``--steps`` says so.

    OMP_NUM_THREADS=2 python benchmarks/bench_sae.py [--seeds 0 1 2] [--steps 3000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from toylab.sae import SAE, SAEConfig, SyntheticFeatures, mmcs, score_sae, train_sae

ARCHS = {
    "relu + L1 (baseline)": {"architecture": "relu", "l1_coefficient": 0.3},
    "topk k=4": {"architecture": "topk", "k": 4},
    "jumprelu": {"architecture": "jumprelu", "l0_coefficient": 1.0},
}


def time_to_recover(extra: dict, seed: int, steps: int) -> tuple[float | None, int | None, float]:
    data = SyntheticFeatures(d_in=32, n_features=128, feature_probability=0.03, seed=seed)
    sae = SAE(SAEConfig(d_in=32, d_sae=256, seed=seed, **extra))
    reached: dict[str, float] = {}
    start = time.perf_counter()

    def bar(step: int, s: SAE) -> bool:
        if mmcs(data.features, s.W_dec.detach()) >= 0.99:
            reached["step"], reached["s"] = step, time.perf_counter() - start
            return True
        return False

    train_sae(sae, data.sample, steps=steps, batch_size=256, lr=3e-3, seed=seed, resample_every=500,
              callback=bar, callback_every=50)
    x, c = data.sample(8192, torch.Generator().manual_seed(10_000 + seed))
    final = score_sae(sae, data.features, x, c).mmcs
    return reached.get("s"), reached.get("step"), final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000, help="give up after this many steps")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, seeds {args.seeds}")
    results = {}
    for name, extra in ARCHS.items():
        runs = [time_to_recover(extra, seed, args.steps) for seed in args.seeds]
        results[name] = runs
        done = [r for r in runs if r[0] is not None]
        finals = ", ".join(f"{r[2]:.3f}" for r in runs)
        if len(done) < len(runs):
            print(f"{name:22s} reached MMCS 0.99 in {len(done)}/{len(runs)} seeds within {args.steps} steps "
                  f"(final MMCS {finals})")
        if done:
            secs = [r[0] for r in done]
            spread = statistics.stdev(secs) if len(secs) > 1 else 0.0
            print(f"{name:22s} {statistics.mean(secs):6.2f} s +- {spread:.2f} to MMCS 0.99 "
                  f"(steps {[r[1] for r in done]}; final MMCS {finals})")
    base = [r[0] for r in results["relu + L1 (baseline)"]]
    for name, runs in results.items():
        if name.startswith("relu") or any(r[0] is None for r in runs):
            continue
        if all(b is not None for b in base):
            ratios = [b / r[0] for b, r in zip(base, runs)]
            print(f"{name}: {statistics.mean(ratios):.1f}x faster than the ReLU + L1 baseline")
        else:
            print(f"{name}: reaches the bar; the ReLU + L1 baseline does not in every seed")


if __name__ == "__main__":
    main()
