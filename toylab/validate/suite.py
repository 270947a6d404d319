"""The models a method is scored on: every zoo model with a truth, each shipped seed, and folders.

A folder joins the suite like a zoo model. It holds

    config.json         the model config (TransformerLens field names: n_layers, d_model, ...)
    model.safetensors   the weights, keyed in the TransformerLens layout (blocks.0.attn.W_Q, ...)
    truth.json          the circuit (toylab.truth.Truth.save writes it)
    task.json           the task, e.g. {"kind": "induction", "n_tokens": 48, "n_ctx": 32}
                        (a folder written by ``toylab train`` has it in card.json instead)

``toylab.checkpoint.save_model(folder, model)`` and ``truth.save(folder)`` write the first
three files.

A seed of a zoo model that ships only a few joins the suite once trained with
``toylab train NAME --seeds ...`` (into ``$TOYLAB_HOME/runs/NAME/seed-S``), where its
recipe certifies a truth for that seed.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from toylab import checkpoint as ckpt
from toylab import zoo
from toylab.devices import DeviceLike
from toylab.models import Transformer
from toylab.tasks import Task, task_from_dict
from toylab.truth import Algorithm, Truth
from toylab.truth.truth import TRUTH_FILE
from toylab.zoo.seeds import is_trained, seed_dir

TASK_FILE = "task.json"


@dataclass
class Subject:
    """One model of the suite, with everything the harness (not the method) may see."""

    name: str  # zoo name or folder path
    seed: int
    model: Transformer
    task: Task
    truth: Truth
    algorithm: Algorithm | None
    cache: dict = field(default_factory=dict, repr=False)  # the harness's per-model measurements, shared by methods
    folder: Path | None = None  # where it was loaded from; None for a shipped zoo model

    @property
    def label(self) -> str:
        return f"{self.name} (seed {self.seed})"


def zoo_names() -> list[str]:
    """Zoo models that ship a truth."""
    return [name for name in zoo.names() if (zoo.shipped_path(name) / TRUTH_FILE).exists()]


def trained_seed(name: str, seed: int) -> Path | None:
    """The folder of seed ``seed`` of zoo model ``name`` if it was trained here
    (``toylab train NAME --seeds ...``) and its truth certified, else None: a truth whose
    certificate failed (IOI's does on some seeds) is no answer key to score against."""
    folder = seed_dir(name, seed)
    if not is_trained(folder) or not (folder / TRUTH_FILE).exists():
        return None
    return folder if ckpt.read_json(folder / ckpt.CARD_FILE, "model card")["certificate"]["passed"] else None


def zoo_subjects(name: str, seeds: list[int] | None = None, device: DeviceLike = "cpu") -> list[Subject]:
    """Zoo model ``name`` at ``seeds`` (default: those it ships), shipped or trained here;
    seeds that are neither are left out (``missing_seeds`` names them)."""
    rec = zoo.recipe(name)
    out = []
    for seed in list(rec.seeds) if seeds is None else seeds:
        if seed in rec.seeds:
            zm = zoo.load(name, seed=seed, device=device)
            if zm.truth is None:
                raise ValueError(f"zoo model {name} (seed {seed}) has no truth to score a method against")
            out.append(Subject(name, seed, zm.model, zm.task, zm.truth, zm.algorithm))
        elif (folder := trained_seed(name, seed)) is not None:
            out.append(dataclasses.replace(load_folder(folder, device), name=name))
    return out


def missing_seeds(name: str, seeds: list[int]) -> list[int]:
    """Those of ``seeds`` of zoo model ``name`` that are neither shipped nor trained here with a
    certified truth."""
    shipped = zoo.recipe(name).seeds
    return [seed for seed in seeds if seed not in shipped and trained_seed(name, seed) is None]


def load_folder(path: str | Path, device: DeviceLike = "cpu") -> Subject:
    """A researcher's model with a known circuit, from a folder (see the module docstring), on ``device``."""
    path = Path(path)
    if not path.is_dir():
        raise ckpt.CheckpointError(f"--model {path}: no such folder (give a zoo name or a folder holding "
                                   f"config.json, model.safetensors, {TRUTH_FILE} and {TASK_FILE})")
    missing = [f for f in ("config.json", "model.safetensors", TRUTH_FILE) if not (path / f).exists()]
    card = ckpt.read_json(path / "card.json", "model card") if (path / "card.json").exists() else {}
    has_task = (path / TASK_FILE).exists() or "task" in card.get("recipe", {})
    if not has_task:
        missing.append(TASK_FILE)
    if missing:
        raise ckpt.CheckpointError(f"{path} cannot join the suite: missing {missing}. A model folder holds "
                                   f"config.json, model.safetensors (TransformerLens keys), {TRUTH_FILE} and "
                                   f"{TASK_FILE} ({{\"kind\": ..., params}})")
    model, card = ckpt.load_model(path, device=device)
    spec = ckpt.read_json(path / TASK_FILE, "task") if (path / TASK_FILE).exists() else card["recipe"]["task"]
    try:
        task = task_from_dict(spec)
    except ValueError as err:
        raise ckpt.CheckpointError(f"{path / TASK_FILE}: {err}") from None
    truth = Truth.load(path)
    try:
        truth.check_fits(model.cfg)
    except ValueError as err:
        raise ckpt.CheckpointError(f"{path / TRUTH_FILE} does not fit the model in {path}: {err}") from None
    name = card.get("name")
    rec = zoo.RECIPES.get(name) if name else None
    algorithm = rec.algorithm(task) if rec is not None and rec.algorithm else None
    return Subject(str(path), int(card.get("seed", 0)), model, task, truth, algorithm, folder=path)


# ---- a subject where the suite runs elsewhere (toylab.parallel) ------------------------------
@dataclass(frozen=True)
class SubjectSource:
    """What a worker needs to load a subject: a shipped zoo model's name and seed (toylab
    ships it), or a folder's files (the worker's machine may not have the folder)."""

    name: str
    seed: int
    files: dict[str, bytes] | None = None


def source_of(subject: Subject) -> SubjectSource:
    if subject.folder is None:
        return SubjectSource(subject.name, subject.seed)
    files = {p.name: p.read_bytes() for p in sorted(subject.folder.iterdir()) if p.is_file()}
    return SubjectSource(subject.name, subject.seed, files)


def load_source(source: SubjectSource, device: DeviceLike = "cpu") -> Subject:
    if source.files is None:
        return zoo_subjects(source.name, [source.seed], device)[0]
    with tempfile.TemporaryDirectory(prefix="toylab-subject-") as tmp:
        for file_name, data in source.files.items():
            (Path(tmp) / file_name).write_bytes(data)
        subject = load_folder(tmp, device)
    return dataclasses.replace(subject, name=source.name, seed=source.seed, folder=None)


def subjects(names: list[str] | None = None, seeds: list[int] | None = None,
             device: DeviceLike = "cpu") -> list[Subject]:
    """Zoo names and folder paths -> the suite (every zoo model with a truth when ``names`` is None),
    its models loaded on ``device``."""
    out = []
    for name in zoo_names() if names is None else names:
        if name in zoo.RECIPES:
            out += zoo_subjects(name, seeds, device)
        elif Path(name).exists():
            out.append(load_folder(name, device))
        else:
            zoo.recipe(name)  # raises, naming the nearest zoo models
    if not out:
        raise ValueError(f"no model to score: {names} with seeds {seeds} selects nothing")
    return out
