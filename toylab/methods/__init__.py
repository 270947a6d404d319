"""Interpretability methods: plain functions from (model, data, options) to a result dataclass."""

from toylab.methods.detectors import (
    DETECTORS,
    HeadScores,
    head_scores,
    target_positions,
)
from toylab.methods.fourier import (
    FrequencyLosses,
    check_key_frequencies,
    embedding_frequency_norms,
    excluded_loss,
    fourier_basis,
    frequency_losses,
    key_frequencies,
    mlp_frequency_spectrum,
    neuron_frequencies,
    restricted_loss,
)
from toylab.methods.superposition import (
    FeatureStatus,
    PhaseDiagram,
    dimensionality,
    feature_norms,
    feature_status,
    interference,
    phase_diagram,
    regular_polygon,
)

__all__ = [
    "FeatureStatus",
    "PhaseDiagram",
    "dimensionality",
    "feature_norms",
    "feature_status",
    "interference",
    "phase_diagram",
    "regular_polygon",
    "DETECTORS",
    "FrequencyLosses",
    "HeadScores",
    "check_key_frequencies",
    "embedding_frequency_norms",
    "excluded_loss",
    "fourier_basis",
    "frequency_losses",
    "head_scores",
    "key_frequencies",
    "mlp_frequency_spectrum",
    "neuron_frequencies",
    "restricted_loss",
    "target_positions",
]
