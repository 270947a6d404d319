"""Snapshots of the weights along a run: written atomically, loaded in order, kept across resumes."""


import pytest
import torch

from toylab.checkpoint import CheckpointError
from toylab.models import Transformer, TransformerConfig
from toylab.snapshots import Snapshots, load_snapshots, snapshot_name, snapshot_steps
from toylab.tasks import ModularAddition
from toylab.train import Callback, TrainConfig, TrainingInterrupted, train

TASK = ModularAddition(p=7, train_frac=0.5)
MODEL = TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
                          d_vocab=TASK.d_vocab, d_vocab_out=TASK.d_vocab_out, n_ctx=3)
CFG = TrainConfig(steps=22, lr=3e-3, eval_every=8, checkpoint_every=5, seed=3)
EXPECTED_STEPS = [0, 4, 8, 12, 16, 20, 22]  # step 0, every 4, and the last step




class Keep(Callback):
    """Copies the live weights at every step, to compare with the snapshots."""

    def __init__(self):
        self.weights = {}

    def on_step_end(self, run):
        self.weights[run.step] = {k: v.clone() for k, v in run.model.state_dict().items()}


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_snapshots_round_trip_exactly(tmp_path):
    keep = Keep()
    result = train(MODEL, TASK, CFG, callbacks=[Snapshots(tmp_path, every=4), keep], progress=False)
    assert snapshot_steps(tmp_path) == EXPECTED_STEPS
    loaded = list(load_snapshots(tmp_path))
    assert [step for step, _ in loaded] == EXPECTED_STEPS
    init = Transformer(MODEL, seed=CFG.seed).state_dict()
    for step, model in loaded:
        want = init if step == 0 else keep.weights[step]
        assert all(torch.equal(model.state_dict()[k], want[k]) for k in want), step
    assert all(torch.equal(a, b) for a, b in zip(loaded[-1][1].state_dict().values(), result.model.state_dict().values()))
    # an explicit config gives the same models
    assert [s for s, _ in load_snapshots(tmp_path, MODEL)] == EXPECTED_STEPS


@pytest.mark.parametrize("interrupt", [("sigint", 13), ("crash", 14)])
def test_a_resumed_run_writes_the_same_snapshots_as_an_uninterrupted_one(tmp_path, interrupt, interrupt_at):
    train(MODEL, TASK, CFG, out_dir=tmp_path / "straight", callbacks=[Snapshots(tmp_path / "straight/snaps", 4)],
          progress=False)
    with pytest.raises((TrainingInterrupted, RuntimeError)):
        train(MODEL, TASK, CFG, out_dir=tmp_path / "resumed",
              callbacks=[Snapshots(tmp_path / "resumed/snaps", 4), interrupt_at(*interrupt)], progress=False)
    # ("crash", 14): the last checkpoint is step 10, so step 12's snapshot is replayed on resume
    assert snapshot_steps(tmp_path / "resumed/snaps") == [0, 4, 8, 12]
    train(MODEL, TASK, CFG, out_dir=tmp_path / "resumed", callbacks=[Snapshots(tmp_path / "resumed/snaps", 4)],
          progress=False)
    assert files(tmp_path / "resumed/snaps") == files(tmp_path / "straight/snaps")
    assert snapshot_steps(tmp_path / "resumed/snaps") == EXPECTED_STEPS


def test_another_interval_or_model_in_the_same_folder_is_refused(tmp_path):
    train(MODEL, TASK, CFG, callbacks=[Snapshots(tmp_path, every=4)], progress=False)
    with pytest.raises(ValueError, match="every 4 steps, not every 5"):
        Snapshots(tmp_path, every=5)
    other = TransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16,
                              d_vocab=TASK.d_vocab, d_vocab_out=TASK.d_vocab_out, n_ctx=3)
    with pytest.raises(ValueError, match="different model"):
        train(other, TASK, CFG, callbacks=[Snapshots(tmp_path, every=4)], progress=False)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive int"):
            Snapshots(tmp_path / "x", every=bad)


def test_temp_files_are_skipped_and_bad_files_are_clear_errors(tmp_path):
    train(MODEL, TASK, dataclasses_replace_steps(CFG, 4), callbacks=[Snapshots(tmp_path, every=2)], progress=False)
    assert snapshot_steps(tmp_path) == [0, 2, 4]
    (tmp_path / f".{snapshot_name(6)}.abc123.tmp").write_bytes(b"half a file")  # a write cut short
    assert snapshot_steps(tmp_path) == [0, 2, 4]
    assert len(list(load_snapshots(tmp_path))) == 3

    (tmp_path / snapshot_name(2)).write_bytes((tmp_path / snapshot_name(2)).read_bytes()[:100])  # truncated
    snaps = load_snapshots(tmp_path)
    next(snaps)
    with pytest.raises(CheckpointError, match="step-0000002.safetensors is not a readable safetensors file"):
        next(snaps)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="not a snapshot"):
        load_snapshots(foreign)

    other = TransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16,
                              d_vocab=TASK.d_vocab, d_vocab_out=TASK.d_vocab_out, n_ctx=3)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        next(load_snapshots(tmp_path, other))

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no snapshots"):
        load_snapshots(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no snapshot folder"):
        load_snapshots(tmp_path / "missing")


def dataclasses_replace_steps(cfg, steps):
    import dataclasses

    return dataclasses.replace(cfg, steps=steps)
