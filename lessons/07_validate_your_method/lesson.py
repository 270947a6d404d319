# %% [markdown]
# # Lesson 7: Validate your own method
#
# A circuit-discovery method takes a model and a task and says which components (or which
# edges between them) implement the behaviour. On a real language model nobody knows the
# answer, so methods are compared with each other, or judged by how plausible their
# circuits look. Here the answer is known: every zoo model ships its circuit, and the
# circuit is trusted only because it is **certified**: a causal certificate, computed from
# the weights, shows that resample-ablating everything outside it leaves the behaviour
# intact and that its parts do what the algorithm says. (A truth that was merely asserted
# would turn the scores below into a comparison with somebody's opinion.)
#
# `toylab.validate` turns that into a benchmark. You write a **method**, any function
# `method(problem) -> result`; the harness hands it one model at a time with the truth
# hidden, checks what comes back, checks that the model was left untouched, and scores the
# answer against the truth on counterfactual pairs the method never saw:
#
#     report = validate.score(my_method)      # every zoo model with a truth, every seed
#     print(report.table())
#
# In this lesson you write a small method, read its report, watch a method that goes by
# attention patterns fall for decoy heads, and build an edge-level method that recovers a
# circuit without looking at the answer.

# %%
import torch

from toylab import methods, validate, viz
from toylab.lessons import check, fast
from toylab.validate import baselines

from fixtures import INDUCTION_MODELS  # shared with the checker (fixtures.py)

torch.set_grad_enabled(False)
N_PAIRS = 32 if fast() else 128  # scoring pairs per model (the harness's default is 128)
SEEDS = [0] if fast() else None  # fast mode scores one seed of each model; None means every shipped seed
MODELS = ["induction-constructed", "induction-siit"]

subject = validate.subjects(["induction-siit"], [0])[0]  # what the harness sees: model, task and truth
problem = validate.Problem(subject.name, subject.seed, subject.model, subject.task)  # what a method sees
pair = problem.pair(4)
print(pair.description)
print("nodes:", problem.nodes())
print(f"{len(problem.edges('qkv'))} candidate edges at 'qkv' granularity, {len(problem.edges('head'))} at 'head'")
print("metric on the clean rows:", float(problem.metric(problem.model(pair.clean.tokens), pair)))
print("metric on the corrupted rows:", float(problem.metric(problem.model(pair.corrupted.tokens), pair)))

# %% [markdown]
# ## 1. The protocol
#
# A `Problem` holds one model (`problem.model`), its task, seeded samplers of
# counterfactual pairs (`problem.pair(n)`: row i of `pair.corrupted` is row i of
# `pair.clean` with one controlled change) and the metric the truth was certified with,
# `problem.metric(logits, pair)`: the logit difference between the clean answer and the
# counterfactual one. `problem.nodes()` lists the candidate components (`embed`, every
# head, every MLP) and `problem.edges(granularity)` the candidate edges: `(sender,
# receiver, kind)` with kind `q`, `k` or `v` into a head at "qkv" granularity, `head` once
# the three are merged, and `resid` into an MLP or the logits.
#
# A method answers with **node scores** `{node: score}`, **edge scores** `{edge: score}`,
# or a **circuit** (a set of nodes or edges). Higher means "more likely in the circuit".
# The method must not change the model: the harness compares every weight before and
# after, and refuses a method that leaves a hook attached.
#
# ### Exercise 7.1: resample-ablate each node (implement, medium, about 20 min)
#
# Write `resample_node_scores(problem)`. On `pair = problem.pair(64)`, for each node of
# `problem.nodes()`, run `pair.clean.tokens` with that node's output replaced by its output
# on `pair.corrupted.tokens` (row for row: a **resample** ablation), and score the node
#
#     |m_clean - m_ablated| / |m_clean - m_corrupted|
#
# where `m` is `problem.metric(logits, pair)`. A node's output is `hook_embed` for
# `embed`, `blocks.{l}.attn.hook_result[:, :, h]` ([batch, pos, head, d_model]) for head
# `L{l}H{h}`, and `blocks.{l}.hook_mlp_out` for `MLP{l}`. Use `model.run_with_cache` for the
# corrupted outputs and `with model.hooks([(name, fn)]):` for the swap. Return a dict.

# %% exercise="validate.resample_scores"
def resample_node_scores(problem):
    raise NotImplementedError


# %%
check("validate.resample_scores", resample_node_scores)

# %% [markdown]
# ## 2. Score it and read the report
#
# One call runs your method on every model and seed you name and scores each answer.

# %%
report = validate.score(resample_node_scores, names=MODELS, seeds=SEEDS, n_pairs=N_PAIRS, label="yours")
print(report.table())
for entry in report.errors:
    print(f"error on {entry.model} (seed {entry.seed}): {entry.error}")

# %% [markdown]
# What the columns mean (exact definitions in `toylab.validate.metrics`):
#
# - **Ranking metrics.** Recovering a circuit is a classification problem: each candidate
#   is in the truth or not, and a method's scores rank them. Sweep a threshold down the
#   ranking; at each step the **true positive rate** is the share of the truth above the
#   threshold and the **false positive rate** the share of everything else above it. That
#   traces the **ROC curve**. A ROC does not depend on the scale of the scores, only on
#   their order, so methods whose scores mean different things (an effect, a gradient, an
#   attention weight) can be compared. Its area, **AUROC**, is the probability that a
#   random true component outscores a random false one: 1 is a perfect ranking, 0.5 a
#   coin. `node_auroc` ranks nodes; `edge_auroc[head]` and `edge_auroc[qkv]` rank edges.
# - **Faithfulness** of a circuit C: `f(C) = (m(C) - m(empty)) / (m(full) - m(empty))`,
#   the share of the behaviour left when every edge outside C is resample-ablated. The
#   **faithfulness curve** takes the top 0.1%, 0.2%, ..., 100% of the method's ranking as
#   its circuit. **CPR** is the area under it (higher is better: small circuits that already
#   do the task), **CMD** the area between it and 1 (lower is better). These need no
#   truth, which is why benchmarks such as MIB use them on real models; `cpr_truth` is
#   what the truth itself, ranked first, scores on the same small graph.
# - **Completeness and minimality** of the method's top |T| candidates: the share of the
#   truth it found, and the share of what it found that belongs. Only a known circuit
#   gives you these.
#
# Your method is the library's `resample-ablation` baseline. Now the others: `random`
# (the floor), `eap` (edge attribution patching, a gradient approximation of edge
# ablation) and `attention-heuristic`, which scores each head by how strongly it attends
# like a previous-token, duplicate-token or induction head.

# %%
FIGURES = ("node_auroc", "edge_auroc[head]", "cpr", "cmd", "faithfulness", "completeness")
reports = {"yours": report}
for name in ("random", "attention-heuristic", "eap"):
    reports[name] = validate.score(baselines.BASELINES[name], names=MODELS, seeds=SEEDS, n_pairs=N_PAIRS, label=name)
for name, r in reports.items():
    print(f"## {name}: {baselines.DESCRIPTIONS.get(name, 'resample-ablation of each node (exercise 7.1)')}")
    print(r.table(FIGURES), "\n")

# %%
viz.roc_curves(reports)

# %%
viz.faithfulness_curves(reports)

# %% [markdown]
# ### Exercise 7.2: where does the heuristic fail? (answer, easy, about 10 min)
#
# Score the attention heuristic on all four induction models of the zoo, `INDUCTION_MODELS`
# (`induction-constructed`, `induction-siit`, `induction-2l`, `induction-tiny`). On which
# one is its node AUROC lowest, and what is it there? Answer with a pair
# `(model name, node AUROC)`. (On some models every candidate node belongs to the truth, so
# there is nothing to rank against: the table says `n/a`.)

# %% exercise="validate.heuristic_failure"
heuristic_failure = None

# %%
check("validate.heuristic_failure", heuristic_failure)

# %% [markdown]
# ## 3. Why a pattern is not a mechanism
#
# `induction-constructed` was built by hand. Beside its previous-token head L0H1 and
# induction head L1H1 sits a mirror circuit whose heads attend *exactly* like them, but
# write into a part of the residual stream that nothing reads. An attention pattern is a
# correlate of what a head does, measured on the inputs; it says where a head looks, not
# whether anything downstream uses what it finds. Compare each head's detector scores with
# what ablating it does.

# %%
built = validate.subjects(["induction-constructed"])[0]
built_problem = validate.Problem(built.name, built.seed, built.model, built.task)
tokens = built_problem.clean(64).tokens
detector_scores = {d: methods.head_scores(built.model, tokens, d).scores for d in methods.DETECTORS}
for d, grid in detector_scores.items():
    print(f"{d:>16} score per [layer, head]:", [[round(float(v), 3) for v in row] for row in grid])
try:
    ablation = resample_node_scores(built_problem)
    print("resample-ablation effect:", {k: round(v, 3) for k, v in ablation.items()})
except NotImplementedError:
    print("(finish exercise 7.1 to see what ablating each head does)")

# %% [markdown]
# ### Exercise 7.3: name the decoys (answer, medium, about 10 min)
#
# Which heads of `induction-constructed` look like circuit heads by their attention but do
# nothing for the answer? Answer with the set of their ids. The checker ablates the heads
# you name and measures their detector scores itself.

# %% exercise="validate.decoy_heads"
decoy_heads = None

# %%
check("validate.decoy_heads", decoy_heads)

# %% [markdown]
# Draw the circuit each method returns (its top |T| nodes) with the truth outlined: the
# heuristic ties the decoys with the real heads, so its circuit holds a decoy in place of
# a real head; the causal methods do not.

# %%
def found_circuit(name):
    """The circuit method ``name`` returned on induction-constructed, drawn beside the truth."""
    entry = next(e for e in reports[name].entries if e.model == built.name)
    return viz.circuit_graph(built.model.cfg, entry.circuit, built.truth.edges,
                             title=f"{name} on {built.name} (truth outlined)")


found_circuit("attention-heuristic")

# %%
found_circuit("eap")

# %% [markdown]
# ## 4. What a high AUROC does not tell you
#
# Look back at the tables. AUROC averages over every threshold and counts every candidate
# alike, so it can look good while the circuit a method would actually hand you is bad:
#
# - on a small graph a handful of candidates decides it. `random` can reach a node AUROC
#   well above 0.5 on `induction-constructed`, which has only a few nodes, while the
#   faithfulness of its circuit is 0;
# - a ranking that puts the truth's strong edges first and one weak true edge late still
#   scores an AUROC near 1, yet the top |T| edges then miss that edge, and a circuit
#   without it may not do the task: read `faithfulness` and `completeness` beside
#   `edge_auroc`;
# - AUROC says nothing about the threshold: a method still has to say *where* to cut.
#
# That is why the report gives ranking, faithfulness and overlap together, and the ROC
# and faithfulness curves, not one number.
#
# ### Exercise 7.4: a method that finds the edges (build, hard, about 30 min)
#
# Write `edge_method(problem)` returning edge scores at "head" granularity, `{edge:
# score}` for `edge` in `problem.edges("head")`, whose edge AUROC at head granularity is
# at least 0.95 on **every** seed of `induction-siit`. The checker runs the harness itself,
# on all shipped seeds and its own held-out scoring pairs, and rejects a method that calls
# `problem.answer_key()`. One way: extend exercise 7.1 from nodes to edges. To ablate the
# edge from a sender to a receiver *alone*, leave the sender as it is and add its
# `(corrupted - clean)` output to what that receiver alone reads: its query, key and value
# inputs `blocks.{l}.hook_q_input` / `hook_k_input` / `hook_v_input` ([batch, pos, head,
# d_model], index the receiving head), `blocks.{l}.hook_mlp_in` for `MLP{l}`, and the last
# block's `hook_resid_post` for `logits`.

# %% exercise="validate.edge_method"
def edge_method(problem):
    raise NotImplementedError


# %%
check("validate.edge_method", edge_method)

# %%
edge_report = validate.score(edge_method, names=["induction-siit"], seeds=SEEDS, n_pairs=N_PAIRS,
                             label="edge_method")
print(edge_report.table(FIGURES))
siit_entry = edge_report.entries[0]
if siit_entry.error is None:
    figure = viz.circuit_graph(subject.model.cfg, siit_entry.circuit, subject.truth.edges,
                               title="your edge method's top |T| edges on induction-siit (truth outlined)")
else:
    print(siit_entry.error)

# %% [markdown]
# ## What next
#
# `toylab validate my_method.py:find` scores a method from the shell and writes
# `report.md`, `report.json` and the ROC plot; `report.write(folder)` does the same from
# Python. The suite takes your own models too: a folder with `config.json`,
# `model.safetensors`, `truth.json` and `task.json` joins it like a zoo model. The lab's
# page "7 Validate your method" runs the baselines on any zoo model and draws their ROC
# and faithfulness curves and the circuits they find beside the true one.
