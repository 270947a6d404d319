"""Causal tracing (Meng et al. 2022, ROME): corrupt the subject, restore one state at a time.

Axis names used in shape comments:
    batch    -- prompts
    pos      -- token position
    layer    -- transformer block
    corrupt  -- the corrupted positions (usually the subject's tokens)
    d_model  -- residual stream width
    vocab    -- output classes

Three runs make a trace:
    clean      the prompt as it is; p_clean = probability of the right answer
    corrupted  the embedding at the subject's positions spoilt, by Gaussian noise of
               ``noise_scale`` times the embedding's standard deviation (ROME uses 3) or by
               another prompt's embedding there ("resample"); p_corrupted
    restored   the corrupted run with one state, (kind, layer, pos), copied from the clean
               run; p_restored[kind][layer, pos]
States are ``resid_pre``, ``resid_post`` (the residual stream entering / leaving a block),
``attn_out`` and ``mlp_out`` (what the block's attention and MLP add). A state whose
restoration brings the answer back carries the subject's information to it: in ROME's
heatmaps the MLPs at the last subject token of middle layers, where facts are recalled.
The score reported is ``(p_restored - p_corrupted) / (p_clean - p_corrupted)``: 1 restores the
clean answer fully, 0 not at all. Nothing here changes the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from toylab.models import Transformer
from toylab.tasks import IGNORE, Batch, normalised

TRACE_KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out")
CORRUPTIONS = ("noise", "resample")
_HOOK = {"resid_pre": "blocks.{}.hook_resid_pre", "resid_post": "blocks.{}.hook_resid_post",
         "attn_out": "blocks.{}.hook_attn_out", "mlp_out": "blocks.{}.hook_mlp_out"}


@dataclass(frozen=True)
class TracingConfig:
    corruption: str = "noise"  # "noise" (ROME) or "resample" (another prompt's embedding)
    noise_scale: float = 3.0  # noise std, in units of the embedding's std
    seed: int = 0  # the noise draw

    def __post_init__(self) -> None:
        if self.corruption not in CORRUPTIONS:
            raise ValueError(f"TracingConfig.corruption must be one of {CORRUPTIONS}, got {self.corruption!r}")
        if not self.noise_scale > 0:
            raise ValueError(f"TracingConfig.noise_scale must be > 0, got {self.noise_scale}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"TracingConfig.seed must be an int, got {self.seed!r}")


@dataclass(frozen=True)
class TracingResult:
    kinds: tuple[str, ...]
    corrupted_positions: tuple[int, ...]
    p_clean: float  # mean probability of the right answer, clean run
    p_corrupted: float  # the same, corrupted run
    p_restored: dict[str, Tensor]  # kind -> [layer, pos]: with that state restored

    def scores(self, kind: str) -> Tensor:
        """Fraction of the answer's probability restored, [layer, pos]: 1 fully, 0 not at all."""
        if kind not in self.p_restored:
            raise KeyError(f"no trace of {kind!r}; traced: {list(self.kinds)}")
        try:
            return normalised(self.p_restored[kind], self.p_clean, self.p_corrupted)
        except ValueError:
            raise ValueError("the corruption did not change the answer's probability: nothing to restore") from None

    def peak(self, kind: str) -> tuple[int, int]:
        """(layer, pos) of the state whose restoration brings back the most."""
        scores = self.scores(kind)
        index = int(scores.argmax())
        return index // scores.shape[1], index % scores.shape[1]


def embedding_noise(model: Transformer, batch_size: int, n_corrupt: int, scale: float = 3.0,
                    seed: int = 0) -> Tensor:
    """Gaussian noise [batch, corrupt, d_model] of std ``scale`` x the std of the token embeddings."""
    std = model.embed.W_E.detach().std()
    g = torch.Generator().manual_seed(seed)
    return (scale * std.cpu() * torch.randn(batch_size, n_corrupt, model.cfg.d_model, generator=g, device="cpu")).to(model.device)


def _answer_probability(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean probability of the target over the scored positions (a scalar)."""
    mask = targets != IGNORE  # [batch, pos]
    probs = logits.softmax(-1)[mask]  # [scored, vocab]
    return probs.gather(-1, targets[mask].unsqueeze(-1)).mean()


@torch.no_grad()
def causal_trace(model: Transformer, batch: Batch, corrupt_positions: Sequence[int],
                 kinds: Sequence[str] = TRACE_KINDS, config: TracingConfig = TracingConfig(),
                 noise: Tensor | None = None, source_tokens: Tensor | None = None) -> TracingResult:
    """Trace which states carry the information at ``corrupt_positions`` to the answer.

    ``noise`` [batch, corrupt, d_model] replaces the seeded draw (for exact comparisons);
    with ``config.corruption == "resample"``, ``source_tokens`` [batch, pos] give the
    embedding put at the corrupted positions instead.
    """
    if not isinstance(config, TracingConfig):
        raise TypeError(f"config must be a TracingConfig, got {type(config).__name__}")
    tokens, targets = batch.tokens.to(model.device), batch.targets.to(model.device)
    n, n_pos = tokens.shape
    positions = [int(p) for p in corrupt_positions]
    if not positions or any(not 0 <= p < n_pos for p in positions) or len(set(positions)) != len(positions):
        raise ValueError(f"corrupt_positions must be distinct positions in [0, {n_pos}), got {list(corrupt_positions)}")
    unknown = [k for k in kinds if k not in TRACE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be among {TRACE_KINDS}, got {list(kinds)}")
    if not (targets != IGNORE).any():
        raise ValueError("the batch has no scored position: nothing to trace")

    if config.corruption == "noise":
        if noise is None:
            noise = embedding_noise(model, n, len(positions), config.noise_scale, config.seed)
        if noise.shape != (n, len(positions), model.cfg.d_model):
            raise ValueError(f"noise must have shape [batch, corrupt, d_model] = {(n, len(positions), model.cfg.d_model)}, "
                             f"got {tuple(noise.shape)}")
        noise = noise.to(model.device)

        def corrupt(x: Tensor, hook) -> Tensor:  # x: [batch, pos, d_model]
            x = x.clone()
            x[:, positions] = x[:, positions] + noise
            return x
    else:
        if source_tokens is None or source_tokens.shape != tokens.shape:
            raise ValueError("corruption='resample' needs source_tokens of the batch's shape [batch, pos]")
        _, source_cache = model.run_with_cache(source_tokens.to(model.device), names=["hook_embed"])

        def corrupt(x: Tensor, hook) -> Tensor:
            x = x.clone()
            x[:, positions] = source_cache["hook_embed"][:, positions]
            return x

    hooks = [_HOOK[kind].format(layer) for kind in kinds for layer in range(model.cfg.n_layers)]
    clean_logits, clean_cache = model.run_with_cache(tokens, names=hooks)
    p_clean = _answer_probability(clean_logits, targets).item()
    with model.hooks([("hook_embed", corrupt)]):
        p_corrupted = _answer_probability(model(tokens), targets).item()

    restored: dict[str, Tensor] = {}
    for kind in kinds:
        grid = torch.zeros(model.cfg.n_layers, n_pos, device="cpu")  # [layer, pos], read back with .item()
        for layer in range(model.cfg.n_layers):
            name = _HOOK[kind].format(layer)
            for pos in range(n_pos):
                def restore(x: Tensor, hook, pos=pos, name=name) -> Tensor:
                    x = x.clone()
                    x[:, pos] = clean_cache[name][:, pos]
                    return x

                with model.hooks([("hook_embed", corrupt), (name, restore)]):
                    grid[layer, pos] = _answer_probability(model(tokens), targets).item()
        restored[kind] = grid
    return TracingResult(tuple(kinds), tuple(positions), p_clean, p_corrupted, restored)


__all__ = ["CORRUPTIONS", "TRACE_KINDS", "TracingConfig", "TracingResult", "causal_trace", "embedding_noise"]
