"""Lesson 6's fixtures, shared by the lesson, its checkers and the lab's "6 Grokking" page."""

MODEL = "modadd-113"  # the lesson's model: the paper's one-layer transformer on p = 113
PROGRESS_MODEL = "modadd-113"  # the run whose shipped progress measures the lesson (section 8) and the page read
