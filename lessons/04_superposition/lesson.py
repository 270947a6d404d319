# %% [markdown]
# # Lesson 4: Superposition
#
# A model with `d` dimensions can store more than `d` features if it accepts some
# *interference* between them. Elhage et al. (2022, "Toy Models of Superposition") showed
# when it does so with the smallest possible model:
#
#     h  = W x               (n features squeezed into m < n hidden dimensions)
#     x' = ReLU(W^T h + b)   (read back out)
#
# trained to reconstruct `x`. Each feature is uniform in [0, 1] and *present* only with
# probability `p` (the feature density; sparsity is `1 - p`), and errors on feature `i`
# cost `importance[i]`. Here the ground truth is the data generator itself: we know every
# feature, its importance and its density, so we can check what the weights say against
# what the model does.
#
# `toylab.models.ToyModel` keeps an `n_instances` axis: every instance is an independent copy
# with its own density and importance, so a whole sweep trains as one model in one run.
# The sweep is this lesson's fixture (`fixtures.py`, beside this file), shared with the
# checker and the lab's page: 5 features of importance `0.9**i` in 2 dimensions, one instance
# per density in `DENSITIES`, built as `ToyModel(cfg, feature_probability=[instance, 1],
# importance=[1, feature])` and trained with `toylab.models.train_toy_model`.

# %%
import torch

from toylab import methods, viz
from toylab.lessons import check, fast
from toylab.models import SuperpositionConfig, ToyModel

from fixtures import DENSITIES, lesson_steps, sweep_model, train

STEPS = lesson_steps()  # fewer in fast mode, as the tests run it
model, history = sweep_model(STEPS, seed=1)
print("final loss per instance:", history.loss[-1])

# %% [markdown]
# ## 1. The loss
#
# Training minimises, per instance, the importance-weighted squared error, summed over
# features and averaged over the batch. The batch is [batch, instance, feature].
#
# ### Exercise 4.1: the loss (implement, easy, about 5 min)
#
# Write `loss_per_instance(out, batch, importance)`: `out` and `batch` are
# [batch, instance, feature], `importance` is [instance, feature]; return [instance].

# %% exercise="superposition.loss"
def loss_per_instance(out, batch, importance):
    raise NotImplementedError


# %%
check("superposition.loss", loss_per_instance)

# %% [markdown]
# ## 2. What the weights look like
#
# With 2 hidden dimensions each feature `i` has a direction `W_i = W[:, :, i]` in the plane.
# Draw them for the densest and the sparsest instance (darker arrows are more important
# features).

# %%
viz.feature_geometry(model.W[0].detach(), importance=model.importance[0], title=f"density {DENSITIES[0]}")

# %%
viz.feature_geometry(model.W[-1].detach(), importance=model.importance[-1], title=f"density {DENSITIES[-1]}")

# %% [markdown]
# Dense, the model keeps the two most important features on orthogonal axes and drops the
# rest: any overlap would cost on every sample. Sparse, all five fit, as a pentagon: two
# features are rarely on at once, and the ReLU with a negative bias filters the small
# interference out when only one is. (Gradient descent can also settle in a local minimum,
# such as a square with one feature dropped; the paper trains many restarts and keeps the
# best. Try `seed=0`.)
#
# `W^T W` shows the same thing as numbers: its diagonal is each feature's squared norm,
# off the diagonal the overlap between two features.

# %%
gram = torch.einsum("hf,hg->fg", model.W[-1], model.W[-1]).detach()
names = [f"f{i}" for i in range(5)]
viz.heatmap(gram, names, names, title="W^T W, sparsest instance")

# %% [markdown]
# ## 3. Feature dimensionality
#
# How much of a dimension does a feature get? Elhage et al. define
#
#     D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2
#
# (the sum includes `j = i`; `W_i_hat` is `W_i` normalised). A feature with its own
# dimension has `D = 1`, two features sharing one dimension (antipodal) `1/2` each, a
# pentagon `2/5`, and an ignored feature 0.
#
# ### Exercise 4.2: dimensionality (implement, medium, about 15 min)
#
# Write `dimensionality(W)` for W [instance, hidden, feature], returning [instance, feature].

# %% exercise="superposition.dimensionality"
def dimensionality(W):
    raise NotImplementedError


# %%
check("superposition.dimensionality", dimensionality)

# %%
print(methods.feature_status(model).dimensionality.numpy().round(2))
print([methods.feature_status(model).names(i) for i in range(len(DENSITIES))])

# %% [markdown]
# ## 4. Weights against behaviour
#
# `feature_status` reads the weights: a feature with a short `W_i` is *ignored*; one with
# a long `W_i` that overlaps others is *superposed*, else *dedicated*. That is a story about
# the weights. The ground truth here is behavioural: does a feature get through the model?
# Feed each feature alone and see what comes out:
# `methods.reconstruction(model)[instance, i]` is `x'_i(e_i) - x'_i(0)`, near 1 for a
# feature the model passes through and near 0 for one it drops.

# %%
print(methods.reconstruction(model).numpy().round(2))

# %% [markdown]
# ### Exercise 4.3: features kept (answer, easy, about 10 min)
#
# For each density in `DENSITIES`, how many of the 5 features does the model pass through
# (reconstruction above 0.5)? Answer with a list of 5 counts, dense first.

# %% exercise="superposition.represented"
represented = None

# %%
check("superposition.represented", represented)

# %% [markdown]
# ## 5. The phase change
#
# Shrink the problem to 2 features in 1 dimension. Feature 0 has importance 1, feature 1
# a *relative importance* r. Dense, there is room for one: the more important feature gets
# the dimension and the other is ignored. Sparse enough, both share it as an antipodal pair
# (`W = [1, -1]` up to sign, `D = 1/2` each). `methods.phase_diagram` trains every cell of
# a relative-importance x density grid as instances of one model (a 20 x 20 grid takes
# about a minute) and classifies feature 1 in each.

# %%
small = methods.phase_diagram(n_density=6, n_importance=5, steps=500 if fast() else 1000, seed=0)
viz.phase_map(small.feature1(), small.density, small.relative_importance, title="feature 1: 2 features, 1 dim")

# %% [markdown]
# ### Exercise 4.4: the transition (answer, medium, about 15 min)
#
# At relative importance 0.5, below which feature density does feature 1 stop being
# ignored and join feature 0 as an antipodal pair? Run a finer one-row diagram
# (`n_importance=1, importance_range=(0.5, 0.5)`) and answer with a density.

# %% exercise="superposition.phase_change"
transition_density = None

# %%
check("superposition.phase_change", transition_density)

# %% [markdown]
# ## 6. Correlated features
#
# Features that are on together compete: superposing them would make them interfere on
# exactly the samples where both are on, so the model puts correlated features on
# orthogonal directions. Anticorrelated features are never on together, so they are the
# cheapest to superpose: the model makes them antipodal.

# %%
pairs = ToyModel(SuperpositionConfig(n_instances=2, n_features=4, n_hidden=2, n_correlated_pairs=2),
                 feature_probability=0.05, seed=0)
anti = ToyModel(SuperpositionConfig(n_instances=2, n_features=4, n_hidden=2, n_anticorrelated_pairs=2),
                feature_probability=0.2, seed=0)
for m in (pairs, anti):
    train(m, STEPS, seed=0)  # the same recipe as the sweep's (fixtures.py)
    unit = m.W[0] / m.W[0].norm(dim=0)
    print("cosine of each pair:", round(float(unit[:, 0] @ unit[:, 1]), 2), round(float(unit[:, 2] @ unit[:, 3]), 2))

# %% [markdown]
# Next: lesson 5 asks the inverse question. Given activations in superposition, can a
# sparse autoencoder find the features back, and how do we know it did?
