"""EAP and EAP-IG called on (model, pair): exact where the model is linear in the edge, the
identities their definitions imply, and clean hands (no weight, gradient or hook left behind)."""

import dataclasses
import math

import pytest
import torch

from toylab import components as comp
from toylab import zoo
from toylab.components import Edge
from toylab.interventions import ablated_logits
from toylab.methods import EdgeAttribution, ablation_scores, eap, eap_ig
from toylab.tasks import logit_diff
from toylab.tasks.base import Batch, CounterfactualPair


@pytest.fixture(scope="module")
def siit():
    return zoo.load("induction-siit")  # attention-only, no LayerNorm


@pytest.fixture(scope="module")
def pair(siit):
    return siit.task.counterfactual(64, seed=0)


@pytest.fixture(scope="module")
def result(siit, pair):
    return eap(siit.model, pair)


def _linear_edges(cfg) -> list[Edge]:
    """Edges an attention-only model without LayerNorm is linear in: into the logits, and into
    a last-layer head's value (its pattern does not read v)."""
    last = cfg.n_layers - 1
    return [e for e in comp.edges(cfg) if e.sender != "pos_embed"
            and (e.receiver == comp.OUTPUT or (e.kind == "v" and comp.parse(e.receiver)[1] == last))]


def test_eap_equals_measured_edge_ablation_where_the_model_is_linear(siit, pair, result):
    model = siit.model
    assert model.cfg.attn_only and model.cfg.normalization_type is None
    every = set(comp.edges(model.cfg))

    def m(keep):
        return float(logit_diff(ablated_logits(model, pair.clean.tokens, pair.corrupted.tokens, keep), pair))

    m_clean, m_corr = m(every), m(set())
    assert result.clean_metric == pytest.approx(m_clean, abs=1e-4)
    assert result.corrupted_metric == pytest.approx(m_corr, abs=1e-4)
    for edge in _linear_edges(model.cfg):
        measured = (m_clean - m(every - {edge})) / (m_clean - m_corr)  # signed, as the scores
        assert result[edge] == pytest.approx(measured, abs=1e-4), str(edge)
    # The circuit's output edge carries almost all of the effect, with the right sign.
    assert result[("L1H1", comp.OUTPUT, "resid")] > 0.9


def test_node_scores_are_first_order_resample_ablation(siit, pair, result):
    """A last-layer head feeds only the logits: ablating its output is linear, so the sum of its
    outgoing edges' scores is the measured resample-ablation effect."""
    ablation = ablation_scores(siit.model, pair, method="resample")
    nodes = result.nodes()
    gap = result.clean_metric - result.corrupted_metric
    last = siit.model.cfg.n_layers - 1
    heads = [c for c in ablation.components if comp.parse(c)[1] == last]
    assert heads
    for head in heads:
        assert nodes[head] == pytest.approx(ablation[head] / gap, abs=1e-4), head
    # Earlier, attention is not linear in its keys: EAP underestimates the K-composition head.
    assert nodes["L0H2"] < 0.2 < ablation["L0H2"] / gap


def test_eap_ig_with_one_step_is_eap_on_the_swapped_pair(siit, pair):
    """steps=1 takes the gradient at the corrupted end of the path only, which is plain EAP with
    clean and corrupted swapped (the metric and the sender difference both change sign)."""
    ig = eap_ig(siit.model, pair, steps=1)
    swapped = eap(siit.model, CounterfactualPair(pair.corrupted, pair.clean, "swapped"))
    assert ig.scores.keys() == swapped.scores.keys()
    for edge, value in ig.scores.items():
        assert value == pytest.approx(swapped.scores[edge], abs=1e-6), str(edge)
    assert ig.clean_metric == pytest.approx(-swapped.corrupted_metric, abs=1e-5)


def test_eap_ig_equals_eap_where_the_gradient_is_constant(siit, pair, result):
    """Without a final LayerNorm the gradient at the logits' input does not depend on the
    input, so integrating it along the path changes nothing for the edges into the logits."""
    ig = eap_ig(siit.model, pair, steps=3)
    assert ig.method == "eap-ig" and result.method == "eap"
    into_logits = [e for e in ig.scores if e.receiver == comp.OUTPUT]
    assert into_logits
    for edge in into_logits:
        assert ig[edge] == pytest.approx(result[edge], abs=1e-4), str(edge)
    assert ig.clean_metric == pytest.approx(result.clean_metric, abs=1e-4)


def test_result_api(siit, result):
    cfg = siit.model.cfg
    assert isinstance(result, EdgeAttribution)
    assert set(result.scores) == {e for e in comp.edges(cfg) if e.sender != "pos_embed"}
    assert result[("L1H1", "logits", "resid")] == result[Edge("L1H1", "logits", "resid")]
    top = result.top(4, absolute=True)
    assert [abs(v) for _, v in top] == sorted((abs(v) for v in result.scores.values()), reverse=True)[:4]
    assert result.top(1)[0] == max(result.scores.items(), key=lambda kv: kv[1])
    promoted = result.promoted()
    assert all(e.kind in ("head", "resid") for e in promoted)
    edge = Edge("L0H2", "L1H1", "head")
    assert promoted[edge] == pytest.approx(sum(result[("L0H2", "L1H1", k)] for k in comp.QKV))
    assert set(result.nodes()) == {s for s in comp.senders(cfg) if s != "pos_embed"}
    with pytest.raises(KeyError, match="unknown scored edge"):
        result[("L1H1", "L0H0", "q")]  # not an edge: L1H1 is downstream of L0H0


def test_a_custom_metric_changes_the_unit_not_the_scores(siit, pair, result):
    doubled = eap(siit.model, pair, metric=lambda logits: 2 * logit_diff(logits, pair))
    assert doubled.clean_metric == pytest.approx(2 * result.clean_metric)
    for edge, value in result.scores.items():
        assert doubled[edge] == pytest.approx(value, abs=1e-5)


@pytest.mark.parametrize("name", ["induction-siit", "brackets-siit"])
def test_methods_do_not_mutate_the_model_or_leave_hooks(name):
    zm = zoo.load(name)
    model = zm.model
    pair = zm.task.counterfactual(16, seed=1)
    training = model.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for result in (eap(model, pair), eap_ig(model, pair, steps=2)):
        assert all(math.isfinite(v) for v in result.scores.values())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())  # gradients never land on the weights
    assert not model.has_hooks()
    assert model.training == training


def test_bad_inputs_raise_clear_errors(siit, pair):
    with pytest.raises(ValueError, match="steps must be a positive int"):
        eap_ig(siit.model, pair, steps=0)
    same = CounterfactualPair(pair.clean, Batch(pair.clean.tokens, pair.corrupted.targets), "nothing changed")
    with pytest.raises(ValueError, match="nothing to attribute"):
        eap(siit.model, same)
    assert not siit.model.has_hooks()


def test_edge_patching_into_the_logits_is_the_unembedded_difference_of_the_sender(siit, pair):
    """Into the logits an edge is linear: noising it moves m by the sender's corrupted-minus-clean
    output through W_U, denoising by the reverse, computed here from a cache by hand."""
    from toylab.methods import edge_patching

    model = siit.model
    noise, denoise = (edge_patching(model, pair, direction=d) for d in ("noise", "denoise"))
    with torch.no_grad():
        _, clean = model.run_with_cache(pair.clean.tokens, names=["blocks.1.attn.hook_result"])
        _, corr = model.run_with_cache(pair.corrupted.tokens, names=["blocks.1.attn.hook_result"])
        m_clean, m_corr = (float(logit_diff(model(b.tokens), pair)) for b in (pair.clean, pair.corrupted))
        for head in range(model.cfg.n_heads):
            delta = corr["blocks.1.attn.hook_result"][:, :, head] - clean["blocks.1.attn.hook_result"][:, :, head]
            moved = float(logit_diff(delta @ model.unembed.W_U, pair))  # the logit diff the swap adds
            edge = Edge(f"L1H{head}", "logits", "resid")
            assert noise[edge] == pytest.approx(-moved / (m_clean - m_corr), abs=1e-4)
            assert denoise[edge] == pytest.approx(-moved / (m_clean - m_corr), abs=1e-4)
    with pytest.raises(ValueError, match="direction must be"):
        edge_patching(model, pair, direction="sideways")


def test_the_qk_fix_is_exact_where_everything_after_the_pattern_is_linear(siit, pair, result):
    """Into a last-layer head's query or key, the fixed estimate recomputes the pattern exactly and
    what follows (values, W_O, W_U) is linear: it equals real patching, where the plain gradient
    of this saturated model misses most of the effect. Other edges keep EAP's estimate."""
    from toylab.methods import edge_patching

    fixed = eap(siit.model, pair, qk_fix=True)
    real = edge_patching(siit.model, pair)
    assert fixed.method == "eap-qk"
    last = siit.model.cfg.n_layers - 1
    for edge, value in result.scores.items():
        if edge.kind not in ("q", "k"):
            assert fixed[edge] == pytest.approx(value, abs=1e-6)
        elif comp.parse(edge.receiver)[1] == last:
            assert fixed[edge] == pytest.approx(real[edge], abs=1e-4)
    key = Edge("L0H2", "L1H1", "k")  # the circuit's K-composition
    assert real[key] > 0.5 and abs(result[key]) < 0.1


def test_grad_drop_keeps_last_layer_edges_and_keeps_only_the_paths_that_skip_a_layer(siit, pair):
    """AtP*'s GradDrop on a 2-layer model: dropping layer 0 leaves a layer-1 receiver's gradient
    as it was and dropping layer 1 zeroes it, so a layer-1 receiver's edges score |eap|; a
    layer-0 receiver keeps only its direct path to the logits (layer 1 dropped); the logits'
    edges average the same gradient over both layers."""
    plain, qk = eap(siit.model, pair), eap(siit.model, pair, qk_fix=True)
    drop, star = eap(siit.model, pair, grad_drop=True), eap(siit.model, pair, qk_fix=True, grad_drop=True)
    assert (drop.method, star.method) == ("eap-graddrop", "atp-star")
    direct = {}  # a layer-0 head's v edge through its direct path alone: v-input gradient without layer 1
    for edge, value in plain.scores.items():
        layer = None if edge.receiver == "logits" else comp.parse(edge.receiver)[1]
        assert drop[edge] >= 0 and star[edge] >= 0
        if layer in (1, None):
            assert drop[edge] == pytest.approx(abs(value), abs=1e-6)
            assert star[edge] == pytest.approx(abs(qk[edge]), abs=1e-6)
        else:
            direct[edge] = drop[edge]
    # induction-siit's previous-token head works only through layer 1's key: without layer 1
    # its input edges carry ~nothing, while plain EAP credits its (small) gradient there.
    assert max(direct.values()) < 0.01 and any(abs(drop[e] - abs(plain[e])) > 1e-3 for e in direct)


def test_grad_drop_recovers_a_cancelled_edge_but_not_the_false_one():
    """On the cancellation trap the head's input edge has no gradient (its paths cancel); with
    MLP1's layer dropped the direct path alone carries it, and it scores what noising it does
    for real. GradDrop undoes false negatives only: the edge into MLP1 keeps its false score."""
    from toylab.methods import edge_patching

    zm = zoo.load("trap-cancellation")
    pair = zm.task.counterfactual(64, seed=5)
    (head,) = [n for n in zm.truth.nodes if n.startswith("L")]
    plain, drop = eap(zm.model, pair), eap(zm.model, pair, grad_drop=True)
    real = edge_patching(zm.model, pair)
    into = Edge("embed", head, "v")
    assert abs(plain[into]) < 0.05 and real[into] > 0.8
    assert drop[into] == pytest.approx(real[into], abs=0.1)
    false = Edge(head, "MLP1", "resid")
    assert abs(real[false]) < 0.05 and drop[false] > 0.8
    one_layer = zoo.load("induction-siit").model  # bad input: needs a layer to drop
    with pytest.raises(ValueError, match="at least 2 layers"):
        from toylab.models import Transformer
        m = Transformer(dataclasses.replace(one_layer.cfg, n_layers=1))
        eap(m, zoo.load("induction-siit").task.counterfactual(4, seed=0), grad_drop=True)
