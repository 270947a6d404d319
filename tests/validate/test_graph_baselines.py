"""The feature-graph track: the FeatureGraph protocol type through the harness, its baselines, the SAE graph's
attribution-patching edges, and the leaderboard's section."""

import dataclasses
import math

import pytest
import torch

from toylab import zoo
from toylab.methods.attribution_graph import sae_attribution_graph
from toylab.sae.sae import SAE, SAEConfig
from toylab.validate import FeatureGraph, MethodOutputError, Subject, normalise, score
from toylab.validate.graph_baselines import GRAPH_BASELINES, transcoder, truth_graph, untrained
from toylab.validate.leaderboard import leaderboard
from toylab.validate.protocol import Problem


@pytest.fixture(scope="module")
def conj():
    return zoo.load("conjunctions")


def test_normalise_accepts_a_feature_graph_and_says_what_is_wrong_with_a_bad_one(conj):
    problem = Problem("conjunctions", 0, conj.model, conj.task)
    graph = FeatureGraph(lambda tokens: None)
    assert normalise(graph, problem) is graph
    with pytest.raises(MethodOutputError, match="build must be callable"):
        normalise(FeatureGraph("not a function"), problem)
    with pytest.raises(MethodOutputError, match=r"edge_threshold must be a number in \[0, 1\]"):
        normalise(FeatureGraph(lambda t: None, edge_threshold=1.5), problem)


def test_the_truth_scores_the_ceiling_and_an_untrained_transcoder_does_not():
    ceiling = score(truth_graph, names=["conjunctions"], seeds=[0], label="truth").entries[0]
    assert ceiling.error is None and ceiling.kind == "feature graph" and ceiling.peeked
    assert ceiling.metrics["feature_recovery"] == pytest.approx(1.0)
    assert ceiling.metrics["circuit_kept"] == pytest.approx(1.0)
    assert ceiling.metrics["graph_node_auroc"] == pytest.approx(1.0)
    floor = score(untrained, names=["conjunctions"], seeds=[0], label="untrained").entries[0]
    assert floor.error is None and not floor.peeked
    assert floor.metrics["feature_recovery"] < 0.6 and floor.metrics["circuit_kept"] < 0.1
    assert floor.seconds > 0  # building the graphs is the method's time


def test_a_trained_transcoder_beats_the_floor_on_recovery_and_replacement():
    trained = score(lambda p: transcoder(p, steps=400, n=512), names=["conjunctions"], seeds=[0]).entries[0]
    floor = score(untrained, names=["conjunctions"], seeds=[0]).entries[0]
    assert trained.metrics["feature_recovery"] > floor.metrics["feature_recovery"] + 0.15
    assert trained.metrics["replacement_score"] > floor.metrics["replacement_score"] + 0.2


def test_a_builder_that_fails_or_returns_garbage_is_an_error_entry_and_the_model_is_left_alone(conj):
    def raises(problem):
        return FeatureGraph(lambda tokens: 1 / 0)

    def garbage(problem):
        return FeatureGraph(lambda tokens: {"nodes": []})

    def mutates(problem):
        def build(tokens):
            with torch.no_grad():
                problem.model.unembed.W_U.mul_(2)
            return truth_graph(problem).build(tokens)
        return FeatureGraph(build)

    before = {k: v.clone() for k, v in zoo.load("conjunctions").model.state_dict().items()}
    for method, message in ((raises, "FeatureGraph.build raised on a scoring prompt: ZeroDivisionError"),
                            (garbage, "returns an AttributionGraph"), (mutates, "changed the model's weights")):
        entry = score(method, names=["conjunctions"], seeds=[0]).entries[0]
        assert entry.error is not None and message in entry.error, entry.error
    after = zoo.load("conjunctions").model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_model_without_feature_truth_cannot_score_a_graph(conj):
    bare = dataclasses.replace(conj.truth, features=(), feature_edges=())
    subject = Subject("conjunctions", 0, conj.model, conj.task, bare, conj.algorithm)
    entry = score(untrained, suite=[subject]).entries[0]
    assert "declares no feature-level truth" in entry.error


def test_sae_graph_edges_into_features_are_gradient_times_activation_through_the_real_mlp(conj):
    """Independently: scale the token's embedding (token + position) by s with the attention patterns frozen,
    and differentiate the SAE feature's pre-activation at s = 1."""
    model, task = conj.model, conj.task
    sae = SAE(SAEConfig(d_in=32, d_sae=16, architecture="relu", seed=3))
    with torch.no_grad():
        sae.b_enc.fill_(2.0)  # every latent on, so each is a node
    tokens = task.sample(4, 2).tokens[0]
    graph = sae_attribution_graph(model, {0: sae}, tokens)
    nodes = graph.nodes
    target = next(i for i, n in enumerate(nodes) if n.kind == "feature" and n.pos == 3)
    _, cache = model.run_with_cache(tokens[None], names=["blocks.0.attn.hook_pattern"])
    for source_pos in (1, 2, 3):
        source = next(i for i, n in enumerate(nodes) if n.kind == "token" and n.pos == source_pos)
        s = torch.ones((), requires_grad=True)

        def scale(value, hook, p=source_pos):
            factor = torch.ones(value.shape[1], 1)
            factor[p] = 0
            return value * factor + value * (1 - factor) * s

        hooks = [("blocks.0.attn.hook_pattern", lambda v, hook: cache["blocks.0.attn.hook_pattern"]),
                 ("hook_embed", scale), ("hook_pos_embed", scale)]
        seen = {}
        hooks.append(("blocks.0.hook_mlp_out", lambda v, hook: seen.setdefault("y", v)))
        with torch.enable_grad(), model.hooks(hooks):
            model(tokens[None])
            pre = sae.pre_activations(seen["y"][0, 3])[nodes[target].index]
            (expected,) = torch.autograd.grad(pre, s)
        assert float(graph.adjacency[target, source]) == pytest.approx(float(expected), rel=1e-4, abs=1e-5)


def test_the_leaderboard_has_a_feature_graph_section_per_model_with_features():
    board = leaderboard({}, names=["conjunctions"], seeds=[0], featurisers={},
                        graph_methods={"untrained": untrained, "truth": truth_graph})
    text = board.to_markdown()
    assert "## Feature graphs" in text and "### conjunctions" in text
    assert "| truth (peeks) |" in text and "| untrained |" in text
    summary = board.graphs["truth"].summary()["conjunctions"]
    assert summary["feature_recovery"][0] == pytest.approx(1.0)
    assert set(GRAPH_BASELINES) >= {"transcoder", "skip", "clt", "sae-atp", "untrained", "truth"}
    assert not math.isnan(board.graphs["untrained"].summary()["conjunctions"]["replacement_score"][0])
