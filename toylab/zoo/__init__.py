"""The model zoo: named recipes whose small checkpoints ship inside the package.

    toylab.zoo.names()                 # ["induction-2l", "induction-tiny", "modadd-113", ...]
    zm = toylab.zoo.load("modadd-113")  # zm.model, zm.task, zm.card, zm.recipe
    zm.check()                          # re-measures the recipe's claims on the loaded weights

Every shipped checkpoint is reproduced from its seed by ``toylab train NAME``.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toylab import checkpoint as ckpt
from toylab.models import Transformer
from toylab.tasks import Task, task_from_dict
from toylab.train import TrainResult, evaluate, parse_stop_when, rule_holds, train
from toylab.zoo.recipes import RECIPES, Recipe

SHIPPED_DIR = Path(__file__).parent / "checkpoints"


def names() -> list[str]:
    return sorted(RECIPES)


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        nearest = difflib.get_close_matches(name, RECIPES, n=3, cutoff=0.3)
        hint = f"did you mean {nearest}? " if nearest else ""
        raise KeyError(f"no zoo model named {name!r}; {hint}available: {names()}")
    return RECIPES[name]


def runs_dir() -> Path:
    """Where ``toylab train`` writes by default: $TOYLAB_HOME/runs, else ~/.cache/toylab/runs."""
    home = os.environ.get("TOYLAB_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "toylab") / "runs"


@dataclass
class ZooModel:
    name: str
    model: Transformer
    task: Task
    card: dict[str, Any]
    path: Path
    recipe: Recipe | None  # None for a folder that is not a zoo recipe

    def check(self) -> dict[str, tuple[float, bool]]:
        """Evaluate the model now and test each claim: ``{claim: (measured value, holds)}``."""
        metrics = evaluate(self.model, self.task)
        claims = self.recipe.claims if self.recipe else ()
        return {claim: (metrics[parse_stop_when(claim)[0]], rule_holds(claim, metrics)) for claim in claims}


def load(name_or_path: str | Path, device: str = "cpu") -> ZooModel:
    """A shipped zoo model by name, or any run folder written by ``toylab train``."""
    path = Path(name_or_path)
    if isinstance(name_or_path, str) and name_or_path in RECIPES:
        path = SHIPPED_DIR / name_or_path
        if not path.is_dir():
            raise ckpt.CheckpointError(
                f"zoo model {name_or_path!r} has no shipped checkpoint at {path}; "
                f"train it with `toylab train {name_or_path} --out {path}`"
            )
    elif not path.is_dir():
        recipe(str(name_or_path))  # raises with the nearest names
    model, card = ckpt.load_model(path, device=device)
    if "recipe" not in card:
        raise ckpt.CheckpointError(f"{path} has no card with a recipe; it was not written by toylab")
    task = task_from_dict(card["recipe"]["task"])
    name = card.get("name", path.name)
    return ZooModel(name, model, task, card, path, RECIPES.get(name))


def train_recipe(name: str, seed: int | None = None, out: str | Path | None = None,
                 progress: bool = True) -> TrainResult:
    """Train zoo recipe ``name`` (with its own seed unless one is given)."""
    rec = recipe(name)
    train_cfg = rec.train if seed is None else rec.with_seed(seed).train
    out = Path(out) if out is not None else runs_dir() / name / f"seed-{train_cfg.seed}"
    card = {"name": name, "description": rec.description, "claims": list(rec.claims)}
    return train(rec.model, rec.task, train_cfg, out_dir=out, progress=progress, card=card)


__all__ = ["RECIPES", "Recipe", "ZooModel", "load", "names", "recipe", "runs_dir", "train_recipe"]
