"""Interoperability: toylab models, truths and SAEs in TransformerLens, nnsight and SAELens.

    from toylab.interop import to_transformer_lens
    tl_model = to_transformer_lens(toylab.zoo.load("induction-2l"))   # HookedTransformer / TransformerBridge
    tl_model.toylab_truth.summary()                                    # the circuit in hook names

    to_transformer_lens(model)        toylab Transformer or zoo model -> TransformerLens, same logits
    tl_truth(truth, cfg), tl_site     a truth / a component id in TransformerLens naming
    tl_activation_patching(...)       TransformerLens's own patching utilities, toylab's metric
                                      (tl_patching_inputs: their clean cache and metric, reusable)
    to_nnsight(model)                 nnsight.NNsight over the model (module names are hook names)
    to_sae_lens(sae, hook), from_sae_lens(lens_sae)    SAEs through SAELens's folder format

The libraries are optional extras, imported only when a function needs one:
``pip install torch==2.13.0 "toylab[tl]"`` (TransformerLens 3.9.0; ``toylab[tl4]`` for 4.3.0),
``"toylab[sae]"`` (SAELens, which needs TransformerLens < 4) and ``"toylab[nnsight]"``.
Without them this package still imports, and ``tl_truth`` works.
"""

from toylab.interop.nnsight import to_nnsight
from toylab.interop.sae_lens import from_sae_lens, to_sae_lens
from toylab.interop.transformer_lens import (
    MissingExtraError,
    tl_activation_patching,
    tl_patching_inputs,
    tl_version,
    to_transformer_lens,
)
from toylab.interop.truth import TLEdge, TLSite, TLTruth, tl_site, tl_truth

__all__ = [
    "MissingExtraError",
    "TLEdge",
    "TLSite",
    "TLTruth",
    "from_sae_lens",
    "tl_activation_patching",
    "tl_patching_inputs",
    "tl_site",
    "tl_truth",
    "tl_version",
    "to_nnsight",
    "to_sae_lens",
    "to_transformer_lens",
]
