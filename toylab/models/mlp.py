"""The MLP of a transformer block: ``W_out · act(W_in · x + b_in) + b_out``.

Axis names: batch, pos, d_model, d_mlp (hidden neurons).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toylab.hooks import HookPoint
from toylab.models.config import TransformerConfig

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's tanh approximation
    "silu": F.silu,
}


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        assert cfg.d_mlp is not None
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))  # [d_model, d_mlp]
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))  # [d_mlp]
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))  # [d_mlp, d_model]
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))  # [d_model]
        self.act = ACTIVATIONS[cfg.act_fn]
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: Tensor) -> Tensor:
        pre = self.hook_pre(x @ self.W_in + self.b_in)  # [batch, pos, d_mlp]
        post = self.hook_post(self.act(pre))  # [batch, pos, d_mlp]
        return post @ self.W_out + self.b_out  # [batch, pos, d_model]
