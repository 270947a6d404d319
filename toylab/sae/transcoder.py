"""Transcoders: sparse replacements of a model's MLPs, per layer, with a skip path, or across layers.

Axis names used in shape comments:
    batch    -- activation rows (one token position of one prompt each)
    layer    -- the transcoded MLP layers, 0 .. n_layers - 1 (source / destination for a CLT)
    d_in     -- width of what the features read: the MLP's input (``hook_mlp_in``, d_model)
    d_out    -- width of what they write: the MLP's output (``hook_mlp_out``, d_model)
    latent   -- features per layer (d_latent)

A transcoder reads an MLP's input and predicts its output through sparse features
(Dunefsky et al. 2024; Ameisen et al. 2025):

    z[l]     = act(x[l] @ W_enc[l] + b_enc[l])                                   [batch, latent]
    y_hat[l] = sum over sources s of z[s] @ W_dec[s, l]  + b_dec[l]  (+ x[l] @ W_skip[l])

``cross_layer=False``: per-layer transcoders, s = l only. ``cross_layer=True``: a cross-layer
transcoder (CLT), every s <= l, so one feature read at layer s can write to every later MLP.
``skip=True`` adds a linear skip path (skip transcoders, Paulo et al. 2025). ``act`` is one
of the SAE architectures (``toylab.sae.sae``: relu + L1, topk, jumprelu + L0), applied per
layer. Trained by ``train_transcoder`` on a zoo model's own activations (``mlp_activations``)
to minimise the squared error summed over layers plus the architecture's sparsity term.

``replaced(model, transcoder)`` runs the model with its MLPs replaced (the replacement
model); ``transcoder_scores`` gives each layer's fraction of variance unexplained, L0, dead
features and the fraction of the task loss recovered. ``save_circuit_tracer`` writes the
files circuit-tracer loads (the mapping is documented there).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from toylab.devices import DeviceLike, resolve_device
from toylab.sae.sae import ARCHITECTURES, _JumpReLU, _Step


@dataclass(frozen=True)
class TranscoderConfig:
    n_layers: int  # MLP layers transcoded: 0 .. n_layers - 1
    d_in: int
    d_out: int
    d_latent: int  # features per layer
    architecture: str = "relu"  # one of ARCHITECTURES
    k: int | None = None  # topk: active features per layer and row
    cross_layer: bool = False  # a CLT: features write to their own and every later layer
    skip: bool = False  # a linear skip path from each MLP's input to its output
    l1_coefficient: float = 3e-3  # relu: weight of sum_i z_i * ||decoder rows of i||
    l0_coefficient: float = 1e-2  # jumprelu
    jumprelu_init_threshold: float = 0.05
    jumprelu_bandwidth: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_in", "d_out", "d_latent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TranscoderConfig.{name} must be a positive int, got {value!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"TranscoderConfig.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.architecture == "topk":
            if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= self.d_latent:
                raise ValueError(f"a topk transcoder needs k in 1..d_latent={self.d_latent}, got {self.k!r}; pass k=...")
        elif self.k is not None:
            raise ValueError(f"k is only used by topk transcoders; drop it for {self.architecture!r}")
        for name in ("l1_coefficient", "l0_coefficient"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"TranscoderConfig.{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def kind(self) -> str:
        return ("cross-layer" if self.cross_layer else "per-layer") + (" skip" if self.skip else "")


class Transcoder(nn.Module):
    """Parameters W_enc [layer, d_in, latent], b_enc [layer, latent], W_dec [source, dest, latent,
    d_out] (zero and frozen where the source cannot write: dest < source, or dest != source
    without ``cross_layer``), b_dec [layer, d_out], W_skip [layer, d_in, d_out] with ``skip``,
    log_threshold [layer, latent] for jumprelu."""

    def __init__(self, cfg: TranscoderConfig, device: DeviceLike = None):
        super().__init__()
        device = resolve_device(device)
        self.cfg = cfg
        # Built on the CPU from a CPU generator, then moved: a seed gives the same weights on every device.
        with torch.device("cpu"):
            L, g = cfg.n_layers, torch.Generator().manual_seed(cfg.seed)
            W_dec = torch.randn(L, L, cfg.d_latent, cfg.d_out, generator=g) / cfg.d_out**0.5 * 0.5
            self.register_buffer("writes", self.write_mask(cfg), persistent=False)  # [source, dest]
            self.W_dec = nn.Parameter(W_dec * self.writes[:, :, None, None])  # [source, dest, latent, d_out]
            self.W_enc = nn.Parameter(torch.randn(L, cfg.d_in, cfg.d_latent, generator=g) / cfg.d_in**0.5)
            self.b_enc = nn.Parameter(torch.zeros(L, cfg.d_latent))  # [layer, latent]
            self.b_dec = nn.Parameter(torch.zeros(L, cfg.d_out))  # [layer, d_out]
            if cfg.skip:
                self.W_skip = nn.Parameter(torch.zeros(L, cfg.d_in, cfg.d_out))  # [layer, d_in, d_out]
            if cfg.architecture == "jumprelu":
                self.log_threshold = nn.Parameter(torch.full((L, cfg.d_latent), float(cfg.jumprelu_init_threshold)).log())
        self.to(device)

    @staticmethod
    def write_mask(cfg: TranscoderConfig) -> Tensor:
        """Which (source, dest) layer pairs have a decoder: [source, dest] bool."""
        source, dest = torch.arange(cfg.n_layers)[:, None], torch.arange(cfg.n_layers)[None, :]
        return (dest >= source) if cfg.cross_layer else (dest == source)

    @property
    def threshold(self) -> Tensor:
        if self.cfg.architecture == "jumprelu":
            return self.log_threshold.exp()
        return torch.zeros(self.cfg.n_layers, self.cfg.d_latent, device=self.W_enc.device)

    def _check(self, x: Tensor) -> None:
        if x.ndim < 2 or x.shape[-2:] != (self.cfg.n_layers, self.cfg.d_in):
            raise ValueError(f"the transcoder reads [..., layer={self.cfg.n_layers}, d_in={self.cfg.d_in}], "
                             f"got shape {tuple(x.shape)}")

    def pre_activations(self, x: Tensor) -> Tensor:
        """x [..., layer, d_in] -> [..., layer, latent]."""
        self._check(x)
        return torch.einsum("...ld,ldf->...lf", x, self.W_enc) + self.b_enc

    def activate(self, pre: Tensor) -> Tensor:
        """Features [..., layer, latent] (>= 0) from pre-activations."""
        arch = self.cfg.architecture
        if arch == "relu":
            return torch.relu(pre)
        if arch == "topk":
            top = pre.topk(self.cfg.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        flat = torch.relu(pre).reshape(-1, self.cfg.d_latent * self.cfg.n_layers)
        out = _JumpReLU.apply(flat, self.threshold.flatten(), self.cfg.jumprelu_bandwidth)
        return out.reshape(pre.shape)

    def encode(self, x: Tensor) -> Tensor:
        return self.activate(self.pre_activations(x))

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """z [..., layer, latent] -> MLP outputs [..., layer, d_out] (x is needed with ``skip``)."""
        W = self.W_dec * self.writes[:, :, None, None]
        y = torch.einsum("...sf,sdfo->...do", z, W) + self.b_dec
        if self.cfg.skip:
            if x is None:
                raise ValueError("a skip transcoder needs the inputs x to decode")
            y = y + torch.einsum("...ld,ldo->...lo", x, self.W_skip)
        return y

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(predicted MLP outputs [..., layer, d_out], features [..., layer, latent])."""
        z = self.encode(x)
        return self.decode(z, x), z

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        pre = self.pre_activations(x)
        z = self.activate(pre)
        mse = (self.decode(z, x) - y).pow(2).sum((-1, -2)).mean()
        arch = self.cfg.architecture
        if arch == "relu":
            norms = (self.W_dec * self.writes[:, :, None, None]).norm(dim=-1).sum(1)  # [source, latent]
            sparsity = self.cfg.l1_coefficient * (z * norms).sum((-1, -2)).mean()
        elif arch == "jumprelu":
            flat = torch.relu(pre).reshape(-1, self.cfg.d_latent * self.cfg.n_layers)
            active = _Step.apply(flat, self.threshold.flatten(), self.cfg.jumprelu_bandwidth)
            sparsity = self.cfg.l0_coefficient * active.sum(-1).mean()
        else:
            sparsity = torch.zeros((), device=x.device)
        l0 = float((z > 0).sum(-1).float().mean())  # per layer and row
        return mse + sparsity, {"mse": mse.item(), "l0": l0}


# ---- data and training ---------------------------------------------------------------------------


@torch.no_grad()
def mlp_activations(model, tokens: Tensor, layers: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Every MLP's input and output at every position: ([batch * pos, layer, d_model], the same)."""
    if model.cfg.d_mlp is None:
        raise ValueError("the model has no MLPs to transcode")
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    names = [f"blocks.{l}.hook_mlp_{kind}" for l in layers for kind in ("in", "out")]
    _, cache = model.run_with_cache(tokens.to(model.device), names=names)
    x = torch.stack([cache[f"blocks.{l}.hook_mlp_in"] for l in layers], dim=2)  # [batch, pos, layer, d_model]
    y = torch.stack([cache[f"blocks.{l}.hook_mlp_out"] for l in layers], dim=2)
    return x.flatten(0, 1).clone(), y.flatten(0, 1).clone()


@dataclass(frozen=True)
class TranscoderHistory:
    steps: int
    mse: tuple[float, ...]
    l0: tuple[float, ...]
    seconds: float


@torch.enable_grad()
def train_transcoder(transcoder: Transcoder, x: Tensor, y: Tensor, steps: int = 2000, batch_size: int = 256,
                     lr: float = 3e-3, seed: int = 0) -> TranscoderHistory:
    """Adam on the transcoder (in place) to predict y [n, layer, d_out] from x [n, layer, d_in];
    deterministic given ``seed`` and the initial weights."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if x.shape[:-1] != y.shape[:-1] or x.ndim != 3 or len(x) == 0:
        raise ValueError(f"x [n, layer, d_in] and y [n, layer, d_out] must match, got {tuple(x.shape)}, {tuple(y.shape)}")
    transcoder._check(x)
    device = transcoder.W_enc.device
    g = torch.Generator().manual_seed(seed)  # rows drawn on the CPU: the same batches on every device
    optimizer = torch.optim.Adam(transcoder.parameters(), lr=lr)
    mses, l0s, start = [], [], time.perf_counter()
    for _ in range(steps):
        rows = torch.randint(len(x), (batch_size,), generator=g, device="cpu")  # [batch]
        loss, parts = transcoder.loss(x[rows.to(x.device)].to(device), y[rows.to(y.device)].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        mses.append(parts["mse"])
        l0s.append(parts["l0"])
    return TranscoderHistory(steps, tuple(mses), tuple(l0s), time.perf_counter() - start)


# ---- the replacement model ---------------------------------------------------------------------


@dataclass
class ReplacementRun:
    """What the replacement model saw on its last forward: features [batch, pos, layer, latent]."""

    features: Tensor | None = None


@contextmanager
def replaced(model, transcoder: Transcoder, errors: Tensor | None = None) -> Iterator[ReplacementRun]:
    """Within the block, each MLP outputs the transcoder's prediction from the MLP inputs seen so
    far in the same run (plus ``errors`` [batch, pos, layer, d_out] where given: the replacement
    made exact on one batch, as attribution graphs need). Yields a ``ReplacementRun`` holding the
    features of the last forward."""
    cfg = transcoder.cfg
    if cfg.n_layers != model.cfg.n_layers or cfg.d_in != model.cfg.d_model or cfg.d_out != model.cfg.d_model:
        raise ValueError(f"a transcoder for {cfg.n_layers} layers of width {cfg.d_in} cannot replace the MLPs of "
                         f"a model with {model.cfg.n_layers} layers of width {model.cfg.d_model}")
    state: dict[str, Tensor] = {}
    run = ReplacementRun()
    W = transcoder.W_dec * transcoder.writes[:, :, None, None]

    def read(x: Tensor, hook) -> Tensor:  # x: [batch, pos, d_model]
        layer = int(hook.name.split(".")[1])
        pre = torch.einsum("bpd,df->bpf", x, transcoder.W_enc[layer]) + transcoder.b_enc[layer]
        state[f"z{layer}"], state[f"x{layer}"] = _activate_layer(transcoder, pre, layer), x
        return x

    def write(out: Tensor, hook) -> Tensor:  # out: [batch, pos, d_model]
        layer = int(hook.name.split(".")[1])
        y = transcoder.b_dec[layer].expand_as(out)
        for source in range(layer + 1):
            if transcoder.writes[source, layer]:
                y = y + state[f"z{source}"] @ W[source, layer]
        if cfg.skip:
            y = y + state[f"x{layer}"] @ transcoder.W_skip[layer]
        if errors is not None:
            y = y + errors[:, :, layer]
        if layer == cfg.n_layers - 1:
            run.features = torch.stack([state[f"z{l}"] for l in range(cfg.n_layers)], dim=2)
        return y

    hooks = [(f"blocks.{l}.hook_mlp_in", read) for l in range(cfg.n_layers)]
    hooks += [(f"blocks.{l}.hook_mlp_out", write) for l in range(cfg.n_layers)]
    with model.hooks(hooks):
        yield run


def _activate_layer(transcoder: Transcoder, pre: Tensor, layer: int) -> Tensor:
    arch = transcoder.cfg.architecture
    if arch == "relu":
        return torch.relu(pre)
    if arch == "topk":
        top = pre.topk(transcoder.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    return torch.relu(pre) * (pre > transcoder.threshold[layer])


@dataclass(frozen=True)
class TranscoderScores:
    fvu: tuple[float, ...]  # per layer: fraction of the MLP output's variance left unexplained
    l0: tuple[float, ...]  # per layer: mean active features per position
    dead: tuple[float, ...]  # per layer: fraction of features that never fired on the data
    loss_clean: float
    loss_replaced: float
    loss_ablated: float  # every transcoded MLP's output zeroed
    loss_recovered: float  # (ablated - replaced) / (ablated - clean): 1 is a perfect replacement

    def __str__(self) -> str:
        return (f"loss recovered {self.loss_recovered:.3f}, FVU {[round(v, 3) for v in self.fvu]}, "
                f"L0 {[round(v, 1) for v in self.l0]}")


@torch.no_grad()
def transcoder_scores(model, transcoder: Transcoder, batch) -> TranscoderScores:
    """Reconstruction and replacement figures of ``transcoder`` on ``batch`` (a task Batch)."""
    from toylab.tasks import loss as task_loss

    x, y = mlp_activations(model, batch.tokens)
    y_hat, z = transcoder(x.to(transcoder.W_enc.device))
    fvu = ((y_hat - y).pow(2).sum((0, 2)) / (y - y.mean(0)).pow(2).sum((0, 2)).clamp(min=1e-12)).tolist()
    l0 = (z > 0).float().sum(-1).mean(0).tolist()
    dead = (~(z > 0).any(0)).float().mean(-1).tolist()
    tokens, on_device = batch.tokens.to(model.device), batch.to(model.device) if hasattr(batch, "to") else batch
    clean = float(task_loss(model(tokens), on_device))
    with replaced(model, transcoder):
        replaced_loss = float(task_loss(model(tokens), on_device))
    zero = [(f"blocks.{l}.hook_mlp_out", lambda out, hook: torch.zeros_like(out)) for l in range(model.cfg.n_layers)]
    with model.hooks(zero):
        ablated = float(task_loss(model(tokens), on_device))
    recovered = (ablated - replaced_loss) / (ablated - clean) if ablated != clean else float("nan")
    return TranscoderScores(tuple(fvu), tuple(l0), tuple(dead), clean, replaced_loss, ablated, recovered)


# ---- circuit-tracer's files ----------------------------------------------------------------------


def save_circuit_tracer(transcoder: Transcoder, folder: str | Path, model_name: str = "") -> Path:
    """Write ``transcoder`` as circuit-tracer loads it; returns the folder.

    Mapping (toylab -> circuit-tracer, whose matrices are stored feature-major):
        per-layer   layer_{l}.safetensors: W_enc = W_enc[l].T [latent, d_model], b_enc = b_enc[l],
                    W_dec = W_dec[l, l] [latent, d_model], b_dec = b_dec[l], W_skip = W_skip[l].T
                    (circuit-tracer computes x @ W_skip.T), activation_function.threshold for
                    jumprelu, k for topk (circuit-tracer's TopK)
        cross-layer W_enc_{l}.safetensors: W_enc_{l} = W_enc[l].T, b_enc_{l}, b_dec_{l}, threshold_{l};
                    W_dec_{l}.safetensors: W_dec_{l} = W_dec[l, l:] as [latent, n_layers - l, d_model]
                    (a CLT's skip path is stored as W_skip [layer, d_model, d_model], x @ W_skip[l])
    Hooks: features read ``hook_resid_mid`` (toylab's models have no LayerNorm before the MLP, so
    that is ``hook_mlp_in``) and write ``hook_mlp_out``; config.json records them.
    """
    from safetensors.torch import save_file

    from toylab.checkpoint import atomic_write_json

    cfg = transcoder.cfg
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    T = {k: v.detach().cpu().float().contiguous() for k, v in transcoder.state_dict().items()}
    threshold = transcoder.threshold.detach().cpu().float()
    for l in range(cfg.n_layers):
        if not cfg.cross_layer:
            tensors = {"W_enc": T["W_enc"][l].T.contiguous(), "b_enc": T["b_enc"][l], "W_dec": T["W_dec"][l, l],
                       "b_dec": T["b_dec"][l]}
            if cfg.skip:
                tensors["W_skip"] = T["W_skip"][l].T.contiguous()
            if cfg.architecture == "jumprelu":
                tensors["activation_function.threshold"] = threshold[l]
            if cfg.architecture == "topk":
                tensors["k"] = torch.tensor(cfg.k)
            save_file(tensors, str(folder / f"layer_{l}.safetensors"))
            continue
        enc = {f"W_enc_{l}": T["W_enc"][l].T.contiguous(), f"b_enc_{l}": T["b_enc"][l], f"b_dec_{l}": T["b_dec"][l]}
        if cfg.architecture == "jumprelu":
            enc[f"threshold_{l}"] = threshold[l]
        save_file(enc, str(folder / f"W_enc_{l}.safetensors"))
        save_file({f"W_dec_{l}": T["W_dec"][l, l:].permute(1, 0, 2).contiguous()},
                  str(folder / f"W_dec_{l}.safetensors"))
    if cfg.cross_layer and cfg.skip:
        save_file({"W_skip": T["W_skip"]}, str(folder / "W_skip.safetensors"))
    atomic_write_json(folder / "config.json", {"model_name": model_name, "transcoder": asdict(cfg),
                                                "feature_input_hook": "hook_resid_mid",
                                                "feature_output_hook": "hook_mlp_out",
                                                "format": "circuit-tracer"})
    return folder


def load_circuit_tracer(folder: str | Path) -> Transcoder:
    """Read back what ``save_circuit_tracer`` wrote (safetensors and JSON only)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no config.json: not a folder written by save_circuit_tracer")
    cfg = TranscoderConfig(**json.loads(path.read_text())["transcoder"])
    tc = Transcoder(cfg)
    with torch.no_grad():
        for l in range(cfg.n_layers):
            if not cfg.cross_layer:
                t = load_file(str(folder / f"layer_{l}.safetensors"))
                tc.W_enc[l] = t["W_enc"].T
                tc.b_enc[l], tc.W_dec[l, l], tc.b_dec[l] = t["b_enc"], t["W_dec"], t["b_dec"]
                if cfg.skip:
                    tc.W_skip[l] = t["W_skip"].T
                if cfg.architecture == "jumprelu":
                    tc.log_threshold[l] = t["activation_function.threshold"].log()
                continue
            enc = load_file(str(folder / f"W_enc_{l}.safetensors"))
            tc.W_enc[l], tc.b_enc[l], tc.b_dec[l] = enc[f"W_enc_{l}"].T, enc[f"b_enc_{l}"], enc[f"b_dec_{l}"]
            if cfg.architecture == "jumprelu":
                tc.log_threshold[l] = enc[f"threshold_{l}"].log()
            tc.W_dec[l, l:] = load_file(str(folder / f"W_dec_{l}.safetensors"))[f"W_dec_{l}"].permute(1, 0, 2)
        if cfg.cross_layer and cfg.skip:
            tc.W_skip.copy_(load_file(str(folder / "W_skip.safetensors"))["W_skip"])
    return tc
