import json
import math

import pytest

from toylab.models import TransformerConfig

BASE = dict(n_layers=1, d_model=32, n_heads=2, d_head=16, d_vocab=10, n_ctx=5)


def test_defaults_are_resolved_and_json_round_trips():
    cfg = TransformerConfig(**BASE, d_mlp=64)
    assert cfg.d_vocab_out == 10
    assert cfg.init_range == pytest.approx(0.8 / math.sqrt(32))
    assert not cfg.attn_only and TransformerConfig(**BASE).attn_only
    again = TransformerConfig.from_json(cfg.to_json())
    assert again == cfg


@pytest.mark.parametrize(
    "change,message",
    [
        ({"d_model": 0}, "d_model must be a positive int"),
        ({"n_heads": 2.5}, "n_heads must be a positive int"),
        ({"d_mlp": -3}, "d_mlp must be a positive int, or None"),
        ({"act_fn": "tanh"}, "act_fn must be one of"),
        ({"normalization_type": "RMS"}, "normalization_type must be one of"),
        ({"attention_dir": "sideways"}, "attention_dir must be one of"),
        ({"init_range": -1.0}, "init_range must be > 0"),
    ],
)
def test_invalid_values_are_rejected_with_the_field_named(change, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**{**BASE, **change})


def test_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(ValueError, match=r"unknown TransformerConfig fields \['d_modle'\]"):
        TransformerConfig.from_dict({**BASE, "d_modle": 3})
    partial = dict(BASE)
    del partial["n_ctx"]
    with pytest.raises(ValueError, match=r"missing required fields \['n_ctx'\]"):
        TransformerConfig.from_dict(partial)
    with pytest.raises(ValueError, match="malformed"):
        TransformerConfig.from_json("{not json")


def test_config_is_frozen():
    cfg = TransformerConfig(**BASE)
    with pytest.raises(AttributeError):
        cfg.d_model = 64  # type: ignore[misc]


# ---- TransformerLens configs -------------------------------------------------------------------

# What HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=8, d_head=4, d_vocab=11,
# attn_only=True, device="cpu").to_dict() holds (TransformerLens 3.9.0), written out by hand,
# with its dtype as json.dumps(..., default=str) writes it.
TL_DICT = {
    "d_model": 16, "d_head": 4, "n_layers": 2, "n_ctx": 8, "n_heads": 4, "d_mlp": 64, "d_vocab": 11,
    "device": "cpu", "use_attn_result": False, "use_split_qkv_input": False, "default_prepend_bos": True,
    "positional_embedding_type": "standard", "n_key_value_heads": None, "attn_only": True, "gated_mlp": False,
    "uses_rms_norm": False, "eps": 1e-05, "layer_norm_folding": False, "act_fn": "relu", "normalization_type": "LN",
    "num_experts": None, "experts_per_token": None, "final_rms": False, "dtype": "torch.float32",
    "model_name": "custom", "use_attn_scale": True, "attn_scale": 2.0, "use_hook_mlp_in": False, "use_attn_in": False,
    "use_qk_norm": False, "clip_qkv": None, "use_logn_attn": False, "train_seq_length": None,
    "use_dynamic_ntk_rope": False, "use_local_attn": False, "ungroup_grouped_query_attention": False,
    "original_architecture": None, "from_checkpoint": False, "checkpoint_index": None,
    "checkpoint_label_type": None, "checkpoint_value": None, "tokenizer_name": None, "window_size": None,
    "attn_types": None, "init_mode": "gpt2", "n_devices": 1, "attention_dir": "causal", "seed": None,
    "initializer_range": 0.2, "init_weights": True, "scale_attn_by_inverse_layer_idx": False, "d_vocab_out": 11,
    "parallel_attn_mlp": False, "rotary_dim": None, "n_params": 2048, "use_hook_tokens": False,
    "tokenizer_prepends_bos": None, "post_embedding_ln": False, "rotary_base": 10000, "rotary_base_local": None,
    "rotary_scaling_factor": 1.0, "trust_remote_code": False, "rotary_adjacent_pairs": False, "load_in_4bit": False,
    "quantization_method": None, "relative_attention_max_distance": None, "relative_attention_num_buckets": None,
    "decoder_start_token_id": None, "tie_word_embeddings": False, "use_normalization_before_and_after": False,
    "attn_scores_soft_cap": -1.0, "output_logits_soft_cap": -1.0, "use_NTK_by_parts_rope": False,
    "NTK_by_parts_low_freq_factor": 1.0, "NTK_by_parts_high_freq_factor": 4.0, "NTK_by_parts_factor": 8.0,
    "NTK_original_ctx_len": 8192, "use_yarn_rope": False, "yarn_factor": 1.0, "yarn_attention_factor": 1.0,
    "yarn_beta_fast": 32.0, "yarn_beta_slow": 1.0, "yarn_original_max_position_embeddings": 4096,
    "yarn_truncate": True, "yarn_global_attn_only": False, "use_attention_sinks": False, "norm_topk_prob": False,
}


def test_a_transformer_lens_config_dict_is_read():
    cfg = TransformerConfig.from_dict(TL_DICT)
    assert cfg == TransformerConfig(n_layers=2, d_model=16, n_heads=4, d_head=4, d_vocab=11, n_ctx=8, d_mlp=None,
                                    normalization_type="LN", init_range=0.2, ln_eps=1e-5)
    assert cfg.attn_only  # d_mlp 64 is TransformerLens's filler for attention-only models
    assert TransformerConfig.from_json(json.dumps(TL_DICT)) == cfg


def test_each_transformer_lens_field_is_mapped_ignored_or_checked():
    from toylab.models.config import TL_IGNORED, TL_MAPPED, TL_REFUSED

    assert set(TL_DICT) <= TL_MAPPED | TL_IGNORED | set(TL_REFUSED)
    assert not (TL_MAPPED & TL_IGNORED or TL_MAPPED & set(TL_REFUSED) or TL_IGNORED & set(TL_REFUSED))
    # What does not change the computation may take any value.
    changed = {**TL_DICT, "device": "cuda", "n_devices": 2, "dtype": "torch.bfloat16", "seed": 7, "model_name": "mine",
               "use_attn_result": True, "use_split_qkv_input": True, "use_hook_tokens": True, "init_weights": False,
               "tokenizer_name": "gpt2", "n_params": 1, "rotary_dim": 4, "window_size": 3}
    assert TransformerConfig.from_dict(changed) == TransformerConfig.from_dict(TL_DICT)


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"attn_only": False, "d_mlp": 48, "act_fn": "gelu_new"}, {"d_mlp": 48, "act_fn": "gelu_new"}),
        ({"attn_only": False, "d_mlp": None, "act_fn": "gelu"}, {"d_mlp": 64, "act_fn": "gelu"}),  # TL's 4 d_model
        ({"attn_only": False, "act_fn": "gelu_fast"}, {"act_fn": "gelu_new"}),  # the same function
        ({"attn_only": False, "act_fn": "gelu_pytorch_tanh"}, {"act_fn": "gelu_new"}),
        ({"act_fn": None}, {"act_fn": "relu"}),  # attention-only (TransformerLens 2.x leaves it None)
        ({"normalization_type": None}, {"normalization_type": None}),
        ({"normalization_type": "LNPre"}, {"normalization_type": "LN"}),  # gain 1, bias 0 (the loader adds them)
        ({"d_vocab_out": -1}, {"d_vocab_out": 11}),
        ({"d_vocab_out": 3}, {"d_vocab_out": 3}),
        ({"n_heads": -1}, {"n_heads": 4}),  # d_model // d_head, as TransformerLens resolves it
        ({"eps": 1e-6}, {"ln_eps": 1e-6}),
        ({"attention_dir": "bidirectional"}, {"attention_dir": "bidirectional"}),
        ({"attn_scale": -1.0}, {}),  # unresolved: sqrt(d_head)
        ({"init_mode": "xavier_normal", "initializer_range": 1.0}, {"init_range": 0.8 / math.sqrt(16)}),  # a gain
        # features that are off where they have nothing to act on
        ({"gated_mlp": True, "parallel_attn_mlp": True}, {"d_mlp": None}),  # attention-only
        ({"normalization_type": None, "final_rms": True}, {"normalization_type": None}),
        ({"attn_scores_soft_cap": 0.0, "output_logits_soft_cap": None}, {}),
    ],
)
def test_transformer_lens_fields_map_to_toylab_fields(change, expected):
    cfg = TransformerConfig.from_dict({**TL_DICT, **change})
    for field, value in expected.items():
        assert getattr(cfg, field) == pytest.approx(value), field


@pytest.mark.parametrize(
    "change,message",
    [
        ({"positional_embedding_type": "rotary", "rotary_dim": 4}, "positional_embedding_type='rotary'"),
        ({"positional_embedding_type": "shortformer"}, "positional_embedding_type='shortformer'"),
        ({"attn_only": False, "parallel_attn_mlp": True}, r"parallel_attn_mlp=True \(attention and MLP in parallel"),
        ({"attn_only": False, "gated_mlp": True}, r"gated_mlp=True \(a gated MLP"),
        ({"n_key_value_heads": 2}, "n_key_value_heads=2 .grouped-query attention"),
        ({"use_attn_scale": False}, r"attention scores divided by 1.0 .*sqrt\(d_head\) = 2"),
        ({"attn_scale": 3.0}, "attention scores divided by 3.0"),
        ({"use_local_attn": True, "window_size": 3}, "use_local_attn=True"),
        ({"final_rms": True}, "final_rms=True"),
        ({"normalization_type": "RMS"}, "normalization_type='RMS'"),
        ({"normalization_type": "RMSPre"}, "normalization_type='RMSPre'"),
        ({"attn_only": False, "act_fn": "solu_ln"}, "act_fn='solu_ln'"),
        ({"attn_scores_soft_cap": 50.0}, "attn_scores_soft_cap=50.0"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
        ({"post_embedding_ln": True}, "post_embedding_ln=True"),
        ({"attn_only": False, "num_experts": 4, "experts_per_token": 2}, "num_experts=4"),
        ({"use_qk_norm": True}, "use_qk_norm=True"),
        ({"load_in_4bit": True}, "load_in_4bit=True"),
    ],
)
def test_a_transformer_lens_feature_toylab_cannot_compute_is_refused_by_name(change, message):
    with pytest.raises(ValueError, match=f"TransformerLens config: toylab cannot compute this model: .*{message}"):
        TransformerConfig.from_dict({**TL_DICT, **change})


def test_a_transformer_lens_config_names_what_it_cannot_read():
    with pytest.raises(ValueError, match=r"fields \['use_fancy_attention'\] are not TransformerLens fields"):
        TransformerConfig.from_dict({**TL_DICT, "use_fancy_attention": True})
    with pytest.raises(ValueError, match=r"missing required fields \['d_vocab'\]"):
        TransformerConfig.from_dict({k: v for k, v in TL_DICT.items() if k != "d_vocab"})
    with pytest.raises(ValueError, match="d_vocab is -1"):
        TransformerConfig.from_dict({**TL_DICT, "d_vocab": -1})


@pytest.mark.parametrize("normalization_type", ["LN", "LNPre"])
def test_a_folder_with_a_transformer_lens_config_loads(tmp_path, normalization_type):
    """A researcher's folder: TransformerLens's config.json beside TransformerLens-named weights."""
    import torch
    from safetensors.torch import save_file

    from toylab.checkpoint import load_model
    from toylab.models import Transformer

    data = {**TL_DICT, "attn_only": False, "d_mlp": 32, "normalization_type": normalization_type}
    reference = Transformer(TransformerConfig.from_dict({**data, "normalization_type": "LN"}), seed=3)
    weights = reference.state_dict()
    if normalization_type == "LNPre":  # folded: no LayerNorm weights in the file, gain 1 and bias 0 meant
        weights = {k: v for k, v in weights.items() if not k.split(".")[-2].startswith("ln")}
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(data))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"))
    model, card = load_model(folder)
    assert card == {} and model.cfg == reference.cfg
    tokens = torch.arange(8).reshape(1, 8)
    assert torch.equal(model(tokens), reference(tokens))
