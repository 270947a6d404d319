import dataclasses
import json
import signal

import pytest
import torch

from toylab.models import TransformerConfig
from toylab.tasks import Induction, ModularAddition
from toylab.train import Callback, TrainConfig, TrainingInterrupted, evaluate, train

MODADD = ModularAddition(p=7, train_frac=0.5)
MODADD_MODEL = TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
                                 d_vocab=MODADD.d_vocab, d_vocab_out=MODADD.d_vocab_out, n_ctx=3)
INDUCTION = Induction(n_tokens=10, n_ctx=9, min_seg_len=2)
INDUCTION_MODEL = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=INDUCTION.d_vocab, n_ctx=9)
SHORT = TrainConfig(steps=24, lr=3e-3, eval_every=8, checkpoint_every=5, seed=3)


def weights_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("task,model_cfg,batch_size", [(MODADD, MODADD_MODEL, None), (INDUCTION, INDUCTION_MODEL, 8)])
def test_same_seed_same_weights_other_seed_other_weights(task, model_cfg, batch_size):
    cfg = dataclasses.replace(SHORT, batch_size=batch_size)
    a = train(model_cfg, task, cfg, progress=False)
    b = train(model_cfg, task, cfg, progress=False)
    c = train(model_cfg, task, dataclasses.replace(cfg, seed=4), progress=False)
    assert weights_equal(a.model, b.model)
    assert not weights_equal(a.model, c.model)
    assert a.history == [{**h, "time_s": a.history[i]["time_s"]} for i, h in enumerate(b.history)]


def test_training_learns_and_records_history():
    cfg = TrainConfig(steps=300, lr=1e-2, weight_decay=0.1, eval_every=100, seed=0)
    result = train(MODADD_MODEL, MODADD, cfg, progress=False)
    assert [h["step"] for h in result.history] == [0, 100, 200, 300]
    assert result.history[0]["train/loss"] > 1.5  # ~ln 7 at init
    assert result.metrics["train/accuracy"] == 1.0
    assert result.metrics == {k: v for k, v in result.history[-1].items() if "/" in k}
    assert evaluate(result.model, MODADD)["train/accuracy"] == 1.0




@pytest.mark.parametrize("task,model_cfg,batch_size", [(MODADD, MODADD_MODEL, None), (INDUCTION, INDUCTION_MODEL, 8)])
def test_ctrl_c_saves_and_resume_matches_an_uninterrupted_run(tmp_path, task, model_cfg, batch_size, interrupt_at):
    cfg = dataclasses.replace(SHORT, batch_size=batch_size)
    straight = train(model_cfg, task, cfg, out_dir=tmp_path / "straight", progress=False)

    # Whatever handler was there before (Python's default, or SIG_IGN under nohup) comes back.
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 13"):
        train(model_cfg, task, cfg, out_dir=tmp_path / "resumed", callbacks=[interrupt_at("sigint", 13)],
              progress=False)
    assert (tmp_path / "resumed/checkpoints/LATEST").read_text() == "step-0000013"
    assert signal.getsignal(signal.SIGINT) is before  # handler restored

    resumed = train(model_cfg, task, cfg, out_dir=tmp_path / "resumed", progress=False)
    assert resumed.steps == 24
    assert weights_equal(straight.model, resumed.model)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in straight.history]
    assert not (tmp_path / "resumed/checkpoints").exists()  # cleaned up once finished


def test_crash_resumes_from_the_last_periodic_checkpoint(tmp_path, interrupt_at):
    straight = train(MODADD_MODEL, MODADD, SHORT, progress=False)
    with pytest.raises(RuntimeError, match="power cut"):
        train(MODADD_MODEL, MODADD, SHORT, out_dir=tmp_path, callbacks=[interrupt_at("crash", 13)], progress=False)
    assert (tmp_path / "checkpoints/LATEST").read_text() == "step-0000010"
    resumed = train(MODADD_MODEL, MODADD, SHORT, out_dir=tmp_path, progress=False)
    assert weights_equal(straight.model, resumed.model)
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["steps"] == 24 and card["seed"] == 3 and card["recipe"]["task"]["p"] == 7
    assert set(card["versions"]) >= {"toylab", "torch", "python"}


def test_finished_run_is_loaded_not_retrained(tmp_path, interrupt_at):
    first = train(MODADD_MODEL, MODADD, SHORT, out_dir=tmp_path, progress=False)
    again = train(MODADD_MODEL, MODADD, SHORT, out_dir=tmp_path, callbacks=[interrupt_at("crash", 1)], progress=False)
    assert weights_equal(first.model, again.model)
    assert again.history == first.history


def test_a_folder_holding_another_run_is_refused(tmp_path, interrupt_at):
    with pytest.raises(RuntimeError):
        train(MODADD_MODEL, MODADD, SHORT, out_dir=tmp_path, callbacks=[interrupt_at("crash", 2)], progress=False)
    with pytest.raises(ValueError, match=r"train.lr is 0.003 there, 0.001 here"):
        train(MODADD_MODEL, MODADD, dataclasses.replace(SHORT, lr=1e-3), out_dir=tmp_path, progress=False)


def test_corrupted_resume_checkpoint_is_a_clear_error(tmp_path, interrupt_at):
    from toylab.checkpoint import CheckpointError

    with pytest.raises(RuntimeError):
        train(MODADD_MODEL, MODADD, SHORT, out_dir=tmp_path, callbacks=[interrupt_at("crash", 7)], progress=False)
    optimizer = tmp_path / "checkpoints/step-0000005/optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="optimizer state .* unreadable"):
        train(MODADD_MODEL, MODADD, SHORT, out_dir=tmp_path, progress=False)


def test_stop_when_and_callbacks():
    events = []

    class Spy(Callback):
        def on_eval(self, run, metrics):
            events.append(("eval", run.step))

        def on_train_end(self, run):
            events.append(("end", run.step))

    cfg = TrainConfig(steps=1000, lr=1e-2, weight_decay=0.1, eval_every=50, stop_when="train/accuracy >= 1", seed=0)
    result = train(MODADD_MODEL, MODADD, cfg, callbacks=[Spy()], progress=False)
    assert result.stopped_early and result.steps < 1000
    assert result.metrics["train/accuracy"] == 1.0
    assert all(h["train/accuracy"] < 1 for h in result.history[:-1])
    assert events[-1] == ("end", result.steps) and events[-2] == ("eval", result.steps)


def test_a_callback_can_stop_the_run():
    class StopAt7(Callback):
        def on_step_end(self, run):
            if run.step == 7:
                run.stop()

    result = train(MODADD_MODEL, MODADD, SHORT, callbacks=[StopAt7()], progress=False)
    assert result.steps == 7 and result.history[-1]["step"] == 7


def test_bad_configs_and_mismatched_tasks():
    with pytest.raises(ValueError, match="stop_when must look like"):
        TrainConfig(steps=10, stop_when="accuracy is high")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="does not fit the task"):
        train(INDUCTION_MODEL, MODADD, SHORT, progress=False)
    with pytest.raises(ValueError, match="not an evaluation metric; known: .*test/accuracy"):
        train(MODADD_MODEL, MODADD, dataclasses.replace(SHORT, stop_when="val/accuracy >= 1"), progress=False)
    with pytest.raises(ValueError, match="batch size is required|batch_size"):
        train(INDUCTION_MODEL, INDUCTION, SHORT, progress=False)


def test_warmup_ramps_the_learning_rate():
    cfg = TrainConfig(steps=10, lr=1e-2, warmup_steps=4)
    assert [cfg.lr_at(s) for s in range(6)] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2, 1e-2])
