# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.

# %% exercise="validate.resample_scores"
def node_output_hook(node):
    """(hook name, head index or None) where ``node`` writes its output."""
    if node == "embed":
        return "hook_embed", None
    if node.startswith("MLP"):
        return f"blocks.{node[3:]}.hook_mlp_out", None
    layer, head = node[1:].split("H")  # "L1H0" -> ("1", "0")
    return f"blocks.{layer}.attn.hook_result", int(head)


def resample_node_scores(problem):
    model, pair = problem.model, problem.pair(64)
    m_clean = problem.metric(model(pair.clean.tokens), pair)
    m_corrupted = problem.metric(model(pair.corrupted.tokens), pair)
    _, corrupted = model.run_with_cache(pair.corrupted.tokens)
    scores = {}
    for node in problem.nodes():
        name, head = node_output_hook(node)

        def swap(x, hook, name=name, head=head):  # x: [batch, pos, d_model] or [batch, pos, head, d_model]
            if head is None:
                return corrupted[name]
            x = x.clone()
            x[:, :, head] = corrupted[name][:, :, head]
            return x

        with model.hooks([(name, swap)]):
            m_ablated = problem.metric(model(pair.clean.tokens), pair)
        scores[node] = float((m_clean - m_ablated).abs() / (m_clean - m_corrupted).abs())
    return scores


# %% exercise="validate.heuristic_failure"
heuristic = validate.score(baselines.BASELINES["attention-heuristic"], names=list(INDUCTION_MODELS), seeds=SEEDS,
                           n_pairs=N_PAIRS, label="attention-heuristic")
print(heuristic.table(("node_auroc", "cpr", "faithfulness")))
node_auroc = {model: stats["node_auroc"][0] for model, stats in heuristic.summary().items()
              if stats["node_auroc"][2] > 0}  # (mean, std, number of seeds); n/a where nothing to rank
worst = min(node_auroc, key=node_auroc.get)
heuristic_failure = (worst, node_auroc[worst])

# %% exercise="validate.decoy_heads"
heads = [node for node in built_problem.nodes() if node.startswith("L")]
looks_like = {}  # head -> its best detector score
for head in heads:
    layer, index = (int(part) for part in head[1:].split("H"))
    looks_like[head] = max(float(grid[layer, index]) for grid in detector_scores.values())
effect = resample_node_scores(built_problem)
decoy_heads = {head for head in heads if looks_like[head] > 0.9 and effect[head] < 1e-3}

# %% exercise="validate.edge_method"
def receiver_inputs(cfg, node):
    """[(hook name, head index or None)]: what ``node`` reads from the residual stream."""
    if node == "logits":
        return [(f"blocks.{cfg.n_layers - 1}.hook_resid_post", None)]
    if node.startswith("MLP"):
        return [(f"blocks.{node[3:]}.hook_mlp_in", None)]
    layer, head = node[1:].split("H")
    return [(f"blocks.{layer}.hook_{kind}_input", int(head)) for kind in "qkv"]


def edge_method(problem):
    model, pair = problem.model, problem.pair(64)
    _, clean = model.run_with_cache(pair.clean.tokens)
    _, corrupted = model.run_with_cache(pair.corrupted.tokens)
    m_clean = problem.metric(model(pair.clean.tokens), pair)
    m_corrupted = problem.metric(model(pair.corrupted.tokens), pair)

    def output(cache, node):  # [batch, pos, d_model]
        name, head = node_output_hook(node)
        return cache[name] if head is None else cache[name][:, :, head]

    scores = {}
    for edge in problem.edges("head"):
        delta = output(corrupted, edge.sender) - output(clean, edge.sender)

        def add(x, hook, head, delta=delta):  # only this receiver's input sees the sender's corrupted output
            x = x.clone()
            if head is None:
                x += delta
            else:
                x[:, :, head] += delta
            return x

        hooks = [(name, lambda x, hook, head=head: add(x, hook, head))
                 for name, head in receiver_inputs(model.cfg, edge.receiver)]
        with model.hooks(hooks):
            m_ablated = problem.metric(model(pair.clean.tokens), pair)
        scores[edge] = float((m_clean - m_ablated).abs() / (m_clean - m_corrupted).abs())
    return scores
