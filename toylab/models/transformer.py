"""A hookable decoder-only transformer with TransformerLens's names and shapes.

Axis names used in shape comments:
    batch        independent sequences
    pos          token position, 0 .. n_ctx - 1
    d_model      residual stream width
    d_vocab      input tokens;  d_vocab_out  output logits

    tokens -> embed + pos_embed -> blocks.0 ... blocks.{n_layers-1} -> ln_final -> unembed

Usage::

    model = Transformer(cfg)                       # weights drawn from cfg and a seed
    model = Transformer(cfg, device="cuda")        # the same weights, on a GPU
    logits = model(tokens)                         # [batch, pos, d_vocab_out]
    logits, cache = model.run_with_cache(tokens)   # cache["blocks.0.attn.hook_pattern"]
    with model.hooks([("blocks.0.attn.hook_z", fn)]):
        patched = model(tokens)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from toylab.devices import DeviceLike, resolve_device
from toylab.hooks import HookedRootModule, HookPoint
from toylab.models.block import TransformerBlock
from toylab.models.config import TransformerConfig
from toylab.models.embed import Embed, PosEmbed, Unembed
from toylab.models.layernorm import make_norm


class Transformer(HookedRootModule):
    def __init__(self, cfg: TransformerConfig, seed: int = 0, device: DeviceLike = None):
        super().__init__()
        device = resolve_device(device)
        self.cfg = cfg
        # Built and initialised on the CPU whatever the default device, then moved: the weights
        # come from a CPU generator, so a seed gives the same weights on every device.
        with torch.device("cpu"):
            self.embed = Embed(cfg)
            self.hook_embed = HookPoint()  # [batch, pos, d_model]
            self.pos_embed = PosEmbed(cfg)
            self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
            self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
            self.ln_final = make_norm(cfg)
            self.unembed = Unembed(cfg)
            self.setup_hooks()
            self.init_weights(seed)
        self.to(device)

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Weights ~ N(0, init_range) from a private generator; biases 0; LayerNorm gains 1.

        The global RNG is never touched, so a model's weights depend on ``seed`` alone.
        """
        generator = torch.Generator().manual_seed(seed)
        for name, param in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("W_"):
                draw = torch.empty(param.shape, device=generator.device)
                param.copy_(draw.normal_(0.0, self.cfg.init_range, generator=generator))
            elif leaf == "w":
                param.fill_(1.0)
            else:
                param.zero_()

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits [batch, pos, d_vocab_out] for integer tokens [batch, pos] (or [pos])."""
        tokens = self._check_tokens(tokens)
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            resid = block(resid)  # [batch, pos, d_model]
        return self.unembed(self.ln_final(resid))  # [batch, pos, d_vocab_out]

    def _check_tokens(self, tokens: Tensor) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            got = tokens.dtype if isinstance(tokens, Tensor) else type(tokens).__name__
            raise TypeError(f"tokens must be an integer tensor [batch, pos], got {got}")
        if tokens.ndim == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape [batch, pos] or [pos], got {tuple(tokens.shape)}")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds the model's n_ctx={self.cfg.n_ctx}; "
                f"truncate the input to at most {self.cfg.n_ctx} tokens"
            )
        if tokens.numel():
            low, high = int(tokens.min()), int(tokens.max())
            if low < 0 or high >= self.cfg.d_vocab:
                raise ValueError(
                    f"token ids must lie in [0, {self.cfg.d_vocab}) for this model's d_vocab, "
                    f"got values from {low} to {high}"
                )
        return tokens.to(self.embed.W_E.device, torch.long)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return self.embed.W_E.device

    def extra_repr(self) -> str:
        c = self.cfg
        mlp = "attention-only" if c.attn_only else f"d_mlp={c.d_mlp}, {c.act_fn}"
        layers = f"{c.n_layers} layer" + ("s" if c.n_layers != 1 else "")
        return f"{layers}, d_model={c.d_model}, {c.n_heads} heads x {c.d_head}, {mlp}"
