"""Lesson 7's fixtures, shared by the lesson and its checkers."""

# The zoo's induction models, on which exercise 7.2 scores the attention heuristic.
INDUCTION_MODELS = ("induction-constructed", "induction-siit", "induction-2l", "induction-tiny")
