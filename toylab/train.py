"""Deterministic, resumable training of a transformer on a task.

One seed fixes everything: the model's initial weights come from ``Transformer(cfg, seed)``
and the batch at step ``s`` from ``task.train_batch(s, seed, batch_size)``, a pure function
of its arguments. So the same seed on the same machine gives the same weights, and a run
that was interrupted and resumed from a checkpoint ends exactly where an uninterrupted
run ends.

A run with an ``out_dir`` writes there::

    run.json                 what is being trained (model config, task, train config)
    checkpoints/LATEST       name of the newest resumable checkpoint
    checkpoints/step-NNNNNNN/{model.safetensors, optimizer.pt, state.json}
    config.json, model.safetensors, card.json    the finished model (see toylab.checkpoint)

The loss is computed by ``task_loss``: when the task scores only the last position (modular
addition) and no hook is attached, through ``toylab.models.fast``, which runs only what that
loss reads; that choice depends on the task alone, so determinism and resumption hold.

Calling ``train`` again with the same ``out_dir`` resumes from ``LATEST``. Ctrl-C is
handled at a step boundary: the run saves a checkpoint and raises ``TrainingInterrupted``.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import platform
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from toylab import checkpoint as ckpt
from toylab.devices import DeviceLike, device_name, resolve_device
from toylab.models import Transformer, TransformerConfig
from toylab.models.fast import can_use_last_position, last_position_logits
from toylab.tasks import Batch, Task, loss

_COMPARATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class TrainConfig:
    steps: int  # optimizer steps, the most the run takes
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 1.0  # AdamW's decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW's betas
    batch_size: int | None = None  # None trains on the task's whole train set each step
    warmup_steps: int = 0  # linear learning-rate warm-up from 0
    grad_clip: float | None = None  # clip the gradient norm to this, or no clipping
    eval_every: int = 100  # evaluate on task.eval_batches() every this many steps
    checkpoint_every: int = 500  # write a resumable checkpoint every this many steps
    stop_when: str | None = None  # e.g. "test/accuracy >= 0.999", checked at each evaluation
    seed: int = 0  # model init and data order

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        for name in ("steps", "eval_every", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size must be positive or None, got {self.batch_size}")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.stop_when is not None:
            parse_stop_when(self.stop_when)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        return self.lr

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "betas": list(self.betas)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid fields: {sorted(names)}")
        return cls(**data)


def parse_stop_when(rule: str) -> tuple[str, str, float]:
    """``"test/accuracy >= 0.999"`` -> ("test/accuracy", ">=", 0.999)."""
    parts = rule.split()
    if len(parts) != 3 or parts[1] not in _COMPARATORS:
        raise ValueError(
            f"stop_when must look like 'test/accuracy >= 0.999' (metric, one of "
            f"{list(_COMPARATORS)}, number); got {rule!r}"
        )
    try:
        return parts[0], parts[1], float(parts[2])
    except ValueError:
        raise ValueError(f"stop_when threshold must be a number, got {parts[2]!r}") from None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; a checkpoint was written and the same call resumes."""


@dataclass
class RunState:
    """What callbacks see. ``history`` holds one dict per evaluation."""

    model: Transformer
    task: Task
    cfg: TrainConfig
    optimizer: torch.optim.Optimizer
    step: int = 0  # optimizer steps completed
    elapsed: float = 0.0  # seconds spent training, summed over resumes
    history: list[dict[str, float]] = field(default_factory=list)
    last_loss: float = float("nan")
    stop_requested: bool = False
    objective: Objective | None = None

    def stop(self) -> None:
        """Ask the run to end after the current step (the model is still saved as finished)."""
        self.stop_requested = True


class Objective:
    """A training loss other than the task's own, e.g. interchange-intervention training.

    ``loss`` must draw any randomness from ``step_generator(seed, step, ...)`` so a resumed
    run stays bitwise identical; ``to_dict`` describes it for run.json and the card.
    """

    def loss(self, model: Transformer, batch: Batch, step: int, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


class Callback:
    """Override any of these; each receives the live ``RunState``."""

    def on_step_end(self, run: RunState) -> None: ...

    def on_eval(self, run: RunState, metrics: dict[str, float]) -> None: ...

    def on_train_end(self, run: RunState) -> None: ...


@dataclass(frozen=True)
class TrainResult:
    model: Transformer
    history: list[dict[str, float]]
    metrics: dict[str, float]  # the last evaluation
    steps: int
    train_time_s: float
    stopped_early: bool
    out_dir: Path | None


@torch.no_grad()
def evaluate(model: Transformer, task: Task) -> dict[str, float]:
    """The task's metrics on each of its evaluation sets, as ``{"test/accuracy": ...}``.

    Where a set scores the last position only and no hook is attached, its logits come from
    the hook-free last-position forward (``task_loss`` says why that is safe).
    """
    metrics: dict[str, float] = {}
    for split, batch in task.eval_batches().items():
        batch = batch.to(model.device)
        if can_use_last_position(model, batch.scored):  # the metrics read the last position only
            logits = last_position_logits(model, batch.tokens)[:, None]  # [batch, 1, d_vocab_out]
            batch = Batch(batch.tokens[:, -1:], batch.targets[:, -1:])
        else:
            logits = model(batch.tokens)
        for name, value in task.metrics(logits, batch).items():
            metrics[f"{split}/{name}"] = value
    return metrics


def versions(device: DeviceLike = None) -> dict[str, str]:
    """The environment a run was trained in: software versions, machine, CPU, thread count and
    the torch device it trained on ("cpu", or e.g. "cuda (NVIDIA H200)").

    ``bitwise_environment`` picks from these the fields that decide the bits.
    """
    from toylab import __version__

    return {"toylab": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "machine": platform.machine(), "cpu": _cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": str(torch.get_num_threads()),
            "device": device_name(device)}


# The fields of ``versions()`` that decide the bits of a training run; a run reproduces a card
# bitwise only where all of them match. In:
#   torch           each release may change a kernel's arithmetic or order of summation.
#   machine         the instruction set torch was compiled for (x86_64, arm64, ...): another
#                   compiler target contracts and vectorises float operations differently.
#   cpu_capability  the kernels ATen dispatches at run time (AVX512, AVX2, DEFAULT; an
#                   ATEN_CPU_CAPABILITY variable lowers it): vector widths change the order
#                   of every reduction. Measured: induction-tiny retrained with AVX2 kernels
#                   where the zoo was built with AVX512 ones differs by 2.6e-6 in its weights,
#                   key biases aside (tests/zoo/test_zoo.py states the tolerances elsewhere).
#   threads         parallel reductions split their work by the thread count (in models
#                   bigger than induction-tiny, whose bits are the same on 1 and 2 threads).
# Out:
#   platform        the OS kernel touches no arithmetic. The C library's libm could, but
#                   torch's vectorised kernels compute exp, log and tanh themselves (SLEEF),
#                   so a libm that rounds differently would have to reach a scalar path;
#                   were that so, tests/zoo would fail its bitwise check on that platform.
#   cpu             the model name ("AMD EPYC") names neither the instruction set nor the
#                   kernels torch picks: two "AMD EPYC" machines ran AVX512 and AVX2 kernels.
#   python          the training loop's own Python arithmetic (the learning-rate warm-up,
#                   batch seeds hashed by SHA-256) is IEEE double and hashlib on every version.
#   toylab          the shipped zoo is part of the package, so the code that retrains a zoo
#                   model is the code that shipped it; a change to training that changes
#                   the bits must retrain the zoo (tests/zoo checks it on the build environment).
BITWISE_FIELDS = ("torch", "machine", "cpu_capability", "threads")
# The device decides the bits too (a GPU's kernels sum in another order than the CPU's), but
# cards written before it was recorded lack it, and they all trained on the CPU: so it is
# compared apart from BITWISE_FIELDS, a missing one read as "cpu".
DEVICE_FIELD = "device"


def bitwise_environment(versions: dict[str, str]) -> dict[str, str | None]:
    """The part of a ``versions()`` record that decides the bits (None where a field is missing;
    the device "cpu" where it is missing, as every card without one trained there)."""
    return {**{name: versions.get(name) for name in BITWISE_FIELDS}, DEVICE_FIELD: versions.get(DEVICE_FIELD, "cpu")}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def train(
    model_cfg: TransformerConfig,
    task: Task,
    cfg: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    card: dict[str, Any] | None = None,
    objective: Objective | None = None,
    device: DeviceLike = None,
) -> TrainResult:
    """Train a fresh ``Transformer(model_cfg, seed=cfg.seed)`` on ``task``, on ``device`` (the CPU
    by default; e.g. "cuda").

    The loss is the task's cross-entropy, or ``objective.loss`` when one is given.
    With ``out_dir`` the run checkpoints there and resumes from there (on any device: the
    checkpoints hold CPU tensors); the finished model is saved with a card holding ``card``
    plus the recipe, metrics, time and versions, the device among them.
    The initial weights and the batches are drawn on the CPU whatever the device, so only the
    device's arithmetic tells a GPU run from a CPU one.
    """
    device = resolve_device(device)
    if (model_cfg.d_vocab, model_cfg.d_vocab_out) != (task.d_vocab, task.d_vocab_out) or model_cfg.n_ctx < task.n_ctx:
        raise ValueError(
            f"model (d_vocab={model_cfg.d_vocab}, d_vocab_out={model_cfg.d_vocab_out}, n_ctx={model_cfg.n_ctx}) "
            f"does not fit the task (d_vocab={task.d_vocab}, d_vocab_out={task.d_vocab_out}, n_ctx={task.n_ctx})"
        )
    model = Transformer(model_cfg, seed=cfg.seed, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    run = RunState(model, task, cfg, optimizer, objective=objective)
    recipe = {"model": model_cfg.to_dict(), "task": task.to_dict(), "train": cfg.to_dict()}
    if objective is not None:
        recipe["objective"] = objective.to_dict()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        _start_or_resume(out, recipe, run)
        if (out / ckpt.CARD_FILE).exists() and not (out / "checkpoints").exists():
            return _finished_result(out, device)

    # With a stopping rule the bar's total is only an upper bound: say so, or its ETA misleads.
    desc = f"train (stops early when {cfg.stop_when})" if cfg.stop_when else "train"
    bar = tqdm(total=cfg.steps, initial=run.step, disable=not progress, desc=desc, unit="step", dynamic_ncols=True)
    if not run.history:
        _record_eval(run, callbacks, bar)
    elif cfg.stop_when and rule_holds(cfg.stop_when, run.history[-1]):
        run.stop()  # interrupted right after the stopping evaluation

    try:
        with _deferred_sigint() as interrupted:
            while run.step < cfg.steps and not run.stop_requested:
                started = time.perf_counter()
                _train_step(run)
                run.elapsed += time.perf_counter() - started
                bar.update(1)
                for callback in callbacks:
                    callback.on_step_end(run)
                if run.step % cfg.eval_every == 0 or run.step == cfg.steps:
                    metrics = _record_eval(run, callbacks, bar)
                    if cfg.stop_when and rule_holds(cfg.stop_when, metrics):
                        run.stop()
                if out is not None and run.step % cfg.checkpoint_every == 0:
                    _save_checkpoint(out, run)
                if interrupted():
                    if out is not None:
                        _save_checkpoint(out, run)
                    where = f"; run the same command to resume from step {run.step}" if out else ""
                    raise TrainingInterrupted(f"training interrupted at step {run.step}{where}")
    finally:
        bar.close()

    if run.history[-1]["step"] != run.step:  # stopped by a callback between evaluations
        _record_eval(run, callbacks, bar=None)
    for callback in callbacks:
        callback.on_train_end(run)
    final = {k: v for k, v in run.history[-1].items() if "/" in k}
    if out is not None:
        full_card = {
            **(card or {}),
            "recipe": recipe,
            "seed": cfg.seed,
            "steps": run.step,
            "stopped_early": run.step < cfg.steps,
            "train_time_s": round(run.elapsed, 2),
            "metrics": final,
            "versions": versions(device),
        }
        ckpt.atomic_write_json(out / "history.json", run.history)
        ckpt.save_model(out, model, full_card)  # the card, written last, marks the run finished
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return TrainResult(model, run.history, final, run.step, run.elapsed, run.step < cfg.steps, out)


def rule_holds(rule: str, metrics: dict[str, float]) -> bool:
    """Whether ``metrics`` satisfy a rule such as ``"test/accuracy >= 0.99"``."""
    name, op, threshold = parse_stop_when(rule)
    if name not in metrics:
        known = sorted(k for k in metrics if "/" in k)
        raise ValueError(f"stop_when names {name!r}, which is not an evaluation metric; known: {known}")
    return _COMPARATORS[op](metrics[name], threshold)


def _finished_result(out: Path, device: torch.device) -> TrainResult:
    """A run folder whose training already completed: load it instead of training again."""
    model, card = ckpt.load_model(out, device=device)
    history = ckpt.read_json(out / "history.json", "training history")
    return TrainResult(model, history, card["metrics"], card["steps"], card["train_time_s"],
                       card["stopped_early"], out)


def _train_step(run: RunState) -> None:
    cfg = run.cfg
    batch = run.task.train_batch(run.step, cfg.seed, cfg.batch_size).to(run.model.device)
    for group in run.optimizer.param_groups:
        group["lr"] = cfg.lr_at(run.step)
    if run.objective is None:
        value = task_loss(run.model, batch)
    else:
        value = run.objective.loss(run.model, batch, run.step, cfg.seed)
    run.optimizer.zero_grad(set_to_none=True)
    value.backward()
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.optimizer.step()
    run.step += 1
    run.last_loss = value.item()


def task_loss(model: Transformer, batch: Batch) -> torch.Tensor:
    """The task's cross-entropy on ``batch``, as ``loss(model(batch.tokens), batch)``.

    When the batch scores the last position only (modular addition, brackets) and no hook is
    attached, it is computed by ``toylab.models.fast.last_position_logits``, which skips
    what the loss never reads; the value and gradients agree with the hooked forward to float
    rounding. The choice depends on the task's batches alone, so it is the same at every step
    of a run and on resume.
    """
    if can_use_last_position(model, batch.scored):
        return F.cross_entropy(last_position_logits(model, batch.tokens), batch.targets[:, -1])
    return loss(model(batch.tokens), batch)


def _record_eval(run: RunState, callbacks: Sequence[Callback], bar: tqdm | None) -> dict[str, float]:
    metrics = evaluate(run.model, run.task)
    record = {"step": run.step, "time_s": round(run.elapsed, 3)}
    if run.step > 0:  # the loss of the last training batch; there is none before the first step
        record["train_step/loss"] = run.last_loss
    run.history.append({**record, **metrics})
    if bar is not None:
        bar.set_postfix({k.replace("/", "_"): f"{v:.3g}" for k, v in metrics.items()}, refresh=False)
    for callback in callbacks:
        callback.on_eval(run, metrics)
    return metrics


@contextmanager
def _deferred_sigint() -> Iterator[Any]:
    """Turn Ctrl-C into a flag checked between steps, so a checkpoint is never half a step.

    Only the main thread may install signal handlers (Streamlit runs scripts elsewhere);
    there Ctrl-C keeps its default behaviour. A second Ctrl-C interrupts at once.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag.is_set
        return

    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        flag.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


# ---- checkpoints ------------------------------------------------------------------------

def _start_or_resume(out: Path, recipe: dict[str, Any], run: RunState) -> None:
    run_file = out / "run.json"
    if run_file.exists():
        saved = ckpt.read_json(run_file, "run description")
        if saved != json.loads(json.dumps(recipe)):
            diff = _describe_difference(saved, recipe)
            raise ValueError(
                f"{out} holds a different run ({diff}); choose another output folder or delete it to start over"
            )
    else:
        ckpt.atomic_write_json(run_file, recipe)
    latest = out / "checkpoints" / "LATEST"
    if latest.exists():
        _load_checkpoint(out / "checkpoints" / latest.read_text().strip(), run)


def _describe_difference(saved: dict[str, Any], new: dict[str, Any]) -> str:
    for section in ("model", "task", "train", "objective"):
        a, b = saved.get(section, {}), json.loads(json.dumps(new.get(section, {})))
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return f"{section}.{key} is {a.get(key)!r} there, {b.get(key)!r} here"
    return "its run.json differs"


def _save_checkpoint(out: Path, run: RunState) -> None:
    root = out / "checkpoints"
    name = f"step-{run.step:07d}"
    final = root / name
    if final.exists():
        return
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ckpt.atomic_write_bytes(tmp / ckpt.WEIGHTS_FILE, ckpt.state_dict_bytes(run.model))
    torch.save(_to_cpu(run.optimizer.state_dict()), tmp / "optimizer.pt")
    ckpt.atomic_write_json(tmp / "state.json", {"step": run.step, "elapsed": run.elapsed,
                                                "last_loss": run.last_loss, "history": run.history})
    tmp.rename(final)  # the checkpoint appears whole or not at all
    ckpt.atomic_write_bytes(root / "LATEST", name.encode())
    for old in root.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, run: RunState) -> None:
    state = ckpt.read_json(folder / "state.json", "training state")
    ckpt.load_into(run.model, ckpt.load_weights(folder / ckpt.WEIGHTS_FILE), str(folder))
    try:
        # load_state_dict moves the moments to the parameters' device, so a run checkpointed on
        # a GPU resumes on the CPU and the other way round.
        optim_state = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
        run.optimizer.load_state_dict(optim_state)
    except Exception as err:  # a truncated pickle-free archive raises assorted errors
        raise ckpt.CheckpointError(
            f"optimizer state {folder / 'optimizer.pt'} is unreadable ({err}); delete {folder.parent} to restart"
        ) from None
    run.step, run.elapsed = state["step"], state["elapsed"]
    run.last_loss, run.history = state["last_loss"], state["history"]


def _to_cpu(state: Any) -> Any:
    """An optimizer's state dict with every tensor on the CPU (the same tensors where they are)."""
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_cpu(v) for v in state)
    return state
