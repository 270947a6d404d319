"""toylab SAEs to SAELens objects and back, through SAELens's folder format.

Axis names: d_in (activation width), d_sae (latents).

``toylab.sae.saelens`` reads and writes the folder format (cfg.json +
sae_weights.safetensors) without SAELens; these two functions hand a toylab SAE to
SAELens itself (``sae_lens.SAE.load_from_disk``) and take one back (``SAE.save_model``),
so what crosses is exactly what a folder on disk would hold::

    lens_sae = to_sae_lens(sae, hook_name="blocks.0.hook_resid_post", model_name="induction-2l")
    lens_sae.encode(x)          # equal to sae.encode(x): [batch, d_sae]
    sae_again = from_sae_lens(lens_sae)

Architectures: toylab "relu" is SAELens "standard"; "topk" and "jumprelu" keep their names.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from toylab.interop.transformer_lens import require
from toylab.sae.sae import SAE
from toylab.sae.saelens import load_saelens, save_saelens


def to_sae_lens(sae: SAE, hook_name: str, model_name: str = "toylab", device: str = "cpu") -> Any:
    """A ``sae_lens.SAE`` with ``sae``'s weights, loaded by SAELens from the folder format."""
    if not isinstance(sae, SAE):
        raise TypeError(f"to_sae_lens exports a toylab SAE, got {type(sae).__name__}")
    sae_lens = require("sae_lens", "sae", "exporting an SAE to SAELens")
    with tempfile.TemporaryDirectory(prefix="toylab-sae-") as folder:
        save_saelens(sae, folder, hook_name=hook_name, model_name=model_name)
        return sae_lens.SAE.load_from_disk(folder, device=device)


def from_sae_lens(lens_sae: Any) -> SAE:
    """A toylab SAE from a ``sae_lens.SAE``, written by SAELens and read by toylab."""
    require("sae_lens", "sae", "importing an SAE from SAELens")
    if not hasattr(lens_sae, "save_model"):
        raise TypeError(f"from_sae_lens needs a sae_lens.SAE, got {type(lens_sae).__name__}")
    with tempfile.TemporaryDirectory(prefix="toylab-sae-") as folder:
        lens_sae.save_model(Path(folder))
        return load_saelens(folder)


__all__ = ["from_sae_lens", "to_sae_lens"]
