# %% [markdown]
# # Lesson 15: Balanced brackets
#
# Is `(()())` balanced? Is `())(()`? Redwood Research set this as a challenge: train a small
# transformer to classify bracket strings, then find out how it does it (ARENA 1.5.1 works
# through one such model). A string is balanced when its running count `#"(" - #")"`
# **never drops below zero** and **ends at zero**. So there are two ways to fail, and a model
# must catch both: a string can end at zero yet dip below it on the way (`())(()`), or never dip
# yet end above zero (`(()(()`).
#
# `brackets-siit` reads strings of 24 brackets left to right, `[BOS, x_1 .. x_24]`, and answers
# at the last position. It has two layers of two heads and an MLP each. Its truth says how it
# works, and we will not read it until the end: everything here is found with the methods you
# already know (attention patterns, probes, interchange interventions, ablation and direct logit
# attribution), and each answer is checked against the truth and the task's algorithm.

# %%
import torch
from fixtures import (
    DESTROYS,
    FLAG_HOOK,
    IIA_BAR,
    IIA_TESTS,
    KINDS,
    MODEL,
    N_PAIRS,
    N_STRINGS,
    VARIABLES,
    components,
    destroyed,
    failure_pairs,
    fit_flag_readout,
    flag_readout,
    iia,
    layer0_readouts,
    positions,
    truth_failures,
    truth_flag_directions,
    truth_sites,
)

import toylab
from toylab import methods, viz
from toylab.interventions import interchanged
from toylab.lessons import check, fast
from toylab.tasks.brackets import GROUPS

torch.set_grad_enabled(False)
# Fast mode, as the tests run the lesson: half the strings and a quarter of the pairs.
N = N_STRINGS // 2 if fast() else N_STRINGS
N_IIA = N_PAIRS // 4 if fast() else N_PAIRS

zm = toylab.zoo.load(MODEL)
model, task, algorithm = zm.model, zm.task, zm.algorithm
print(task)
batch = task.sample(N, seed=0)
logits = model(batch.tokens)
for tokens, answer in zip(batch.tokens[:4], logits[:4, -1].argmax(-1)):
    print(task.to_strings(tokens)[0], "->", task.output_names[int(answer)])
print(f"accuracy on {N} strings: {float((logits[:, -1].argmax(-1) == batch.targets[:, -1]).float().mean()):.3f}")

# %% [markdown]
# ## 1. The algorithm
#
# Tokens are `BOS` (0), `(` (1, `toylab.tasks.brackets.OPEN`) and `)` (2, `CLOSE`). The answer
# class is 1 for "balanced", 0 for "unbalanced".
#
# ### Exercise 15.1: balanced brackets by hand (implement, easy, about 10 min)
#
# Write `is_balanced(tokens)`: tokens [batch, pos], each row `[BOS, x_1 .. x_n]`; return a bool
# tensor [batch], True where the string is balanced. No loop over positions: the running
# balance of every prefix is one `cumsum` away.

# %% exercise="brackets.algorithm"
def is_balanced(tokens):
    raise NotImplementedError


# %%
check("brackets.algorithm", is_balanced)

# %% [markdown]
# The task's algorithm keeps the same quantities as **causal variables**: `balance` at every
# position, `negative` (the balance is below zero there), `any_negative` (it was, somewhere)
# and `final_zero`. The data mix makes both failures matter: half the strings are balanced, a
# quarter end at zero but dip (`dips_once` dips at exactly one position), an eighth never dip
# but end above zero. A model that checked only the final count would be right three times in
# four.

# %%
v = task.variables(batch.tokens)
print({name: tuple(value.shape) for name, value in v.items()})
for group in GROUPS:
    strings = task.sample(128, seed=1, group=group)
    answers = model(strings.tokens)[:, -1].argmax(-1)
    print(f"{group:>14}: e.g. {task.to_strings(strings.tokens[:1])[0]}, model accuracy "
          f"{float((answers == strings.targets[:, -1]).float().mean()):.3f}")
final_only = v["final_zero"].long() == batch.targets[:, -1]
print(f"'ends at zero' alone is right on {float(final_only.float().mean()):.0%} of the mix")

# %% [markdown]
# ## 2. Layer 0: counting
#
# How can attention count? A head that attends **uniformly** to every position so far gets the
# mean of their values: with one value for `(` and another for `)`, that mean is an affine
# function of the *fraction* of open brackets, `balance / (i + 1)` at position i (plus the BOS
# share). Look at the two layer-0 heads on one string.

# %%
example = batch.tokens[:1]
_, cache = model.run_with_cache(example)
str_tokens = task.to_str_tokens(example[0])
for head in range(model.cfg.n_heads):
    viz.attention_pattern(cache["pattern", 0][0, head], str_tokens, title=f"L0H{head} on one string")

# %% [markdown]
# Both attend nearly uniformly. What do they write? A **linear readout** answers that: fit the
# balance as a linear function of a head's output, and measure how much of its variance the
# fit explains, R² = 1 - SS_res / SS_tot.
#
# ### Exercise 15.2: the R² of a linear readout (implement, easy, about 10 min)
#
# Write `r2(x, y)`: x [n, d], y [n]; fit `y ≈ x w + b` by least squares (with the bias b) and
# return R² as a float, with `SS_tot = sum((y - mean(y))^2)`. Work in float64:
# `torch.linalg.lstsq(X, y)` solves the least squares once you append a column of ones to x.

# %% exercise="brackets.r2"
def r2(x, y):
    raise NotImplementedError


# %%
check("brackets.r2", r2)

# %% [markdown]
# Read the balance off each layer-0 head's output `hook_z` [d_head], at each position on its
# own and pooled over all positions; and, pooled, the fraction `balance / (i + 1)`.

# %%
for head in range(model.cfg.n_heads):
    z, balance, pos = layer0_readouts(model, task, batch.tokens, head)  # [n, d_head], [n], [n]
    try:
        per_position = [r2(z[pos == p], balance[pos == p]) for p in range(2, task.n_ctx)]
        print(f"L0H{head}: R² of the balance per position, min {min(per_position):.3f}; pooled over positions: "
              f"balance {r2(z, balance):.3f}, balance / (i + 1) {r2(z, balance / (pos + 1)):.3f}")
    except NotImplementedError:
        print("(finish exercise 15.2 to read the balance off the layer-0 heads)")
        break

# %% [markdown]
# At each position the balance is read off almost perfectly; pooled over positions, what is
# linear is the fraction, as uniform attention predicts (ARENA's model, which counts from the
# other end of the string, has a head doing the same). And the two heads look the same:
# same attention, same readout. One of them is decoration. Neither the pattern nor the probe can
# tell which: both say what is *decodable*, not what is *used* (lesson 8).
#
# ## 3. MLP0: from a count to a flag
#
# An average cannot say "below zero at *some* position": a brief dip barely moves it. So the
# model must first **flag** each position where the balance is negative. The flag is a
# threshold of the count, a job for an MLP. If MLP0 writes a flag, its output should differ
# along one direction between the positions where the balance is below zero and the others.
#
# ### Exercise 15.3: the flag direction (implement, easy, about 10 min)
#
# Write `flag_direction(acts, negative)`: acts [batch, pos, d_model], MLP0's output
# (`blocks.0.hook_mlp_out`); negative [batch, pos] bool, the algorithm's flags. Over every
# bracket's position (1 .. n, not BOS) of every string, take the mean of the activations where
# the flag is on minus their mean where it is off, and return it as a unit vector [d_model].

# %% exercise="brackets.flag_direction"
def flag_direction(acts, negative):
    raise NotImplementedError


# %%
check("brackets.flag_direction", flag_direction)

# %% [markdown]
# Read the flags back: project MLP0's output at each position on the direction, on strings the
# direction was not fitted on. And with your `r2`, how linearly is the flag written in MLP0's
# output, and in layer 0's attention output, which holds the count?

# %%
fresh = task.sample(N, seed=3).tokens
fresh_flags = task.variables(fresh)["negative"][:, 1:]  # [batch, pos - 1]
_, fresh_cache = model.run_with_cache(fresh)
direction = None
try:
    direction = flag_direction(model.run_with_cache(batch.tokens)[1]["mlp_out", 0], v["negative"])  # [d_model]
    projection = fresh_cache["mlp_out", 0][:, 1:] @ direction  # [batch, pos - 1]
    print(f"projection on the flag direction: mean {float(projection[fresh_flags].mean()):.2f} where the balance is "
          f"below zero, {float(projection[~fresh_flags].mean()):.2f} elsewhere")
    for name in ("mlp_out", "attn_out"):
        x = fresh_cache[name, 0][:, 1:].reshape(-1, model.cfg.d_model)
        print(f"R² of the flag read linearly off layer 0's {name}: {r2(x, fresh_flags.reshape(-1).double()):.3f}")
except NotImplementedError:
    print("(finish exercises 15.2 and 15.3 to read the flags off MLP0)")

# %% [markdown]
# The count heads hold the flag only as a threshold of the count, which no linear readout
# makes exact; MLP0's output holds it as a direction (not perfectly: it passes some of the
# count on too). Written there, but is that where the model gets it? Keep the question for
# section 5.
#
# ## 4. Layer 1: gathering the flags
#
# At the last position, a head that attends to flagged positions can find a flag anywhere.
# Here are the layer-1 heads on a string that dips, with the positions the algorithm flags
# outlined on the last query's row.

# %%
dipping = task.sample(N, seed=2, group="dips")
flags = task.variables(dipping.tokens)["negative"]  # [batch, pos]
_, cache = model.run_with_cache(dipping.tokens)
last = task.n_ctx - 1
flagged = {(last, int(p)) for p in torch.nonzero(flags[0]).flatten()}
for head in range(model.cfg.n_heads):
    viz.attention_pattern(cache["pattern", 1][0, head], task.to_str_tokens(dipping.tokens[0]),
                          title=f"L1H{head} on a string that dips", highlight=flagged)
for layer in range(model.cfg.n_layers):
    for head in range(model.cfg.n_heads):
        share = (cache["pattern", layer][:, head, -1] * flags).sum(-1)  # [batch]: the last query on flagged keys
        print(f"L{layer}H{head}: {float(share.mean()):.3f} of the last query's attention on flagged positions")
print(f"(attending uniformly would give {float(flags[:, 1:].float().mean()):.3f}: the share of flagged positions)")

# %% [markdown]
# One layer-1 head looks for flags, but looking is again not using: does the flag it reads
# come from MLP0, or straight from the balance heads? Time to intervene.
#
# ## 5. Interventions: where each variable lives
#
# An **interchange intervention** runs a base string with one component's output taken from a
# source string, at some positions. If that component computes a variable of the algorithm,
# the model should then answer what the algorithm answers on the base with that variable taken
# from the source: `algorithm.intervene(base, source, variable, mask)`, with the same positions
# (a bool mask [pos]). The fraction of pairs where it does is the **interchange-intervention
# accuracy** (IIA). `algorithm.sample_pairs` draws (base, source) pairs whose answers an
# intervention can move.
#
# ### Exercise 15.4: interchange-intervention accuracy (implement, medium, about 20 min)
#
# Write `iia_by_hand(model, algorithm, variable, component, mask, n, seed)`:
#
# 1. `base, source = algorithm.sample_pairs(n, torch.Generator().manual_seed(seed))`;
# 2. the expected answers: `algorithm.intervene(base, source, variable, mask)[:, -1]`;
# 3. run `base.tokens` with `component`'s output replaced by its output on `source.tokens` at
#    the positions where `mask` is True: a head `"L{l}H{h}"` at `blocks.{l}.attn.hook_z`
#    ([batch, pos, head, d_head], head h only), an MLP `"MLP{l}"` at `blocks.{l}.hook_mlp_out`;
# 4. return the fraction of pairs whose arg-max answer at the last position is the expected one.

# %% exercise="brackets.iia"
def iia_by_hand(model, algorithm, variable, component, mask, n, seed):
    raise NotImplementedError


# %%
check("brackets.iia", iia_by_hand)

# %% [markdown]
# `fixtures.iia` is toylab's (`toylab.interventions.interchange_accuracy` with
# `toylab.interventions.interchanged`). Each variable is swapped where it lives: `balance` and
# `negative` at every position, `any_negative` at the last. Swapping `negative` at *every*
# position swaps `any_negative` too, so the per-position flag is also swapped at every position
# but the last.

# %%
names = components(model.cfg)
rows = [f"{variable} ({where})" for variable, where in IIA_TESTS]
table = torch.tensor([[iia(model, algorithm, variable, c, positions(where, task.n_ctx), n=N_IIA) for c in names]
                      for variable, where in IIA_TESTS])  # [test, component]
viz.heatmap(table, rows, names, title="brackets-siit: IIA of each variable at each component", diverging=False,
            cbar_label="IIA")
for row, values in zip(rows, table):
    print(f"{row:>28}:", "  ".join(f"{c} {float(x):.2f}" for c, x in zip(names, values)))

# %% [markdown]
# ### Exercise 15.5: where each variable lives (answer, medium, about 10 min)
#
# Answer with a dict `{"balance": c, "negative": c, "any_negative": c}`, one component id each
# (`"L0H1"`, `"MLP0"`, ...): the component that carries the variable, its IIA at least
# `IIA_BAR` (0.9) in *every* test of that variable. Think about why the others fail: a head
# that counts but is never read, a head that holds more than the flags, a head that only acts
# at the last position.

# %% exercise="brackets.sites"
sites = None  # e.g. {"balance": "L0H0", "negative": "L1H0", "any_negative": "MLP1"}

# %%
check("brackets.sites", sites)

# %% [markdown]
# The algorithm can also *set* a variable rather than copy it: `algorithm.assign(base,
# "any_negative", values)` says what every answer must become once `any_negative := values`.
# Set it by giving L1H1, at the last position alone, its output on strings that dip (or on
# balanced strings, to clear it), and see whether the model follows; the inert L1H0 should do
# nothing.

# %%
balanced = task.sample(N_IIA, seed=4, group="balanced")
dips = task.sample(N_IIA, seed=5, group="dips")
at_last = positions("last", task.n_ctx)
settings = (("balanced strings, any_negative := True", balanced, dips, True),
            ("strings that dip and end at zero, any_negative := False", dips, balanced, False))
for what, base, source, value in settings:
    expected = algorithm.assign(base, "any_negative", torch.full((len(base),), value))[:, -1]
    for component in ("L1H1", "L1H0"):
        with interchanged(model, source.tokens, [component], at_last):
            answers = model(base.tokens)[:, -1].argmax(-1)
        print(f"{what}, through {component}: the model gives the algorithm's answer on "
              f"{float((answers == expected).float().mean()):.0%}")

# %% [markdown]
# Through L1H1, the model follows the algorithm both ways: one head's output at one position
# decides whether the string dipped.
#
# ## 6. Two ways to fail
#
# `task.counterfactual` pairs a balanced string with a one-edit unbalanced version of it, in
# random order. Half the pairs swap a top-level `(...)` into `)...(`: the string **dips** to -1
# and still ends at zero. The other half turn one `)` into `(`: the string is **unclosed**, it
# never dips but ends at +2. `fixtures.failure_pairs` splits them by kind.
#
# Resample-ablate one component (its output taken from the other string of the pair,
# `methods.ablation_scores`) and measure the fraction of the logit difference between the two
# answers that it destroys.
#
# ### Exercise 15.6: predict the two failures (answer, medium, about 15 min)
#
# Before running it: for each kind of pair, which components destroy at least half
# (`DESTROYS`) of the difference when ablated? Answer with `{"dips": set, "unclosed": set}` of
# component ids among `components(model.cfg)`. Reason from what each component carries: what
# changes between the two strings of a "dips" pair, and what between those of an "unclosed"?

# %% exercise="brackets.failure_modes"
failures = None  # e.g. {"dips": {"L0H0"}, "unclosed": {"L1H0"}}

# %%
check("brackets.failure_modes", failures)

# %%
pairs = failure_pairs(task, N_IIA, seed=0)
scores = {kind: destroyed(model, pairs[kind]) for kind in KINDS}
for kind in KINDS:
    print(f"{kind:>9}:", "  ".join(f"{c} {x:.2f}" for c, x in scores[kind].items()))
viz.failure_bars(scores, bar=DESTROYS, title="brackets-siit: fraction of the logit difference destroyed")

# %% [markdown]
# A dip changes the balance at the positions inside the swapped pair, so their flags, so what
# L1H1 finds, so the answer: everything along the path L0H1 -> MLP0 -> L1H1 -> MLP1 matters.
# An unclosed string changes the balance too, but never below zero: no flag changes, and L1H1
# has nothing new to find; the final balance goes from L0H1 to MLP1. MLP0 still destroys a bit
# of the unclosed difference: it also passes some of the balance on to MLP1, besides the flags.
#
# Which components write the answer into the logits directly? Direct logit attribution splits
# the clean run's logit difference into each component's share.

# %%
for kind in KINDS:
    print(f"{kind:>9}: direct logit attribution, top 3:", methods.direct_logit_attribution(model, pairs[kind]).top(3))

# %% [markdown]
# MLP1 writes nearly all of the answer, and on a dip L1H1 adds a little straight into the
# logits; every other component acts through them. Ablation said what matters, DLA says who
# has the last word: on this model, both agree with the interventions.
#
# ## What the truth says

# %%
print(zm.truth.summary())
truth = truth_sites(zm.truth)
print("the truth's sites:", truth)
print("the truth's prediction of the failures:", truth_failures(zm.truth, task, pairs))
viz.heatmap(table, rows, names, title="IIA, the truth's site of each variable outlined", diverging=False,
            cbar_label="IIA", highlight={(i, names.index(truth[variable])) for i, (variable, _) in enumerate(IIA_TESTS)})
viz.failure_bars(scores, truth=truth_failures(zm.truth, task, pairs), bar=DESTROYS, title="the truth outlined")
print(f"variables: {VARIABLES}; a site carries its variable at IIA >= {IIA_BAR}")

# %% [markdown]
# The truth also declares **features**: MLP0's flag at each position, a direction in its output
# (`truth.features` whose variable is `negative`), each certified by intervening along it.
# Compare your flag direction with them, and read the flags of one string back along it (0 at
# the mean projection where the flag is off, 1 where it is on); the positions the algorithm
# flags are outlined.

# %%
declared = truth_flag_directions(zm.truth)  # [feature, d_model], unit rows
print(f"the truth declares {len(declared)} flag directions in {FLAG_HOOK}")
if direction is not None and len(declared):
    cosines = declared @ direction.double()
    print(f"cosine of your flag direction with them: min {float(cosines.min()):.3f}, mean {float(cosines.mean()):.3f}")
string = dips.tokens[:1]
readout = fit_flag_readout(model, task, N)  # exercise 15.3's direction, and its means where the flag is off and on
viz.bracket_trace(task.to_str_tokens(string[0]), task.variables(string)["balance"][0],
                  flags=flag_readout(model, readout, string)[0], negative=task.variables(string)["negative"][0],
                  title=f"{task.to_strings(string)[0]}: the balance, and the flags read off MLP0")

# %% [markdown]
# ## What next
#
# You found the whole algorithm in the weights: L0H1 counts by attending uniformly (L0H0 does
# the same, and nothing reads it), MLP0 turns the count into a flag at each position, L1H1
# gathers the flags at the last position, and MLP1 combines them with the final count. The
# lab's page "15 Balanced brackets" runs the same functions on any string you type: its
# running balance, the model's answer and confidence, L0H1's attention, the flags read out
# per position, and the ablations of both failures with the truth's components outlined.
