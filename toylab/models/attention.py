"""Multi-head attention with per-head hooks, in TransformerLens's layout.

Axis names:
    batch            independent sequences
    pos              token position (query_pos / key_pos when both ends matter)
    head             attention head within the block
    d_model          residual stream width
    d_head           width of one head's query, key, value

Every head's output is written to ``hook_result`` before the heads are summed, so a
per-head intervention needs no flag. The block hands each head its own query, key and value
input ([batch, pos, head, d_model], ``hook_q_input`` ...), so a path patch into one head's
key leaves its query alone. While no hook has replaced them these inputs are stride-0 views
of the residual stream, and the projections run on the shared stream at no extra cost.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from einops import einsum
from torch import Tensor, nn

from toylab.hooks import HookPoint
from toylab.models.config import TransformerConfig

# Buffers a TransformerLens state dict carries that toylab rebuilds from the config.
_TL_BUFFERS = ("mask", "IGNORE")


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        h, m, d = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(h, m, d))  # [head, d_model, d_head]
        self.W_K = nn.Parameter(torch.empty(h, m, d))  # [head, d_model, d_head]
        self.W_V = nn.Parameter(torch.empty(h, m, d))  # [head, d_model, d_head]
        self.W_O = nn.Parameter(torch.empty(h, d, m))  # [head, d_head, d_model]
        self.b_Q = nn.Parameter(torch.zeros(h, d))  # [head, d_head]
        self.b_K = nn.Parameter(torch.zeros(h, d))  # [head, d_head]
        self.b_V = nn.Parameter(torch.zeros(h, d))  # [head, d_head]
        self.b_O = nn.Parameter(torch.zeros(m))  # [d_model]
        self.causal = cfg.attention_dir == "causal"
        self.scale = math.sqrt(d)
        # Derived from the config, so not saved: checkpoints hold only learned weights.
        mask = torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool)
        self.register_buffer("mask", torch.tril(mask) if self.causal else mask, persistent=False)

        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k = HookPoint()  # [batch, pos, head, d_head]
        self.hook_v = HookPoint()  # [batch, pos, head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, query_pos, key_pos], masked, scaled
        self.hook_pattern = HookPoint()  # [batch, head, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        self.hook_result = HookPoint()  # [batch, pos, head, d_model]

    def forward(self, q_input: Tensor, k_input: Tensor, v_input: Tensor) -> Tensor:
        # each input: [batch, pos, head, d_model], normalised
        q = self.hook_q(_project(q_input, self.W_Q) + self.b_Q)  # [batch, pos, head, d_head]
        k = self.hook_k(_project(k_input, self.W_K) + self.b_K)
        v = self.hook_v(_project(v_input, self.W_V) + self.b_V)

        scores = einsum(q, k, "b q h d, b k h d -> b h q k") / self.scale
        n = q.shape[1]
        scores = self.hook_attn_scores(scores.masked_fill(~self.mask[:n, :n], float("-inf")))
        pattern = self.hook_pattern(scores.softmax(dim=-1))  # [batch, head, query_pos, key_pos]

        z = self.hook_z(einsum(pattern, v, "b h q k, b k h d -> b q h d"))  # [batch, pos, head, d_head]
        result = self.hook_result(einsum(z, self.W_O, "b p h d, h d m -> b p h m"))
        return result.sum(dim=2) + self.b_O  # [batch, pos, d_model]

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Accept TransformerLens state dicts unchanged: drop the buffers it saves and we derive.
        for name in _TL_BUFFERS:
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args)


def _project(x: Tensor, W: Tensor) -> Tensor:
    """Per-head input [batch, pos, head, d_model] @ W [head, d_model, d_head]."""
    # The same stream for every head (the block's expanded view): project it once. Not for a
    # leaf that asks for its own gradient (a hook's x.detach().requires_grad_()): there each
    # head's slice must get its own gradient, and the shortcut would give all of it to head 0.
    if x.stride(2) == 0 and not (x.is_leaf and x.requires_grad):
        return einsum(x[:, :, 0], W, "b p m, h m d -> b p h d")
    return einsum(x, W, "b p h m, h m d -> b p h d")
