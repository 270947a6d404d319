# %% [markdown]
# # Lesson 17: Build the transformer
#
# Every zoo model is a `toylab.models.Transformer`, a decoder-only transformer with TransformerLens's parameter
# names, shapes and hook points. In this lesson you write one yourself, part by part, as ARENA's chapter 1.1 does
# for GPT-2: the embeddings, LayerNorm, causal self-attention with its hook points, the MLP, the block, and the
# whole model. Each part is checked against toylab's own module on a zoo model's real weights, to 1e-5 (done with
# the same operations in the same order, the numbers come out bitwise identical, and the checker says so). The
# lesson ends with a zoo model's weights loaded into your own code: same logits on its whole test set, same
# accuracy, and your hook points to intervene with.
#
# Two zoo models serve throughout: `factual-recall` (2 layers, 2 heads, d_model 32, ReLU MLPs of 64 neurons) and
# `induction-tiny` (2 layers, 2 heads, d_model 32, attention only).

# %%
import math  # noqa: F401  (for your attention's sqrt(d_head))

import torch
import torch.nn.functional as F  # noqa: F401  (for your MLP's activations)
from fixtures import ATTN_ONLY, IGNORE, STEPS, WITH_MLP, load_weights, prompts, record
from torch import nn

import toylab
from toylab import tasks, viz
from toylab.hooks import HookedRootModule, HookPoint  # noqa: F401  (HookPoint: for your hook points)
from toylab.lessons import check

torch.set_grad_enabled(False)  # nothing is trained here

zm = toylab.zoo.load(WITH_MLP)
model, cfg = zm.model, zm.model.cfg
print(model.extra_repr())
print(cfg)

# %% [markdown]
# ## 1. The names and the shapes
#
# A model is its config and its state dict. TransformerLens's names say where each weight sits
# (`blocks.{layer}.attn.W_Q`), and its shapes keep the heads apart: `W_Q` is [n_heads, d_model, d_head], one
# [d_model, d_head] matrix per head. Weights multiply from the right: a stream [batch, pos, d_model] times
# `W_in` [d_model, d_mlp] gives [batch, pos, d_mlp].

# %%
for name, param in model.state_dict().items():
    print(f"{name:24} {list(param.shape)}")

# %% [markdown]
# One forward pass, hook point by hook point: what each records and how it is computed from the ones before.
# You will write each of these lines. `ln1`, `ln2` and `ln_final` are LayerNorms in a model that has them
# (`cfg.normalization_type == "LN"`) and the identity otherwise; no zoo model has them.

# %%
for hook, shape, formula in STEPS:
    print(f"{hook:32} {shape:36} {formula}")

# %% [markdown]
# A worked example, the last step: the unembedding. A module is a `torch.nn.Module` whose parameters have the
# names and shapes of the state dict, so that the zoo model's weights load into it. `fixtures.load_weights` loads
# a state dict and names any parameter that is missing, extra or misshapen (plain `load_state_dict` would do as
# well).

# %%
class Unembed(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))  # [d_model, d_vocab_out]
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out))  # [d_vocab_out]

    def forward(self, resid):  # the final stream [batch, pos, d_model] -> logits [batch, pos, d_vocab_out]
        return resid @ self.W_U + self.b_U


unembed = load_weights(Unembed(cfg), model.unembed.state_dict())  # the keys of model.unembed: W_U, b_U
tokens = prompts(zm, 8)  # the first 8 prompts of the task's test set, [batch, pos]
logits, cache = model.run_with_cache(tokens)
final = cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"]  # ln_final is the identity here
print("Unembed gives the model's logits:", torch.equal(unembed(final), logits))

# %% [markdown]
# ## 2. Embeddings
#
# The stream starts as the sum of two embeddings: the token's, a row of `W_E` [d_vocab, d_model] per token id
# (`hook_embed`), and the position's, a row of `W_pos` [n_ctx, d_model] per position 0 .. pos-1, the same for
# every sequence of the batch (`hook_pos_embed`, [batch, pos, d_model] like the token embedding).
#
# ### Exercise 17.1: token and positional embeddings (implement, easy, about 10 min)
#
# Write `Embed` and `PosEmbed`, each built from a config, each mapping tokens [batch, pos] to [batch, pos,
# d_model]. The checker loads `model.embed`'s and `model.pos_embed`'s weights into yours and compares with
# `hook_embed` and `hook_pos_embed`, on the full test prompts and on shorter ones (`pos < n_ctx`).

# %% exercise="build.embed"
class Embed(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        raise NotImplementedError  # W_E

    def forward(self, tokens):
        raise NotImplementedError


class PosEmbed(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        raise NotImplementedError  # W_pos

    def forward(self, tokens):
        raise NotImplementedError


# %%
check("build.embed", (Embed, PosEmbed))

# %% [markdown]
# ## 3. LayerNorm
#
# Before attention and before the MLP, a pre-norm transformer normalises what the sublayer reads (the stream
# itself is never normalised): take away the mean over d_model, divide by the square root of the mean of the
# squares plus `eps`, then scale by a learned gain `w` and add a learned bias `b`, both [d_model]. (The variance is
# the mean of squares, divided by d_model: not `torch.var`'s default, which divides by d_model - 1.)
#
# No zoo model has LayerNorm: every recipe sets `normalization_type=None`, as in Nanda et al.'s grokking model
# (without it the unembedding reads the stream linearly, so each component's direct effect on the logits is exact,
# with no LayerNorm scale to freeze). So this part cannot be checked on zoo weights: the checker compares yours
# with `toylab.models.layernorm.LayerNorm` on random gains and biases, on a zoo model's residual stream and on
# random ones, with two values of `cfg.ln_eps`.
#
# ### Exercise 17.2: LayerNorm (implement, easy, about 10 min)
#
# Write `LayerNorm(cfg)` with parameters `w` (ones) and `b` (zeros), [d_model] each, and `eps = cfg.ln_eps`;
# forward maps [batch, pos, d_model] to the same shape. TransformerLens's hook points `hook_scale` ([batch, pos,
# 1], the denominator) and `hook_normalized` (the output) are yours to add; the checker compares them if you do.

# %% exercise="build.layernorm"
class LayerNorm(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        raise NotImplementedError  # w, b, eps

    def forward(self, x):
        raise NotImplementedError


# %%
check("build.layernorm", LayerNorm)

# %% [markdown]
# ## 4. Causal self-attention
#
# Each head reads the normalised stream `x` [batch, pos, d_model] three ways:
#
# - queries `q = x @ W_Q[h] + b_Q[h]`, keys `k = x @ W_K[h] + b_K[h]`, values `v = x @ W_V[h] + b_V[h]`, each
#   [batch, pos, head, d_head] (`hook_q`, `hook_k`, `hook_v`);
# - scores `q · k / sqrt(d_head)` for every query and key, [batch, head, query_pos, key_pos]; a causal model masks
#   every key after its query, `key_pos > query_pos`, by writing `IGNORE` there before the softmax.
#   TransformerLens's IGNORE is `-inf` (`fixtures.IGNORE`; toylab's too), so a masked key gets probability
#   exactly 0. The masked, scaled scores are `hook_attn_scores`;
# - the pattern, a softmax over the keys (`hook_pattern`), each query's row summing to 1;
# - `z`, the values averaged by the pattern, [batch, pos, head, d_head] (`hook_z`);
# - `result`, each head's output `z[h] @ W_O[h]`, [batch, pos, head, d_model] (`hook_result`: TransformerLens
#   computes it only with a flag, toylab always);
# - the output: the heads' results summed, plus `b_O` [d_model], once.
#
# `torch.einsum` keeps the axes straight: `torch.einsum("bpm,hmd->bphd", x, W_Q)` is every head's projection.
#
# ### Exercise 17.3: causal self-attention with its hook points (implement, hard, about 40 min)
#
# Write `Attention(cfg)`: parameters `W_Q`, `W_K`, `W_V` [n_heads, d_model, d_head], `W_O` [n_heads, d_head,
# d_model], `b_Q`, `b_K`, `b_V` [n_heads, d_head] and `b_O` [d_model]; the IGNORE value as a buffer that is not
# saved, `self.register_buffer("IGNORE", torch.tensor(IGNORE), persistent=False)` (a TransformerLens state dict
# carries it, and a `mask`, per layer; toylab's rebuilds both from the config); and seven hook points,
# `hook_q`, `hook_k`, `hook_v`, `hook_attn_scores`, `hook_pattern`, `hook_z`, `hook_result` (`HookPoint()` each,
# the tensor passed through it in forward). `forward(x)` maps [batch, pos, d_model] to [batch, pos, d_model].
#
# The checker runs yours on the residual stream of two zoo models, layer by layer, and compares its output and
# each hook point with `run_with_cache` (`hook_attn_out` and `blocks.{layer}.attn.hook_*`).

# %% exercise="build.attention"
class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        raise NotImplementedError  # parameters, the IGNORE buffer, seven hook points

    def forward(self, x):
        raise NotImplementedError


# %%
check("build.attention", Attention)

# %% [markdown]
# Your attention's intermediate values are there to look at. `fixtures.record(module)` records what every hook
# point of a module outputs (it works on any `nn.Module`). Here, layer 1 of `induction-tiny`, whose heads the
# truth makes induction heads, on one test prompt: the masked scores are -inf, their probability exactly 0, and
# each query's probabilities sum to 1.

# %%
ind = toylab.zoo.load(ATTN_ONLY)
ind_tokens = prompts(ind, 1)
_, ind_cache = ind.model.run_with_cache(ind_tokens)
head = next(int(r.head[3:]) for r in ind.truth.attention if r.pattern == "induction" and r.head.startswith("L1"))
try:
    mine = load_weights(Attention(ind.model.cfg), ind.model.blocks[1].attn.state_dict())
    with record(mine) as seen:
        mine(ind_cache["blocks.1.hook_resid_pre"])
    scores, pattern, whose = seen["hook_attn_scores"], seen["hook_pattern"], "your attention"
except (NotImplementedError, KeyError):
    scores, pattern, whose = ind_cache["attn_scores", 1], ind_cache["pattern", 1], "toylab's (finish 17.3 for yours)"
hidden = torch.isinf(scores[0, head])  # [query_pos, key_pos]: the keys after each query
print(f"{whose}, L1H{head}: {int(hidden.sum())} masked scores, all IGNORE: "
      f"{bool((scores[0, head][hidden] == IGNORE).all())}; their largest probability: "
      f"{float(pattern[0, head][hidden].max()):g}; every row sums to 1: "
      f"{bool(torch.allclose(pattern[0, head].sum(-1), torch.ones(len(hidden))))}")
viz.qk_heatmaps(scores[0, head], pattern[0, head], ind.task.to_str_tokens(ind_tokens[0]),
                title=f"{ATTN_ONLY}, L1H{head}: {whose}")

# %% [markdown]
# ## 5. The MLP
#
# The MLP works on each position alone: `pre = x @ W_in + b_in` [batch, pos, d_mlp] (`hook_pre`), `post =
# act(pre)` (`hook_post`), output `post @ W_out + b_out` [batch, pos, d_model]. The activation is the config's
# `act_fn`: `"relu"` (every zoo model), `"gelu"` (the exact GELU, `F.gelu`) or `"gelu_new"` (GPT-2's tanh
# approximation, `F.gelu(x, approximate="tanh")`).
#
# ### Exercise 17.4: the MLP (implement, easy, about 10 min)
#
# Write `MLP(cfg)` with `W_in` [d_model, d_mlp], `b_in` [d_mlp], `W_out` [d_mlp, d_model], `b_out` [d_model] and
# hook points `hook_pre`, `hook_post`. The checker compares it with `factual-recall`'s two MLPs and, for the GELUs
# no zoo model has, with toylab's MLP on random weights.

# %% exercise="build.mlp"
class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError


# %%
check("build.mlp", MLP)

# %% [markdown]
# ## 6. The block
#
# A block reads the residual stream and adds to it:
#
# `resid_pre -> resid_mid = resid_pre + attn(ln1(resid_pre)) -> resid_post = resid_mid + mlp(ln2(resid_mid))`
#
# Nothing is overwritten: every component writes into the stream what later ones read, which is why its
# outputs can be patched, ablated and attributed one by one. In an attention-only model there is no MLP and
# `resid_post` is `resid_mid`; toylab still fires `hook_resid_mid` there (TransformerLens does not: a trap its
# users report).
#
# ### Exercise 17.5: the block (implement, medium, about 15 min)
#
# Write `TransformerBlock(cfg)` from your `Attention`, `MLP` and `LayerNorm`: attributes `ln1`, `attn`, `ln2`,
# `mlp` (the norms your `LayerNorm` when `cfg.normalization_type == "LN"`, else `nn.Identity()`; no `ln2` or
# `mlp` when `cfg.d_mlp is None`) and hook points `hook_resid_pre`, `hook_attn_out`, `hook_resid_mid`,
# `hook_mlp_out` (with an MLP), `hook_resid_post`. `forward(resid_pre)` returns `resid_post`. The checker runs
# yours on `factual-recall`'s blocks, an attention-only block of `induction-tiny` and a random block with
# LayerNorm.

# %% exercise="build.block"
class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        raise NotImplementedError

    def forward(self, resid):
        raise NotImplementedError


# %%
check("build.block", TransformerBlock)

# %% [markdown]
# ## 7. The whole transformer
#
# `tokens -> embed + pos_embed -> blocks.0 ... blocks.{n_layers-1} -> ln_final -> unembed`.
#
# ### Exercise 17.6: the whole transformer, loaded with a zoo model's weights (implement, medium, about 20 min)
#
# Write `DemoTransformer(cfg)` with attributes `embed`, `pos_embed`, `blocks` (an `nn.ModuleList` of your
# blocks), `ln_final` and `unembed` (the `Unembed` above), and hook points `hook_embed` and `hook_pos_embed`:
# then a zoo model's `state_dict()` loads into it as it is. Subclass `toylab.hooks.HookedRootModule` instead of
# `nn.Module` and call `self.setup_hooks()` at the end of `__init__`: your model then has `run_with_cache` and
# `hooks`, with hook names that are the paths of your hook points, TransformerLens's names.
#
# The checker loads `factual-recall`'s and `induction-tiny`'s weights into yours and compares the logits on each
# task's whole test set, the accuracy, and every hook point that your model shares with toylab's; then a random
# model with LayerNorm.

# %% exercise="build.transformer"
class DemoTransformer(HookedRootModule):
    def __init__(self, cfg):
        super().__init__()
        raise NotImplementedError

    def forward(self, tokens):
        raise NotImplementedError


# %%
check("build.transformer", DemoTransformer)

# %% [markdown]
# ## 8. A zoo model in your own code
#
# Your code, `induction-tiny`'s weights. Its test accuracy should be the one its card recorded when it was
# trained; and your hook points work as toylab's do: zero the heads the truth names as induction heads, with a
# hook on your `blocks.1.attn.hook_z`, and the model forgets how to copy.

# %%
batch = ind.task.eval_batches()["test"]
try:
    yours = load_weights(DemoTransformer(ind.model.cfg), ind.model.state_dict())
except NotImplementedError:
    yours = None
    print("(finish exercise 17.6 to run induction-tiny in your own code)")
if yours is not None:
    logits = yours(batch.tokens)
    print(f"your {ATTN_ONLY}: test accuracy {float(tasks.accuracy(logits, batch)):.4f} "
          f"(its card: {ind.card['metrics']['test/accuracy']:.4f}); largest logit difference from toylab's "
          f"{float((logits - ind.model(batch.tokens)).abs().max()):.2g}")
    induction = [int(r.head[3:]) for r in ind.truth.attention if r.pattern == "induction"]

    def ablate(z, hook):  # z: [batch, pos, head, d_head]
        z = z.clone()
        z[:, :, induction] = 0
        return z

    if isinstance(yours, HookedRootModule) and "blocks.1.attn.hook_z" in yours.hook_names():
        with yours.hooks([("blocks.1.attn.hook_z", ablate)]):
            ablated = yours(batch.tokens)
        print(f"with the truth's induction heads {['L1H' + str(h) for h in induction]} zeroed: test accuracy "
              f"{float(tasks.accuracy(ablated, batch)):.4f}")
        _, your_cache = yours.run_with_cache(batch.tokens[:1])
        print("your cache:", list(your_cache)[:6], "...")

# %% [markdown]
# ## What next
#
# You have a transformer of your own that runs any zoo model bit for bit, with TransformerLens's names, shapes and
# hook points: everything the other lessons do with hooks and caches, they could do with yours. The lab's page
# "17 Build the transformer" walks through one forward pass of any zoo model: pick a prompt, a layer and a head,
# and see every hook point's tensor, the step that computes it recomputed from the ones before, and the head's
# scores and pattern. From here, ARENA's chapter 1.1 goes on to sampling and training; toylab's `toylab train`
# trains the zoo's models with the same module tree.
