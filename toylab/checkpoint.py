"""Saving and loading models safely: safetensors weights, JSON configs, atomic writes.

A saved model is a folder::

    config.json          the TransformerConfig
    model.safetensors    the weights, TransformerLens names
    card.json            what made it: recipe, seed, metrics, time, versions, weights hash

Every file is written to a temporary name in the same folder, flushed to disk and then
renamed over the target, so a crash leaves either the old file or the new one, never a
half-written one. Nothing is ever unpickled: optimizer state, the one non-tensor-dict
object, is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from toylab.devices import DeviceLike, resolve_device
from toylab.models import Transformer, TransformerConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"


class CheckpointError(Exception):
    """A checkpoint that is missing, truncated, corrupted or from another model."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make shipped and shared files unreadable to others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:
            # a failed write or fsync (a full disk) names no file: name the one being written
            raise type(err)(err.errno, err.strerror, str(path)) from err
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path} is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{what} {path} is not valid JSON ({err}); the file is corrupted") from None


def state_dict_bytes(model: torch.nn.Module) -> bytes:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_safetensors_bytes(tensors)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_weights(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, checking its hash when one is given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights not found: {path} is missing")
    data = path.read_bytes()
    if expected_sha256 is not None and sha256(data) != expected_sha256:
        raise CheckpointError(
            f"{path} does not match the hash recorded in its card: the file is truncated or "
            "corrupted. Retrain it (`toylab train NAME`) or restore it from a clean copy."
        )
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({err}); it is truncated, corrupted or "
            "not a toylab checkpoint. Retrain it (`toylab train NAME`)."
        ) from None


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict`` with an error that names what does not fit.

    TransformerLens's own ``state_dict()`` also holds each attention layer's causal mask and
    masking constant (``blocks.{l}.attn.mask``, ``.IGNORE``): buffers, not weights, which
    toylab builds itself, so they are dropped rather than refused.
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.endswith((".attn.mask", ".attn.IGNORE"))}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}")
        if wrong:
            parts.append(
                "wrong shapes " + ", ".join(f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in wrong[:4])
            )
        raise CheckpointError(
            f"{source} does not fit this model ({'; '.join(parts)}). It was saved from a "
            "different architecture or is not a toylab/TransformerLens checkpoint."
        )
    model.load_state_dict(state)


def save_model(folder: str | Path, model: Transformer, card: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write config, weights and card; returns the card with the weights' hash added."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = state_dict_bytes(model)
    card = {**(card or {}), "weights_sha256": sha256(weights)}
    atomic_write_json(folder / CONFIG_FILE, model.cfg.to_dict())
    atomic_write_bytes(folder / WEIGHTS_FILE, weights)
    atomic_write_json(folder / CARD_FILE, card)  # last: a card means the folder is complete
    return card


def load_model(folder: str | Path, device: DeviceLike = "cpu") -> tuple[Transformer, dict[str, Any]]:
    """Read a folder written by ``save_model``; verifies the weights against the card's hash."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"no checkpoint folder at {folder}")
    card = read_json(folder / CARD_FILE, "model card") if (folder / CARD_FILE).exists() else {}
    raw_config = read_json(folder / CONFIG_FILE, "model config")
    try:
        cfg = TransformerConfig.from_dict(raw_config)  # toylab's form, or TransformerLens's
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{folder / CONFIG_FILE} is not a valid toylab model config: {err}") from None
    state = load_weights(folder / WEIGHTS_FILE, card.get("weights_sha256"))
    model = Transformer(cfg)
    if isinstance(raw_config, dict) and raw_config.get("normalization_type") == "LNPre":
        # TransformerLens's LayerNorm without gain and bias (fold_ln moved them into the next
        # layer) is toylab's LayerNorm with gain 1 and bias 0, as a fresh model has them.
        fresh = {k: v for k, v in model.state_dict().items() if k.split(".")[-2].startswith("ln")}
        state = {**fresh, **state}
    load_into(model, state, str(folder / WEIGHTS_FILE))
    return model.to(resolve_device(device)).eval(), card
