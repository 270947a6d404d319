# %% [markdown]
# # Lesson 6: Grokking modular addition
#
# A one-layer transformer trained on `a + b mod p` from 30% of all pairs first memorises
# them, then, long after its training loss is near zero, suddenly gets the held-out pairs
# right too: it *groks*. Nanda et al. (2023, "Progress measures for grokking via
# mechanistic interpretability") reverse-engineered the algorithm it ends up with:
#
# - the embedding maps `a` and `b` onto `cos(wa)`, `sin(wa)`, `cos(wb)`, `sin(wb)` for a few
#   **key frequencies** `w` (an angle `wx` means `2 pi w x / p` throughout);
# - attention and the MLP multiply them into `cos(w(a+b))` and `sin(w(a+b))`;
# - the unembedding turns those into logits `~ sum_w cos(w(a+b-c))`, which peak at
#   `c = a + b mod p`.
#
# This lesson walks from "the model gets 100%" to "this is the algorithm", and then uses the
# algorithm to watch the model learn it. The zoo's `modadd-113` is the paper's model: one
# layer, 4 heads, a 512-neuron ReLU MLP, no LayerNorm, `p = 113`. The inputs are three
# tokens `a b =`; the prediction is read at `=`.

# %%
import math

import torch

import toylab
from toylab import methods, viz
from toylab.lessons import check

from fixtures import MODEL, PROGRESS_MODEL  # "modadd-113", shared with the checker and the lab (fixtures.py)

torch.set_grad_enabled(False)

zm = toylab.zoo.load(MODEL)
model, task = zm.model, zm.task
p = task.p
tokens = task.all_pairs().tokens  # [pair, pos]: rows (a, b, "="), row index a * p + b
all_logits, cache = model.run_with_cache(tokens)
logits = all_logits[:, -1]  # [pair, c]: the prediction at "="
ticks = [str(x) if x % 10 == 0 else "" for x in range(p)]  # axis labels for [p, p] grids

# %% [markdown]
# ## 1. The model is perfect on pairs it never saw
#
# The task splits the `p^2` pairs once: `task.train_pairs` and `task.test_pairs`, each
# [n, 2]. Training only ever saw the first.

# %%
def accuracy(pairs):
    a, b = pairs[:, 0], pairs[:, 1]
    return (logits[a * p + b].argmax(-1) == (a + b) % p).float().mean().item()


print(f"p = {p}: {len(task.train_pairs)} training pairs ({len(task.train_pairs) / p**2:.0%} of {p**2}), "
      f"{len(task.test_pairs)} held out")
print(f"accuracy: train {accuracy(task.train_pairs):.4f}, held out {accuracy(task.test_pairs):.4f}")

# %% [markdown]
# A lookup table cannot do that: the model computes addition. How?
#
# ## 2. Everything is periodic
#
# Look at activations as functions of the inputs: over the (a, b) grid, head 0's attention
# from `=` to `a`, and neuron 0 of the MLP at `=`.

# %%
attn_to_a = cache["pattern", 0][:, 0, 2, 0].reshape(p, p)  # [a, b]
viz.heatmap(attn_to_a, ticks, ticks, title="head 0: attention from '=' to a", diverging=False,
            xlabel="b", ylabel="a")

# %%
neurons = cache["post", 0][:, 2].T.reshape(-1, p, p)  # [neuron, a, b]: MLP activations at "="
viz.heatmap(neurons[0], ticks, ticks, title="neuron 0 over (a, b)", diverging=False, xlabel="b", ylabel="a")

# %% [markdown]
# Stripes and checkerboards: waves in `a`, in `b` and in both. Periodic functions on the
# residues `0 .. p-1` are best written in the Fourier basis.
#
# ## 3. The Fourier basis over Z_p
#
# On `x = 0 .. p-1` (p odd), the functions
#
#     const = 1/sqrt(p)
#     cos w = sqrt(2/p) cos(2 pi w x / p)    for w = 1 .. (p-1)/2
#     sin w = sqrt(2/p) sin(2 pi w x / p)
#
# are `p` orthonormal vectors: a basis. (Frequency `w` and `p - w` give the same pair, so
# `w` stops at `(p-1)/2`.) Stacked as rows of a [p, p] matrix `B`, the coefficients of a
# function `f` [x] are `B @ f`, and `B.T @ (B @ f)` gives `f` back.
#
# ### Exercise 6.1: the Fourier basis (implement, easy, about 10 min)
#
# Write `fourier_basis(p)` returning the [p, p] matrix, rows in the order
# `const, cos 1, sin 1, cos 2, sin 2, ...`.

# %% exercise="grokking.fourier_basis"
def fourier_basis(p):
    raise NotImplementedError


# %%
check("grokking.fourier_basis", fourier_basis)

# %%
basis, names = methods.fourier.fourier_basis(p)  # [basis, x], ["const", "cos 1", "sin 1", ...]
viz.heatmap(basis[:9], names[:9], ticks, title="the first 9 Fourier basis vectors", xlabel="x")

# %% [markdown]
# ## 4. The embedding is sparse in the Fourier basis
#
# Expand the embedding of the number tokens, `W_E[:p]` [x, d_model], in the basis over `x`,
# and take the norm of each frequency's cos and sin coefficients together
# (`methods.embedding_frequency_norms`). A random embedding would spread over all
# `(p-1)/2` frequencies.

# %%
emb_norms = methods.embedding_frequency_norms(model, p)  # [freq], entry w - 1
viz.frequency_spectrum(emb_norms, title=f"{MODEL}: embedding norm per frequency")

# %%
top = emb_norms.topk(6)
print("largest embedding frequencies:", [(int(i) + 1, round(float(v), 2)) for v, i in zip(top.values, top.indices)])

# %% [markdown]
# A handful of frequencies stand out. The neurons show the same in two dimensions: in the
# 2D basis over (a, b), `B @ X @ B.T` of a neuron's grid `X` [a, b] has a few large
# coefficients, in the rows and columns of one frequency.

# %%
coef = basis @ neurons[0] @ basis.T  # [basis, basis]: 2D Fourier coefficients of neuron 0
sparse_names = [n if i % 10 == 1 else "" for i, n in enumerate(names)]  # label every 5th frequency
viz.heatmap(coef.abs(), sparse_names, sparse_names, title="neuron 0 in the 2D Fourier basis", diverging=False)

# %% [markdown]
# ## 5. The trig identity: how products add
#
# Why cos and sin? Because the model can add angles by multiplying:
#
#     cos(w(a+b)) = cos(wa) cos(wb) - sin(wa) sin(wb)
#     sin(w(a+b)) = sin(wa) cos(wb) + cos(wa) sin(wb)
#
# A ReLU MLP can compute products like these. With `cos(w(a+b))` and `sin(w(a+b))` in the
# residual stream, the unembedding needs one more identity to score each answer `c`:
#
#     cos(w(a+b-c)) = cos(w(a+b)) cos(wc) + sin(w(a+b)) sin(wc)
#
# and `logits[c] = sum_w cos(w(a+b-c))` is largest, equal to the number of frequencies,
# exactly at `c = a + b mod p`: every term peaks there, and for other `c` the waves of
# different frequencies disagree.
#
# ### Exercise 6.2: logits from the trig identity (implement, medium, about 15 min)
#
# Write `trig_logits(a, b, freqs, p)`: `a` and `b` are int tensors [n], `freqs` a list of
# frequencies; return the logits [n, p] (over `c`) of `sum_w cos(w(a+b-c))`, computed the
# model's way: from `cos(wa)`, `sin(wa)`, `cos(wb)`, `sin(wb)` with the two identities,
# without ever forming `a + b`.

# %% exercise="grokking.trig_logits"
def trig_logits(a, b, freqs, p):
    raise NotImplementedError


# %%
check("grokking.trig_logits", trig_logits)

# %% [markdown]
# Compare the model's logits for one pair with the ideal `sum_w cos(w(a+b-c))` over the
# largest embedding frequencies (both centred; the scale differs).

# %%
a0, b0 = 17, 42
c = torch.arange(p)
ideal = sum(torch.cos(2 * math.pi * (int(i) + 1) * (a0 + b0 - c) / p) for i in top.indices[:3])
model_row = logits[a0 * p + b0] - logits[a0 * p + b0].mean()
print(f"a={a0}, b={b0}: model argmax {int(model_row.argmax())}, ideal argmax {int(ideal.argmax())}, "
      f"(a+b) mod p = {(a0 + b0) % p}, correlation {float(torch.corrcoef(torch.stack([model_row, ideal]))[0, 1]):.2f}")
viz.bar(model_row, [str(x) if x % 10 == 0 else "" for x in range(p)], title=f"model logits at a={a0}, b={b0}")

# %% [markdown]
# ## 6. Neurons cluster by frequency
#
# In the 2D basis, frequency `w` of a neuron's grid `X` [a, b] is the part built from
# `cos(wa)`, `sin(wa)`, `cos(wb)`, `sin(wb)` and their four products: the coefficients
# `C = B @ X @ B.T` at every `(i, j)` with `i, j` in `{const, cos w, sin w}`, except
# `(const, const)`, which is the mean. Since `B` is orthonormal, the squared coefficients
# add up to `sum_ab X^2`, and without `(const, const)` to the neuron's variance
# `sum_ab (X - mean X)^2`.
#
# ### Exercise 6.3: how much of a neuron one frequency explains (implement, hard, about 20 min)
#
# Write `frequency_fraction(grids, w)`: `grids` [neuron, a, b] holds each neuron's
# activations over the grid; return [neuron], the fraction of each neuron's variance that
# frequency `w` explains (every neuron the checker uses varies).

# %% exercise="grokking.frequency_fraction"
def frequency_fraction(grids, w):
    raise NotImplementedError


# %%
check("grokking.frequency_fraction", frequency_fraction)

# %% [markdown]
# `methods.neuron_frequencies` gives each neuron the frequency that explains most of it,
# and that fraction.

# %%
neuron_freq, frac = methods.neuron_frequencies(model, task)  # [neuron], [neuron]
counts = torch.bincount(neuron_freq, minlength=(p + 1) // 2)[1:]  # [freq]
viz.frequency_spectrum(counts, title=f"{MODEL}: neurons per frequency", ylabel="neurons")
big = counts >= 0.05 * len(neuron_freq)  # [freq]: clusters with at least 5% of the neurons
print(f"{int((counts > 0).sum())} frequencies have neurons; {int(big.sum())} of them have at least 5% each, "
      f"{float(counts[big].sum() / len(neuron_freq)):.0%} of the {len(neuron_freq)} neurons together")
print(f"fraction explained by a neuron's own frequency: median {float(frac.median()):.2f}; "
      f"over 0.9 for {float((frac > 0.9).float().mean()):.0%} of neurons, over 0.7 for "
      f"{float((frac > 0.7).float().mean()):.0%}")

# %% [markdown]
# Nearly every neuron belongs to one of a few frequencies and is mostly explained by it:
# the MLP is a bank of frequency-specific multipliers. Summed over neurons, the share of
# the MLP's variance per frequency (`methods.mlp_frequency_spectrum`) is sparser still
# than the embedding.

# %%
viz.frequency_spectrum(methods.mlp_frequency_spectrum(model, task), title=f"{MODEL}: MLP variance share per frequency",
                       ylabel="share")

# %% [markdown]
# ## 7. The causal test: restricted and excluded loss
#
# So far this is a story about activations. Does the model *use* these frequencies? Nanda
# et al. intervene on the logits. Over all pairs the logits form `L[a, b, c]`; for each `c`,
# project `L[:, :, c]` onto the directions `cos(w(a+b))`, `sin(w(a+b))` of a set of
# frequencies `w`:
#
# - the **restricted loss** keeps only those directions (plus each logit's mean): if the
#   frequencies are the algorithm, the loss stays as low as the full model's;
# - the **excluded loss** removes them and keeps everything else: if the model relies on
#   them, the loss shoots up, above the `log p` of uniform guessing.
#
# `methods.frequency_losses(model, task, freqs)` returns the full, restricted and excluded
# train loss (`.full`, `.restricted` and `.excluded`).

# %%
candidates = sorted(int(i) + 1 for i in top.indices[:6])
losses = methods.frequency_losses(model, task, candidates)
print(f"the 6 largest embedding frequencies {candidates}: full {losses.full:.4f}, restricted "
      f"{losses.restricted:.4f}, excluded {losses.excluded:.2f} (log p = {math.log(p):.2f})")

# %% [markdown]
# ### Exercise 6.4: the key frequencies (answer, medium, about 15 min)
#
# The key frequencies are the smallest set whose restricted loss is as low as the full
# model's (within 0.005 nats) and whose excluded loss is high. A large embedding norm is
# not enough: the embedding can keep weight on a frequency the rest of the circuit
# ignores. Answer with the list of key frequencies of the lesson's model (`MODEL`,
# `modadd-113`), found by intervention.

# %% exercise="grokking.key_frequencies"
key_freqs = None  # e.g. [3, 8]

# %%
check("grokking.key_frequencies", key_freqs)

# %% [markdown]
# The zoo certifies exactly these checks (`methods.check_key_frequencies`): sufficiency
# (restricted loss), necessity (excluded loss) and minimality (each frequency needed).

# %%
for c_ in methods.check_key_frequencies(model, task, zm.truth.claims["key_frequencies"]):
    print(c_)

# %% [markdown]
# ## 8. The phases of grokking
#
# With the algorithm known, it can be measured along training. The zoo ships *progress
# measures* taken at checkpoints of the model's training run
# (`toylab.zoo.load_shipped_progress`; `toylab progress NAME` recomputes them, and
# `toylab.zoo.grokking_run` retrains with snapshots): train and test loss, and the restricted
# and excluded loss against the final model's key frequencies, the Gini sparsity of the
# embedding in the Fourier basis, and the total squared weight norm.

# %%
measures = toylab.zoo.load_shipped_progress(PROGRESS_MODEL)
print(f"{PROGRESS_MODEL}: {len(measures)} checkpoints, steps {measures.steps[0]} .. {measures.steps[-1]}, "
      f"key frequencies {list(measures.key_frequencies)}")
viz.progress_curves(measures, show_phases=False, title=f"{PROGRESS_MODEL}: progress measures")

# %% [markdown]
# Training loss falls first (memorisation) while test loss stays high. The restricted loss
# tells whether the Fourier circuit is already doing the work on the train set. Does it
# fall before the test loss does?
#
# ### Exercise 6.5: which falls first? (answer, medium, about 10 min)
#
# For a series of losses, take its peak, the lowest value after the peak, and the first
# step after the peak at which the loss is at or below halfway between the two (a step
# between two checkpoints is fine). Answer with
# `{"restricted": step, "test": step}` for `measures.restricted_loss` and
# `measures.test_loss` (steps are in `measures.steps`).

# %% exercise="grokking.halfway_steps"
halfway = None  # e.g. {"restricted": 1000, "test": 2000}

# %%
check("grokking.halfway_steps", halfway)

# %% [markdown]
# `measures.phases()` locates the three phases from the behaviour alone (memorisation
# until train accuracy reaches 99%, circuit formation while test loss stays near its peak,
# cleanup until test accuracy reaches 99%) and tests the paper's predictions against the
# mechanistic measures: each line passes or fails. The plot shades the phases.

# %%
print(measures.phases().table())
viz.progress_curves(measures, title=f"{PROGRESS_MODEL}: the phases of grokking")

# %% [markdown]
# Read the predictions before the story. Nanda et al. trained slowly (lr 1e-3, here about
# 11,000 steps to generalise): there the restricted loss falls thousands of steps before
# the test loss, the excluded loss rises during circuit formation, and only during cleanup,
# when weight decay removes the memorising weights, does the test loss follow. The zoo's
# recipe trains about forty times faster (lr 1e-2 and weight decay 2, about 250 steps) and
# squeezes the phases: circuit formation lasts a dozen checkpoints, and the restricted loss
# falls only a few steps before the test loss. In the shipped run all four predictions
# hold, some by a narrow margin; on another seed or recipe the first two can fail while
# the last two (the weight norm falls, the embedding gets sparser) hold. A measure earns
# trust by being able to say "no": these are tested on every run, not assumed.
