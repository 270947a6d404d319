"""The checkers of every lesson's exercises, one module per lesson; importing registers them."""

from toylab.lessons.checks import induction, patching, tour  # noqa: F401
