"""toylab.interop.sae_lens: toylab SAEs load in SAELens itself, and SAELens SAEs load in toylab."""

import sys

import pytest
import torch

import toylab
from toylab.interop import MissingExtraError, from_sae_lens, to_sae_lens
from toylab.sae.sae import SAE, SAEConfig
from toylab.sae.saelens import load_saelens, save_saelens

ARCHITECTURES = [("relu", None, "StandardSAE"), ("topk", 4, "TopKSAE"), ("jumprelu", None, "JumpReLUSAE")]


def _sae(architecture: str, k: int | None) -> SAE:
    sae = SAE(SAEConfig(d_in=32, d_sae=96, architecture=architecture, k=k, seed=3))
    with torch.no_grad():  # non-zero biases, so a dropped or misread bias shows
        generator = torch.Generator().manual_seed(0)
        sae.b_enc.copy_(torch.randn(sae.b_enc.shape, generator=generator) * 0.1)
        sae.b_dec.copy_(torch.randn(sae.b_dec.shape, generator=generator) * 0.1)
    return sae


def _inputs() -> torch.Tensor:
    return torch.randn(64, 32, generator=torch.Generator().manual_seed(1))  # [batch, d_in]


@pytest.mark.parametrize("architecture, k, lens_class", ARCHITECTURES)
def test_sae_lens_loads_a_toylab_folder_and_computes_the_same(sae_lens, tmp_path, architecture, k, lens_class):
    sae, x = _sae(architecture, k), _inputs()
    save_saelens(sae, tmp_path, hook_name="blocks.0.hook_resid_post", model_name="induction-2l")
    lens = sae_lens.SAE.load_from_disk(str(tmp_path), device="cpu")
    assert type(lens).__name__ == lens_class
    assert lens.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    with torch.no_grad():
        z, z_lens = sae.encode(x), lens.encode(x)
        assert (z > 0).sum() > 64  # latents are active: the comparison is not 0 == 0
        assert torch.allclose(z, z_lens, atol=1e-6)
        assert torch.allclose(sae.decode(z), lens.decode(z_lens), atol=1e-6)
        assert torch.allclose(sae(x)[0], lens(x), atol=1e-6)


@pytest.mark.parametrize("architecture, k, lens_class", ARCHITECTURES)
def test_round_trip_through_sae_lens_objects(sae_lens, architecture, k, lens_class):
    sae, x = _sae(architecture, k), _inputs()
    lens = to_sae_lens(sae, hook_name="blocks.1.hook_resid_pre", model_name="induction-2l")
    assert type(lens).__name__ == lens_class
    back = from_sae_lens(lens)
    assert back.cfg.architecture == architecture and back.cfg.k == k
    with torch.no_grad():
        assert torch.equal(back.encode(x), sae.encode(x))
        assert torch.allclose(lens.encode(x), sae.encode(x), atol=1e-6)


def test_toylab_loads_an_sae_lens_native_sae(sae_lens, tmp_path):
    """An SAE made by SAELens (no toylab metadata at all), saved by SAELens, read by toylab."""
    cfg = sae_lens.StandardSAEConfig(d_in=16, d_sae=48, apply_b_dec_to_input=True)
    lens = sae_lens.StandardSAE(cfg)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(2)
        for param in (lens.W_enc, lens.W_dec, lens.b_enc, lens.b_dec):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    lens.save_model(tmp_path)
    sae = load_saelens(tmp_path)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (lens.encode(x) > 0).any()
        assert torch.allclose(sae.encode(x), lens.encode(x), atol=1e-6)
        assert torch.allclose(sae(x)[0], lens(x), atol=1e-6)


def test_an_exported_sae_reads_the_exported_models_hook(sae_lens, transformer_lens):
    """The SAE's hook_name is a TransformerLens hook of the exported model, with the same activations."""
    from toylab.interop import to_transformer_lens

    zm = toylab.zoo.load("induction-2l")
    hook = "blocks.1.hook_resid_pre"
    sae = SAE(SAEConfig(d_in=zm.model.cfg.d_model, d_sae=128, architecture="topk", k=8, seed=0))
    lens = to_sae_lens(sae, hook_name=hook, model_name="induction-2l")
    tl_model = to_transformer_lens(zm)
    tokens = zm.task.sample(4, seed=0).tokens
    with torch.no_grad():
        _, tl_cache = tl_model.run_with_cache(tokens, names_filter=lens.cfg.metadata.hook_name)
        _, cache = zm.model.run_with_cache(tokens, names=[hook])
        theirs = lens.encode(tl_cache[lens.cfg.metadata.hook_name])  # [batch, pos, d_sae]
        ours = sae.encode(cache[hook])
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_a_missing_sae_lens_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sae_lens", None)
    with pytest.raises(MissingExtraError, match=r'"toylab\[sae\]"'):
        to_sae_lens(_sae("relu", None), hook_name="blocks.0.hook_resid_post")
