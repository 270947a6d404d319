"""The checker: right answers pass, wrong ones are rejected with a reason and a hint."""

import pytest
import torch

from toylab.lessons import ExerciseFailed, Wrong, check, exercise, get


def resid_missing_pos_embed(cache):
    return cache["hook_embed"] + cache["blocks.0.hook_attn_out"]


def resid_without_mlp(cache):
    return cache["hook_embed"] + cache["hook_pos_embed"] + cache["blocks.0.hook_attn_out"]


def head_output_with_bias(model, cache, layer, head):
    z = cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
    return z @ model.blocks[layer].attn.W_O[head] + model.blocks[layer].attn.b_O


def head_output_wrong_head(model, cache, layer, head):
    z = cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
    return z @ model.blocks[layer].attn.W_O[1 - head]


WRONG = {
    "tour.resid_after_layer0": [resid_missing_pos_embed, resid_without_mlp, "not a function"],
    "tour.head_output": [head_output_with_bias, head_output_wrong_head],
    "tour.most_important_head": ["L0H0", "L1H3", "MLP0", 42, ["L1H1", "L0H2"]],
}


@pytest.mark.parametrize("ex_id,answer", [(k, a) for k, answers in WRONG.items() for a in answers],
                         ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", type(v).__name__))
def test_wrong_answers_are_rejected_with_a_message_and_a_hint(ex_id, answer, capsys):
    feedback = check(ex_id, answer)
    assert not feedback.passed and feedback.done
    assert feedback.message and feedback.hint
    assert "[wrong]" in capsys.readouterr().out


def test_a_decoy_answer_is_told_what_the_truth_says():
    feedback = check("tour.most_important_head", "L0H0")
    assert "not in the circuit" in feedback.message


def test_unfinished_and_crashing_answers_are_reported_not_raised():
    def stub(cache):
        raise NotImplementedError

    def crash(cache):
        return cache["no such hook"]

    assert not check("tour.resid_after_layer0", stub).done
    crashed = check("tour.resid_after_layer0", crash)
    assert crashed.done and "raised" in crashed.message


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("TOYLAB_LESSONS_STRICT", "1")
    with pytest.raises(ExerciseFailed, match="tour.resid_after_layer0"):
        check("tour.resid_after_layer0", resid_missing_pos_embed)


def test_unknown_exercise_names_the_nearest():
    with pytest.raises(KeyError, match="tour.head_output"):
        get("tour.head_outptu")


def test_exercise_registration_validates():
    with pytest.raises(ValueError, match="difficulty"):
        exercise("x.y", "t", "implement", "trivial", 1, "h")(lambda a: "ok")
    with pytest.raises(ValueError, match="registered twice"):
        exercise("tour.head_output", "t", "implement", "easy", 1, "h")(lambda a: "ok")


def test_close_comparison_explains_the_mismatch():
    from toylab.lessons.checks._common import expect_close

    with pytest.raises(Wrong, match="shape"):
        expect_close(torch.zeros(2, 3), torch.zeros(3, 2), "x")
    with pytest.raises(Wrong, match="by up to 1"):
        expect_close(torch.tensor([0.0, 1.0]), torch.zeros(2), "x")
