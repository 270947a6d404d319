"""The models a method is scored on: every zoo model with a truth, each shipped seed, and folders.

A folder joins the suite like a zoo model. It holds

    config.json         the model config (TransformerLens field names: n_layers, d_model, ...)
    model.safetensors   the weights, keyed in the TransformerLens layout (blocks.0.attn.W_Q, ...)
    truth.json          the circuit (toylab.truth.Truth.save writes it)
    task.json           the task, e.g. {"kind": "induction", "n_tokens": 48, "n_ctx": 32}
                        (a folder written by ``toylab train`` has it in card.json instead)

``toylab.checkpoint.save_model(folder, model)`` and ``truth.save(folder)`` write the first
three files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toylab import checkpoint as ckpt
from toylab import zoo
from toylab.models import Transformer
from toylab.tasks import Task, task_from_dict
from toylab.truth import Algorithm, Truth
from toylab.truth.truth import TRUTH_FILE

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

    @property
    def label(self) -> str:
        return f"{self.name} (seed {self.seed})"


def zoo_names() -> list[str]:
    """Zoo models that ship a truth."""
    return [name for name in zoo.names() if (zoo.shipped_path(name) / TRUTH_FILE).exists()]


def zoo_subjects(name: str, seeds: list[int] | None = None) -> list[Subject]:
    rec = zoo.recipe(name)
    wanted = list(rec.seeds) if seeds is None else [s for s in seeds if s in rec.seeds]
    out = []
    for seed in wanted:
        zm = zoo.load(name, seed=seed)
        if zm.truth is None:
            raise ValueError(f"zoo model {name} (seed {seed}) has no truth to score a method against")
        out.append(Subject(name, seed, zm.model, zm.task, zm.truth, zm.algorithm))
    return out


def load_folder(path: str | Path) -> Subject:
    """A researcher's model with a known circuit, from a folder (see the module docstring)."""
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
    model, card = ckpt.load_model(path)
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
    return Subject(str(path), int(card.get("seed", 0)), model, task, truth, algorithm)


def subjects(names: list[str] | None = None, seeds: list[int] | None = None) -> list[Subject]:
    """Zoo names and folder paths -> the suite (every zoo model with a truth when ``names`` is None)."""
    out = []
    for name in zoo_names() if names is None else names:
        if name in zoo.RECIPES:
            out += zoo_subjects(name, seeds)
        elif Path(name).exists():
            out.append(load_folder(name))
        else:
            zoo.recipe(name)  # raises, naming the nearest zoo models
    if not out:
        raise ValueError(f"no model to score: {names} with seeds {seeds} selects nothing")
    return out
