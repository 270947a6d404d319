"""A hook-free forward that computes only the logits at the last position, for training.

Axis names: batch, pos, head, d_model, d_head, d_mlp, d_vocab_out.

When a task scores only the last position (modular addition: the answer sits at "="),
most of a full forward is wasted: in the last block only the final query matters, and the
MLP, the final norm and the unembedding need run at the final position only. Earlier
blocks still run on every position (later keys and values read them). In a first block
without LayerNorm the keys and values are linear in the embeddings, so they are computed
once per vocabulary entry and position and then looked up, not once per token of the batch.

``last_position_logits(model, tokens)`` equals ``model(tokens)[:, -1]`` (up to float
rounding, gradients included; tests/models/test_fast.py) but fires no hooks, so
``toylab.train`` uses it only when no hook is attached and the loss reads the last position
alone (``can_use_last_position``). ``Transformer.forward`` is untouched: every hook fires there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from toylab.models.layernorm import LayerNorm
from toylab.models.transformer import Transformer


def can_use_last_position(model: Transformer, scored: Tensor) -> bool:
    """Whether the loss over ``scored`` [batch, pos] (bool) reads only the last position of
    each row, and no hook is attached whose firing the fast path would skip."""
    return (
        scored.ndim == 2
        and scored.shape[1] >= 1
        and bool(scored[:, -1].all())
        and not bool(scored[:, :-1].any())
        and not model.has_hooks()
    )


def _norm(module: torch.nn.Module, x: Tensor) -> Tensor:
    return module.normalize(x) if isinstance(module, LayerNorm) else x


def last_position_logits(model: Transformer, tokens: Tensor) -> Tensor:
    """``model(tokens)[:, -1]``: logits [batch, d_vocab_out] at the last position, no hooks."""
    tokens = model._check_tokens(tokens)  # [batch, pos]
    n_pos = tokens.shape[1]
    blocks = list(model.blocks)
    last = blocks[-1]
    attn = last.attn
    if len(blocks) == 1 and not isinstance(last.ln1, LayerNorm):
        # Keys and values of the first block are linear in W_E[token] + W_pos[pos]: project
        # the vocabulary and the positions once, then look up (exact up to float rounding).
        W_KV = torch.cat([attn.W_K, attn.W_V], dim=-1)  # [head, d_model, 2 d_head]
        by_token = torch.einsum("vm,hmd->vhd", model.embed.W_E, W_KV)  # [d_vocab, head, 2 d_head]
        by_pos = torch.einsum("pm,hmd->phd", model.pos_embed.W_pos[:n_pos], W_KV)  # [pos, head, 2 d_head]
        kv = F.embedding(tokens, by_token.flatten(1)).unflatten(-1, by_token.shape[1:]) + by_pos
        k, v = kv.split(attn.W_K.shape[-1], dim=-1)  # each [batch, pos, head, d_head]
        k, v = k + attn.b_K, v + attn.b_V
        resid_last = F.embedding(tokens[:, -1], model.embed.W_E) + model.pos_embed.W_pos[n_pos - 1]
        x_last = resid_last  # [batch, d_model]
    else:
        resid = model.embed(tokens) + model.pos_embed(tokens)  # [batch, pos, d_model]
        for block in blocks[:-1]:
            resid = block(resid)
        x = _norm(last.ln1, resid)  # [batch, pos, d_model]
        k = torch.einsum("bpm,hmd->bphd", x, attn.W_K) + attn.b_K
        v = torch.einsum("bpm,hmd->bphd", x, attn.W_V) + attn.b_V
        resid_last, x_last = resid[:, -1], x[:, -1]
    q = torch.einsum("bm,hmd->bhd", x_last, attn.W_Q) + attn.b_Q  # [batch, head, d_head]
    # The last query sees every position under a causal mask, so no mask is needed.
    pattern = (torch.einsum("bhd,bphd->bhp", q, k) / attn.scale).softmax(dim=-1)  # [batch, head, pos]
    z = torch.einsum("bhp,bphd->bhd", pattern, v)  # [batch, head, d_head]
    resid_last = resid_last + z.flatten(1) @ attn.W_O.flatten(0, 1) + attn.b_O  # [batch, d_model]
    if last.mlp is not None:
        mlp = last.mlp
        hidden = mlp.act(_norm(last.ln2, resid_last) @ mlp.W_in + mlp.b_in)  # [batch, d_mlp]
        resid_last = resid_last + hidden @ mlp.W_out + mlp.b_out
    return _norm(model.ln_final, resid_last) @ model.unembed.W_U + model.unembed.b_U  # [batch, d_vocab_out]
