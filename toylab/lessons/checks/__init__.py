"""The checkers of every lesson's exercises, one module per lesson; importing registers them."""

from toylab.lessons.checks import grokking, induction, patching, sae, superposition, tour  # noqa: F401
