"""One transformer block: pre-norm attention then (unless attention-only) a pre-norm MLP.

Axis names: batch, pos, d_model.

    resid_pre -> + attn(ln1(resid_pre)) -> resid_mid -> + mlp(ln2(resid_mid)) -> resid_post

``hook_resid_mid`` fires in attention-only models too (there it equals resid_post).
``hook_q_input``, ``hook_k_input``, ``hook_v_input`` [batch, pos, head, d_model] hold each
head's own copy of resid_pre before ln1, and ``hook_mlp_in`` the MLP's copy of resid_mid
before ln2 (TransformerLens's names; there they need flags, here they always fire). Patching
one of them changes what one head (or the MLP) reads and nothing else: the edge-level
interventions of ``toylab.truth`` are built on them.
"""

from __future__ import annotations

from torch import Tensor, nn

from toylab.hooks import HookPoint
from toylab.models.attention import Attention
from toylab.models.config import TransformerConfig
from toylab.models.layernorm import LayerNorm, make_norm
from toylab.models.mlp import MLP


class TransformerBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        # Registered in forward order, so hook names list in the order they fire.
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_q_input = HookPoint()  # [batch, pos, head, d_model]
        self.hook_k_input = HookPoint()  # [batch, pos, head, d_model]
        self.hook_v_input = HookPoint()  # [batch, pos, head, d_model]
        self.ln1 = make_norm(cfg)
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        if cfg.attn_only:
            self.hook_mlp_in = self.ln2 = self.mlp = self.hook_mlp_out = None
        else:
            self.hook_mlp_in = HookPoint()  # [batch, pos, d_model]
            self.ln2 = make_norm(cfg)
            self.mlp = MLP(cfg)
            self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(self, resid: Tensor) -> Tensor:
        resid_pre = self.hook_resid_pre(resid)
        per_head = resid_pre.unsqueeze(2).expand(-1, -1, self.attn.W_Q.shape[0], -1)  # a view, no copy
        inputs = [hook(per_head) for hook in (self.hook_q_input, self.hook_k_input, self.hook_v_input)]
        normalized = self.ln1(resid_pre).unsqueeze(2).expand_as(per_head)  # ln1's hooks fire once
        q_in, k_in, v_in = (self._ln1(x, per_head, normalized) for x in inputs)
        attn_out = self.hook_attn_out(self.attn(q_in, k_in, v_in))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        if self.mlp is None:
            return self.hook_resid_post(resid_mid)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(self.hook_mlp_in(resid_mid))))
        return self.hook_resid_post(resid_mid + mlp_out)

    def _ln1(self, x: Tensor, unpatched: Tensor, normalized: Tensor) -> Tensor:
        """ln1 of one per-head input: the shared result unless a hook replaced the input."""
        if x is unpatched:
            return normalized
        return self.ln1.normalize(x) if isinstance(self.ln1, LayerNorm) else x
