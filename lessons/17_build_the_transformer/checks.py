"""Checkers for lesson 17, build the transformer: each of the learner's modules is built from its config, loaded
with a zoo model's weights (TransformerLens's names) and compared with toylab's own module on the same inputs: its
output and every hook point it shares with toylab, to 1e-5. LayerNorm and GELU, which no zoo model has, are compared
with toylab's modules on seeded random weights (``fixtures.random_model``). A wrong answer is compared with the
common mistakes (no causal mask, the wrong scale, the softmax over queries, b_O forgotten, ...) to name the one made.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toylab import tasks
from toylab.lessons.checking import zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.models.mlp import ACTIVATIONS

from .fixtures import (
    ATTENTION_HOOKS,
    ATTN_ONLY,
    BLOCK_HOOKS,
    EMBED_HOOKS,
    GELU_CONFIG,
    LN_CONFIG,
    MLP_HOOKS,
    WITH_MLP,
    load_weights,
    prompts,
    random_model,
    record,
)

ATOL = RTOL = 1e-5  # the tolerance of every comparison; most answers come out bitwise equal
N_PROMPTS = 32  # test-set prompts for the parts (the whole transformer runs the whole test set)


# ---- what every checker shares ----------------------------------------------------------------


@cache
def _run(name: str, n: int | None = N_PROMPTS) -> tuple[Any, Tensor, Tensor, dict[str, Tensor]]:
    """A zoo model, its first ``n`` test prompts, toylab's logits and every activation on them."""
    zm = zoo_model(name)
    tokens = prompts(zm, n)
    with torch.no_grad():
        logits, cache_ = zm.model.run_with_cache(tokens)
    return zm, tokens, logits, dict(cache_)


@cache
def _random(cfg_name: str) -> Any:
    """toylab's model of LN_CONFIG (or GELU_CONFIG) with every parameter random, built once."""
    return random_model({"ln": LN_CONFIG, "gelu": GELU_CONFIG}[cfg_name])


def _random_resid(seed: int, shape: tuple[int, ...] = (4, 6, 32), scale: float = 2.0) -> Tensor:
    """A residual stream of random values with an offset (a mean to take away), seeded."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=g) + torch.randn(shape[-1], generator=g)


def _close(got: Any, want: Tensor) -> bool:
    """Same shape, and equal to ATOL + RTOL |want| (equal infinities count as equal; a NaN never does)."""
    return (isinstance(got, Tensor) and got.shape == want.shape
            and bool(torch.allclose(got.detach().to(want.dtype), want, atol=ATOL, rtol=RTOL)))


def _similar(got: Any, want: Tensor) -> bool:
    """``_close``, with NaNs at the same places counting as equal (a mistake that makes NaN is still that one)."""
    return (isinstance(got, Tensor) and got.shape == want.shape
            and bool(torch.allclose(got.detach().to(want.dtype), want, atol=1e-4, rtol=1e-4, equal_nan=True)))


def _gap(got: Tensor, want: Tensor) -> str:
    """Where and by how much two tensors of one shape differ most."""
    got = got.detach().to(want.dtype)
    err = torch.where(got == want, torch.zeros_like(want), (got - want).abs())
    err = torch.where(err.isnan(), torch.full_like(err, float("inf")), err)  # a NaN is as far off as can be
    where = tuple(int(i) for i in torch.nonzero(err == err.max())[0])
    return (f"they differ by up to {float(err.max()):.3g} (at index {where}: yours {float(got[where]):.5g}, "
            f"toylab's {float(want[where]):.5g})")


def _expect(got: Any, want: Tensor, what: str, hint: str | None = None) -> None:
    """Raise Wrong unless ``got`` is a tensor of ``want``'s shape and values."""
    if not isinstance(got, Tensor):
        raise Wrong(f"{what}: expected a tensor, got {type(got).__name__}", hint)
    if got.shape != want.shape:
        raise Wrong(f"{what}: expected shape {list(want.shape)}, got {list(got.shape)}", hint)
    if not _close(got, want):
        raise Wrong(f"{what}: {_gap(got, want)}", hint)


def _identical(pairs: Sequence[tuple[Tensor, Tensor]]) -> str:
    """'bitwise identical' if every pair is equal, else the largest difference."""
    worst = max(float(torch.where(a == b, torch.zeros_like(b), (a - b).abs()).max()) for a, b in pairs)
    return "bitwise identical" if worst == 0 else f"equal to {worst:.1g}"


def _build(cls: Any, cfg: Any, weights: Mapping[str, Tensor], what: str, uses_layernorm: bool = False) -> nn.Module:
    """The learner's module ``cls(cfg)`` with ``weights`` loaded, or Wrong saying why not. ``uses_layernorm``: the
    module builds the learner's LayerNorm where ``cfg`` has one, so a NotImplementedError there is exercise 17.2's."""
    if isinstance(cls, nn.Module) or not callable(cls):
        raise Wrong(f"{what}: expected your class, got {type(cls).__name__}",
                    "pass the class itself (check('build.x', Attention)), not an instance or its output")
    try:
        module = cls(cfg)
    except NotImplementedError:
        if not (uses_layernorm and cfg.normalization_type == "LN"):
            raise
        raise Wrong(f"{what}: building it raised NotImplementedError: is your LayerNorm (exercise 17.2) done? It is "
                    "used where cfg.normalization_type == 'LN'", "finish exercise 17.2, then check this one again") \
            from None
    if not isinstance(module, nn.Module):
        raise Wrong(f"{what}: {cls.__name__}(cfg) is a {type(module).__name__}, not a torch nn.Module",
                    "subclass nn.Module and call super().__init__() first")
    try:
        load_weights(module, weights)
    except ValueError as err:
        raise Wrong(f"{what}: the weights do not load: {err}",
                    "name and shape each parameter as TransformerLens does (the lesson's table): e.g. "
                    "W_Q = nn.Parameter(torch.empty(n_heads, d_model, d_head))") from None
    return module.eval()


def _forward(module: nn.Module, *inputs: Tensor) -> tuple[Any, dict[str, Tensor]]:
    """The module's output on ``inputs`` and what its hook points recorded."""
    with torch.no_grad(), record(module) as seen:
        out = module(*inputs)
    return out, dict(seen)


def _named(got: Any, variants: Sequence[tuple[Callable[[], Tensor], str]]) -> str | None:
    """The message of the first mistake whose output ``got`` reproduces."""
    if not isinstance(got, Tensor):
        return None
    for make, says in variants:
        try:
            value = make()
        except RuntimeError:  # a variant that cannot be computed on this case
            continue
        if _similar(got, value):
            return says
    return None


def _hooks(seen: Mapping[str, Tensor], want: Mapping[str, Tensor], names: Sequence[str], what: str,
           required: Sequence[str], prefix: str = "", hints: Mapping[str, str] | None = None) -> None:
    """Each of ``names`` the learner's module recorded (``required`` ones must be there) equals toylab's
    ``want[prefix + name]``; the first that differs is reported."""
    for name in names:
        if name not in seen:
            if name in required:
                part = name.rsplit(".", 1)
                where = f"self.{part[0]}" if len(part) == 2 else "your module"
                raise Wrong(f"{what}: {where} has no hook point {part[-1]}, or it never fires",
                            f"add self.{part[-1]} = HookPoint() in __init__ and pass the tensor through it in "
                            f"forward: x = self.{part[-1]}(x)")
            continue
        _expect(seen[name], want[prefix + name], f"{what}: your {prefix + name}", (hints or {}).get(name))


# ---- toylab's parts, called without their model ---------------------------------------------------


def _toy_attention(attn: nn.Module, x: Tensor) -> Tensor:
    """toylab's Attention on one stream [batch, pos, d_model] (it takes each head's input: the same for all)."""
    per_head = x.unsqueeze(2).expand(-1, -1, attn.W_Q.shape[0], -1)
    return attn(per_head, per_head, per_head)


def _attention_variant(attn: nn.Module, x: Tensor, scale: float | None = None, mask: bool = True, axis: int = -1,
                       mask_after: bool = False, b_O: bool = True, diagonal: int = 1) -> Tensor:
    """The output of an attention with toylab's weights, computed with one of the common mistakes."""
    q = torch.einsum("bpm,hmd->bphd", x, attn.W_Q) + attn.b_Q
    k = torch.einsum("bpm,hmd->bphd", x, attn.W_K) + attn.b_K
    v = torch.einsum("bpm,hmd->bphd", x, attn.W_V) + attn.b_V
    d_head = q.shape[-1]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / (math.sqrt(d_head) if scale is None else scale)
    n = x.shape[1]
    hidden = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=diagonal)
    if mask and not mask_after:
        scores = scores.masked_fill(hidden, float("-inf"))
    pattern = scores.softmax(dim=axis)
    if mask and mask_after:
        pattern = pattern.masked_fill(hidden, 0.0)
    z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
    out = torch.einsum("bqhd,hdm->bqm", z, attn.W_O)
    return out + attn.b_O if b_O else out


def _attention_mistakes(attn: nn.Module, x: Tensor) -> list[tuple[Callable[[], Tensor], str]]:
    d_model, d_head = attn.W_Q.shape[1], attn.W_Q.shape[2]

    def variant(**kw: Any) -> Callable[[], Tensor]:
        return lambda: _attention_variant(attn, x, **kw)

    return [
        (variant(mask=False), ("no causal mask: each query attends to later keys too. Fill the scores where key_pos "
                               "> query_pos with IGNORE (-inf) before the softmax")),
        (variant(mask_after=True), ("the mask is applied after the softmax: the masked probabilities are zeroed, but "
                                    "each row no longer sums to 1. Mask the scores with IGNORE, then take the softmax")),
        (variant(diagonal=0), ("the mask hides the diagonal too: a query may attend to its own position (mask only "
                               "key_pos > query_pos, torch.triu(..., diagonal=1))")),
        (variant(axis=-2), ("the softmax runs over the query axis: each query's probabilities are over the keys, "
                            "softmax(dim=-1) of [batch, head, query_pos, key_pos]")),
        (variant(scale=float(d_model)), "the scores are divided by d_model: divide by sqrt(d_head)"),
        (variant(scale=math.sqrt(d_model)), "the scores are divided by sqrt(d_model): divide by sqrt(d_head)"),
        (variant(scale=float(d_head)), "the scores are divided by d_head: divide by its square root, sqrt(d_head)"),
        (variant(scale=1.0), "the scores are not scaled: divide q·k by sqrt(d_head)"),
        (variant(b_O=False), ("b_O is missing: the heads' outputs summed, plus b_O [d_model] (added once, not per "
                              "head)")),
        (variant(b_O=False, mask=False), "no causal mask, and b_O is missing"),
    ]


def _scores_hint(got: Any, want: Tensor) -> str | None:
    """What a hook_attn_scores that is right except where the mask hides a key holds there."""
    if not isinstance(got, Tensor) or got.shape != want.shape:
        return None
    hidden = torch.isinf(want)
    if hidden.any() and torch.allclose(got[~hidden], want[~hidden], atol=ATOL, rtol=RTOL) and \
            bool(torch.isfinite(got[hidden]).all()):
        value = float(got[hidden].flatten()[0])
        return (f"where the mask hides a key your scores hold {value:.4g}: TransformerLens's IGNORE, which toylab "
                "writes too, is -inf, float('-inf') (the pattern comes out the same; the recorded scores do not)")
    return None


# ---- 17.1 ---------------------------------------------------------------------------------------


def _pos_mistake(got: Any, W_pos: Tensor, batch: int, pos: int) -> str | None:
    if not isinstance(got, Tensor):
        return None
    if got.shape == (pos, W_pos.shape[1]):
        return "that is [pos, d_model]: hook_pos_embed has the batch axis too, W_pos[:pos].expand(batch, pos, -1)"
    if got.dim() >= 2 and got.shape[-2] == W_pos.shape[0] != pos:
        return f"that has all n_ctx = {W_pos.shape[0]} positions: take the first pos = {pos} rows of W_pos"
    if got.shape == (batch, pos, W_pos.shape[1]) and not got.detach().any():
        return "your positional embedding is all zeros: it is W_pos's rows 0 .. pos-1, added to every sequence"
    return None


@exercise("build.embed", "Token and positional embeddings", "implement", "easy", 10,
          hint="Embed: self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model)), forward returns "
               "self.W_E[tokens]; PosEmbed: self.W_pos [n_ctx, d_model], forward returns "
               "self.W_pos[:pos].expand(batch, pos, -1) for tokens [batch, pos]")
def _embed(answer: Any) -> str:
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        raise Wrong(f"expected the pair (Embed, PosEmbed), your two classes; got {type(answer).__name__}",
                    "check('build.embed', (Embed, PosEmbed))")
    embed_cls, pos_cls = answer
    pairs = []
    for name in (ATTN_ONLY, WITH_MLP):
        zm, tokens, _, cache_ = _run(name)
        model = zm.model
        embed = _build(embed_cls, model.cfg, model.embed.state_dict(), f"{name}: Embed")
        pos_embed = _build(pos_cls, model.cfg, model.pos_embed.state_dict(), f"{name}: PosEmbed")
        short = tokens[:3, : max(1, tokens.shape[1] // 2)]  # fewer positions than n_ctx
        for toks, want_embed, want_pos in ((tokens, cache_["hook_embed"], cache_["hook_pos_embed"]),
                                           (short, model.embed(short), model.pos_embed(short))):
            batch, pos = toks.shape
            what = f"{name}, tokens [{batch}, {pos}]"
            with torch.no_grad():
                got_embed, got_pos = embed(toks), pos_embed(toks)
            _expect(got_embed, want_embed, f"{what}: your Embed (hook_embed)",
                    "W_E [d_vocab, d_model] has one row per token id: self.W_E[tokens]")
            _expect(got_pos, want_pos, f"{what}: your PosEmbed (hook_pos_embed)",
                    _pos_mistake(got_pos, model.pos_embed.W_pos, batch, pos)
                    or "index W_pos by position, not by token: self.W_pos[:pos], expanded to [batch, pos, d_model]")
            pairs += [(got_embed, want_embed), (got_pos, want_pos)]
    return (f"your embeddings match hook_embed and hook_pos_embed on {ATTN_ONLY} and {WITH_MLP}, full-length and "
            f"shorter prompts ({_identical(pairs)})")


# ---- 17.2 ---------------------------------------------------------------------------------------


def _layernorm_mistakes(ln: nn.Module, x: Tensor, eps: float) -> list[tuple[Callable[[], Tensor], str]]:
    w, b = ln.w, ln.b

    def centred(t: Tensor, dim: int = -1) -> Tensor:
        return t - t.mean(dim, keepdim=True)

    return [
        (lambda: centred(x) / (x.var(-1, keepdim=True) + eps).sqrt() * w + b,
         ("that divides by the unbiased variance (torch.var's default divides by d_model - 1): LayerNorm takes the "
          "mean of the squares, x.pow(2).mean(-1), or var(unbiased=False)")),
        (lambda: x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w + b,
         "the mean is not taken away (that is RMSNorm): centre x first, x - x.mean(-1, keepdim=True)"),
        (lambda: centred(x) / (centred(x).pow(2).mean(-1, keepdim=True).sqrt() + eps) * w + b,
         "eps is added to the standard deviation: it goes inside the square root, sqrt(variance + eps)"),
        (lambda: centred(x) / (centred(x).pow(2).mean(-1, keepdim=True) + eps).sqrt(),
         "the gain w and bias b are not applied: normalised * w + b"),
        (lambda: centred(x) / (centred(x).pow(2).mean(-1, keepdim=True) + eps).sqrt() * w,
         "the bias b is not added: normalised * w + b"),
        (lambda: centred(x, 0) / (centred(x, 0).pow(2).mean(0, keepdim=True) + eps).sqrt() * w + b,
         "that normalises over the batch axis: each position's vector is normalised over d_model, the last axis"),
        (lambda: centred(x) / (centred(x).pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * w + b,
         "eps is 1e-5 whatever the config: read it from cfg.ln_eps"),
    ]


@exercise("build.layernorm", "LayerNorm", "implement", "easy", 10,
          hint="x = x - x.mean(-1, keepdim=True); scale = (x.pow(2).mean(-1, keepdim=True) + cfg.ln_eps).sqrt(); "
               "return x / scale * self.w + self.b, with w = ones(d_model) and b = zeros(d_model) as parameters")
def _layernorm(cls: Any) -> str:
    model = _random("ln")
    _, _, _, zoo_cache = _run(ATTN_ONLY)
    cases = [("ln_final", LN_CONFIG, zoo_cache["blocks.1.hook_resid_post"][:8], f"{ATTN_ONLY}'s final residuals"),
             ("blocks.0.ln1", LN_CONFIG, _random_resid(1), "random residuals with an offset"),
             ("blocks.1.ln2", LN_CONFIG, _random_resid(2, scale=1e-2), "small residuals (where eps matters)"),
             ("blocks.1.ln2", dataclasses.replace(LN_CONFIG, ln_eps=1e-3), _random_resid(3, scale=3e-2),
              "small residuals, with ln_eps = 1e-3")]
    pairs = []
    for where, cfg, x, about in cases:
        toy = model.get_submodule(where)
        eps = cfg.ln_eps
        if eps != toy.eps:  # the same weights, another eps: toylab's module with it
            toy = type(toy)(cfg)
            load_weights(toy, model.get_submodule(where).state_dict())
        what = f"{where} of a random LN model, on {about}"
        mine = _build(cls, cfg, toy.state_dict(), f"{what}: LayerNorm")
        with torch.no_grad(), record(toy) as toy_seen:
            want = toy(x)
        got, seen = _forward(mine, x)
        if not _close(got, want):
            _expect(got, want, f"{what}: your output",
                    _named(got, _layernorm_mistakes(toy, x, eps))
                    or "centre, divide by sqrt(mean of squares + eps), then * w + b, all over the last axis")
        _hooks(seen, dict(toy_seen), ("hook_scale", "hook_normalized"), what, required=())
        pairs.append((got, want))
    return ("your LayerNorm matches toylab.models.layernorm.LayerNorm on random gains and biases, on a zoo model's "
            f"residuals and on random ones, with two values of eps ({_identical(pairs)}). No zoo model has "
            "LayerNorm, so no zoo weights could check it")


# ---- 17.3 ---------------------------------------------------------------------------------------


@exercise("build.attention", "Causal self-attention with its hook points", "implement", "hard", 40,
          hint="q, k, v = torch.einsum('bpm,hmd->bphd', x, W) + b for each; scores = torch.einsum('bqhd,bkhd->bhqk', "
               "q, k) / sqrt(d_head), masked_fill where key_pos > query_pos with IGNORE (-inf); pattern = "
               "scores.softmax(-1); z = torch.einsum('bhqk,bkhd->bqhd', pattern, v); result = "
               "torch.einsum('bqhd,hdm->bqhm', z, W_O); out = result.sum(2) + b_O. Pass each through its hook point")
def _attention(cls: Any) -> str:
    pairs = []
    cases = [(ATTN_ONLY, 0), (ATTN_ONLY, 1), (WITH_MLP, 1)]
    for name, layer in cases:
        zm, _, _, cache_ = _run(name)
        toy = zm.model.blocks[layer].attn
        what = f"{name}, layer {layer}"
        mine = _build(cls, zm.model.cfg, toy.state_dict(), f"{what}: Attention")
        x = cache_[f"blocks.{layer}.hook_resid_pre"]  # ln1 is the identity: no zoo model has LayerNorm
        want = cache_[f"blocks.{layer}.hook_attn_out"]
        got, seen = _forward(mine, x)
        prefix = f"blocks.{layer}.attn."
        if not _close(got, want):
            hint = _named(got, _attention_mistakes(toy, x))
            if hint is None:  # the first of its hook points that went wrong says where
                try:
                    _hooks(seen, cache_, ATTENTION_HOOKS, what, required=(), prefix=prefix)
                except Wrong as first:
                    raise Wrong(f"{what}: your output differs from hook_attn_out; {first.message}",
                                _scores_hint(seen.get("hook_attn_scores"), cache_[prefix + "hook_attn_scores"])
                                or first.hint) from None
            _expect(got, want, f"{what}: your output (hook_attn_out)", hint)
        scores = seen.get("hook_attn_scores")
        _hooks(seen, cache_, ATTENTION_HOOKS, what, required=ATTENTION_HOOKS, prefix=prefix,
               hints={"hook_attn_scores": _scores_hint(scores, cache_[prefix + "hook_attn_scores"]) or
                      "the scores are q·k / sqrt(d_head), masked with IGNORE, [batch, head, query_pos, key_pos]",
                      "hook_result": "each head's output before the sum, z[head] @ W_O[head]: [batch, pos, head, "
                                     "d_model], without b_O"})
        pairs += [(got, want)] + [(seen[h], cache_[prefix + h]) for h in ATTENTION_HOOKS]
    return (f"your attention and its seven hook points match toylab's run_with_cache on {ATTN_ONLY} (both layers) and "
            f"{WITH_MLP} (layer 1), masked scores included ({_identical(pairs)})")


# ---- 17.4 ---------------------------------------------------------------------------------------


def _mlp_mistakes(mlp: nn.Module, x: Tensor, act_fn: str) -> list[tuple[Callable[[], Tensor], str]]:
    act = ACTIVATIONS[act_fn]

    def out(pre: Tensor, fn: Callable[[Tensor], Tensor] = act, b_out: bool = True) -> Tensor:
        return fn(pre) @ mlp.W_out + (mlp.b_out if b_out else 0)

    pre = x @ mlp.W_in + mlp.b_in
    mistakes = [
        (lambda: out(x @ mlp.W_in), "b_in is missing: pre = x @ W_in + b_in"),
        (lambda: out(pre, b_out=False), "b_out is missing: post @ W_out + b_out"),
        (lambda: out(pre, fn=lambda t: t), "there is no activation between W_in and W_out"),
    ]
    if act_fn != "relu":
        mistakes.append((lambda: out(pre, F.relu), (f"that is ReLU, but this config's act_fn is {act_fn!r}: pick the "
                                                   "activation by cfg.act_fn")))
    if act_fn == "gelu_new":
        mistakes.append((lambda: out(pre, F.gelu), ("that is the exact GELU: 'gelu_new' is GPT-2's tanh "
                                                    "approximation, F.gelu(x, approximate='tanh')")))
    if act_fn == "gelu":
        mistakes.append((lambda: out(pre, lambda t: F.gelu(t, approximate="tanh")),
                         "that is the tanh approximation ('gelu_new'): 'gelu' is the exact F.gelu(x)"))
    return mistakes


@exercise("build.mlp", "The MLP", "implement", "easy", 10,
          hint="pre = x @ W_in + b_in ([batch, pos, d_mlp]); post = act(pre) with act F.relu for 'relu', F.gelu for "
               "'gelu', F.gelu(x, approximate='tanh') for 'gelu_new'; return post @ W_out + b_out; pass pre and post "
               "through hook_pre and hook_post")
def _mlp(cls: Any) -> str:
    pairs = []
    zm, _, _, cache_ = _run(WITH_MLP)
    cases = [(f"{WITH_MLP}, layer {layer}", zm.model.cfg, zm.model.blocks[layer].mlp,
              cache_[f"blocks.{layer}.hook_resid_mid"]) for layer in (0, 1)]  # ln2 is the identity here
    cases += [(f"a random {cfg_name} MLP", model.cfg, model.blocks[0].mlp, _random_resid(4))
              for cfg_name, model in (("gelu_new", _random("ln")), ("gelu", _random("gelu")))]
    for what, cfg, toy, x in cases:
        mine = _build(cls, cfg, toy.state_dict(), f"{what}: MLP")
        with torch.no_grad(), record(toy) as toy_seen:
            want = toy(x)
        got, seen = _forward(mine, x)
        if not _close(got, want):
            _expect(got, want, f"{what}: your output (hook_mlp_out)",
                    _named(got, _mlp_mistakes(toy, x, cfg.act_fn))
                    or "post = act(x @ W_in + b_in); out = post @ W_out + b_out, with act by cfg.act_fn")
        _hooks(seen, dict(toy_seen), MLP_HOOKS, what, required=MLP_HOOKS)
        pairs += [(got, want)] + [(seen[h], toy_seen[h]) for h in MLP_HOOKS]
    return (f"your MLP and its hook points match toylab's on {WITH_MLP}'s two ReLU MLPs and on random GELU MLPs, "
            f"exact and tanh ({_identical(pairs)})")


# ---- 17.5 ---------------------------------------------------------------------------------------


def _block_mistakes(block: nn.Module, x: Tensor) -> list[tuple[Callable[[], Tensor], str]]:
    def attn(t: Tensor) -> Tensor:
        return _toy_attention(block.attn, block.ln1(t))

    def mlp(t: Tensor) -> Tensor:
        return block.mlp(block.ln2(t)) if block.mlp is not None else torch.zeros_like(t)

    mid = x + attn(x)
    mistakes = [
        (lambda: attn(x) + mlp(attn(x)), ("the residual connections are missing: resid_mid = resid_pre + attn_out and "
                                          "resid_post = resid_mid + mlp_out; the stream carries everything forward")),
        (lambda: attn(x) + mlp(x + attn(x)), "resid_pre is not added back: resid_mid = resid_pre + attn_out"),
        (lambda: x + attn(x) + mlp(x), ("the MLP reads resid_pre: it reads resid_mid, after attention has written "
                                        "(resid_post = resid_mid + mlp(ln2(resid_mid)))")),
    ]
    if block.mlp is not None:
        mistakes.insert(0, (lambda: mlp(mid), ("resid_post is the MLP's output alone: add it to the stream, "
                                               "resid_post = resid_mid + mlp_out")))
    if not isinstance(block.ln1, nn.Identity):
        def post_norm() -> Tensor:
            a = block.ln1(x + _toy_attention(block.attn, x))
            return block.ln2(a + block.mlp(a))

        mistakes.append((post_norm, ("LayerNorm is applied to the stream after each sublayer (post-norm): it goes "
                                     "before, on the sublayer's input, attn(ln1(resid_pre)) and mlp(ln2(resid_mid))")))
        mistakes.append((lambda: x + _toy_attention(block.attn, x) + block.mlp(x + _toy_attention(block.attn, x)),
                         "ln1 and ln2 are never applied: attn(ln1(resid_pre)), mlp(ln2(resid_mid))"))
    return mistakes


@exercise("build.block", "The transformer block", "implement", "medium", 15,
          hint="resid_mid = resid_pre + attn(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid)), or "
               "resid_mid alone when cfg.d_mlp is None; ln1 and ln2 are your LayerNorm when cfg.normalization_type "
               "== 'LN', else nn.Identity(); each stream and output through its hook point")
def _block(cls: Any) -> str:
    pairs = []
    cases = []
    for name, layer in ((WITH_MLP, 0), (WITH_MLP, 1), (ATTN_ONLY, 1)):
        zm, _, _, cache_ = _run(name)
        cases.append((f"{name}, block {layer}", zm.model.cfg, zm.model.blocks[layer],
                      cache_[f"blocks.{layer}.hook_resid_pre"], cache_, f"blocks.{layer}."))
    model = _random("ln")
    cases.append(("block 1 of a random model with LayerNorm", model.cfg, model.blocks[1], _random_resid(5), None, ""))
    for what, cfg, toy, x, cache_, prefix in cases:
        mine = _build(cls, cfg, toy.state_dict(), f"{what}: TransformerBlock", uses_layernorm=True)
        if cache_ is None:  # toylab's block on the same input, recorded
            with torch.no_grad(), record(toy) as toy_seen:
                want = toy(x)
            cache_ = dict(toy_seen)
        else:
            want = cache_[f"{prefix}hook_resid_post"]
        got, seen = _forward(mine, x)
        if not _close(got, want):
            with torch.no_grad():
                hint = _named(got, _block_mistakes(toy, x))
            _expect(got, want, f"{what}: your output (hook_resid_post)",
                    hint or "resid_mid = resid_pre + attn(ln1(resid_pre)); resid_post = resid_mid + "
                            "mlp(ln2(resid_mid))")
        names = [h for h in BLOCK_HOOKS if h != "hook_mlp_out" or cfg.d_mlp is not None]
        required = list(names)
        if cfg.d_mlp is None and "hook_resid_mid" not in seen:
            raise Wrong(f"{what}: your block has no hook_resid_mid in this attention-only model, or it never fires",
                        "toylab fires every hook: in an attention-only block resid_mid is there too (it equals "
                        "resid_post; TransformerLens leaves it out, a known trap)")
        inner = [f"attn.{h}" for h in ATTENTION_HOOKS] + ([f"mlp.{h}" for h in MLP_HOOKS] if cfg.d_mlp else [])
        _hooks(seen, cache_, names + inner, what, required=required, prefix=prefix)
        pairs += [(got, want)] + [(seen[h], cache_[prefix + h]) for h in names]
    return (f"your block matches toylab's on {WITH_MLP} (blocks 0 and 1), on an attention-only block of {ATTN_ONLY} "
            f"and on a random block with LayerNorm, hook points included ({_identical(pairs)})")


# ---- 17.6 ---------------------------------------------------------------------------------------


def _transformer_mistakes(model: nn.Module, tokens: Tensor, cache_: Mapping[str, Tensor],
                          ) -> list[tuple[Callable[[], Tensor], str]]:
    n_layers = model.cfg.n_layers

    def logits(resid: Tensor) -> Tensor:
        return model.unembed(model.ln_final(resid))

    def without_pos() -> Tensor:
        with model.hooks([("hook_pos_embed", lambda x, hook: torch.zeros_like(x))]):
            return model(tokens)

    mistakes = [
        (without_pos, ("the positional embedding is left out: the stream starts as embed + pos_embed, so that "
                       "attention can tell positions apart")),
        (lambda: logits(cache_["hook_embed"] + cache_["hook_pos_embed"]),
         "the blocks are skipped: those are the logits of the embeddings alone; run each block on the stream in turn"),
        (lambda: logits(cache_[f"blocks.{n_layers - 1}.hook_resid_post"]) - model.unembed.b_U,
         "b_U is missing from the logits: ln_final(resid) @ W_U + b_U"),
    ]
    if n_layers > 1:
        mistakes.append((lambda: logits(cache_["blocks.0.hook_resid_post"]),
                         "only the first block runs: the stream goes through every block, resid = block(resid)"))
    return mistakes


@exercise("build.transformer", "The whole transformer, loaded with a zoo model's weights", "implement", "medium", 20,
          hint="embed, pos_embed, blocks (an nn.ModuleList of your TransformerBlock), ln_final (LayerNorm or "
               "nn.Identity) and unembed as attributes with those names; forward: resid = hook_embed(embed(tokens)) "
               "+ hook_pos_embed(pos_embed(tokens)), each block in turn, then unembed(ln_final(resid))")
def _transformer(cls: Any) -> str:
    said = []
    pairs = []
    for name in (WITH_MLP, ATTN_ONLY):
        zm, tokens, want, cache_ = _run(name, None)  # the whole test set
        batch = zm.task.eval_batches()["test"]
        mine = _build(cls, zm.model.cfg, zm.model.state_dict(), f"{name}: your transformer")
        got, seen = _forward(mine, tokens)
        what = f"{name}, its {len(tokens)} test prompts"
        if not _close(got, want):
            with torch.no_grad():
                hint = _named(got, _transformer_mistakes(zm.model, tokens, cache_))
            if hint is None:
                try:  # the first hook point that went wrong says where
                    _hooks(seen, cache_, list(cache_), what, required=())
                except Wrong as first:
                    hint = first.message
            _expect(got, want, f"{what}: your logits", hint or "embed + pos_embed, every block in turn, "
                                                               "ln_final, unembed")
        _hooks(seen, cache_, list(cache_), what, required=EMBED_HOOKS)
        mine_acc = float(tasks.accuracy(got, batch))
        card_acc = zm.card["metrics"]["test/accuracy"]
        if abs(mine_acc - float(tasks.accuracy(want, batch))) > 1.5 / int(batch.scored.sum()):
            raise Wrong(f"{what}: your logits are close to toylab's but your accuracy is {mine_acc:.4f}",
                        "compare with tasks.accuracy(logits, batch) on the test batch")
        said.append(f"{name} {mine_acc:.4f} (its card: {card_acc:.4f})")
        pairs.append((got, want))
    model = _random("ln")
    tokens = torch.randint(LN_CONFIG.d_vocab, (8, LN_CONFIG.n_ctx), generator=torch.Generator().manual_seed(6))
    mine = _build(cls, LN_CONFIG, model.state_dict(), "a random model with LayerNorm: your transformer",
                  uses_layernorm=True)
    got, _ = _forward(mine, tokens)
    with torch.no_grad():
        want = model(tokens)
    _expect(got, want, "a random model with LayerNorm: your logits",
            "with normalization_type 'LN', ln1, ln2 and ln_final are your LayerNorm (and load their w and b)")
    pairs.append((got, want))
    return (f"your transformer, loaded with each zoo model's state_dict, gives toylab's logits on the whole test set "
            f"({_identical(pairs)}) and every hook point it shares; test accuracy {', '.join(said)}")
