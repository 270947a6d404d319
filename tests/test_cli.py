import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from toylab import checkpoint as ckpt
from toylab.cli import main

TOYLAB = [sys.executable, "-m", "toylab.cli"]


def test_list_shows_every_recipe(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("modadd-113", "modadd-tiny", "induction-2l", "induction-tiny"):
        assert name in out


def test_info_rechecks_the_claims(capsys):
    assert main(["info", "modadd-tiny"]) == 0
    out = capsys.readouterr().out
    assert "[ok] test/accuracy >= 0.99" in out and "seed 0" in out


def test_unknown_name_is_a_clear_error(capsys):
    assert main(["info", "induction-2"]) == 2
    err = capsys.readouterr().err
    assert "no zoo model named 'induction-2'" in err and "induction-2l" in err


def test_truth_prints_circuit_provenance_and_recomputed_certificate(capsys):
    assert main(["truth", "induction-siit", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "enforced" in out and "L0H2 -> L1H1 (k)" in out and "previous-token" in out
    assert "certificate (recomputed now) of induction-siit: PASSED" in out and "faithfulness" in out
    assert main(["truth", "modadd-tiny", "--recorded"]) == 0
    out = capsys.readouterr().out
    assert "certified" in out and "key_frequencies" in out and "certificate (recorded): PASSED" in out
    assert main(["truth", "induction-siit", "--seed", "9"]) == 2
    assert "ships seeds" in capsys.readouterr().err


def test_help_everywhere():
    for args in ([], ["list"], ["info"], ["train"], ["truth"]):
        result = subprocess.run(TOYLAB + args + ["--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage: toylab" in result.stdout


@pytest.mark.slow
def test_ctrl_c_then_rerun_resumes_to_the_same_weights(tmp_path):
    """The real thing: a SIGINT to the process, then the same command again."""
    env = {**os.environ, "TOYLAB_HOME": str(tmp_path / "home")}
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(TOYLAB + ["train", "induction-tiny", "--out", str(interrupted), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while not (interrupted / "checkpoints" / "LATEST").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command to resume" in err

    rerun = subprocess.run(TOYLAB + ["train", "induction-tiny", "--out", str(interrupted), "--quiet"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming induction-tiny" in rerun.stdout

    straight = tmp_path / "straight"
    assert main(["train", "induction-tiny", "--out", str(straight), "--quiet"]) == 0
    a, _ = ckpt.load_model(interrupted)
    b, _ = ckpt.load_model(straight)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


METHOD_FILE = '''
def heads_by_name(problem):
    """Scores heads of layer 1 above the rest: a naive guess."""
    return {n: (2.0 if n.startswith("L1") else 1.0) for n in problem.nodes()}


def wrong_shape(problem):
    return [0.1, 0.2]
'''


def test_validate_scores_a_method_from_a_file_and_writes_the_report(tmp_path, capsys):
    method = tmp_path / "my_method.py"
    method.write_text(METHOD_FILE)
    out = tmp_path / "report"
    assert main(["validate", f"{method}:heads_by_name", "--model", "induction-constructed", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| induction-constructed | 1 |" in printed and "node_auroc" in printed
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "roc.png", "faithfulness.png"}


def test_validate_reports_bad_methods_clearly(tmp_path, capsys):
    method = tmp_path / "my_method.py"
    method.write_text(METHOD_FILE)
    assert main(["validate", f"{method}:nope", "--model", "induction-constructed"]) == 2
    err = capsys.readouterr().err
    assert "no function 'nope'" in err and "heads_by_name" in err
    assert main(["validate", "my_method.py", "--model", "induction-constructed"]) == 2
    assert "FILE.py:function" in capsys.readouterr().err
    assert main(["validate", f"{method}:wrong_shape", "--model", "induction-constructed",
                 "--out", str(tmp_path / "r")]) == 1
    assert "a circuit is a set of component ids" in capsys.readouterr().err
