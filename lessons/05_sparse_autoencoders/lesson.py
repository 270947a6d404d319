# %% [markdown]
# # Lesson 5: Sparse autoencoders find the true features
#
# Lesson 4 showed a model packing more features than dimensions. A sparse autoencoder (SAE)
# tries to undo that: it maps an activation `x` to many latents `z`, few of them active,
# and reads `x` back from them:
#
#     z     = act((x - b_dec) @ W_enc + b_enc)      [batch, d_sae]
#     x_hat = z @ W_dec + b_dec                     [batch, d_in]
#
# Each row of `W_dec` is a candidate *feature direction*. On a large model nobody knows the
# true features, so an SAE is judged by proxies (reconstruction, sparsity). Here we know them,
# so we can ask the real question: did it find them?
#
# The data: `toylab.sae.SyntheticFeatures` draws each activation as a sparse, non-negative
# sum of 128 known unit directions in 32 dimensions (`data.features`, [feature, d_in]); each
# feature is on 3% of the time. It is this lesson's fixture (`fixtures.py`, beside this file),
# shared with the checker and the lab's page.

# %%
import torch

from toylab import methods, viz
from toylab.lessons import check, fast
from toylab.sae import SAE, SAEConfig, cosine_matrix, score_sae, train_sae

from fixtures import activation_sampler, dictionary, feature_directions, toy_model

data = dictionary()  # SyntheticFeatures(d_in=32, n_features=128, feature_probability=0.03, seed=0)
x, c = data.sample(8192, torch.Generator().manual_seed(1))  # activations [batch, d_in], coefficients [batch, feature]
print("true features per sample (the data's L0):", float((c > 0).sum(-1).float().mean()))

# %% [markdown]
# ## 1. Encoding
#
# A *TopK* SAE (Gao et al. 2024) makes `z` sparse by construction: it keeps the `k` largest
# pre-activations of each row, ReLU-ed, and zeros the rest. There is no sparsity penalty to
# tune, and `k` is the L0.
#
# ### Exercise 5.1: TopK encoding (implement, easy, about 10 min)
#
# Write `topk_encode(x, W_enc, b_enc, b_dec, k)`: `x` [batch, d_in], `W_enc` [d_in, d_sae],
# `b_enc` [d_sae], `b_dec` [d_in]; return `z` [batch, d_sae].

# %% exercise="sae.topk_encode"
def topk_encode(x, W_enc, b_enc, b_dec, k):
    raise NotImplementedError


# %%
check("sae.topk_encode", topk_encode)

# %% [markdown]
# ## 2. Scoring against the truth
#
# With the true features known, the first question is geometric: does every true feature
# have a decoder row pointing its way? The **mean max cosine similarity** (MMCS) takes, for
# each true feature, the best cosine with any decoder row, and averages over features.
# It is 1 for a perfect dictionary and low for a random one.
#
# ### Exercise 5.2: MMCS (implement, easy, about 10 min)
#
# Write `mmcs(features, decoder)`: `features` [feature, d_in], `decoder` [d_sae, d_in],
# neither necessarily unit-norm; return a float.

# %% exercise="sae.mmcs"
def mmcs(features, decoder):
    raise NotImplementedError


# %%
check("sae.mmcs", mmcs)

# %% [markdown]
# MMCS alone can be fooled: one decoder row can be the best match of several features. So
# `toylab.sae.score_sae` also matches features to latents one to one (the Hungarian
# algorithm on cosines) and reports, among others, the uniqueness of best matches, the
# correlation of each matched latent with its feature's true coefficient (MCC), each
# latent's precision, recall and F1 as a *detector* of its feature, L0, dead latents, the
# explained variance, and shrinkage (how much smaller `x_hat` is than `x`).
#
# Here is the classic SAE, ReLU with an L1 penalty, after a short training:

# %%
STEPS = 600 if fast() else 2000
relu = SAE(SAEConfig(d_in=32, d_sae=256, architecture="relu", l1_coefficient=3e-3, seed=0))
train_sae(relu, data.sample, steps=STEPS, batch_size=256, lr=3e-3, seed=0, resample_every=250)
relu_scores = score_sae(relu, data.features, x, c)
print({k: round(v, 3) for k, v in vars(relu_scores).items() if isinstance(v, float)})

# %% [markdown]
# Reconstruction looks fine, but the L1 penalty pays latents to stay small (shrinkage
# below 1), and L0 is far from the data's. Looking at the cosines of each true feature
# with the latents (matched latents first, the matching outlined) shows which features it
# found and which it smeared:

# %%
viz.latent_cosines(cosine_matrix(data.features, relu.W_dec.detach()), relu_scores.matched_latent,
                   title="ReLU + L1 SAE: true features x latents")

# %% [markdown]
# ### Exercise 5.3: recover the dictionary (build, medium, about 15 min)
#
# Train an SAE (`toylab.sae.SAE` and `train_sae`, any architecture) that, on fresh samples
# it never saw, reaches MMCS >= 0.99, uniqueness >= 0.95, and an L0 within 25% of the
# data's. Assign it to `sae`.

# %% exercise="sae.recover"
sae = None

# %%
check("sae.recover", sae)

# %% [markdown]
# ## 3. An SAE on a model's activations
#
# Now activations that a model made. Take a toy model from lesson 4 with 20 sparse features
# in 10 hidden dimensions: every feature is superposed. The true feature directions in the
# hidden space are the columns of its `W`, and `model.hidden(features)` gives its
# activations. Train an SAE on those and ask which latent carries which feature. (The toy
# model and its sampler are fixtures too: the checker and the lab's page use the same.)

# %%
toy = toy_model()  # 20 features, each on 3% of the time, in 10 dimensions, trained as in lesson 4
print(methods.feature_status(toy).names(0))

# toy_activations(n, generator) -> (hidden activations [n, 10], true coefficients [n, 20]):
# features = toy.generate_batch(n, generator), then toy.hidden(features), of instance 0
toy_activations = activation_sampler(toy)
true_directions = feature_directions(toy)  # [feature, hidden]: the columns of toy.W[0]

# %% [markdown]
# ### Exercise 5.4: which latent carries each feature? (answer, medium, about 15 min)
#
# Train an SAE on `toy_activations`, then, for each of the 20 features, find its latent.
# Answer `(sae, latents)` with `latents[i]` the latent for feature `i`. Even an untrained
# SAE has some latent that fires most for each feature, so the checker first asks whether your
# SAE found the features at all: on fresh samples, MMCS >= 0.95 with the true directions,
# uniqueness >= 0.95 and explained variance >= 0.8. It does not trust the cosines you used
# either: it feeds the toy model each feature alone and checks that your latent is the one
# that fires most, and that its decoder row points along the feature.

# %% exercise="sae.toy_features"
toy_answer = None

# %%
check("sae.toy_features", toy_answer)

# %% [markdown]
# In the lab (`toylab lab`, page 5) you can train SAEs of every architecture on either data
# set and watch which true feature each latent found.
