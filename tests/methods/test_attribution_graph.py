"""Attribution graphs: exact direct effects through frozen attention, circuit-tracer's pruning and scores."""

import math

import pytest
import torch

from toylab import zoo
from toylab.methods.attribution_graph import attribution_graph, influence, normalise_rows
from toylab.sae.transcoder import Transcoder, TranscoderConfig, mlp_activations, train_transcoder


@pytest.fixture(scope="module")
def setup():
    z = zoo.load("factual-recall")
    x, y = mlp_activations(z.model, z.task.sample(2048, 1).tokens)
    out = {}
    for name, kw in (("per-layer", {}), ("cross-layer", {"cross_layer": True}), ("skip", {"skip": True})):
        tc = Transcoder(TranscoderConfig(n_layers=2, d_in=32, d_out=32, d_latent=64, architecture="topk", k=4, **kw))
        train_transcoder(tc, x, y, steps=600)
        out[name] = tc
    return z, out


def _linearised_bias(model, graph, tc):
    """Target inputs with every node's write removed: what the biases alone give (an independent run)."""
    tokens = graph.tokens[None]
    names = [n for n in model.hook_names() if n.endswith("hook_pattern")]
    _, cache = model.run_with_cache(tokens, names=names)
    hooks = [(n, lambda v, hook: cache[hook.name]) for n in names]
    hooks += [("hook_embed", lambda v, hook: torch.zeros_like(v)), ("hook_pos_embed", lambda v, hook: torch.zeros_like(v))]
    inputs = {}
    hooks += [(f"blocks.{l}.hook_mlp_in", lambda v, hook: inputs.__setitem__(hook.name, v)) for l in range(2)]

    def mlp_out(v, hook):
        layer = int(hook.name.split(".")[1])
        out = tc.b_dec[layer].expand_as(v)
        if tc.cfg.skip:
            out = out + inputs[f"blocks.{layer}.hook_mlp_in"] @ tc.W_skip[layer]
        return out

    hooks += [(f"blocks.{l}.hook_mlp_out", mlp_out) for l in range(2)]
    with torch.no_grad(), model.hooks(hooks):
        logits = model(tokens)[0, graph.scored_pos]
    values = []
    tc = tc.requires_grad_(False)
    for n in graph.nodes:
        if n.kind == "logit":
            values.append(float(logits[n.index] - logits.mean()))
        elif n.kind == "feature":
            x = inputs[f"blocks.{n.layer}.hook_mlp_in"][0, n.pos]
            values.append(float(x @ tc.W_enc[n.layer, :, n.index] + tc.b_enc[n.layer, n.index]))
    tc.requires_grad_(True)
    return torch.tensor(values)


@pytest.mark.parametrize("kind", ["per-layer", "cross-layer", "skip"])
def test_direct_effects_sum_to_each_input_exactly(setup, kind):
    z, transcoders = setup
    tc = transcoders[kind]
    tokens = z.task.sample(1, 5).tokens[0]
    with torch.no_grad():
        graph = attribution_graph(z.model, tc, tokens)
    targets = torch.cat([graph.indices("feature"), graph.indices("logit")])
    # rows: edges + the biases' share = the target's actual input (pre-activation or demeaned logit)
    assert torch.allclose(graph.adjacency[targets].sum(-1) + graph.bias[targets], graph.target_values[targets], atol=1e-3)
    # the biases' share, recomputed in a run where no node writes anything
    assert torch.allclose(graph.bias[targets], _linearised_bias(z.model, graph, tc), atol=1e-3)
    # the logits' actual values are those of the model itself (the errors make the replacement exact)
    logits = z.model(tokens[None])[0, graph.scored_pos].detach()
    for i in graph.indices("logit").tolist():
        node = graph.nodes[i]
        assert abs(graph.target_values[i] - (logits[node.index] - logits.mean())) < 1e-3
    # sources have no inputs, and nothing feeds a node from a later layer (a DAG)
    sources = torch.cat([graph.indices("error"), graph.indices("token")])
    assert graph.adjacency[sources].abs().sum() == 0


def test_the_graph_finds_the_fact_store_and_prunes(setup):
    """factual-recall stores facts in MLP0 at the subject (position 2): the pruned graph's features are there."""
    z, transcoders = setup
    graph = attribution_graph(z.model, transcoders["per-layer"], z.task.sample(1, 5).tokens[0])
    replacement, completeness = graph.scores()
    assert 0.5 < replacement <= 1.0 and 0.5 < completeness <= 1.0
    pruned = graph.prune(0.8, 0.98)
    top = max(pruned.features(), key=lambda n: abs(graph.influence()[graph.nodes.index(n)]))
    assert (top.layer, top.pos) == (0, 2)
    assert pruned.node_mask[graph.indices("logit")].all() and pruned.node_mask[graph.indices("token")].all()
    assert len(pruned.nodes) < len(graph.nodes)
    with pytest.raises(ValueError, match="node_threshold must lie in"):
        graph.prune(1.5)


def test_influence_is_the_series_of_the_normalised_matrix():
    A = torch.tensor([[0.0, 0, 0, 0], [2.0, 0, 0, 0], [1.0, -3.0, 0, 0], [0.0, 1.0, 1.0, 0]])
    w = torch.tensor([0.0, 0, 0, 1.0])
    N = normalise_rows(A)
    series = w @ N + w @ N @ N + w @ N @ N @ N
    assert torch.allclose(influence(A, w), series, atol=1e-6)


def test_bad_input(setup):
    z, transcoders = setup
    with pytest.raises(ValueError, match=r"tokens \[pos\]"):
        attribution_graph(z.model, transcoders["per-layer"], z.task.sample(2, 5).tokens)
    with pytest.raises(ValueError, match="out of range"):
        attribution_graph(z.model, transcoders["per-layer"], z.task.sample(1, 5).tokens[0], scored_pos=9)
    wide = Transcoder(TranscoderConfig(n_layers=3, d_in=32, d_out=32, d_latent=8, architecture="relu"))
    with pytest.raises(ValueError, match="does not fit the model"):
        attribution_graph(z.model, wide, z.task.sample(1, 5).tokens[0])


def test_influence_is_the_closed_form_series_and_refuses_a_cycle():
    from toylab.methods.attribution_graph import influence, normalise_rows

    g = torch.Generator().manual_seed(0)
    A = torch.randn(60, 60, generator=g).tril(-1) * (torch.rand(60, 60, generator=g) < 0.3)  # a DAG
    w = torch.rand(60, generator=g)
    n = normalise_rows(A).double()
    closed = torch.linalg.solve((torch.eye(60, dtype=torch.float64) - n).T, n.T @ w.double())
    assert torch.allclose(influence(A, w).double(), closed, atol=1e-6)
    with pytest.raises(ValueError, match="cycle"):
        influence(torch.ones(3, 3), torch.ones(3))


def test_the_replacement_score_is_na_where_nothing_reaches_the_logits():
    from toylab.methods.attribution_graph import AttributionGraph, Node

    nodes = (Node("error", 0, 0, None, 0.0), Node("token", None, 0, None, 1.0), Node("logit", None, 0, 1, 1.0))
    graph = AttributionGraph(torch.tensor([1]), nodes, torch.zeros(3, 3), torch.zeros(3), torch.zeros(3),
                             torch.tensor([1.0]), 0)
    replacement, completeness = graph.scores()
    assert math.isnan(replacement) and completeness == 1.0
