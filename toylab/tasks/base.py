"""The contract every toylab task fulfils, and the metrics shared by all tasks.

Axis names used in shape comments:
    batch  -- independent sequences
    pos    -- token position, 0 .. n_ctx - 1
    vocab  -- output vocabulary (d_vocab_out)

A task turns an algorithm into token sequences. ``targets`` has the same shape as
``tokens``: ``targets[b, i]`` is the token the model must predict *at* position ``i``
(from the logits at ``i``), or ``IGNORE`` where position ``i`` is not scored. That one
convention covers single-answer tasks (modular addition scores one position) and
sequence tasks (induction scores the repeated half) alike.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -1  # targets value for an unscored position


@dataclass(frozen=True)
class Batch:
    """Token sequences with their per-position targets."""

    tokens: Tensor  # [batch, pos] int64
    targets: Tensor  # [batch, pos] int64, IGNORE where unscored

    def __post_init__(self) -> None:
        if self.tokens.ndim != 2 or self.tokens.shape != self.targets.shape:
            raise ValueError(
                f"tokens {tuple(self.tokens.shape)} and targets {tuple(self.targets.shape)} "
                "must both have shape [batch, pos]"
            )
        for name in ("tokens", "targets"):
            if getattr(self, name).dtype != torch.int64:
                raise TypeError(f"Batch.{name} must be int64, got {getattr(self, name).dtype}")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> Batch:
        """Rows of the batch; an int keeps the batch axis (``batch[-1]`` has one row)."""
        if isinstance(index, int):
            index = slice(index, index + 1 or None)  # -1 -> slice(-1, None), not slice(-1, 0)
        return Batch(self.tokens[index], self.targets[index])

    def to(self, device: torch.device | str | None) -> Batch:
        if device is None or (self.tokens.device == torch.device(device) and self.targets.device == self.tokens.device):
            return self  # frozen, so sharing it is safe; saves re-validating it on every call
        return Batch(self.tokens.to(device), self.targets.to(device))

    @property
    def scored(self) -> Tensor:
        """Mask of the positions that carry a target."""
        return self.targets != IGNORE  # [batch, pos] bool


@dataclass(frozen=True)
class CounterfactualPair:
    """A clean batch and a corrupted batch that differ in one controlled way.

    Row ``i`` of ``corrupted`` is the counterfactual of row ``i`` of ``clean``: same
    length, same scored positions, and targets that give the task's answer on the
    corrupted input. Patching from ``corrupted`` into ``clean`` should move the model's
    answer from ``clean.targets`` towards ``corrupted.targets``.
    """

    clean: Batch
    corrupted: Batch
    description: str  # what was changed, in words, e.g. "b resampled"

    def __post_init__(self) -> None:
        if self.clean.tokens.shape != self.corrupted.tokens.shape:
            raise ValueError("clean and corrupted batches must have the same shape")

    def __len__(self) -> int:
        return len(self.clean)


def _scored(batch: Batch) -> Tensor:
    mask = batch.scored
    if not mask.any():
        raise ValueError("the batch has no scored position (every target is IGNORE)")
    return mask


# The metrics below follow the logits' device: batches come from the tasks on the CPU, logits
# from wherever the model runs.

def loss(logits: Tensor, batch: Batch) -> Tensor:
    """Mean cross-entropy over the scored positions."""
    batch = batch.to(logits.device)
    mask = _scored(batch)  # logits: [batch, pos, vocab]
    return F.cross_entropy(logits[mask], batch.targets[mask])


def accuracy(logits: Tensor, batch: Batch) -> Tensor:
    """Fraction of scored positions whose arg-max logit is the target."""
    batch = batch.to(logits.device)
    mask = _scored(batch)
    return (logits[mask].argmax(-1) == batch.targets[mask]).float().mean()


def logit_diff_mask(pair: CounterfactualPair, device: torch.device | str | None = None) -> Tensor:
    """The [batch, pos] positions ``logit_diff`` averages over: both scored, answers differ
    (on ``device``, the pair's own by default)."""
    clean, corrupt = pair.clean.targets.to(device), pair.corrupted.targets.to(device)  # [batch, pos]
    return (clean != IGNORE) & (corrupt != IGNORE) & (clean != corrupt)


def logit_diff_terms(logits: Tensor, pair: CounterfactualPair) -> Tensor:
    """``logit_diff`` before averaging: [batch, pos], 0 outside ``logit_diff_mask(pair)``."""
    safe_clean = pair.clean.targets.to(logits.device).clamp(min=0).unsqueeze(-1)
    safe_corrupt = pair.corrupted.targets.to(logits.device).clamp(min=0).unsqueeze(-1)
    diff = logits.gather(-1, safe_clean).squeeze(-1) - logits.gather(-1, safe_corrupt).squeeze(-1)
    return diff * logit_diff_mask(pair, logits.device)  # [batch, pos]


def logit_diff(logits: Tensor, pair: CounterfactualPair, per_example: bool = False) -> Tensor:
    """Logit of the clean answer minus logit of the corrupted answer.

    Averaged over the positions where both batches are scored and their answers differ
    (positions where the two answers coincide carry no signal). ``logits`` may come from
    the clean, the corrupted or a patched run. With ``per_example=True`` returns one value
    per row ([batch]), averaging over that row's positions.
    """
    diff, mask = logit_diff_terms(logits, pair), logit_diff_mask(pair, logits.device)  # [batch, pos]
    if per_example:
        return diff.sum(-1) / mask.sum(-1).clamp(min=1)
    return diff.sum() / mask.sum().clamp(min=1)


def normalised(metric: Tensor | float, clean: float, corrupted: float) -> Tensor | float:
    """``(metric - corrupted) / (clean - corrupted)``: where a run's metric lies between the
    corrupted run (0) and the clean run (1).

    The one normalisation of patching, ablation and faithfulness scores (MIB's normalised
    metric, with m(full model) and m(everything ablated) as the two ends). Raises
    ValueError where the two ends coincide: then no score is defined.
    """
    if abs(clean - corrupted) < NORMALISABLE_GAP:
        raise ValueError(f"the metric is {clean:.3g} on the clean run and {corrupted:.3g} on the corrupted "
                         "one: with no difference to recover, the normalised score is undefined; use pairs "
                         "whose answers differ")
    return (metric - corrupted) / (clean - corrupted)


# Below this gap between the clean and the corrupted metric, normalised scores are noise.
NORMALISABLE_GAP = 1e-6


def check_count(name: str, n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive int, got {n!r}")


def seeded_generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def step_generator(seed: int, step: int, stream: str = "") -> torch.Generator:
    """A generator that depends only on (seed, step, stream).

    Training batches are drawn from this, so the batch at step N is the same whether the
    run went straight through or was interrupted and resumed.
    """
    digest = hashlib.sha256(f"{seed}:{step}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, Batch):
        return value.to("cpu")
    if isinstance(value, CounterfactualPair):
        if value.clean.tokens.device.type == "cpu" and value.corrupted.tokens.device.type == "cpu":
            return value
        return CounterfactualPair(value.clean.to("cpu"), value.corrupted.to("cpu"), value.description)
    return value


def on_cpu(fn: Callable) -> Callable:
    """``fn`` run on the CPU: its tensor (and Batch) arguments brought there, and tensors it
    creates without a device put there whatever the default device is."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = tuple(map(_to_cpu, args)), {k: _to_cpu(v) for k, v in kwargs.items()}
        if torch.get_default_device().type == "cpu":  # the usual case: a device mode would tax every op
            return fn(*args, **kwargs)
        with torch.device("cpu"):
            return fn(*args, **kwargs)

    wrapper.__on_cpu__ = True
    return wrapper


# Methods of a task that follow the device of the logits they are given, not the CPU.
_DEVICE_FOLLOWING = frozenset({"metrics"})


def run_methods_on_cpu(cls: type, skip: frozenset[str] = _DEVICE_FOLLOWING) -> None:
    """Wrap each plain method ``cls`` defines in ``on_cpu`` (but those named in ``skip``).

    Tasks and algorithms are toylab's data layer, and it lives on the CPU: data are drawn
    there from CPU generators, so a seed gives the same batches whatever device the model
    runs on; callers move batches to ``model.device``. Wrapping every method keeps that true
    for subclasses (a user's own task included) without a device argument on each.
    """
    for name, value in list(vars(cls).items()):
        if (inspect.isfunction(value) and name not in skip and (name == "__init__" or not name.startswith("__"))
                and not getattr(value, "__on_cpu__", False)):
            setattr(cls, name, on_cpu(value))


class Task(ABC):
    """An algorithmic task: its encoding, samplers and metric.

    Subclasses document their encoding in the class docstring and set ``kind``, a short
    identifier used in JSON (``{"kind": ..., **params}``).

    Tasks work on the CPU (``run_methods_on_cpu`` says why): every method but ``metrics``
    takes its tensors to the CPU and returns CPU tensors; move batches to ``model.device``.
    """

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        run_methods_on_cpu(cls)

    # ---- shape of the problem -------------------------------------------------------
    @property
    @abstractmethod
    def d_vocab(self) -> int:
        """Number of input tokens."""

    @property
    @abstractmethod
    def d_vocab_out(self) -> int:
        """Number of output classes (logit width)."""

    @property
    @abstractmethod
    def n_ctx(self) -> int:
        """Length of every sequence the task produces."""

    @property
    @abstractmethod
    def token_names(self) -> list[str]:
        """Human-readable name of each input token id."""

    # ---- data ---------------------------------------------------------------------
    @abstractmethod
    def sample(self, n: int, seed: int) -> Batch:
        """``n`` examples drawn with a seeded generator (the same seed gives the same batch)."""

    @abstractmethod
    def counterfactual(self, n: int, seed: int) -> CounterfactualPair:
        """``n`` clean/corrupted pairs for patching."""

    @abstractmethod
    def train_batch(self, step: int, seed: int, batch_size: int | None) -> Batch:
        """The training batch for ``step``: a pure function of (step, seed, batch_size)."""

    @abstractmethod
    def eval_batches(self) -> dict[str, Batch]:
        """Fixed named evaluation sets, e.g. ``{"train": ..., "test": ...}``."""

    # ---- serialisation --------------------------------------------------------------
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serialisable: ``type(self)(**self.params())`` rebuilds it."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params()}

    # ---- helpers shared by all tasks ------------------------------------------------
    def to_str_tokens(self, tokens: Tensor) -> list[str] | list[list[str]]:
        """Token ids -> names; a [pos] tensor gives a list, a [batch, pos] tensor a list of lists."""
        self.check_tokens(tokens if tokens.ndim == 2 else tokens.unsqueeze(0))
        names = self.token_names
        if tokens.ndim == 1:
            return [names[t] for t in tokens.tolist()]
        return [[names[t] for t in row] for row in tokens.tolist()]

    def check_tokens(self, tokens: Tensor) -> None:
        """Raise a clear error if ``tokens`` cannot be fed to a model of this task."""
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tokens must be an integer tensor, got {tokens.dtype}")
        if tokens.shape[1] > self.n_ctx:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds this task's n_ctx={self.n_ctx}"
            )
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.d_vocab):
            bad = tokens[(tokens < 0) | (tokens >= self.d_vocab)].unique()[:5].tolist()
            raise ValueError(
                f"token ids {bad} are outside the vocabulary [0, {self.d_vocab}) of {self!r}"
            )

    def metrics(self, logits: Tensor, batch: Batch) -> dict[str, float]:
        """The task metrics reported during training and in model cards."""
        return {"loss": loss(logits, batch).item(), "accuracy": accuracy(logits, batch).item()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params() == other.params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.params().items()))))


class SampledTask(Task):
    """A task with unlimited data: each training batch is a fresh sample, the test set a fixed one.

    Subclasses implement ``_sample(n, generator)`` and set ``eval_size``; the test set is
    ``_sample(eval_size)`` from a fixed seed, built once and cached.
    """

    eval_size: ClassVar[int] = 1024
    eval_seed: ClassVar[int] = 12345

    @abstractmethod
    def _sample(self, n: int, g: torch.Generator) -> Batch:
        """``n`` examples drawn from ``g``."""

    def train_batch(self, step: int, seed: int, batch_size: int | None) -> Batch:
        if batch_size is None:
            raise ValueError(f"{type(self).__name__} has unlimited data, so there is no full batch: pass a batch_size")
        return self._sample(batch_size, step_generator(seed, step))

    def eval_batches(self) -> dict[str, Batch]:
        if getattr(self, "_eval", None) is None:
            self._eval = {"test": self._sample(self.eval_size, seeded_generator(self.eval_seed))}
        return dict(self._eval)  # a fresh dict, so callers cannot swap out the cached set
