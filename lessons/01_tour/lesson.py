# %% [markdown]
# # Lesson 1: A tour of the lab
#
# toylab trains small transformers from scratch on algorithmic tasks and ships each one with
# its **ground truth**: the circuit that implements the task, written down as data and proven
# by a causal certificate. That is what makes it a lab: when you try an interpretability
# method here, you can check what it found against the known answer.
#
# In this lesson you will meet the pieces every later lesson uses:
#
# 1. the **zoo** of trained models and their **tasks**;
# 2. the **model**, whose parameter and hook names are those of TransformerLens;
# 3. **hooks** and the **activation cache**, to read and change what the model computes;
# 4. the **truth** of a model, and how to check a claim against it.
#
# Run the file top to bottom (`python lessons/01_tour/lesson.py`), open it as a notebook in
# VS Code, or write it as one for JupyterLab (`toylab lessons 01 --notebook`). Exercises are marked; `check(...)` tells you whether you
# got them right and gives a hint when you did not. The checks live beside this file, in
# `checks.py`, and the reference solutions in `solutions.py`.

# %%
import torch

import toylab
from toylab import viz
from toylab.lessons import check, fast

torch.set_grad_enabled(False)  # nothing in this lesson trains
N = 16 if fast() else 128  # sequences per batch; fast mode keeps the tests quick

# %% [markdown]
# ## 1. The zoo
#
# Every model in the zoo is trained by toylab from a seed (`toylab train NAME` reproduces it
# bit for bit) or, for one of them, built by hand. `toylab.zoo.names()` lists them; the
# command line `toylab list` shows the same table.

# %%
print(toylab.zoo.names())
zm = toylab.zoo.load("induction-tiny")
model, task = zm.model, zm.task
print(model)
print(task)

# %% [markdown]
# The **task** samples data. `induction-tiny` learned *induction*: each sequence ends with a
# random segment repeated twice, and on the second copy the next token is predictable by
# looking back at the first copy. A `Batch` holds `tokens` [batch, pos] and `targets`
# [batch, pos]; positions that are not scored have target -1.

# %%
batch = task.sample(N, seed=0)
print(task.to_str_tokens(batch.tokens[0]))
print(batch.targets[0])

# %% [markdown]
# ## 2. The model
#
# Parameters have TransformerLens's names and shapes: `W_Q` is [head, d_model, d_head],
# `W_O` is [head, d_head, d_model], and so on. The forward pass maps tokens to logits
# [batch, pos, d_vocab_out].

# %%
for name, param in model.named_parameters():
    print(f"{name:24s} {tuple(param.shape)}")

logits = model(batch.tokens)
print("loss", float(toylab.tasks.loss(logits, batch)), "accuracy", float(toylab.tasks.accuracy(logits, batch)))

# %% [markdown]
# ## 3. Hooks and the cache
#
# A *hook point* sits at every named place of the forward pass: the embeddings, each block's
# residual stream before and after attention (`hook_resid_pre`, `hook_resid_mid`,
# `hook_resid_post`), each head's queries, keys, values, attention pattern and output.
# Unlike TransformerLens, every hook always fires (`hook_result`, the per-head output,
# included). `run_with_cache` records them all.

# %%
logits, cache = model.run_with_cache(batch.tokens)
for name in model.hook_names():
    print(f"{name:32s} {tuple(cache[name].shape)}")

# %% [markdown]
# An attention pattern is [batch, head, query_pos, key_pos]: row `q` says where position `q`
# looks. Here is head 1 of layer 1 on the first sequence: on the second copy of the segment
# it looks at the token *after* the earlier occurrence of the current token.

# %%
pattern = cache["pattern", 1][0, 1]  # [query_pos, key_pos]
viz.attention_pattern(pattern, task.to_str_tokens(batch.tokens[0]), title="induction-tiny L1H1")

# %% [markdown]
# ### Exercise 1.1: the residual stream is a sum (implement, easy, about 5 min)
#
# Each block *adds* to the residual stream. Write `resid_after_layer0(cache)` returning
# `blocks.0.hook_resid_post` computed from the pieces written into the stream: the token
# embedding, the positional embedding and layer 0's attention output (and its MLP output
# when the model has an MLP: use `"blocks.0.hook_mlp_out" in cache`). The checker runs your
# function on two models, one with an MLP.

# %% exercise="tour.resid_after_layer0"
def resid_after_layer0(cache):
    raise NotImplementedError


# %%
check("tour.resid_after_layer0", resid_after_layer0)

# %% [markdown]
# ### Exercise 1.2: one head's output (implement, medium, about 10 min)
#
# A head's output is its mixed values `z` [batch, pos, head, d_head] multiplied by its slice
# of `W_O`. Write `head_output(model, cache, layer, head)` returning [batch, pos, d_model],
# from `cache[f"blocks.{layer}.attn.hook_z"]` and the model's weights. (toylab also records it
# directly as `hook_result`; the checker compares with that.)

# %% exercise="tour.head_output"
def head_output(model, cache, layer, head):
    raise NotImplementedError


# %%
check("tour.head_output", head_output)

# %% [markdown]
# ## 4. Interventions
#
# A hook function receives the activation and may return a replacement. `model.hooks([...])`
# attaches functions for the duration of a `with` block and always removes them, even if
# the block raises. Here we zero head L1H1's output and see what it costs.

# %%
def zero_head(head):
    def hook(z, hook):  # z: [batch, pos, head, d_head]
        z = z.clone()
        z[:, :, head] = 0
        return z
    return hook


with model.hooks([("blocks.1.attn.hook_z", zero_head(1))]):
    ablated = model(batch.tokens)
print("loss with L1H1 zeroed:", float(toylab.tasks.loss(ablated, batch)))
print("loss after the with block:", float(toylab.tasks.loss(model(batch.tokens), batch)))

# %% [markdown]
# ## 5. The ground truth
#
# Each zoo model carries a `Truth`: the nodes of its circuit with their roles, the edges
# between them (with the input of the receiving head they reach: `q`, `k` or `v`), the
# attention roles heads must play, and causal variables. Its *provenance* says how we know:
#
# - **constructed**: every weight was set by hand (`induction-constructed`);
# - **enforced**: training made the circuit so (`induction-siit`, trained with strict
#   interchange-intervention training, which makes all heads but the chosen ones inert);
# - **certified**: found after training and proven by the certificate.
#
# The certificate is measured on the weights: the circuit alone reproduces the model's
# behaviour (faithfulness), nothing outside it matters (completeness), and every node and
# edge in it is needed (minimality). `toylab truth NAME` prints it.

# %%
siit = toylab.zoo.load("induction-siit", seed=0)
print(siit.truth.summary())

# %% [markdown]
# ### Exercise 1.3: which head matters most? (answer, easy, about 10 min)
#
# Using the intervention above on `siit.model`, zero-ablate each of its heads in turn and
# measure the loss on a batch of `siit.task`. Answer with the id of the head (`"L{layer}H{head}"`)
# whose ablation raises the loss most. The checker repeats the experiment and also tells you
# what the truth says about the head you chose.

# %% exercise="tour.most_important_head"
most_important_head = None  # e.g. "L0H0"

# %%
check("tour.most_important_head", most_important_head)

# %% [markdown]
# ## What next
#
# Lesson 2 opens up the induction circuit: which heads attend where, how the layer-1 head
# reads what the layer-0 head wrote (K-composition), and how to tell a head that *looks*
# like part of a circuit from one that *is*. The lab's app (`toylab lab`) has a page for this
# lesson too: pick any zoo model and browse its hooks and its truth.
