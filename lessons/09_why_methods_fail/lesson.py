# %% [markdown]
# # Lesson 9: Why methods fail
#
# Every circuit-discovery method stands in for an intervention it cannot afford to run on
# everything. Resample ablation asks "does the answer survive without this component?" one
# component at a time; denoising asks the reverse, "does this component alone bring the
# answer back?"; edge attribution patching (EAP) replaces each patch by a first-order Taylor
# estimate from one backward pass; EAP-IG averages that gradient along the straight path from
# the corrupted to the clean input; ACDC prunes edges greedily by what noising each one costs.
# Each shortcut fails somewhere, and the literature documents where.
#
# toylab's **method traps** reproduce such failures on models whose circuit is known. This
# lesson takes apart five hand-built circuit traps and one featuriser trap, where the circuit
# is easy but the variable hides inside its node; each is a boolean gate of three input bits
# (`toylab.tasks.Logic`). Every weight is set by hand, so the mechanism is exactly what
# `toylab/truth/traps.py` says, and each truth carries the trap as
# data: `zm.truth.trap.mechanism`, which methods it expects to fall in and which to recover
# (`falls_in`, `remedies`), and the components it is about (`trap.nodes`, `trap.paths`). Which
# heads play the roles is drawn from the seed, and three faint *distractor* heads (1 to 2.5% of
# the answer each) stand in for the noise floor of a real model: a method that scores a circuit
# component at 0 ranks it below them.
#
# For each trap you run a method, see it disagree with the truth, say why, and apply the
# remedy. The metric is the logit difference between the clean and the counterfactual answer;
# every score is a share of the whole clean-minus-corrupted effect.

# %%
import torch
from fixtures import (  # shared with the checker and the lab
    CODE_SITE,
    DAS_CONFIG,
    LESSON_TRAPS,
    METHODS,
    SEED,
    VARIABLE_TRAPS,
    code_channels,
    model_name,
    shortfall_rows,
)

import toylab
from toylab import methods, viz
from toylab.components import Edge
from toylab.interventions import Faithfulness, edges_without
from toylab.lessons import check, fast
from toylab.methods import Site
from toylab.tasks import logit_diff
from toylab.tasks.logic import BIT_POS
from toylab.validate.baselines import BASELINES
from toylab.validate.leaderboard import leaderboard

torch.set_grad_enabled(False)
N = 16 if fast() else 64  # counterfactual pairs per measurement


def load(trap):
    """The trap's model (the lesson's seed) and a batch of its counterfactual pairs."""
    zm = toylab.zoo.load(model_name(trap), seed=SEED)
    return zm, zm.task.counterfactual(N, seed=0)


def effect_gap(zm, pair):
    """m_clean - m_corrupted: the whole effect every score is a share of."""
    return float(logit_diff(zm.model(pair.clean.tokens), pair) - logit_diff(zm.model(pair.corrupted.tokens), pair))


for trap in LESSON_TRAPS + VARIABLE_TRAPS:
    truth = toylab.zoo.load(model_name(trap), seed=SEED).truth
    print(f"{model_name(trap):>19} ({truth.trap.kind}): falls in {list(truth.trap.falls_in)}, "
          f"remedies {list(truth.trap.remedies)}")

# %% [markdown]
# ## 1. Self-repair: ablation says the primary head does nothing
#
# `trap-self-repair` computes y = a. A primary head copies a to the answer. A backup head in
# layer 1 would copy it too, but its query reads what the primary wrote and its key the value
# of a: when they agree it attends to BOS and writes nothing. Resample-ablate each head and
# compare with the truth's circuit.

# %%
repair, repair_pair = load("self-repair")
print(repair.truth.description)
print("the truth's circuit:", [str(e) for e in repair.truth.edges])
ablation = methods.ablation_scores(repair.model, repair_pair, method="resample")  # effect: m_clean - m_ablated
repair_gap = effect_gap(repair, repair_pair)
for head, effect in zip(ablation.components, ablation.effect.tolist()):
    print(f"{head}: resample-ablating it removes {effect / repair_gap:+.3f} of the effect")

# %% [markdown]
# ### Exercise 9.1: the inert head and its understudy (answer, medium, about 10 min)
#
# One head that the truth's circuit runs through scores (nearly) 0 above, below the
# distractors. Which one, and which other head, ablated together with it, takes the answer
# away? `f = Faithfulness(model, pair)` gives the share of the effect left when every edge
# outside a set is resample-ablated, and `edges_without(model.cfg, heads)` is every edge but
# those leaving `heads`, so `f(edges_without(model.cfg, [h1, h2]))` ablates two heads at once.
# Answer with a dict `{"inert": head, "repairs": head}`.

# %% exercise="traps.self_repair"
self_repair = None

# %%
check("traps.self_repair", self_repair)

# %% [markdown]
# A component's *total* effect, what ablating it does with everything downstream recomputed,
# counts the damage it does *and* everything the rest of the model does about it. Here the
# backup notices: with the primary resample-ablated (now arguing for the other answer) the
# backup's query and key disagree, it attends to a and writes twice the primary's weight. To
# see it, split the logit difference into what each head writes *directly*: no trap has a
# LayerNorm, so a head's direct effect is exactly the logit difference of its output times the
# unembedding.
#
# ### Exercise 9.2: a head's direct effect, with others ablated (implement, medium, about 15 min)
#
# Write `direct_effect(model, pair, head, ablated=())`: run `pair.clean.tokens` with every head
# in `ablated` resample-ablated (its slice of `blocks.{l}.attn.hook_result` [batch, pos, head,
# d_model] replaced by its output on `pair.corrupted.tokens`), take `head`'s output in that run
# (its corrupted output, if it is itself ablated), and return `logit_diff(output @
# model.unembed.W_U, pair)` as a float (the unembedding's bias left out).

# %% exercise="traps.direct_effect"
def direct_effect(model, pair, head, ablated=()):
    raise NotImplementedError


# %%
check("traps.direct_effect", direct_effect)

# %%
(primary,), (backup,) = repair.truth.trap.nodes["primary"], repair.truth.trap.nodes["backup"]
try:
    for ablated in ((), (primary,)):
        effects = {h: round(direct_effect(repair.model, repair_pair, h, ablated), 3) for h in (primary, backup)}
        print(f"{'primary ablated' if ablated else 'clean run':>15}: direct effects {effects}, "
              f"sum {sum(effects.values()):.2f}")
except NotImplementedError:
    print("(finish exercise 9.2 to split the answer between the primary and the backup)")
f = Faithfulness(repair.model, repair_pair)
print(f"faithfulness without the primary {f(edges_without(repair.model.cfg, [primary])):.3f}, "
      f"without primary and backup {f(edges_without(repair.model.cfg, [primary, backup])):.3f}")
direct_edge = Edge(primary, "logits", "resid")
print(f"EAP's score of {direct_edge}: {methods.eap(repair.model, repair_pair)[direct_edge]:.3f}")

# %% [markdown]
# The remedy is to ask about the path, not the node. Ablating only the primary's edge to the
# logits leaves the backup's query reading the primary's clean output, so the backup stays
# quiet and the edge's score is the primary's whole share; EAP, EAP-IG and ACDC all score
# that edge and see the circuit. (Edge patching falls in all the same, from the other side:
# ablated alone, the backup's own query or key edge makes it fire on top of the primary, so
# those edges, outside the truth, score as high as the primary's.)
#
# ## 2. The OR gate: noising sees neither path
#
# `trap-or-gate` computes y = a or b. One head moves a, another b, and MLP0 computes
# min(a + b, 1). The counterfactual pairs go from a = b = 1 (clean) to a = b = 0 (corrupted).
# Noise each edge alone, and let ACDC prune.

# %%
orgate, or_pair = load("or-gate")
noising = methods.edge_patching(orgate.model, or_pair, direction="noise")
acdc = methods.acdc(orgate.model, or_pair)
for i, path in enumerate(orgate.truth.trap.paths):
    for edge in path:
        print(f"path {i}: {edge}: noising removes {noising[edge]:+.3f}; in ACDC's circuit: {edge in acdc.circuit}")
viz.circuit_graph(orgate.model.cfg, acdc.circuit, orgate.truth.edges, title="ACDC on trap-or-gate (truth outlined)")

# %% [markdown]
# Noising asks whether a component is *necessary*; neither path is, since the other one alone
# keeps the answer. ACDC prunes one edge at a time with the rest of its circuit in place, so
# it removes one path (the other keeps the answer) and then must keep the other. Denoising
# asks whether a component is *sufficient*: run the corrupted input and restore one edge.
#
# ### Exercise 9.3: denoise one edge (implement, medium, about 15 min)
#
# Write `denoise_edge(model, pair, edge)` for an `Edge(sender, receiver, kind)`: run
# `pair.corrupted.tokens` with the receiver's own input (`blocks.{l}.hook_{q,k,v}_input[:, :,
# h]` for kind q, k or v into head `L{l}H{h}`; `blocks.{l}.hook_mlp_in` into `MLP{l}`; the last
# block's `hook_resid_post` into `logits`) shifted by the sender's (clean - corrupted) output
# (`hook_embed`, a head's slice of `hook_result`, or `hook_mlp_out`), and nothing else. Return
# `(m - m_corr) / (m_clean - m_corr)` as a float, with m the `logit_diff`.

# %% exercise="traps.denoise_edge"
def denoise_edge(model, pair, edge):
    raise NotImplementedError


# %%
check("traps.denoise_edge", denoise_edge)

# %%
try:
    for i, path in enumerate(orgate.truth.trap.paths):
        print(f"path {i}:", {str(edge): round(denoise_edge(orgate.model, or_pair, edge), 3) for edge in path})
except NotImplementedError:
    print("(finish exercise 9.3 to denoise each path)")

# %% [markdown]
# ### Exercise 9.4: two edges that only matter together (answer, medium, about 10 min)
#
# Noising one edge at a time misses both paths, but noising is not wrong, only asked one
# edge at a time. Which two edges of the truth, noised together, remove the answer although
# neither does alone? Answer with a pair of edges (any pair that does it). `f = Faithfulness(
# model, pair)` measures what is left when every edge outside a set is noised: `f(kept)`.

# %% exercise="traps.together"
together = None

# %%
check("traps.together", together)

# %% [markdown]
# ## 3. Saturation: the gradient through a saturated softmax is zero
#
# `trap-saturation` computes y = b if s else a. A layer-0 head moves s to the answer
# position; the selector head's query reads it and attends to b or to a. Compare EAP with
# patching each edge of the truth for real.

# %%
saturated, sat_pair = load("saturation")
sat_eap = methods.eap(saturated.model, sat_pair)
sat_real = methods.edge_patching(saturated.model, sat_pair)
for edge in saturated.truth.edges:
    print(f"{edge}: EAP {sat_eap[edge]:+.4f}, noising it for real {sat_real[edge]:+.4f}")
(selector,) = saturated.truth.trap.nodes["saturated"]
layer, head = int(selector[1]), int(selector[3:])
_, sat_cache = saturated.model.run_with_cache(sat_pair.clean.tokens)
to_bits = sat_cache[f"blocks.{layer}.attn.hook_pattern"][:, head, -1, [BIT_POS["a"], BIT_POS["b"]]]
print(f"{selector}'s attention from the answer position to (a, b), first rows:", to_bits[:4].tolist())

# %% [markdown]
# ### Exercise 9.5: what the gradient misses (answer, easy, about 5 min)
#
# Which edges of the truth does EAP score no higher than a distractor's (0.025 or less)
# although noising each alone removes almost the whole answer? Answer with the set of edges
# (`Edge`s, or `(sender, receiver, kind)` tuples).

# %% exercise="traps.understated_edges"
understated_edges = None

# %%
check("traps.understated_edges", understated_edges)

# %% [markdown]
# The selector's scores differ by 20 between its two keys, so its pattern is 1 - e^-20 on one
# and e^-20 on the other, and the softmax's derivative there, p (1 - p), is about 2e-9.
# Flipping s moves the scores by 40, far outside where that linearisation holds. AtP*'s **QK
# fix** (Kramár et al. 2024) keeps the one-backward-pass shortcut everywhere except the
# softmax: for an edge into a query or key it recomputes the receiving head's pattern exactly
# with the edge patched, and linearises only what comes after the pattern.
#
# ### Exercise 9.6: the QK fix for one query edge (implement, hard, about 25 min)
#
# Write `q_edge_fixed(model, pair, sender, receiver)` for a sender node and a receiving head
# `L{l}H{h}`:
#
# 1. the patched pattern: run `pair.clean.tokens` with the sender's (corrupted - clean)
#    output added to the receiver's query input, `blocks.{l}.hook_q_input[:, :, h]`, and read
#    head h of `blocks.{l}.attn.hook_pattern` ([batch, head, query_pos, key_pos]);
# 2. the gradient of m = `logit_diff(logits, pair)` with respect to the clean run's
#    `hook_pattern` (replace it in a hook by a tensor that requires grad, inside
#    `with torch.enable_grad():`, and use `torch.autograd.grad`);
# 3. return `sum((patched - clean pattern) * gradient) / (m_corr - m_clean)` over head h's
#    entries, as a float: the estimated share of the effect that noising the edge removes.

# %% exercise="traps.q_edge_fixed"
def q_edge_fixed(model, pair, sender, receiver):
    raise NotImplementedError


# %%
check("traps.q_edge_fixed", q_edge_fixed)

# %%
query_edge = next(e for e in saturated.truth.edges if e.kind == "q")
try:
    print(f"{query_edge}: plain EAP {sat_eap[query_edge]:+.4f}, with the QK fix "
          f"{q_edge_fixed(saturated.model, sat_pair, query_edge.sender, query_edge.receiver):+.4f}, "
          f"for real {sat_real[query_edge]:+.4f}")
except NotImplementedError:
    print("(finish exercise 9.6 to repair the estimate)")
sat_fixed = methods.eap(saturated.model, sat_pair, qk_fix=True)
for edge in saturated.truth.edges:
    print(f"{edge}: EAP with the QK fix on every q and k edge {sat_fixed[edge]:+.4f}, for real {sat_real[edge]:+.4f}")

# %% [markdown]
# After its pattern the selector is linear (a value, a weight, the unembedding), so the fixed
# estimate of the query edge is exact here. `methods.eap(model, pair, qk_fix=True)` applies
# the fix to every edge into a query or key at once (the `eap-qk` baseline). It repairs the
# softmax of the edge's own receiver, no other: the mover's value edge reaches the answer
# through the same saturated selector, and keeps its first-order estimate, the distractors'
# faint share. Integrating the gradient (EAP-IG) or patching for real finds it.
#
# ## 4. The narrow switch: where integrated gradients look
#
# EAP-IG integrates the gradient along the path e = e_corr + alpha (e_clean - e_corr) of the
# token embeddings, as a left Riemann sum over `steps` points alpha = 0, 1/steps, ...
# `trap-narrow-switch` is the saturation trap with its switch moved off-centre and made steep:
# the selector attends to b only once what it reads of s exceeds 0.8.

# %%
narrow, narrow_pair = load("narrow-switch")
narrow_query = next(e for e in narrow.truth.edges if e.kind == "q")
narrow_real = methods.edge_patching(narrow.model, narrow_pair)[narrow_query]
for steps in (5, 10, 20, 50, 100):
    ig = methods.eap_ig(narrow.model, narrow_pair, steps=steps)[narrow_query]
    print(f"EAP-IG with {steps:>3} steps scores {narrow_query} {ig:+.3f} (noising it for real: {narrow_real:+.3f})")

# %% [markdown]
# ### Exercise 9.7: where the switch happens (answer, medium, about 15 min)
#
# Along that path, where does the selector switch? Replace `hook_embed` by the interpolated
# embeddings (as EAP-IG does; take e_clean and e_corr from `run_with_cache`) and read the
# selector's attention from the last position to b, at `BIT_POS["b"]`. For the rows whose
# clean s is 1, and separately for those whose clean s is 0, find the alpha where it crosses
# 1/2. Answer with a dict `{1: alpha, 0: alpha}` (clean s -> alpha), each within 0.01.

# %% exercise="traps.switch_alphas"
switch_alphas = None

# %%
check("traps.switch_alphas", switch_alphas)

# %% [markdown]
# A 5-step sum looks at alpha = 0, 0.2, 0.4, 0.6 and 0.8, where the selector is saturated
# (to one key or the other): each point's gradient is ~0, so their average is ~0. More steps
# are no cure by themselves. With 10 steps the points 0.1 and 0.9 sit exactly on the
# switches, where the gradient is steepest, and each stands for a step of width 0.1 although
# the switch is ~0.01 wide: the estimate comes out four times too large, and twice with 20
# steps. The sum settles only once its step is small against the window, near 100 steps
# here. Patching the edge for real, or recomputing the pattern (the QK fix), does not depend
# on where along the path the switch happens.
#
# ## 5. Cancellation: first-order effects that cancel
#
# `trap-cancellation` computes y = a. One head copies a to the answer and into a hidden
# channel that MLP1 reads; MLP1 writes back a function of that channel whose slope at the
# two inputs cancels the head's direct effect, but whose value is the same on both. Compare
# EAP's node estimate of the head (the sum of its outgoing edges' scores) with ablating it.

# %%
cancel, cancel_pair = load("cancellation")
cancel_eap = methods.eap(cancel.model, cancel_pair)
(cancelling,) = cancel.truth.trap.nodes["cancelling"]
faith = Faithfulness(cancel.model, cancel_pair)
print(f"{cancelling}: EAP's node estimate {cancel_eap.nodes()[cancelling]:+.3f}; "
      f"resample-ablating it removes {1 - faith(edges_without(cancel.model.cfg, [cancelling])):+.3f}")
for edge, score in cancel_eap.top(4, absolute=True):
    print(f"  EAP {edge}: {score:+.3f}  (in the truth: {edge in cancel.truth.edges})")

# %% [markdown]
# ### Exercise 9.8: an edge that only cancels (answer, easy, about 5 min)
#
# Which edge does EAP score about as large as the head's edge to the logits, although
# noising it for real changes nothing? Answer with the edge.

# %% exercise="traps.overstated_edge"
overstated_edge = None

# %%
check("traps.overstated_edge", overstated_edge)

# %% [markdown]
# ### Exercise 9.9: the estimate against the real thing (implement, medium, about 15 min)
#
# Write `node_attribution(model, pair, head)` returning a pair of floats `(estimate, real)`:
#
# - `estimate`: attribution patching of the head's output, `sum over batch and pos of
#   (corrupted - clean output) . dm/d(output)`, divided by `m_corr - m_clean`, with the
#   gradient taken on the clean run at the head's slice of `hook_result` (replace it in a hook
#   by a tensor that requires grad, as in exercise 9.6);
# - `real`: `(m_clean - m_ablated) / (m_clean - m_corr)`, the head's output resample-ablated.

# %% exercise="traps.node_attribution"
def node_attribution(model, pair, head):
    raise NotImplementedError


# %%
check("traps.node_attribution", node_attribution)

# %%
try:
    for zm, pair, node in ((cancel, cancel_pair, cancelling), (repair, repair_pair, primary)):
        estimate, real = node_attribution(zm.model, pair, node)
        print(f"{zm.truth.model} {node}: first-order estimate {estimate:+.3f}, resample ablation {real:+.3f}")
except NotImplementedError:
    print("(finish exercise 9.9 to compare the estimate with the ablation)")

# %% [markdown]
# The two traps mirror each other: on the cancellation trap the gradient says "nothing" about
# a head that carries the whole answer, on the self-repair trap it says "everything" about a
# head whose ablation changes nothing. Neither number is *the* importance of the head: the
# estimate is a local slope at the clean input, the ablation a total effect with every
# compensation included. EAP-IG integrates the cancelling slopes along the path to g(1) -
# g(-1) = 0 and sees the head; so does any method that patches for real.
#
# ## 6. Distributed variable: the node is right, the neurons are wrong
#
# `trap-distributed` computes y = a xor b. Two layer-0 heads move a and b to the answer
# position; MLP0 re-encodes them as one code, a u + b v over a few residual channels (u and v
# orthonormal); MLP1 reads a + b off the code and answers 1 - |a + b|. Finding the circuit is
# easy here. The trap is one step finer: the truth declares the bits as **causal variables**
# (`zm.truth.variables`), both at MLP0's output at the last position, each along its own
# direction (its `basis`, one vector in d_model space), and `zm.algorithm` is the gate as a
# causal model. As in lesson 8, an interchange intervention runs a base prompt with a site's
# activation (or a subspace of it) taken from a source prompt, and the IIA of a variable is
# the share of pairs on which the model then gives the algorithm's answer with that variable
# taken from the source. Compare interchanging MLP0's whole output with interchanging it along
# the truth's direction of a.

# %%
dist, _ = load("distributed")
algorithm = dist.algorithm  # LogicAlgorithm: pairs of independent prompts, and the gate with one bit swapped
print(dist.truth.description)
code_site = Site(*CODE_SITE)  # MLP0's output at the last position
directions = {v.name: torch.tensor(v.basis).T for v in dist.truth.variables}  # variable -> [d_model, 1]
das_config = methods.DASConfig(**DAS_CONFIG)  # k = 1, 100 steps at lr 0.05 on 256 pairs: about a second
for name in ("a", "b"):
    whole = methods.interchange_accuracy(dist.model, algorithm, name, code_site)
    along = methods.interchange_accuracy(dist.model, algorithm, name, code_site, directions[name])
    print(f"IIA of {name}: MLP0's whole output {whole.accuracy:.3f}, only along the truth's direction "
          f"{along.accuracy:.3f}")

# %% [markdown]
# The node is right, yet interchanging it follows the algorithm on only half of the pairs. A
# featuriser at the level of units would look for the channels (or neurons) that hold a. Which
# residual channels does the code use, and what does each hold?

# %%
channels = code_channels(dist.truth)
inputs = dist.task.sample(64, seed=0)
_, code_cache = dist.model.run_with_cache(inputs.tokens, names=[code_site.hook])
code = code_cache[code_site.hook][:, code_site.pos]  # [batch, d_model]
bits = dist.task.bits(inputs.tokens)
for channel in channels:
    values = {f"a={a} b={b}": round(float(code[(bits["a"] == a) & (bits["b"] == b), channel].mean()), 2)
              for a in (0, 1) for b in (0, 1)}
    print(f"channel {channel}: u {float(directions['a'][channel]):+.1f}, v {float(directions['b'][channel]):+.1f}; "
          f"MLP0 writes {values}")

# %% [markdown]
# ### Exercise 9.10: one channel at a time (implement, easy, about 10 min)
#
# Write `channel_iia(model, algorithm, variable, channel, n=256, seed=0)`: the IIA of
# `variable` when only residual channel `channel` of MLP0's output at the last position
# (`blocks.0.hook_mlp_out`, a standard-basis direction) is taken from the source. Draw the
# pairs with `base, source = algorithm.sample_pairs(n, torch.Generator().manual_seed(seed))`,
# run `base.tokens` with that one coordinate replaced by its value on `source.tokens`, and
# return, as a float, the share of pairs whose arg-max at the last position is
# `algorithm.intervene(base, source, variable)[:, -1]`.

# %% exercise="traps.channel_iia"
def channel_iia(model, algorithm, variable, channel, n=256, seed=0):
    raise NotImplementedError


# %%
check("traps.channel_iia", channel_iia)

# %%
try:
    for channel in channels:
        print(f"channel {channel} alone: IIA of a {channel_iia(dist.model, algorithm, 'a', channel):.3f}, "
              f"of b {channel_iia(dist.model, algorithm, 'b', channel):.3f}")
except NotImplementedError:
    print("(finish exercise 9.10 to interchange one channel at a time)")

# %% [markdown]
# Every channel writes a and b in equal measure (u and v are +-1/2 on each), so swapping any
# channel moves both, and neither far enough: no single channel, and no set of them, holds a
# alone. The same goes for MLP0's neurons, which read a and b rotated into each other.
# `methods.neuron_mask`, a learned mask over coordinates, falls in for the same reason.
#
# ### Exercise 9.11: why one half? (answer, easy, about 10 min)
#
# Interchanging MLP0's whole output makes the model follow the gate with more than a taken
# from the source. Which input bits does it take from the source, and on which pairs does
# that still give a's counterfactual? Answer with a dict `{"swaps": set of bits, "agree":
# bit}`: the bits the patched model's answer follows from the source, and the bit on which
# base and source must agree for that answer to be the algorithm's answer with a swapped
# (`dist.task.answer(a, b, s)` computes the gate, `dist.task.bits(tokens)` reads the bits).

# %% exercise="traps.whole_output"
whole_output = None

# %%
check("traps.whole_output", whole_output)

# %% [markdown]
# The remedy is to learn the direction. Distributed alignment search (DAS, Geiger et al. 2024;
# `methods.das`) trains a rotation of the site's space so that swapping its first k
# coordinates gives the algorithm's counterfactual answers, and reports the IIA of the learned
# subspace on held-out pairs.
#
# ### Exercise 9.12: learn the direction of a (build, easy, about 10 min)
#
# Run `methods.das` for the variable a at `code_site` with k = 1, and answer with the
# `DASResult` it returns. The check measures the IIA of its direction on pairs it never saw
# and its |cosine| with the truth's direction of a; both must exceed 0.95. `das_config` above
# (k = 1, a hundred steps at `lr=0.05` on 256 training pairs) takes about a second.

# %% exercise="traps.das_direction"
learned_a = None

# %%
check("traps.das_direction", learned_a)

# %%
if learned_a is not None:
    w, u = learned_a.basis[:, 0], directions["a"][:, 0]
    live = torch.linalg.svd(code - code.mean(0), full_matrices=False)[2][:2].T  # [d_model, 2]: where MLP0 writes
    inside = live @ (live.T @ w)
    print(f"{learned_a}; |cos| with u {float((w @ u).abs()):.3f}, "
          f"within the plane MLP0 writes in {float((inside @ u).abs() / inside.norm()):.3f}")

# %% [markdown]
# DAS finds the direction the neurons and channels spread out. What is left of its direction
# off u lies along directions MLP0's output never takes: swapping those changes nothing, so
# the loss barely moves them, and only more training shrinks them. Within the plane where
# MLP0 writes, the direction is u. The featuriser track (`toylab.validate.featurisers`) scores
# every featuriser this way, on held-out pairs, with the truth's direction as the ceiling.
#
# ## 7. The large graph: six edges among 1,600
#
# `trap-long-chain` has 4 layers of 8 heads and MLPs, about 1,600 candidate edges. It
# computes y = a along a chain of six edges: a layer-0 head moves a to the answer position,
# a layer-1 head relays it, MLP1 relays it, a layer-2 and a layer-3 head pass it on to the
# answer; sixteen faint distractors read the chain at every stage and add 0.2 to 0.5% of the
# answer each. MLP1 relays the bit *clipped*, clip(2 c, -1, 1), and the bit is +-1 on every
# input: MLP1 sits on a flat part of its function, clean and corrupted alike. On a graph this
# size what counts is precision at the circuit's size: are the chain's six edges the six a
# method ranks first?

# %%
chain, chain_pair = load("long-chain")
chain_truth = set(chain.truth.edges)
chain_eap = methods.eap(chain.model, chain_pair)
for label, result in (("EAP", chain_eap), ("EAP-IG", methods.eap_ig(chain.model, chain_pair))):
    top = {edge for edge, _ in result.top(len(chain_truth), absolute=True)}
    print(f"{label}: {len(top & chain_truth)} of the chain's {len(chain_truth)} edges are its top "
          f"{len(chain_truth)} of {len(result.scores)}")

# %% [markdown]
# ### Exercise 9.13: where the gradient stops (answer, easy, about 10 min)
#
# Which edges of the chain does EAP score below the strongest edge *outside* the circuit (a
# distractor's)? Answer with the set of edges, then look at where they sit relative to MLP1.

# %% exercise="traps.gradient_blind"
gradient_blind = None

# %%
check("traps.gradient_blind", gradient_blind)

# %% [markdown]
# Real patching (ACDC, edge noising) and EAP-IG, whose straight path from the corrupted to the
# clean input crosses the clip, rank the whole chain first; so would EAP on a model whose MLP
# were not saturated. On a large graph one saturated unit is enough to push everything
# upstream of it below hundreds of small real effects.
#
# ## 8. Which methods fell in
#
# The leaderboard (`toylab.validate.leaderboard`) scores baselines on the traps with the
# validation harness and says which fell in: a method's *shortfall* is the largest gap, over
# node AUROC, head-level edge AUROC and faithfulness, between the best scored method's figure
# and its own; it **fell in** at 0.2 or more. Each trap's truth predicted it (`expected`).

# %%
board_traps = ("self-repair", "cancellation") if fast() else LESSON_TRAPS  # fast mode: two traps, to keep tests quick
board = leaderboard({name: BASELINES[name] for name in METHODS}, names=[model_name(t) for t in board_traps],
                    seeds=[SEED])
for row in shortfall_rows(board):
    print(f"{row['trap']:>19} {row['method']:>17}: shortfall {row['shortfall']:.2f} on {row['on']:<16} "
          f"{'FELL IN' if row['fell in'] else 'ok':<8} expected: {row['expected'] or '-'}")

# %% [markdown]
# ## What next
#
# No method is safe on every trap, and each failure has a reason you can now name: a total
# effect hides self-repair, noising hides redundancy, a gradient hides saturation (of a softmax
# or of an MLP, and everything upstream of it) and cancellation, a coarse path integral hides a narrow switch, and a unit (a neuron, a channel,
# a whole node) hides a variable that lives along a direction. Before trusting a method on a
# model without a truth, ask which of these its shortcut is open to, and check with the
# intervention it approximates. `toylab leaderboard` writes the full table for every baseline
# and trap; the lab's page "9 Why methods fail" runs any baseline on any trap and seed and
# draws the circuit it finds beside the true one; on `trap-distributed` it also shows where the
# variables live: the IIA of the whole output, of each channel and of the truth's direction.
