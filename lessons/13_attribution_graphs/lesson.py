# %% [markdown]
# # Lesson 13: Attribution graphs, against a feature-level truth
#
# Circuit tracing (Ameisen et al. 2025; Lindsey et al. 2025, "On the Biology of a Large
# Language Model") explains one prompt at a time. Replace every MLP by a **transcoder**
# (Dunefsky et al. 2024): a sparse dictionary that reads the MLP's input and predicts its
# output through features that are, one hopes, interpretable. Freeze the attention patterns on
# the prompt, add an **error node** for what the transcoder misses, and everything between
# the features is linear: each feature's input is a sum of **direct effects** from the token
# embeddings, the features before it and the errors. That is the **attribution graph**.
# Pruned to the nodes and edges that carry most of the influence on the output, it is read as
# the model's circuit for the prompt.
#
# Read by whom, and checked against what? On a large model, by a person labelling features
# from their top activating examples. Here against a truth that declares features:
# `conjunctions` computes which of 24 marked pairs of 16 input features a prompt
# `[BOS, a, b, =]` holds, with an MLP of only 8 neurons (computation in superposition, Hänni et
# al. 2024). Its truth names every input feature, every conjunction (a direction in MLP0's
# output at "=") and the edges between them. So we can ask of a graph: which of the prompt's
# true features did it find, and which did it miss?

# %%
import torch
from fixtures import (
    EDGE_THRESHOLD,
    MODEL,
    NODE_THRESHOLD,
    answer,
    compare_prompts,
    graph,
    node_cosines,
    prompt,
    prompt_text,
    steps,
    top_inputs,
    train,
    training_data,
    transcoder_config,
)

import toylab
from toylab import methods, sae, viz
from toylab.lessons import check
from toylab.validate import map_nodes, true_feature_circuit

torch.set_grad_enabled(False)  # train_transcoder turns gradients on where it optimises

zm = toylab.zoo.load(MODEL)
model, task, truth = zm.model, zm.task, zm.truth
print(task)
print(zm.truth.description)
print("marked pairs (class 1, 2, ...):", task.output_names[1:6], "...")

# %% [markdown]
# ## 1. A transcoder
#
# A per-layer transcoder of MLP `l` reads `x = hook_mlp_in` and predicts `y = hook_mlp_out`:
#
# `z = act(x @ W_enc[l] + b_enc[l])`, `y_hat = z @ W_dec[l, l] + b_dec[l]` (`+ x @ W_skip[l]` with a skip path).
#
# `act` is a ReLU (with an L1 penalty on `z` in training), or TopK: keep the `k` largest
# pre-activations of each row, ReLU'd, and zero the rest. `toylab.sae.Transcoder` holds
# `W_enc` [layer, d_in, latent], `b_enc` [layer, latent], `W_dec` [source, dest, latent,
# d_out] (a cross-layer transcoder lets a feature read at layer `s` write to every later
# layer; per layer, only `W_dec[l, l]` is non-zero), `b_dec` [layer, d_out] and, with
# `cfg.skip`, `W_skip` [layer, d_in, d_out].
#
# ### Exercise 13.1: a transcoder by hand (implement, easy, about 10 min)
#
# Write `transcode(transcoder, x)`: for a per-layer transcoder (`transcoder.cfg.architecture`
# "relu" or "topk" with `cfg.k`, with or without `cfg.skip`) and `x` [batch, layer, d_in],
# return `(y_hat, z)`, [batch, layer, d_out] and [batch, layer, latent], what
# `transcoder(x)` returns.

# %% exercise="graphs.transcode"
def transcode(transcoder, x):
    raise NotImplementedError


# %%
check("graphs.transcode", transcode)

# %% [markdown]
# ## 2. Training one on `conjunctions`
#
# `sae.mlp_activations(model, tokens)` gives every MLP's input and output at every position
# of some prompts, as rows [row, layer, d_model]; `sae.train_transcoder(transcoder, x, y,
# steps)` fits the transcoder to them (Adam, the squared error summed over layers plus the
# architecture's sparsity penalty). How good is the replacement? Two figures, on the task's
# test set (every ordered pair of features once):
#
# - **FVU**, the fraction of variance unexplained: `sum (y_hat - y)^2 / sum (y - mean y)^2`,
#   per layer;
# - **loss recovered**: run the model with its MLPs replaced by the transcoder, and with them
#   zeroed; `(loss_zeroed - loss_replaced) / (loss_zeroed - loss_clean)` is 1 for a perfect
#   replacement and 0 for one no better than no MLP.
#
# `sae.transcoder_scores(model, transcoder, batch)` computes both (and each layer's L0).
#
# ### Exercise 13.2: train a transcoder, and report it (build, easy, about 10 min)
#
# Train a `sae.Transcoder(transcoder_config(model))` (a per-layer ReLU transcoder with 32
# features, from the fixtures) on `training_data(model, task)` (the MLP's inputs and outputs
# at every position of 2048 prompts) for `steps()` steps, with `sae.train_transcoder`'s
# defaults otherwise. Then answer with a dict: `"transcoder"`, the trained transcoder;
# `"fvu"` and `"loss_recovered"`, its figures on `task.eval_batches()["test"]` (floats; the
# model has one MLP). The checker measures the transcoder itself: FVU at most 0.02, loss
# recovered at least 0.98. (Trained as described, it is bitwise the reference transcoder
# `train(model, task)` that the later checkers build their graphs with.)

# %%
print(transcoder_config(model))
x, y = training_data(model, task)
print(f"training rows: x {tuple(x.shape)}, y {tuple(y.shape)}; {steps()} steps")

# %% exercise="graphs.train"
trained = None  # e.g. {"transcoder": my_transcoder, "fvu": 0.5, "loss_recovered": 0.5}

# %%
check("graphs.train", trained)

# %%
# The rest of the lesson uses your transcoder (trained as described, it is the reference), else the reference.
mine = trained.get("transcoder") if isinstance(trained, dict) else None
transcoder = mine if isinstance(mine, sae.Transcoder) else train(model, task)
scores = sae.transcoder_scores(model, transcoder, task.eval_batches()["test"])
print(f"{transcoder.cfg.kind} {transcoder.cfg.architecture} transcoder, {transcoder.cfg.d_latent} features: {scores}")

# %% [markdown]
# The replacement is almost perfect, yet the transcoder is not sparse: about half its 32
# features fire on a typical position (L0 above). An MLP of 8 neurons computes 24
# conjunctions; there is no reason a dictionary fitted to its outputs picks those 24 as its
# features. The graph will tell.
#
# ## 3. The attribution graph of one prompt
#
# `methods.attribution_graph(model, transcoder, tokens, scored_pos)` builds the graph of one
# prompt. Its nodes (`graph.nodes`) are, in order: the active features (`Node.kind ==
# "feature"`, with `layer`, `pos`, `index` the latent, `value` its activation), an error node
# per layer and position, a token node per position and the most likely output classes at
# the scored position (`logit` nodes: `index` the class, `value` its probability).
# `graph.adjacency[target, source]` is the direct effect of source on target: for a feature,
# on its pre-activation; for a logit, on the logit minus the mean of all logits. With the
# attention patterns frozen, each row sums, with `graph.bias`, to the target's actual value.

# %%
tokens = prompt(task)  # [BOS, a, b, =] for the first marked pair
g = methods.attribution_graph(model, transcoder, tokens, scored_pos=3)  # fixtures' graph(model, transcoder, tokens)
print(f"prompt {prompt_text(task, tokens)!r} -> {task.output_names[answer(task, tokens)]}")
kinds = [n.kind for n in g.nodes]
print({kind: kinds.count(kind) for kind in ("feature", "error", "token", "logit")})
targets = torch.cat([g.indices("feature"), g.indices("logit")])
print("rows sum to the targets' values:",
      torch.allclose(g.adjacency[targets].sum(-1) + g.bias[targets], g.target_values[targets], atol=1e-3))

# %% [markdown]
# In a model of one layer, an edge into a logit is simple. A feature at layer 0 and position
# `p` writes `activation x W_dec[0, 0, index]` into the residual stream at `p`; nothing reads
# it after that but the unembedding, and only at `p`. The logit of class `c` minus the mean
# logit reads the residual along `W_U[:, c] - W_U.mean(1)` (no LayerNorm in this model).
#
# ### Exercise 13.3: a feature's edge to a logit (implement, medium, about 15 min)
#
# Write `feature_to_logit(model, transcoder, graph, feature, logit)`: the direct effect of the
# graph's node number `feature` (a feature node) on its node number `logit` (a logit node), a
# float, for a one-layer model. The unembedding is `model.unembed.W_U` [d_model, d_vocab_out];
# the scored position is `graph.scored_pos`. It must equal `graph.adjacency[logit, feature]`.

# %% exercise="graphs.logit_edge"
def feature_to_logit(model, transcoder, graph, feature, logit):
    raise NotImplementedError


# %%
check("graphs.logit_edge", feature_to_logit)

# %% [markdown]
# ## 4. The truth's feature circuit of the prompt
#
# `truth.features` declares each feature: a name, the hook and position where it lives, its
# direction, and what turns it on. Input features (`variable is None`) are named after their
# token (`"f3"`) and are on where their token is. A conjunction has `variable ==
# "conjunction"` and a `value`, the class: it is on when `task.variables(tokens[None])
# ["conjunction"]` takes that value. `truth.feature_edges` lists the declared edges
# `(source, target)`, and the output end of a prompt's circuit is the logit of its answer,
# named `"logit:" + task.output_names[class]`.

# %%
conjunctions = [f for f in truth.features if f.variable is not None]
print(f"{len(truth.features)} features: {len(truth.features) - len(conjunctions)} input features, "
      f"{len(conjunctions)} conjunctions at {conjunctions[0].hook}, position {conjunctions[0].pos}")
print("edges of the first conjunction:", [e for e in truth.feature_edges if task.output_names[1] in "".join(e)])
directions = torch.stack([torch.tensor(f.vector) for f in conjunctions])
cosine = torch.nn.functional.normalize(directions, dim=-1) @ torch.nn.functional.normalize(directions, dim=-1).T
print(f"the conjunctions' directions: mean |cosine| between two {float(cosine.abs().triu(1).sum() / (24 * 23 / 2)):.2f}"
      f", the largest {float(cosine.abs().fill_diagonal_(0).max()):.2f} (24 directions in MLP0's 8-dim output)")

# %% [markdown]
# ### Exercise 13.4: the true circuit of a prompt (implement, easy, about 10 min)
#
# Write `true_circuit(truth, task, tokens)` for one prompt `tokens` [pos]: return `(nodes,
# edges)`, the set of the names of the features it turns on, with its answer's logit, and the
# set of the declared edges among them (both ends in `nodes`). A prompt whose pair is not
# marked (class 0, "none") turns no conjunction on.

# %% exercise="graphs.true_circuit"
def true_circuit(truth, task, tokens):
    raise NotImplementedError


# %%
check("graphs.true_circuit", true_circuit)

# %% [markdown]
# ## 5. Pruning, and the graph against the truth
#
# The full graph has a node for every active feature. `graph.prune(node_threshold,
# edge_threshold)` keeps, as circuit-tracer does, the nodes that carry `node_threshold` of the
# influence on the logits, then the edges that carry `edge_threshold` (tokens and logits
# always stay). `toylab.validate.feature_graphs.map_nodes(graph, truth, task, on)` names each
# node by the truth: a token node its input feature, a logit node `"logit:..."`, a feature
# node the true feature of `on` at its site whose direction its write is closest to, when the
# |cosine| is at least 0.8.

# %%
on, true_edges = true_feature_circuit(truth, task, tokens, answer(task, tokens))
mapped, best = map_nodes(g, truth, task, on)
pruned = g.prune(NODE_THRESHOLD, EDGE_THRESHOLD)
print(f"true circuit: {sorted(on)}")
print(f"pruned: {len(pruned.features())} of {len(g.indices('feature'))} features kept, {len(pruned.edges())} edges")
for i in pruned.node_mask.nonzero().flatten().tolist():
    print(f"  {g.nodes[i]!s:>12} -> {mapped[i]}")
matching = [i for i, name in enumerate(mapped) if name is not None and g.nodes[i].kind == "feature"]
print(f"features of the full graph that map onto a true feature: {len(matching)}, best |cosine| per true feature "
      f"{ {name: round(value, 3) for name, value in best.items()} }")
viz.attribution_graph_plot(pruned, task, mapped, on, truth, title=f"{prompt_text(task, tokens)}: pruned graph")

# %% [markdown]
# ### Exercise 13.5: found and missed (answer, medium, about 10 min)
#
# Answer with a dict about this prompt's pruned graph (`pruned`, at the fixtures' thresholds):
#
# - `"found"`: the set of the true circuit's features (truth names, as in `on`) that some
#   node the pruning kept maps onto;
# - `"missed"`: the set of the others;
# - `"conjunction"`: what became of the prompt's conjunction: `"found"`, `"pruned"` (a node of
#   the full graph maps onto it, but pruning dropped every such node) or `"unmatched"` (no
#   node of the full graph maps onto it).

# %% exercise="graphs.found"
found = None  # e.g. {"found": {"f0"}, "missed": {"logit:none"}, "conjunction": "found"}

# %%
check("graphs.found", found)

# %% [markdown]
# Look at the kept nodes above. The token nodes of the pair reach the logit directly:
# attention moves both inputs to "=" and the unembedding reads them there, a path the truth
# declares too (the two inputs alone cannot compute the AND, which is the MLP's part). The
# conjunction is missed on most prompts (try others: `prompt(task, k)` for marked pair k).
# Often several features of the full graph write close to its direction, none of which
# carries much influence alone, and pruning keeps the token edges and drops them; on other
# prompts no feature's write is close enough to match it at all. A transcoder fitted to the
# MLP's outputs splits them as its sparsity penalty likes, not as the model's algorithm
# does. What the features that fire here respond to shows in their top activating inputs, the
# prompts of the test set on which each is most active (what a person labelling features
# reads):

# %%
features = [(n.layer, n.pos, n.index) for n in pruned.features()] or \
    [(n.layer, n.pos, n.index) for n in (g.nodes[i] for i in matching[:1])]
for feature, inputs in top_inputs(model, transcoder, task, features).items():
    print(f"F{feature[0]}.{feature[2]}@{feature[1]}:", "; ".join(f"{text} ({act:.1f})" for text, act in inputs))
cosines = node_cosines(g, truth, mapped)
print("|cosine| of the matching features with the conjunction:", sorted(round(c, 2) for c in cosines.values()))

# %% [markdown]
# ## 6. A skip path
#
# Much of what an MLP computes is close to linear in its input. A skip transcoder (Paulo et al.
# 2025) adds `x @ W_skip` to its prediction, so its features need only carry the rest. In the
# graph, the skip path is part of the frozen linear run: it passes effects from the tokens
# straight on, with no node of its own.
#
# ### Exercise 13.6: per-layer against skip (answer, medium, about 10 min)
#
# Train the skip transcoder `train(model, task, kind="skip")` and build the graphs of
# `compare_prompts(task)` (the first 8 marked pairs) with each transcoder (`graph(model,
# transcoder, tokens)`, the fixtures' `methods.attribution_graph` scored at "="). Answer with a
# dict: for `"per-layer"` and `"skip"`, a dict of the graphs' mean `"replacement"` and
# `"completeness"` scores (`graph.scores()`, to 3 decimals) and the mean number of features
# the pruning keeps, `"features"` (`len(graph.prune(NODE_THRESHOLD, EDGE_THRESHOLD)
# .features())`); and `"fewer_features"`: the kind whose pruned graphs keep fewer features on
# average (`"per-layer"` or `"skip"`; `"same"` if the means are equal).

# %%
skip = train(model, task, kind="skip")
print(f"skip transcoder: {sae.transcoder_scores(model, skip, task.eval_batches()['test'])}")
transcoders = {"per-layer": transcoder, "skip": skip}
print("compared on:", [prompt_text(task, t) for t in compare_prompts(task)])
print("the lesson's prompt, skip transcoder:", graph(model, skip, tokens).scores())

# %% exercise="graphs.compare"
comparison = None  # e.g. {"per-layer": {"replacement": 0.5, "completeness": 0.5, "features": 1.0}, "skip": {...}, "fewer_features": "same"}

# %%
check("graphs.compare", comparison)

# %% [markdown]
# The replacement score is the share of the logits' influence that reaches them from the
# tokens rather than from the error nodes; completeness, how much of every node's input is
# not error. Both are high for both transcoders: the graphs are faithful to the model. The
# skip path carries what the MLP does linearly, so more of the tokens' influence reaches the
# logits with no feature in between, and the skip transcoder's pruned graphs keep fewer
# features. A faithful, small graph is still not the model's features: to check that, you
# need a truth like this one.
#
# ## What the truth says

# %%
print(truth.summary())

# %% [markdown]
# ## What next
#
# You have run a transcoder by hand, trained one, computed an edge of an attribution graph by
# hand, read a prompt's true feature circuit off the truth and compared a pruned graph with
# it. The lab's page "13 Attribution graphs" does the same on any prompt, with any kind and
# architecture of transcoder: an interactive graph, nodes coloured as found, missed or not
# in the truth, and each feature's top activating inputs on hover.
