# %% [markdown]
# # Lesson 8: Probes, causal variables and factual recall
#
# Where does a model keep what it knows, and does it use what we can read off it? This lesson
# asks both on a model that recalls facts, the toy version of Meng et al. (2022, ROME) and Geva
# et al. (2023): prompts `[BOS, relation, subject, =]` ("The capital of | France | is"), answers
# from a table of 192 facts drawn at random, so the model has to *store* them.
#
# The zoo's `factual-recall` was trained (with SIIT) so that its circuit is known:
#
# 1. at the subject position, head L0H1 reads the relation one position back;
# 2. MLP0 there is a key-value memory: keyed on (subject, relation), it writes the attribute;
# 3. at the answer position "=", head L1H1 attends to the subject and moves the attribute out.
#
# Three tools, each checked against that truth: **causal tracing** (corrupt the subject, restore
# one state at a time), **linear probes** with control tasks (where can a variable be read?), and
# **interchange interventions** on subspaces (where is it *used*?).

# %%
import torch

import toylab
from toylab import methods, viz
from toylab.lessons import check, fast
from toylab.methods import Site

from fixtures import MODEL, PROBE_CONFIG, PROBE_HOOKS, candidate_sites  # shared with the checker and the lab

torch.set_grad_enabled(False)
N = 256 if fast() else 1024

zm = toylab.zoo.load(MODEL)  # "factual-recall"
model, task, algorithm = zm.model, zm.task, zm.algorithm
print(zm.truth.summary())
batch = task.sample(N, seed=0)
print(task.to_str_tokens(batch.tokens[0]), "->", task.output_names[int(batch.targets[0, -1])])
print("positions:", task.positions)

# %% [markdown]
# ## 1. Causal tracing
#
# ROME's recipe: run the prompt clean; run it again with the subject's embedding spoilt by
# Gaussian noise (3 times the embedding's standard deviation), which drops the probability of
# the right answer; then run the corrupted prompt once per state (a layer's residual stream,
# attention output or MLP output, at one position) with that state copied from the clean run.
# A state that brings the answer back carries the subject's information to it.

# %%
subject = task.positions["subject"]
trace = methods.causal_trace(model, batch, [subject])
print(f"p(answer): clean {trace.p_clean:.3f}, subject corrupted {trace.p_corrupted:.3f}")
labels = ["BOS", "relation", "subject*", "="]
viz.tracing_map({kind: trace.scores(kind) for kind in trace.kinds}, labels,
                title="factual-recall: fraction of p(answer) restored")

# %% [markdown]
# ### Exercise 8.1: restore one MLP state (implement, medium, about 15 min)
#
# Write `restored_probability(model, batch, noise, layer, pos)`: run `batch.tokens` with
# `noise[:, 0]` ([batch, d_model]) added to `hook_embed` at the subject position (2), and in the
# same run the clean `blocks.{layer}.hook_mlp_out` copied in at position `pos`. Return the mean
# probability (softmax) of the right answer, `batch.targets[:, 3]`, at position 3, as a float.

# %% exercise="probes.trace_mlp"
def restored_probability(model, batch, noise, layer, pos):
    raise NotImplementedError


# %%
check("probes.trace_mlp", restored_probability)

# %% [markdown]
# ### Exercise 8.2: where are the facts stored? (answer, easy, about 5 min)
#
# From the `mlp_out` panel, answer with the `(layer, position)` of the MLP state that stores
# the facts. (The residual stream at the subject restores everything before layer 1 too: it
# *carries* the information, it does not compute it. And restoring the answer position late
# restores anything, trivially.)

# %% exercise="probes.fact_store"
fact_store = None

# %%
check("probes.fact_store", fact_store)

# %% [markdown]
# With the truth drawn in:

# %%
store = methods.variable_site(zm.truth, "attribute", task.n_ctx)
mover = methods.variable_site(zm.truth, "moved_attribute", task.n_ctx)
viz.tracing_map({kind: trace.scores(kind) for kind in ("attn_out", "mlp_out")}, labels,
                title="ground truth: the fact store and the mover head",
                highlight={"mlp_out": {(0, store.pos)}, "attn_out": {(1, mover.pos)}})

# %% [markdown]
# ## 2. Probes and their control tasks
#
# A linear probe reads a variable off the activation at one site (a hook at a position). On
# held-out prompts its accuracy says the variable *can be decoded* there. But a probe can also
# memorise: given a label per input type, it may learn the map by heart. Hewitt & Liang
# (2019) measure that with a **control task**: give each input type a random label, with the
# variable's own label frequencies, train the same probe, and report
# **selectivity = accuracy - control accuracy**.
#
# ### Exercise 8.3: a control task (implement, medium, about 15 min)
#
# Write `control_labels(labels, types, seed)`: `labels` and `types` are [batch] int64; return
# [batch] labels where every example of a type gets the same random label, drawn so that the
# labels keep their frequencies.

# %% exercise="probes.control_labels"
def control_labels(labels, types, seed):
    raise NotImplementedError


# %%
check("probes.control_labels", control_labels)

# %% [markdown]
# `methods.probe_grid` trains a probe (and its control) at each hook and position. The input
# type of a prompt is its fact: `task.variables(tokens)["fact"]`.

# %%
values = task.variables(batch.tokens)
hooks = list(PROBE_HOOKS)  # the residual stream after each component, and the embedding
config = PROBE_CONFIG  # methods.ProbeConfig(steps=100, lr=0.1)
print(hooks)
grid = methods.probe_grid(model, batch.tokens, values["attribute"], hooks, config=config, types=values["fact"])
print(f"attribute: majority-class accuracy {grid.majority:.2f}")
viz.probe_map(grid.accuracy, grid.selectivity, hooks, labels, title="probing for the attribute",
              highlight={(hooks.index("blocks.0.hook_resid_post"), store.pos)})

# %% [markdown]
# Before MLP0 the subject and the relation are both at the subject position, yet the attribute
# is not linearly there: a lookup table is not a linear function of its two keys, and what a
# probe gets is what memorising facts gives (selectivity near 0). Right after MLP0 (outlined:
# where the truth stores the facts) it is decoded perfectly, with high selectivity.
#
# Look at the bottom row: after the last layer, the attribute is just as decodable at the
# subject position. The residual stream keeps it, but does anything *use* it there?
#
# ## 3. Probing versus intervening
#
# An **interchange intervention** runs a base prompt with the activation at a site (or only a
# subspace of it) taken from a source prompt. If the model uses the attribute there, its answer
# becomes the source's attribute. The fraction of pairs where it does is the
# **interchange-intervention accuracy** (IIA). Three choices of subspace:
#
# - the whole vector;
# - the directions a probe reads (`methods.probe_subspace`);
# - a subspace learned for it, by distributed alignment search (DAS, Geiger et al. 2024): a
#   rotation trained so that swapping its first k coordinates gives the algorithm's answer.

# %%
true_site, decoy = Site("blocks.0.hook_resid_post", store.pos), Site("blocks.1.hook_resid_post", store.pos)
das_config = methods.DASConfig(k=8, steps=100 if fast() else 200)
for site in (true_site, decoy):
    probe = methods.train_probe(model, batch.tokens, values["attribute"], site, config, types=values["fact"])
    through_probe = methods.interchange_accuracy(model, algorithm, "attribute", site, methods.probe_subspace(probe.probe))
    learned = methods.das(model, algorithm, "attribute", site, das_config)
    print(f"{site}: probe accuracy {probe.accuracy:.2f}, IIA through the probe's directions "
          f"{through_probe.accuracy:.2f}, DAS IIA {learned.test_iia:.2f} (held out)")

# %% [markdown]
# Same probe accuracy, opposite verdicts: at the decoy the attribute can be read but swapping
# it changes nothing, because nothing after the last layer at the subject reaches the answer.
# A probe shows information is *present*; only an intervention shows it is *used*.
#
# DAS also separates variables that share a site. At the subject position, after L0H1 (its
# output is where the truth puts the relation), the whole residual holds the subject *and* the
# relation: swapping all of it swaps the fact. A small learned subspace swaps the relation only.

# %%
mid = Site("blocks.0.hook_resid_mid", store.pos)
whole = methods.interchange_accuracy(model, algorithm, "relation", mid)
relation = methods.das(model, algorithm, "relation", mid, methods.DASConfig(k=4, steps=das_config.steps))
print(f"relation at {mid}: whole vector IIA {whole.accuracy:.2f}, 4-dim DAS IIA {relation.test_iia:.2f}")

# %% [markdown]
# ### Exercise 8.4: decoded, but is it used? (answer, medium, about 10 min)
#
# The attribute can be decoded at every site below (check with probes if you like). Answer with
# the set of those where the model *uses* it: where swapping the whole activation from a source
# prompt gives the source's attribute on at least 90% of pairs.

# %%
candidates = candidate_sites()
print([str(site) for site in candidates])

# %% exercise="probes.used_sites"
used_sites = set()

# %%
check("probes.used_sites", used_sites)

# %% [markdown]
# ## What next
#
# The lab's "Probes and factual recall" page runs these sweeps live, with the truth outlined:
# probe accuracy and selectivity at every site, IIA at true and decoy sites, and the tracing
# heatmaps. An SAE latent is one more subspace: `methods.sae_subspace(sae, latents)` gives its
# decoder directions to `interchange_accuracy`, so a feature can be scored like a probe.
