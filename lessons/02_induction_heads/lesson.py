# %% [markdown]
# # Lesson 2: Induction heads
#
# An *induction head* completes patterns: having seen `... A B ... A`, it predicts `B`.
# Olsson et al. (2022) found that two heads do it together in a two-layer attention-only
# model:
#
# - a **previous-token head** in layer 0 writes, at each position, which token came before;
# - an **induction head** in layer 1 uses that as its *key*: the query at the current token
#   `A` matches the position whose previous token was `A` (the `B` after the earlier `A`),
#   attends there, and its OV circuit copies `B` to the logits.
#
# The layer-1 head reading the layer-0 head's output through its key is called
# **K-composition**. In this lesson you will find these heads three ways: by where they
# attend (detectors), by what their weights compute (QK and OV circuits, composition
# scores), and by whether the model uses them (ablation), and see why the last one is
# needed: `induction-constructed` has *decoy* heads that attend exactly like the circuit's
# heads and do nothing.

# %%
import torch

import toylab
from toylab import methods, viz
from toylab.lessons import check, fast

torch.set_grad_enabled(False)
N = 16 if fast() else 128

natural = toylab.zoo.load("induction-2l")  # trained: its circuit is certified
built = toylab.zoo.load("induction-constructed")  # every weight set by hand, with decoys
batch = natural.task.sample(N, seed=0)
str_tokens = natural.task.to_str_tokens(batch.tokens[0])
_, cache = natural.model.run_with_cache(batch.tokens)

# %% [markdown]
# ## 1. Attention patterns
#
# Each sequence ends with a random segment repeated twice. Look at layer 0 and layer 1: some
# layer-0 heads attend one position back (a bright sub-diagonal); some layer-1 heads, on the
# second copy, attend to the token *after* the earlier occurrence of the current token (a
# stripe offset by the segment length).

# %%
viz.attention_pattern(cache["pattern", 0][0, 2], str_tokens, title="induction-2l L0H2")

# %%
viz.attention_pattern(cache["pattern", 1][0, 0], str_tokens, title="induction-2l L1H0")

# %% [markdown]
# ## 2. Detector scores
#
# A detector turns "looks like" into a number: the mean attention a head pays to the key
# position its type would attend to. The **previous-token score** of a head is its mean
# attention from position `i` to `i - 1`, over the batch and every query position `i >= 1`.
#
# ### Exercise 2.1: previous-token score (implement, easy, about 10 min)
#
# Write `previous_token_score(pattern)`: `pattern` is one layer's
# [batch, head, query_pos, key_pos]; return a score per head, shape [head].

# %% exercise="induction.previous_token_score"
def previous_token_score(pattern):
    raise NotImplementedError


# %%
check("induction.previous_token_score", previous_token_score)

# %% [markdown]
# The **induction score** is the mean attention from a query position `i` to position
# `j + 1`, where `j < i` is the most recent earlier position holding the same token as `i`;
# it averages over every (sequence, `i`) that has such a `j`. In this task's sequences every
# token occurs at most twice, but the checker also feeds random tokens repeated twice, where a
# token can occur three times.
#
# ### Exercise 2.2: induction score (implement, medium, about 15 min)
#
# Write `induction_score(pattern, tokens)` returning [head] for one layer's pattern and the
# tokens [batch, pos] it was computed on.

# %% exercise="induction.induction_score"
def induction_score(pattern, tokens):
    raise NotImplementedError


# %%
check("induction.induction_score", induction_score)

# %% [markdown]
# toylab's `methods.head_scores` computes these for every head at once (your functions now
# match it). With ground truth on, the heatmaps outline the heads the truth names.

# %%
for detector in ("previous-token", "induction"):
    scores = methods.head_scores(natural.model, batch.tokens, detector)
    print(detector, scores.top(4))
viz.head_heatmap(methods.head_scores(natural.model, batch.tokens, "induction").scores,
                 title="induction-2l: induction score", highlight=natural.truth.heads)

# %% [markdown]
# ## 3. Detectors can be fooled
#
# Now the hand-built model. Its circuit is L0H1 (previous-token) and L1H1 (induction); L0H0
# and L1H0 were given the *same attention patterns*, but what they write is read by nothing.

# %%
built_batch = built.task.sample(N, seed=0)
for detector in ("previous-token", "induction"):
    print(detector, methods.head_scores(built.model, built_batch.tokens, detector).top(4))

# %% [markdown]
# Every detector rates the decoys as highly as the real heads. To find the circuit you need
# an intervention: replace a head's output with its output on a *corrupted* input (here, the
# first copy of the segment shuffled) and measure how much the model's preference for the
# right answer drops. `methods.ablation_scores` does that for every head.
#
# ### Exercise 2.3: which heads form the circuit? (answer, medium, about 15 min)
#
# Use `methods.ablation_scores(built.model, pair)` with `pair = built.task.counterfactual(N, seed=0)`
# and answer with the set of head ids that form the induction circuit of
# `induction-constructed`.

# %% exercise="induction.circuit_heads"
circuit_heads = set()  # e.g. {"L0H0", "L1H0"}

# %%
check("induction.circuit_heads", circuit_heads)

# %% [markdown]
# ## 4. Reading the weights: QK and OV circuits
#
# A head does two things: its **QK circuit** `W_Q W_K^T` decides where it attends, its **OV
# circuit** `W_V W_O` what it writes once it does. Multiplying by the embedding and
# unembedding gives token-to-token tables. The *full OV circuit* `W_E W_V W_O W_U`
# [d_vocab, d_vocab_out] says, for each token attended to, which logits go up: a copying head
# has a bright diagonal.
#
# ### Exercise 2.4: the full OV circuit (implement, medium, about 10 min)
#
# Write `full_ov_circuit(model, layer, head)` from the model's weights
# (`model.embed.W_E`, `model.blocks[layer].attn.W_V`, `.W_O`, `model.unembed.W_U`).

# %% exercise="induction.ov_circuit"
def full_ov_circuit(model, layer, head):
    raise NotImplementedError


# %%
check("induction.ov_circuit", full_ov_circuit)

# %%
for layer, head in ((1, 0), (1, 1)):
    ov = methods.ov_circuit(built.model, layer, head)
    print(f"L{layer}H{head} copying score", methods.circuits.copying_score(ov))
viz.heatmap(methods.ov_circuit(built.model, 1, 1)[:12, :12], [str(i) for i in range(12)],
            [str(i) for i in range(12)], title="induction-constructed L1H1: full OV circuit (12 tokens)")

# %% [markdown]
# The positional QK circuit `W_pos W_Q W_K^T W_pos^T` of a previous-token head peaks one
# below the diagonal: it attends by position, not by content.

# %%
viz.heatmap(methods.pos_qk_circuit(built.model, 0, 1), [str(i) for i in range(built.model.cfg.n_ctx)],
            [str(i) for i in range(built.model.cfg.n_ctx)], title="induction-constructed L0H1: positional QK",
            diverging=False)

# %% [markdown]
# ## 5. Composition
#
# The layer-1 head reads the layer-0 head's output. How strongly a sender A's output lies in
# the subspace a receiver B reads is the **composition score** (Elhage et al. 2021):
#
# `||W_A W_B||_F / (||W_A||_F ||W_B||_F)`, with `W_A = W_V W_O` of the sender and, for
# K-composition, `W_B = (W_Q W_K^T)^T` of the receiver (its key reads the sender's output).
#
# ### Exercise 2.5: K-composition score (implement, hard, about 20 min)
#
# Write `k_composition(model, sender_layer, sender_head, receiver_layer, receiver_head)`
# returning a float. (Scaling `W_Q W_K^T` by `1/sqrt(d_head)` does not change the ratio.)

# %% exercise="induction.k_composition"
def k_composition(model, sender_layer, sender_head, receiver_layer, receiver_head):
    raise NotImplementedError


# %%
check("induction.k_composition", k_composition)

# %%
scores = methods.composition_scores(built.model, "k")
print("random baseline", round(scores.baseline, 3))
print(scores.top(4))

# %% [markdown]
# Two pairs stand out above the random baseline, and one of them is the decoys: L1H0's key
# reads L0H0 exactly as L1H1's reads L0H1. Composition is a property of the weights. It says
# which head *can* read which; it cannot say that nothing downstream reads L1H0's output.
# (On the small naturally trained `induction-tiny`, every K-composition score even falls
# below the random baseline, although its circuit is K-composition: a Frobenius-norm ratio
# over the whole residual stream can miss a low-rank channel.)
#
# ### Exercise 2.6: the edge that makes induction (answer, easy, about 5 min)
#
# Answer with the circuit's head-to-head edge of `induction-constructed` as
# `(sender, receiver, kind)`, `kind` being the receiver's input it reaches: `"q"`, `"k"` or `"v"`.

# %% exercise="induction.k_edge"
k_edge = None  # e.g. ("L0H0", "L1H0", "q")

# %%
check("induction.k_edge", k_edge)

# %% [markdown]
# ## What next
#
# Composition scores come from the weights alone, ablations from single components. Lesson 3
# measures effects *along paths*: activation patching says where the information that
# changes the answer lives, and path patching which edge carries it. The lab's "Induction
# heads" page lets you browse every head of every induction model in the zoo, with the ground
# truth overlaid.
