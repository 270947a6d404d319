# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.

# %% exercise="probes.trace_mlp"
def restored_probability(model, batch, noise, layer, pos):
    name = f"blocks.{layer}.hook_mlp_out"
    _, clean = model.run_with_cache(batch.tokens, names=[name])

    def corrupt(embed, hook):  # embed: [batch, pos, d_model]
        embed = embed.clone()
        embed[:, 2] = embed[:, 2] + noise[:, 0]
        return embed

    def restore(out, hook):  # out: [batch, pos, d_model]
        out = out.clone()
        out[:, pos] = clean[name][:, pos]
        return out

    with model.hooks([("hook_embed", corrupt), (name, restore)]):
        probs = model(batch.tokens)[:, 3].softmax(-1)  # [batch, vocab]
    return float(probs.gather(-1, batch.targets[:, 3:4]).mean())


# %% exercise="probes.fact_store"
fact_store = trace.peak("mlp_out")


# %% exercise="probes.control_labels"
def control_labels(labels, types, seed):
    unique, inverse = types.unique(return_inverse=True)  # [type], [batch]
    g = torch.Generator().manual_seed(seed)
    draw = torch.randint(len(labels), (len(unique),), generator=g)  # a random example's label per type
    return labels[draw][inverse]


# %% exercise="probes.used_sites"
used_sites = {site for site in candidates
              if methods.interchange_accuracy(model, algorithm, "attribute", site).accuracy >= 0.9}
