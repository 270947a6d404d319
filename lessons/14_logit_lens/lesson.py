# %% [markdown]
# # Lesson 14: The logit lens and direct logit attribution
#
# The residual stream is a sum: the embeddings, then every head's and every MLP's output,
# added one after another. The model reads its answer off the end of it with one linear map,
# the unembedding `W_U` (after a LayerNorm, in most models). Two cheap tools use that.
#
# - The **logit lens** (nostalgebraist 2020) decodes the stream at an earlier stage with the
#   same final LayerNorm and unembedding, as if the remaining layers were skipped: where in
#   the network does the answer appear?
# - **Direct logit attribution**, DLA (Elhage et al. 2021; ARENA 1.2), splits the final stream
#   into its terms and projects each on the answer's direction: which component writes the
#   answer, and from which position did a head read it?
#
# Both read only the direct path to the logits. Here every model has a known circuit, so we
# can check what they say, and see what they cannot: a component that matters only through
# others, or information that is there but not in a direction the unembedding reads. And one
# trap: with LayerNorm, the terms add up to the logit only if its scale is frozen.

# %%
import torch
from fixtures import (
    DECODABLE,
    IOI,
    MODEL,
    MODELS,
    N_PAIRS,
    N_PROMPTS,
    RECALL,
    answer_direction,
    circuit_components,
    layernorm_model,
)

import toylab
from toylab import methods, viz
from toylab.lessons import check
from toylab.tasks import Batch, logit_diff

torch.set_grad_enabled(False)

zm = toylab.zoo.load(MODEL)  # induction-siit: its truth names the heads; keep it closed until section 6
model, task = zm.model, zm.task
print(model.cfg)
print(task)

# %% [markdown]
# ## 1. The logit lens
#
# `methods.logit_lens` decodes the stream at each **stage**: `blocks.{l}.hook_resid_pre` of
# every layer (and `hook_resid_mid` where an MLP follows the attention), then the final
# `hook_resid_post`. The last stage is the model itself. Decoding means what the model does
# to its final stream: `model.ln_final` (here the identity: the zoo's models have no
# LayerNorm, but section 5 builds one that does), then `model.unembed` (`x @ W_U + b_U`).
#
# ### Exercise 14.1: decode one stage (implement, easy, about 10 min)
#
# Write `lens_logits(model, tokens, hook)`: the logits [batch, pos, d_vocab_out] that the
# stream at `hook` decodes to. Apply `ln_final` as a function of *that* stream (its own mean
# and scale), never the final stream's: the lens asks what the model would say if it stopped
# here.

# %% exercise="lens.decode"
def lens_logits(model, tokens, hook):
    raise NotImplementedError


# %%
check("lens.decode", lens_logits)

# %% [markdown]
# `methods.logit_lens(model, batch)` does this at every stage and scores each on the batch's
# targets: loss, accuracy, and per position. For one prompt, a map of stages against
# positions: the colour is the log-probability of the right next token (blank where nothing
# is scored: the first, random half of the sequence), the text what each stage decodes to.

# %%
batch = task.sample(N_PROMPTS, seed=0)
lens = methods.logit_lens(model, batch)
for label, loss, accuracy in zip(lens.stages, lens.loss.tolist(), lens.accuracy.tolist()):
    print(f"{label:>13}: loss {loss:.3f}, accuracy {accuracy:.3f}")

one = Batch(batch.tokens[:1], batch.targets[:1])
one_lens = methods.logit_lens(model, one)
_, cache = model.run_with_cache(one.tokens, names=one_lens.hooks)
top = [[task.token_names[int(t)] for t in model.unembed(model.ln_final(cache[hook]))[0].argmax(-1)]
       for hook in one_lens.hooks]
viz.logit_lens_plot(one_lens.position_logprob, one_lens.stages, task.to_str_tokens(one.tokens[0]), top_tokens=top,
                    title=f"{MODEL}: the logit lens of one prompt")

# %% [markdown]
# Before layer 1 the stream holds the current token and, from layer 0, the previous one: no
# stage before the last can look back to the earlier occurrence of the segment, and the lens
# is at chance there (it mostly decodes the current token).
#
# ## 2. Where the answer appears
#
# The same lens on three models: `factual-recall` (`[BOS, relation, subject, =] -> attribute`,
# with MLPs) and `ioi-siit` (indirect object identification, 4 layers) besides
# `induction-siit`.

# %%
zoo_models = {name: toylab.zoo.load(name) for name in MODELS}
print(f"decodable: an accuracy of at least {DECODABLE}")
lenses = {}
for name, z in zoo_models.items():
    lenses[name] = methods.logit_lens(z.model, z.task.sample(N_PROMPTS, seed=0))
    print(name)
    for label, accuracy in zip(lenses[name].stages, lenses[name].accuracy.tolist()):
        print(f"   {label:>13}: accuracy {accuracy:.3f}")

# %% [markdown]
# `factual-recall` looks its facts up at the subject position (lesson 8 found that by causal
# tracing). Is the attribute readable there by the lens? Score the lens with the answer as
# the target at the *subject* position instead of at "=":

# %%
recall = zoo_models[RECALL]
facts = recall.task.sample(N_PROMPTS, seed=0)
subject = recall.task.positions["subject"]
at_subject = torch.full_like(facts.targets, -1)  # -1: not scored
at_subject[:, subject] = facts.targets[:, recall.task.positions["answer"]]
subject_lens = methods.logit_lens(recall.model, Batch(facts.tokens, at_subject))
for label, accuracy in zip(subject_lens.stages, subject_lens.accuracy.tolist()):
    print(f"the attribute decoded at the subject, {label:>13}: accuracy {accuracy:.3f}")

# %% [markdown]
# ### Exercise 14.2: where does the answer appear? (answer, easy, about 10 min)
#
# Answer with a dict: for each of the three models (`"induction-siit"`, `"factual-recall"`,
# `"ioi-siit"`), the **first** stage at which the lens decodes the answer, an accuracy of at
# least `DECODABLE` (0.9), as a label of `lens.stages` (such as `"resid_mid 0"`); and under
# `"attribute_at_subject"`, `True` or `False`: does the lens decode the attribute at the
# subject position at any stage before layer 1's attention reads it (`resid_pre 1` or
# earlier), with the same bar?

# %% exercise="lens.stage"
stages = None  # e.g. {"induction-siit": "resid_pre 0", "factual-recall": "resid_pre 0", "ioi-siit": "resid_pre 0", "attribute_at_subject": True}

# %%
check("lens.stage", stages)

# %% [markdown]
# The lens finds the answer right after the component that writes it, and not before. But it
# did not find the attribute at the subject, where causal tracing (lesson 8) finds the fact
# and the truth says MLP0 writes it: there it is stored in a basis the unembedding does not
# read, and L1H1's OV circuit turns it into one that it does when moving it to "=". A lens
# that decodes nothing at a stage is no evidence that the stage holds nothing (a probe
# trained for the stage, the "tuned lens", would read more).
#
# ## 3. Direct logit attribution
#
# Without LayerNorm the logits are `resid_post @ W_U + b_U`, and the final stream is a sum of
# terms, so the logit difference between the answer and a counterfactual answer is a sum too:
#
# `logit(answer) - logit(counter) = sum over terms t of  t . (W_U[:, answer] - W_U[:, counter])  +  (b_U[answer] - b_U[counter])`
#
# The terms, as `methods.direct_logit_attribution` names them: `embed` (`hook_embed`),
# `pos_embed` (`hook_pos_embed`), each head `L{l}H{h}` (its slice of
# `blocks.{l}.attn.hook_result`, [batch, pos, head, d_model], which has no bias), each
# `MLP{l}` (`blocks.{l}.hook_mlp_out` without its bias `b_out`) and `bias`: every `b_O` and
# every `b_out`, summed. `answer_direction(model, pair)` (from the fixtures) gives the
# direction at each position, [batch, pos, d_model], and the mask of the positions scored
# (both answers given and different), [batch, pos].
#
# ### Exercise 14.3: DLA by hand (implement, medium, about 20 min)
#
# Write `residual_terms(model, tokens)`, returning the component labels (in the order above)
# and the terms stacked, [component, batch, pos, d_model], which sum to the final
# `resid_post`; then `dla_by_hand(model, pair)`: a dict `{component: attribution}`, each
# term's projection on the answer direction averaged over every scored (row, position) of
# `pair.clean`. Only the checker's `dla_by_hand` is checked; section 5 uses both.

# %% exercise="lens.dla"
def residual_terms(model, tokens):
    raise NotImplementedError


def dla_by_hand(model, pair):
    raise NotImplementedError


# %%
check("lens.dla", dla_by_hand)

# %%
dlas = {}
for name, z in zoo_models.items():
    pair = z.task.counterfactual(N_PAIRS, seed=0)
    dlas[name] = methods.direct_logit_attribution(z.model, pair)
    measured = float(logit_diff(z.model(pair.clean.tokens), pair))
    print(f"{name}: terms sum to {float(dlas[name].total.sum()):.4f}, + offset (b_U) {dlas[name].offset:.4f} = "
          f"{float(dlas[name].total.sum()) + dlas[name].offset:.4f}; the logit difference is {measured:.4f}")
    print("   top:", [(c, round(v, 2)) for c, v in dlas[name].top(4)])
viz.dla_plot({"direct attribution": dlas[RECALL].total}, dlas[RECALL].components,
             title=f"{RECALL}: direct logit attribution, {N_PAIRS} pairs")

# %% [markdown]
# Exact, and cheap: one forward pass. Note what it is not: the effect of removing a
# component. A component whose output is read by a later head changes that head's output,
# and none of that is counted as its own. Section 6 comes back to it.
#
# ## 4. Per head and per source position
#
# A head's output at query position q is a mix of what it read at each key position k:
# `result[q] = sum_k pattern[q, k] * (v[k] @ W_O)` (`v` from `hook_v`, [batch, pos, head,
# d_head], bias included). Projected on the answer direction at q, each key's term is what
# that position contributed to the head's direct effect.
#
# ### Exercise 14.4: where a head's direct effect comes from (implement, hard, about 20 min)
#
# Write `sources(model, pair, layer, head)`: [batch, key_pos], for each row the head's direct
# attribution split by key position, averaged over the row's scored query positions (rows
# with none may hold NaN or 0). Each row then sums to the head's `per_row` attribution in
# `methods.direct_logit_attribution`.

# %% exercise="lens.sources"
def sources(model, pair, layer, head):
    raise NotImplementedError


# %%
check("lens.sources", sources)

# %%
ioi = zoo_models[IOI]
ioi_pair = ioi.task.counterfactual(N_PAIRS, seed=0)
variables = ioi.task.variables(ioi_pair.clean.tokens)
io_token = ioi.task.name_token(variables["io"])  # [batch]: the indirect object's token
ioi_heads = [f"L{layer}H{head}" for layer in range(ioi.model.cfg.n_layers) for head in range(ioi.model.cfg.n_heads)]
try:
    split = torch.stack([sources(ioi.model, ioi_pair, int(h[1]), int(h[3:])) for h in ioi_heads])  # [head, batch, key]
    is_io = ioi_pair.clean.tokens == io_token[:, None]  # [batch, pos]: where IO stands
    from_io = (split * is_io).sum(-1).mean(-1) / split.sum(-1).mean(-1)  # [head]
    for h, share, total in zip(ioi_heads, from_io.tolist(), split.sum(-1).mean(-1).tolist()):
        if abs(total) > 0.05 * dlas[IOI].metric:
            share = share if abs(share) >= 0.005 else 0.0
            print(f"{IOI} {h}: direct attribution {total:.2f}, of which {share:.0%} read from the IO token")
    row = split[:, 0]  # the first prompt, [head, key_pos]
    viz.source_plot(row, ioi_heads, ioi.task.to_str_tokens(ioi_pair.clean.tokens[0]),
                    title=f"{IOI}: each head's direct attribution by the position it reads, first prompt")
    recall_pair = recall.task.counterfactual(N_PAIRS, seed=0)
    scored_rows = answer_direction(recall.model, recall_pair)[1].any(1)  # [batch]: rows whose two answers differ
    mover = sources(recall.model, recall_pair, 1, 1)[scored_rows].mean(0)  # [key_pos]
    position_names = {index: part for part, index in recall.task.positions.items()}
    recall_source = position_names[int(mover.abs().argmax())]
    print(f"{RECALL} L1H1 by position read:", {position_names[i]: round(v, 2) for i, v in enumerate(mover.tolist())})
except NotImplementedError:
    print("(finish exercise 14.4 to split the heads' attribution by position)")

# %% [markdown]
# ## 5. LayerNorm: freeze its scale
#
# Most transformers put a LayerNorm before the unembedding: `ln_final(x) = (x - mean(x)) /
# scale(x) * w + b`, with `scale(x) = sqrt(mean((x - mean(x))^2) + eps)` computed from the
# whole stream. Centring is linear; dividing by the scale is not. DLA uses the scale of the
# *actual* final stream, read from the run (`ln_final.hook_scale`, [batch, pos, 1]) and then
# held fixed: each term is centred, divided by that scale and multiplied by `w`; the terms
# then sum exactly to `ln_final(x) - b`, and `b` goes to the offset with `b_U`. This is
# TransformerLens's `apply_ln_to_stack`.
#
# The zoo has no model with LayerNorm, so the fixtures make one: `layernorm_model(MODEL)` is
# `induction-siit` with a LayerNorm before each attention and before the unembedding, each
# set from the zoo model's own stream (gain: the stream's mean scale; bias: its mean), so
# that it still does the task. It has no certificate of its own.

# %%
ln_model = layernorm_model(MODEL)
ln_pair = task.counterfactual(N_PAIRS, seed=0)
print(f"with LayerNorm: accuracy {float(methods.logit_lens(ln_model, batch).accuracy[-1]):.3f}, "
      f"logit difference {float(logit_diff(ln_model(ln_pair.clean.tokens), ln_pair)):.3f}")

# %% [markdown]
# ### Exercise 14.5: DLA through a frozen LayerNorm (implement, medium, about 15 min)
#
# Write `dla_frozen(model, pair)`: like `dla_by_hand`, for a model with a LayerNorm before
# the unembedding, with its scale frozen as above (`model.ln_final.w`, `model.ln_final.b`;
# the scale from `ln_final.hook_scale`). The same components; the terms must sum to the
# logit difference minus the offset, `b_U`'s and `ln_final.b`'s part.

# %% exercise="lens.layernorm"
def dla_frozen(model, pair):
    raise NotImplementedError


# %%
check("lens.layernorm", dla_frozen)

# %% [markdown]
# The tempting alternative: push each term through `ln_final` on its own, as if it were the
# stream. Each term then gets its own scale, and a small term is blown up to the size of the
# whole stream:

# %%
frozen = methods.direct_logit_attribution(ln_model, ln_pair)
layers = range(ln_model.cfg.n_layers)  # attention only: the terms are the embeddings, the heads and the biases
names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{layer}.attn.hook_result" for layer in layers]
_, ln_cache = ln_model.run_with_cache(ln_pair.clean.tokens, names=names)
terms = [ln_cache["hook_embed"], ln_cache["hook_pos_embed"]]
terms += [head_out for layer in layers for head_out in ln_cache[f"blocks.{layer}.attn.hook_result"].unbind(2)]
terms.append(sum(block.attn.b_O for block in ln_model.blocks).expand_as(terms[0]))
direction, mask = answer_direction(ln_model, ln_pair)
ln = ln_model.ln_final
each_own_scale = [float(((ln(term) - ln.b) * direction).sum(-1)[mask].mean()) for term in terms]  # [component]
print(f"logit difference {frozen.metric:.3f} = frozen terms {float(frozen.total.sum()):.3f} + offset {frozen.offset:.3f}; "
      f"terms each through ln_final: {sum(each_own_scale):.3f}")
viz.dla_plot({"scale frozen": frozen.total, "each term's own scale": each_own_scale}, frozen.components,
             title="induction-siit with LayerNorm: two ways to attribute through ln_final")

# %% [markdown]
# With each term's own scale the terms no longer add up to the logit difference, and the
# heads that write almost nothing (a small term, divided by its own small scale) get as
# large as the real writer's. Freezing the scale is a choice: it attributes to each
# component its share of the stream *as the model normalised it*, which is what makes the
# decomposition exact. (Attribution graphs, lesson 13, freeze it for the same reason.)
#
# ## 6. Direct and indirect
#
# DLA says who writes the answer. A circuit also has components that never write it: they
# act through others, and DLA gives them about nothing.
#
# ### Exercise 14.6: the truth check (answer, medium, about 10 min)
#
# For each model of `MODELS`, the truth's components are `circuit_components(z.truth)` (from
# the fixtures; the truth's nodes without the embeddings and the logits). Split them in two:
# `"direct"`, those whose direct attribution (section 3's `dlas`) is at least 5% of the
# model's logit difference in absolute value, and `"indirect"`, the others. For
# `factual-recall` and `ioi-siit` add `"source"`: where the head with the largest direct
# attribution reads it from (section 4), as a name: for `factual-recall` a key of
# `task.positions` (`"bos"`, `"relation"`, `"subject"`, `"answer"`), for `ioi-siit` `"IO"` or
# `"S"` (the indirect object's token or the subject's).

# %%
for name, z in zoo_models.items():
    print(f"{name}: the truth's components {sorted(circuit_components(z.truth))}; logit difference "
          f"{dlas[name].metric:.2f}; their direct attribution",
          {c: round(dlas[name][c], 2) for c in sorted(circuit_components(z.truth))})

# %% exercise="lens.direct"
truth_check = None  # e.g. {"induction-siit": {"direct": {"L0H0"}, "indirect": {"L1H0"}}, "factual-recall": {"direct": set(), "indirect": set(), "source": "bos"}, "ioi-siit": {"direct": set(), "indirect": set(), "source": "S"}}

# %%
check("lens.direct", truth_check)

# %% [markdown]
# The previous-token head of `induction-siit` (what K-composition feeds, lesson 2), the
# relation mover and the fact store of `factual-recall`, the duplicate-token head of
# `ioi-siit`: each is necessary, and each attributes about nothing directly. DLA finds the
# last step of a circuit; patching (lesson 3) finds the rest. And the sign matters: the
# negative name mover writes against the answer, directly.
#
# ## What the truth says

# %%
for name, z in zoo_models.items():
    print(f"{name}: {z.truth.summary()}\n")

# %% [markdown]
# ## What next
#
# You have decoded the residual stream stage by stage, split the logit difference into
# components exactly, split a head's share by the position it reads, and seen why a
# LayerNorm's scale must be frozen for the split to add up. The lab's page "14 Logit lens
# and DLA" runs the same functions on any zoo model and prompt, with or without a LayerNorm
# inserted, the truth's components outlined.
