"""The two tests every lesson's wrong-answer file makes of its ``WRONG`` table (exercise id ->
wrong answers): each wrong answer is rejected with a message and a hint, and every exercise of
the lesson has at least two wrong answers under test. In the lesson's test file:

    test_wrong_answers_are_rejected_with_a_message_and_a_hint, test_every_exercise_has_wrong_answers = (
        wrong_answer_tests("atp", WRONG))
"""

from collections.abc import Callable
from typing import Any

import pytest

from toylab.lessons import check, find


def _answer_id(value: Any) -> str:
    return value if isinstance(value, str) else getattr(value, "__name__", type(value).__name__)


def wrong_answer_tests(lesson: str, wrong: dict[str, list], prepare: Callable[[Any], Any] = lambda answer: answer):
    """The two tests, for lesson ``lesson`` (a number, folder or exercise prefix); ``prepare``
    turns a table entry into the answer (for answers built only when their test runs)."""

    @pytest.mark.parametrize("ex_id,answer", [(k, a) for k, answers in wrong.items() for a in answers], ids=_answer_id)
    def test_wrong_answers_are_rejected_with_a_message_and_a_hint(ex_id, answer, capsys):
        feedback = check(ex_id, prepare(answer))
        assert not feedback.passed and feedback.done
        assert feedback.message and feedback.hint
        assert "[wrong]" in capsys.readouterr().out

    def test_every_exercise_of_the_lesson_has_wrong_answers_under_test():
        assert set(find(lesson).exercises) == set(wrong)
        assert all(len(answers) >= 2 for answers in wrong.values())  # one wrong answer proves little

    return test_wrong_answers_are_rejected_with_a_message_and_a_hint, \
        test_every_exercise_of_the_lesson_has_wrong_answers_under_test
