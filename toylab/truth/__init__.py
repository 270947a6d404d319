"""Ground truth: every zoo model's circuit as data, and the certificates that prove it."""

from toylab.components import Edge
from toylab.tasks.algorithm import Algorithm
from toylab.truth.truth import AttentionRole, CausalVariable, FeatureDirection, Trap, Truth

__all__ = ["Algorithm", "AttentionRole", "CausalVariable", "Edge", "FeatureDirection", "Trap", "Truth"]
