"""Attribution graphs scored against conjunctions' feature-level truth."""

import dataclasses
import math

import pytest
import torch

from toylab import zoo
from toylab.methods.attribution_graph import attribution_graph
from toylab.sae.transcoder import Transcoder, TranscoderConfig, mlp_activations, train_transcoder
from toylab.validate.feature_graphs import map_nodes, score_feature_graphs, true_feature_circuit


@pytest.fixture(scope="module")
def conj():
    return zoo.load("conjunctions")


def _transcoder(steps: int, x=None, y=None) -> Transcoder:
    tc = Transcoder(TranscoderConfig(n_layers=1, d_in=32, d_out=32, d_latent=64, architecture="relu",
                                     l1_coefficient=3e-2))
    if steps:
        train_transcoder(tc, x, y, steps=steps)
    return tc


def test_the_true_circuit_of_a_marked_and_an_unmarked_prompt(conj):
    task = conj.task
    a, b = task.pairs[0].tolist()
    name = task.output_names[1]
    marked = task.make_batch(torch.tensor([b]), torch.tensor([a]))
    nodes, edges = true_feature_circuit(conj.truth, task, marked.tokens[0], 1)
    assert nodes == {f"f{a}", f"f{b}", name, f"logit:{name}"}
    assert edges == {(f"f{a}", name), (f"f{b}", name), (name, f"logit:{name}"), (f"f{a}", f"logit:{name}"),
                     (f"f{b}", f"logit:{name}")}
    unmarked = task.sample(64, 0)
    row = int((unmarked.targets[:, 3] == 0).nonzero()[0])
    nodes, edges = true_feature_circuit(conj.truth, task, unmarked.tokens[row], 0)
    assert len(nodes) == 3 and edges == set()  # two input features, the "none" logit, nothing between


def test_a_decoder_row_on_the_declared_direction_maps_onto_it(conj):
    task, truth = conj.task, conj.truth
    tc = _transcoder(0)
    feature = next(f for f in truth.features if f.variable is not None and f.value == 1)
    with torch.no_grad():
        tc.W_dec[0, 0, 5] = torch.tensor(feature.vector) * 3.0  # any scale: the cosine is what counts
        tc.b_enc[0, 5] = 100.0  # and it fires everywhere, so it is a node of the graph
    tokens = task.make_batch(task.pairs[:1, 0], task.pairs[:1, 1]).tokens[0]
    graph = attribution_graph(conj.model, tc, tokens)
    on, _ = true_feature_circuit(truth, task, tokens, 1)
    mapped, best = map_nodes(graph, truth, task, on)
    assert best[feature.name] == pytest.approx(1.0, abs=1e-5)
    nodes = [n for n, m in zip(graph.nodes, mapped) if m == feature.name]
    assert all(n.kind == "feature" and n.index == 5 for n in nodes)


def test_a_trained_transcoder_recovers_more_than_an_untrained_one_and_figures_are_bounded(conj):
    x, y = mlp_activations(conj.model, conj.task.sample(2048, 1).tokens)
    trained_tc, untrained_tc = _transcoder(800, x, y), _transcoder(0)
    trained = score_feature_graphs(conj.task, conj.truth, lambda t: attribution_graph(conj.model, trained_tc, t),
                                   "relu", n_prompts=12)
    untrained = score_feature_graphs(conj.task, conj.truth, lambda t: attribution_graph(conj.model, untrained_tc, t),
                                     "untrained", n_prompts=12)
    assert trained.feature_recovery > untrained.feature_recovery + 0.2, (trained, untrained)
    for value in trained.row().values():
        assert math.isnan(value) or 0.0 <= value <= 1.0 + 1e-6
    bare = dataclasses.replace(conj.truth, features=(), feature_edges=())
    with pytest.raises(ValueError, match="declares no feature-level truth"):
        score_feature_graphs(conj.task, bare, lambda t: attribution_graph(conj.model, untrained_tc, t), n_prompts=2)


def test_the_declared_direct_edges_from_inputs_to_their_pairs_logits_are_real(conj):
    """Attention moves both inputs to "=" where the unembedding reads them linearly: on every marked
    prompt, each declared input -> logit edge carries a positive direct effect, together at least a
    tenth of the pair's demeaned logit and a third on average (through frozen attention, whatever the
    transcoder)."""
    task, truth = conj.task, conj.truth
    direct = {(s, t) for s, t in truth.feature_edges if t.startswith("logit:") and "&" not in s}
    assert len(direct) == 2 * len(task.pairs)
    tc = _transcoder(0)
    shares = []
    for k, (a, b) in enumerate(task.pairs.tolist(), start=1):
        for x, y in ((a, b), (b, a)):
            graph = attribution_graph(conj.model, tc, task.make_batch(torch.tensor([x]), torch.tensor([y])).tokens[0],
                                      max_logits=task.d_vocab_out, logit_probability=1.0)
            logit = next(i for i, n in enumerate(graph.nodes) if n.kind == "logit" and n.index == k)
            tokens = [i for i, n in enumerate(graph.nodes) if n.kind == "token"]
            effects = graph.adjacency[logit, tokens[1:3]]
            assert (f"f{x}", f"logit:{task.output_names[k]}") in direct
            assert (effects > 0).all(), (k, effects)
            shares.append(float(effects.sum() / graph.target_values[logit]))
    assert min(shares) > 0.1 and sum(shares) / len(shares) > 1 / 3, shares
