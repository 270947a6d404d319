"""Toy Models of Superposition (Elhage et al. 2022; the Anthropic colab; ARENA 1.5.4).

Axis names used in shape comments:
    instance   an independent copy of the model with its own weights, feature probability
               and importance; a whole sweep (sparsity x importance) trains in one run
    feature    an input feature, 0 .. n_features - 1 (feature i is W[:, :, i])
    hidden     a dimension of the bottleneck, 0 .. n_hidden - 1
    batch      independent samples
    pair       a correlated or anticorrelated pair of features

The model (per instance, W [hidden, feature], b [feature]):

    linear bottleneck (the paper's main model):  x' = ReLU(W^T W x + b)
    hidden_relu=True (ARENA's "neuron model", the paper's privileged-basis variant):
                                                 x' = ReLU(W^T ReLU(W x) + b)

Data: each feature is uniform in [0, 1] and present (non-zero) with probability p, so
sparsity is 1 - p. Features are laid out as

    [correlated pairs | anticorrelated pairs | independent features]

with pairs adjacent (features 0 and 1 form the first pair). A correlated pair is present
together or absent together (with the probability of its first feature); an anticorrelated
pair is never present together: one of the two is present with probability 2p (p of its first
feature, which must be at most 0.5), each of them equally likely, so each is present with
probability p. Values are drawn independently in every case.

Loss: importance-weighted squared error, sum over features, mean over the batch; per
instance, and summed over instances for training (instances do not interact).

    cfg = SuperpositionConfig(n_instances=8, n_features=5, n_hidden=2)
    model = ToyModel(cfg, feature_probability=0.01, importance=1.0, seed=0)
    history = train_toy_model(model, steps=5_000, seed=0)
    model.W                                  # [instance, hidden, feature]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from toylab.devices import DeviceLike, resolve_device

LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class SuperpositionConfig:
    n_instances: int  # independent copies of the model trained side by side
    n_features: int  # input (and output) features
    n_hidden: int  # bottleneck width
    hidden_relu: bool = False  # True: x' = ReLU(W^T ReLU(W x) + b) (ARENA's neuron model)
    n_correlated_pairs: int = 0  # pairs present together or absent together (features first)
    n_anticorrelated_pairs: int = 0  # pairs never present together (after the correlated ones)

    def __post_init__(self) -> None:
        for name in ("n_instances", "n_features", "n_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SuperpositionConfig.{name} must be a positive int, got {value!r}")
        for name in ("n_correlated_pairs", "n_anticorrelated_pairs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(
                    f"SuperpositionConfig.{name} must be a non-negative int, got {value!r}"
                )
        if not isinstance(self.hidden_relu, bool):
            raise TypeError(f"SuperpositionConfig.hidden_relu must be a bool, got {self.hidden_relu!r}")
        paired = 2 * (self.n_correlated_pairs + self.n_anticorrelated_pairs)
        if paired > self.n_features:
            raise ValueError(
                f"SuperpositionConfig: {self.n_correlated_pairs} correlated + "
                f"{self.n_anticorrelated_pairs} anticorrelated pairs need {paired} features, "
                f"but n_features is {self.n_features}; raise n_features or use fewer pairs"
            )

    @property
    def n_paired(self) -> int:
        """Number of features that belong to a correlated or anticorrelated pair."""
        return 2 * (self.n_correlated_pairs + self.n_anticorrelated_pairs)


def _per_instance_feature(value: float | Tensor, cfg: SuperpositionConfig, name: str) -> Tensor:
    """Broadcast a scalar, [feature], [instance] or [instance, feature] value to
    [instance, feature] (float32). A 1-d tensor of length n_features is read as [feature]
    and one of length n_instances as [instance]; when both lengths agree, 1-d is ambiguous."""
    n_i, n_f = cfg.n_instances, cfg.n_features
    t = torch.as_tensor(value, dtype=torch.float32, device="cpu")  # the model moves it with its weights
    if t.ndim == 0:
        return t.expand(n_i, n_f).clone()
    if t.ndim == 1:
        if n_i == n_f and n_i != 1:
            raise ValueError(
                f"ToyModel: {name} is 1-d but n_instances == n_features == {n_i}, so it is "
                f"ambiguous; pass it as [instance, 1] or [1, feature]"
            )
        if t.shape[0] == n_f:
            return t[None, :].expand(n_i, n_f).clone()
        if t.shape[0] == n_i:
            return t[:, None].expand(n_i, n_f).clone()
    elif t.ndim == 2 and t.shape[0] in (1, n_i) and t.shape[1] in (1, n_f):
        return t.expand(n_i, n_f).clone()
    raise ValueError(
        f"ToyModel: {name} must be a scalar, [feature={n_f}], [instance={n_i}] or "
        f"[instance, feature] tensor, got shape {tuple(t.shape)}"
    )


class ToyModel(nn.Module):
    """n_instances independent toy models x' = ReLU(W^T W x + b) (see the module docstring).

    ``feature_probability`` and ``importance`` may each be a scalar, [feature], [instance]
    or [instance, feature]; they are stored as [instance, feature] buffers. W is initialised
    per instance with Xavier-normal std sqrt(2 / (n_hidden + n_features)), b with zeros,
    from a private generator seeded with ``seed``.
    """

    def __init__(
        self,
        cfg: SuperpositionConfig,
        feature_probability: float | Tensor = 1.0,
        importance: float | Tensor = 1.0,
        seed: int = 0,
        device: DeviceLike = None,
    ):
        super().__init__()
        device = resolve_device(device)
        self.cfg = cfg
        p = _per_instance_feature(feature_probability, cfg, "feature_probability")
        imp = _per_instance_feature(importance, cfg, "importance")
        if not bool(((p >= 0) & (p <= 1)).all()):
            raise ValueError("ToyModel: feature_probability must lie in [0, 1]")
        if not bool((imp >= 0).all()) or not bool(torch.isfinite(imp).all()):
            raise ValueError("ToyModel: importance must be finite and non-negative")
        lo = 2 * cfg.n_correlated_pairs
        hi = lo + 2 * cfg.n_anticorrelated_pairs
        if hi > lo and bool((p[:, lo:hi:2] > 0.5).any()):
            raise ValueError(
                "ToyModel: an anticorrelated pair needs feature_probability <= 0.5 on its "
                "first feature (one of the two is present with probability 2p); lower it"
            )
        self.register_buffer("feature_probability", p)  # [instance, feature]
        self.register_buffer("importance", imp)  # [instance, feature]

        # Drawn on the CPU from a CPU generator and then moved: a seed gives the same W on every device.
        g = torch.Generator().manual_seed(seed)
        std = math.sqrt(2.0 / (cfg.n_hidden + cfg.n_features))
        W = torch.randn(cfg.n_instances, cfg.n_hidden, cfg.n_features, generator=g, device="cpu") * std
        self.W = nn.Parameter(W)  # [instance, hidden, feature]
        self.b_final = nn.Parameter(torch.zeros(cfg.n_instances, cfg.n_features, device="cpu"))  # [instance, feature]
        self.to(device)

    def forward(self, features: Tensor) -> Tensor:
        # features: [batch, instance, feature]
        # Batched matmuls on an instance-major view: several times faster than einsum on
        # these tiny shapes (generate_batch already lays its batches out instance-major).
        x = features.transpose(0, 1)  # [instance, batch, feature]
        if self.cfg.hidden_relu:
            hidden = torch.relu(torch.bmm(x, self.W.transpose(1, 2)))  # [instance, batch, hidden]
            out = torch.bmm(hidden, self.W)  # [instance, batch, feature]
        else:
            gram = torch.bmm(self.W.transpose(1, 2), self.W)  # [instance, feature, feature] W^T W
            out = torch.bmm(x, gram)  # [instance, batch, feature]
        return torch.relu(out + self.b_final[:, None, :]).transpose(0, 1)  # [batch, instance, feature]

    def hidden(self, features: Tensor) -> Tensor:
        """The bottleneck activations h = W x (ReLU(W x) with hidden_relu): [batch, instance, hidden]."""
        h = torch.einsum("ihf,bif->bih", self.W, features)
        return torch.relu(h) if self.cfg.hidden_relu else h

    @torch.no_grad()
    def generate_batch(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples [batch, instance, feature]; see the module docstring for the layout.

        Pass a seeded ``generator`` for reproducible data; without one a fresh unseeded
        generator is used (the global RNG is never touched). The random numbers are drawn on
        the generator's device (a CPU one gives the same data whatever device the model is
        on) and the batch is returned on the model's."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"generate_batch: n must be a positive int, got {n!r}")
        g = generator
        if g is None:
            g = torch.Generator()
            g.seed()  # non-deterministic, from the OS; pass a generator for reproducibility
        cfg = self.cfg
        p = self.feature_probability  # [instance, feature]
        dev = p.device
        # Drawn instance-major and returned as a [batch, instance, feature] view, so that
        # forward's per-instance matmuls read contiguous memory.
        shape = (cfg.n_instances, n, cfg.n_features)
        values = torch.rand(shape, generator=g, device=g.device).to(dev).transpose(0, 1)  # [batch, instance, feature]
        seeds = torch.rand(shape, generator=g, device=g.device).to(dev).transpose(0, 1)  # [batch, instance, feature]
        present = seeds <= p  # independent features; pairs overwritten below

        c = cfg.n_correlated_pairs
        if c:
            p_pair = p[:, 0 : 2 * c : 2]  # [instance, pair]
            both = seeds[:, :, 0 : 2 * c : 2] <= p_pair  # [batch, instance, pair]
            present[:, :, 0 : 2 * c] = both.repeat_interleave(2, dim=-1)
        a = cfg.n_anticorrelated_pairs
        if a:
            lo, hi = 2 * c, 2 * c + 2 * a
            p_pair = p[:, lo:hi:2]  # [instance, pair]
            one = seeds[:, :, lo:hi:2] <= 2 * p_pair  # [batch, instance, pair]
            first = seeds[:, :, lo + 1 : hi : 2] <= 0.5  # [batch, instance, pair]
            pair = torch.stack([one & first, one & ~first], dim=-1)  # [batch, instance, pair, 2]
            present[:, :, lo:hi] = pair.flatten(-2)
        return torch.where(present, values, torch.zeros((), device=dev))

    def loss_per_instance(self, out: Tensor, batch: Tensor) -> Tensor:
        """Importance-weighted squared error, summed over features, mean over batch: [instance]."""
        err = self.importance * (batch - out) ** 2  # [batch, instance, feature]
        return err.sum(dim=-1).mean(dim=0)


@dataclass(frozen=True)
class TrainHistory:
    step: Tensor  # [log] the steps at which the loss was recorded
    loss: Tensor  # [log, instance] the per-instance loss on that step's batch
    lr: Tensor  # [log] the learning rate used on that step


def _lr_scale(schedule: str, step: int, steps: int) -> float:
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - step / steps
    return 0.5 * (1.0 + math.cos(math.pi * step / steps))  # cosine


@torch.enable_grad()  # trains even where the caller (a lesson, an app) turned gradients off
def train_toy_model(
    model: ToyModel,
    steps: int = 10_000,
    batch_size: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
    weight_decay: float = 0.0,
    lr_schedule: str = "constant",
    log_every: int = 100,
) -> TrainHistory:
    """Train ``model`` in place (this is the one function that changes it) with AdamW on
    fresh batches from ``model.generate_batch``; deterministic given ``seed`` and the
    model's initial weights. weight_decay=0 makes it Adam, as in ARENA; the reference
    sweep is 10k steps at lr 1e-3, but small models converge in a few thousand.
    Returns the per-instance loss every ``log_every`` steps (and on the last step)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"train_toy_model: steps must be a positive int, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"train_toy_model: batch_size must be a positive int, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"train_toy_model: lr must be positive, got {lr!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"train_toy_model: lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if not isinstance(log_every, int) or log_every < 1:
        raise ValueError(f"train_toy_model: log_every must be a positive int, got {log_every!r}")

    g = torch.Generator().manual_seed(seed)  # on the CPU: the same batches on every device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    logged_steps, logged_loss, logged_lr = [], [], []
    model.train()
    for step in range(steps):
        step_lr = lr * _lr_scale(lr_schedule, step, steps)
        for group in opt.param_groups:
            group["lr"] = step_lr
        batch = model.generate_batch(batch_size, g)  # [batch, instance, feature]
        loss = model.loss_per_instance(model(batch), batch)  # [instance]
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            logged_steps.append(step)
            logged_loss.append(loss.detach().clone())
            logged_lr.append(step_lr)
    model.eval()
    return TrainHistory(
        step=torch.tensor(logged_steps, device="cpu"),
        loss=torch.stack(logged_loss).cpu(),
        lr=torch.tensor(logged_lr, device="cpu"),
    )
