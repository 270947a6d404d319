import math
from functools import cache

import pytest
import torch

import toylab.zoo
from toylab.hooks import UnknownNameError
from toylab.methods.circuits import (
    composition_scores,
    copying_score,
    eigen_copying_score,
    ov_circuit,
    pos_qk_circuit,
    qk_circuit,
)
from toylab.models import Transformer, TransformerConfig

INDUCTION = ["induction-constructed", "induction-siit", "induction-2l", "induction-tiny"]


@cache
def zoo(name):
    return toylab.zoo.load(name)


def k_edges(truth):
    return {(e.sender, e.receiver) for e in truth.edges if e.kind == "k" and e.sender in truth.heads}


def heads_with_role(truth, role):
    return [h for h in truth.heads if truth.nodes[h] == role]


def test_siit_k_composition_singles_out_the_circuit_edge():
    zm = zoo("induction-siit")
    scores = composition_scores(zm.model, "k")
    (best, top), (_, second) = scores.top(2)
    assert {best} == k_edges(zm.truth) == {("L0H2", "L1H1")}
    assert top > 2 * scores.baseline and top > 2 * second


def test_constructed_k_composition_cannot_tell_the_decoy_mirror():
    # The decoys K-compose with each other exactly as the circuit does (L0H0 writes
    # decoy_prev, which L1H0's key reads): weights alone cannot say which pair is used.
    zm = zoo("induction-constructed")
    scores = composition_scores(zm.model, "k")
    pairs = dict(scores.top(4))
    assert {p for p, _ in scores.top(2)} == k_edges(zm.truth) | {("L0H0", "L1H0")}
    assert pairs["L0H1", "L1H1"] == pytest.approx(pairs["L0H0", "L1H0"])
    assert pairs["L0H1", "L1H1"] > 2 * scores.baseline
    assert scores["L0H1", "L1H0"] < 1e-6 and scores["L0H0", "L1H1"] < 1e-6
    for kind in ("q", "v"):  # the constructed circuit has no Q or V composition at all
        assert torch.nan_to_num(composition_scores(zm.model, kind).scores).max() < 1e-6


def test_induction_2l_top_k_composition_pairs_are_the_truths_k_edges():
    zm = zoo("induction-2l")
    scores = composition_scores(zm.model, "k")
    edges = k_edges(zm.truth)
    assert {p for p, _ in scores.top(len(edges))} == edges
    assert scores.top(1)[0][1] > 1.5 * scores.baseline


def test_induction_tiny_k_composition_stays_below_the_random_baseline():
    # Honest negative: in this 32-wide model every K-composition score is below the
    # Gaussian baseline, so the score alone does not flag the circuit; the virtual QK
    # circuit through the sender (test below) does.
    scores = composition_scores(zoo("induction-tiny").model, "k")
    assert torch.nan_to_num(scores.scores).max() < scores.baseline


@pytest.mark.parametrize("name", INDUCTION)
def test_keys_read_through_the_previous_token_head_match_the_query(name):
    zm = zoo(name)
    n_heads = zm.model.cfg.n_heads
    for receiver in heads_with_role(zm.truth, "induction"):
        layer, head = int(receiver[1]), int(receiver[3])
        scores = [copying_score(qk_circuit(zm.model, layer, head, key_through=f"L0H{s}")) for s in range(n_heads)]
        best = f"L0H{max(range(n_heads), key=scores.__getitem__)}"
        assert (best, receiver) in k_edges(zm.truth) and max(scores) > 0.9
        assert copying_score(qk_circuit(zm.model, layer, head)) < 0.2  # plain tokens do not match


@pytest.mark.parametrize("name", ["induction-constructed", "induction-siit", "induction-2l"])
def test_previous_token_heads_peak_on_the_positional_subdiagonal(name):
    zm = zoo(name)
    cfg = zm.model.cfg
    previous = set(heads_with_role(zm.truth, "previous-token"))
    decoy = {"L0H0"} if name == "induction-constructed" else set()
    fraction = {}
    for h in range(cfg.n_heads):
        pattern = pos_qk_circuit(zm.model, 0, h)  # [query_pos, key_pos]
        assert torch.isinf(pattern.triu(1)[pattern.triu(1) != 0]).all()  # the future is masked
        fraction[f"L0H{h}"] = float((pattern[1:].argmax(-1) == torch.arange(cfg.n_ctx - 1)).float().mean())
    ranked = sorted(fraction, key=fraction.get, reverse=True)
    assert set(ranked[: len(previous | decoy)]) == previous | decoy
    assert min(fraction[h] for h in previous) > 0.6


def test_ov_copying_of_the_induction_head():
    zm = zoo("induction-constructed")
    assert copying_score(ov_circuit(zm.model, 1, 1)) == 1.0
    # The decoy writes decoy_out, which W_U reads with zeros: its full OV circuit is 0.
    assert ov_circuit(zm.model, 1, 0).abs().max() < 1e-6
    assert copying_score(ov_circuit(zm.model, 1, 0)) < 0.1
    siit = zoo("induction-siit").model
    copying = {f"L{layer}H{h}": copying_score(ov_circuit(siit, layer, h)) for layer in range(2) for h in range(4)}
    assert max(copying, key=copying.get) == "L1H1" and copying["L1H1"] > 0.9


@pytest.mark.parametrize("name", INDUCTION)
def test_induction_heads_have_positive_eigenvalues(name):
    zm = zoo(name)
    for receiver in heads_with_role(zm.truth, "induction"):
        assert eigen_copying_score(ov_circuit(zm.model, int(receiver[1]), int(receiver[3]))) > 0.95


def test_scores_follow_their_definitions():
    assert copying_score(torch.eye(3)) == 1.0
    assert copying_score(torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])) == 0.5  # square part 2x2
    assert eigen_copying_score(torch.eye(4)) == pytest.approx(1.0)
    assert eigen_copying_score(-torch.eye(4)) == pytest.approx(-1.0)

    model = zoo("induction-siit").model
    scores = composition_scores(model, "k")
    attn0, attn1 = model.blocks[0].attn, model.blocks[1].attn
    A = attn0.W_V[2] @ attn0.W_O[2]  # sender W_OV [d_model, d_model]
    B = (attn1.W_Q[1] @ attn1.W_K[1].T).T  # receiver W_QK^T: the sender is read by the key
    expected = ((A @ B).norm() / (A.norm() * B.norm())).detach()
    assert scores["L0H2", "L1H1"] == pytest.approx(float(expected), rel=1e-4)
    assert scores.scores[1, :, 0].isnan().all() and scores.scores[0, :, 0].isnan().all()
    again = composition_scores(model, "k")
    assert again.baseline == scores.baseline and 0 < scores.baseline < 1
    qk = qk_circuit(model, 1, 1)
    W_E = model.embed.W_E
    expected_qk = W_E @ attn1.W_Q[1] @ attn1.W_K[1].T @ W_E.T / math.sqrt(model.cfg.d_head)
    assert torch.allclose(qk, expected_qk, atol=1e-5)


def test_layernorm_gain_is_folded_in():
    cfg = TransformerConfig(n_layers=2, d_model=8, n_heads=2, d_head=4, d_vocab=7, n_ctx=5, normalization_type="LN")
    model = Transformer(cfg, seed=0)
    before = qk_circuit(model, 1, 0)
    with torch.no_grad():
        model.blocks[1].ln1.w.fill_(2.0)
    assert torch.allclose(qk_circuit(model, 1, 0), 4 * before, atol=1e-5)
    # Writing weights are centred as LayerNorm would: a constant vector added to W_E is invisible.
    ov = ov_circuit(model, 0, 1)
    with torch.no_grad():
        model.embed.W_E.add_(3.0)
    assert torch.allclose(ov_circuit(model, 0, 1), ov, atol=1e-5)


def test_bad_input_is_a_clear_error():
    model = zoo("induction-tiny").model
    with pytest.raises(ValueError, match="unknown composition kind"):
        composition_scores(model, "o")
    with pytest.raises(ValueError, match="no head L2H0"):
        ov_circuit(model, 2, 0)
    with pytest.raises(ValueError, match="layer before 1"):
        qk_circuit(model, 1, 0, key_through="L1H1")
    with pytest.raises(ValueError, match="not a head id"):
        qk_circuit(model, 1, 0, key_through="MLP0")
    scores = composition_scores(model, "q")
    with pytest.raises(ValueError, match="later layer"):
        scores["L1H0", "L0H1"]
    with pytest.raises(UnknownNameError):
        scores["L0H0", "L1H5"]
    with pytest.raises(ValueError, match="2-d"):
        copying_score(torch.ones(3))
