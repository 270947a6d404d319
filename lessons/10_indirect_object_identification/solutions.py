# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.
# ruff: noqa: F821  (the names these cells use are the lesson's, defined where the cells are spliced in)

# %% exercise="ioi.logit_diff"
def io_s_logit_diff(model, task, tokens):
    v = task.variables(tokens)
    rows = torch.arange(tokens.shape[0])
    at_answer = model(tokens)[rows, v["answer_pos"]]  # [batch, d_vocab_out]: prompts are right-padded
    return at_answer[rows, task.name_token(v["io"])] - at_answer[rows, task.name_token(v["s"])]


# %% exercise="ioi.writers"
ranked = sorted(head_dla, key=head_dla.get)  # most negative first
writers = {"positive": set(ranked[-2:]), "negative": ranked[0]}
print(writers, {h: round(head_dla[h], 2) for h in (*ranked[-3:], *ranked[:2])})

# %% exercise="ioi.name_mover_score"
def name_mover_score(pattern, tokens, task):
    v = task.variables(tokens)
    slots = {slot: torch.tensor([task.positions(int(t))[slot] for t in v["template"]]) for slot in ("X1", "X2")}
    io_pos = torch.where(v["s_position"] == 0, slots["X2"], slots["X1"])  # [batch]: the slot S is not in
    rows = torch.arange(tokens.shape[0])
    return pattern[rows, :, v["answer_pos"], io_pos].mean(0)  # [batch, head] -> [head]


# %% exercise="ioi.patched_heads"
every_head = patching.top(model.cfg.n_layers * model.cfg.n_heads)  # (head, score), best first
patched_heads = {"restore": {h for h, s in every_head if s >= 0.15}, "harm": {h for h, s in every_head if s <= -0.15}}
print(patched_heads)

# %% exercise="ioi.senders"
into_movers_q = methods.path_patching(model, pair, movers, "q")
s_inhibition = into_movers_q.top(1)[0][0]
into_s_inhibition = {receiver_input: methods.path_patching(model, pair, s_inhibition, receiver_input).top(1)[0]
                     for receiver_input in ("q", "k", "v")}
print(s_inhibition, {k: (h, round(s, 3)) for k, (h, s) in into_s_inhibition.items()})
best_input = max(into_s_inhibition, key=lambda k: into_s_inhibition[k][1])
senders = {"movers_q": s_inhibition, "s_inhibition": (into_s_inhibition[best_input][0], best_input)}

# %% exercise="ioi.name_ov"
def name_ov(model, task, layer, head):
    names = task.name_tokens
    attn = model.blocks[layer].attn
    return model.embed.W_E[names] @ attn.W_V[head] @ attn.W_O[head] @ model.unembed.W_U[:, names]


# %% exercise="ioi.copiers"
copiers = {f"L{layer}H{head}" for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)
           if copying_score(name_ov(model, task, layer, head)) >= 0.9}
print(sorted(copiers))

# %% exercise="ioi.compensation"
def compensation(model, pair, primaries, backups):
    clean = methods.direct_logit_attribution(model, pair)
    with methods.ablate(model, list(primaries), "mean", pair.corrupted.tokens):
        knocked = methods.direct_logit_attribution(model, pair)
    gained = sum(knocked[h] - clean[h] for h in backups)
    return gained / sum(clean[h] for h in primaries)


# %% exercise="ioi.takes_over"
quiet = {h for h in head_dla if abs(repair.clean[h]) < 0.1 * repair.clean.metric}  # near 0 in the clean run
takes_over = {"backup": max(quiet, key=changes.get),
              "negative": max((h for h in head_dla if repair.clean[h] < -0.05 * repair.clean.metric), key=changes.get)}
print(takes_over)
