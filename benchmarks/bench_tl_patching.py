"""toylab's activation patching against TransformerLens's patching utilities, same model and batch.

For induction-2l (2 layers, d_model 64, 4 heads, attention only) on a 64-row counterfactual
pair of 32 tokens, and brackets-siit (LayerNorm, MLP), each sweep is computed twice in one
run: by ``toylab.methods.activation_patching`` on the toylab model, and by the
``transformer_lens.patching`` utility for the same target (``get_act_patch_resid_pre``,
``get_act_patch_attn_head_out_all_pos``, ``get_act_patch_attn_head_out_by_pos``, ...) on the
model exported with ``toylab.interop.to_transformer_lens``, with the same normalised
logit-difference metric. It prints the milliseconds of each and patches per second, the
speed-up measured in this run, and the largest |toylab - TransformerLens| over the scores.
Both times run from (model, pair) to scores: TransformerLens's sweep call plus the clean
cache and the clean and corrupted baseline runs the call needs (a user computes them once
per pair; with several sweeps on one pair that is counted once per sweep here, as toylab's
own two cached runs are counted in each of its calls). In a sweep with few patches (one per
head) those fixed runs dominate both sides, which caps the speed-up there.
Every installed backend is measured: HookedTransformer (TransformerLens 3.x) and
TransformerBridge.boot_native (3.x and 4.x; 3.x's bridge skips "pattern", whose hook
edits it ignores).

Each sweep also prints its ceiling: TransformerLens's time over toylab's clean and corrupted
runs alone (the runs every sweep needs before its first patch), i.e. the speed-up toylab would
reach if every patch cost nothing.

Measured on a shared 2-core machine (OMP_NUM_THREADS=1, noisy: +-20% between runs),
torch 2.13.0, transformer-lens 3.9.0: TransformerLens runs ~65-160 patched forwards a second
on induction-2l, 200-320 on brackets-siit. toylab's position-resolved sweeps (50-256
patches) are 10-17x faster, except the bridge's resid_pre on induction-2l (8x; the bridge's
own resid_pre sweep runs 130/s there, twice the HookedTransformer's). The per-head sweeps
(4-8 patches) are 2.5-3.9x faster, against ceilings of 3.8-8.9x: toylab's two runs cost
more than a tenth of TransformerLens's whole sweep, so no speed-up of the patches can bring
them to 10x. The scores agree to 1.2e-7.

    pip install torch==2.13.0 -e ".[tl]"
    OMP_NUM_THREADS=1 python benchmarks/bench_tl_patching.py [--check]

With ``--check`` it exits 1 unless every sweep is at least 10 times faster in toylab and
agrees to 1e-5 (the issue's target, which the per-head sweeps cannot meet; see above).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's sweeps draw progress bars

import torch  # noqa: E402

from toylab.interop.transformer_lens import (  # noqa: E402
    has_hooked_transformer,
    tl_activation_patching,
    tl_patching_inputs,
    tl_version,
    to_transformer_lens,
)
from toylab.methods import activation_patching  # noqa: E402
from toylab.methods.patching import _Setup  # noqa: E402  (its two runs: the fixed cost of a sweep)
from toylab.zoo import load  # noqa: E402

from timing import best_time  # noqa: E402  (benchmarks/timing.py, beside this script)

MIN_SPEEDUP = 10.0
MAX_ERROR = 1e-5
# (zoo name, batch, targets): the first is the configuration the issue measured TL on.
CASES = [("induction-2l", 64, ("resid_pre", "head", "head_pos", "pattern")),
         ("brackets-siit", 64, ("resid_pre", "mlp_out", "head", "head_pos"))]


def n_patches(cfg, target: str, n_pos: int) -> int:
    per_layer = {"head": cfg.n_heads, "head_pos": cfg.n_heads * n_pos, "pattern": cfg.n_heads}
    return cfg.n_layers * per_layer.get(target, n_pos)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 unless >= 10x faster and within 1e-5")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each toylab sweep (best kept)")
    args = parser.parse_args()
    backends = (["hooked"] if has_hooked_transformer() else []) + ["bridge"]
    print(f"torch {torch.__version__}, transformer-lens {tl_version()}, {torch.get_num_threads()} threads")
    worst_speedup, worst_error, met, sweeps = float("inf"), 0.0, 0, 0
    for name, batch, targets in CASES:
        zm = load(name)
        pair = zm.task.counterfactual(batch, seed=0)
        n_pos = pair.clean.tokens.shape[1]
        print(f"{name}: batch {batch} x {n_pos} tokens ({zm.model.extra_repr()})")
        for backend in backends:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tl_model = to_transformer_lens(zm, backend=backend)
            setup_s, inputs = best_time(lambda: tl_patching_inputs(tl_model, pair), 2)
            print(f"  {backend}: TransformerLens {type(tl_model).__name__}; its clean cache and baseline "
                  f"runs take {setup_s * 1e3:.1f} ms, counted in each sweep below")
            for target in targets:
                if target == "pattern" and backend == "bridge" and tl_version().startswith("3."):
                    continue  # TL 3.x's bridge ignores hook_pattern edits: nothing honest to time
                # Both from (model, pair) to scores: TransformerLens's sweep plus the clean cache
                # and baseline runs it needs (timed above), toylab's whole call with its own two
                # cached runs. Best of 2 for TL (its sweeps take seconds).
                sweep_s, theirs = best_time(lambda t=target: tl_activation_patching(tl_model, pair, t, inputs=inputs), 2)
                tl_s = setup_s + sweep_s
                toy_s, ours = best_time(lambda t=target: activation_patching(zm.model, pair, t), args.repeats)
                # The clean and corrupted runs every sweep needs before its first patch: the
                # speed-up if every patch were free.
                runs_s, _ = best_time(lambda t=target: _Setup.make(zm.model, pair, t, None, "denoise"), args.repeats)
                error = (ours.scores - theirs).abs().max().item()
                speedup = tl_s / toy_s
                worst_speedup, worst_error = min(worst_speedup, speedup), max(worst_error, error)
                met, sweeps = met + (speedup >= MIN_SPEEDUP), sweeps + 1
                patches = n_patches(zm.model.cfg, target, n_pos)
                print(f"  {backend:<6} {target:<9} {patches:4d} patches | TL {tl_s * 1e3:7.1f} ms"
                      f" ({patches / tl_s:5.0f}/s) | toylab {toy_s * 1e3:6.1f} ms ({patches / toy_s:5.0f}/s)"
                      f" | {speedup:5.1f}x (ceiling {tl_s / runs_s:5.1f}x) | max |toylab - TL| {error:.1e}")
    ok = worst_speedup >= MIN_SPEEDUP and worst_error <= MAX_ERROR
    print(f"{met} of {sweeps} sweeps >= {MIN_SPEEDUP:.0f}x faster in toylab (slowest {worst_speedup:.1f}x); "
          f"largest |toylab - TL| {worst_error:.1e} (need <= {MAX_ERROR:.0e}): {'OK' if ok else 'NOT MET'}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
