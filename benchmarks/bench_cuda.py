"""toylab on a GPU: zoo training and a leaderboard subset on the CPU and on CUDA, side by side.

For each of a few zoo recipes it trains the model from its recipe on both devices (the same
seed, so the same initial weights and the same batches: toylab draws both on the CPU), and
prints the wall time on each, the largest difference between the two runs' final weights,
and the final metrics of each. Then it scores a few baselines on a few models with the
leaderboard on each device and prints the times and the largest difference between any two
figures the board reports. A GPU sums in another order than the CPU, so the weights differ
by float rounding grown over training; the metrics should agree to a few decimals.

    python benchmarks/bench_cuda.py                       # the defaults below
    python benchmarks/bench_cuda.py --device cuda:1 --recipes induction-tiny
    python benchmarks/bench_cuda.py --skip-training       # only the leaderboard

Exits with status 2 and a message where CUDA is absent. Training the two default recipes
on the CPU takes a few minutes on one core; the leaderboard subset about a minute.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

RECIPES = ("induction-tiny", "modadd-tiny")  # a sampled-batch task and a full-batch (fast-path) one
MODELS = ("induction-tiny", "trap-or-gate")  # the leaderboard subset: a trained model and a constructed trap
METHODS = ("random", "truth", "resample-ablation", "atp-star", "eap-ig", "acdc", "edge-pruning")
GRAPH_MODELS = ("conjunctions",)  # the feature-graph track, with its untrained-transcoder baseline


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device):
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def compare_training(name: str, device: torch.device, root: Path) -> None:
    from toylab import zoo

    runs = {}
    for dev in (torch.device("cpu"), device):
        out = root / f"{name}-{dev.type}"
        seconds, result = _timed(lambda out=out, dev=dev: zoo.train_recipe(name, out=out, progress=False, device=dev),
                                 dev)
        runs[dev.type] = (seconds, result)
    (cpu_s, cpu), (gpu_s, gpu) = runs["cpu"], runs[device.type]
    cpu_w, gpu_w = cpu.model.state_dict(), gpu.model.state_dict()
    weight_diff = max((cpu_w[k].float() - gpu_w[k].detach().cpu().float()).abs().max().item() for k in cpu_w)
    print(f"\n{name}: {cpu.steps} steps on cpu in {cpu_s:.1f} s, {gpu.steps} steps on {device} in {gpu_s:.1f} s "
          f"({cpu_s / gpu_s:.2f}x)")
    print(f"  max |weight difference| {weight_diff:.3g}")
    print(f"  {'metric':<22} {'cpu':>12} {device.type:>12} {'|diff|':>10}")
    for metric in sorted(set(cpu.metrics) | set(gpu.metrics)):
        a, b = cpu.metrics.get(metric, math.nan), gpu.metrics.get(metric, math.nan)
        print(f"  {metric:<22} {a:12.6g} {b:12.6g} {abs(a - b):10.3g}")


def _figures(board) -> dict[tuple, float]:
    """Every number the board reports: (track, method, model, seed, metric) -> value."""
    out = {}
    for track, reports in (("circuits", board.reports), ("graphs", board.graphs)):
        for label, report in reports.items():
            for e in report.entries:
                if e.error is not None:
                    out[(track, label, e.model, e.seed, "error")] = e.error
                for metric, value in e.metrics.items():
                    out[(track, label, e.model, e.seed, metric)] = value
    return out


def compare_leaderboard(device: torch.device) -> None:
    from toylab.validate.baselines import BASELINES
    from toylab.validate.graph_baselines import GRAPH_BASELINES
    from toylab.validate.leaderboard import leaderboard

    methods = {m: BASELINES[m] for m in METHODS}
    boards, times = {}, {}
    for dev in (torch.device("cpu"), device):
        times[dev.type], boards[dev.type] = _timed(lambda dev=dev: leaderboard(
            methods, names=list(MODELS + GRAPH_MODELS), seeds=[0], featurisers={},
            graph_methods={"untrained": GRAPH_BASELINES["untrained"]}, device=dev), dev)
    cpu, gpu = _figures(boards["cpu"]), _figures(boards[device.type])
    print(f"\nleaderboard: {len(METHODS)} methods x {list(MODELS)} (+ the untrained feature graph on "
          f"{list(GRAPH_MODELS)}): cpu {times['cpu']:.1f} s, {device} {times[device.type]:.1f} s "
          f"({times['cpu'] / times[device.type]:.2f}x)")
    for label in METHODS:
        own = {d: sum(e.seconds for e in boards[d].reports[label].entries) for d in boards}
        print(f"  {label:<20} cpu {own['cpu']:7.2f} s   {device.type} {own[device.type]:7.2f} s")
    errors = {k: (cpu.get(k), gpu.get(k)) for k in set(cpu) | set(gpu) if k[-1] == "error"}
    same = sum(a == b for a, b in errors.values())
    if same:  # a method that cannot run on a model (e.g. GradDrop on one layer) fails alike on both
        print(f"  {same} entries fail with the same error on both devices")
    for key, (a, b) in sorted(errors.items()):
        if a != b:
            print(f"  error {key[:4]} differs: cpu {a!r}, {device.type} {b!r}")
    only = sorted(set(cpu) ^ set(gpu))
    if only:
        print(f"  figures reported on one device only: {only[:8]}{' ...' if len(only) > 8 else ''}")
    diffs = []
    for key in set(cpu) & set(gpu):
        a, b = cpu[key], gpu[key]
        if isinstance(a, float) and isinstance(b, float) and not (math.isnan(a) and math.isnan(b)):
            diffs.append((abs(a - b), key))
    diffs.sort(reverse=True)
    if diffs:
        print(f"  max |figure difference| {diffs[0][0]:.3g} over {len(diffs)} figures, at {diffs[0][1]}")
        for d, key in diffs[1:5]:
            print(f"    next: {d:.3g} at {key}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the GPU to compare with the CPU (default: cuda)")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), help=f"zoo recipes to train (default: {RECIPES})")
    parser.add_argument("--skip-training", action="store_true", help="only the leaderboard")
    parser.add_argument("--skip-leaderboard", action="store_true", help="only the training")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print(f"bench_cuda: CUDA is not available here (torch {torch.__version__}, built with CUDA "
              f"{torch.version.cuda}); run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    from toylab.devices import device_name, resolve_device

    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; GPU {device_name(device)}")
    if not args.skip_training:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.recipes:
                compare_training(name, device, Path(tmp))
    if not args.skip_leaderboard:
        compare_leaderboard(device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
