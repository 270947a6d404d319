# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.

# %% exercise="tour.resid_after_layer0"
def resid_after_layer0(cache):
    resid = cache["hook_embed"] + cache["hook_pos_embed"] + cache["blocks.0.hook_attn_out"]
    if "blocks.0.hook_mlp_out" in cache:
        resid = resid + cache["blocks.0.hook_mlp_out"]
    return resid


# %% exercise="tour.head_output"
def head_output(model, cache, layer, head):
    z = cache[f"blocks.{layer}.attn.hook_z"][:, :, head]  # [batch, pos, d_head]
    return z @ model.blocks[layer].attn.W_O[head]  # [batch, pos, d_model]


# %% exercise="tour.most_important_head"
def loss_without(layer, head):
    with siit.model.hooks([(f"blocks.{layer}.attn.hook_z", zero_head(head))]):
        return float(toylab.tasks.loss(siit.model(siit_batch.tokens), siit_batch))


siit_batch = siit.task.sample(N, seed=0)
cfg = siit.model.cfg
losses = {f"L{layer}H{head}": loss_without(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)}
print(losses)
most_important_head = max(losses, key=losses.get)
