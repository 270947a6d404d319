import json

import pytest

from toylab import checkpoint as ckpt
from toylab.models import TransformerConfig
from toylab.truth import AttentionRole, CausalVariable, Edge, Truth
from toylab import components as comp

CFG = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=7, n_ctx=6, d_mlp=32)


def small_truth(**changes) -> Truth:
    fields = dict(
        model="m", provenance="enforced", description="d",
        nodes={"embed": "token", "L0H1": "previous-token", "L1H0": "induction", "MLP1N3": "neuron", "logits": "out"},
        edges=[("embed", "L0H1", "v"), ("L0H1", "L1H0", "k"), ("L0H1", "L1H0", "q"), ("L1H0", "logits", "resid")],
        attention=(AttentionRole("L0H1", "previous-token", 0.5),),
        variables=(CausalVariable("prev", "previous token", ("L0H1",), "all"),),
        claims={"key_frequencies": [1, 2]},
    )
    return Truth(**{**fields, **changes})


def test_component_ids_parse_and_are_checked_against_the_model():
    assert comp.parse("L1H2") == ("head", 1, 2)
    assert comp.parse("MLP0N17") == ("neuron", 0, 17)
    assert comp.parse("MLP3") == ("mlp", 3, None)
    with pytest.raises(ValueError, match="not a component id"):
        comp.parse("L1.H2")
    with pytest.raises(ValueError, match="2 layers"):
        comp.check_component("L2H0", CFG)
    with pytest.raises(ValueError, match="d_mlp is 32"):
        comp.check_component("MLP0N32", CFG)


def test_graph_edges_respect_the_residual_stream_order():
    edges = set(comp.edges(CFG))
    assert Edge("L0H0", "L1H1", "k") in edges and Edge("L0H0", "MLP0", "resid") in edges
    assert Edge("L1H0", "L0H1", "q") not in edges  # later layer cannot feed an earlier one
    assert Edge("L0H0", "L0H1", "v") not in edges  # heads of one layer run in parallel
    assert Edge("MLP0", "L1H0", "v") in edges and Edge("MLP1", "logits", "resid") in edges
    # senders: embed, pos, 4 heads, 2 MLPs; each head gets q, k, v from everything upstream
    n_head_inputs = 3 * (2 * 2 + 2 * (2 + 2 + 1))
    n_mlp_inputs = (2 + 2) + (2 + 4 + 1)
    assert len(edges) == n_head_inputs + n_mlp_inputs + 8


def test_promotion_rule_merges_qkv_edges_and_neurons():
    truth = small_truth()
    assert len(truth.edges_at("qkv")) == 4
    head = truth.edges_at("head")
    assert Edge("L0H1", "L1H0", "head") in head and len(head) == 3  # q and k merged
    assert Edge("L1H0", "logits", "resid") in head
    assert "MLP1" in truth.nodes_at("head") and "MLP1N3" not in truth.nodes_at("head")
    with pytest.raises(ValueError, match="granularity"):
        truth.edges_at("neuron")


def test_json_round_trip_and_file(tmp_path):
    truth = small_truth()
    assert Truth.from_dict(json.loads(json.dumps(truth.to_dict()))) == truth
    truth.save(tmp_path)
    assert Truth.load(tmp_path) == truth
    assert truth.provenance == "enforced" and truth.nodes["L0H1"] == "previous-token"


def test_malformed_truths_are_refused(tmp_path):
    with pytest.raises(ValueError, match="provenance"):
        small_truth(provenance="guessed")
    with pytest.raises(ValueError, match="not among its nodes"):
        small_truth(edges=[("embed", "L1H1", "v")])
    with pytest.raises(ValueError, match="pos_embed"):
        small_truth(nodes={"pos_embed": "pos"}, edges=[])
    with pytest.raises(ValueError, match="does not exist"):
        small_truth(nodes={"L1H0": "a", "L0H1": "b"}, edges=[("L1H0", "L0H1", "k")]).check_fits(CFG)
    with pytest.raises(ValueError, match="kind one of"):
        small_truth(edges=[("embed", "L0H1", "resid")]).check_fits(CFG)
    with pytest.raises(ValueError, match="not a toylab truth"):
        Truth.from_dict({"format": "something-else"})
    (tmp_path / "truth.json").write_text('{"format": "toylab-truth/1", "model": "m", "colour": 1}')
    with pytest.raises(ckpt.CheckpointError, match="unknown truth fields"):
        Truth.load(tmp_path)


def test_summary_names_every_node_and_edge():
    text = small_truth().summary()
    assert "enforced" in text and "L0H1" in text and "L0H1 -> L1H0 (k)" in text and "key_frequencies" in text
