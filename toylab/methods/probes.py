"""Linear probes on cached activations, with control tasks: where can a variable be read off?

Axis names used in shape comments:
    batch  -- prompts (examples)
    pos    -- token position
    d      -- width of the activation at a site (see ``toylab.methods.interchange.Site``)
    class  -- a value of the probed variable, 0 .. n_classes - 1
    hook   -- one of the hooks of a probe grid
    type   -- an input type: what the control task assigns its random label to

A probe is multinomial logistic regression on the activation at one site (a hook at one
position), trained on part of the prompts and scored on the others. Accuracy alone says
little: a probe with enough capacity can learn a label per input *type* by heart, whatever
the model computes. The **control task** of Hewitt & Liang (2019) measures that: give each
type (by default each distinct prompt) a random label, drawn from the variable's own label
distribution, and train the same probe on it. Then

    selectivity = accuracy - control accuracy

is high where the variable is encoded linearly and *beyond* what memorising types gives.

A probe says a variable can be *decoded* at a site, never that the model *uses* it there:
for that, intervene (``toylab.methods.interchange``). Functions here never change the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from toylab.methods.interchange import Site, activations, check_site
from toylab.models import Transformer


@dataclass(frozen=True)
class ProbeConfig:
    steps: int = 300  # full-batch optimizer steps
    lr: float = 0.05  # Adam
    weight_decay: float = 1e-3  # L2 penalty on the weights (not the bias)
    test_frac: float = 0.3  # share of the prompts held out for the reported accuracy
    seed: int = 0  # train/test split and control labels

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"ProbeConfig.steps must be a positive int, got {self.steps!r}")
        if not self.lr > 0:
            raise ValueError(f"ProbeConfig.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"ProbeConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 < self.test_frac < 1:
            raise ValueError(f"ProbeConfig.test_frac must lie in (0, 1), got {self.test_frac}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"ProbeConfig.seed must be an int, got {self.seed!r}")


@dataclass(frozen=True)
class LinearProbe:
    """A trained probe: ``logits = ((x - mean) / std) @ weight.T + bias``."""

    weight: Tensor  # [class, d]
    bias: Tensor  # [class]
    mean: Tensor  # [d], of the training activations
    std: Tensor  # [d]

    def logits(self, x: Tensor) -> Tensor:
        """x [batch, d] -> [batch, class]."""
        return ((x - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(-1)  # [batch]


@dataclass(frozen=True)
class ProbeResult:
    site: Site
    n_classes: int
    accuracy: float  # on held-out prompts
    train_accuracy: float
    control_accuracy: float  # the same probe trained on the control task, on held-out prompts
    majority: float  # accuracy of always answering the most frequent training label
    probe: LinearProbe
    n_train: int
    n_test: int

    @property
    def selectivity(self) -> float:
        return self.accuracy - self.control_accuracy

    def __str__(self) -> str:
        return (f"probe at {self.site}: accuracy {self.accuracy:.3f} (control {self.control_accuracy:.3f}, "
                f"selectivity {self.selectivity:+.3f}, majority {self.majority:.3f})")


def control_labels(labels: Tensor, types: Tensor, seed: int = 0) -> Tensor:
    """The control task of Hewitt & Liang: one random label per type, from the labels' distribution.

    ``labels`` [batch] int64, ``types`` [batch] int64 (equal types get equal control labels).
    Returns control labels [batch].
    """
    if labels.shape != types.shape or labels.ndim != 1:
        raise ValueError(f"labels {tuple(labels.shape)} and types {tuple(types.shape)} must both be [batch]")
    unique, inverse = types.unique(return_inverse=True)  # [type], [batch]
    g = torch.Generator().manual_seed(seed)
    draw = torch.randint(len(labels), (len(unique),), generator=g, device="cpu")  # a label of a random example per type
    return labels.cpu()[draw][inverse.cpu()].to(labels.device)


def prompt_types(tokens: Tensor) -> Tensor:
    """Each distinct prompt (row of ``tokens`` [batch, pos]) as one type: [batch] int64."""
    return tokens.unique(dim=0, return_inverse=True)[1]


def _split(n: int, test_frac: float, seed: int) -> tuple[Tensor, Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed), device="cpu")
    n_test = max(1, round(n * test_frac))
    if n - n_test < 1:
        raise ValueError(f"{n} examples are too few to split into train and test")
    return order[n_test:], order[:n_test]


def fit_probe(x: Tensor, labels: Tensor, n_classes: int, config: ProbeConfig = ProbeConfig()) -> LinearProbe:
    """Multinomial logistic regression on activations x [batch, d] -> labels [batch]."""
    x = x.detach().float()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / std  # [batch, d]
    g = torch.Generator().manual_seed(config.seed)
    # Drawn on the CPU, then moved: the same initial probe on every device.
    weight = (0.01 * torch.randn(n_classes, x.shape[1], generator=g, device="cpu")).to(x.device).requires_grad_()
    labels = labels.to(x.device)
    bias = torch.zeros(n_classes, device=x.device, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=config.lr)
    with torch.enable_grad():
        for _ in range(config.steps):
            loss = F.cross_entropy(z @ weight.T + bias, labels) + config.weight_decay * weight.pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return LinearProbe(weight.detach(), bias.detach(), mean, std)


def _fit_probes(x: Tensor, labels: Tensor, n_classes: int, config: ProbeConfig) -> tuple[Tensor, ...]:
    """``fit_probe`` on many problems at once, x [probe, batch, d] -> labels [probe, batch], in one
    loop: the loss is the sum of the probes' losses, so each probe gets the gradient, and (Adam
    being elementwise) the steps, it would get alone. Returns weight [probe, class, d], bias
    [probe, class], mean and std [probe, 1, d]."""
    x = x.detach().float()
    mean, std = x.mean(1, keepdim=True), x.std(1, keepdim=True).clamp(min=1e-6)
    z = (x - mean) / std  # [probe, batch, d]
    g = torch.Generator().manual_seed(config.seed)
    init = 0.01 * torch.randn(n_classes, x.shape[2], generator=g, device="cpu")  # fit_probe's, for every probe
    weight = init.to(x.device).repeat(x.shape[0], 1, 1).requires_grad_()
    bias = torch.zeros(x.shape[0], n_classes, device=x.device, requires_grad=True)
    labels = labels.to(x.device)
    optimizer = torch.optim.Adam([weight, bias], lr=config.lr)
    with torch.enable_grad():
        for _ in range(config.steps):
            logits = z @ weight.transpose(1, 2) + bias[:, None]  # [probe, batch, class]
            ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
            loss = (ce.mean(1) + config.weight_decay * weight.pow(2).sum((1, 2))).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return weight.detach(), bias.detach(), mean, std


def _accuracy(probe: LinearProbe, x: Tensor, labels: Tensor) -> float:
    return (probe.predict(x) == labels).float().mean().item()


def _check_labels(labels: Tensor, n: int, what: str) -> Tensor:
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.shape[0] != n:
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{what} must be a tensor [batch] with one entry per prompt ({n}), got {got}")
    if labels.dtype not in (torch.int64, torch.int32) or (labels < 0).any():
        raise ValueError(f"{what} must hold class indices >= 0 (int64)")
    return labels.long()


def probe_activations(x: Tensor, labels: Tensor, site: Site, config: ProbeConfig = ProbeConfig(),
                      types: Tensor | None = None) -> ProbeResult:
    """``train_probe`` on activations already collected, x [batch, d]; ``types`` default: each row its own."""
    n = x.shape[0]
    # Labels and the split follow the activations' device (the model's); types stay where they are.
    labels = _check_labels(labels, n, "labels").to(x.device)
    types = torch.arange(n, device=x.device) if types is None else _check_labels(types, n, "types")
    n_classes = int(labels.max()) + 1
    train, test = (idx.to(x.device) for idx in _split(n, config.test_frac, config.seed))
    probe = fit_probe(x[train], labels[train], n_classes, config)
    control = control_labels(labels, types, config.seed)
    control_probe = fit_probe(x[train], control[train], n_classes, config)
    majority = (labels[test] == labels[train].bincount(minlength=n_classes).argmax()).float().mean().item()
    return ProbeResult(site, n_classes, _accuracy(probe, x[test], labels[test]),
                       _accuracy(probe, x[train], labels[train]),
                       _accuracy(control_probe, x[test], control[test]), majority, probe, len(train), len(test))


def train_probe(model: Transformer, tokens: Tensor, labels: Tensor, site: Site,
                config: ProbeConfig = ProbeConfig(), types: Tensor | None = None) -> ProbeResult:
    """Train a linear probe for ``labels`` [batch] on the activation at ``site``, with its control task.

    ``types`` [batch] says which prompts count as the same input for the control task (by
    default, identical prompts: ``prompt_types(tokens)``). Prompts are split into train and
    test by ``config.seed``; accuracies are on the held-out prompts.
    """
    if not isinstance(config, ProbeConfig):
        raise TypeError(f"config must be a ProbeConfig, got {type(config).__name__}")
    x = activations(model, tokens, site)  # [batch, d]
    return probe_activations(x, labels, site, config, prompt_types(tokens) if types is None else types)


@dataclass(frozen=True)
class ProbeGrid:
    """Probes at every (hook, position) of a grid: accuracy, control and selectivity [hook, pos]."""

    hooks: tuple[str, ...]
    positions: tuple[int, ...]
    accuracy: Tensor  # [hook, pos]
    control_accuracy: Tensor  # [hook, pos]
    majority: float

    @property
    def selectivity(self) -> Tensor:
        return self.accuracy - self.control_accuracy  # [hook, pos]

    def at(self, hook: str, pos: int) -> tuple[float, float]:
        """(accuracy, selectivity) of the probe at ``hook``, ``pos``."""
        i, j = self.hooks.index(hook), self.positions.index(pos)
        return float(self.accuracy[i, j]), float(self.selectivity[i, j])


def probe_grid(model: Transformer, tokens: Tensor, labels: Tensor, hooks: Sequence[str],
               positions: Sequence[int] | None = None, config: ProbeConfig = ProbeConfig(),
               types: Tensor | None = None) -> ProbeGrid:
    """``train_probe`` at each hook (of shape [batch, pos, d]) and position; one forward pass in all."""
    hooks, n_pos = list(hooks), tokens.shape[1]
    positions = list(range(n_pos)) if positions is None else list(positions)
    if not hooks or not positions:
        raise ValueError("give at least one hook and one position")
    for hook in hooks:
        for pos in positions:
            check_site(model, Site(hook, pos), n_pos)
    types = prompt_types(tokens) if types is None else types
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens.to(model.device), names=hooks)
    # As probe_activations at each site, but every probe of a width (and its control) trained at once:
    # dozens of small probes one after another cost seconds of per-step overhead.
    n = tokens.shape[0]
    device = cache[hooks[0]].device
    labels = _check_labels(labels, n, "labels").to(device)
    types = _check_labels(types, n, "types")
    n_classes = int(labels.max()) + 1
    train, test = (idx.to(device) for idx in _split(n, config.test_frac, config.seed))
    control = control_labels(labels, types, config.seed)
    majority = (labels[test] == labels[train].bincount(minlength=n_classes).argmax()).float().mean().item()
    acc = torch.zeros(len(hooks), len(positions), device="cpu")  # [hook, pos] figures for the reader
    ctrl = torch.zeros(len(hooks), len(positions), device="cpu")  # [hook, pos]
    cells = [(i, j) for i in range(len(hooks)) for j in range(len(positions))]
    for d in sorted({cache[hook].shape[-1] for hook in hooks}):
        group = [(i, j) for i, j in cells if cache[hooks[i]].shape[-1] == d]
        x = torch.stack([cache[hooks[i]][:, positions[j]] for i, j in group] * 2)  # [probe, batch, d]: task, control
        y = torch.stack([labels] * len(group) + [control] * len(group))  # [probe, batch]
        weight, bias, mean, std = _fit_probes(x[:, train], y[:, train], n_classes, config)
        logits = ((x[:, test].float() - mean) / std) @ weight.transpose(1, 2) + bias[:, None]
        correct = (logits.argmax(-1) == y[:, test]).float().mean(1).cpu()  # [probe]
        for k, (i, j) in enumerate(group):
            acc[i, j], ctrl[i, j] = correct[k], correct[len(group) + k]
    return ProbeGrid(tuple(hooks), tuple(positions), acc, ctrl, majority)


__all__ = [
    "LinearProbe",
    "ProbeConfig",
    "ProbeGrid",
    "ProbeResult",
    "control_labels",
    "fit_probe",
    "probe_activations",
    "probe_grid",
    "prompt_types",
    "train_probe",
]
