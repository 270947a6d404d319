"""The model zoo: named recipes whose small checkpoints ship inside the package.

    toylab.zoo.names()                 # ["induction-2l", "induction-tiny", "modadd-113", ...]
    zm = toylab.zoo.load("modadd-113")  # zm.model, zm.task, zm.card, zm.recipe, zm.truth
    zm.check()                          # re-measures the recipe's claims on the loaded weights
    zm.certify()                        # re-proves the ground truth by interventions
    toylab.zoo.load("induction-siit", seed=2)   # enforced recipes ship several seeds

Every shipped checkpoint is reproduced from its seed by ``toylab train NAME [--seed S]``,
which also certifies the truth and writes it (``truth.json``) beside the weights.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toylab import checkpoint as ckpt
from toylab.devices import DeviceLike, resolve_device
from toylab.models import Transformer
from toylab.tasks import Task, task_from_dict
from toylab.train import (
    TrainResult,
    evaluate,
    parse_stop_when,
    rule_holds,
    train,
    versions,
)
from toylab.truth import Algorithm, Truth
from toylab.truth.certify import Certificate, certify
from toylab.truth.identify import optional_edges
from toylab.truth.truth import TRUTH_FILE
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
    truth: Truth | None  # the circuit, from truth.json beside the weights; None if unknown

    @property
    def seed(self) -> int:
        return self.card["seed"]

    @property
    def algorithm(self) -> Algorithm | None:
        """The task's high-level causal model, where the recipe declares one."""
        return self.recipe.algorithm(self.task) if self.recipe and self.recipe.algorithm else None

    def certify(self) -> Certificate:
        """Recompute the certificate of this model's truth from its weights."""
        if self.truth is None:
            raise ValueError(f"{self.name} (seed {self.seed}) has no ground truth to certify")
        return certify(self.model, self.task, self.truth, self.algorithm)

    def check(self) -> dict[str, tuple[float, bool]]:
        """Evaluate the model now and test each claim: ``{claim: (measured value, holds)}``."""
        metrics = evaluate(self.model, self.task)
        claims = self.recipe.claims if self.recipe else ()
        return {claim: (metrics[parse_stop_when(claim)[0]], rule_holds(claim, metrics)) for claim in claims}


def shipped_path(name: str, seed: int | None = None) -> Path:
    """Where the zoo keeps ``name`` trained with ``seed`` (the recipe's own seed by default)."""
    rec = recipe(name)
    seed = rec.train.seed if seed is None else seed
    if seed not in rec.seeds:
        raise KeyError(f"{name} ships seeds {list(rec.seeds)}, not {seed}; "
                       f"train another with `toylab train {name} --seed {seed}`")
    return SHIPPED_DIR / (name if seed == rec.train.seed else f"{name}.seed{seed}")


def load(name_or_path: str | Path, device: DeviceLike = "cpu", seed: int | None = None) -> ZooModel:
    """A shipped zoo model by name (and seed), or any run folder written by ``toylab train``."""
    path = Path(name_or_path)
    if isinstance(name_or_path, str) and name_or_path in RECIPES:
        path = shipped_path(name_or_path, seed)
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
    truth = Truth.load(path) if (path / TRUTH_FILE).exists() else None
    if truth is not None:
        truth.check_fits(model.cfg)
    return ZooModel(name, model, task, card, path, RECIPES.get(name), truth)


def train_recipe(name: str, seed: int | None = None, out: str | Path | None = None,
                 progress: bool = True, device: DeviceLike = "cpu") -> TrainResult:
    """Train (or, for a constructed recipe, build) zoo recipe ``name`` on ``device``, then certify its truth.

    The truth, with its certificate, is written to ``truth.json`` beside the weights and
    the certificate's verdict into the card. A failing certificate is recorded, not hidden.
    """
    rec = recipe(name)
    train_cfg = rec.train if seed is None else rec.with_seed(seed).train
    out = Path(out) if out is not None else runs_dir() / name / f"seed-{train_cfg.seed}"
    card = {"name": name, "description": rec.description, "claims": list(rec.claims)}
    if rec.build is not None:
        result = _build(rec, train_cfg.seed, out, card, device)
    else:
        result = train(rec.model, rec.task, train_cfg, out_dir=out, progress=progress, card=card,
                       objective=rec.objective(), device=device)
    truth = rec.truth_for(train_cfg.seed, result.model)
    if truth is not None:
        record_truth(out, result.model, rec.task, truth, rec.algorithm(rec.task) if rec.algorithm else None)
    return result


def record_truth(folder: str | Path, model: Transformer, task: Task, truth: Truth,
                 algorithm: Algorithm | None = None) -> Certificate:
    """Declare ``truth``'s optional edges (``identify.optional_edges``, on the build data),
    certify it on held-out pairs, and write it with its certificate to ``folder/truth.json``
    and the verdict into the card beside it. A failing certificate is recorded, not hidden.

    ``toylab truth NAME --record`` runs this again on a shipped model's own truth.
    """
    folder = Path(folder)
    truth = dataclasses.replace(truth, optional=tuple(optional_edges(model, task, truth)), certificate=None)
    certificate = certify(model, task, truth, algorithm)
    truth.with_certificate(certificate.to_dict()).save(folder)
    full_card = ckpt.read_json(folder / ckpt.CARD_FILE, "model card")
    full_card["certificate"] = {"passed": certificate.passed, "faithfulness": certificate.faithfulness,
                                "completeness": certificate.completeness, "seed": certificate.seed,
                                "n_pairs": certificate.n_pairs,
                                "failures": [str(c) for c in certificate.failures]}
    ckpt.atomic_write_json(folder / ckpt.CARD_FILE, full_card)
    return certificate


def _build(rec: Recipe, seed: int, out: Path, card: dict[str, Any], device: DeviceLike = "cpu") -> TrainResult:
    """A constructed model: weights set by ``rec.build`` (on the CPU), saved like a trained one."""
    device = resolve_device(device)
    model = rec.build(rec.task, seed).to(device)
    metrics = evaluate(model, rec.task)
    full_card = {**card, "recipe": {"model": model.cfg.to_dict(), "task": rec.task.to_dict(),
                                    "train": rec.train.to_dict()},
                 "constructed": True, "seed": seed, "steps": 0, "stopped_early": False, "train_time_s": 0.0,
                 "metrics": metrics, "versions": versions(device)}
    ckpt.save_model(out, model, full_card)
    return TrainResult(model, [], metrics, 0, 0.0, False, out)


# Grokking runs need the names above (toylab.zoo.grokking imports them from here).
from toylab.zoo.grokking import (  # noqa: E402
    grokking_run,
    load_shipped_progress,
    progress_dir,
    ship_progress,
)

__all__ = ["RECIPES", "Recipe", "ZooModel", "grokking_run", "load", "load_shipped_progress", "names", "progress_dir",
           "recipe", "record_truth", "runs_dir", "ship_progress", "shipped_path", "train_recipe"]
