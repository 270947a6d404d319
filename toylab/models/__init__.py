"""Models: the hookable transformer (TransformerLens names and shapes) and its parts."""

from toylab.models.config import TransformerConfig
from toylab.models.transformer import Transformer

__all__ = ["Transformer", "TransformerConfig"]
