"""The transformer's configuration: a small frozen dataclass with a JSON round trip.

Field names follow TransformerLens's ``HookedTransformerConfig`` so that export is a
rename-free copy.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

ACT_FNS = ("relu", "gelu", "gelu_new", "silu")
NORMALIZATION_TYPES = (None, "LN")
ATTENTION_DIRS = ("causal", "bidirectional")


@dataclass(frozen=True)
class TransformerConfig:
    n_layers: int  # number of blocks
    d_model: int  # width of the residual stream
    n_heads: int  # attention heads per block
    d_head: int  # width of each head's query, key and value
    d_vocab: int  # number of input tokens
    n_ctx: int  # longest sequence the positional embedding covers
    d_mlp: int | None = None  # MLP hidden width; None makes an attention-only model
    act_fn: str = "relu"  # MLP non-linearity, one of ACT_FNS
    d_vocab_out: int | None = None  # number of output logits; None means d_vocab
    normalization_type: str | None = None  # "LN" for pre-LayerNorm, None for none
    attention_dir: str = "causal"  # "causal" masks future positions, "bidirectional" does not
    init_range: float | None = None  # std of the normal init of weights; None: 0.8 / sqrt(d_model)
    ln_eps: float = 1e-5  # LayerNorm epsilon, unused without LayerNorm

    def __post_init__(self) -> None:
        self._validate()
        # Resolve defaults so the JSON form is explicit and two equal models compare equal.
        if self.d_vocab_out is None:
            object.__setattr__(self, "d_vocab_out", self.d_vocab)
        if self.init_range is None:
            object.__setattr__(self, "init_range", 0.8 / math.sqrt(self.d_model))

    def _validate(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx", "d_vocab_out"):
            value = getattr(self, name)
            if value is None and name == "d_vocab_out":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}")
        if self.d_mlp is not None and (not isinstance(self.d_mlp, int) or self.d_mlp < 1):
            raise ValueError(
                f"TransformerConfig.d_mlp must be a positive int, or None for an attention-only "
                f"model; got {self.d_mlp!r}"
            )
        if self.act_fn not in ACT_FNS:
            raise ValueError(f"TransformerConfig.act_fn must be one of {ACT_FNS}, got {self.act_fn!r}")
        if self.normalization_type not in NORMALIZATION_TYPES:
            raise ValueError(
                f"TransformerConfig.normalization_type must be one of {NORMALIZATION_TYPES}, "
                f"got {self.normalization_type!r}"
            )
        if self.attention_dir not in ATTENTION_DIRS:
            raise ValueError(
                f"TransformerConfig.attention_dir must be one of {ATTENTION_DIRS}, got {self.attention_dir!r}"
            )
        if self.init_range is not None and not (isinstance(self.init_range, (int, float)) and self.init_range > 0):
            raise ValueError(f"TransformerConfig.init_range must be > 0, got {self.init_range!r}")
        if not self.ln_eps > 0:
            raise ValueError(f"TransformerConfig.ln_eps must be > 0, got {self.ln_eps!r}")

    @property
    def attn_only(self) -> bool:
        return self.d_mlp is None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(
                f"unknown TransformerConfig fields {unknown}; valid fields: {sorted(fields)}"
            )
        missing = sorted(
            f.name for f in dataclasses.fields(cls)
            if f.name not in data and f.default is dataclasses.MISSING
        )
        if missing:
            raise ValueError(f"TransformerConfig is missing required fields {missing}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TransformerConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"TransformerConfig JSON is malformed: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"TransformerConfig JSON must be an object, got {type(data).__name__}")
        return cls.from_dict(data)
