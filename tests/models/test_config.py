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
