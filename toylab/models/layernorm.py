"""Pre-LayerNorm, as TransformerLens writes it (``w``, ``b``, ``hook_scale``, ``hook_normalized``).

Axis names: batch, pos, d_model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from toylab.hooks import HookPoint
from toylab.models.config import TransformerConfig


class LayerNorm(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.eps = cfg.ln_eps
        self.w = nn.Parameter(torch.ones(cfg.d_model))  # [d_model]
        self.b = nn.Parameter(torch.zeros(cfg.d_model))  # [d_model]
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: Tensor) -> Tensor:
        x = x - x.mean(-1, keepdim=True)  # [batch, pos, d_model]
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())  # [batch, pos, 1]
        return self.hook_normalized(x / scale * self.w + self.b)

    def normalize(self, x: Tensor) -> Tensor:
        """The same map without firing hooks, for inputs of any leading shape."""
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt() * self.w + self.b


def make_norm(cfg: TransformerConfig) -> nn.Module:
    """The block's pre-norm: LayerNorm, or the identity when ``normalization_type`` is None."""
    return LayerNorm(cfg) if cfg.normalization_type == "LN" else nn.Identity()
