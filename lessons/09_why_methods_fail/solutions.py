# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.

# %% exercise="traps.self_repair"
repair_heads = [node for node in repair.truth.nodes if node.startswith("L")]  # the heads the circuit runs through
share = dict(zip(ablation.components, (ablation.effect / repair_gap).tolist()))
inert = min(repair_heads, key=lambda h: abs(share[h]))
f = Faithfulness(repair.model, repair_pair)
others = [h for h in ablation.components if h.startswith("L") and h != inert]
left = {h: f(edges_without(repair.model.cfg, [inert, h])) for h in others}  # share left with both ablated
self_repair = {"inert": inert, "repairs": min(left, key=left.get)}
print(self_repair, {h: round(v, 3) for h, v in left.items()})

# %% exercise="traps.direct_effect"
def head_output_hook(head):
    """(hook name, head index) where head ``L{l}H{h}`` writes its output."""
    layer, index = (int(part) for part in head[1:].split("H"))
    return f"blocks.{layer}.attn.hook_result", index


def direct_effect(model, pair, head, ablated=()):
    _, corrupted = model.run_with_cache(pair.corrupted.tokens)
    hooks = []
    for other in ablated:
        name, index = head_output_hook(other)

        def swap(x, hook, name=name, index=index):  # x: [batch, pos, head, d_model]
            x = x.clone()
            x[:, :, index] = corrupted[name][:, :, index]
            return x

        hooks.append((name, swap))
    with model.hooks(hooks):
        _, cache = model.run_with_cache(pair.clean.tokens)  # the cache records what the hooks return
    name, index = head_output_hook(head)
    return float(logit_diff(cache[name][:, :, index] @ model.unembed.W_U, pair))


# %% exercise="traps.denoise_edge"
def sender_output(cache, node):
    """[batch, pos, d_model]: what ``node`` writes to the residual stream, read from a cache."""
    if node == "embed":
        return cache["hook_embed"]
    if node.startswith("MLP"):
        return cache[f"blocks.{node[3:]}.hook_mlp_out"]
    name, index = head_output_hook(node)
    return cache[name][:, :, index]


def receiver_input(cfg, node, kind):
    """(hook name, head index or None) where ``node`` reads its ``kind`` input."""
    if node == "logits":
        return f"blocks.{cfg.n_layers - 1}.hook_resid_post", None
    if node.startswith("MLP"):
        return f"blocks.{node[3:]}.hook_mlp_in", None
    layer, index = (int(part) for part in node[1:].split("H"))
    return f"blocks.{layer}.hook_{kind}_input", index


def denoise_edge(model, pair, edge):
    logits, clean = model.run_with_cache(pair.clean.tokens)
    m_clean = logit_diff(logits, pair)
    logits, corrupted = model.run_with_cache(pair.corrupted.tokens)
    m_corr = logit_diff(logits, pair)
    delta = sender_output(clean, edge.sender) - sender_output(corrupted, edge.sender)  # [batch, pos, d_model]
    name, index = receiver_input(model.cfg, edge.receiver, edge.kind)

    def restore(x, hook):  # only this receiver's input sees the sender's clean output
        x = x.clone()
        if index is None:
            x += delta
        else:
            x[:, :, index] += delta
        return x

    with model.hooks([(name, restore)]):
        m = logit_diff(model(pair.corrupted.tokens), pair)
    return float((m - m_corr) / (m_clean - m_corr))


# %% exercise="traps.together"
or_faith = Faithfulness(orgate.model, or_pair)
everything = set(toylab.components.edges(orgate.model.cfg))
path_a, path_b = orgate.truth.trap.paths
together = (path_a[-1], path_b[-1])  # one edge from each path: the OR needs both inputs off
print(f"noising {[str(e) for e in together]} together leaves {or_faith(everything - set(together)):.3f}; "
      f"each alone leaves {[round(or_faith(everything - {e}), 3) for e in together]}")

# %% exercise="traps.understated_edges"
understated_edges = {e for e in saturated.truth.edges if abs(sat_eap[e]) < 0.05 and abs(sat_real[e]) > 0.5}

# %% exercise="traps.q_edge_fixed"
def q_edge_fixed(model, pair, sender, receiver):
    layer, index = (int(part) for part in receiver[1:].split("H"))
    pattern = f"blocks.{layer}.attn.hook_pattern"
    _, clean = model.run_with_cache(pair.clean.tokens)
    logits, corrupted = model.run_with_cache(pair.corrupted.tokens)
    m_corr = logit_diff(logits, pair)
    delta = sender_output(corrupted, sender) - sender_output(clean, sender)  # [batch, pos, d_model]

    def patch_query(x, hook):  # x: [batch, pos, head, d_model], the heads' own query inputs
        x = x.clone()
        x[:, :, index] += delta
        return x

    with model.hooks([(f"blocks.{layer}.hook_q_input", patch_query)]):
        _, patched = model.run_with_cache(pair.clean.tokens, names=[pattern])
    change = patched[pattern][:, index] - clean[pattern][:, index]  # [batch, query_pos, key_pos]

    leaf = {}

    def probe(x, hook):  # the clean pattern, as a tensor whose gradient we can ask for
        leaf["pattern"] = x.detach().requires_grad_(True)
        return leaf["pattern"]

    with torch.enable_grad(), model.hooks([(pattern, probe)]):
        m_clean = logit_diff(model(pair.clean.tokens), pair)
        (grad,) = torch.autograd.grad(m_clean, leaf["pattern"])  # [batch, head, query_pos, key_pos]
    return float((change * grad[:, index]).sum() / (m_corr - m_clean.detach()))


# %% exercise="traps.switch_alphas"
def attention_to_b(model, pair, alpha, layer, head, e_clean, e_corr):
    """[batch]: the head's attention from the last position to b, embeddings interpolated at alpha."""
    embed = e_corr + alpha * (e_clean - e_corr)
    pattern = f"blocks.{layer}.attn.hook_pattern"
    with model.hooks([("hook_embed", lambda x, hook: embed)]):
        _, cache = model.run_with_cache(pair.clean.tokens, names=[pattern])
    return cache[pattern][:, head, -1, BIT_POS["b"]]


(narrow_selector,) = narrow.truth.trap.nodes["saturated"]
n_layer, n_head = int(narrow_selector[1]), int(narrow_selector[3:])
_, narrow_clean = narrow.model.run_with_cache(narrow_pair.clean.tokens, names=["hook_embed"])
_, narrow_corr = narrow.model.run_with_cache(narrow_pair.corrupted.tokens, names=["hook_embed"])
clean_s = narrow.task.bits(narrow_pair.clean.tokens)["s"]  # [batch]
switch_alphas = {}
for s in (1, 0):
    rows = clean_s == s
    low, high = 0.0, 1.0  # bisection: the attention to b moves monotonically along the path
    rising = s == 1  # clean s = 1 attends to b at alpha = 1; clean s = 0 at alpha = 0
    for _ in range(20):
        mid = (low + high) / 2
        value = float(attention_to_b(narrow.model, narrow_pair, mid, n_layer, n_head, narrow_clean["hook_embed"],
                                     narrow_corr["hook_embed"])[rows].mean())
        if (value < 0.5) == rising:
            low = mid
        else:
            high = mid
    switch_alphas[s] = round((low + high) / 2, 4)
print(switch_alphas)

# %% exercise="traps.overstated_edge"
cancel_real = {e: 1 - faith(set(toylab.components.edges(cancel.model.cfg)) - {e}) for e, _ in cancel_eap.top(4, True)}
overstated_edge = max(cancel_real, key=lambda e: abs(cancel_eap[e]) - abs(cancel_real[e]))
print({str(e): (round(cancel_eap[e], 3), round(v, 3)) for e, v in cancel_real.items()})

# %% exercise="traps.gradient_blind"
strongest_outside = max(abs(v) for e, v in chain_eap.scores.items() if e not in chain_truth)
gradient_blind = {e for e in chain.truth.edges if abs(chain_eap[e]) < strongest_outside}
print(sorted(map(str, gradient_blind)))

# %% exercise="traps.node_attribution"
def node_attribution(model, pair, head):
    name, index = head_output_hook(head)
    logits, corrupted = model.run_with_cache(pair.corrupted.tokens, names=[name])
    m_corr = logit_diff(logits, pair)
    leaf = {}

    def probe(x, hook):  # every head's output, as a tensor whose gradient we can ask for
        leaf["result"] = x.detach().requires_grad_(True)
        return leaf["result"]

    with torch.enable_grad(), model.hooks([(name, probe)]):
        m_clean = logit_diff(model(pair.clean.tokens), pair)
        (grad,) = torch.autograd.grad(m_clean, leaf["result"])  # [batch, pos, head, d_model]
    m_clean = m_clean.detach()
    delta = corrupted[name][:, :, index] - leaf["result"][:, :, index].detach()
    estimate = (delta * grad[:, :, index]).sum() / (m_corr - m_clean)

    def swap(x, hook):
        x = x.clone()
        x[:, :, index] = corrupted[name][:, :, index]
        return x

    with model.hooks([(name, swap)]):
        m_ablated = logit_diff(model(pair.clean.tokens), pair)
    return float(estimate), float((m_clean - m_ablated) / (m_clean - m_corr))


# %% exercise="traps.channel_iia"
def channel_iia(model, algorithm, variable, channel, n=256, seed=0):
    base, source = algorithm.sample_pairs(n, torch.Generator().manual_seed(seed))
    expected = algorithm.intervene(base, source, variable)[:, -1]  # [batch]: the gate with the variable swapped
    name = "blocks.0.hook_mlp_out"
    _, from_source = model.run_with_cache(source.tokens, names=[name])

    def swap_channel(x, hook):  # x: [batch, pos, d_model]
        x = x.clone()
        x[:, -1, channel] = from_source[name][:, -1, channel]
        return x

    with model.hooks([(name, swap_channel)]):
        logits = model(base.tokens)  # [batch, pos, vocab]
    return float((logits[:, -1].argmax(-1) == expected).float().mean())


# %% exercise="traps.whole_output"
pair_base, pair_source = algorithm.sample_pairs(256, torch.Generator().manual_seed(1))
base_bits, source_bits = dist.task.bits(pair_base.tokens), dist.task.bits(pair_source.tokens)
with methods.subspace_interchange(dist.model, pair_source.tokens, code_site):
    patched = dist.model(pair_base.tokens)[:, -1].argmax(-1)  # [batch]
for swapped in ({"a"}, {"b"}, {"a", "b"}):
    gate = dist.task.answer(*(source_bits[x] if x in swapped else base_bits[x] for x in ("a", "b", "s")))
    print(f"the patched answers follow the gate with {sorted(swapped)} from the source on "
          f"{float((patched == gate).float().mean()):.3f} of pairs")
a_swapped = algorithm.intervene(pair_base, pair_source, "a")[:, -1]
for bit in ("a", "b", "s"):
    same = base_bits[bit] == source_bits[bit]
    hits = (patched == a_swapped).float()
    print(f"IIA of a where base and source agree on {bit}: {float(hits[same].mean()):.3f}, "
          f"where they differ: {float(hits[~same].mean()):.3f}")
whole_output = {"swaps": {"a", "b"}, "agree": "b"}

# %% exercise="traps.das_direction"
learned_a = methods.das(dist.model, algorithm, "a", code_site, das_config)
