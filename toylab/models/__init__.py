"""Models: the hookable transformer (TransformerLens names and shapes) and its parts, and the
toy models of superposition (Elhage et al. 2022)."""

from toylab.models.config import TransformerConfig
from toylab.models.superposition import SuperpositionConfig, ToyModel, train_toy_model
from toylab.models.transformer import Transformer

__all__ = ["SuperpositionConfig", "ToyModel", "Transformer", "TransformerConfig", "train_toy_model"]
