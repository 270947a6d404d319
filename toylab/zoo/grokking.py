"""Grokking runs of the zoo's modular-addition recipes: retrained with snapshots, measured, shipped.

The measures themselves (``toylab.methods.progress``) are a method on any run's
snapshots; this module ties them to the zoo: where a recipe's run is cached, how it is
regenerated, and the compact copy that ships beside the checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from toylab import checkpoint as ckpt
from toylab import zoo  # imported by toylab.zoo once the names below exist
from toylab.devices import DeviceLike
from toylab.methods.fourier import key_frequencies as measure_key_frequencies
from toylab.methods.progress import (
    _SERIES,
    DEFAULT_SNAPSHOTS,
    MAX_SHIPPED_BYTES,
    PROGRESS_FILE,
    ProgressMeasures,
    progress_measures,
)
from toylab.snapshots import MANIFEST, Snapshots, snapshot_steps
from toylab.tasks import ModularAddition
from toylab.train import train


# ---- a zoo recipe's grokking run, regenerated into the cache ------------------------
def progress_dir(name: str, seed: int) -> Path:
    """Where ``grokking_run`` keeps a run: ``zoo.runs_dir() / NAME / progress-seed-S``."""
    return zoo.runs_dir() / name / f"progress-seed-{seed}"


def grokking_run(
    name: str = "modadd-113",
    seed: int | None = None,
    every: int | None = None,
    out: str | Path | None = None,
    *,
    fresh: bool = False,
    progress: bool = True,
    device: DeviceLike = "cpu",
) -> ProgressMeasures:
    """Retrain zoo recipe ``name`` with snapshots along the way and measure its progress.

    Trains exactly as ``toylab train NAME --seed S`` does (same recipe, same weights),
    with a ``Snapshots`` callback writing the weights every ``every`` steps (default: the
    interval of the snapshots already in ``out``, else the recipe's steps / 200, rounded
    up) into ``out/snapshots``, then writes the measures to
    ``out/progress.json`` and returns them. ``out`` defaults to ``progress_dir(name, seed)``
    (``$TOYLAB_HOME/runs/NAME/progress-seed-S``). Calling it again reuses what is there:
    an interrupted run resumes (Ctrl-C raises ``TrainingInterrupted``), a finished one is
    only measured, a measured one only loaded. ``fresh`` deletes ``out`` first. ``device``
    is where it trains (the measures are taken on the CPU, from the snapshots).

    The key frequencies are the recipe's certified truth's (``recipe.truth_for(seed)``,
    ``truth.claims["key_frequencies"]``) for the recipe's own seed (and any other seed it
    certifies); for another seed no truth holds, so they are measured on the final model
    (``toylab.methods.fourier.key_frequencies``). ``meta["key_frequencies_source"]`` says
    which, and notes when the retrained model's own key frequencies differ from the truth's.
    """
    rec = zoo.recipe(name)
    if not isinstance(rec.task, ModularAddition) or rec.build is not None:
        raise ValueError(f"{name} is not a trained modular-addition recipe; progress measures are for grokking "
                         f"runs: {[n for n in zoo.names() if isinstance(zoo.recipe(n).task, ModularAddition)]}")
    seed = rec.train.seed if seed is None else seed
    out = Path(out) if out is not None else progress_dir(name, seed)
    if fresh and out.exists():
        shutil.rmtree(out)
    snap_dir = out / "snapshots"
    if every is None and (snap_dir / MANIFEST).exists():  # reuse the interval of the snapshots there
        every = ckpt.read_json(snap_dir / MANIFEST, "snapshot manifest").get("every")
    if every is None:
        every = max(1, math.ceil(rec.train.steps / DEFAULT_SNAPSHOTS))
    callback = Snapshots(snap_dir, every)  # raises if out holds snapshots at another interval
    train_cfg = rec.with_seed(seed).train
    card_file = out / ckpt.CARD_FILE
    if card_file.exists():  # finished: train() would return without running the callbacks
        steps = ckpt.read_json(card_file, "model card")["steps"]
        if not snap_dir.is_dir() or steps not in snapshot_steps(snap_dir):
            raise ValueError(f"{out} holds a finished run without its snapshots; rerun with fresh=True (--fresh)")
    card = {"name": name, "description": rec.description, "claims": list(rec.claims), "snapshots_every": every}
    result = train(rec.model, rec.task, train_cfg, out_dir=out, callbacks=[callback], progress=progress, card=card,
                   objective=rec.objective(), device=device)

    truth = rec.truth_for(seed, result.model)
    measured = measure_key_frequencies(result.model, rec.task)
    if truth is not None and "key_frequencies" in truth.claims:
        freqs = list(truth.claims["key_frequencies"])
        source = f"the truth of {name} (certified for seed {seed})"
        if sorted(freqs) != measured:
            source += f"; the retrained final model's own key frequencies are {measured}"
    else:
        freqs = measured
        source = f"measured on the final model by key_frequencies ({name} has no certified truth for seed {seed})"
        if not freqs:
            raise ValueError(f"{name} seed {seed} did not grok by step {result.steps}: its final model has no key "
                             "frequencies to measure progress against")
    meta = {"name": name, "seed": seed, "every": every, "key_frequencies_source": source}

    path = out / PROGRESS_FILE
    steps = snapshot_steps(snap_dir)
    if path.exists():
        try:
            cached = ProgressMeasures.load(path)
            if list(cached.steps) == steps and list(cached.key_frequencies) == sorted(freqs):
                return cached
        except ckpt.CheckpointError:
            pass  # recompute below
    measures = progress_measures(snap_dir, rec.task, freqs, progress=progress, meta=meta)
    measures.save(path)
    return measures


# ---- the compact subset that ships ------------------------------------------------------
def ship_progress(measures: ProgressMeasures, folder: str | Path, max_checkpoints: int = 150,
                  digits: int = 4) -> Path:
    """Write a compact copy of ``measures`` to ``folder/progress.json`` for shipping. Returns the path.

    Measures only, no weights: at most ``max_checkpoints`` checkpoints (evenly spaced,
    always keeping the first, the last and each phase boundary), values rounded to
    ``digits`` significant digits, compact JSON. Raises ValueError if the file would reach
    MAX_SHIPPED_BYTES (100 KB): pass a smaller ``max_checkpoints``.
    """
    if isinstance(max_checkpoints, bool) or not isinstance(max_checkpoints, int) or max_checkpoints < 2:
        raise ValueError(f"max_checkpoints must be an int >= 2, got {max_checkpoints!r}")
    n = len(measures)
    keep = {0, n - 1}
    if n > max_checkpoints:
        boundaries = {b for ph in measures.phases().phases for b in (ph.start, ph.end) if b is not None}
        keep |= {i for i, s in enumerate(measures.steps) if s in boundaries}
        room = max(max_checkpoints - len(keep), 0)
        keep |= {round(k * (n - 1) / max(room - 1, 1)) for k in range(room)}
    else:
        keep = set(range(n))
    small = measures.select(keep)

    def r(v: float) -> float:
        return float(f"{v:.{digits}g}")

    data = small.to_dict()
    for name in _SERIES:
        data[name] = [r(v) for v in data[name]]
    data["embedding_spectrum"] = [[r(v) for v in row] for row in data["embedding_spectrum"]]
    data["meta"] = {**data["meta"], "shipped": {"checkpoints": len(small), "of": n, "digits": digits}}
    blob = (json.dumps(data, separators=(",", ":")) + "\n").encode()
    if len(blob) >= MAX_SHIPPED_BYTES:
        raise ValueError(f"the shipped progress file would be {len(blob):,} bytes (limit {MAX_SHIPPED_BYTES:,}); "
                         f"pass a smaller max_checkpoints than {max_checkpoints}")
    path = Path(folder) / PROGRESS_FILE
    ckpt.atomic_write_bytes(path, blob)
    return path


def load_shipped_progress(name: str) -> ProgressMeasures:
    """The progress measures shipped with zoo model ``name`` (``toylab/zoo/checkpoints/NAME/progress.json``)."""
    zoo.recipe(name)  # KeyError with the nearest names
    path = zoo.SHIPPED_DIR / name / PROGRESS_FILE
    if not path.is_file():
        raise ckpt.CheckpointError(f"{name} ships no progress measures ({path} is missing); compute them with "
                                   f"`toylab progress {name}`")
    return ProgressMeasures.load(path)
