# %% [markdown]
# # Lesson 11: Steering, graded exactly
#
# Steering changes what a model does without changing its weights: during the forward pass,
# add a vector to one activation (activation addition, Turner et al. 2023; contrastive
# activation addition, Rimsky et al. 2024) or set part of it, so that the model behaves as if
# some variable had another value. Which direction to use? Differences in means, probes,
# SAE latents and DAS subspaces all offer one. AxBench (Wu et al. 2025) compared them on
# large models and had to grade every steered output with an LLM judge.
#
# On toylab's models no judge is needed. A **steering target** says "set variable V to value
# x at this site", and the task's algorithm says exactly what every prompt's answer must then
# be (`Algorithm.assign`). So a steer is graded exactly:
#
# - **success**: of the prompts whose answer should change, the fraction that now give
#   exactly the algorithm's answer;
# - **preservation**: of the prompts whose answer should not change (V already is x), the
#   fraction that still give it;
# - **KL**: how far the steer moves the output distribution on those same prompts.
#
# The lesson works on `factual-recall` (lesson 8's model: `[BOS, relation, subject, =] ->
# attribute`, with L0H1 reading the relation at the subject position and MLP0 looking the
# fact up there), with the target "relation := r1": whatever relation a prompt asks for, make
# the model answer the subject's attribute for relation r1. Then it compares five sources of
# directions on three models, and asks why some fail.

# %%
import torch
from fixtures import (
    COMPARE_MODEL,
    MODEL,
    N_FAST,
    PREDICT_PROMPTS,
    SAE_STEPS,
    SAE_STEPS_FAST,
    SOURCES,
    SUCCESS_BAR,
    N,
    das_config,
    n_fit,
    target,
)

import toylab
from toylab import methods, viz
from toylab.interventions import steered
from toylab.lessons import check, fast

torch.set_grad_enabled(False)
FAST = fast()  # as the tests run the lesson: half the prompts (N, n_fit) and half the SAE's steps
N = N_FAST if FAST else N  # prompts alpha is tuned on, and as many the steers are graded on
SAE_STEPS = SAE_STEPS_FAST if FAST else SAE_STEPS

zm = toylab.zoo.load(MODEL)  # "factual-recall"
model, task, algorithm = zm.model, zm.task, zm.algorithm
fr_target = target(zm)  # methods.steering_targets(task, zm.truth), which defines one target on this model
print(fr_target.name, "-", fr_target.description)
print("site:", fr_target.site, "| variable:", fr_target.variable, "| values:", fr_target.n_values)

# %% [markdown]
# ## 1. The target, and what the algorithm says
#
# A `SteeringTarget` carries everything the grading needs: `read(tokens)` gives each prompt's
# value of the variable (its relation), `goal(values)` the value to steer to (r1 for every
# prompt), and `expected(batch)` the algorithm's targets once the steer has worked
# (`FactualRecallAlgorithm.assign(batch, "relation", goals)`: IGNORE except at the answer
# position, which holds `table[subject, r1]`). The steer acts at `site`: the residual stream
# after layer 0's attention at the subject position, where L0H1 has written the relation and
# MLP0 is about to look the fact up.

# %%
fit_batch = fr_target.sample(n_fit(MODEL, FAST), 0)  # prompts the directions are fitted on
batch = fr_target.sample(N, 2)  # prompts the steers are graded on (never fitted on)
v = task.variables(batch.tokens)
expected = fr_target.expected(batch)[:, 3]
for i in range(6):
    print(" ".join(task.to_str_tokens(batch.tokens[i])), f"-> {task.output_names[int(batch.targets[i, 3])]};",
          f"with relation := r1 it must be {task.output_names[int(expected[i])]}",
          "(unchanged)" if int(v["relation"][i]) == 1 else "")
changed = expected != batch.targets[:, 3]
print(f"{int(changed.sum())} of {N} prompts should change their answer, {int((~changed).sum())} should not")

# %% [markdown]
# ## 2. A direction from differences in means
#
# The simplest direction for "relation = x" is the difference between the mean activation of
# the prompts that ask for x and the mean of those that do not (DiffMean in AxBench). Steering
# adds it, scaled: so only its direction matters, and it is normalised to a unit vector.
#
# ### Exercise 11.1: a difference-in-means vector (implement, easy, about 15 min)
#
# Write `diff_in_means(model, target, batch)`: the activations at `target.site` (hook
# `target.site.hook`, position `target.site.pos`; `model.run_with_cache`) on `batch.tokens`,
# and for each value v of the variable (`target.read(batch.tokens)`, values 0 ..
# `target.n_values - 1`) the mean where the value is v minus the mean where it is not, as a
# unit vector. Return [n_values, d_model].

# %% exercise="steering.diff_in_means"
def diff_in_means(model, target, batch):
    raise NotImplementedError


# %%
check("steering.diff_in_means", diff_in_means)

# %% [markdown]
# `methods.fit_steer(model, target, "diff-in-means", n, seed)` fits the same directions, and
# returns them as a `Steer`: the `site`, the `mode` ("add"), one unit vector per value
# (`vectors`), and `scale`, the mean norm of the activation at the site. A steer's strength
# alpha is in units of `scale`: alpha = 1 adds a vector as long as a typical activation.

# %%
dim_steer = methods.fit_steer(model, fr_target, "diff-in-means", n=n_fit(MODEL, FAST), seed=0)
print(f"{dim_steer.source}: {dim_steer.mode} at {dim_steer.site}, vectors {tuple(dim_steer.vectors.shape)}, "
      f"scale {dim_steer.scale:.2f}")
try:
    mine = diff_in_means(model, fr_target, fit_batch)
    cosines = torch.nn.functional.cosine_similarity(mine, dim_steer.vectors, dim=-1)
    print("cosine of your directions with fit_steer's:", [round(float(c), 4) for c in cosines])
except NotImplementedError:
    print("(finish exercise 11.1 to compare your directions with fit_steer's)")

# %% [markdown]
# ## 3. Steering with it
#
# `toylab.interventions.steered(model, hook, vector, alpha, positions=..., head=..., mode=...)`
# is a context manager: inside it, the activation at `hook` becomes `x + alpha * vector` at
# the given positions (`"2"`, `"0,2"`, `"last"`, `"all"`); `vector` may be one per prompt,
# [batch, d]. Outside it, the model is untouched. Push every prompt towards r1, as long as a
# typical activation (alpha = 1 in units of `scale`), and see how many answers move:

# %%
r1_vector = dim_steer.vectors[1]  # [d_model]
with steered(model, dim_steer.site.hook, r1_vector, 1.0 * dim_steer.scale, positions=str(dim_steer.site.pos)):
    pushed = model(batch.tokens)[:, 3].argmax(-1)
print(f"{int((pushed != batch.targets[:, 3]).sum())} of {N} answers moved")

# %% [markdown]
# Moved, but to what? Grading asks for the right answer, on the right prompts.
#
# ### Exercise 11.2: steer, and grade it (implement, medium, about 15 min)
#
# Write `steer_success(model, target, steer, batch, alpha)`: add to each prompt the steer's
# vector for its goal value (`steer.vectors[target.goal(target.read(batch.tokens))]`),
# `alpha * steer.scale` times, at the steer's site; return, as a float, the fraction of the
# prompts whose answer should change (`target.expected(batch)` differs from `batch.targets`
# at the answer position, `target.task.positions["answer"]`) that now answer exactly
# `target.expected(batch)` there.

# %% exercise="steering.success"
def steer_success(model, target, steer, batch, alpha):
    raise NotImplementedError


# %%
check("steering.success", steer_success)

# %% [markdown]
# `methods.score_steer(model, target, steer, batch, alpha)` computes success, preservation and
# KL together. Too weak a push does nothing; too strong a one breaks the prompts that already
# asked for r1, and then the others too. `methods.evaluate_steer` sweeps alpha on tuning
# prompts, picks the alpha with the best success x preservation, and reports that alpha on
# fresh prompts. The ringed points are the chosen alphas.

# %%
for alpha in (0.5, 1.0, 2.0, 4.0):
    s = methods.score_steer(model, fr_target, dim_steer, batch, alpha)
    print(f"alpha {alpha:3}: success {s.success:.2f}, preservation {s.preservation:.2f}, KL {s.kl:.2f}")
dim_result = methods.evaluate_steer(model, fr_target, dim_steer, n=N, seed=0)
print(dim_result)
viz.steering_curves({"diff-in-means": dim_result}, title=f"factual-recall: {fr_target.name}")

# %% [markdown]
# ## 4. What must each answer become?
#
# The grading is only as good as the answer key, and here the answer key is the algorithm.
# Take these six prompts (subject, relation):

# %%
subjects, relations = (torch.tensor(column) for column in zip(*PREDICT_PROMPTS))
predict_batch = task.make_batch(subjects, relations)
for tokens, answer in zip(predict_batch.tokens, predict_batch.targets[:, 3]):
    print(" ".join(task.to_str_tokens(tokens)), "->", task.output_names[int(answer)])

# %% [markdown]
# ### Exercise 11.3: predict the steered answers (answer, easy, about 10 min)
#
# Once the steer has set the relation to r1, what must each of the six prompts answer?
# Answer with a list of six attributes (names such as `"a3"`, or their indices). The fact
# table is `task.table` [subject, relation]; `algorithm.assign(batch, "relation", values)`
# gives the algorithm's targets with the relation set to `values` [batch].

# %% exercise="steering.predict"
predicted = None  # e.g. ["a0", "a1", "a2", "a3", "a4", "a5"]

# %%
check("steering.predict", predicted)

# %% [markdown]
# And what the steered model says, at the alpha the sweep chose:

# %%
goals = fr_target.goal(fr_target.read(predict_batch.tokens))
with methods.apply_steer(model, dim_steer, goals, dim_result.alpha):
    steered_answers = model(predict_batch.tokens)[:, 3].argmax(-1)
want = fr_target.expected(predict_batch)[:, 3]
for tokens, got, right in zip(predict_batch.tokens, steered_answers, want):
    print(" ".join(task.to_str_tokens(tokens)), "-> steered:", task.output_names[int(got)],
          "| the algorithm:", task.output_names[int(right)], "ok" if got == right else "WRONG")

# %% [markdown]
# ## 5. Set, don't add
#
# Adding a vector pushes every prompt the same way, whatever its relation was. But the truth
# says where the relation *is*: in L0H1's output at the subject position (`zm.truth.variables`).
# A steer can instead **set** that component to its mean over the prompts that ask for r1:
# `steered(..., mode="set")` replaces x by `x + alpha * (vector - x)` (all the way at alpha = 1),
# and `head=h` picks one head of a per-head hook such as `blocks.0.attn.hook_z`.

# %%
truth_site = methods.variable_site(zm.truth, "relation", task.n_ctx)
print([(variable.name, variable.components) for variable in zm.truth.variables])
print("the truth's site of the relation:", truth_site)

# %% [markdown]
# ### Exercise 11.4: set, don't add (implement, medium, about 20 min)
#
# Write `set_steer_logits(model, target, fit_batch, batch, site)`: the activation at `site` on
# `fit_batch` (for a site with a head, `site.head`'s slice of it), its mean for each value of
# the variable, [n_values, d]; then run `batch.tokens` with the activation at the site set to
# the mean of each prompt's goal value, and return the logits [batch, pos, d_vocab_out].

# %% exercise="steering.set_steer"
def set_steer_logits(model, target, fit_batch, batch, site):
    raise NotImplementedError


# %%
check("steering.set_steer", set_steer_logits)

# %% [markdown]
# Set the truth's component, then the *whole* residual vector at the target's site, and
# compare with adding the difference-in-means direction:

# %%
def success_of(logits):
    right = logits[:, 3].argmax(-1) == fr_target.expected(batch)[:, 3]
    return float(right[changed].float().mean())


try:
    for site, what in ((truth_site, "set L0H1's output (the truth)"), (fr_target.site, "set the whole residual")):
        print(f"{what:>32}: success {success_of(set_steer_logits(model, fr_target, fit_batch, batch, site)):.2f}")
except NotImplementedError:
    print("(finish exercise 11.4 to compare setting with adding)")
print(f"{'add the diff-in-means direction':>32}: success "
      f"{methods.score_steer(model, fr_target, dim_steer, batch, dim_result.alpha).success:.2f} "
      f"(alpha {dim_result.alpha:g})")
truth_steer = methods.fit_steer(model, fr_target, "truth", n=n_fit(MODEL, FAST), seed=0)  # the same set steer, fitted
print(methods.evaluate_steer(model, fr_target, truth_steer, n=N, seed=0))

# %% [markdown]
# Setting L0H1's output moves exactly the relation and leaves the subject alone: every answer
# becomes `table[subject, r1]`, and the prompts that already asked for r1 keep theirs. Setting
# the whole residual vector sets the subject too, to the mean subject of the r1 prompts:
# the answers come out wrong. Adding a direction sits in between: it outweighs the relation
# L0H1 wrote on most prompts, but it also pushes the rest of the vector around.
#
# ## 6. Five sources, three targets
#
# `methods.fit_steer` knows five sources of directions (`methods.STEER_SOURCES`):
#
# | source | the steer | mode |
# |---|---|---|
# | `diff-in-means` | mean where V = x minus mean where V != x | add |
# | `probe` | a linear probe's logit gradient for x | add |
# | `sae` | the decoder row of the SAE latent that best separates x | add |
# | `das` | a DAS subspace for V (lesson 8), its coordinates set to x's mean | set |
# | `truth` | the truth's component for V set to x's mean: the ceiling | set |
#
# `methods.compare_steering(model, target, sources, seeds, n_fit, n)` fits each on its own
# prompts, sweeps alpha on tuning prompts and reports the chosen alpha on fresh ones. DAS
# trains a rotation, the slow part: `das_config(target)` (from the fixtures) trains it for 100
# steps on 256 pairs, in about a fifth of the time `fit_steer`'s default takes (300 steps on
# 1024 pairs), and reaches about the same success on these targets.

# %%
fr_comparison = methods.compare_steering(model, fr_target, SOURCES, seeds=(0,), n_fit=n_fit(MODEL, FAST), n=N,
                                         sae_steps=SAE_STEPS, das_config=das_config(fr_target))
print(f"factual-recall, {fr_target.name}\n{fr_comparison.table()}")

# %% [markdown]
# The other two targets are on `brackets-siit` (is the string balanced? L0H1 writes the
# running balance at the last position; the target sets it to 0, so a string whose count never
# went negative becomes balanced) and on `modadd-113` (the grokked modular addition of lesson 6;
# the target shifts the first operand, a := a + 1, in its embedding, so the answer becomes
# a + 1 + b). On modadd every answer changes: there is no preservation to measure.

# %%
bz = toylab.zoo.load(COMPARE_MODEL)
brackets_target = target(bz)
print(brackets_target.name, "-", brackets_target.description, "| site:", brackets_target.site)
brackets_comparison = methods.compare_steering(bz.model, brackets_target, SOURCES, seeds=(0,),
                                               n_fit=n_fit(COMPARE_MODEL, FAST), n=N, sae_steps=SAE_STEPS,
                                               das_config=das_config(brackets_target))
print(brackets_comparison.table())
viz.steering_curves({source: results[0] for source, results in brackets_comparison.results.items()},
                    title=f"{COMPARE_MODEL}: {brackets_target.name}")

# %% [markdown]
# ### Exercise 11.5: which steers work? (answer, medium, about 10 min)
#
# On `brackets-siit`, which sources reach a held-out success of at least 0.9
# (`SUCCESS_BAR`)? Answer with a set of source names. Then look at their modes.

# %%
print(f"the bar: success >= {SUCCESS_BAR}; the modes:",
      {source: results[0].mode for source, results in brackets_comparison.results.items()})

# %% exercise="steering.strong_sources"
strong_sources = None  # e.g. {"probe", "sae"}

# %%
check("steering.strong_sources", strong_sources)

# %% [markdown]
# Why do the additive steers fail here, when difference in means did fairly well on the
# relation? The relation is categorical: pushing hard towards r1 can outweigh whichever
# relation L0H1 wrote, and MLP0 looks up the nearest fact. The balance is a number, and the
# steer must take *each* prompt's balance to 0: a string at +3 needs to move one way, one at -2
# the other way, by other amounts. One added vector moves them all by the same amount. A setting
# steer moves each prompt's coordinates to where balance 0 sits, whatever they were.
#
# Modular addition is harder still: the model holds a as cos and sin of w a for a few key
# frequencies w (lesson 6), points on circles. a := a + 1 is a *rotation* of each circle by
# w, and no translation of a circle is a rotation of it. The truth's steer for modadd sets
# the key frequencies' planes of the embedding to the rotated values:

# %%
mz = toylab.zoo.load("modadd-113")
modadd_target = target(mz)
print(modadd_target.name, "-", modadd_target.description)
modadd_comparison = methods.compare_steering(mz.model, modadd_target, ("diff-in-means", "truth"), seeds=(0,),
                                             n_fit=n_fit("modadd-113", FAST), n=N)
print(modadd_comparison.table())
viz.steering_curves({source: results[0] for source, results in modadd_comparison.results.items()},
                    title=f"modadd-113: {modadd_target.name}")

# %% [markdown]
# A direction someone can find (a difference of means, a probe, an SAE latent) steers well only
# where the variable's change is a translation in activation space. DAS finds the variable's
# subspace from interventions and sets it, and comes close to the truth's ceiling on all three
# targets. Exact grading is what shows the gap: a judge that reads outputs cannot tell
# "answered r1's attribute" from "answered something else plausible".
#
# ## What next
#
# The lab's page "11 Steering" runs these steers live: pick one of the three models, a source
# and a strength, and see success, preservation and KL move, with the whole sweep and the
# truth's ceiling drawn beside it. `methods.compare_steering` with three seeds and the
# defaults (2048 fitting prompts, 512 graded) gives the figures with their spread.
