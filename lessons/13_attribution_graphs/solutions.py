# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.
# ruff: noqa: F821  (the names these cells use are the lesson's, defined where the cells are spliced in)

# %% exercise="graphs.transcode"
def transcode(transcoder, x):
    cfg = transcoder.cfg
    pre = torch.einsum("bld,ldf->blf", x, transcoder.W_enc) + transcoder.b_enc  # [batch, layer, latent]
    if cfg.architecture == "topk":
        top = pre.topk(cfg.k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    else:
        z = torch.relu(pre)
    decoders = torch.stack([transcoder.W_dec[l, l] for l in range(cfg.n_layers)])  # [layer, latent, d_out]
    y_hat = torch.einsum("blf,lfo->blo", z, decoders) + transcoder.b_dec
    if cfg.skip:
        y_hat = y_hat + torch.einsum("bld,ldo->blo", x, transcoder.W_skip)
    return y_hat, z


# %% exercise="graphs.train"
my_transcoder = sae.Transcoder(transcoder_config(model))
x, y = training_data(model, task)
sae.train_transcoder(my_transcoder, x, y, steps=steps())
figures = sae.transcoder_scores(model, my_transcoder, task.eval_batches()["test"])
trained = {"transcoder": my_transcoder, "fvu": figures.fvu[0], "loss_recovered": figures.loss_recovered}
print(figures)

# %% exercise="graphs.logit_edge"
def feature_to_logit(model, transcoder, graph, feature, logit):
    f, c = graph.nodes[feature], graph.nodes[logit]
    if f.pos != graph.scored_pos:  # one layer: nothing moves the feature's write to the scored position
        return 0.0
    W_U = model.unembed.W_U  # [d_model, d_vocab_out]
    direction = W_U[:, c.index] - W_U.mean(1)  # the demeaned logit's direction
    return float(f.value * transcoder.W_dec[f.layer, f.layer, f.index] @ direction)


# %% exercise="graphs.true_circuit"
def true_circuit(truth, task, tokens):
    names = set(task.to_str_tokens(tokens))
    cls = int(task.variables(tokens[None])["conjunction"][0])
    nodes = {f.name for f in truth.features if f.variable is None and f.name in names}
    nodes |= {f.name for f in truth.features if f.variable == "conjunction" and f.value == cls}
    nodes.add("logit:" + task.output_names[cls])
    edges = {(s, t) for s, t in truth.feature_edges if s in nodes and t in nodes}
    return nodes, edges


# %% exercise="graphs.found"
kept = {mapped[i] for i in pruned.node_mask.nonzero().flatten().tolist()} - {None}
conjunction = next(f.name for f in truth.features if f.variable is not None and f.name in on)
found = {"found": on & kept, "missed": on - kept,
         "conjunction": "found" if conjunction in kept else "pruned" if conjunction in mapped else "unmatched"}
print(found)

# %% exercise="graphs.compare"
comparison = {}
for kind, tc in transcoders.items():
    graphs = [graph(model, tc, t) for t in compare_prompts(task)]
    figures = torch.tensor([gr.scores() for gr in graphs]).mean(0)
    kept_features = [len(gr.prune(NODE_THRESHOLD, EDGE_THRESHOLD).features()) for gr in graphs]
    comparison[kind] = {"replacement": round(float(figures[0]), 3), "completeness": round(float(figures[1]), 3),
                        "features": sum(kept_features) / len(kept_features)}
fewer = comparison["per-layer"]["features"] - comparison["skip"]["features"]
comparison["fewer_features"] = "skip" if fewer > 0 else "per-layer" if fewer < 0 else "same"
print(comparison)
