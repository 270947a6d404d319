"""QK and OV circuits of attention heads, read from the weights, and composition scores.

Axis names used in shape comments:
    d_vocab, d_vocab_out   input tokens and output logits
    n_ctx                  positions (query_pos / key_pos when both ends matter)
    d_model, d_head        residual and head widths
    layer, head            a head's address (sender_* / receiver_* for composition)

Following Elhage et al. 2021 ("A Mathematical Framework for Transformer Circuits") and
ARENA 1.2, with TransformerLens's row-vector convention (x @ W):

    W_OV = W_V W_O                   [d_model, d_model]  what a head writes, given what it reads
    W_QK = W_Q W_K^T                 [d_model, d_model]  query side on the left, key on the right
    OV circuit  W_E W_OV W_U         [d_vocab, d_vocab_out]  attending to token t raises logit u
    QK circuit  W_E W_QK W_E^T / sqrt(d_head)   [query token, key token]  attention score

Approximations, stated once:
    * Biases are left out (b_Q, b_K, b_V, b_O): they add token-independent terms, so they
      shift a circuit's rows or columns uniformly and carry no token-to-token structure.
    * LayerNorm: where a model has it (``normalization_type == "LN"``), each LN's gain ``w``
      is folded into the weights that read it and its centring is applied to the writing
      matrices (W_E, W_pos, W_O), as TransformerLens's fold_ln / center_writing_weights;
      the per-token scale, which depends on the whole residual stream, is left out. The
      zoo's induction models have no LayerNorm, so for them the circuits are exact.

Composition (Elhage et al. 2021, TransformerLens ``all_composition_scores``): for a sender
head A in an earlier layer and a receiver head B,

    score = ||W_A W_B||_F / (||W_A||_F ||W_B||_F),    W_A = W_OV of A and
    W_B = W_QK of B (q: A's output read by B's query), W_QK^T (k: read by B's key), W_OV (v)

The score is near its ``baseline`` (the same ratio for random Gaussian matrices of the same
shapes) when A writes into a subspace B ignores. It is a property of the weights alone: a
pair that composes may still be unused on the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from toylab import components as comp
from toylab.hooks import UnknownNameError
from toylab.models import Transformer
from toylab.models.layernorm import LayerNorm

COMPOSITIONS = ("q", "k", "v")


def _centered(W: Tensor) -> Tensor:
    """A writing matrix [..., d_model] with its mean over d_model removed (LN ignores it)."""
    return W - W.mean(-1, keepdim=True)


def _uses_ln(model: Transformer) -> bool:
    return model.cfg.normalization_type == "LN"


def _embedding(model: Transformer) -> Tensor:
    W_E = model.embed.W_E.detach()  # [d_vocab, d_model]
    return _centered(W_E) if _uses_ln(model) else W_E


def _pos_embedding(model: Transformer) -> Tensor:
    W_pos = model.pos_embed.W_pos.detach()  # [n_ctx, d_model]
    return _centered(W_pos) if _uses_ln(model) else W_pos


def _gain(norm: torch.nn.Module) -> Tensor | None:
    return norm.w.detach() if isinstance(norm, LayerNorm) else None  # [d_model]


def _check_head(model: Transformer, layer: int, head: int) -> None:
    cfg = model.cfg
    if not (0 <= layer < cfg.n_layers and 0 <= head < cfg.n_heads):
        raise ValueError(f"no head L{layer}H{head}: the model has {cfg.n_layers} layers of {cfg.n_heads} heads")


def ov_matrix(model: Transformer, layer: int, head: int) -> Tensor:
    """W_V W_O of one head [d_model, d_model], LN gain folded in, output centred if LN."""
    _check_head(model, layer, head)
    attn = model.blocks[layer].attn
    W_V, W_O = attn.W_V[head].detach(), attn.W_O[head].detach()  # [d_model, d_head], [d_head, d_model]
    gain = _gain(model.blocks[layer].ln1)
    if gain is not None:
        W_V, W_O = gain[:, None] * W_V, _centered(W_O)
    return W_V @ W_O  # [d_model, d_model]


def qk_matrix(model: Transformer, layer: int, head: int) -> Tensor:
    """W_Q W_K^T / sqrt(d_head) of one head [d_model query, d_model key], LN gain folded in."""
    _check_head(model, layer, head)
    attn = model.blocks[layer].attn
    W_Q, W_K = attn.W_Q[head].detach(), attn.W_K[head].detach()  # [d_model, d_head]
    gain = _gain(model.blocks[layer].ln1)
    if gain is not None:
        W_Q, W_K = gain[:, None] * W_Q, gain[:, None] * W_K
    return W_Q @ W_K.T / math.sqrt(model.cfg.d_head)  # [d_model, d_model]


def _unembedding(model: Transformer) -> Tensor:
    W_U = model.unembed.W_U.detach()  # [d_model, d_vocab_out]
    gain = _gain(model.ln_final)
    return W_U if gain is None else gain[:, None] * W_U


def ov_circuit(model: Transformer, layer: int, head: int) -> Tensor:
    """The full OV circuit W_E W_V W_O W_U [d_vocab, d_vocab_out]: row t is what attending to
    token t adds to the logits. A copying head has a dominant diagonal."""
    return _embedding(model) @ ov_matrix(model, layer, head) @ _unembedding(model)


def _head_layer(head_id: str) -> tuple[int, int]:
    kind, layer, index = comp.parse(head_id)
    if kind != "head":
        raise ValueError(f"{head_id!r} is not a head id such as 'L0H1'")
    return layer, index


def qk_circuit(model: Transformer, layer: int, head: int, key_through: str | None = None) -> Tensor:
    """The QK circuit W_E W_QK W_E^T / sqrt(d_head) [d_vocab query, d_vocab key].

    Entry (q, k) is the attention score from a query token q to a key token k (the token
    part only; positions are ``pos_qk_circuit``). With ``key_through="L0H1"`` the key is
    instead read through that earlier head's OV circuit, W_E W_QK (W_E W_OV)^T: entry (q, k)
    is the score toward a position where the earlier head attended to token k. An
    induction head K-composing with a previous-token head has a dominant diagonal there.
    """
    W_E = _embedding(model)  # [d_vocab, d_model]
    keys = W_E
    if key_through is not None:
        sender_layer, sender_head = _head_layer(key_through)
        if sender_layer >= layer:
            raise ValueError(f"key_through={key_through!r} must be a head of a layer before {layer}")
        keys = W_E @ ov_matrix(model, sender_layer, sender_head)  # [d_vocab, d_model]
    return W_E @ qk_matrix(model, layer, head) @ keys.T  # [d_vocab query, d_vocab key]


def pos_qk_circuit(model: Transformer, layer: int, head: int) -> Tensor:
    """W_pos W_QK W_pos^T / sqrt(d_head) [n_ctx query_pos, n_ctx key_pos], -inf where a causal
    model cannot attend (key after query). A previous-token head peaks on the sub-diagonal."""
    W_pos = _pos_embedding(model)  # [n_ctx, d_model]
    scores = W_pos @ qk_matrix(model, layer, head) @ W_pos.T  # [query_pos, key_pos]
    if model.cfg.attention_dir == "causal":
        n = scores.shape[0]
        future = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return scores


def copying_score(matrix: Tensor) -> float:
    """Fraction of rows of the square part of ``matrix`` whose largest entry is on the diagonal."""
    if matrix.ndim != 2:
        raise ValueError(f"copying_score needs a 2-d matrix, got shape {tuple(matrix.shape)}")
    n = min(matrix.shape)
    if n == 0:
        raise ValueError("copying_score needs a non-empty matrix")
    square = matrix[:n, :n]
    return float((square.argmax(-1) == torch.arange(n, device=matrix.device)).float().mean())


def eigen_copying_score(matrix: Tensor) -> float:
    """Elhage et al.'s copying score: sum of eigenvalues / sum of their absolute values, in
    [-1, 1]; positive eigenvalues (a token raising its own logit) push it towards 1."""
    if matrix.ndim != 2:
        raise ValueError(f"eigen_copying_score needs a 2-d matrix, got shape {tuple(matrix.shape)}")
    n = min(matrix.shape)
    eig = torch.linalg.eigvals(matrix[:n, :n].double())  # [n] complex
    total = eig.abs().sum()
    return float(eig.sum().real / total) if total > 0 else 0.0


@dataclass(frozen=True)
class CompositionScores:
    kind: str  # "q", "k" or "v": which input of the receiver reads the sender
    scores: Tensor  # [sender_layer, sender_head, receiver_layer, receiver_head], NaN where not downstream
    baseline: float  # mean score of random Gaussian matrices of the same shapes

    def __getitem__(self, pair: tuple[str, str]) -> float:
        """The score of (sender id, receiver id), e.g. ``scores["L0H1", "L1H1"]``."""
        (sl, sh), (rl, rh) = (_head_layer(h) for h in pair)
        n_layers, n_heads = self.scores.shape[:2]
        for layer, head, h in ((sl, sh, pair[0]), (rl, rh, pair[1])):
            if not (layer < n_layers and head < n_heads):
                ids = [comp.head_id(a, b) for a in range(n_layers) for b in range(n_heads)]
                raise UnknownNameError(h, ids, what="head id for this model")
        if rl <= sl:
            raise ValueError(f"{pair[0]} cannot compose with {pair[1]}: the receiver must be in a later layer")
        return float(self.scores[sl, sh, rl, rh])

    def top(self, k: int = 3) -> list[tuple[tuple[str, str], float]]:
        """The ``k`` highest-scoring (sender, receiver) pairs, best first."""
        flat = self.scores.flatten()
        valid = (~flat.isnan()).nonzero().squeeze(-1)
        order = valid[flat[valid].argsort(descending=True)][:k]
        out = []
        for i in order.tolist():
            sl, sh, rl, rh = (int(x) for x in torch.unravel_index(torch.tensor(i, device="cpu"), self.scores.shape))
            out.append(((comp.head_id(sl, sh), comp.head_id(rl, rh)), float(flat[i])))
        return out


def _score(A: Tensor, B: Tensor) -> Tensor:
    """||A B||_F / (||A||_F ||B||_F) for stacks A [..., d, d] and B [..., d, d] (broadcast)."""
    return (A @ B).norm(dim=(-2, -1)) / (A.norm(dim=(-2, -1)) * B.norm(dim=(-2, -1)))


@torch.no_grad()
def composition_scores(model: Transformer, kind: str, n_baseline: int = 64, seed: int = 0) -> CompositionScores:
    """Q-, K- or V-composition score of every (earlier head, later head) pair."""
    if kind not in COMPOSITIONS:
        raise ValueError(f"unknown composition kind {kind!r}; choose one of {COMPOSITIONS}")
    cfg = model.cfg
    heads = [(layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    shape = (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_model)
    OV = torch.stack([ov_matrix(model, *lh) for lh in heads]).reshape(shape)  # [layer, head, d_model, d_model]
    QK = torch.stack([qk_matrix(model, *lh) for lh in heads]).reshape(shape)
    right = {"q": QK, "k": QK.transpose(-2, -1), "v": OV}[kind]
    # [sender_layer, sender_head, 1, 1, d, d] @ [1, 1, receiver_layer, receiver_head, d, d]
    scores = _score(OV[:, :, None, None], right[None, None])  # [s_layer, s_head, r_layer, r_head]
    layer = torch.arange(cfg.n_layers, device=scores.device)
    downstream = layer[:, None] < layer[None, :]  # [sender_layer, receiver_layer]
    scores = scores.masked_fill(~downstream[:, None, :, None], float("nan"))

    # Baseline: each factor a Gaussian matrix of the weights' shapes, so the product has the
    # same rank (d_head) as a real W_OV or W_QK; the ratio does not depend on their scale.
    g = torch.Generator().manual_seed(seed)
    m, d = cfg.d_model, cfg.d_head

    def randn(*s: int) -> Tensor:
        return torch.randn(n_baseline, *s, generator=g, device="cpu")

    A = randn(m, d) @ randn(d, m)  # [sample, d_model, d_model]
    B = randn(m, d) @ randn(d, m)
    baseline = float(_score(A, B).mean())
    return CompositionScores(kind, scores, baseline)
