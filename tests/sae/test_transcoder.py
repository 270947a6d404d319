"""Transcoders: per-layer, skip and cross-layer, their replacement model, and circuit-tracer's files."""

import pytest
import torch

from toylab import zoo
from toylab.sae.transcoder import (
    Transcoder,
    TranscoderConfig,
    load_circuit_tracer,
    mlp_activations,
    replaced,
    save_circuit_tracer,
    train_transcoder,
    transcoder_scores,
)


@pytest.fixture(scope="module")
def recall():
    z = zoo.load("factual-recall")
    x, y = mlp_activations(z.model, z.task.sample(2048, 1).tokens)
    return z, x, y


def _config(**kw):
    return TranscoderConfig(**{"n_layers": 2, "d_in": 32, "d_out": 32, "d_latent": 64, "architecture": "topk",
                               "k": 4, **kw})


@pytest.mark.parametrize("kw", [dict(), dict(skip=True), dict(cross_layer=True),
                                dict(architecture="relu", k=None), dict(architecture="jumprelu", k=None)])
def test_each_kind_trains_into_a_replacement_that_recovers_the_loss(recall, kw):
    z, x, y = recall
    tc = Transcoder(_config(**kw))
    history = train_transcoder(tc, x, y, steps=600)
    assert history.mse[-1] < 0.5 * history.mse[0]
    scores = transcoder_scores(z.model, tc, z.task.all_facts())
    assert scores.loss_recovered > 0.8, scores  # the zero-ablated model loses everything
    assert all(v < 0.2 for v in scores.fvu), scores
    if kw.get("architecture", "topk") == "topk":
        assert all(v <= 4 for v in scores.l0)


def test_cross_layer_decoders_only_write_downstream():
    tc = Transcoder(_config(n_layers=3, cross_layer=True))
    assert torch.equal(tc.writes, torch.tensor([[1, 1, 1], [0, 1, 1], [0, 0, 1]], dtype=torch.bool))
    x = torch.randn(5, 3, 32)
    z = tc.encode(x)
    z_later_only = z.clone()
    z_later_only[:, 0] = 0
    # features of layer 0 change the outputs of layers 0..2; those of layer 2 only layer 2's
    y, y0 = tc.decode(z, x), tc.decode(z_later_only, x)
    assert (y - y0)[:, 0].abs().max() > 0
    z2 = z.clone()
    z2[:, 2] = 0
    assert torch.allclose(tc.decode(z2, x)[:, :2], y[:, :2])
    assert not torch.equal(Transcoder(_config(n_layers=3)).writes, tc.writes)


def test_replacement_with_errors_is_exact_and_hooks_come_off(recall):
    z, x, y = recall
    tc = Transcoder(_config())
    train_transcoder(tc, x, y, steps=200)
    tokens = z.task.sample(8, 3).tokens
    clean = z.model(tokens)
    xs, ys = mlp_activations(z.model, tokens)
    errors = (ys - tc(xs)[0]).reshape(8, 4, 2, 32)
    with replaced(z.model, tc, errors=errors) as run:
        exact = z.model(tokens)
    assert torch.allclose(exact, clean, atol=1e-4)
    assert run.features.shape == (8, 4, 2, 64)
    assert torch.equal(z.model(tokens), clean)


def test_circuit_tracer_files_round_trip(recall, tmp_path):
    z, x, y = recall
    for kw in (dict(skip=True), dict(cross_layer=True), dict(architecture="jumprelu", k=None)):
        tc = Transcoder(_config(**kw))
        train_transcoder(tc, x, y, steps=50)
        folder = save_circuit_tracer(tc, tmp_path / tc.cfg.kind.replace(" ", "-") / tc.cfg.architecture, "factual-recall")
        back = load_circuit_tracer(folder)
        assert torch.allclose(back(x[:16])[0], tc(x[:16])[0], atol=1e-5)
    from safetensors.torch import load_file
    layer0 = load_file(str(tmp_path / "per-layer-skip" / "topk" / "layer_0.safetensors"))
    assert layer0["W_enc"].shape == (64, 32) and layer0["W_dec"].shape == (64, 32)  # feature-major, as circuit-tracer
    assert int(layer0["k"]) == 4
    with pytest.raises(FileNotFoundError, match="not a folder written by save_circuit_tracer"):
        load_circuit_tracer(tmp_path)


@pytest.mark.parametrize("kw, message", [
    (dict(architecture="topk", k=None), "needs k"),
    (dict(architecture="relu", k=4), "only used by topk"),
    (dict(architecture="gelu", k=None), "architecture must be one of"),
    (dict(d_latent=0), "d_latent must be a positive int"),
])
def test_config_bad_input(kw, message):
    with pytest.raises(ValueError, match=message):
        _config(**kw)


def test_shape_errors(recall):
    z, x, y = recall
    tc = Transcoder(_config())
    with pytest.raises(ValueError, match=r"reads \[..., layer=2, d_in=32\]"):
        tc(torch.randn(3, 32))
    wide = Transcoder(_config(d_in=16, d_out=16))
    with pytest.raises(ValueError, match="cannot replace the MLPs"), replaced(z.model, wide):
        pass
