"""Many seeds of a zoo recipe: ``toylab train NAME --seeds 0-49 [--ray [ADDRESS]]``.

Each seed is a job (``toylab.parallel``) that trains into ``$TOYLAB_HOME/runs/NAME/seed-S``,
the folder ``toylab train NAME --seed S`` uses, and certifies the truth there where the
recipe has one for that seed. Seeds already trained are kept, so a sweep run again after an
interruption trains only what is missing.

Where the jobs run on this machine (serially, or on a local Ray cluster) each trains straight
into its folder: a killed worker's retry resumes from the run's last checkpoint. On a cluster
of several machines a worker cannot write here, so each trains in a folder of its own and
sends the finished run's files back, which are written here atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from toylab import checkpoint as ckpt
from toylab.devices import DeviceLike
from toylab.parallel import LOCAL, Job, Outcome, run_jobs
from toylab.truth.truth import TRUTH_FILE
from toylab.zoo import recipe, runs_dir, train_recipe


def seed_dir(name: str, seed: int) -> Path:
    """Where ``toylab train NAME --seed S`` and a seed sweep write seed ``seed`` of ``name``."""
    return runs_dir() / name / f"seed-{seed}"


def is_trained(folder: Path) -> bool:
    """A finished run: its card written, its checkpoints gone, and its truth recorded where
    the card says one was certified (a run stopped between the two is not finished)."""
    card_path = folder / ckpt.CARD_FILE
    if not card_path.exists() or (folder / "checkpoints").exists():
        return False
    return "certificate" not in ckpt.read_json(card_path, "model card") or (folder / TRUTH_FILE).exists()


def train_seed(name: str, seed: int, device: DeviceLike = "cpu", out: str | None = None) -> dict:
    """One job of a sweep: train ``name`` with ``seed``, into ``out`` or, without it, into a
    folder of its own whose files come back as ``{"files": {path: bytes}}``."""
    if out is not None:
        result = train_recipe(name, seed=seed, out=out, progress=False, device=device)
        return {"steps": result.steps, "metrics": result.metrics}
    with tempfile.TemporaryDirectory(prefix=f"toylab-{name}-seed{seed}-") as tmp:
        result = train_recipe(name, seed=seed, out=Path(tmp) / "run", progress=False, device=device)
        files = {str(p.relative_to(result.out_dir)): p.read_bytes()
                 for p in sorted(Path(result.out_dir).rglob("*")) if p.is_file()}
    return {"steps": result.steps, "metrics": result.metrics, "files": files}


def write_run(folder: Path, files: dict[str, bytes]) -> None:
    """Put a run's files in ``folder`` all at once: written beside it, then swapped in, so
    the folder holds the old run or the new one, never part of one."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    for relative, data in files.items():
        target = staging / relative
        if target.resolve().parent != staging.resolve() and staging.resolve() not in target.resolve().parents:
            raise ValueError(f"a run's file {relative!r} would land outside its folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old)


def train_seeds(name: str, seeds: Sequence[int], *, ray: str | None = None, device: DeviceLike = "cpu",
                fresh: bool = False, progress: bool = True, shared_filesystem: bool | None = None,
                retries: int = 2) -> tuple[Outcome, list[int]]:
    """Train seeds ``seeds`` of recipe ``name``; returns the sweep's outcome (a result per
    seed trained, a failure per seed not) and the seeds skipped because already trained.

    ``ray``: None runs here one seed after another; ``"local"`` or an address fans the seeds
    out as Ray tasks. ``shared_filesystem`` says whether workers can write this machine's
    run folders: by default yes here and on a local cluster, no on a cluster's address.
    ``fresh`` retrains seeds already trained.
    """
    recipe(name)  # an unknown name is refused before anything runs
    if shared_filesystem is None:
        shared_filesystem = ray in (None, LOCAL)
    folders = {seed: seed_dir(name, seed) for seed in seeds}
    skipped = [] if fresh else [seed for seed, folder in folders.items() if is_trained(folder)]
    todo = [seed for seed in seeds if seed not in skipped]
    if fresh:
        for seed in todo:
            if folders[seed].exists():
                shutil.rmtree(folders[seed])
    jobs = [Job(f"{name} seed {seed}", train_seed,
                (name, seed, str(device), str(folders[seed]) if shared_filesystem else None))
            for seed in todo]
    seed_of = {job.name: seed for job, seed in zip(jobs, todo)}

    def keep(job: Job, result: dict) -> None:
        files = result.pop("files", None)
        if files is not None:
            write_run(folders[seed_of[job.name]], files)

    outcome = run_jobs(jobs, ray=ray, on_result=keep, progress=progress, retries=retries,
                       label=f"{name} seeds")
    return outcome, skipped


__all__ = ["is_trained", "seed_dir", "train_seed", "train_seeds", "write_run"]
