"""Progress measures for grokking (Nanda et al. 2023, "Progress measures for grokking via
mechanistic interpretability", sections 5-6).

Axis names used in shape comments:
    checkpoint  one snapshot of the weights along a training run, in step order
    x           a residue 0 .. p-1 (a token a or b)
    basis       an element of the real Fourier basis over Z_p: const, cos 1, sin 1, cos 2, ...
    freq        a frequency w = 1 .. (p-1)/2 (cos and sin of w together); index w - 1
    key         one of the K key frequencies the measures are taken against
    n           any last axis (``gini``)

A model that groks modular addition first memorises the train set, then slowly builds the
Fourier-multiplication circuit (``toylab.methods.fourier``) while test loss stays high, and
finally cleans the memorising weights away, at which point test loss drops. Measured at
each checkpoint of a run:

    train/test loss, accuracy   the behaviour (logits at "=" over every pair)
    restricted loss             train loss with the logits kept to the key frequencies'
                                cos/sin(w(a+b)) directions (plus constant): falls as the
                                circuit forms, *before* test loss falls
    excluded loss               train loss with those directions removed: rises as the
                                train set comes to be fitted through the circuit
    gini                        Gini sparsity of W_E in the Fourier basis (``fourier_gini``):
                                rises as the embedding concentrates on the key frequencies
    weight norm                 total sum of squared weights: falls under weight decay,
                                sharply during cleanup
    embedding spectrum          W_E's norm per frequency (for watching it sharpen)

    snaps = Snapshots(run / "snapshots", every=10)           # toylab.snapshots, a Callback
    measures = progress_measures(run / "snapshots", task, key_frequencies=[2, 5, 8, 19])
    print(measures.phases().table())                          # memorisation, circuit formation, cleanup
    measures = toylab.zoo.grokking_run("modadd-113")                     # the whole thing, cached, resumable

``toylab progress NAME`` runs ``toylab.zoo.grokking_run`` from the command line. Analysis runs in
float64 on the CPU; models are never modified.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from toylab import checkpoint as ckpt
from toylab.methods.check import Check
from toylab.methods.fourier import (
    _all_logits,
    _check_freqs,
    _check_model_task,
    _check_split,
    _split_pairs,
    _sum_projection,
    embedding_fourier_norms,
    embedding_frequency_norms,
)
from toylab.models import Transformer
from toylab.snapshots import load_snapshots, snapshot_steps
from toylab.tasks import ModularAddition, Task

FORMAT = "toylab-progress/1"
PROGRESS_FILE = "progress.json"
MAX_SHIPPED_BYTES = 100_000  # a shipped progress.json must stay under this

# ---- phase rules (see ProgressMeasures.phases) ----------------------------------------
MEMORISED_ACCURACY = 0.99  # memorisation ends when train accuracy first reaches this
CLEANUP_DROP = 0.1  # cleanup starts once test loss has fallen this share of its way down
GENERALISED_ACCURACY = 0.99  # cleanup ends when test accuracy first reaches this
DEFAULT_SNAPSHOTS = 200  # grokking_run snapshots about this many times over the recipe's steps


# ---- the measures of one model ------------------------------------------------------
def gini(x: Tensor | Sequence[float]) -> Tensor | float:
    """Gini coefficient of non-negative values along the last axis: 0 uniform, (n-1)/n one-hot.

    G = sum_i (2i - n - 1) x_(i) / (n sum_i x_i), with x_(1) <= ... <= x_(n) sorted (the
    mean absolute difference over twice the mean; Hurley & Rickard 2009). It is 0 when all
    n values are equal and 1 - 1/n when one value holds everything, so it tends to 1 for a
    one-hot vector as n grows. An all-zero row has G = 0. Returns a float for a 1D input,
    else a float64 tensor of the leading shape. Raises ValueError on negative, non-finite
    or empty input.
    """
    t = torch.as_tensor(x).to(torch.float64)
    if t.ndim == 0 or t.shape[-1] == 0:
        raise ValueError(f"gini needs at least one value along the last axis, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("gini needs finite values (got inf or nan)")
    if (t < 0).any():
        raise ValueError(f"gini needs non-negative values (e.g. norms), got a minimum of {t.min().item():.4g}")
    n = t.shape[-1]
    s = t.sort(-1).values  # [..., n]
    rank = torch.arange(1, n + 1, dtype=torch.float64)  # [n]
    total = s.sum(-1)  # [...]
    g = ((2 * rank - n - 1) * s).sum(-1) / (n * total.clamp(min=1e-300))  # [...]
    g = torch.where(total > 0, g, torch.zeros_like(g))
    return g.item() if g.ndim == 0 else g


def fourier_gini(model: Transformer, task: Task) -> float:
    """Gini sparsity of the embedding in the Fourier basis (Nanda et al. 2023, Fig. 7).

    The paper's measure: ``gini`` of the norms of W_E's Fourier components, one norm per
    basis direction (const, cos 1, sin 1, ..., p values; ``embedding_fourier_norms``), not
    per frequency. A freshly initialised embedding spreads evenly over the basis (measured:
    G = 0.03 - 0.05 for modadd-tiny and modadd-113 at init); a grokked one concentrates on
    the cos/sin of a few key frequencies (the shipped modadd-tiny 0.47, modadd-113 0.41).
    """
    task = _check_model_task(model, task)
    return float(gini(embedding_fourier_norms(model, task.p)))


def weight_norm(model: Transformer) -> float:
    """Total sum of squared weights: sum over every parameter of its squared entries.

    The squared L2 norm of all parameters together (biases included), as plotted by
    Nanda et al. ("total sum of squared weights"); weight decay pulls it down, and it
    falls sharply during cleanup. Computed in float64.
    """
    with torch.no_grad():
        return float(sum(p.detach().to("cpu", torch.float64).pow(2).sum() for p in model.parameters()))


# ---- phases ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    """One phase of training: from step ``start`` to step ``end`` (None: not over by the last checkpoint)."""

    name: str
    start: int
    end: int | None


@dataclass(frozen=True)
class Phases:
    """The three phases of a grokking run, and the mechanistic story's predictions about them.

    ``phases`` holds those located, in order (a run that never memorised has only
    memorisation, one that never grokked no cleanup). ``predictions`` are
    ``toylab.methods.check.Check`` objects: claims of Nanda et al. that the measures
    could contradict (see ``ProgressMeasures.phases``).
    """

    phases: tuple[Phase, ...]
    predictions: tuple[Check, ...]

    def __getitem__(self, name: str) -> Phase:
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(f"phase {name!r} was not located; located: {[p.name for p in self.phases]}")

    @property
    def confirmed(self) -> bool:
        """Whether every prediction holds."""
        return all(c.passed for c in self.predictions)

    def table(self) -> str:
        lines = [f"{'PHASE':20s} {'FROM':>8s} {'TO':>8s}"]
        for phase in self.phases:
            end = "-" if phase.end is None else str(phase.end)
            lines.append(f"{phase.name:20s} {phase.start:>8d} {end:>8s}")
        if self.predictions:
            lines.append("predictions (Nanda et al. 2023):")
            lines += [f"  {c}" for c in self.predictions]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "phases": [dataclasses.asdict(p) for p in self.phases],
            "predictions": [{"name": c.name, "value": c.value, "op": c.op, "threshold": c.threshold,
                             "passed": c.passed} for c in self.predictions],
        }


# ---- the measures along a run -------------------------------------------------------
_SERIES = ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "restricted_loss", "excluded_loss",
           "gini", "weight_norm")


@dataclass(frozen=True)
class ProgressMeasures:
    """Progress measures at each checkpoint of a run. Every series is indexed [checkpoint].

    Losses are mean cross-entropy in nats at "="; ``restricted_loss`` and ``excluded_loss``
    are on ``split`` (the train split, as in the paper) against ``key_frequencies``
    (``toylab.methods.fourier.frequency_losses``); ``gini`` is ``fourier_gini``,
    ``weight_norm`` the total sum of squared weights, ``embedding_spectrum`` [checkpoint,
    freq] W_E's norm per frequency (``embedding_frequency_norms``). ``meta`` says where
    the run and the key frequencies came from.
    """

    p: int
    key_frequencies: tuple[int, ...]
    steps: tuple[int, ...]
    train_loss: tuple[float, ...]
    test_loss: tuple[float, ...]
    train_accuracy: tuple[float, ...]
    test_accuracy: tuple[float, ...]
    restricted_loss: tuple[float, ...]
    excluded_loss: tuple[float, ...]
    gini: tuple[float, ...]
    weight_norm: tuple[float, ...]
    embedding_spectrum: tuple[tuple[float, ...], ...]
    split: str = "train"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n = len(self.steps)
        if n == 0:
            raise ValueError("ProgressMeasures needs at least one checkpoint")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError(f"steps must be strictly increasing, got {list(self.steps)[:10]}...")
        for name in (*_SERIES, "embedding_spectrum"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} checkpoints")
        n_freq = (self.p - 1) // 2
        if any(len(row) != n_freq for row in self.embedding_spectrum):
            raise ValueError(f"embedding_spectrum rows must have (p-1)/2 = {n_freq} entries")
        _check_freqs(self.key_frequencies, self.p)

    def __len__(self) -> int:
        return len(self.steps)

    def series(self, name: str) -> Tensor:
        """One measure as a float64 tensor [checkpoint] (``embedding_spectrum``: [checkpoint, freq])."""
        if name not in (*_SERIES, "embedding_spectrum", "steps"):
            raise KeyError(f"no measure {name!r}; measures: {['steps', *_SERIES, 'embedding_spectrum']}")
        return torch.tensor(getattr(self, name), dtype=torch.float64)

    def select(self, indices: Iterable[int]) -> ProgressMeasures:
        """The measures at some checkpoints only (sorted, duplicates dropped)."""
        idx = sorted({int(i) for i in indices})
        if not idx:
            raise ValueError("select needs at least one checkpoint index")
        if idx[0] < 0 or idx[-1] >= len(self):
            raise ValueError(f"checkpoint indices must be in 0 .. {len(self) - 1}, got {idx[0]} .. {idx[-1]}")
        picked = {name: tuple(getattr(self, name)[i] for i in idx) for name in ("steps", *_SERIES, "embedding_spectrum")}
        return dataclasses.replace(self, **picked)

    # ---- phases -----------------------------------------------------------------------
    def phases(self) -> Phases:
        """Locate memorisation, circuit formation and cleanup, and test the story about them.

        The boundaries are read off the behaviour alone (train and test accuracy and test
        loss), so that the mechanistic measures can then confirm or contradict the story:

            memorisation       from the first checkpoint until train accuracy first reaches
                               MEMORISED_ACCURACY (0.99): the train set is fitted.
            circuit formation  until test loss has fallen CLEANUP_DROP (10%) of the way
                               from its peak after memorisation to its lowest later value:
                               test loss stays near its peak while the circuit forms. Only
                               located as over if test loss eventually falls below half
                               its peak (the run groks).
            cleanup            until test accuracy first reaches GENERALISED_ACCURACY (0.99):
                               the memorising weights are removed and test loss drops.

        In Nanda et al.'s run (p=113, lr 1e-3) these are ~0-1.4k, 1.4k-9.4k and 9.4k-13k
        steps. Predictions, each a ``Check`` that fails if the measures disagree:

            restricted loss falls before test loss: the step (linearly interpolated between
                checkpoints) where restricted loss is first halfway down from its peak to
                its later minimum <= the same step for test loss.
            excluded loss rises during circuit formation: excluded loss at the end of
                circuit formation minus at its start >= 0.
            weight norm falls during cleanup: sum of squared weights at the end of cleanup
                <= at its start.
            the embedding gets sparser: Gini at the end of cleanup (else the last
                checkpoint) >= at the end of memorisation.
        """
        s = self.steps
        n = len(s)
        test_loss = self.test_loss
        i_mem = next((i for i in range(n) if self.train_accuracy[i] >= MEMORISED_ACCURACY), None)
        if i_mem is None:
            return Phases((Phase("memorisation", s[0], None),), ())
        phases = [Phase("memorisation", s[0], s[i_mem])]
        i_peak = max(range(i_mem, n), key=lambda i: test_loss[i])
        peak = test_loss[i_peak]
        floor = min(test_loss[i_peak:])
        bar = peak - CLEANUP_DROP * (peak - floor)
        i_clean = None
        if floor < peak / 2:
            i_clean = next(i for i in range(i_peak, n) if test_loss[i] <= bar)
        phases.append(Phase("circuit formation", s[i_mem], None if i_clean is None else s[i_clean]))
        i_done = None
        if i_clean is not None:
            i_done = next((i for i in range(i_clean, n) if self.test_accuracy[i] >= GENERALISED_ACCURACY), None)
            phases.append(Phase("cleanup", s[i_clean], None if i_done is None else s[i_done]))

        predictions = []
        t_restricted = half_down_step(s, self.restricted_loss)
        t_test = half_down_step(s, test_loss)
        if t_restricted is not None and t_test is not None:
            predictions.append(Check("restricted loss falls before test loss: step restricted loss is halfway down "
                                     f"(test loss: step {t_test:.0f})", t_restricted, "<=", t_test))
        if i_clean is not None:
            rise = self.excluded_loss[i_clean] - self.excluded_loss[i_mem]
            predictions.append(Check(f"excluded loss rises during circuit formation (steps {s[i_mem]}-{s[i_clean]}): "
                                     "rise in nats", rise, ">=", 0.0))
        if i_done is not None:
            predictions.append(Check(f"weight norm falls during cleanup (steps {s[i_clean]}-{s[i_done]}): "
                                     "sum of squared weights at its end (at its start as threshold)",
                                     self.weight_norm[i_done], "<=", self.weight_norm[i_clean]))
        i_end = i_done if i_done is not None else n - 1
        predictions.append(Check(f"the embedding gets sparser: Fourier Gini at step {s[i_end]} "
                                 f"(at step {s[i_mem]}, end of memorisation, as threshold)",
                                 self.gini[i_end], ">=", self.gini[i_mem]))
        return Phases(tuple(phases), tuple(predictions))

    # ---- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "p": self.p,
            "key_frequencies": list(self.key_frequencies),
            "split": self.split,
            "meta": self.meta,
            "steps": list(self.steps),
            **{name: list(getattr(self, name)) for name in _SERIES},
            "embedding_spectrum": [list(row) for row in self.embedding_spectrum],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProgressMeasures:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a toylab progress file: format is {found!r}, expected {FORMAT!r}")
        try:
            return cls(
                p=int(data["p"]),
                key_frequencies=tuple(data["key_frequencies"]),
                steps=tuple(int(s) for s in data["steps"]),
                **{name: tuple(float(v) for v in data[name]) for name in _SERIES},
                embedding_spectrum=tuple(tuple(float(v) for v in row) for row in data["embedding_spectrum"]),
                split=data.get("split", "train"),
                meta=dict(data.get("meta", {})),
            )
        except KeyError as err:
            raise ValueError(f"progress data is missing {err.args[0]!r}") from None

    def save(self, path: str | Path, indent: int | None = None) -> Path:
        """Write ``to_dict()`` as JSON, atomically. Returns the path."""
        path = Path(path)
        ckpt.atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=indent) + "\n").encode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> ProgressMeasures:
        data = ckpt.read_json(path, "progress measures")
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ckpt.CheckpointError(f"{path}: {err}") from None


def half_down_step(steps: Sequence[int], values: Sequence[float]) -> float | None:
    """The step where ``values`` first reach halfway from their peak down to their later minimum.

    Linearly interpolated between checkpoints; None if they never fall (peak == minimum).
    """
    i_peak = max(range(len(values)), key=lambda i: values[i])
    low = min(values[i_peak:])
    if not values[i_peak] > low:
        return None
    half = (values[i_peak] + low) / 2
    for i in range(i_peak + 1, len(values)):
        if values[i] <= half:
            v0, v1 = values[i - 1], values[i]
            frac = (v0 - half) / (v0 - v1) if v0 != v1 else 1.0
            return steps[i - 1] + frac * (steps[i] - steps[i - 1])
    return None  # unreachable: the minimum itself is <= half


# ---- computing the measures ---------------------------------------------------------
def progress_measures(
    snapshots: str | Path | Iterable[tuple[int, Transformer]],
    task: Task,
    key_frequencies: Iterable[int],
    *,
    split: str = "train",
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> ProgressMeasures:
    """The progress measures of every snapshot of a modular-addition run.

    ``snapshots`` is a folder written by ``toylab.snapshots.Snapshots`` or an iterable of
    ``(step, model)`` in increasing step order. ``key_frequencies`` (non-empty, distinct,
    in 1 .. (p-1)/2) are what restricted and excluded loss are measured against: the final
    model's, so that the measures show the circuit forming. ``split`` ("train", as in the
    paper, "test" or "all") is the split of the restricted and excluded loss. With
    ``progress`` a progress bar is shown.

    Raises ValueError for a task that is not modular addition, a model that does not fit
    it, bad frequencies, no snapshots or steps out of order.
    """
    if not isinstance(task, ModularAddition):
        raise ValueError(f"progress measures need a ModularAddition task, got {type(task).__name__}")  # noqa: TRY004
    freqs = _check_freqs(key_frequencies, task.p)
    if not freqs:
        raise ValueError("progress measures need at least one key frequency (the final model's)")
    _check_split(split)
    total = None
    if isinstance(snapshots, (str, Path)):
        total = len(snapshot_steps(snapshots))
        snapshots = load_snapshots(snapshots)
    elif isinstance(snapshots, Sequence):
        total = len(snapshots)
    p = task.p
    train_pairs, test_pairs = _split_pairs(task, "train"), _split_pairs(task, "test")
    loss_pairs = _split_pairs(task, split)
    rows: dict[str, list[Any]] = {name: [] for name in ("steps", *_SERIES, "embedding_spectrum")}
    for item in tqdm(snapshots, total=total, disable=not progress, desc="progress measures", unit="ckpt",
                     dynamic_ncols=True):
        try:
            step, model = item
        except (TypeError, ValueError):
            raise ValueError(f"snapshots must be (step, model) pairs, got {type(item).__name__}") from None
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"snapshot steps must be non-negative ints, got {step!r}")
        if rows["steps"] and step <= rows["steps"][-1]:
            raise ValueError(f"snapshots must come in increasing step order: step {step} after {rows['steps'][-1]}")
        _check_model_task(model, task)
        logits = _all_logits(model, task)  # [a, b, c]
        proj = _sum_projection(logits, freqs)  # [a, b, c]
        const = logits.mean((0, 1), keepdim=True)  # [1, 1, c]
        rows["steps"].append(step)
        for name, pairs in (("train", train_pairs), ("test", test_pairs)):
            loss, acc = _loss_and_accuracy(logits, pairs, p)
            rows[f"{name}_loss"].append(loss)
            rows[f"{name}_accuracy"].append(acc)
        rows["restricted_loss"].append(_loss_and_accuracy(const + proj, loss_pairs, p)[0])
        rows["excluded_loss"].append(_loss_and_accuracy(logits - proj, loss_pairs, p)[0])
        rows["gini"].append(fourier_gini(model, task))
        rows["weight_norm"].append(weight_norm(model))
        rows["embedding_spectrum"].append(tuple(embedding_frequency_norms(model, p).tolist()))
    if not rows["steps"]:
        raise ValueError("no snapshots to measure: the snapshot list is empty")
    return ProgressMeasures(p=p, key_frequencies=freqs, split=split, meta=dict(meta or {}),
                            **{name: tuple(values) for name, values in rows.items()})


def _loss_and_accuracy(logits: Tensor, pairs: Tensor, p: int) -> tuple[float, float]:
    """Cross-entropy and accuracy of logits [a, b, c] on the pairs [n, 2]."""
    a, b = pairs[:, 0], pairs[:, 1]
    picked = logits[a, b]  # [n, c]
    target = (a + b) % p  # [n]
    return F.cross_entropy(picked, target).item(), (picked.argmax(-1) == target).double().mean().item()


__all__ = [
    "Phase",
    "Phases",
    "ProgressMeasures",
    "fourier_gini",
    "gini",
    "half_down_step",
    "progress_measures",
    "weight_norm",
]
