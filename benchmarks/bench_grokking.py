"""How much faster the zoo's modadd-113 recipe groks than the reference recipe.

Trains, on this machine in one run and for each seed, the same architecture, prime and
split (modadd-113: 1 layer, d_model 128, 4 heads, d_mlp 512, ReLU, no LayerNorm, p=113,
30% of the pairs for training, full batch) with

    reference  AdamW lr 1e-3, weight decay 1.0, betas (0.9, 0.98), no warm-up, on the hooked
               ``Transformer.forward`` (the trainer as it was before its last-position path)
    default    the recipe in toylab.zoo.recipes (lr, weight decay, betas, warm-up), trained by
               ``toylab.train`` as it is (the loss reads only "=", so the fast path is used)

and stops each at the first evaluation (every ``--eval-every`` steps) with test accuracy
>= 0.99. "train s" is the training clock of ``toylab.train``, which excludes evaluation;
"wall s" includes the evaluations. The ratio is reference train s / default train s.

    OMP_NUM_THREADS=1 python benchmarks/bench_grokking.py --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/bench_grokking.py --skip-reference   # the default only
    ... --reference-max-steps 300        # only the reference's ms/step (the ratio is then a bound)
    ... --skip-default --reference-forward fast   # the reference's step count, 3x sooner

The reference takes about 11,000 steps (about an hour on one CPU thread); it never runs in CI.

Measured here (2026-11-21, 1 thread): to 99% test accuracy the reference took 8,370 / 11,200 /
9,960 steps for seeds 0 / 1 / 2 (seed 0 on the hooked forward; 1 and 2 with
``--reference-forward fast``), the default recipe 590 / 600 / 520: 17.4x fewer steps on
average (14.2-19.2x). On a quiet machine a reference step costs 307 ms on the hooked forward
(103 ms on the fast path) and a default step 100 ms, so the reference needs about 43-57 min
against 58-60 s: 43.6 / 57.7 / 53.2x, mean 51.5x (seed 0's one loaded run printed 55.4x).
With the reference on the fast path too, the recipe alone is about 18x faster.

Since 2026-12 the default recipe uses weight decay 2 (it was 1): measured here (2026-12-02,
2 threads, --skip-reference, to 99% test accuracy) 230 / 240 / 230 steps for seeds 0 / 1 / 2,
13.6-14.7 s of training and about 17 s wall each (59-64 ms a step), against 590-725 steps
with weight decay 1 (whose count moved with the machine's kernels). The ratio to the
reference has not been re-measured in one run since (the reference takes an hour); the
step counts above give roughly 40x fewer steps. `toylab train modadd-113` took 21 s wall
here, certification and the comparison with the shipped checkpoint included.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from contextlib import contextmanager

import torch

import toylab.train
from toylab.tasks import loss
from toylab.train import TrainConfig, train
from toylab.zoo import recipe

TARGET = "test/accuracy >= 0.99"


@contextmanager
def hooked_forward():
    """Train through ``loss(model(tokens), batch)``, every hook firing, as the reference did."""
    fast = toylab.train.task_loss
    toylab.train.task_loss = lambda model, batch: loss(model(batch.tokens), batch)
    try:
        yield
    finally:
        toylab.train.task_loss = fast


def reference_config(seed: int, eval_every: int, max_steps: int) -> TrainConfig:
    return TrainConfig(steps=max_steps, lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98), eval_every=eval_every,
                       checkpoint_every=max_steps, stop_when=TARGET, seed=seed)


def run(name: str, cfg: TrainConfig, hooked: bool) -> dict:
    rec = recipe(name)
    started = time.perf_counter()
    if hooked:
        with hooked_forward():
            result = train(rec.model, rec.task, cfg, progress=False)
    else:
        result = train(rec.model, rec.task, cfg, progress=False)
    wall = time.perf_counter() - started
    reached = result.metrics["test/accuracy"] >= 0.99
    return {"steps": result.steps, "train_s": result.train_time_s, "wall_s": wall, "reached": reached,
            "test_acc": result.metrics["test/accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--model", default="modadd-113")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=40_000, help="give up on a run after this many steps")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--reference-max-steps", type=int, default=None,
                        help="stop the reference here (it then only measures ms/step; the ratio is a lower bound)")
    parser.add_argument("--reference-forward", choices=["hooked", "fast"], default="hooked",
                        help="train the reference on the hooked forward (default, as it was) or the fast path")
    parser.add_argument("--skip-default", action="store_true")
    args = parser.parse_args()

    rec = recipe(args.model)
    t = rec.train
    m = rec.model
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.model}: {m.n_layers} layer, "
          f"d_model {m.d_model}, {m.n_heads} heads, d_mlp {m.d_mlp}, {rec.task!r}")
    print(f"default: lr {t.lr}, weight decay {t.weight_decay}, betas {t.betas}, warm-up {t.warmup_steps}; "
          f"evaluating every {args.eval_every} steps; stop at {TARGET}; 'train s' excludes evaluation")
    rows = []
    for seed in args.seeds:
        default_cfg = dataclasses.replace(t, seed=seed, steps=args.max_steps, eval_every=args.eval_every,
                                          checkpoint_every=args.max_steps, stop_when=TARGET)
        row = {"seed": seed}
        if not args.skip_default:
            row["default"] = run(args.model, default_cfg, hooked=False)
        if not args.skip_reference:
            ref_cfg = reference_config(seed, args.eval_every, args.reference_max_steps or args.max_steps)
            row["reference"] = run(args.model, ref_cfg, hooked=args.reference_forward == "hooked")
        rows.append(row)
        _print_row(row)

    if not args.skip_reference and not args.skip_default:
        ratios = [r["reference"]["train_s"] / r["default"]["train_s"] for r in rows]
        step_ratios = [r["reference"]["steps"] / r["default"]["steps"] for r in rows]
        spread = f" (min {min(ratios):.1f}x, max {max(ratios):.1f}x)" if len(ratios) > 1 else ""
        print(f"speed-up in training time: mean {statistics.mean(ratios):.1f}x{spread}; "
              f"in steps: mean {statistics.mean(step_ratios):.1f}x")
        if not all(r["reference"]["reached"] and r["default"]["reached"] for r in rows):
            print(f"warning: a run stopped before {TARGET}; its ratio is a bound")


def _print_row(row: dict) -> None:
    for label in ("reference", "default"):
        if label in row:
            r = row[label]
            flag = "" if r["reached"] else f"  (not reached: test accuracy {r['test_acc']:.3f})"
            print(f"  seed {row['seed']} {label:<9} {r['steps']:>6} steps | train {r['train_s']:8.1f} s"
                  f" | wall {r['wall_s']:8.1f} s | {1e3 * r['train_s'] / max(r['steps'], 1):6.1f} ms/step{flag}",
                  flush=True)
    if "reference" in row and "default" in row:
        bound = "" if row["reference"]["reached"] else "> "  # the reference was stopped short
        print(f"  seed {row['seed']} ratio     {bound}{row['reference']['train_s'] / row['default']['train_s']:.1f}x",
              flush=True)


if __name__ == "__main__":
    main()
