# %% [markdown]
# # Lesson 3: Activation patching and path patching
#
# Detectors and weights tell you what a component *could* do. Patching tells you what it
# *does* on the task. The recipe (Meng et al. 2022; Wang et al. 2022; Heimersheim & Nanda
# 2024) needs a **counterfactual pair**: a clean input and a corrupted one that differ in a
# single controlled way and have different answers.
#
# 1. Run both; note a metric on each (here the logit difference between the clean answer
#    and the corrupted answer).
# 2. Run the corrupted input again, but copy one activation in from the clean run.
# 3. The fraction of the metric that comes back, `(patched - corrupted) / (clean - corrupted)`,
#    says how much of the difference that activation carries.
#
# Patching a whole head answers "does this head matter?". **Path patching** narrows it to an
# edge: change what *one* receiver reads from *one* sender, through one of its inputs
# (query, key or value), and nothing else. Because every toylab model ships its circuit, you
# can check each answer against the truth.

# %%
import time

import torch

import toylab
from toylab import methods, viz
from toylab.lessons import check, fast
from toylab.tasks import logit_diff

torch.set_grad_enabled(False)
N = 16 if fast() else 128

zm = toylab.zoo.load("induction-tiny")
pair = zm.task.counterfactual(N, seed=0)
print(pair.description)
print("clean    ", zm.task.to_str_tokens(pair.clean.tokens[0]))
print("corrupted", zm.task.to_str_tokens(pair.corrupted.tokens[0]))
clean_ld = float(logit_diff(zm.model(pair.clean.tokens), pair))
corrupted_ld = float(logit_diff(zm.model(pair.corrupted.tokens), pair))
print(f"logit difference: clean {clean_ld:.2f}, corrupted {corrupted_ld:.2f}")

# %% [markdown]
# ## 1. One patch
#
# ### Exercise 3.1: patch the residual stream (implement, medium, about 15 min)
#
# Write `patch_resid_pre(model, pair, layer, pos)`: run `pair.corrupted.tokens` with the
# clean run's `blocks.{layer}.hook_resid_pre` copied in at position `pos` (every row), and
# return the normalised score above as a float. Use `model.run_with_cache` for the clean
# activations and `model.hooks` for the patch.

# %% exercise="patching.patch_resid_pre"
def patch_resid_pre(model, pair, layer, pos):
    raise NotImplementedError


# %%
check("patching.patch_resid_pre", patch_resid_pre)

# %% [markdown]
# ## 2. Sweeps
#
# `methods.activation_patching(model, pair, target)` runs the whole sweep: every layer and
# position for the residual stream, every head for `"head"` (its `hook_z` at every
# position), every head and position for `"head_pos"`, and one head's `q`, `k`, `v` or
# `pattern`. It gives the same numbers as one forward per patch
# (`methods.patching.naive_activation_patching`, the reference), but recomputes only what a patch can change: nothing
# upstream of the patched layer, nothing before the patched position. Compare the two.

# %%
start = time.perf_counter()
fast_result = methods.activation_patching(zm.model, pair, "resid_pre")
fast_s = time.perf_counter() - start
start = time.perf_counter()
naive_result = methods.patching.naive_activation_patching(zm.model, pair, "resid_pre")
naive_s = time.perf_counter() - start
print(f"fast {fast_s * 1000:.0f} ms, naive {naive_s * 1000:.0f} ms, "
      f"max difference {float((fast_result.scores - naive_result.scores).abs().max()):.1e}")
n_ctx = pair.clean.tokens.shape[1]
viz.heatmap(fast_result.scores, [f"L{layer}" for layer in range(zm.model.cfg.n_layers)],
            [str(p) for p in range(n_ctx)], title="induction-tiny: resid_pre patching")

# %% [markdown]
# The information that the first copy was shuffled enters at the first copy's positions in
# layer 0, and by layer 1 it has moved to the positions of the second copy, where the
# induction heads read it. Now per head, on the model whose circuit was enforced by training:

# %%
siit = toylab.zoo.load("induction-siit", seed=0)
siit_pair = siit.task.counterfactual(N, seed=0)
heads = methods.activation_patching(siit.model, siit_pair, "head")
print(heads.top(4))
viz.head_heatmap(heads.scores, title="induction-siit: head patching", highlight=siit.truth.heads)

# %% [markdown]
# ### Exercise 3.2: which heads carry the answer? (answer, easy, about 10 min)
#
# Answer with the set of heads of `induction-siit` (seed 0) that restore at least a tenth
# of the logit difference when patched.

# %% exercise="patching.important_heads"
important_heads = set()

# %%
check("patching.important_heads", important_heads)

# %% [markdown]
# ## 3. Path patching
#
# Head patching mixes every path a head sits on. To ask whether L0H1 matters *because the
# induction head's key reads it*, change only that: in the corrupted run, add the sender's
# (clean - corrupted) output to the receiver's key input and nothing else. toylab gives each
# head its own query, key and value input (`blocks.{l}.hook_q_input`, `hook_k_input`,
# `hook_v_input`, [batch, pos, head, d_model]), so this is one hook.
#
# ### Exercise 3.3: one path patch (implement, hard, about 20 min)
#
# Write `path_patch_k(model, pair, sender, receiver)` for head ids such as `"L0H1"` and
# `"L1H1"`, returning the normalised score as a float.

# %% exercise="patching.path_patch_k"
def path_patch_k(model, pair, sender, receiver):
    raise NotImplementedError


# %%
check("patching.path_patch_k", path_patch_k)

# %% [markdown]
# `methods.path_patching(model, pair, receivers, receiver_input)` does it for every sender
# at once. On the hand-built model the decoy L0H0 attends exactly like L0H1, yet nothing
# flows from it into the induction head's key:

# %%
built = toylab.zoo.load("induction-constructed")
built_pair = built.task.counterfactual(N, seed=0)
for receiver_input in ("q", "k", "v"):
    result = methods.path_patching(built.model, built_pair, "L1H1", receiver_input)
    print(receiver_input, result.top(2))

# %% [markdown]
# ### Exercise 3.4: who writes the keys, who the values? (answer, medium, about 15 min)
#
# The naturally trained `induction-2l` shares the work among its heads. Path-patch from the
# layer-0 heads into the keys of all four layer-1 heads at once, then into their values, and
# answer with a dict `{"k": heads, "v": heads}` of the layer-0 heads scoring above 0.05.

# %% exercise="patching.senders"
senders = {"k": set(), "v": set()}

# %%
check("patching.senders", senders)

# %% [markdown]
# ## What next
#
# You have located the induction circuit three ways and checked each against the truth.
# The lab's "Activation and path patching" page draws these heatmaps for any zoo model, with
# the ground truth outlined. Later lessons apply the same tools to modular addition, where
# the circuit is an algorithm in Fourier space.
