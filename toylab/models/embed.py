"""Token embedding, positional embedding and unembedding.

Axis names: batch, pos (token position), d_model (residual width), d_vocab (input
tokens), d_vocab_out (output logits), n_ctx (longest sequence).

Weights are allocated empty here; ``Transformer.init_weights`` fills them from one seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toylab.models.config import TransformerConfig


class Embed(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))  # [d_vocab, d_model]

    def forward(self, tokens: Tensor) -> Tensor:
        # Not W_E[tokens]: on CPU its backward is a multi-threaded index_put_ whose float
        # additions land in a varying order, so two runs of one seed drifted apart.
        return F.embedding(tokens, self.W_E)  # [batch, pos, d_model]


class PosEmbed(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))  # [n_ctx, d_model]

    def forward(self, tokens: Tensor) -> Tensor:
        batch, pos = tokens.shape
        # Expanded to [batch, pos, d_model] so hook_pos_embed has the TransformerLens shape.
        return self.W_pos[:pos].expand(batch, pos, -1)


class Unembed(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))  # [d_model, d_vocab_out]
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out))  # [d_vocab_out]

    def forward(self, resid: Tensor) -> Tensor:
        return resid @ self.W_U + self.b_U  # [batch, pos, d_vocab_out]
