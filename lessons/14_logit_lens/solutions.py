# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.
# ruff: noqa: F821  (the names these cells use are the lesson's, defined where the cells are spliced in)

# %% exercise="lens.decode"
def lens_logits(model, tokens, hook):
    _, cache = model.run_with_cache(tokens, names=[hook])
    return model.unembed(model.ln_final(cache[hook]))  # ln_final computes the scale of this stream: [batch, pos, vocab]


# %% exercise="lens.stage"
stages = {name: next(label for label, accuracy in zip(lens_.stages, lens_.accuracy.tolist()) if accuracy >= DECODABLE)
          for name, lens_ in lenses.items()}
before_layer_1 = subject_lens.stages[:subject_lens.stages.index("resid_pre 1") + 1]  # every stage up to resid_pre 1
stages["attribute_at_subject"] = any(subject_lens[label]["accuracy"] >= DECODABLE for label in before_layer_1)
print(stages)

# %% exercise="lens.dla"
def residual_terms(model, tokens):
    cfg = model.cfg
    names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{layer}.attn.hook_result" for layer in range(cfg.n_layers)]
    names += [] if cfg.attn_only else [f"blocks.{layer}.hook_mlp_out" for layer in range(cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names=names)
    labels, terms = ["embed", "pos_embed"], [cache["hook_embed"], cache["hook_pos_embed"]]  # each [batch, pos, d_model]
    bias = sum(block.attn.b_O for block in model.blocks)  # [d_model]
    for layer in range(cfg.n_layers):
        result = cache[f"blocks.{layer}.attn.hook_result"]  # [batch, pos, head, d_model]
        for head in range(cfg.n_heads):
            labels.append(f"L{layer}H{head}")
            terms.append(result[:, :, head])
    for layer in range(0 if cfg.attn_only else cfg.n_layers):
        b_out = model.blocks[layer].mlp.b_out
        labels.append(f"MLP{layer}")
        terms.append(cache[f"blocks.{layer}.hook_mlp_out"] - b_out)  # its bias goes to "bias"
        bias = bias + b_out
    labels.append("bias")
    terms.append(bias.expand_as(terms[0]))
    return labels, torch.stack(terms)  # [component, batch, pos, d_model]


def dla_by_hand(model, pair):
    labels, stack = residual_terms(model, pair.clean.tokens)
    direction, mask = answer_direction(model, pair)  # [batch, pos, d_model], [batch, pos]
    attribution = (stack * direction).sum(-1)  # [component, batch, pos]
    return dict(zip(labels, attribution[:, mask].mean(-1).tolist()))


# %% exercise="lens.sources"
def sources(model, pair, layer, head):
    direction, mask = answer_direction(model, pair)
    names = [f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_v"]
    _, cache = model.run_with_cache(pair.clean.tokens, names=names)
    pattern = cache[names[0]][:, head]  # [batch, query_pos, key_pos]
    written = cache[names[1]][:, :, head] @ model.blocks[layer].attn.W_O[head]  # [batch, key_pos, d_model]
    per_query = torch.einsum("bqk,bkm,bqm->bqk", pattern, written, direction)  # [batch, query_pos, key_pos]
    weight = mask.float()[..., None]  # [batch, query_pos, 1]
    return (per_query * weight).sum(1) / weight.sum(1)  # [batch, key_pos]; NaN for a row with nothing scored


# %% exercise="lens.layernorm"
def dla_frozen(model, pair):
    labels, stack = residual_terms(model, pair.clean.tokens)  # [component, batch, pos, d_model]
    _, cache = model.run_with_cache(pair.clean.tokens, names=["ln_final.hook_scale"])
    scale = cache["ln_final.hook_scale"]  # [batch, pos, 1]: the actual stream's, held fixed
    normed = (stack - stack.mean(-1, keepdim=True)) / scale * model.ln_final.w
    direction, mask = answer_direction(model, pair)
    return dict(zip(labels, (normed * direction).sum(-1)[:, mask].mean(-1).tolist()))


# %% exercise="lens.direct"
truth_check = {}
for name, z in zoo_models.items():
    parts = circuit_components(z.truth)
    direct = {c for c in parts if abs(dlas[name][c]) >= 0.05 * abs(dlas[name].metric)}
    truth_check[name] = {"direct": direct, "indirect": parts - direct}
truth_check[RECALL]["source"] = recall_source  # section 4: where L1H1 reads its attribution
writer = max(ioi_heads, key=lambda h: dlas[IOI][h])  # the largest direct writer of ioi-siit
truth_check[IOI]["source"] = "IO" if from_io[ioi_heads.index(writer)] > 0.5 else "S"
print(truth_check)
