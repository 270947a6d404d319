"""Export a toylab transformer to TransformerLens, key for key, logits unchanged.

Axis names used in shape comments:
    head, d_model, d_head, d_mlp     as in TransformerLens (see ``toylab.models``)
    d_vocab, d_vocab_out, n_ctx      input tokens, output logits, longest sequence
    batch, pos                       sequence and token position of activations

    tl_model = to_transformer_lens(toylab.zoo.load("induction-2l"))
    logits, cache = tl_model.run_with_cache(tokens)     # the same logits as toylab's, to ~1e-6
    tl_model.toylab_truth.nodes["L1H1"]                  # TLSite("blocks.1.attn.hook_z", head=1)

Two backends, feature-detected (``backend="auto"``):
    "hooked"   ``HookedTransformer(HookedTransformerConfig(...))``: TransformerLens up to 3.x
               (tested: 3.9.0).
               Its state dict has toylab's keys and shapes exactly (plus the ``mask`` and
               ``IGNORE`` buffers it derives from the config), so the weights load unchanged.
    "bridge"   ``TransformerBridge.boot_native(cfg)`` with compatibility-mode hook names:
               TransformerLens 4.x, which no longer ships ``HookedTransformer`` (tested: 4.3.0;
               3.9.0 has both backends, and both are tested there).
               The native model stores each projection as an ``nn.Linear`` [out, in], so the
               head-split weights are reshaped on the way in (a reshape, never arithmetic).
               Its native attention cannot fire ``hook_result`` or ``hook_{q,k,v}_input``
               (TransformerLens refuses the flags), and it fires ``hook_attn_scores`` with the
               softmaxed pattern, not the scores; in 3.x its ``hook_pattern`` edits do not
               reach the output either (a warning says so). The hooked backend has none of this.

No weight processing is applied unless ``process_weights`` asks for it: TransformerLens's
defaults (fold LayerNorm, centre the writing weights and the unembedding) are exact up to
float rounding except ``center_unembed``, which shifts every position's logits by a constant.

Both global RNG streams are left alone: the TransformerLens model is built without its
random initialisation (``init_weights=False``) under ``torch.random.fork_rng``.

TransformerLens and the other libraries are imported only when a function needs them, so
``import toylab.interop`` works without them; a missing one raises ``ImportError`` naming
the extra to install (``pip install "toylab[tl]"``).
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from toylab.interop.truth import TLTruth, tl_truth
from toylab.models import Transformer, TransformerConfig
from toylab.truth import Truth

BACKENDS = ("auto", "hooked", "bridge")
# toylab's TransformerConfig fields this exporter knows how to carry. A field added to
# toylab later must be taught here first: an unknown one fails loudly, never silently.
_KNOWN_FIELDS = {"n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx", "d_mlp", "act_fn",
                 "d_vocab_out", "normalization_type", "attention_dir", "init_range", "ln_eps"}
_TL_ACT_FNS = ("relu", "gelu", "gelu_new", "silu")
_TL_NORMS = (None, "LN")
# Buffers TransformerLens derives from the config; the only keys toylab's state dict lacks.
_TL_BUFFER_LEAVES = ("mask", "IGNORE")
_PROCESS_DEFAULTS = {"fold_ln": True, "center_writing_weights": True, "center_unembed": True}


class MissingExtraError(ImportError):
    """An optional library (TransformerLens, nnsight, SAELens) that a function needs is not installed."""


def require(module: str, extra: str, what: str) -> Any:
    """Import ``module`` or say which toylab extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{what} needs the optional package {module!r}, which is not installed ({err}); "
            f'install it with: pip install torch==2.13.0 "toylab[{extra}]"   '
            f"(the torch pin keeps pip from swapping your torch for another build)"
        ) from None


def _tl() -> Any:
    return require("transformer_lens", "tl", "exporting to TransformerLens")


def tl_version() -> str:
    """The installed TransformerLens version (raises if it is not installed)."""
    from importlib.metadata import version

    _tl()
    return version("transformer-lens")


def has_hooked_transformer() -> bool:
    """Whether the installed TransformerLens still ships ``HookedTransformer`` (2.x, 3.x; not 4.x)."""
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        _tl()  # raises the install hint if TransformerLens itself is missing
        return False
    return True


def has_bridge() -> bool:
    """Whether the installed TransformerLens offers ``TransformerBridge.boot_native`` (3.x, 4.x)."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        _tl()
        return False
    return hasattr(TransformerBridge, "boot_native")


def resolve_backend(backend: str = "auto") -> str:
    """"hooked" where ``HookedTransformer`` exists, else "bridge"; checks an explicit choice."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("auto", "hooked") and has_hooked_transformer():
        return "hooked"
    if backend == "hooked":
        raise ValueError(f"backend='hooked' needs HookedTransformer, which TransformerLens {tl_version()} "
                         "no longer ships; use backend='bridge' (or 'auto'), or install transformer-lens==3.9.0")
    if not has_bridge():
        raise ValueError(f"TransformerLens {tl_version()} has neither HookedTransformer nor "
                         "TransformerBridge.boot_native; install transformer-lens 3.9.0 or 4.3.0")
    return "bridge"


# ---- configuration -----------------------------------------------------------------------


def check_exportable(cfg: TransformerConfig) -> None:
    """Raise ``ValueError`` naming the field if TransformerLens cannot represent ``cfg`` exactly."""
    if not isinstance(cfg, TransformerConfig):
        raise TypeError(f"expected a toylab TransformerConfig, got {type(cfg).__name__}")
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(fields - _KNOWN_FIELDS)
    if unknown:
        raise ValueError(f"TransformerConfig fields {unknown} are new to the TransformerLens exporter; teach "
                         "toylab/interop/transformer_lens.py what they mean in TransformerLens before exporting")
    if cfg.act_fn not in _TL_ACT_FNS:
        raise ValueError(f"act_fn={cfg.act_fn!r} has no TransformerLens equivalent; it supports {_TL_ACT_FNS}")
    if cfg.normalization_type not in _TL_NORMS:
        raise ValueError(f"normalization_type={cfg.normalization_type!r} cannot be exported; "
                         f"the exporter supports {_TL_NORMS}")


def tl_config_kwargs(cfg: TransformerConfig, dtype: torch.dtype = torch.float32, **flags: bool) -> dict[str, Any]:
    """``HookedTransformerConfig`` keyword arguments equal to ``cfg`` (and hook ``flags``)."""
    check_exportable(cfg)
    return {
        "n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_ctx": cfg.n_ctx, "d_head": cfg.d_head,
        "n_heads": cfg.n_heads, "d_vocab": cfg.d_vocab, "d_vocab_out": cfg.d_vocab_out,
        # TransformerLens wants d_mlp only with an MLP; attn_only says there is none.
        **({"d_mlp": cfg.d_mlp} if not cfg.attn_only else {}),
        "act_fn": cfg.act_fn, "attn_only": cfg.attn_only,
        "normalization_type": cfg.normalization_type, "eps": cfg.ln_eps,
        "positional_embedding_type": "standard", "attention_dir": cfg.attention_dir,
        "init_weights": False,  # the weights are copied in; no draw from the global RNG
        "device": "cpu", "dtype": dtype,
        **flags,
    }


# ---- weights --------------------------------------------------------------------------------


def _state(model: Transformer) -> dict[str, torch.Tensor]:
    """The weights on the CPU, in the model's own dtype (float32, or float64 for exact checks)."""
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def _load_hooked(tl_model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load toylab's state dict key for key; fail unless only derived buffers are left out."""
    own = tl_model.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(f"{key}: toylab has shape {tuple(value.shape)}, TransformerLens expects "
                             f"{tuple(own[key].shape)}; the configs disagree")
    # Not load_and_process_state_dict: it centres the unembedding by default, shifting logits.
    result = tl_model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k.rsplit(".", 1)[-1] not in _TL_BUFFER_LEAVES]
    if missing or result.unexpected_keys:
        raise ValueError(f"state dicts do not match key for key: TransformerLens lacks {result.unexpected_keys}, "
                         f"toylab lacks {missing}")


def bridge_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """toylab's weights under the keys of ``TransformerBridge.boot_native``'s state dict.

    Reshapes only: nn.Linear stores [out, in], with heads flattened as head * d_head + i.
    """
    cfg = model.cfg
    s = _state(model)
    h, d, m = cfg.n_heads, cfg.d_head, cfg.d_model
    out = {"embed.weight": s["embed.W_E"],  # [d_vocab, d_model]
           "pos_embed.weight": s["pos_embed.W_pos"],  # [n_ctx, d_model]
           "unembed.weight": s["unembed.W_U"].T.contiguous(),  # [d_vocab_out, d_model]
           "unembed.bias": s["unembed.b_U"]}  # [d_vocab_out]
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        for x in "QKV":
            W = s[f"{p}attn.W_{x}"]  # [head, d_model, d_head]
            out[f"{p}attn.{x.lower()}.weight"] = W.permute(0, 2, 1).reshape(h * d, m)  # [head * d_head, d_model]
            out[f"{p}attn.{x.lower()}.bias"] = s[f"{p}attn.b_{x}"].reshape(h * d)
        out[f"{p}attn.o.weight"] = s[f"{p}attn.W_O"].reshape(h * d, m).T.contiguous()  # [d_model, head * d_head]
        out[f"{p}attn.o.bias"] = s[f"{p}attn.b_O"]
        if not cfg.attn_only:
            out[f"{p}mlp.in.weight"] = s[f"{p}mlp.W_in"].T.contiguous()  # [d_mlp, d_model]
            out[f"{p}mlp.in.bias"] = s[f"{p}mlp.b_in"]
            out[f"{p}mlp.out.weight"] = s[f"{p}mlp.W_out"].T.contiguous()  # [d_model, d_mlp]
            out[f"{p}mlp.out.bias"] = s[f"{p}mlp.b_out"]
        if cfg.normalization_type == "LN":
            for ln in ("ln1", "ln2") if not cfg.attn_only else ("ln1",):
                out[f"{p}{ln}.weight"], out[f"{p}{ln}.bias"] = s[f"{p}{ln}.w"], s[f"{p}{ln}.b"]
    if cfg.normalization_type == "LN":
        out["ln_final.weight"], out["ln_final.bias"] = s["ln_final.w"], s["ln_final.b"]
    return out


def _load_bridge(bridge: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = bridge.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(f"{key}: converted shape {tuple(value.shape)}, the bridge expects {tuple(own[key].shape)}")
    result = bridge.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"the bridge's state dict does not match: missing {result.missing_keys}, "
                         f"unexpected {result.unexpected_keys}")


# ---- the exporter ---------------------------------------------------------------------------


def to_transformer_lens(model: Any, *, backend: str = "auto", truth: Truth | None = None,
                        use_attn_result: bool = False, use_split_qkv_input: bool = False,
                        use_hook_mlp_in: bool = False,
                        process_weights: bool | Mapping[str, bool] = False) -> nn.Module:
    """A TransformerLens model computing exactly what ``model`` computes, with its truth attached.

    ``model``: a toylab ``Transformer`` or a zoo model (``toylab.zoo.load(...)``, whose truth
    is attached unless ``truth`` is given). Returns a ``HookedTransformer`` or a
    ``TransformerBridge`` (see the module docstring for ``backend``), in eval mode, on the
    CPU, in the model's dtype (float32; float64 too, for exact comparisons), with attributes:

        toylab_truth    ``TLTruth`` (the circuit in hook names and head indices) or None
        toylab_config   the toylab ``TransformerConfig``
        toylab_backend  "hooked" or "bridge"

    The flags are TransformerLens's own (``hook_result``, ``hook_{q,k,v}_input``,
    ``hook_mlp_in`` fire only when set); they change no number. ``process_weights=True``
    applies TransformerLens's default processing, a mapping chooses its options
    (``fold_ln``, ``center_writing_weights``, ``center_unembed``, ...).
    """
    if hasattr(model, "model") and isinstance(model.model, Transformer):  # a ZooModel
        truth = model.truth if truth is None else truth
        model = model.model
    if not isinstance(model, Transformer):
        raise TypeError(f"to_transformer_lens exports a toylab Transformer or zoo model, got {type(model).__name__}"
                        + (" (toy models of superposition have no TransformerLens counterpart)"
                           if type(model).__name__ == "ToyModel" else ""))
    cfg = model.cfg
    check_exportable(cfg)
    mapped = tl_truth(truth, cfg) if truth is not None else None
    chosen = resolve_backend(backend)
    flags = {"use_attn_result": use_attn_result, "use_split_qkv_input": use_split_qkv_input,
             "use_hook_mlp_in": use_hook_mlp_in}
    if isinstance(process_weights, Mapping):
        processing: dict[str, bool] | None = {**_PROCESS_DEFAULTS, **process_weights}
    else:
        processing = dict(_PROCESS_DEFAULTS) if process_weights else None
    with torch.random.fork_rng(devices=[]):  # TransformerLens may still draw while building
        if chosen == "hooked":
            tl_model = _build_hooked(model, flags, processing)
        else:
            tl_model = _build_bridge(model, flags, processing)
    tl_model.eval()
    tl_model.toylab_truth = mapped
    tl_model.toylab_config = cfg
    tl_model.toylab_backend = chosen
    return tl_model


def _dtype(model: Transformer) -> torch.dtype:
    dtype = model.embed.W_E.dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the model's weights are {dtype}; export a float32 (or float64) model, "
                         "e.g. copy.deepcopy(model).float()")
    return dtype


def _build_hooked(model: Transformer, flags: dict[str, bool], processing: dict[str, bool] | None) -> nn.Module:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tl_cfg = HookedTransformerConfig(**tl_config_kwargs(model.cfg, _dtype(model), **flags))
    with warnings.catch_warnings():
        # TL 3.x warns that HookedTransformer is deprecated; exporting to it is this backend's job.
        warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*", category=DeprecationWarning)
        tl_model = HookedTransformer(tl_cfg, move_to_device=False)
    _load_hooked(tl_model, _state(model))
    if processing is not None:
        tl_model.process_weights_(**processing)
    return tl_model


def _build_bridge(model: Transformer, flags: dict[str, bool], processing: dict[str, bool] | None) -> nn.Module:
    from transformer_lens.model_bridge import TransformerBridge

    unsupported = [name for name in ("use_attn_result", "use_split_qkv_input") if flags[name]]
    if unsupported:
        # Its native attention exposes no per-head fork point: TransformerLens itself refuses.
        raise ValueError(
            f"{unsupported}: TransformerBridge.boot_native (TransformerLens {tl_version()}) cannot fire "
            "hook_result or hook_q/k/v_input. Use backend='hooked' with transformer-lens 3.9.0, or patch "
            "those hooks on the toylab model itself, where they always fire under the same names")
    kwargs = tl_config_kwargs(model.cfg, _dtype(model))
    kwargs.update(use_hook_mlp_in=flags["use_hook_mlp_in"], model_name="toylab")
    bridge = TransformerBridge.boot_native(kwargs, dtype=_dtype(model))
    _load_bridge(bridge, bridge_state_dict(model))
    # Compatibility mode gives HookedTransformer's hook names and shapes (hook_z per head,
    # hook_resid_mid, ...); no_processing keeps the weights as loaded unless asked.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if processing is None:
            bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
        else:
            bridge.enable_compatibility_mode(disable_warnings=True, **processing)
    if not _bridge_pattern_hook_edits_output():
        warnings.warn(
            f"TransformerLens {tl_version()}'s boot_native bridge fires hook_pattern after the attention has "
            "been computed: a hook that edits the pattern does not change the output (TransformerLens 4.x "
            "fixed this). Use backend='hooked' here for pattern interventions", stacklevel=3)
    return bridge


def _bridge_pattern_hook_edits_output() -> bool:
    """Whether the native bridge applies hook_pattern before the value matmul (TL 4.x: yes)."""
    try:
        from transformer_lens.model_bridge.sources.native.model import NativeAttention
    except ImportError:
        return False
    return bool(getattr(NativeAttention, "accepts_pattern_fn", False))


# ---- TransformerLens's own patching utilities on an exported model ------------------------

# toylab's activation-patching target -> (transformer_lens.patching function, its result's axes).
TL_PATCHING = {
    "resid_pre": ("get_act_patch_resid_pre", ("layer", "pos")),
    "resid_mid": ("get_act_patch_resid_mid", ("layer", "pos")),
    "attn_out": ("get_act_patch_attn_out", ("layer", "pos")),
    "mlp_out": ("get_act_patch_mlp_out", ("layer", "pos")),
    "head": ("get_act_patch_attn_head_out_all_pos", ("layer", "head")),
    "head_pos": ("get_act_patch_attn_head_out_by_pos", ("layer", "pos", "head")),
    "q": ("get_act_patch_attn_head_q_all_pos", ("layer", "head")),
    "k": ("get_act_patch_attn_head_k_all_pos", ("layer", "head")),
    "v": ("get_act_patch_attn_head_v_all_pos", ("layer", "head")),
    "pattern": ("get_act_patch_attn_head_pattern_all_pos", ("layer", "head")),
}


@torch.no_grad()
def tl_patching_inputs(tl_model: nn.Module, pair: Any, metric: Any = None) -> tuple[torch.Tensor, Any, Any]:
    """What a ``transformer_lens.patching`` utility takes, for a toylab counterfactual pair.

    Returns ``(corrupted_tokens, clean_cache, normalised_metric)``: the clean run's
    ``ActivationCache`` from the TransformerLens model, and toylab's normalised score as a
    scalar metric of the logits,

        score = (metric(patched) - metric(corrupted)) / (metric(clean) - metric(corrupted))

    with ``metric`` the logit difference of ``toylab.tasks.logit_diff`` unless given.
    """
    from toylab.tasks.base import logit_diff, normalised

    raw = metric if metric is not None else (lambda logits: logit_diff(logits, pair))
    clean_logits, clean_cache = tl_model.run_with_cache(pair.clean.tokens)
    clean = float(raw(clean_logits))
    corrupted = float(raw(tl_model(pair.corrupted.tokens)))
    normalised(clean, clean, corrupted)  # raises now where no score is defined

    def score(logits: torch.Tensor) -> torch.Tensor:  # a scalar, as TransformerLens requires
        return normalised(raw(logits), clean, corrupted)

    return pair.corrupted.tokens, clean_cache, score


@torch.no_grad()
def tl_activation_patching(tl_model: nn.Module, pair: Any, target: str, metric: Any = None,
                           inputs: tuple[torch.Tensor, Any, Any] | None = None) -> torch.Tensor:
    """TransformerLens's own patching sweep for ``target`` on an exported model, denoising.

    Runs the ``transformer_lens.patching`` utility of ``TL_PATCHING[target]`` (one hooked
    forward of the whole batch per patch): the corrupted input, with clean activations
    patched in, scored by toylab's normalised metric (see ``tl_patching_inputs``; pass
    ``inputs`` to reuse them across sweeps). The result is comparable entry for entry with
    ``toylab.methods.activation_patching(model, pair, target).scores``: the same axes
    ([layer, pos], [layer, head] or [layer, head, pos]).
    """
    patching = require("transformer_lens.patching", "tl", "TransformerLens's patching utilities")
    if target not in TL_PATCHING:
        raise ValueError(f"no TransformerLens patching utility for {target!r}; choose one of {sorted(TL_PATCHING)}")
    cfg = getattr(tl_model, "toylab_config", None)
    if target in ("resid_mid", "mlp_out") and cfg is not None and cfg.attn_only:
        raise ValueError(f"target {target!r} needs an MLP (TransformerLens fires no hook_resid_mid in "
                         "attention-only models), but the model is attention-only")
    corrupted_tokens, clean_cache, normalised = inputs if inputs is not None else tl_patching_inputs(
        tl_model, pair, metric)
    name, axes = TL_PATCHING[target]
    scores = getattr(patching, name)(tl_model, corrupted_tokens, clean_cache, normalised)
    if axes == ("layer", "pos", "head"):
        scores = scores.permute(0, 2, 1)  # toylab's head_pos axes: [layer, head, pos]
    return scores.detach().cpu()


__all__ = ["BACKENDS", "MissingExtraError", "TLTruth", "bridge_state_dict", "check_exportable",
           "has_bridge", "has_hooked_transformer", "require", "resolve_backend", "tl_config_kwargs",
           "TL_PATCHING", "tl_activation_patching", "tl_patching_inputs", "tl_version", "to_transformer_lens"]
