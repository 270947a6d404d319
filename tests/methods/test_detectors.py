import pytest
import torch

from toylab.methods.detectors import head_scores, target_positions
from toylab.tasks import Induction
from toylab.truth.construct import construct_induction


def test_target_positions_follow_the_definitions():
    tokens = torch.tensor([[0, 5, 6, 7, 5, 6]])
    assert target_positions(tokens, "previous-token").tolist() == [[-1, 0, 1, 2, 3, 4]]
    assert target_positions(tokens, "duplicate-token").tolist() == [[-1, -1, -1, -1, 1, 2]]
    assert target_positions(tokens, "induction").tolist() == [[-1, -1, -1, -1, 2, 3]]
    with pytest.raises(ValueError, match="unknown detector"):
        target_positions(tokens, "copy")


def test_scores_single_out_the_constructed_heads_and_their_decoys():
    task = Induction(n_tokens=24, n_ctx=16, min_seg_len=3)
    model = construct_induction(task)
    tokens = task.sample(64, seed=0).tokens
    prev = head_scores(model, tokens, "previous-token")
    induction = head_scores(model, tokens, "induction")
    assert prev["L0H1"] > 0.95 and induction["L1H1"] > 0.95
    # The decoys look exactly the same: attention scores are correlational.
    assert prev["L0H0"] == pytest.approx(prev["L0H1"]) and induction["L1H0"] == pytest.approx(induction["L1H1"])
    assert prev["L1H1"] < 0.3 and induction["L0H1"] < 0.3
    assert {h for h, _ in induction.top(2)} == {"L1H0", "L1H1"}
    with pytest.raises(ValueError, match="head id"):
        prev["MLP0"]


def test_no_repeated_token_is_a_clear_error():
    model = construct_induction(Induction(n_tokens=24, n_ctx=16, min_seg_len=3))
    with pytest.raises(ValueError, match="no query position"):
        head_scores(model, torch.arange(10).unsqueeze(0), "induction")
