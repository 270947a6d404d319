# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.

# %% exercise="patching.patch_resid_pre"
def patch_resid_pre(model, pair, layer, pos):
    name = f"blocks.{layer}.hook_resid_pre"
    _, clean_cache = model.run_with_cache(pair.clean.tokens, names=[name])
    clean = logit_diff(model(pair.clean.tokens), pair)
    corrupted = logit_diff(model(pair.corrupted.tokens), pair)

    def patch(resid, hook):  # resid: [batch, pos, d_model]
        resid = resid.clone()
        resid[:, pos] = clean_cache[name][:, pos]
        return resid

    with model.hooks([(name, patch)]):
        patched = logit_diff(model(pair.corrupted.tokens), pair)
    return float((patched - corrupted) / (clean - corrupted))


# %% exercise="patching.important_heads"
important_heads = {head for head, score in heads.top(8) if score >= 0.1}


# %% exercise="patching.path_patch_k"
from toylab.components import parse


def path_patch_k(model, pair, sender, receiver):
    (_, s_layer, s_head), (_, r_layer, r_head) = parse(sender), parse(receiver)  # "L0H1" -> ("head", 0, 1)
    name = f"blocks.{s_layer}.attn.hook_result"
    _, clean_cache = model.run_with_cache(pair.clean.tokens, names=[name])
    _, corrupted_cache = model.run_with_cache(pair.corrupted.tokens, names=[name])
    delta = clean_cache[name][:, :, s_head] - corrupted_cache[name][:, :, s_head]  # [batch, pos, d_model]
    clean = logit_diff(model(pair.clean.tokens), pair)
    corrupted = logit_diff(model(pair.corrupted.tokens), pair)

    def add(k_input, hook):  # k_input: [batch, pos, head, d_model]
        k_input = k_input.clone()
        k_input[:, :, r_head] += delta
        return k_input

    with model.hooks([(f"blocks.{r_layer}.hook_k_input", add)]):
        patched = logit_diff(model(pair.corrupted.tokens), pair)
    return float((patched - corrupted) / (clean - corrupted))


# %% exercise="patching.senders"
natural = toylab.zoo.load("induction-2l")
natural_pair = natural.task.counterfactual(N, seed=0)
receivers = [f"L1H{h}" for h in range(natural.model.cfg.n_heads)]
senders = {}
for kind in ("k", "v"):
    result = methods.path_patching(natural.model, natural_pair, receivers, kind)
    senders[kind] = {head for head, score in result.top(4) if score > 0.05}
