"""Metrics against known features (Hungarian matching, perfect vs random dictionaries) and
the SAELens folder format."""

import itertools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from toylab.sae import (
    SAE,
    SAEConfig,
    SAELensFormatError,
    SyntheticFeatures,
    linear_sum_assignment,
    load_saelens,
    save_saelens,
    score_sae,
    train_sae,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def brute_force(C):
    n, m = C.shape
    if n <= m:
        return min(sum(C[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
    return min(sum(C[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m))


def test_hungarian_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(150):
        n, m = (int(v) for v in rng.integers(1, 6, 2))
        C = rng.normal(size=(n, m))
        if rng.random() < 0.3:
            C = np.round(C)  # ties
        rows, cols = linear_sum_assignment(C)
        assert len(rows) == min(n, m) and len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        assert abs(C[rows, cols].sum() - brute_force(C)) < 1e-9
        r2, c2 = linear_sum_assignment(torch.tensor(C), maximize=True)
        assert abs(C[r2, c2].sum() + brute_force(-C)) < 1e-9


def _perfect_sae(data, threshold=0.4):
    sae = SAE(SAEConfig(d_in=data.d_in, d_sae=data.n_features, architecture="jumprelu", jumprelu_init_threshold=threshold))
    perm = torch.randperm(data.n_features, generator=gen(0))  # latent order must not matter
    with torch.no_grad():
        sae.W_dec.copy_(data.features[perm])
        sae.W_enc.copy_(data.features[perm].T)
    return sae


def test_perfect_dictionary_scores_high_random_scores_low():
    data = SyntheticFeatures(d_in=256, n_features=512, feature_probability=0.005, seed=1)
    x, c = data.sample(4000, gen(2))
    perfect = score_sae(_perfect_sae(data), data.features, x, c)
    assert perfect.mmcs > 0.999 and perfect.matched_cosine > 0.999 and perfect.uniqueness == 1.0
    # interference between the 512 superposed directions makes a few false detections
    assert perfect.mcc > 0.95 and perfect.f1 > 0.85 and perfect.recall > 0.95
    assert perfect.fvu < 0.1 and 0.9 < perfect.coefficient_shrinkage < 1.1
    perm = torch.randperm(data.n_features, generator=gen(0))  # _perfect_sae's latent order
    assert [int(perm[j]) for j in perfect.matched_latent] == list(range(data.n_features))
    random = score_sae(SAE(SAEConfig(d_in=256, d_sae=512, architecture="relu", seed=7)), data.features, x, c)
    assert random.mmcs < 0.4 and random.matched_cosine < 0.3 and random.mcc < 0.4 and random.f1 < 0.3
    for s in (perfect, random):
        assert 0 <= s.dead_fraction <= 1 and 0 <= s.precision <= 1 and 0 <= s.recall <= 1
        assert len(s.f1_per_feature) == 512
        assert abs(s.explained_variance - (1 - s.fvu)) < 1e-9


def test_score_shape_errors():
    data = SyntheticFeatures(d_in=8, n_features=16, seed=0)
    x, c = data.sample(10, gen(0))
    sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture="relu"))
    with pytest.raises(ValueError, match="coefficients"):
        score_sae(sae, data.features, x, c[:, :5])
    with pytest.raises(ValueError, match="d_in"):
        score_sae(SAE(SAEConfig(d_in=4, d_sae=16, architecture="relu")), data.features, x, c)


@pytest.mark.parametrize("arch,extra", [("relu", {}), ("topk", {"k": 3}), ("jumprelu", {"jumprelu_init_threshold": 0.05})])
def test_saelens_round_trip(tmp_path, arch, extra):
    data = SyntheticFeatures(d_in=12, n_features=24, feature_probability=0.1, seed=0)
    sae = SAE(SAEConfig(d_in=12, d_sae=30, architecture=arch, **extra))
    train_sae(sae, data.sample, steps=30, batch_size=64, seed=0)
    folder = save_saelens(sae, tmp_path / "sae", hook_name="blocks.0.hook_resid_post", model_name="induction-2l")
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    cfg = json.loads((folder / "cfg.json").read_text())
    for key in ("architecture", "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations"):
        assert key in cfg, key
    assert cfg["architecture"] == {"relu": "standard"}.get(arch, arch)
    assert (cfg["d_in"], cfg["d_sae"]) == (12, 30)
    meta = cfg["metadata"]
    assert tuple(int(v) for v in meta["sae_lens_version"].split(".")[:3]) >= (6, 0, 0)
    assert meta["hook_name"] == "blocks.0.hook_resid_post" and meta["model_name"] == "induction-2l"
    assert meta["toylab"]["sae_config"]["architecture"] == arch
    weights = load_file(folder / "sae_weights.safetensors")
    expected = {"W_enc", "b_enc", "W_dec", "b_dec"} | ({"threshold"} if arch == "jumprelu" else set())
    assert set(weights) == expected
    assert weights["W_enc"].shape == (12, 30) and weights["W_dec"].shape == (30, 12)
    loaded = load_saelens(folder)
    assert loaded.cfg == sae.cfg
    x, _ = data.sample(100, gen(1))
    with torch.no_grad():
        a, za = sae(x)
        b, zb = loaded(x)
    assert torch.equal(za, zb) if arch != "jumprelu" else torch.allclose(za, zb, atol=1e-6)
    assert torch.allclose(a, b, atol=1e-6)


def test_saelens_malformed_folders(tmp_path):
    sae = SAE(SAEConfig(d_in=6, d_sae=10, architecture="topk", k=2))
    good = save_saelens(sae, tmp_path / "good", "hook_embed", "m")
    with pytest.raises(SAELensFormatError, match="not found"):
        load_saelens(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SAELensFormatError, match="cfg.json is missing"):
        load_saelens(tmp_path / "empty")
    cfg = json.loads((good / "cfg.json").read_text())

    def variant(name, cfg_data=None, weights=None, raw_weights=None):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "cfg.json").write_text(json.dumps(cfg_data or cfg) if not isinstance(cfg_data, str) else cfg_data)
        if raw_weights is not None:
            (folder / "sae_weights.safetensors").write_bytes(raw_weights)
        else:
            save_file(weights or load_file(good / "sae_weights.safetensors"), folder / "sae_weights.safetensors")
        return folder

    with pytest.raises(SAELensFormatError, match="unknown architecture 'gated'"):
        load_saelens(variant("arch", {**cfg, "architecture": "gated"}))
    bad = load_file(good / "sae_weights.safetensors")
    bad["W_dec"] = torch.zeros(10, 7)
    with pytest.raises(SAELensFormatError, match="W_dec has shape"):
        load_saelens(variant("shape", weights=bad))
    missing = load_file(good / "sae_weights.safetensors")
    del missing["b_enc"]
    with pytest.raises(SAELensFormatError, match="no tensor 'b_enc'"):
        load_saelens(variant("missing", weights=missing))
    with pytest.raises(SAELensFormatError, match="not valid JSON"):
        load_saelens(variant("json", cfg_data="{oops"))
    with pytest.raises(SAELensFormatError, match="safetensors"):
        load_saelens(variant("trunc", raw_weights=b"\x00\x01garbage"))
    with pytest.raises(SAELensFormatError, match="k must be"):
        load_saelens(variant("k", {**cfg, "k": 0}))
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAELensFormatError, match="sae_weights.safetensors is missing"):
        load_saelens(tmp_path / "noweights")
