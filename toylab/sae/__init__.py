"""Sparse autoencoders on toy data with known features, scored against the truth.

    sae.py       SAEConfig, SAE (W_enc, b_enc, W_dec, b_dec), train_sae, resample_dead_latents
    data.py      SyntheticFeatures (a known dictionary), model_activations (a toylab hook)
    metrics.py   score_sae -> SAEScores (MMCS, MCC, uniqueness, F1, L0, FVU, ...), Hungarian
    saelens.py   save_saelens / load_saelens (SAELens 6.x folder format)
    transcoder.py  Transcoder (per-layer, skip, cross-layer), train_transcoder, replaced (the
                 replacement model), transcoder_scores, save_circuit_tracer / load_circuit_tracer
"""

from toylab.sae.data import SyntheticFeatures, model_activations
from toylab.sae.metrics import (
    SAEScores,
    cosine_matrix,
    linear_sum_assignment,
    matched_cosine,
    mmcs,
    score_sae,
)
from toylab.sae.sae import (
    SAE,
    SAEConfig,
    TrainHistory,
    resample_dead_latents,
    train_sae,
)
from toylab.sae.saelens import SAELensFormatError, load_saelens, save_saelens
from toylab.sae.transcoder import (
    Transcoder,
    TranscoderConfig,
    TranscoderHistory,
    TranscoderScores,
    load_circuit_tracer,
    mlp_activations,
    replaced,
    save_circuit_tracer,
    train_transcoder,
    transcoder_scores,
)

__all__ = [
    "SAE",
    "SAEConfig",
    "SAELensFormatError",
    "SAEScores",
    "SyntheticFeatures",
    "TrainHistory",
    "Transcoder",
    "TranscoderConfig",
    "TranscoderHistory",
    "TranscoderScores",
    "load_circuit_tracer",
    "mlp_activations",
    "replaced",
    "save_circuit_tracer",
    "train_transcoder",
    "transcoder_scores",
    "cosine_matrix",
    "linear_sum_assignment",
    "matched_cosine",
    "load_saelens",
    "mmcs",
    "model_activations",
    "resample_dead_latents",
    "save_saelens",
    "score_sae",
    "train_sae",
]
