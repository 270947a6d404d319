"""One transformer block: pre-norm attention then (unless attention-only) a pre-norm MLP.

Axis names: batch, pos, d_model.

    resid_pre -> + attn(ln1(resid_pre)) -> resid_mid -> + mlp(ln2(resid_mid)) -> resid_post

``hook_resid_mid`` fires in attention-only models too (there it equals resid_post).
"""

from __future__ import annotations

from torch import Tensor, nn

from toylab.hooks import HookPoint
from toylab.models.attention import Attention
from toylab.models.config import TransformerConfig
from toylab.models.layernorm import make_norm
from toylab.models.mlp import MLP


class TransformerBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        # Registered in forward order, so hook names list in the order they fire.
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.ln1 = make_norm(cfg)
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        if cfg.attn_only:
            self.ln2 = self.mlp = self.hook_mlp_out = None
        else:
            self.ln2 = make_norm(cfg)
            self.mlp = MLP(cfg)
            self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(self, resid: Tensor) -> Tensor:
        resid_pre = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre)))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        if self.mlp is None:
            return self.hook_resid_post(resid_mid)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)
