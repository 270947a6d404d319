# %% [markdown]
# # Lesson 16: Attribution patching and EAP
#
# Activation patching (lesson 3) asks one question per component: run the clean input, put in
# one component's activation from the corrupted input, and see how far the metric moves. On a
# model with thousands of heads, or a graph with millions of edges, that is a forward pass per
# question. **Attribution patching** (Nanda 2023) answers all of them at once, to first order:
# with `a` an activation and `m` the metric,
#
# `m(a_corr) - m(a_clean)  ~  (a_corr - a_clean) . dm/da`, the gradient taken on the clean run.
#
# One forward pass on each input and one backward pass give every activation's difference and
# every gradient. **Edge attribution patching** (EAP, Syed et al. 2023) does the same for every
# edge of the computational graph; EAP-IG (Hanna et al. 2024) integrates the gradient along the
# way from the corrupted input to the clean one. This lesson builds each by hand, checks it
# against toylab's own, and measures where the linear approximation agrees with patching for
# real and where it does not. Lesson 9 takes the failures apart one trap at a time; here the
# subject is the method itself.
#
# The metric is the task's logit difference (the clean answer's logit minus the counterfactual
# answer's, averaged over the batch); every share below is a fraction of the whole effect,
# `m_clean - m_corr`.

# %%
import functools

import torch
from fixtures import (  # shared with the checker and the lab
    BASELINES,
    FIGURES,
    IG_SWEEP,
    IG_TOLERANCE,
    MAX_STEPS,
    MODEL,
    MODELS,
    SCORING_PAIRS,
    SEED,
    TRAP,
    UNDERSTATED,
    correlation,
    head_ids,
    noising_shares,
    pair,
    receiver_site,
    sender_site,
)

import toylab
from toylab import methods, validate, viz
from toylab.components import Edge, parse
from toylab.lessons import check, fast
from toylab.tasks import logit_diff

torch.set_grad_enabled(False)  # gradients only where a cell asks for them, inside torch.enable_grad()
# Fast mode, as the tests run the lesson: EAP-IG drawn at three step counts, the harness run on one model.
SWEEP = (1, 2, 5) if fast() else IG_SWEEP  # EAP-IG's step counts drawn in section 5
VALIDATED = (TRAP,) if fast() else (MODEL, TRAP)  # the models section 6 scores

zm = toylab.zoo.load(MODEL, seed=SEED)
model, task = zm.model, zm.task
pairs = pair(zm)  # task.counterfactual(32, seed=0): clean and corrupted, differing in the repeated segment
m_clean, m_corr = float(logit_diff(model(pairs.clean.tokens), pairs)), float(logit_diff(model(pairs.corrupted.tokens), pairs))
print(f"{MODEL}: m_clean {m_clean:.3f}, m_corr {m_corr:.3f}; the truth's heads {zm.truth.heads}")

# %% [markdown]
# ## 1. One activation, to first order
#
# Take head h of layer l and its output `z = blocks.{l}.attn.hook_z[:, :, h]` ([batch, pos,
# d_head]). Patching it for real replaces z by its value on the corrupted input and runs the
# rest of the model. Attribution patching needs only:
#
# - `z_corr`, from a forward pass on `pairs.corrupted.tokens` (`run_with_cache`);
# - `z_clean` and `dm/dz`, from a forward pass on the clean tokens, inside `with
#   torch.enable_grad():`, in which a hook on `hook_z` returns `z.clone()` and keeps it (a node
#   of its own in the autograd graph; it requires grad because the weights do), followed by
#   `torch.autograd.grad(m, [that tensor])`.
#
# ### Exercise 16.1: attribution patching of one head (implement, easy, about 15 min)
#
# Write `attribute_head(model, pair, layer, head)`: the first-order estimate of what patching
# head `head`'s `hook_z` from the corrupted run into the clean run does to the metric,
# `m(patched) - m_clean ~ sum over batch, pos and d_head of (z_corr - z_clean) * dm/dz`, with
# `m = logit_diff(logits, pair)`, as a float. (m is a mean over the batch, so its gradient
# already carries the 1/batch: sum, do not average.)

# %% exercise="atp.one_head"
def attribute_head(model, pair, layer, head):
    raise NotImplementedError


# %%
check("atp.one_head", attribute_head)

# %% [markdown]
# Now the real thing for every head: `methods.activation_patching(model, pair, "head",
# direction="noise")` runs the clean input with one head's `hook_z` from the corrupted one and
# scores `(m_patched - m_corr) / (m_clean - m_corr)`, so the change it made is `m_patched -
# m_clean = (score - 1) (m_clean - m_corr)`.

# %%
real_shares = noising_shares(model, pairs)  # [layer, head]: (m_clean - m_patched) / (m_clean - m_corr)
try:
    for h in head_ids(model.cfg):
        _, layer, index = parse(h)
        estimate = attribute_head(model, pairs, layer, index)
        real = -float(real_shares[layer, index]) * (m_clean - m_corr)
        print(f"{h}{' (truth)' if h in zm.truth.heads else '':>8}: estimate {estimate:+.4f}, "
              f"patched for real {real:+.4f}")
except NotImplementedError:
    print("(finish exercise 16.1 to set the estimate beside the real patch for every head)")

# %% [markdown]
# In layer 1 the estimate is the real patch to the last digit; in layer 0 it is not, and for
# the previous-token head of the truth it is far too small. The reason is the architecture.
# `induction-siit` has no LayerNorm and no MLPs, so from a layer-1 head's z to the logits
# everything is linear: `z W_O` is added to the residual stream and read by the unembedding.
# A linear function equals its first-order Taylor expansion, so attribution patching is exact
# there. A layer-0 head's output is also read by layer 1's queries and keys, through a
# softmax. The induction head puts most of its attention (about 0.9) on one key, and patching
# the previous-token head moves that attention to another key altogether: a change far
# outside the range where the softmax is close to linear, so the gradient at the clean run
# says little about it.
#
# ## 2. Every head from one backward pass
#
# The point of the method is that nothing in exercise 16.1 was specific to one head: the
# corrupted run caches every `hook_z` at once, and one backward pass from m gives the gradient
# at every layer's `hook_z`. The cost no longer grows with the number of components. (Keep
# returning `z.clone()` from each hook, not `z.detach().requires_grad_(True)`: a detached
# layer-1 z would be cut from what feeds it, hiding from layer 0's gradient every path through
# the layer-1 heads.)
#
# ### Exercise 16.2: every head at once (implement, medium, about 15 min)
#
# Write `head_attributions(model, pair)`, returning a [n_layers, n_heads] tensor: for each
# head, the estimate of exercise 16.1 divided by `m_corr - m_clean`, the estimated share of the
# effect that patching the head removes, `(m_clean - m_patched) / (m_clean - m_corr)`. Use one
# forward pass on each input and one backward pass for all heads together (the checker counts
# the forward passes).

# %% exercise="atp.every_head"
def head_attributions(model, pair):
    raise NotImplementedError


# %%
check("atp.every_head", head_attributions)

# %% [markdown]
# toylab computes the same from its edge scores: `methods.eap(model, pair).nodes()` sums each
# sender's outgoing edges, and since the gradient at a head's output is the sum of the
# gradients at every input that reads it, that sum is attribution patching of the node. Set
# the estimate against the real patch on three models, with the truth's heads ringed:

# %%
for name in MODELS:
    other = toylab.zoo.load(name, seed=SEED)
    other_pairs = pair(other)
    nodes = methods.eap(other.model, other_pairs).nodes()
    real = noising_shares(other.model, other_pairs)  # [layer, head]
    heads = head_ids(other.model.cfg)
    real_by_head = {h: float(real[parse(h)[1:]]) for h in heads}
    print(f"{name:>15}: correlation over its {len(heads)} heads {correlation(nodes, real_by_head):+.3f}")
    for h in other.truth.heads:
        print(f"{'':>17}{h} ({other.truth.nodes[h]}): estimate {nodes[h]:+.3f}, patched for real {real_by_head[h]:+.3f}")
    if name == MODEL:
        viz.attribution_scatter({h: nodes[h] for h in heads}, real_by_head, truth=other.truth.heads,
                                title=f"{name}: each head, attribution patching against patching for real")

# %% [markdown]
# The correlation is a summary, and a forgiving one. On `ioi-siit` the name movers, which
# write the answer, sit near the diagonal, while the duplicate-token head and the S-inhibition
# head, which act through the name movers' queries, score near 0 although patching either
# removes almost everything. A head whose effect is direct is estimated well; a head whose
# effect goes through another head's attention pattern is the one to check by patching.
#
# ## 3. Edges: EAP
#
# A node's score lumps together everything downstream of it. An **edge** (sender, receiver,
# kind) is one path: the receiver reads the residual stream, the sum of every upstream sender's
# output, and patching the edge means that one receiver input (a head's query, key or value
# input, an MLP's input, or the logits) sees the sender's corrupted output while everything
# else sees the clean one. To first order the effect is
#
# `(s_corr - s_clean) . dm/d(receiver input)`,
#
# the sender's change times the gradient at the receiver's *own* input. toylab gives each head
# its own copy of the stream for its query, key and value (`blocks.{l}.hook_{q,k,v}_input`,
# [batch, pos, head, d_model]), so the gradient there belongs to that head and input alone.
# (Until a hook replaces them they are views of one stream, which toylab projects once for every
# head; a leaf you return from the hook, `x.detach().requires_grad_()` or `x.clone()`, gets each
# head's own gradient either way.) All
# of a model's edges then come from one einsum of [sender] differences with [receiver]
# gradients. `fixtures.sender_site(edge)` and `receiver_site(cfg, edge)` say where each end
# lives: (hook name, head index or None).

# %%
edge = Edge("L0H2", "L1H1", "k")
print(edge, "sender at", sender_site(edge), "; receiver at", receiver_site(model.cfg, edge))

# %% [markdown]
# ### Exercise 16.3: one edge by hand (implement, medium, about 20 min)
#
# Write `edge_attribution(model, pair, edge)`: EAP's score of `edge`, the sum over batch and
# pos of `(s_corr - s_clean) . dm/d(input)` (s the sender's output, [batch, pos, d_model];
# input the receiver's, the gradient on the clean run) divided by `m_corr - m_clean`, as a
# float: the estimated share of the effect that patching the edge alone removes.

# %% exercise="atp.edge"
def edge_attribution(model, pair, edge):
    raise NotImplementedError


# %%
check("atp.edge", edge_attribution)

# %% [markdown]
# `methods.eap(model, pair)` scores every edge this way; `methods.edge_patching(model, pair)`
# patches every edge for real, one forward pass each (resumed at the receiver's layer), and
# gives the share each removes. On `induction-siit`:

# %%
eap_scores = methods.eap(model, pairs)
real_edges = methods.edge_patching(model, pairs)
viz.attribution_scatter(eap_scores.scores, real_edges.scores, truth=zm.truth.edges,
                        title=f"{MODEL}: each edge, EAP against patching for real")
for e, score in eap_scores.top(5, absolute=True):
    print(f"{e!s:>26}: EAP {score:+.3f}, patched for real {real_edges[e]:+.3f}"
          f"{'  (truth)' if e in zm.truth.edges else ''}")

# %% [markdown]
# ## 4. Where the linear approximation breaks
#
# Every edge of a truth is necessary: its certificate checks that the circuit without it loses
# a good share of the answer. Here are EAP's scores of the truth's edges on `induction-siit`
# and on `trap-saturation` (lesson 9's saturation trap: y = b if s else a, a layer-0 head
# moves s to the answer position, and a selector head's query reads it and attends to b or to
# a through a saturated softmax). Before patching anything, predict.

# %%
trap = toylab.zoo.load(TRAP, seed=SEED)
trap_pairs = pair(trap)
eap_on = {MODEL: eap_scores, TRAP: methods.eap(trap.model, trap_pairs)}
for name, zoo_model in ((MODEL, zm), (TRAP, trap)):
    for e in zoo_model.truth.edges:
        print(f"{name:>15} {e!s:>26}: EAP {eap_on[name][e]:+.4f}")

# %% [markdown]
# ### Exercise 16.4: predict where EAP understates (answer, medium, about 10 min)
#
# For each of the two models, which edges of the truth does EAP score below half
# (`UNDERSTATED`) of what patching them for real removes? Answer with a dict `{model name: set
# of edges}` (`Edge`s or `(sender, receiver, kind)` tuples). Think about which edges reach the
# answer through an attention pattern before you run the next cell.

# %% exercise="atp.understated"
understated = None  # e.g. {"induction-siit": {("L1H1", "logits", "resid")}, "trap-saturation": set()}

# %%
check("atp.understated", understated)

# %%
real_on = {MODEL: real_edges, TRAP: methods.edge_patching(trap.model, trap_pairs)}
for name, zoo_model in ((MODEL, zm), (TRAP, trap)):
    for e in zoo_model.truth.edges:
        print(f"{name:>15} {e!s:>26}: EAP {eap_on[name][e]:+.3f}, patched for real {real_on[name][e]:+.3f}")
viz.attribution_scatter(eap_on[TRAP].scores, real_on[TRAP].scores, truth=trap.truth.edges,
                        title=f"{TRAP}: each edge, EAP against patching for real")

# %% [markdown]
# On both models the understated edges are the ones whose effect passes through a softmax: the
# edge into the attending head's query or key, and the edge into the head upstream of it,
# whose output reaches the answer only through that query or key. What differs is how badly:
# the induction head's attention is mostly, not entirely, on one key; the selector's is all on
# one, to nine decimals. Follow the gradient backwards through the selector at the answer
# position: after the softmax (at `hook_pattern`) it is about 0.25, before it (at
# `hook_attn_scores`) it is gone.

# %%
(selector,) = trap.truth.trap.nodes["saturated"]
_, layer, head = parse(selector)
for hook in (f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_attn_scores"):
    leaves = {}

    def leaf(x, hook, leaves=leaves):
        leaves["x"] = x.clone()
        return leaves["x"]

    with torch.enable_grad(), trap.model.hooks([(hook, leaf)]):
        (grad,) = torch.autograd.grad(logit_diff(trap.model(trap_pairs.clean.tokens), trap_pairs), [leaves["x"]])
    print(f"{hook:>30}: largest |dm/dx| of {selector} at the answer position {float(grad[:, head, -1].abs().max()):.2g}")
_, trap_cache = trap.model.run_with_cache(trap_pairs.clean.tokens)
p = trap_cache[f"blocks.{layer}.attn.hook_pattern"][0, head, -1]
print(f"{selector}'s attention on the first prompt: {[round(float(x), 10) for x in p]}")

# %% [markdown]
# The selector's scores for its two keys differ by 20, so it puts `1 - 2e-9` on one of them,
# and the softmax's derivative there, `p (1 - p)`, is `2e-9`: the first-order estimate of
# changing the query is zero, although flipping s moves the scores by 40 and flips the answer.
#
# Attribution patching errs the other way too. It *overstates* a head whose ablation another
# head repairs (the gradient cannot see the backup react), and it misses a head whose direct
# and indirect effects cancel to first order only. Lesson 9 builds a trap for each (`trap-self-
# repair`, `trap-cancellation`) and implements AtP*'s **QK fix** (recompute the receiving
# head's pattern exactly, exercise 9.6), which repairs the selector's own query edge here.
#
# ## 5. EAP-IG: integrate the gradient
#
# Integrated gradients (Sundararajan et al. 2017) replace the one gradient at the clean input
# by its average along the straight path between the two inputs. EAP-IG (Hanna et al. 2024)
# interpolates the token embeddings, `e = e_corr + alpha (e_clean - e_corr)`, takes the
# receivers' gradients at `alpha = 0, 1/steps, ..., (steps - 1)/steps` (a left Riemann sum) and
# multiplies their mean by the same sender differences as EAP. Along the path the selector's
# input s moves from one value to the other, so somewhere the softmax switches and its gradient
# is large: an integral over the path sees the switch, a single point beside it does not.
# `methods.eap_ig(model, pair, steps=5)` is the default.

# %%
wanted = sorted(e for e in trap.truth.edges if eap_on[TRAP][e] < UNDERSTATED * real_on[TRAP][e])
ig5 = methods.eap_ig(trap.model, trap_pairs, steps=5)
for e in wanted:
    print(f"{e!s:>26}: EAP {eap_on[TRAP][e]:+.3f}, EAP-IG with 5 steps {ig5[e]:+.3f}, "
          f"patched for real {real_on[TRAP][e]:+.3f}")

# %% [markdown]
# ### Exercise 16.5: enough steps (answer, easy, about 10 min)
#
# Find a number of steps, at most `MAX_STEPS` (64), for which EAP-IG scores every edge above
# (those EAP understates on `trap-saturation`) within `IG_TOLERANCE` (0.05) of patching it for
# real. Answer with the int; the checker runs `methods.eap_ig` with it on this seed of the trap
# and on another.

# %% exercise="atp.ig_steps"
ig_steps = None

# %%
check("atp.ig_steps", ig_steps)

# %%
steps_drawn = sorted(set(SWEEP) | ({ig_steps} if isinstance(ig_steps, int) and 0 < ig_steps <= MAX_STEPS else set()))
sweep = [methods.eap_ig(trap.model, trap_pairs, steps=s) for s in steps_drawn]
viz.ig_steps_plot(steps_drawn, {str(e): [r[e] for r in sweep] for e in wanted},
                  {str(e): real_on[TRAP][e] for e in wanted}, tolerance=IG_TOLERANCE,
                  eap={str(e): eap_on[TRAP][e] for e in wanted}, title=f"{TRAP}: EAP-IG against its steps")
for s, r in zip(steps_drawn, sweep):
    print(f"{s:>3} steps: " + ", ".join(f"{e} {r[e]:+.2f}" for e in wanted))

# %% [markdown]
# The switch is centred: the selector flips where the interpolated s crosses its midpoint,
# alpha = 1/2, within a small fraction of the path. A sum of a few odd steps has no point near
# it and sees little of the switch; with an even number one point lands on it, where the
# gradient is steepest, and stands for a whole step of width 1/steps, so a few even steps
# overshoot (five times over with 2 steps). The sum settles only once its step is small against
# the switch's width. Where a switch sits, and how wide it is, a method never knows in advance:
# lesson 9's `trap-narrow-switch` moves it off-centre and narrows it until even 20 steps are
# wrong (exercise 9.7). Patching for real does not care where the switch is.
#
# ## 6. Scoring EAP against the truth
#
# On a model with a known circuit, a method's scores can be graded. `toylab.validate.score`
# runs a method on a model and seed (`validate.BASELINES` holds toylab's, among them `"eap"`
# and `"edge-noising"`, which patches every edge for real), on pairs it draws itself, then
# scores its edges against the truth on pairs the method never saw: the ROC over the ranking
# (`edge_auroc[qkv]`), and the faithfulness of its circuit, the top |truth| edges (the share
# of the effect left when every other edge is patched from the corrupted run). Lesson 7 builds
# these figures; here we read them.

# %%
reports = {name: validate.score(validate.BASELINES[name], names=list(VALIDATED), seeds=[SEED], label=name,
                               n_pairs=SCORING_PAIRS) for name in BASELINES}
for name, report in reports.items():
    print(f"{name}:\n{report.table(FIGURES + ('edge_auroc[head]', 'cpr'))}")
eap_entry = next(e for e in reports["eap"].entries if e.model == TRAP)
print(f"EAP's circuit on {TRAP}: {[str(e) for e in eap_entry.circuit]}")

# %% [markdown]
# ### Exercise 16.6: what the figures say (answer, medium, about 10 min)
#
# On `trap-saturation`, one of the two figures (`FIGURES`: `"edge_auroc[qkv]"` and
# `"faithfulness"`) shows that EAP fails where the real patch does not; the other barely moves.
# Answer with a dict: `"exposes"`, that figure's name; `"missing"`, the set of truth edges that
# EAP's circuit lacks.

# %% exercise="atp.validate"
verdict = None  # e.g. {"exposes": "edge_auroc[qkv]", "missing": {("L1H1", "logits", "resid")}}

# %%
check("atp.validate", verdict)

# %% [markdown]
# The AUROC counts pairs (a truth edge, another edge) that the ranking orders right. EAP ranks
# the selector's query edge below a few faint distractors, which costs a few of those pairs
# and about 0.02 of the area. The circuit is cut at the truth's size, so the query edge is
# left out, and without it the selector reads the wrong s: the circuit is a chain, and a chain
# with one link missing carries nothing. A ranking figure forgives what a circuit cannot. (And
# a ranking can be right with every number wrong: on `induction-siit`, scored above when the
# lesson runs in full, EAP understates two truth edges thirty-fold, yet ranks them above every
# other edge, so its AUROC and its circuit's faithfulness are edge noising's.) Your number of
# EAP-IG steps, scored the same way:

# %%
if isinstance(ig_steps, int) and 0 < ig_steps <= MAX_STEPS:
    mine = validate.score(functools.partial(validate.BASELINES["eap-ig"], steps=ig_steps), names=[TRAP],
                          seeds=[SEED], label=f"eap-ig, {ig_steps} steps", n_pairs=SCORING_PAIRS)
    print(mine.table(FIGURES))
else:
    print("(answer exercise 16.5 to score EAP-IG with your number of steps)")

# %% [markdown]
# ## What next
#
# Attribution patching is a first-order Taylor expansion of activation patching: exact where
# the model is linear from the component to the metric, good where the effect is direct, and
# blind where it runs through a saturated nonlinearity (a softmax here, a clipped MLP in lesson
# 9's `trap-long-chain`). Its value is its cost, two forwards and one backward for every node
# or edge at once; use it to rank, then patch the top of the ranking for real. EAP-IG buys
# back much of what saturation hides for `steps` times the cost, if the steps are fine enough.
# The lab's page "16 Attribution patching" draws the estimate against the real patch for every
# node or edge of any zoo model, the truth's components coloured, with a slider for EAP-IG's
# steps; lesson 9 ("Why methods fail") has the traps where each shortcut falls in, and the
# remedies.
