"""The hook-free forward: the transformer's arithmetic on its weights, resumable part-way.

Axis names: batch, pos (query_pos / key_pos at the two ends of attention), head, d_model,
d_head, d_mlp, d_vocab_out.

``Transformer.forward`` is the model: every hook fires there, always. This module computes
the same numbers (up to float rounding) and fires no hook at all, for the two callers that
run part of a forward many times:

- training (``last_position_logits``): when the loss reads only the last position
  (modular addition: the answer sits at "="), the last block needs its keys and values at
  every position but its query, MLP, final norm and unembedding at the last one alone;
- patching (``toylab.methods.patching``): a patch resumes the base run's forward at the
  layer where it lands, on the rows it changes, from the first position it changes,
  reading the base run's keys and values for the positions before.

``HookFree(model).resid_from(resid, layer, stage, start, ...)`` runs the blocks from
``(layer, stage)`` on positions ``start .. start + resid.shape[1] - 1`` and returns the
final residual stream; ``unembed`` turns any positions of it into logits. What it skips:

- positions before ``start`` (causal models): a position reads only earlier ones, so their
  keys and values are taken as given (``past``) rather than recomputed;
- positions after the last one passed (causal models): they cannot change earlier ones;
- in the last block, the queries, attention output and MLP before ``first_query``: its
  output there feeds nothing (keys and values are still computed: later queries read them);
- hook points, the per-head ``hook_result`` tensor and the per-head copies of the block's
  input: heads are flattened into one dimension and each projection is one matmul with its
  bias fused in (addmm, baddbmm with the mask as an additive bias), which on these small
  shapes costs less than the model's per-head einsums.

Because no hook fires, a caller must run ``Transformer.forward`` instead whenever a hook is
attached (``can_use_last_position`` checks; patching hands over to its naive references).
tests/models/test_fast.py checks the logits, the recorded activations, gradients and resumed
runs against the hooked forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from toylab.models.layernorm import LayerNorm
from toylab.models.transformer import Transformer

# An earlier run's activation by hook name at the positions before ``start``: attention reads
# "blocks.{layer}.attn.hook_k" and "..._v" [batch, start, head, d_head] from it.
Past = Callable[[str], Tensor]


class HookFree:
    """The forward of ``model`` without hooks, on its weights as they are when first used.

    Each layer's W_Q, W_K, W_V are laid out as one matrix, and each mask slice as an
    additive bias, once, on first use: build one per batch of forwards over fixed weights
    (a patching sweep, one training step), not one per model.
    """

    def __init__(self, model: Transformer):
        self.model = model
        self._qkv: dict[int, tuple[Tensor, Tensor]] = {}
        self._masks: dict[tuple[int, int], Tensor] = {}

    def embed(self, tokens: Tensor, start: int = 0) -> Tensor:
        """The stream entering block 0 [batch, pos - start, d_model] at positions start..pos-1
        of valid tokens [batch, pos]."""
        model = self.model
        return F.embedding(tokens[:, start:], model.embed.W_E) + model.pos_embed.W_pos[start:tokens.shape[1]]

    def resid_from(self, resid: Tensor, layer: int = 0, stage: str = "pre", start: int = 0, *,
                   first_query: int | None = None, past: Past | None = None, deltas: dict | None = None,
                   record: dict[str, Tensor] | None = None) -> tuple[Tensor, int]:
        """The final residual stream, the forward resumed at ``(layer, stage)`` at position ``start``.

        resid: [batch, end - start, d_model], the stream entering block ``layer``
            (``stage="pre"``, its hook_resid_pre) or its MLP (``"mid"``, hook_resid_mid);
            layer n_layers leaves only the final norm and unembedding.
        start: the first position computed. Attention reads the keys and values of earlier
            positions from ``past(hook name)``, e.g. a recorded run's (causal models; a
            bidirectional one needs start 0 and every position).
        first_query: the first position whose final stream is wanted (>= start; default
            start). The last block's queries, attention output and MLP start there.
        deltas: what a hook adding to an input would add, [batch, end - start, d_model]
            each: ``(layer, "q" | "k" | "v", head)`` to that head's hook_{q,k,v}_input,
            ``(layer, "mlp")`` to hook_mlp_in, ``(n_layers, "logits")`` to the final stream.
        record: a dict that receives every activation computed, by hook name and in the
            hook's shape (hook_resid_pre, _mid, _post, hook_attn_out, hook_mlp_out and
            attn.hook_q, _k, _v, _pattern, _z); from layer 0 at start 0, what
            ``run_with_cache`` records there.

        Returns (final stream [batch, end - first, d_model], first): ``first`` is where the
        returned positions start, ``first_query`` if the last block ran, else ``start``.
        """
        cfg = self.model.cfg
        deltas = deltas or {}
        for index in range(layer, cfg.n_layers):
            last = index == cfg.n_layers - 1
            query = first_query if last and first_query is not None else start
            if index == layer and stage == "mid":
                resid, deltas, start = resid[:, query - start:], _trim(deltas, query - start), query
            else:
                if record is not None:
                    record[f"blocks.{index}.hook_resid_pre"] = resid
                out = self.attention(index, resid, start, query, past, deltas, record)  # [batch, end - query, d_model]
                resid, deltas, start = resid[:, query - start:] + out, _trim(deltas, query - start), query
                if record is not None:
                    record[f"blocks.{index}.hook_attn_out"], record[f"blocks.{index}.hook_resid_mid"] = out, resid
            if self.model.blocks[index].mlp is not None:
                out = self.mlp(index, resid + deltas.get((index, "mlp"), 0))  # [batch, end - start, d_model]
                resid = resid + out
                if record is not None:
                    record[f"blocks.{index}.hook_mlp_out"] = out
            if record is not None:
                record[f"blocks.{index}.hook_resid_post"] = resid
        return resid + deltas.get((cfg.n_layers, "logits"), 0), start  # [batch, end - start, d_model]

    def attention(self, layer: int, resid: Tensor, start: int = 0, query: int | None = None,
                  past: Past | None = None, deltas: dict | None = None,
                  record: dict[str, Tensor] | None = None) -> Tensor:
        """Block ``layer``'s attention output [batch, end - query, d_model] for queries query..end-1.

        ``resid`` [batch, end - start, d_model] is the block's input at positions start..end-1:
        keys and values are computed there (and read from ``past`` before ``start``),
        queries from ``query`` (default ``start``) on. ``deltas`` and ``record`` as in
        ``resid_from``.
        """
        attn, ln1 = self.model.blocks[layer].attn, self.model.blocks[layer].ln1
        batch, p = resid.shape[:2]
        h, d = attn.W_Q.shape[0], attn.W_Q.shape[2]
        query = start if query is None else query
        skip, end = query - start, start + p  # skip: leading positions with keys and values but no query
        W, b = self.qkv(layer)  # [d_model, 3 * head * d_head]: the q, k, v columns in turn
        x = norm(ln1, resid)  # [batch, end - start, d_model]
        # q: [batch, end - query, head, d_head]; k, v: [batch, end - start, head, d_head]
        q = linear(x[:, skip:], W[:, :h * d], b[:h * d]).view(batch, p - skip, h, d)
        kv = linear(x, W[:, h * d:], b[h * d:]).view(batch, p, 2, h, d)
        k, v = kv[:, :, 0], kv[:, :, 1]
        for (r_layer, r_kind, *r_head), delta in (deltas or {}).items():
            if r_layer == layer and r_kind in ("q", "k", "v"):  # one head reads the stream plus a delta
                i, head = "qkv".index(r_kind), r_head[0]
                cols = slice((i * h + head) * d, (i * h + head + 1) * d)
                moved = norm(ln1, resid + delta)[:, skip if i == 0 else 0:]
                q, k, v = (t.clone() if j == i else t for j, t in enumerate((q, k, v)))
                (q, k, v)[i][:, :, head] = linear(moved, W[:, cols], b[cols])
        if start > 0:  # the keys and values before start: [batch, start, head, d_head] each
            k, v = (torch.cat([past(f"blocks.{layer}.attn.hook_{kind}"), t], dim=1) for kind, t in (("k", k), ("v", v)))
        by_head = q.transpose(1, 2).reshape(batch * h, p - skip, d)  # [batch * head, end - query, d_head]
        scores = torch.baddbmm(self.mask_bias(query, end), by_head, k.permute(0, 2, 3, 1).reshape(
            batch * h, d, end), alpha=1 / attn.scale)  # [batch * head, end - query, key_pos], masked
        pattern = scores.softmax(dim=-1)
        z = torch.bmm(pattern, v.transpose(1, 2).reshape(batch * h, end, d))  # [batch * head, end - query, d_head]
        z = z.view(batch, h, p - skip, d).transpose(1, 2)  # [batch, end - query, head, d_head]
        if record is not None:
            record.update({f"blocks.{layer}.attn.hook_q": q, f"blocks.{layer}.attn.hook_k": k,
                           f"blocks.{layer}.attn.hook_v": v, f"blocks.{layer}.attn.hook_z": z,
                           f"blocks.{layer}.attn.hook_pattern": pattern.view(batch, h, p - skip, end)})
        return linear(z.reshape(batch, p - skip, h * d), attn.W_O.view(h * d, -1), attn.b_O)

    def mlp(self, layer: int, resid: Tensor) -> Tensor:
        """Block ``layer``'s MLP output [..., d_model] for its input (hook_mlp_in) [..., d_model]."""
        block = self.model.blocks[layer]
        mlp = block.mlp
        hidden = mlp.act(linear(norm(block.ln2, resid), mlp.W_in, mlp.b_in))  # [..., d_mlp]
        return linear(hidden, mlp.W_out, mlp.b_out)

    def unembed(self, resid: Tensor) -> Tensor:
        """Logits [..., d_vocab_out] of a final stream [..., d_model]: index the positions wanted first."""
        model = self.model
        return linear(norm(model.ln_final, resid), model.unembed.W_U, model.unembed.b_U)

    def qkv(self, layer: int) -> tuple[Tensor, Tensor]:
        """W_Q, W_K, W_V of a layer as one [d_model, 3 * head * d_head] matrix, and their biases."""
        if layer not in self._qkv:
            attn = self.model.blocks[layer].attn
            Ws = [W.permute(1, 0, 2).reshape(W.shape[1], -1) for W in (attn.W_Q, attn.W_K, attn.W_V)]
            self._qkv[layer] = (torch.cat(Ws, dim=1), torch.cat([attn.b_Q, attn.b_K, attn.b_V]).flatten())
        return self._qkv[layer]

    def mask_bias(self, query: int, end: int) -> Tensor:
        """The mask for queries query..end-1 over keys 0..end-1: an additive bias [query_pos, key_pos], 0 or -inf."""
        if (query, end) not in self._masks:
            attn = self.model.blocks[0].attn
            mask = attn.mask[query:end, :end]
            bias = torch.zeros(mask.shape, dtype=attn.W_Q.dtype, device=mask.device)
            self._masks[query, end] = bias.masked_fill(~mask, float("-inf"))
        return self._masks[query, end]


def norm(ln: torch.nn.Module, x: Tensor) -> Tensor:
    """A block's pre-norm (or ln_final) without its hooks: LayerNorm's map, or the identity."""
    return ln.normalize(x) if isinstance(ln, LayerNorm) else x


def linear(x: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """``x @ W + b`` for x [..., d_in] as one fused matmul-and-add (addmm)."""
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), W).view(*x.shape[:-1], W.shape[1])


def _trim(deltas: dict, drop: int) -> dict:
    """The deltas without their first ``drop`` positions."""
    return deltas if drop == 0 else {key: delta[:, drop:] for key, delta in deltas.items()}


# ---- training: the logits at the last position -------------------------------------------


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


def last_position_logits(model: Transformer, tokens: Tensor) -> Tensor:
    """``model(tokens)[:, -1]``: logits [batch, d_vocab_out] at the last position, no hooks.

    Gradients flow as through the model. Earlier blocks run on every position (later keys
    and values read them); the last block runs its query, MLP and unembedding at the last
    position only. In a one-block model without LayerNorm the keys and values are linear in
    ``W_E[token] + W_pos[pos]``, so those of the earlier positions are projected once per
    vocabulary entry and position and looked up, not computed once per token of the batch.
    """
    tokens = model._check_tokens(tokens)  # [batch, pos]
    n = tokens.shape[1]
    forward = HookFree(model)
    if model.cfg.n_layers == 1 and not isinstance(model.blocks[0].ln1, LayerNorm):
        h, d = model.cfg.n_heads, model.cfg.d_head
        W, b = forward.qkv(0)
        W_kv, b_kv = W[:, h * d:], b[h * d:]  # [d_model, 2 * head * d_head]: keys, then values
        by_token = model.embed.W_E @ W_kv  # [d_vocab, 2 * head * d_head]
        by_pos = linear(model.pos_embed.W_pos[:n - 1], W_kv, b_kv)  # [pos - 1, 2 * head * d_head]
        kv = F.embedding(tokens[:, :-1], by_token) + by_pos  # [batch, pos - 1, 2 * head * d_head]
        kv = kv.unflatten(-1, (2, h, d))  # [batch, pos - 1, 2, head, d_head]
        past = {"blocks.0.attn.hook_k": kv[:, :, 0], "blocks.0.attn.hook_v": kv[:, :, 1]}
        final, _ = forward.resid_from(forward.embed(tokens, start=n - 1), start=n - 1, past=past.__getitem__)
    else:
        final, _ = forward.resid_from(forward.embed(tokens), first_query=n - 1)
    return forward.unembed(final[:, -1])  # [batch, d_vocab_out]
