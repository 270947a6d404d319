"""toylab.interop.truth: a truth in TransformerLens naming. Needs no optional library."""

import pytest

from toylab.interop import TLSite, tl_site, tl_truth
from toylab.models import TransformerConfig
from toylab import components as comp
from toylab.components import Edge

CFG = TransformerConfig(n_layers=2, d_model=16, n_heads=3, d_head=4, d_vocab=10, n_ctx=8, d_mlp=32)
ATTN_ONLY = TransformerConfig(n_layers=2, d_model=16, n_heads=3, d_head=4, d_vocab=10, n_ctx=8)


def test_outputs_map_to_the_hooks_transformer_lens_patches():
    assert tl_site("embed", CFG) == TLSite("hook_embed")
    assert tl_site("pos_embed", CFG) == TLSite("hook_pos_embed")
    assert tl_site("L1H2", CFG) == TLSite("blocks.1.attn.hook_z", head=2)
    assert tl_site("MLP0", CFG) == TLSite("blocks.0.hook_mlp_out")
    assert tl_site("MLP1N7", CFG) == TLSite("blocks.1.mlp.hook_post", neuron=7)
    assert tl_site("logits", CFG) == TLSite("blocks.1.hook_resid_post")


def test_receiver_inputs_name_the_flag_transformer_lens_needs():
    assert tl_site("L1H0", CFG, "k") == TLSite("blocks.1.hook_k_input", head=0, requires="use_split_qkv_input")
    assert tl_site("MLP1", CFG, "resid") == TLSite("blocks.1.hook_mlp_in", requires="use_hook_mlp_in")
    assert tl_site("logits", CFG, "resid") == TLSite("blocks.1.hook_resid_post")


@pytest.mark.parametrize("component, kind, match", [
    ("embed", "q", "no input"), ("L0H0", "resid", "no input"), ("MLP0", "k", "no input"),
    ("L2H0", None, "layer 2"), ("L0H3", None, "head 3"),
])
def test_impossible_sites_are_refused(component, kind, match):
    with pytest.raises(ValueError, match=match):
        tl_site(component, CFG, kind)


def test_mlp_sites_are_refused_in_an_attention_only_model():
    with pytest.raises(ValueError, match="attention-only"):
        tl_site("MLP0", ATTN_ONLY)


def test_every_zoo_truth_maps_onto_hooks_the_model_has(zoo_model):
    truth = zoo_model.truth
    if truth is None:
        pytest.skip(f"{zoo_model.name} ships no truth")
    cfg, hooks = zoo_model.model.cfg, set(zoo_model.model.hook_names())
    mapped = tl_truth(truth, cfg)
    assert set(mapped.nodes) == set(truth.nodes)
    assert [e.edge for e in mapped.edges] == list(truth.edges)
    for site in list(mapped.nodes.values()) + [s for e in mapped.edges for s in (e.sender, e.receiver)]:
        assert site.hook in hooks, f"{site} is not a hook of {zoo_model.name}"
        assert site.head is None or 0 <= site.head < cfg.n_heads
    for edge in mapped.edges:
        # The receiver's layer is the edge's: a k edge into L1H1 reads blocks.1's k input at head 1.
        if edge.edge.kind in ("q", "k", "v"):
            _, layer, head = comp.parse(edge.edge.receiver)
            assert edge.receiver.hook == f"blocks.{layer}.hook_{edge.edge.kind}_input"
            assert edge.receiver.head == head
    assert set(mapped.flags) == {e.receiver.requires for e in mapped.edges if e.receiver.requires}
    assert set(mapped.hook_names()) <= hooks
    assert mapped.to_dict()["model"] == truth.model and mapped.summary().startswith(truth.model)


def test_attention_roles_point_at_the_head_pattern(zoo_model):
    truth = zoo_model.truth
    if truth is None or not truth.attention:
        pytest.skip(f"{zoo_model.name} declares no attention roles")
    mapped = tl_truth(truth, zoo_model.model.cfg)
    for role in truth.attention:
        site, detector, min_score = mapped.attention[role.head]
        layer, head = role.head[1:].split("H")
        assert site == TLSite(f"blocks.{layer}.attn.hook_pattern", head=int(head))
        assert (detector, min_score) == (role.pattern, role.min_score)


def test_a_truth_for_another_model_is_refused(zoo_model):
    truth = zoo_model.truth
    if truth is None:
        pytest.skip(f"{zoo_model.name} ships no truth")
    smaller = TransformerConfig(n_layers=1, d_model=8, n_heads=1, d_head=8, d_vocab=4, n_ctx=4)
    if all(n in ("embed", "logits", "L0H0") for n in truth.nodes):
        pytest.skip("this truth fits any model")
    with pytest.raises(ValueError):
        tl_truth(truth, smaller)


def test_edge_type_survives_in_the_mapping():
    from toylab.truth import Truth

    truth = Truth(model="toy", provenance="constructed", description="d",
                  nodes={"L0H1": "a", "L1H0": "b", "MLP1": "c", "logits": "out"},
                  edges=(Edge("L0H1", "L1H0", "v"), Edge("L1H0", "MLP1", "resid"), Edge("MLP1", "logits", "resid")))
    mapped = tl_truth(truth, CFG)
    by_edge = {e.edge: e for e in mapped.edges}
    v_input = TLSite("blocks.1.hook_v_input", head=0, requires="use_split_qkv_input")
    assert by_edge[Edge("L0H1", "L1H0", "v")].receiver == v_input
    assert by_edge[Edge("L1H0", "MLP1", "resid")].sender == TLSite("blocks.1.attn.hook_z", head=0)
    assert by_edge[Edge("MLP1", "logits", "resid")].receiver == TLSite("blocks.1.hook_resid_post")
    assert mapped.flags == ("use_hook_mlp_in", "use_split_qkv_input")
