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
        """A config from ``to_dict()``'s form, or from a TransformerLens ``HookedTransformerConfig.to_dict()``."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if set(unknown) & TL_ONLY_FIELDS:
            return cls.from_transformer_lens(data)
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

    @classmethod
    def from_transformer_lens(cls, data: dict[str, Any]) -> TransformerConfig:
        """The config of a TransformerLens ``HookedTransformerConfig.to_dict()`` (see TL_MAPPED below).

        Fields that change no number a loaded model computes are ignored (TL_IGNORED); a
        feature toylab does not compute is refused, naming it, when it is on (TL_REFUSED).
        """
        return _from_transformer_lens(cls, data)

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


# ---- TransformerLens configs --------------------------------------------------------------------
# A researcher's config.json may be TransformerLens's ``HookedTransformerConfig.to_dict()``
# (fields of TransformerLens 2.x to 4.x). Each of its fields is mapped, ignored or checked.

# Mapped onto toylab's fields:
#   n_layers, d_model, n_heads (-1: d_model // d_head, as TL resolves it), d_head, d_vocab,
#   n_ctx, attention_dir    the same
#   d_mlp, attn_only        d_mlp, None when attn_only (TL 3.x fills d_mlp = 4 d_model even then)
#   act_fn                  relu, gelu, gelu_new, silu; gelu_fast and gelu_pytorch_tanh are
#                           gelu_new's function (tanh approximation) written differently
#   d_vocab_out             the same; -1 means d_vocab
#   normalization_type      None, "LN"; "LNPre" (LayerNorm whose gain and bias fold_ln moved
#                           into the next layer) is "LN" with gain 1 and bias 0, which the
#                           checkpoint loader supplies; RMS and RMSPre are refused
#   eps                     ln_eps
#   initializer_range       init_range (the std of the weights' normal init, with init_mode gpt2)
#   positional_embedding_type, use_attn_scale, attn_scale: checked: toylab computes learned
#                           absolute positions ("standard") and divides scores by sqrt(d_head)
TL_MAPPED = frozenset({
    "n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx", "attention_dir", "d_mlp", "attn_only",
    "act_fn", "d_vocab_out", "normalization_type", "eps", "initializer_range", "init_mode",
    "positional_embedding_type", "use_attn_scale", "attn_scale",
})
# Ignored: they change no number a loaded model computes.
TL_IGNORED = frozenset({
    # where and in what precision it runs (the weights file decides the dtype of what loads)
    "device", "n_devices", "dtype",
    # how a fresh model draws its weights; a loaded model has its own
    "seed", "init_weights",
    # names, provenance and bookkeeping
    "model_name", "original_architecture", "from_checkpoint", "checkpoint_index", "checkpoint_label_type",
    "checkpoint_value", "n_params", "trust_remote_code",
    # the tokenizer: toylab models take token ids
    "tokenizer_name", "tokenizer_prepends_bos", "default_prepend_bos",
    # hook flags: toylab's hooks always fire, and no hook changes a number
    "use_attn_result", "use_split_qkv_input", "use_hook_mlp_in", "use_attn_in", "use_hook_tokens",
    # settings of features that are off here (each feature is refused below when it is on):
    # rotary embeddings (positional_embedding_type "rotary")
    "rotary_dim", "rotary_base", "rotary_base_local", "rotary_scaling_factor", "rotary_adjacent_pairs",
    "use_NTK_by_parts_rope", "NTK_by_parts_low_freq_factor", "NTK_by_parts_high_freq_factor",
    "NTK_by_parts_factor", "NTK_original_ctx_len", "use_dynamic_ntk_rope", "use_yarn_rope", "yarn_factor",
    "yarn_attention_factor", "yarn_beta_fast", "yarn_beta_slow", "yarn_original_max_position_embeddings",
    "yarn_truncate", "yarn_global_attn_only", "train_seq_length",
    # local attention (use_local_attn), grouped-query attention (n_key_value_heads),
    # mixture of experts (num_experts), encoder-decoder generation
    "window_size", "attn_types", "ungroup_grouped_query_attention", "experts_per_token", "norm_topk_prob",
    "decoder_start_token_id",
})


def _off(value: Any) -> bool:
    return value is None or value is False


def _softcap_off(value: Any) -> bool:  # TransformerLens applies a soft cap only when it is > 0
    return value is None or (isinstance(value, (int, float)) and value <= 0)


# Refused when on: field -> (whether it is off, what toylab would have to compute).
TL_REFUSED: dict[str, tuple[Any, str]] = {
    "final_rms": (_off, "an RMSNorm instead of the final LayerNorm"),
    "parallel_attn_mlp": (_off, "attention and MLP in parallel (GPT-J)"),
    "gated_mlp": (_off, "a gated MLP (W_gate)"),
    "n_key_value_heads": (_off, "grouped-query attention (shared key and value heads, stored as _W_K, _W_V)"),
    "use_local_attn": (_off, "local (windowed) attention"),
    "scale_attn_by_inverse_layer_idx": (_off, "attention scores divided by the layer index + 1"),
    "post_embedding_ln": (_off, "a LayerNorm after the embedding"),
    "num_experts": (_off, "a mixture-of-experts MLP"),
    "use_normalization_before_and_after": (_off, "a normalisation after attention and MLP too (Gemma 2)"),
    "attn_scores_soft_cap": (_softcap_off, "soft-capped attention scores"),
    "output_logits_soft_cap": (_softcap_off, "soft-capped logits"),
    "use_qk_norm": (_off, "normalised queries and keys"),
    "clip_qkv": (_off, "clipped queries, keys and values"),
    "use_logn_attn": (_off, "log-n query scaling"),
    "use_attention_sinks": (_off, "attention sinks"),
    "relative_attention_max_distance": (_off, "relative attention (T5)"),
    "relative_attention_num_buckets": (_off, "relative attention (T5)"),
    "tie_word_embeddings": (_off, "an unembedding tied to the embedding"),
    "load_in_4bit": (_off, "4-bit quantised weights"),
    "quantization_method": (_off, "quantised weights"),
    "uses_rms_norm": (_off, "RMSNorm"),
    "layer_norm_folding": (_off, "LayerNorm weights folded by TransformerBridge"),
}
# Features of an MLP or of a LayerNorm: off by definition where there is none.
_TL_NEEDS_MLP = ("parallel_attn_mlp", "gated_mlp", "num_experts")
_TL_NEEDS_LN = ("final_rms",)
_TL_ACT_FNS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_new", "silu": "silu",
               "gelu_fast": "gelu_new", "gelu_pytorch_tanh": "gelu_new"}
_TL_NORMS = {None: None, "LN": "LN", "LNPre": "LN"}
_TOYLAB_FIELDS = frozenset(f.name for f in dataclasses.fields(TransformerConfig))
# Fields that say a dict is TransformerLens's: any of these, and none is toylab's.
TL_ONLY_FIELDS = (TL_MAPPED | TL_IGNORED | frozenset(TL_REFUSED)) - _TOYLAB_FIELDS


def _from_transformer_lens(cls: type[TransformerConfig], data: dict[str, Any]) -> TransformerConfig:
    where = "TransformerLens config"
    unknown = sorted(set(data) - TL_MAPPED - TL_IGNORED - set(TL_REFUSED))
    if unknown:
        raise ValueError(
            f"{where}: fields {unknown} are not TransformerLens fields that toylab maps or ignores; if they "
            "change nothing the model computes, delete them from config.json")
    missing = sorted({"n_layers", "d_model", "d_head", "n_ctx", "d_vocab"} - set(data))
    if missing:
        raise ValueError(f"{where} is missing required fields {missing}")
    attn_only = bool(data.get("attn_only", False))
    norm = data.get("normalization_type", "LN")  # TransformerLens's default
    on = {name: data[name] for name, (is_off, _) in TL_REFUSED.items()
          if name in data and not is_off(data[name])
          and not (attn_only and name in _TL_NEEDS_MLP) and not (norm is None and name in _TL_NEEDS_LN)}
    problems = [f"{name}={value!r} ({TL_REFUSED[name][1]})" for name, value in on.items()]
    positional = data.get("positional_embedding_type", "standard")
    if positional != "standard":
        problems.append(f"positional_embedding_type={positional!r} (toylab adds learned absolute positions, "
                        "'standard', to the residual stream)")
    if norm not in _TL_NORMS:
        problems.append(f"normalization_type={norm!r} (toylab has LayerNorm, 'LN' or 'LNPre', or none)")
    act_fn = data.get("act_fn")
    if not attn_only and act_fn not in _TL_ACT_FNS:
        problems.append(f"act_fn={act_fn!r} (toylab's MLP has {sorted(_TL_ACT_FNS)})")
    d_head = data["d_head"]
    n_heads = data.get("n_heads", -1)
    if n_heads == -1 and isinstance(d_head, int) and d_head > 0:
        n_heads = data["d_model"] // d_head
    scale = data.get("attn_scale", -1.0) if data.get("use_attn_scale", True) else 1.0
    if scale not in (-1, -1.0) and isinstance(d_head, int) and d_head > 0 and not (
            isinstance(scale, (int, float)) and math.isclose(scale, math.sqrt(d_head), rel_tol=1e-9)):
        problems.append(f"attention scores divided by {scale!r} (use_attn_scale={data.get('use_attn_scale', True)}, "
                        f"attn_scale={data.get('attn_scale', -1.0)!r}; toylab divides by sqrt(d_head) = "
                        f"{math.sqrt(d_head):g})")
    if problems:
        raise ValueError(f"{where}: toylab cannot compute this model: " + "; ".join(problems))
    if data["d_vocab"] == -1:
        raise ValueError(f"{where}: d_vocab is -1 (TransformerLens takes it from a tokenizer); set the "
                         "number of input tokens")
    d_vocab_out = data.get("d_vocab_out", -1)
    init_range = data.get("initializer_range", -1.0)
    return cls(
        n_layers=data["n_layers"], d_model=data["d_model"], n_heads=n_heads, d_head=d_head,
        d_vocab=data["d_vocab"], n_ctx=data["n_ctx"],
        d_mlp=None if attn_only else data.get("d_mlp") or 4 * data["d_model"],  # TransformerLens's default
        act_fn=_TL_ACT_FNS.get(act_fn, "relu"),  # attention-only: unused
        d_vocab_out=None if d_vocab_out == -1 else d_vocab_out,
        normalization_type=_TL_NORMS[norm],
        attention_dir=data.get("attention_dir", "causal"),
        # with another init_mode, initializer_range is a gain, not a std: toylab's default then
        init_range=init_range if data.get("init_mode", "gpt2") == "gpt2" and isinstance(init_range, (int, float))
        and init_range > 0 else None,
        ln_eps=data.get("eps", 1e-5),
    )
