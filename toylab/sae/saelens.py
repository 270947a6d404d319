"""Saving and loading SAEs in the SAELens 6.x folder format (SAELens itself is not needed).

Axis names used in shape comments:
    d_in         activation width;  d_sae  number of latents

A folder holds::

    cfg.json                  architecture, d_in, d_sae, dtype, device, apply_b_dec_to_input,
                              normalize_activations, (k for topk), metadata{sae_lens_version,
                              hook_name, model_name, toylab{...the full SAEConfig}}
    sae_weights.safetensors   W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in],
                              b_dec [d_in], threshold [d_sae] (jumprelu only)

SAELens calls the plain ReLU SAE "standard": toylab's "relu" is written as "standard" and
read back as "relu". Files are written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from toylab.checkpoint import atomic_write_bytes, atomic_write_json, read_json
from toylab.sae.sae import SAE, SAEConfig

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SAE_LENS_VERSION = "6.0.0"
TO_SAELENS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}
FROM_SAELENS = {v: k for k, v in TO_SAELENS.items()}


class SAELensFormatError(Exception):
    """A SAELens folder that is missing files, malformed, or not loadable as a toylab SAE."""


def save_saelens(sae: SAE, folder: str | Path, hook_name: str, model_name: str) -> Path:
    """Write ``sae`` to ``folder`` as cfg.json + sae_weights.safetensors; returns the folder."""
    folder = Path(folder)
    cfg = sae.cfg
    tensors = {
        "W_enc": sae.W_enc.detach().cpu().float().contiguous(),  # [d_in, d_sae]
        "b_enc": sae.b_enc.detach().cpu().float().contiguous(),  # [d_sae]
        "W_dec": sae.W_dec.detach().cpu().float().contiguous(),  # [d_sae, d_in]
        "b_dec": sae.b_dec.detach().cpu().float().contiguous(),  # [d_in]
    }
    if cfg.architecture == "jumprelu":
        tensors["threshold"] = sae.threshold.detach().cpu().float().contiguous()  # [d_sae]
    config: dict[str, Any] = {
        "architecture": TO_SAELENS[cfg.architecture],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if cfg.architecture == "topk":
        config["k"] = cfg.k
    config["metadata"] = {
        "sae_lens_version": SAE_LENS_VERSION,
        "sae_lens_training_version": SAE_LENS_VERSION,
        "hook_name": hook_name,
        "model_name": model_name,
        "hook_head_index": None,
        "toylab": {"sae_config": dataclasses.asdict(cfg)},
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / WEIGHTS_FILE, save_safetensors_bytes(tensors))
    atomic_write_json(folder / CFG_FILE, config)
    return folder


def _expect_shape(tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], path: Path) -> None:
    if name not in tensors:
        raise SAELensFormatError(f"{path} has no tensor {name!r} (found {sorted(tensors)})")
    if tuple(tensors[name].shape) != shape:
        raise SAELensFormatError(
            f"{path}: {name} has shape {tuple(tensors[name].shape)}, expected {shape} from cfg.json"
        )


def load_saelens(folder: str | Path) -> SAE:
    """Read a SAELens folder (as written by ``save_saelens`` or SAELens 6) into a toylab SAE."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SAELensFormatError(f"SAE folder not found: {folder}")
    cfg_path, weights_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise SAELensFormatError(f"{path} is missing; a SAELens folder needs {CFG_FILE} and {WEIGHTS_FILE}")
    try:
        raw = read_json(cfg_path, "SAE config")
    except Exception as err:  # CheckpointError from read_json
        raise SAELensFormatError(str(err)) from None
    if not isinstance(raw, dict):
        raise SAELensFormatError(f"{cfg_path} must hold a JSON object")
    arch = raw.get("architecture")
    if arch not in FROM_SAELENS:
        raise SAELensFormatError(
            f"{cfg_path}: unknown architecture {arch!r}; toylab loads {sorted(FROM_SAELENS)}"
        )
    for key in ("d_in", "d_sae"):
        if not isinstance(raw.get(key), int):
            raise SAELensFormatError(f"{cfg_path}: {key} must be an int, got {raw.get(key)!r}")
    if raw.get("normalize_activations", "none") not in ("none", None):
        raise SAELensFormatError(
            f"{cfg_path}: normalize_activations={raw['normalize_activations']!r} is not supported; only 'none'"
        )
    metadata = raw.get("metadata") or {}
    extras = dict(((metadata.get("toylab") or {}).get("sae_config")) or {})
    fields = {f.name for f in dataclasses.fields(SAEConfig)}
    kwargs = {k: v for k, v in extras.items() if k in fields}
    kwargs.update(
        d_in=raw["d_in"],
        d_sae=raw["d_sae"],
        architecture=FROM_SAELENS[arch],
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        k=raw.get("k") if arch == "topk" else None,
    )
    try:
        cfg = SAEConfig(**kwargs)
    except (TypeError, ValueError) as err:
        raise SAELensFormatError(f"{cfg_path}: {err}") from None
    try:
        tensors = load_safetensors_bytes(weights_path.read_bytes())
    except (SafetensorError, Exception) as err:
        raise SAELensFormatError(f"{weights_path} is not a readable safetensors file ({err})") from None
    d_in, d_sae = cfg.d_in, cfg.d_sae
    _expect_shape(tensors, "W_enc", (d_in, d_sae), weights_path)
    _expect_shape(tensors, "b_enc", (d_sae,), weights_path)
    _expect_shape(tensors, "W_dec", (d_sae, d_in), weights_path)
    _expect_shape(tensors, "b_dec", (d_in,), weights_path)
    if cfg.architecture == "jumprelu":
        _expect_shape(tensors, "threshold", (d_sae,), weights_path)
    sae = SAE(cfg)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(tensors[name].float())
        if cfg.architecture == "jumprelu":
            threshold = tensors["threshold"].float()
            if not (threshold > 0).all():
                raise SAELensFormatError(f"{weights_path}: jumprelu thresholds must be > 0 to load into toylab")
            sae.log_threshold.copy_(threshold.log())
    sae.eval()
    return sae


__all__ = ["CFG_FILE", "SAELensFormatError", "WEIGHTS_FILE", "load_saelens", "save_saelens"]
