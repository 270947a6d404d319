# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.

# %% exercise="sae.topk_encode"
def topk_encode(x, W_enc, b_enc, b_dec, k):
    pre = (x - b_dec) @ W_enc + b_enc  # [batch, d_sae]
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


# %% exercise="sae.mmcs"
def mmcs(features, decoder):
    f = features / features.norm(dim=-1, keepdim=True)
    d = decoder / decoder.norm(dim=-1, keepdim=True)
    return float((f @ d.T).max(dim=1).values.mean())


# %% exercise="sae.recover"
sae = SAE(SAEConfig(d_in=32, d_sae=256, architecture="topk", k=4, seed=0))
train_sae(sae, data.sample, steps=1500, batch_size=256, lr=3e-3, seed=0, resample_every=500)
print(score_sae(sae, data.features, x, c))


# %% exercise="sae.toy_features"
toy_sae = SAE(SAEConfig(d_in=10, d_sae=40, architecture="topk", k=2, seed=0))
train_sae(toy_sae, toy_activations, steps=1500, batch_size=256, lr=3e-3, seed=0, resample_every=250)
toy_x, toy_c = toy_activations(8192, torch.Generator().manual_seed(2))
toy_scores = score_sae(toy_sae, true_directions, toy_x, toy_c)
print("MMCS", round(toy_scores.mmcs, 3), "F1", round(toy_scores.f1, 3))
toy_answer = (toy_sae, list(toy_scores.matched_latent))
