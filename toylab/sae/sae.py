"""Sparse autoencoders with SAELens's parameter names, and a deterministic trainer.

Axis names used in shape comments:
    batch        independent activation vectors (rows of a training batch)
    d_in         width of the activations the SAE reads (e.g. d_model of a hook)
    d_sae        number of SAE latents (dictionary atoms)
    feature      a ground-truth feature of a synthetic data set (see ``toylab.sae.data``)

    x [batch, d_in] -(encode)-> z [batch, d_sae] -(decode)-> x_hat [batch, d_in]

    encode: pre = (x - b_dec) @ W_enc + b_enc,  then the architecture's activation:
        "relu"      z = relu(pre)                        + L1 penalty on z * ||W_dec row||
        "topk"      keep the k largest pre, relu them    (no sparsity penalty)
        "jumprelu"  z = pre * (pre > threshold)          + L0 penalty, straight-through
                    estimator for the threshold (Rajamanoharan et al. 2024)
    decode: x_hat = z @ W_dec + b_dec

Usage::

    sae = SAE(SAEConfig(d_in=32, d_sae=128, architecture="topk", k=4))
    history = train_sae(sae, data.sample, steps=2000, batch_size=256, lr=3e-3, seed=0)
    x_hat, z = sae(x)

``train_sae`` trains ``sae`` in place (that is its job) and returns a frozen ``TrainHistory``;
it never touches the global RNG: initial weights depend on ``cfg.seed``, batches and
resampling on ``seed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor, nn

from toylab.devices import DeviceLike, resolve_device

ARCHITECTURES = ("relu", "topk", "jumprelu")


@dataclass(frozen=True)
class SAEConfig:
    d_in: int  # width of the input activations
    d_sae: int  # number of latents
    architecture: str = "topk"  # one of ARCHITECTURES
    k: int | None = None  # topk: active latents per input (required for "topk")
    l1_coefficient: float = 1e-2  # relu: weight of the L1 penalty sum_i z_i * ||W_dec[i]||
    jumprelu_init_threshold: float = 0.1  # jumprelu: initial threshold of every latent
    jumprelu_bandwidth: float = 0.05  # jumprelu: width of the straight-through kernel
    l0_coefficient: float = 1e-2  # jumprelu: weight of the L0 penalty (mean active latents)
    normalize_decoder: bool = True  # keep W_dec rows at unit norm during training
    apply_b_dec_to_input: bool = True  # subtract b_dec from x before encoding (SAELens default)
    seed: int = 0  # seeds the initial weights

    def __post_init__(self) -> None:
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SAEConfig.{name} must be a positive int, got {value!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"SAEConfig.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.architecture == "topk":
            if not isinstance(self.k, int) or isinstance(self.k, bool) or not 1 <= self.k <= self.d_sae:
                raise ValueError(
                    f"SAEConfig.k must be an int in 1..d_sae={self.d_sae} for a topk SAE, got {self.k!r}; "
                    f"pass k=..."
                )
        elif self.k is not None:
            raise ValueError(f"SAEConfig.k is only used by topk SAEs; drop it for {self.architecture!r}")
        for name in ("l1_coefficient", "l0_coefficient"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"SAEConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("jumprelu_init_threshold", "jumprelu_bandwidth"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SAEConfig.{name} must be > 0, got {getattr(self, name)!r}")


def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """x * (x > theta); d/dx passes where active, d/dtheta by the rectangle-kernel estimator."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return x * (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        x, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_x = (x > threshold).to(x.dtype) * grad
        grad_threshold = (-(threshold / eps) * _rectangle((x - threshold) / eps) * grad).sum(0)
        return grad_x, grad_threshold, None


class _Step(torch.autograd.Function):
    """Heaviside step (x > theta) with a straight-through gradient for theta only."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        x, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = (-(1.0 / eps) * _rectangle((x - threshold) / eps) * grad).sum(0)
        return torch.zeros_like(x), grad_threshold, None


class SAE(nn.Module):
    """A sparse autoencoder; parameters W_enc, b_enc, W_dec, b_dec (+ log_threshold for jumprelu)."""

    def __init__(self, cfg: SAEConfig, device: DeviceLike = None):
        super().__init__()
        device = resolve_device(device)
        self.cfg = cfg
        # Built and initialised on the CPU, then moved: a seed gives the same weights on every device.
        with torch.device("cpu"):
            self.W_enc = nn.Parameter(torch.empty(cfg.d_in, cfg.d_sae))  # [d_in, d_sae]
            self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))  # [d_sae]
            self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, cfg.d_in))  # [d_sae, d_in]
            self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))  # [d_in]
            if cfg.architecture == "jumprelu":
                # Learned in log space so it stays positive; SAELens files store ``threshold``.
                self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), float(cfg.jumprelu_init_threshold)).log())
            self.init_weights(cfg.seed)
        self.to(device)

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Unit-norm random decoder rows, encoder = decoder transpose, zero biases."""
        generator = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(self.cfg.d_sae, self.cfg.d_in, generator=generator, device="cpu")  # [d_sae, d_in]
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
        self.W_dec.copy_(W_dec)
        self.W_enc.copy_(W_dec.T)
        self.b_enc.zero_()
        self.b_dec.zero_()

    @property
    def threshold(self) -> Tensor:
        """JumpReLU thresholds [d_sae]; zeros for the other architectures."""
        if self.cfg.architecture == "jumprelu":
            return self.log_threshold.exp()
        return torch.zeros(self.cfg.d_sae, device=self.W_enc.device)

    def pre_activations(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"SAE expects inputs [..., d_in={self.cfg.d_in}], got shape {tuple(x.shape)}")
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc  # [batch, d_sae]

    def encode(self, x: Tensor) -> Tensor:
        """Latents z [batch, d_sae] (>= 0) of inputs x [batch, d_in]."""
        pre = self.pre_activations(x)  # [batch, d_sae]
        arch = self.cfg.architecture
        if arch == "relu":
            return torch.relu(pre)
        if arch == "topk":
            top = pre.topk(self.cfg.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        return _JumpReLU.apply(torch.relu(pre), self.threshold, self.cfg.jumprelu_bandwidth)

    def decode(self, z: Tensor) -> Tensor:
        return z @ self.W_dec + self.b_dec  # [batch, d_in]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction x_hat [batch, d_in], latents z [batch, d_sae])."""
        z = self.encode(x)
        return self.decode(z), z

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, float], Tensor]:
        """Training loss = sum-squared error per row (batch mean) + the architecture's sparsity term."""
        pre = self.pre_activations(x)  # [batch, d_sae]
        arch = self.cfg.architecture
        if arch == "jumprelu":
            z = _JumpReLU.apply(torch.relu(pre), self.threshold, self.cfg.jumprelu_bandwidth)
        else:
            z = self.encode(x)
        x_hat = self.decode(z)  # [batch, d_in]
        mse = (x_hat - x).pow(2).sum(-1).mean()
        if arch == "relu":
            sparsity = self.cfg.l1_coefficient * (z * self.W_dec.norm(dim=-1)).sum(-1).mean()
        elif arch == "jumprelu":
            active = _Step.apply(torch.relu(pre), self.threshold, self.cfg.jumprelu_bandwidth)
            sparsity = self.cfg.l0_coefficient * active.sum(-1).mean()
        else:
            sparsity = torch.zeros((), device=x.device)
        l0 = (z > 0).sum(-1).float().mean().item()
        return mse + sparsity, {"mse": mse.item(), "sparsity": sparsity.item(), "l0": l0}, z.detach()

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale W_dec rows to unit norm (in place)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_decoder_grad_(self) -> None:
        """Drop the gradient component along each (unit) W_dec row, so steps move on the sphere."""
        if self.W_dec.grad is None:
            return
        W = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)  # [d_sae, d_in]
        parallel = (self.W_dec.grad * W).sum(-1, keepdim=True)  # [d_sae, 1]
        self.W_dec.grad.sub_(parallel * W)


@dataclass(frozen=True)
class TrainHistory:
    steps: int  # optimizer steps taken (fewer than asked when ``callback`` stopped training)
    loss: tuple[float, ...]  # total loss per step
    mse: tuple[float, ...]  # sum-squared reconstruction error per row, per step
    l0: tuple[float, ...]  # mean active latents per row, per step
    resampled: tuple[tuple[int, int], ...]  # (step, latents resampled) at each resampling check
    seconds: float  # wall-clock training time
    stopped_early: bool  # True when ``callback`` returned True


Sampler = Callable[[int, torch.Generator], Union[Tensor, tuple]]


def _batch_source(data: Tensor | Sampler) -> Callable[[int, torch.Generator], Tensor]:
    if isinstance(data, Tensor):
        if data.ndim != 2:
            raise ValueError(f"activations must be a 2-d tensor [n, d_in], got shape {tuple(data.shape)}")
        if data.shape[0] == 0:
            raise ValueError("activations is empty; pass at least one row")

        def from_tensor(n: int, generator: torch.Generator) -> Tensor:
            idx = torch.randint(0, data.shape[0], (n,), generator=generator, device=generator.device)  # [n]
            return data[idx.to(data.device)]

        return from_tensor
    if callable(data):

        def from_sampler(n: int, generator: torch.Generator) -> Tensor:
            out = data(n, generator)
            return out[0] if isinstance(out, tuple) else out

        return from_sampler
    raise TypeError(f"data must be a tensor [n, d_in] or a sampler (n, generator) -> tensor, got {type(data)}")


@torch.no_grad()
def resample_dead_latents(
    sae: SAE,
    dead: Tensor,
    inputs: Tensor,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer | None = None,
    encoder_scale: float = 0.2,
) -> int:
    """Re-initialise dead latents toward poorly reconstructed inputs (Anthropic, 2023).

    For each dead latent (``dead`` [d_sae] bool), draw an input from ``inputs`` [n, d_in] with
    probability proportional to its squared reconstruction error; set the decoder row to that
    input's (b_dec-centred) unit direction, the encoder column to the same direction scaled to
    ``encoder_scale`` x the mean alive encoder norm, the encoder bias to 0, and zero the Adam
    moments of those entries. Modifies ``sae`` (and ``optimizer``) in place; returns the count.
    """
    device = sae.W_dec.device
    inputs, dead = inputs.to(device), dead.to(device)
    dead_idx = dead.nonzero().flatten()
    n_dead = int(dead_idx.numel())
    if n_dead == 0:
        return 0
    x_hat, _ = sae(inputs)
    err = (inputs - x_hat).pow(2).sum(-1)  # [n]
    weights = err.pow(2) if err.sum() > 0 else torch.ones_like(err)
    # Drawn on the generator's device (the CPU in train_sae), so the picks are the same on every device.
    picks = torch.multinomial(weights.to(generator.device), n_dead, replacement=n_dead > inputs.shape[0],
                              generator=generator).to(device)  # [n_dead]
    directions = inputs[picks] - sae.b_dec  # [n_dead, d_in]
    directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0, device=device)
    sae.W_dec[dead_idx] = directions
    sae.W_enc[:, dead_idx] = directions.T * enc_norm * encoder_scale
    sae.b_enc[dead_idx] = 0.0
    if optimizer is not None:
        for param, index in ((sae.W_dec, (dead_idx,)), (sae.W_enc, (slice(None), dead_idx)), (sae.b_enc, (dead_idx,))):
            state = optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][index] = 0.0
    return n_dead


@torch.enable_grad()  # trains even where the caller (a lesson, an app) turned gradients off
def train_sae(
    sae: SAE,
    data: Tensor | Sampler,
    steps: int,
    batch_size: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
    resample_every: int | None = None,
    resample_pool: int = 4096,
    callback: Callable[[int, SAE], bool | None] | None = None,
    callback_every: int = 100,
) -> TrainHistory:
    """Train ``sae`` in place with Adam; deterministic given ``seed`` and the SAE's initial weights.

    ``data`` is activations [n, d_in] (batches drawn with replacement) or a sampler
    ``(n, generator) -> activations [n, d_in]`` (or a tuple whose first item is that, e.g.
    ``SyntheticFeatures.sample``). Every ``resample_every`` steps latents that did not fire
    since the last check are resampled (``resample_dead_latents``) from ``resample_pool`` fresh
    inputs. ``callback(step, sae)`` runs every ``callback_every`` steps; returning True stops.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if resample_every is not None and (not isinstance(resample_every, int) or resample_every < 1):
        raise ValueError(f"resample_every must be a positive int or None, got {resample_every!r}")
    source = _batch_source(data)
    device = sae.W_enc.device
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same batches on every device
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    if sae.cfg.normalize_decoder:
        sae.normalize_decoder_()
    losses: list[float] = []
    mses: list[float] = []
    l0s: list[float] = []
    resampled: list[tuple[int, int]] = []
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device="cpu")  # [d_sae] fired since the last check
    stopped = False
    start = time.perf_counter()
    sae.train()
    step = 0
    for step in range(1, steps + 1):
        x = source(batch_size, generator).to(device)  # [batch, d_in]
        loss, parts, z = sae.loss(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if sae.cfg.normalize_decoder:
            sae.remove_parallel_decoder_grad_()
        optimizer.step()
        if sae.cfg.normalize_decoder:
            sae.normalize_decoder_()
        losses.append(loss.item())
        mses.append(parts["mse"])
        l0s.append(parts["l0"])
        fired |= (z > 0).any(0).cpu()
        if resample_every is not None and step % resample_every == 0 and step < steps:
            pool = source(resample_pool, generator)
            n = resample_dead_latents(sae, ~fired, pool, generator, optimizer)
            resampled.append((step, n))
            fired.zero_()
        if callback is not None and step % callback_every == 0 and callback(step, sae):
            stopped = True
            break
    sae.eval()
    return TrainHistory(
        steps=step,
        loss=tuple(losses),
        mse=tuple(mses),
        l0=tuple(l0s),
        resampled=tuple(resampled),
        seconds=time.perf_counter() - start,
        stopped_early=stopped,
    )


__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "TrainHistory", "resample_dead_latents", "train_sae"]
