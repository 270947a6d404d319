"""What Ray buys a seed sweep: the same sweep serially and on a local Ray cluster, in one run.

    python benchmarks/bench_ray.py                        # 4 seeds of induction-tiny, 2 workers
    python benchmarks/bench_ray.py --recipe modadd-tiny --seeds 8 --workers 2

Prints the serial sweep's time, the cluster's start (paid once per session), the sweep on the
cluster, their ratio, and Ray's overhead per task: no-op jobs on the cluster against the same
jobs run here. Each sweep trains into a fresh TOYLAB_HOME; the two must give the same weights,
bit for bit (checked). Run it alone: another torch process on the machine skews every figure.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from toylab import parallel
from toylab.parallel import LOCAL, Job, run_jobs


def _noop(x: int) -> int:
    return x


def _sweep(recipe: str, seeds: list[int], home: Path, ray: str | None) -> float:
    from toylab.zoo.seeds import train_seeds

    os.environ["TOYLAB_HOME"] = str(home)
    start = time.perf_counter()
    outcome, _ = train_seeds(recipe, seeds, ray=ray, progress=False)
    if not outcome.ok:
        raise SystemExit(f"the sweep failed: {outcome.summary()}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="induction-tiny")
    parser.add_argument("--seeds", type=int, default=4, help="how many seeds (from 100 on, none shipped)")
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the local cluster, one task each")
    parser.add_argument("--noops", type=int, default=200, help="no-op jobs to measure the per-task overhead")
    args = parser.parse_args()
    import ray

    from toylab.zoo.seeds import seed_dir

    torch.set_num_threads(1)
    seeds = list(range(100, 100 + args.seeds))
    with tempfile.TemporaryDirectory() as tmp:
        serial_s = _sweep(args.recipe, seeds, Path(tmp) / "serial", None)
        start = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=256 * 2**20)
        parallel.connect(LOCAL)  # joins the cluster just started
        run_jobs([Job(f"warm {i}", _noop, (i,)) for i in range(args.workers)], ray=LOCAL, progress=False)
        start_s = time.perf_counter() - start  # the cluster and one warm worker per CPU
        ray_s = _sweep(args.recipe, seeds, Path(tmp) / "ray", LOCAL)
        for seed in seeds:
            os.environ["TOYLAB_HOME"] = str(Path(tmp) / "serial")
            a = (seed_dir(args.recipe, seed) / "model.safetensors").read_bytes()
            os.environ["TOYLAB_HOME"] = str(Path(tmp) / "ray")
            if a != (seed_dir(args.recipe, seed) / "model.safetensors").read_bytes():
                raise SystemExit(f"seed {seed}: the Ray sweep's weights differ from the serial sweep's")
        noops = [Job(f"noop {i}", _noop, (i,)) for i in range(args.noops)]
        here = time.perf_counter()
        run_jobs(noops, progress=False)
        here_s = time.perf_counter() - here
        there = time.perf_counter()
        run_jobs(noops, ray=LOCAL, progress=False)
        there_s = time.perf_counter() - there
        ray.shutdown()

    n = len(seeds)
    print(f"{args.recipe}, {n} seeds: serial {serial_s:.1f} s ({serial_s / n:.1f} s a seed); on a local Ray "
          f"cluster of {args.workers} workers {ray_s:.1f} s; speed-up {serial_s / ray_s:.2f}x "
          f"(ideal {min(args.workers, n)}x); same weights bit for bit")
    print(f"cluster start, with {args.workers} warm workers: {start_s:.1f} s (once per session; "
          f"with it the speed-up is {serial_s / (ray_s + start_s):.2f}x)")
    print(f"Ray's overhead per task: {(there_s - here_s) / args.noops * 1e3:.1f} ms "
          f"({args.noops} no-op jobs: {there_s:.2f} s on the cluster, {here_s:.3f} s here)")


if __name__ == "__main__":
    main()
