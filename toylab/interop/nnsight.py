"""nnsight on toylab models: no export needed, module names are hook names.

Axis names: batch, pos, head, query_pos, key_pos, d_head (as in ``toylab.models``).

A toylab ``HookPoint`` is an identity module registered at its hook name, so nnsight's
``.output`` of ``model.blocks[0].attn.hook_pattern`` is the tensor toylab's hook of the
same name sees ([batch, head, query_pos, key_pos]), and assigning to it (or to a slice)
is the same intervention as returning a replacement from a toylab hook function::

    lm = to_nnsight(toylab.zoo.load("induction-2l"))
    with lm.trace(tokens):
        pattern = lm.blocks[0].attn.hook_pattern.output.save()
        lm.blocks[1].attn.hook_z.output[:, :, 1] = 0      # ablate L1H1
        logits = lm.output.save()

``lm.get("blocks.0.attn.hook_pattern")`` reaches a hook by its name string.
"""

from __future__ import annotations

from typing import Any

from toylab.interop.transformer_lens import require
from toylab.models import Transformer


def to_nnsight(model: Any) -> Any:
    """``nnsight.NNsight`` wrapping a toylab ``Transformer`` (or a zoo model's ``.model``)."""
    if hasattr(model, "model") and isinstance(model.model, Transformer):  # a ZooModel
        model = model.model
    if not isinstance(model, Transformer):
        raise TypeError(f"to_nnsight wraps a toylab Transformer or zoo model, got {type(model).__name__}")
    nnsight = require("nnsight", "nnsight", "tracing a toylab model with nnsight")
    return nnsight.NNsight(model)


__all__ = ["to_nnsight"]
