# %% [markdown]
# # Lesson 10: Indirect object identification
#
# "When Mary and John went to the store, John gave a drink to" ... *Mary*. Wang et al. (2022)
# took this task, indirect object identification (IOI), and found the circuit GPT-2 small
# uses for it, 26 heads in seven classes, by path patching. In outline:
#
# - **duplicate-token heads**, at the second mention of the subject S (S2), attend to its
#   first mention (S1) and write that this name is repeated (and where it was);
# - **S-inhibition heads**, at the last position (where the answer is said), attend to S2 and
#   move that information there;
# - **name movers**, at the last position, attend to the names of the first clause; their
#   queries, written by the S-inhibition heads, steer them away from S and onto the indirect
#   object IO, and their OV circuits copy the name they attend to into the logits;
# - **negative name movers** do the same and write *against* the name; **backup name movers**
#   do little, until the name movers are knocked out, and then take over (self-repair).
#
# This lesson follows their method step by step (ARENA 1.4.1 walks the same path on GPT-2)
# on `ioi-siit`: the IOI task in a synthetic vocabulary, and a 4-layer, 4-head attention-only
# transformer into which SIIT trained the circuit, with chosen heads playing each role and
# the other heads trained to be inert. So every step you take, the checker compares with
# the model's ground truth. The metric throughout is Wang et al.'s: the **logit
# difference** between the indirect object and the subject, `logit(IO) - logit(S)`, at the
# position where the answer is said, and the counterfactual is their **ABC** corruption.

# %%
import torch
from fixtures import KNOCKOUT, MODEL, SEED, head_grid

import toylab
from toylab import methods, viz
from toylab.lessons import check, fast
from toylab.methods.circuits import copying_score, ov_circuit
from toylab.tasks import logit_diff
from toylab.tasks.ioi import TEMPLATES

torch.set_grad_enabled(False)
N = 32 if fast() else 256  # ABC pairs per measurement

zm = toylab.zoo.load(MODEL, seed=SEED)  # its card and truth name the heads: keep them closed until the end
model, task = zm.model, zm.task
print(model.cfg)
print(task)
LAYERS = [f"L{layer}" for layer in range(model.cfg.n_layers)]
HEADS = [f"H{head}" for head in range(model.cfg.n_heads)]

# %% [markdown]
# ## 1. The task and the logit difference
#
# A prompt is one of six templates with two names in its first clause (slots `X1` and `X2`),
# a place `P`, an object `O`, and a second clause that repeats one name, the subject `S`.
# Names are tokens `N0` ... `N15`. Both orders occur: ABBA (IO first) and BABA (S first),
# and the templates have different lengths, so neither the answer's slot nor its position
# is fixed. `task.make_batch` builds prompts from indices; `task.positions(template)` says
# where each part of a template sits (token positions, with BOS at 0).

# %%
for i, template in enumerate(TEMPLATES):
    print(i, template, task.positions(i))
templates = torch.tensor([0, 3])  # an ABBA prompt of template 0, a BABA one of template 3
batch = task.make_batch(template=templates, io=torch.tensor([2, 7]), s=torch.tensor([5, 1]),
                        order=torch.tensor([0, 1]), place=torch.tensor([0, 1]), obj=torch.tensor([0, 2]))
logits = model(batch.tokens)  # [batch, pos, d_vocab_out]
for row, template in enumerate(templates.tolist()):
    answer_pos = task.positions(template)["answer"]
    top = int(logits[row, answer_pos].argmax())
    print(" ".join(task.to_str_tokens(batch.tokens[row])), "->", task.to_str_tokens(torch.tensor([top]))[0])

# %% [markdown]
# Prompts are right-padded with `PAD` to the longest template. `task.counterfactual(n, seed)`
# draws clean prompts and their ABC counterfactuals: the second mention of S replaced by a
# third name C, so that no name is repeated and nothing tells IO from S. The pair's targets
# hold IO (clean) and S (the contrast) at the answer position.

# %%
pair = task.counterfactual(N, seed=0)  # kind="abc", Wang et al.'s corruption
print(pair.description)
print("clean    ", " ".join(task.to_str_tokens(pair.clean.tokens[0])))
print("corrupted", " ".join(task.to_str_tokens(pair.corrupted.tokens[0])))
print({k: v[:4].tolist() for k, v in task.variables(pair.clean.tokens).items()})

# %% [markdown]
# ### Exercise 10.1: the logit difference of each prompt (implement, easy, about 10 min)
#
# Write `io_s_logit_diff(model, task, tokens)`: for IOI prompts `tokens` [batch, pos], return
# [batch], each prompt's `logit(IO) - logit(S)` at its answer position. `task.variables(tokens)`
# gives each prompt's `io`, `s` (name indices) and `answer_pos`; `task.name_token(i)` turns a
# name index into its token id.

# %% exercise="ioi.logit_diff"
def io_s_logit_diff(model, task, tokens):
    raise NotImplementedError


# %%
check("ioi.logit_diff", io_s_logit_diff)

# %%
try:
    clean_ld = io_s_logit_diff(model, task, pair.clean.tokens)
    print(f"logit difference on the clean prompts: mean {float(clean_ld.mean()):.2f}, "
          f"min {float(clean_ld.min()):.2f}")
except NotImplementedError:
    print("(finish exercise 10.1 to see each prompt's logit difference)")
print(f"toylab's logit_diff: clean {float(logit_diff(model(pair.clean.tokens), pair)):.2f}, "
      f"ABC {float(logit_diff(model(pair.corrupted.tokens), pair)):.2f}")

# %% [markdown]
# On the ABC prompts the model has no reason to prefer IO over S: the logit difference is
# near 0. Everything below asks which components carry the difference between the two.
#
# ## 2. Direct logit attribution: who writes the answer?
#
# The model is attention-only with no LayerNorm, so its logits are a sum: what the
# embeddings and each head write into the residual stream, times the unembedding. A head's
# **direct effect** is its output at the answer position dotted with `W_U[:, IO] - W_U[:, S]`;
# the direct effects and the biases add up to the logit difference exactly.
# `methods.direct_logit_attribution(model, pair)` computes them all.

# %%
dla = methods.direct_logit_attribution(model, pair)
head_dla = {c: dla[c] for c in dla.components if c.startswith("L")}
print(f"logit difference {dla.metric:.2f} = sum of the direct effects {float(dla.total.sum()):.2f} "
      f"+ unembedding bias {dla.offset:.2f}")
print("largest |direct effect|:", [(c, round(v, 2)) for c, v in dla.top(5)])
viz.heatmap(head_grid(head_dla, model.cfg), LAYERS, HEADS, title="ioi-siit: direct effect of each head",
            cbar_label="logit(IO) - logit(S)", xlabel="head", ylabel="layer")

# %% [markdown]
# ### Exercise 10.2: the heads that write the answer (answer, easy, about 10 min)
#
# Answer with a dict `{"positive": heads, "negative": head}`: the two heads with the largest
# positive direct effect, and the head with the most negative one. (`dla.top` ranks by
# absolute value.)

# %% exercise="ioi.writers"
writers = None  # e.g. {"positive": {"L0H0", "L0H1"}, "negative": "L1H0"}

# %%
check("ioi.writers", writers)

# %% [markdown]
# ## 3. Where the writers look
#
# Direct attribution says who writes, not why. Look at the attention of the heads you found
# from the answer position: a name mover should look at IO in the first clause.
# `task.attention_targets(tokens)` gives, for each IOI head type (`task.detectors`), the key
# position it should attend to from each query.

# %%
_, cache = model.run_with_cache(pair.clean.tokens)
str_tokens = task.to_str_tokens(pair.clean.tokens[0])
targets = task.attention_targets(pair.clean.tokens)
answer_pos = int(task.variables(pair.clean.tokens)["answer_pos"][0])
io_pos = int(targets["name-mover"][0, answer_pos])
writer = max(head_dla, key=head_dla.get)  # the head with the largest direct effect
layer, head = int(writer[1]), int(writer[3:])
viz.attention_pattern(cache["pattern", layer][0, head], str_tokens, title=f"ioi-siit {writer}, first prompt",
                      highlight={(answer_pos, io_pos)})
print(f"{writer} from the answer position ({answer_pos}): "
      f"{float(cache['pattern', layer][0, head, answer_pos, io_pos]):.2f} on IO (position {io_pos})")

# %% [markdown]
# ### Exercise 10.3: the name-mover score (implement, medium, about 15 min)
#
# Write `name_mover_score(pattern, tokens, task)`: `pattern` is one layer's
# [batch, head, query_pos, key_pos] on the prompts `tokens`; return [head], each head's
# attention from the answer position to IO's position in the first clause, averaged over the
# prompts. `task.positions(template)` holds the slots' positions, and `task.variables`
# which slot holds S (`s_position`: 0 for `X1`, 1 for `X2`).

# %% exercise="ioi.name_mover_score"
def name_mover_score(pattern, tokens, task):
    raise NotImplementedError


# %%
check("ioi.name_mover_score", name_mover_score)

# %% [markdown]
# `methods.head_scores(model, tokens, detector, task=task)` scores every head for each of the
# task's detectors: `duplicate-s` (S2 to S1), `s-inhibition` (answer position to S2) and
# `name-mover` (answer position to IO). Outlined: the heads the truth gives that attention role.

# %%
for detector in task.detectors:
    scores = methods.head_scores(model, pair.clean.tokens, detector, task=task)
    print(f"{detector:>13}:", [(h, round(s, 2)) for h, s in scores.top(4)])
    viz.head_heatmap(scores.scores, title=f"ioi-siit: {detector} score",
                     highlight={role.head for role in zm.truth.attention if role.pattern == detector})

# %% [markdown]
# The negative writer attends to IO as much as the name movers do: it reads the same name
# and writes against it. An attention pattern cannot tell the two apart; the direct effect
# can.
#
# ## 4. Activation patching per head
#
# Run the ABC prompts and patch in one head's clean output (`hook_z`, every position): the
# share of the logit difference that comes back is the head's total effect, through every
# path. `methods.activation_patching(model, pair, "head")` does every head.

# %%
patching = methods.activation_patching(model, pair, "head")
print("largest |score|:", [(h, round(s, 2)) for h, s in patching.top(6, absolute=True)])
viz.heatmap(patching.scores, LAYERS, HEADS, title="ioi-siit: head patching (denoise, ABC)", cbar_label="score",
            xlabel="head", ylabel="layer")

# %% [markdown]
# ### Exercise 10.4: which heads matter, and which way? (answer, easy, about 10 min)
#
# Answer with a dict `{"restore": heads, "harm": heads}`: the heads whose patching restores
# at least 15% of the logit difference (score >= 0.15), and those whose patching moves it at
# least 15% the other way (score <= -0.15).

# %% exercise="ioi.patched_heads"
patched_heads = None  # e.g. {"restore": {"L0H0", "L1H0"}, "harm": {"L1H3"}}

# %%
check("ioi.patched_heads", patched_heads)

# %% [markdown]
# Patching also finds heads that write little or nothing directly (compare the direct
# effects of section 2): their effect reaches the logits through later heads. To see that
# chain, narrow the patch to one path.
#
# ## 5. Path patching: tracing the circuit back from the name movers
#
# `methods.path_patching(model, pair, receivers, receiver_input)` patches each sender head's
# clean output into *one* input (`q`, `k` or `v`) of the receivers only (lesson 3). Wang et
# al. start at the name movers' queries: what tells them where to look? Then they path-patch
# into the head they find there, to see what it reads, and through which input.

# %%
movers = sorted(writers["positive"]) if writers else [writer]  # from exercise 10.2
for receiver_input in ("q", "k", "v"):
    into_movers = methods.path_patching(model, pair, movers, receiver_input)
    print(f"into the {receiver_input} of {movers}:", [(h, round(s, 3)) for h, s in into_movers.top(3, absolute=True)])

# %% [markdown]
# ### Exercise 10.5: the senders (answer, medium, about 15 min)
#
# Answer with a dict `{"movers_q": head, "s_inhibition": (head, input)}`: the top sender into
# the name movers' queries (Wang et al.'s S-inhibition head), and the top sender into that
# head together with the input, `"q"`, `"k"` or `"v"`, it arrives through (the
# duplicate-token head). Path-patch into the S-inhibition head's three inputs in turn.

# %% exercise="ioi.senders"
senders = None  # e.g. {"movers_q": "L1H0", "s_inhibition": ("L0H0", "q")}

# %%
check("ioi.senders", senders)

# %%
viz.circuit_graph(model.cfg, zm.truth.edges, show_truth=False, title="ioi-siit: the truth's circuit")

# %% [markdown]
# ## 6. What the name movers write: the OV circuit over names
#
# A name mover copies: attending to a name, it raises that name's logit. Its full OV circuit
# `W_E W_V W_O W_U` (lesson 2, `methods.ov_circuit`) says so from the weights alone; for IOI
# only the names matter, so restrict rows (the token attended to) and columns (the logit) to
# them. `methods.circuits.copying_score` is the share of rows whose largest entry is on the
# diagonal: 1 for a head that copies every name.
#
# ### Exercise 10.6: the OV circuit over names (implement, easy, about 10 min)
#
# Write `name_ov(model, task, layer, head)`: the full OV circuit restricted to names,
# [n_names, n_names], row i the name `task.name_tokens[i]` attended to, column j the logit of
# `task.name_tokens[j]`.

# %% exercise="ioi.name_ov"
def name_ov(model, task, layer, head):
    raise NotImplementedError


# %%
check("ioi.name_ov", name_ov)

# %%
names = task.name_tokens
copying = {f"L{layer}H{head}": copying_score(ov_circuit(model, layer, head)[names][:, names])
           for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)}
viz.head_heatmap(head_grid(copying, model.cfg), title="ioi-siit: copying score over names", highlight=movers)
for head in movers:
    layer, index = int(head[1]), int(head[3:])
    ov = ov_circuit(model, layer, index)[names][:, names]
    print(f"{head}: copying score {copying[head]:.2f}; diagonal {float(ov.diag().mean()):+.2f} on average, "
          f"off the diagonal {float((ov.sum() - ov.diag().sum()) / (ov.numel() - len(names))):+.2f}")

# %% [markdown]
# ### Exercise 10.7: which heads copy names? (answer, easy, about 10 min)
#
# Answer with the set of heads whose copying score over names is at least 0.9. The checker
# tells you what the truth says each of them does.

# %% exercise="ioi.copiers"
copiers = None  # e.g. {"L0H0", "L1H0"}

# %%
check("ioi.copiers", copiers)

# %% [markdown]
# Copying is what a head's weights can do, not what the model uses them for: a head can copy
# names from the embeddings and still write against IO, since what a later head reads at IO's
# position is more than IO's embedding (earlier heads write there too); and a head that copies
# but attends elsewhere does nothing for IOI. Attention, direct effect, copying and patching
# together pin a name mover down; any one alone does not.
#
# ## 7. Self-repair: knocking the name movers out
#
# Wang et al. knocked the name movers out, each replaced by its mean output over the ABC
# distribution, and found that the logit difference fell much less than their direct effect
# said it should: **backup name movers**, quiet while the name movers work, took over.
# Start with one name mover at a time: compare what mean-ablating it costs with its direct
# effect.

# %%
for head in movers:
    with methods.ablate(model, [head], KNOCKOUT, pair.corrupted.tokens):
        knocked = float(logit_diff(model(pair.clean.tokens), pair))
    print(f"{head}: direct effect {dla[head]:.2f}; mean-ablating it costs {dla.metric - knocked:.2f} "
          f"of the logit difference {dla.metric:.2f}")

# %% [markdown]
# Each costs less than it writes: ablating one head at a time underestimates the name
# movers, because the rest of the model answers for them. `methods.self_repair(model,
# pair, primaries, backups, knockout="mean")` measures every component's direct effect in the
# clean run and with the primaries knocked out.
#
# ### Exercise 10.8: the compensation (implement, medium, about 15 min)
#
# Write `compensation(model, pair, primaries, backups)`: knock the `primaries` out with
# their mean over `pair.corrupted.tokens` (`methods.ablate(model, primaries, "mean",
# pair.corrupted.tokens)`), and return, as a float, (the backups' summed direct effect
# knocked out - clean) / the primaries' summed direct effect clean: the share of what the
# primaries wrote that the backups write back. `methods.direct_logit_attribution` gives the
# direct effects; run it inside the `with` block for the knocked-out ones.

# %% exercise="ioi.compensation"
def compensation(model, pair, primaries, backups):
    raise NotImplementedError


# %%
check("ioi.compensation", compensation)

# %%
repair = methods.self_repair(model, pair, movers, [h for h in head_dla if h not in movers], knockout=KNOCKOUT)
changes = {h: repair.knocked_out[h] - repair.clean[h] for h in head_dla}
print(f"logit difference {repair.clean.metric:.2f} clean, {repair.knocked_out.metric:.2f} with {movers} "
      f"knocked out; their direct effect was {repair.primaries_clean:.2f}")
for h in sorted(changes, key=lambda h: -abs(changes[h]))[:5]:
    print(f"  {h}: direct effect {repair.clean[h]:+.2f} clean, {repair.knocked_out[h]:+.2f} knocked out")
viz.heatmap(head_grid(changes, model.cfg), LAYERS, HEADS, title="change in direct effect, name movers knocked out",
            cbar_label="knocked out - clean", xlabel="head", ylabel="layer")

# %% [markdown]
# ### Exercise 10.9: who takes over? (answer, easy, about 10 min)
#
# Two heads write more for the answer once the name movers are gone. Answer with a dict
# `{"backup": head, "negative": head}`: the head that is quiet in the clean run (a direct
# effect near 0) and writes for IO once the name movers are knocked out, and the head whose
# direct effect rises because it stops writing against IO.

# %% exercise="ioi.takes_over"
takes_over = None  # e.g. {"backup": "L2H1", "negative": "L1H0"}

# %%
check("ioi.takes_over", takes_over)

# %%
if takes_over:
    for knockout in (KNOCKOUT, "resample"):
        print(methods.self_repair(model, pair, movers, [takes_over["backup"]], knockout=knockout).summary())
else:
    print("(finish exercise 10.9 to measure what the backup writes back)")

# %% [markdown]
# The mean knockout costs well under the name movers' direct effect: the backup writes part
# of it back, and the negative name mover writes less against IO. A method that ranks heads by
# what ablating them costs ranks the name movers too low (lesson 9's self-repair trap, grown
# into a circuit). The second line knocks out with `knockout="resample"`: each row takes the
# name movers' output on its own ABC prompt, whose first clause holds the same two names, so
# what they write there still carries this prompt's names, where the mean over the ABC
# distribution carries none. Which knockout answers your question is part of the question.
#
# ## What the truth says
#
# The truth lists each node's role, the edges identified on the weights, the attention roles
# and the claims you tested; the certificate recorded when the model was trained
# (`zm.truth.certificate`) measured each on 512 pairs of its own (`zm.certify()` recomputes it).

# %%
print(zm.truth.summary())
certificate = zm.truth.certificate
if certificate:
    print(f"\nrecorded certificate: {'PASSED' if certificate['passed'] else 'FAILED'}, faithfulness "
          f"{certificate['faithfulness']:.3f}, completeness {certificate['completeness']:.3f}")
    for c in certificate["checks"]:
        if any(word in c["name"] for word in ("score of", "interchange", "self-repair", "negative")):
            print(" ", methods.Check(c["name"], c["value"], c["op"], c["threshold"],
                                     tuple(c["interval"]) if c["interval"] else None))

# %% [markdown]
# ## What next
#
# You have retraced Wang et al.'s circuit, each step checked against a known answer: the
# logit difference, direct attribution to the name movers and the negative name mover,
# their attention on IO, path patching back to the S-inhibition and duplicate-token heads,
# copying in the OV circuits, and self-repair when the name movers are knocked out. The lab's
# page "10 Indirect object identification" runs the same functions on a prompt you build:
# pick a template and names, see the answer and the direct effects, path-patch into any
# heads, and knock the name movers out.
