"""The checkers of every lesson's exercises, one module per lesson; importing registers them."""

from toylab.lessons.checks import grokking, induction, patching, probes, sae, superposition, tour  # noqa: F401
from toylab.lessons.checks import validate  # noqa: F401
