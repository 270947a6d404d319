"""A hand-constructed induction transformer: every weight set by hand, no training.

Axis names used in shape comments:
    batch        independent sequences
    pos          token position, 0 .. n_ctx - 1 (query_pos / key_pos when both ends matter)
    head         attention head within a layer
    d_model      residual stream width: the concatenation of the subspaces below
    d_head       width of one head's query, key and value
    d_vocab      input tokens (BOS = 0, ordinary tokens 1 .. n_tokens); equals d_vocab_out

Residual subspaces (``Layout``), each a block of one-hot coordinates, in this order:
    tok          [d_vocab]  which token sits here              written by embed.W_E
    pos          [n_ctx]    which position this is             written by pos_embed.W_pos
    prev         [d_vocab]  which token sat one position back  written by L0H1, read by L1H1's key
    decoy_prev   [d_vocab]  the same, a second copy            written by L0H0, read by L1H0's key
    out          [d_vocab]  which token to predict             written by L1H1, read by unembed.W_U
    decoy_out    [d_vocab]  the same, a second copy            written by L1H0, read by nobody
so d_model = 5 * d_vocab + n_ctx and d_head = max(n_ctx, d_vocab). For
Induction(n_tokens=24, n_ctx=16) that is d_model 141, d_head 25.

The model is 2 layers x 2 heads, attention only, no LayerNorm; every bias is 0 except one
(L1's sink, below). Head roles (the circuit heads are head 1 on purpose, so that code which
silently assumes head 0 gets caught):

    L0H1  PREVIOUS_TOKEN_HEAD  QK reads pos: query at i matches key at i - 1 (d_head index
          = position). OV copies tok into prev. At position 0 the only visible key is BOS
          itself, so BOS's "previous token" is BOS.
    L1H1  INDUCTION_HEAD       QK: query reads tok, key reads prev (d_head index = token id):
          the query at a token x matches the key one position after x's earlier occurrence.
          It K-composes with L0H1. OV copies that key's tok into out, times logit_scale.
          A query with no earlier occurrence falls back on BOS (a query bias against BOS's
          key, at half the match score), whose value is zero: uniform logits.
    L0H0  DECOY                exactly L0H1's attention pattern (a previous-token head by any
          attention score), writing the previous token into decoy_prev.
    L1H0  DECOY                exactly L1H1's attention pattern (an induction head by any
          attention score, K-composing with L0H0 through decoy_prev), writing the predicted
          token into decoy_out, which nothing reads.

The decoys form a complete mirror circuit L0H0 -> L1H0 whose output never reaches the
logits: a method that goes by attention patterns (or by probing the residual stream for
"previous token" and "next token") cannot tell it from the real one; a causal method can.
Ablating or patching L0H0 or L1H0 (with any finite values) leaves the logits bitwise
unchanged: their writes land on coordinates that W_U and the real circuit's W_Q, W_K, W_V
read with exact zeros. Zero-ablating L0H1 or L1H1 leaves uniform logits.

Attention is made effectively hard by a score gap ``attn_scale`` (after the 1/sqrt(d_head)
of the attention), so a wrong key carries weight about exp(-attn_scale), and the BOS fallback
about exp(-attn_scale / 2). The right answer's logit is about ``logit_scale`` and every other
logit about 0, so the loss is about n_tokens * exp(-logit_scale).

The constructed model solves every Induction task whose n_ctx and n_tokens are at most the
ones it was built for. ``check_against_algorithm`` proves that on an exhaustively enumerated
domain (``enumerate_inputs``), for this model or any other.

    model = construct_induction(Induction(n_tokens=6, n_ctx=9, min_seg_len=2))
    check_against_algorithm(model, Induction(n_tokens=6, n_ctx=9, min_seg_len=2))  # (1800, 1800)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from toylab.models import Transformer, TransformerConfig
from toylab.tasks.base import IGNORE, Batch
from toylab.tasks.induction import BOS, Induction

PREVIOUS_TOKEN_HEAD = (0, 1)  # (layer, head)
INDUCTION_HEAD = (1, 1)
DECOY_HEADS = ((0, 0), (1, 0))

MAX_DOMAIN = 1_000_000  # the most inputs check_against_algorithm enumerates
_CHUNK = 4096  # rows per forward pass while checking


@dataclass(frozen=True)
class Layout:
    """Where each subspace lies in the residual stream (see the module docstring)."""

    d_vocab: int
    n_ctx: int

    def _token_block(self, index: int) -> slice:
        """The index-th token-sized block after tok and pos (1: prev ... 4: decoy_out)."""
        start = index * self.d_vocab + self.n_ctx
        return slice(start, start + self.d_vocab)

    @property
    def tok(self) -> slice:
        return slice(0, self.d_vocab)

    @property
    def pos(self) -> slice:
        return slice(self.d_vocab, self.d_vocab + self.n_ctx)

    @property
    def prev(self) -> slice:
        return self._token_block(1)

    @property
    def decoy_prev(self) -> slice:
        return self._token_block(2)

    @property
    def out(self) -> slice:
        return self._token_block(3)

    @property
    def decoy_out(self) -> slice:
        return self._token_block(4)

    @property
    def d_model(self) -> int:
        return 5 * self.d_vocab + self.n_ctx

    @property
    def d_head(self) -> int:
        return max(self.n_ctx, self.d_vocab)

    def subspaces(self) -> dict[str, slice]:
        names = ("tok", "pos", "prev", "decoy_prev", "out", "decoy_out")
        return {name: getattr(self, name) for name in names}


def layout_for(task: Induction) -> Layout:
    """The residual layout ``construct_induction`` uses for ``task``."""
    _check_task(task)
    return Layout(d_vocab=task.d_vocab, n_ctx=task.n_ctx)


def _one_hot(W: Tensor, rows: slice, cols: slice, ids: range, value: float = 1.0, shift: int = 0) -> None:
    """Map "which token" / "which position" ``i`` to "which i + shift": for each ``i`` in
    ``ids``, ``W[rows.start + i, cols.start + i + shift] = value`` ([d_in, d_out], in place).
    Ids whose target falls outside ``cols`` are skipped."""
    for i in ids:
        j = i + shift
        if 0 <= j < cols.stop - cols.start:
            W[rows.start + i, cols.start + j] = value


def _check_task(task: object) -> None:
    if not isinstance(task, Induction):
        # ValueError, as everywhere in toylab for a bad argument, of whatever kind
        raise ValueError(f"expected an Induction task, got {type(task).__name__}")  # noqa: TRY004


def construct_induction(task: Induction, attn_scale: float = 20.0, logit_scale: float = 12.0) -> Transformer:
    """The hand-built 2-layer, 2-head, attention-only induction transformer for ``task``.

    ``attn_scale`` is the attention score of a matching key over a non-matching one;
    ``logit_scale`` the logit of the answer over the others. See the module docstring.
    """
    _check_task(task)
    for name, value in (("attn_scale", attn_scale), ("logit_scale", logit_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    lay = layout_for(task)
    cfg = TransformerConfig(
        n_layers=2,
        d_model=lay.d_model,
        n_heads=2,
        d_head=lay.d_head,
        d_vocab=task.d_vocab,
        n_ctx=task.n_ctx,
        d_mlp=None,
        d_vocab_out=task.d_vocab_out,
        normalization_type=None,
    )
    model = Transformer(cfg)
    tokens, ordinary, positions = range(task.d_vocab), range(1, task.d_vocab), range(task.n_ctx)
    d_in = slice(0, task.d_vocab)  # rows of W_E / columns of W_U: token ids
    heads = slice(0, lay.d_head)  # the d_head axis
    q_gain = attn_scale * math.sqrt(lay.d_head)  # undoes the attention's 1 / sqrt(d_head)

    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        _one_hot(model.embed.W_E, d_in, lay.tok, tokens)
        _one_hot(model.pos_embed.W_pos, slice(0, task.n_ctx), lay.pos, positions)

        # Layer 0: both heads attend from i to i - 1; head 1 writes prev, head 0 decoy_prev.
        attn0 = model.blocks[0].attn
        for h, written in ((1, lay.prev), (0, lay.decoy_prev)):
            _one_hot(attn0.W_Q[h], lay.pos, heads, positions, q_gain)
            _one_hot(attn0.W_K[h], lay.pos, heads, positions, shift=1)
            _one_hot(attn0.W_V[h], lay.tok, heads, tokens)
            _one_hot(attn0.W_O[h], heads, written, tokens)

        # Layer 1: query "which token am I", key "which token came before you"; head 1
        # reads prev and writes out, head 0 reads decoy_prev and writes decoy_out. d_head
        # index 0 (BOS's id, unused by the match) is the BOS fallback.
        attn1 = model.blocks[1].attn
        for h, read, written in ((1, lay.prev, lay.out), (0, lay.decoy_prev, lay.decoy_out)):
            _one_hot(attn1.W_Q[h], lay.tok, heads, ordinary, q_gain)
            _one_hot(attn1.W_K[h], read, heads, ordinary)
            attn1.W_K[h, lay.tok.start + BOS, BOS] = 1.0
            attn1.b_Q[h, BOS] = q_gain / 2
            _one_hot(attn1.W_V[h], lay.tok, heads, ordinary)  # BOS's value is zero
            _one_hot(attn1.W_O[h], heads, written, ordinary, logit_scale)

        _one_hot(model.unembed.W_U, lay.out, d_in, tokens)
    return model.eval()


# ---- the exhaustive domain ---------------------------------------------------------------
def count_inputs(task: Induction) -> int:
    """How many distinct sequences ``task`` can produce: for each segment length L, the
    ordered choices of n_ctx - 1 - L distinct tokens (prefix, then segment)."""
    _check_task(task)
    return sum(
        math.perm(task.n_tokens, task.n_ctx - 1 - seg_len)
        for seg_len in range(task.min_seg_len, task.max_seg_len + 1)
    )


def induction_targets(tokens: Tensor) -> Tensor:
    """The induction algorithm's answers [batch, pos] for sequences [batch, pos].

    At a position i whose token occurred earlier, at k < i, the answer is tokens[k + 1];
    IGNORE where the token is new, and on the last position (which has no next token to
    predict). On the task's layout these are exactly its targets, for clean and for
    counterfactual sequences alike; computed here from the rule, not from the sampler.
    """
    n_ctx = tokens.shape[1]
    before = torch.ones(n_ctx, n_ctx, dtype=torch.bool).tril(-1)  # [query_pos, key_pos]: k < i
    same = (tokens.unsqueeze(2) == tokens.unsqueeze(1)) & before  # [batch, query_pos, key_pos]
    earlier = same.int().argmax(dim=-1)  # [batch, pos]: first earlier occurrence, 0 if none
    answer = tokens.gather(1, (earlier + 1).clamp(max=n_ctx - 1))  # [batch, pos]
    scored = same.any(dim=-1)  # [batch, pos]
    scored[:, -1] = False
    return torch.where(scored, answer, IGNORE)


def enumerate_inputs(task: Induction, max_inputs: int = MAX_DOMAIN) -> Batch:
    """Every sequence ``task`` can produce, once each, with the induction algorithm's targets.

    Rows come by segment length, then prefix and segment tokens in lexicographic order.
    Raises ValueError if there are more than ``max_inputs``.
    """
    total = count_inputs(task)
    if total > max_inputs:
        raise ValueError(
            f"{task!r} has {total} distinct inputs, more than max_inputs={max_inputs}: "
            "enumerate a smaller task (fewer tokens or a shorter n_ctx)"
        )
    rows: list[list[int]] = []
    for seg_len in range(task.min_seg_len, task.max_seg_len + 1):
        n_distinct = task.n_ctx - 1 - seg_len
        for chosen in itertools.permutations(range(1, task.n_tokens + 1), n_distinct):
            segment = list(chosen[n_distinct - seg_len :])
            rows.append([BOS, *chosen, *segment])
    tokens = torch.tensor(rows, dtype=torch.int64).reshape(total, task.n_ctx)
    return Batch(tokens, induction_targets(tokens))


@torch.no_grad()
def check_against_algorithm(model: Transformer, task: Induction, max_inputs: int = MAX_DOMAIN) -> tuple[int, int]:
    """Run ``model`` on every input of ``task`` and compare with the induction algorithm.

    Returns ``(n_inputs, n_correct)``: the number of distinct sequences, and of those on
    which the model's arg-max equals the algorithm's answer at every scored position.
    Works for any model (constructed or trained) whose n_ctx and vocabulary cover the task.
    """
    _check_task(task)
    cfg = model.cfg
    if task.n_ctx > cfg.n_ctx:
        raise ValueError(
            f"task n_ctx={task.n_ctx} is larger than the model supports (n_ctx={cfg.n_ctx}): "
            "check a task with a shorter context"
        )
    if task.d_vocab > cfg.d_vocab or task.d_vocab_out > cfg.d_vocab_out:
        raise ValueError(
            f"task vocabulary (n_tokens={task.n_tokens}, d_vocab={task.d_vocab}) is larger than "
            f"the model supports (d_vocab={cfg.d_vocab}, d_vocab_out={cfg.d_vocab_out})"
        )
    batch = enumerate_inputs(task, max_inputs).to(model.device)
    n_correct = 0
    for start in range(0, len(batch), _CHUNK):
        chunk = batch[start : start + _CHUNK]
        predicted = model(chunk.tokens).argmax(dim=-1)  # [batch, pos]
        right = (predicted == chunk.targets) | ~chunk.scored  # [batch, pos]
        n_correct += int(right.all(dim=-1).sum())
    return len(batch), n_correct
