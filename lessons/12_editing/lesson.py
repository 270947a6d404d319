# %% [markdown]
# # Lesson 12: Editing facts, and where they live
#
# Lesson 8 found where `factual-recall` keeps its facts: causal tracing pointed at MLP0 at the
# subject position. Meng et al. (2022, ROME) went one step further: if a fact lives in an MLP's
# weights, rewrite it there. ROME treats the MLP as a key-value memory: the neurons' activation
# at the subject is a **key** that names the fact, the MLP's output is its **value**, and a
# rank-one change of the output weights maps the key of one fact to a new value. "The Eiffel
# Tower is in Paris" becomes "... in Rome", and nothing else should change. MEMIT (Meng et al.
# 2023) does many facts at once; constrained fine-tuning is the baseline.
#
# CounterFact scores an edit by four figures: **efficacy** (the edited prompt gives the new
# answer), **generalisation** (so do its paraphrases), **specificity** (other subjects' facts
# are untouched) and the subject's **other facts** (the edit rewrote a fact, not the subject).
# On a large model each is sampled; here the facts are a table, so every one is enumerated.
#
# Then the question Hase et al. (2023) asked: does localisation tell you where to edit? In
# GPT-J the layer causal tracing points to barely predicts the layer where ROME works best.
# `factual-recall-split` stores half its facts in MLP0 and half in MLP1, so we can ask it where
# the answer is known.

# %%
import torch
from fixtures import (
    MODEL,
    N_NOISE,
    SPLIT_MODEL,
    copy_model,
    edit_prompt,
    fact_label,
    first_edit,
    split_facts,
    stored_layer,
)

import toylab
from toylab import methods, viz
from toylab.lessons import check, fast

torch.set_grad_enabled(False)  # the editing methods turn gradients on where they optimise
# Comparing the methods (section 4). Fast mode, as the tests run the lesson: fewer edits, half the optimisation.
N_EDITS = 1 if fast() else 4  # edits per seed
SEEDS = (0,) if fast() else (0, 1)
N_MANY = 2 if fast() else 6  # edits held by one model
COMPARE_CONFIG = methods.EditConfig(v_steps=50, ft_steps=50) if fast() else methods.EditConfig()

zm = toylab.zoo.load(MODEL)
model, task = zm.model, zm.task
print(task)
print(zm.truth.description)

# %% [markdown]
# ## 1. An edit, and its scores
#
# An edit is `methods.FactEdit(subject, relation, attribute)`: make the prompt
# `[BOS, r, s, =]` answer `attribute` instead of `task.table[s, r]`. `methods.rome(model, task,
# edit, layer)` returns a new model (the one given never changes) and `methods.score_edits`
# scores it on every prompt of the task.

# %%
edit = first_edit(task)  # methods.random_edits(task, 1, seed=0)[0]
prompt = edit_prompt(task, edit)  # [1, pos]
print(edit, "  ", fact_label(task, edit))
print(" ".join(task.to_str_tokens(prompt[0])), "->", task.output_names[int(model(prompt)[0, -1].argmax())])

result = methods.rome(model, task, edit, layer=0)
print(f"after ROME at MLP0: -> {task.output_names[int(result.model(prompt)[0, -1].argmax())]}")
scores = methods.score_edits(model, result.model, task, [edit])
print(scores)
print(f"CounterFact's overall score S (harmonic mean of efficacy, generalisation, specificity): "
      f"{methods.edit_score(scores):.3f}")

# %% [markdown]
# `factual-recall` asks each fact in one form, so generalisation is n/a. Specificity is close
# to 1, not 1: a few of the other 188 facts changed. Which ones, and why, is what the rest of
# ROME is about.
#
# ## 2. Keys: what the fact store reads
#
# An MLP at one position computes `out = W_out^T k + b_out` with `k = relu(W_in^T x + b_in)`,
# the neurons' activation (`blocks.{layer}.mlp.hook_post`, [d_mlp]) and `W_out` [d_mlp, d_model].
# Geva et al. (2021) read this as a memory: `k` is a key, the rows of `W_out` are values, and
# the output is the sum of the values weighted by the key. In `factual-recall`, MLP0 at the
# subject sees the subject and (moved there by L0H1) the relation: its key names the fact.
#
# ### Exercise 12.1: read the key (implement, easy, about 5 min)
#
# Write `read_key(model, task, edit, layer)`: the activation of MLP `layer`'s neurons at the
# subject position (`task.positions["subject"]`) on the edit's prompt, in form 0, as [d_mlp].
# `task.make_batch(subjects, relations)` builds prompts ([batch] each).

# %% exercise="editing.key"
def read_key(model, task, edit, layer):
    raise NotImplementedError


# %%
check("editing.key", read_key)

# %% [markdown]
# ROME wants to change the value of one key and as little else as possible. "As little" is
# measured on the keys the MLP actually sees: their second moment `C = E[k k^T]` over every
# prompt of the task.
#
# ### Exercise 12.2: the key second moment (implement, easy, about 10 min)
#
# Write `key_moment(model, task, layer)`: `C = E[k k^T]`, [d_mlp, d_mlp], the mean of the
# outer products of the keys at the subject position over every fact in every form,
# `task.all_facts()`. Not a covariance: the keys are not centred.

# %% exercise="editing.key_moment"
def key_moment(model, task, layer):
    raise NotImplementedError


# %%
check("editing.key_moment", key_moment)

# %%
C = methods.key_second_moment(model, task, 0)  # toylab's: [d_mlp, d_mlp], float64
eigenvalues = torch.linalg.eigvalsh(C)
dead = int((C.diagonal() == 0).sum())
print(f"C: rank {int(torch.linalg.matrix_rank(C))} of {len(C)}; {dead} neuron(s) never fire; eigenvalues from "
      f"{float(eigenvalues[0]):.2g} to {float(eigenvalues[-1]):.2g}")

# %% [markdown]
# A neuron that never fires makes `C` singular. ROME solves with a ridge: `C + r I`, with `r`
# the mean of `C`'s diagonal times `methods.EditConfig().ridge` (1e-4).
#
# ## 3. The rank-one edit
#
# ROME wants new weights `W_out + dW` that send the edit's key `k*` to a new value: the output
# changes by a chosen `delta` at `k*`, `dW^T k* = delta`. Among all such `dW` it takes the one
# that changes the outputs of the other keys least on average, minimising `E[|dW^T k|^2] =
# tr(dW^T C dW)`. A Lagrange multiplier gives
#
# `dW = (C^-1 k*) delta^T / (k*^T C^-1 k*)`, [d_mlp, d_model].
#
# And `delta`? ROME finds it by optimisation: add a vector to MLP `layer`'s output at the
# subject position of the edit prompt, and train it with Adam until the model answers the new
# attribute, with a penalty on its size. `methods.rome` reports it (and the key) in its result's
# `info` (`fixtures.rome_delta(model, task, edit, layer)` runs ROME and hands you both): the
# edit of section 1 has it already.

# %%
layer = 0
reference, delta = result, result.info["delta"]  # section 1's ROME edit at MLP0, and its change of MLP0's output
print(f"|delta| = {float(delta.norm()):.3f}; |k*| = {float(reference.info['key'].norm()):.3f}")

# %% [markdown]
# ### Exercise 12.3: the rank-one edit by hand (implement, medium, about 15 min)
#
# Write `rank_one_edit(model, layer, k, C, delta)`: `k` [d_mlp], `C` [d_mlp, d_mlp] and `delta`
# [d_model] are float64. Return a *copy* of the model (`copy_model(model)` from the fixtures,
# what `copy.deepcopy` gives; the model given must not change) whose `blocks[layer].mlp.W_out`
# has `dW` added, cast to `W_out`'s dtype. Solve for `C^-1 k` as ROME does, with the ridge:
# `torch.linalg.solve(C + r I, k)` with `r = methods.EditConfig().ridge * C.diagonal().mean()`.
# (Weights are parameters: change them under `torch.no_grad()`.)

# %% exercise="editing.rank_one"
def rank_one_edit(model, layer, k, C, delta):
    raise NotImplementedError


# %%
check("editing.rank_one", rank_one_edit)

# %%
hook = f"blocks.{layer}.mlp.hook_post"
subject = task.positions["subject"]
k_star = model.run_with_cache(prompt, names=[hook])[1][hook][0, subject].double()  # [d_mlp]
try:
    mine = rank_one_edit(model, layer, k_star, C, delta)
    gap = float((mine.blocks[layer].mlp.W_out - reference.model.blocks[layer].mlp.W_out).abs().max())
    print(f"your W_out differs from ROME's by at most {gap:.2g}; your edited model answers "
          f"{task.output_names[int(mine(prompt)[0, -1].argmax())]} (new attribute a{edit.attribute})")
except NotImplementedError:
    print("(finish exercise 12.3 to compare your edit with ROME's)")

# %% [markdown]
# Why `C^-1`? The edit adds `delta` times `(k^T C^-1 k*) / (k*^T C^-1 k*)` to the output of any
# other key `k`: that factor is how much of the edit leaks into each other fact. Compare with
# the plain rank-one edit that ignores the keys' statistics, `dW = k* delta^T / |k*|^2`.

# %%
ridged = C + methods.EditConfig().ridge * C.diagonal().mean() * torch.eye(len(C), dtype=C.dtype)
c_inv_k = torch.linalg.solve(ridged, k_star)
plain = copy_model(model)
plain.blocks[layer].mlp.W_out += (torch.outer(k_star, delta) / (k_star @ k_star)).float()
others = task.all_facts()
keys = model.run_with_cache(others.tokens, names=[hook])[1][hook][:, subject].double()  # [fact, d_mlp]
keep = task.variables(others.tokens)["subject"] != edit.subject
leak_rome = (keys[keep] @ c_inv_k / (k_star @ c_inv_k)).abs()
leak_plain = (keys[keep] @ k_star / (k_star @ k_star)).abs()
print(f"leak into other subjects' facts, mean |factor|: ROME {float(leak_rome.mean()):.3f}, "
      f"plain {float(leak_plain.mean()):.3f}")
print("ROME: ", methods.score_edits(model, reference.model, task, [edit]))
print("plain:", methods.score_edits(model, plain, task, [edit]))

# %% [markdown]
# The keys of different facts overlap (ReLU activations are all positive), so the plain edit
# writes part of `delta` into every fact that shares neurons with `k*`. Whitening by `C`
# picks the direction of key space that `k*` has and the others lack.
#
# ## 4. Scoring an edit exactly
#
# ### Exercise 12.4: efficacy and specificity (implement, medium, about 15 min)
#
# Write `efficacy_specificity(original, edited, task, edit)`, returning a pair of floats:
#
# - efficacy: 1.0 if `edited` answers `edit.attribute` on the edit prompt in form 0, else 0.0;
# - specificity: over every fact of every *other* subject, in every form (`task.all_facts()`),
#   the prompts `original` answers right (as the table says), the share that `edited` still
#   answers right. (A fact the original never knew is not the edit's fault.)
#
# The answer is read at the last position ("="); `task.variables(tokens)` gives each
# prompt's subject.

# %% exercise="editing.score"
def efficacy_specificity(original, edited, task, edit):
    raise NotImplementedError


# %%
check("editing.score", efficacy_specificity)

# %% [markdown]
# `methods.compare_editing` makes random edits one at a time with each method and averages
# the scores (CounterFact's protocol). Fine-tuning (FT-L) trains MLP0's `W_out` on the edit
# prompt with each weight's change clamped; MEMIT optimises the residual stream the edit needs
# and writes it with a least-squares update that keeps every other fact's key where it was.

# %%
comparison = methods.compare_editing(model, task, n_edits=N_EDITS, seeds=SEEDS, config=COMPARE_CONFIG)
print(comparison.table())

# %% [markdown]
# Many facts in one model: ROME edits them one after the other (each edit's `C` and `delta`
# measured on the model the previous edits left), MEMIT all at once.

# %%
many = methods.random_edits(task, N_MANY, seed=1)
for method in methods.EDIT_METHODS:
    together = methods.apply_edits(model, task, many, method, config=COMPARE_CONFIG)
    print(f"{method:>9}, {N_MANY} edits in one model:", methods.score_edits(model, together.model, task, many))

# %% [markdown]
# ## 5. Paraphrases: `factual-recall-split`
#
# `factual-recall-split` has the same 192 facts, each asked in three forms: each relation has
# three tokens (`r1`, `r1.1`, `r1.2`), paraphrases with the same answer. Its facts live in two
# stores: those of subjects s0-s23 in MLP0, those of s24-s47 in MLP1, both at the subject
# position; L2H1 moves the attribute to the answer.

# %%
split = toylab.zoo.load(SPLIT_MODEL)
smodel, stask = split.model, split.task
print(split.truth.description)
predict_edit = first_edit(stask)
for form in range(stask.n_forms):
    print(f"form {form}:", " ".join(stask.to_str_tokens(edit_prompt(stask, predict_edit, form)[0])))
print("the edit:", fact_label(stask, predict_edit), f"(stored in MLP{stored_layer(split, predict_edit.subject)})")

# %% [markdown]
# ### Exercise 12.5: predict the edited model (answer, easy, about 5 min)
#
# ROME edits `predict_edit` (made with the form-0 prompt) at the layer that stores it. If the
# edit does what it should, what does the edited model answer for
#
# - `"form_2"`: the same fact asked in form 2;
# - `"other_relation"`: the same subject with relation `(r + 1) % n_relations`, form 0;
# - `"other_subject"`: subject `(s + 1) % n_subjects` with the same relation, form 0?
#
# Answer with a dict of attribute indices (ints). `stask.table` is the table of facts.

# %% exercise="editing.predict"
prediction = None  # e.g. {"form_2": 0, "other_relation": 0, "other_subject": 0}

# %%
check("editing.predict", prediction)

# %%
s, r = predict_edit.subject, predict_edit.relation
edited = methods.rome(smodel, stask, predict_edit, stored_layer(split, s)).model
asked = {"form_2": (s, r, 2), "other_relation": (s, (r + 1) % stask.n_relations, 0),
         "other_subject": ((s + 1) % stask.n_subjects, r, 0)}
for what, (subj, rel, form) in asked.items():
    tokens = stask.make_batch(torch.tensor([subj]), torch.tensor([rel]), torch.tensor([form])).tokens
    print(f"{what:>15}: {' '.join(stask.to_str_tokens(tokens[0]))} -> "
          f"{stask.output_names[int(edited(tokens)[0, -1].argmax())]}")
print(methods.score_edits(smodel, edited, stask, [predict_edit]))

# %% [markdown]
# ## 6. Where a fact lives, and where editing works
#
# `methods.localisation_vs_editing(model, task, edits, layers, stored)` does both for each
# fact: causal tracing of each MLP's output at the subject (the fraction of the answer's
# probability restored, `n_noise` noise draws per form), and a ROME edit at each MLP, scored by
# S. Two facts from each store (`PER_HALF`; one in fast mode); outlined, the layer the truth
# stores each in.

# %%
facts = split_facts(split)  # PER_HALF edits of facts stored in MLP0, then PER_HALF of facts stored in MLP1
stored = [stored_layer(split, e.subject) for e in facts]
where = methods.localisation_vs_editing(smodel, stask, facts, layers=(0, 1), stored=stored, n_noise=N_NOISE)
viz.editing_map(where.trace, where.edit_scores, [fact_label(stask, e) for e in facts], where.layers,
                stored=where.stored, title="factual-recall-split: tracing against editing, per fact")
for e, layer, row_trace, row_scores in zip(facts, stored, where.trace, where.edit_scores):
    print(f"{fact_label(stask, e):>16} (stored in MLP{layer}): traced {[round(float(x), 2) for x in row_trace]}, "
          f"S {[round(float(x), 3) for x in row_scores]}")

# %% [markdown]
# ### Exercise 12.6: localisation against editing (answer, medium, about 10 min)
#
# Answer with a dict:
#
# - `"trace_peak"`: `{0: layer, 1: layer}`, for the facts stored in MLP0 and for those stored
#   in MLP1, the MLP layer whose restoration brings the answer back most;
# - `"mean_S"`: `{(stored, edited): S}` for the four pairs of layers, the mean S of ROME at
#   MLP `edited` over the facts stored in MLP `stored` (to 2 decimals);
# - `"other_layer_works"`: does ROME at the layer that does *not* store a fact still work, a
#   mean S of at least 0.8 for both stores (a failed edit scores 0)? `True` or `False`.

# %% exercise="editing.localisation"
localisation = None  # e.g. {"trace_peak": {0: 1, 1: 0}, "mean_S": {(0, 0): 0.5, (0, 1): 0.5, (1, 0): 0.5, (1, 1): 0.5}, "other_layer_works": False}

# %%
check("editing.localisation", localisation)

# %%
print(f"tracing finds the store for {where.tracing_finds_storage:.0%} of the facts; the best edit layer is the "
      f"store for {where.editing_finds_storage:.0%}; correlation of tracing with S over (fact, layer): "
      f"{where.correlation():.2f}")
for e, store in zip(facts, stored):
    other = 1 - store  # the MLP that does not hold the fact
    elsewhere = methods.rome(smodel, stask, e, layer=other).model
    print(f"{fact_label(stask, e):>16} edited at MLP{other}:", methods.score_edits(smodel, elsewhere, stask, [e]))
late = methods.rome(smodel, stask, facts[0], layer=2)
print(f"{fact_label(stask, facts[0]):>16} edited at MLP2:", methods.score_edits(smodel, late.model, stask, [facts[0]]))

# %% [markdown]
# Tracing is right about storage: restoring the MLP that holds a fact brings its answer back,
# restoring the other does little. And on average the store is where ROME scores best. But it
# is not the only place an edit *takes*: for these facts, ROME at the other MLP still makes the
# model give the new attribute in every form (efficacy and generalisation), whether that MLP is
# upstream of the store (MLP0, for a fact MLP1 holds) or downstream of it (MLP1, for a fact
# MLP0 holds). An edit does not have to overwrite the stored value; it only has to write the
# new attribute somewhere L2H1 will read it, and any MLP at the subject before layer 2 will
# do. MLP2 will not: L2H1 reads the subject position before MLP2 writes there. What the layer
# changes is the collateral damage: away from the store, the key ROME rewrites is shared with
# other facts, and specificity (and the subject's other facts) pay for it. (On more facts, a
# few edits at the other MLP fail outright: try `split_facts(split, per_half=8)`, about 20 s.)
#
# That is Hase et al.'s point, on a model where storage is known: localisation tells you where
# a fact *is*; that an edit works at a layer is no evidence the fact was stored there, and a
# layer's score S mixes where a fact is with how cleanly that layer's keys separate facts.
#
# ## What the truth says

# %%
print(split.truth.summary())

# %% [markdown]
# ## What next
#
# You have edited facts by hand and with toylab's ROME, MEMIT and constrained fine-tuning, and
# scored every edit exactly: efficacy, generalisation over paraphrases, specificity over every
# other subject and the subject's own other facts. The lab's page "12 Editing facts" runs the
# same functions on any fact: pick a subject, a relation, a new attribute, a method and a layer,
# see the four figures and every other fact the edit changed, and, on `factual-recall-split`,
# tracing against editing at each layer.
