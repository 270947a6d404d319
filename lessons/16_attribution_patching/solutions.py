# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.
# ruff: noqa: F821  (the names these cells use are the lesson's, defined where the cells are spliced in)

# %% exercise="atp.one_head"
def attribute_head(model, pair, layer, head):
    hook = f"blocks.{layer}.attn.hook_z"
    _, corrupted = model.run_with_cache(pair.corrupted.tokens, names=[hook])
    leaves = {}

    def leaf(z, hook):  # the clean run's z, its own node in the graph (it requires grad: the weights do)
        leaves["z"] = z.clone()
        return leaves["z"]

    with torch.enable_grad(), model.hooks([(hook, leaf)]):
        m = logit_diff(model(pair.clean.tokens), pair)
        (grad,) = torch.autograd.grad(m, [leaves["z"]])  # [batch, pos, head, d_head]
    delta = corrupted[hook] - leaves["z"].detach()
    return float((delta[:, :, head] * grad[:, :, head]).sum())


# %% exercise="atp.every_head"
def head_attributions(model, pair):
    hooks = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    corrupted_logits, corrupted = model.run_with_cache(pair.corrupted.tokens, names=hooks)
    leaves = {}

    def leaf(z, hook):  # its own node in the graph, still fed by the layers before: every path counts
        leaves[hook.name] = z.clone()
        return leaves[hook.name]

    with torch.enable_grad(), model.hooks([(hook, leaf) for hook in hooks]):
        m = logit_diff(model(pair.clean.tokens), pair)
        grads = torch.autograd.grad(m, [leaves[hook] for hook in hooks])  # one backward pass, every layer
    estimates = torch.stack([((corrupted[hook] - leaves[hook].detach()) * grad).sum((0, 1, 3))
                             for hook, grad in zip(hooks, grads)])  # [layer, head]
    return estimates / (float(logit_diff(corrupted_logits, pair)) - float(m))


# %% exercise="atp.edge"
def edge_attribution(model, pair, edge):
    (s_hook, s_head), (r_hook, r_head) = sender_site(edge), receiver_site(model.cfg, edge)
    corrupted_logits, corrupted = model.run_with_cache(pair.corrupted.tokens, names=[s_hook])
    seen = {}

    def record(x, hook):  # the sender's clean output
        seen["sender"] = x.detach()

    def leaf(x, hook):  # the receiver's own input on the clean run, a copy of its own (not a view of the stream)
        seen["input"] = x.clone()
        return seen["input"]

    with torch.enable_grad(), model.hooks([(s_hook, record), (r_hook, leaf)]):
        m = logit_diff(model(pair.clean.tokens), pair)
        (grad,) = torch.autograd.grad(m, [seen["input"]])
    delta = corrupted[s_hook] - seen["sender"]
    delta = delta[:, :, s_head] if s_head is not None else delta  # [batch, pos, d_model]
    grad = grad[:, :, r_head] if r_head is not None else grad  # [batch, pos, d_model]
    return float((delta * grad).sum()) / (float(logit_diff(corrupted_logits, pair)) - float(m))


# %% exercise="atp.understated"
real_on = {MODEL: real_edges, TRAP: methods.edge_patching(trap.model, trap_pairs)}  # patched for real
understated = {name: {e for e in zoo_model.truth.edges if eap_on[name][e] < UNDERSTATED * real_on[name][e]}
               for name, zoo_model in ((MODEL, zm), (TRAP, trap))}
print(understated)

# %% exercise="atp.ig_steps"
real_trap = methods.edge_patching(trap.model, trap_pairs)
ig_steps = next(s for s in (4, 16, 64)  # growing until every understated edge is recovered
                if all(abs(methods.eap_ig(trap.model, trap_pairs, steps=s)[e] - real_trap[e]) <= IG_TOLERANCE
                       for e in wanted))
print(ig_steps)

# %% exercise="atp.validate"
summary = {name: report.summary()[TRAP] for name, report in reports.items()}
shortfall = {f: summary["edge-noising"][f][0] - summary["eap"][f][0] for f in FIGURES}
verdict = {"exposes": max(shortfall, key=shortfall.get),  # where EAP falls furthest below the real patch
           "missing": set(trap.truth.edges) - set(eap_entry.circuit)}
print(shortfall, verdict)
