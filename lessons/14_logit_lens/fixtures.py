"""Lesson 14's fixtures, shared by the lesson, its checkers and the lab's "14 Logit lens and DLA" page.

What each model's answer-writers are is never written here: it is read from the truth (the components with an
edge into ``logits``). The zoo has no model with LayerNorm, so ``with_layernorm`` makes one from a zoo model: the
same weights, a LayerNorm before every attention, MLP and the unembedding, each set from the zoo model's own
residual stream so that it changes the stream as little as a LayerNorm can (it still centres each vector and
divides it by its own scale). It has no truth and no certificate of its own.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

from toylab import zoo
from toylab.components import parse
from toylab.models import Transformer, TransformerConfig
from toylab.tasks import IGNORE, CounterfactualPair

MODEL = "induction-siit"  # the lesson's model: L0H2 the previous-token head, L1H1 the induction head
RECALL = "factual-recall"  # L0H1 moves the relation, MLP0 looks the fact up at the subject, L1H1 moves it to "="
IOI = "ioi-siit"  # name movers L2H0 and L2H3, a negative name mover L3H2
MODELS = (MODEL, RECALL, IOI)  # exercises 14.2 and 14.6
N_PROMPTS = 256  # prompts the logit lens is scored on
N_PAIRS = 64  # counterfactual pairs direct attribution averages over
LENS_SEED = 0  # the lesson's prompts and pairs (the checkers draw their own)
DECODABLE = 0.9  # a stage "decodes the answer" when the logit lens's accuracy there is at least this
LN_PROMPTS = 256  # prompts the inserted LayerNorms are fitted on
LN_SEED = 1  # and their seed


def with_layernorm(model: Transformer, task: Any, n: int = LN_PROMPTS, seed: int = LN_SEED) -> Transformer:
    """A new model: ``model``'s weights with a LayerNorm before each attention, each MLP and the unembedding.

    Each LayerNorm's gain ``w`` is the mean scale of the stream it reads in ``model`` and its bias ``b`` the mean
    of that stream's mean over d_model (both on ``n`` prompts of ``task`` drawn with ``seed``): on a typical
    input it gives back roughly what ``model`` read there, so the model still does its task. ``model`` is not
    changed."""
    if model.cfg.normalization_type is not None:
        raise ValueError(f"with_layernorm expects a model without LayerNorm, got normalization_type="
                         f"{model.cfg.normalization_type!r}")
    cfg = TransformerConfig(**{**model.cfg.to_dict(), "normalization_type": "LN"})
    normed = Transformer(cfg).to(next(model.parameters()).device)
    missing, unexpected = normed.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(key.split(".")[-2].startswith("ln") for key in missing), (missing, unexpected)
    sites = []
    for layer, block in enumerate(normed.blocks):
        sites.append((block.ln1, f"blocks.{layer}.hook_resid_pre"))
        if not cfg.attn_only:
            sites.append((block.ln2, f"blocks.{layer}.hook_resid_mid"))
    sites.append((normed.ln_final, f"blocks.{cfg.n_layers - 1}.hook_resid_post"))
    tokens = task.sample(n, seed=seed).tokens.to(normed.device)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=[hook for _, hook in sites])
        for ln, hook in sites:
            stream = cache[hook]  # [batch, pos, d_model]
            mean = stream.mean(-1, keepdim=True)
            scale = ((stream - mean).pow(2).mean(-1) + ln.eps).sqrt()  # [batch, pos]
            ln.w.fill_(float(scale.mean()))
            ln.b.fill_(float(mean.mean()))
    return normed.eval()


@cache
def layernorm_model(name: str, seed: int | None = None) -> Transformer:
    """``with_layernorm`` of the zoo model ``name``, made once per process. Do not modify it."""
    zm = zoo.load(name, seed=seed)
    return with_layernorm(zm.model, zm.task)


def answer_direction(model: Transformer, pair: CounterfactualPair) -> tuple[torch.Tensor, torch.Tensor]:
    """The direction each position's logit difference reads, and where it is scored.

    direction [batch, pos, d_model]: W_U[:, answer] - W_U[:, counterfactual answer]; mask [batch, pos]: True where
    both answers are given and differ (where ``methods.direct_logit_attribution`` scores a pair)."""
    answer, counter = pair.clean.targets, pair.corrupted.targets  # [batch, pos]
    mask = (answer != IGNORE) & (counter != IGNORE) & (answer != counter)
    W_U = model.unembed.W_U.detach()  # [d_model, d_vocab_out]
    direction = W_U.T[answer.clamp(min=0)] - W_U.T[counter.clamp(min=0)]  # [batch, pos, d_model]
    return direction, mask.to(direction.device)


def head_sources(model: Transformer, pair: CounterfactualPair, layer: int, head: int) -> torch.Tensor:
    """One head's direct attribution split by the position it reads from: [batch, key_pos].

    At each scored query position q the head writes sum_k pattern[q, k] * (v[k] @ W_O): the term of key k,
    projected on the answer direction, is what k contributes. Each row averages its own scored query positions
    (as ``DirectLogitAttribution.per_row``); a row sums to that head's ``per_row`` attribution. Through a final
    LayerNorm, as that attribution does, with its scale frozen: each term centred, divided by the run's scale at q
    and multiplied by its gain, which is the same as projecting on the direction (w * direction, centred) / scale."""
    direction, mask = answer_direction(model, pair)
    names = [f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_v"]
    ln = model.ln_final if hasattr(model.ln_final, "w") else None
    names += ["ln_final.hook_scale"] if ln is not None else []
    with torch.no_grad():
        _, cache = model.run_with_cache(pair.clean.tokens, names=names)
        if ln is not None:
            direction = direction * ln.w
            direction = (direction - direction.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"]
        pattern = cache[names[0]][:, head]  # [batch, query_pos, key_pos]
        written = cache[names[1]][:, :, head] @ model.blocks[layer].attn.W_O[head]  # [batch, key_pos, d_model]
        per_query = torch.einsum("bqk,bkm,bqm->bqk", pattern, written, direction)  # [batch, query_pos, key_pos]
        weight = mask.float()
        return (per_query * weight[..., None]).sum(1) / weight.sum(1).clamp(min=1)[:, None]


def direct_writers(truth: Any) -> set[str]:
    """The truth's components that write the answer straight into the logits (an edge into ``logits``)."""
    return {e.sender for e in truth.edges if e.receiver == "logits" and e.sender not in ("embed", "pos_embed")}


def circuit_components(truth: Any) -> set[str]:
    """The truth's heads and MLPs (its nodes but the embeddings and the logits)."""
    return {node for node in truth.nodes if node not in ("embed", "pos_embed", "logits")}


def stage_after(cfg: TransformerConfig, component: str) -> str:
    """The logit lens's first stage (``methods.logit_lens`` labels) that holds ``component``'s output."""
    kind, layer, _ = parse(component)
    if kind == "head" and not cfg.attn_only:
        return f"resid_mid {layer}"
    return f"resid_pre {layer + 1}" if layer + 1 < cfg.n_layers else f"resid_post {layer}"


def truth_stage(zm: Any) -> str:
    """Where the truth says the answer is written: the stage after the last of its direct writers, the negative
    ones aside (a negative name mover writes against the answer)."""
    writers = [c for c in direct_writers(zm.truth) if not zm.truth.nodes.get(c, "").startswith("negative")]
    last = max(writers, key=lambda c: (parse(c)[1], parse(c)[0] == "mlp"))  # in a layer the MLP comes last
    return stage_after(zm.model.cfg, last)
