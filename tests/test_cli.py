import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

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
    assert "cpu_capability AVX512, threads" in out  # what decides the bits, with the versions


def test_train_says_whether_bitwise_reproduction_was_promised_here(tmp_path):
    """The verdict `toylab train` prints, on the shipped model and altered copies of it."""
    import copy
    import json
    from types import SimpleNamespace

    from toylab import zoo
    from toylab.cli import _reproduction_verdict

    shipped = zoo.load("induction-tiny")
    card = shipped.card

    def verdict(model, **versions):
        (tmp_path / "card.json").write_text(json.dumps({"versions": {**card["versions"], **versions}}))
        result = SimpleNamespace(model=model, metrics=card["metrics"], steps=card["steps"])
        return _reproduction_verdict(shipped.model, card, result, tmp_path)

    assert verdict(shipped.model).startswith("bitwise identical to the shipped checkpoint, as promised on this "
                                             "environment (torch 2.13.0+cpu, machine x86_64, cpu_capability AVX512")
    other = verdict(shipped.model, cpu_capability="AVX2", cpu="AMD EPYC 7B13", platform="elsewhere")
    assert other.startswith("bitwise identical to the shipped checkpoint, although bitwise reproduction is promised "
                            "only where torch, machine, cpu_capability, threads, device match: shipped cpu_capability "
                            "AVX512; here cpu_capability AVX2")  # the CPU's name and the platform do not count
    moved = copy.deepcopy(shipped.model)
    with torch.no_grad():
        moved.blocks[0].attn.W_Q[0, 0, 0] += 2**-10  # exact: |W_Q| < 1
        moved.blocks[0].attn.b_K[0, 0] += 0.05
    assert verdict(moved, threads="2").startswith(
        "weights differ from the shipped checkpoint by up to 0.000977 (the key biases, which change no output, "
        "by 0.05), its metrics by up to 0 (steps 1100, shipped 1100); bitwise reproduction is promised only where "
        "torch, machine, cpu_capability, threads, device match: shipped threads 1; here threads 2 (OMP_NUM_THREADS=1 sets")
    assert "please report it" in verdict(moved)
    # A card from before devices were recorded trained on the CPU; a GPU run is promised nothing bitwise.
    assert "shipped device cpu; here device cuda:0 (NVIDIA H200)" in verdict(moved, device="cuda:0 (NVIDIA H200)")


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


def test_help_everywhere(capsys):
    result = subprocess.run(TOYLAB + ["--help"], capture_output=True, text=True)  # the installed command
    assert result.returncode == 0 and "usage: toylab" in result.stdout
    from toylab.cli import main

    for args in (["list"], ["info"], ["train"], ["truth"]):  # in-process: a torch import each is slow
        with pytest.raises(SystemExit) as stop:
            main(args + ["--help"])
        assert stop.value.code == 0 and "usage: toylab" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_lab_serves_on_a_fresh_machine_without_a_terminal(tmp_path):
    """A fresh HOME (no ~/.streamlit) and closed stdin: no first-run prompt, the lab serves."""
    port = _free_port()
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1"}
    for name in list(env):
        if name.startswith(("STREAMLIT_", "XDG_")):
            del env[name]  # nothing of this machine's Streamlit or desktop settings
    # Its own session, so that whatever happens nothing it started outlives the test.
    proc = subprocess.Popen(TOYLAB + ["lab", "--no-browser", "--port", str(port)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
                            start_new_session=True)
    served = stopped = False
    try:
        deadline = time.monotonic() + 60
        while not served and proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/", timeout=2) as response:
                    served = response.status == 200 and b"<html" in response.read().lower()
            except OSError:
                time.sleep(0.25)
    finally:
        proc.terminate()  # toylab alone: it must stop Streamlit itself
        try:
            output, _ = proc.communicate(timeout=30)  # EOF once Streamlit, holding the pipe too, is gone
            stopped = True
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
    assert served, f"the lab did not serve on port {port} within 60 s; its output:\n{output}"
    assert "Email" not in output and f"http://localhost:{port}/" in output
    assert stopped, "Streamlit outlived toylab lab after a SIGTERM"


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http"])
def test_lab_refuses_a_port_outside_1_to_65535(port, capsys):
    assert main(["lab", "--port", port]) == 2  # argparse's errors too are one line and status 2, not an exit
    assert f"a port is an integer from 1 to 65535, got '{port}'" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_then_rerun_resumes_to_the_same_weights(tmp_path, induction_tiny_retrained):
    """The real thing: a SIGINT to the process, then the same command again."""
    from toylab import zoo

    # On the threads of the straight run it is compared with (induction_tiny_retrained: tests/conftest.py).
    threads = zoo.load("induction-tiny").card["versions"]["threads"]
    env = {**os.environ, "TOYLAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": str(threads)}
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

    # The same command straight through (`toylab train` is zoo.train_recipe), trained once for this and test_zoo.py.
    a, _ = ckpt.load_model(interrupted)
    b, _ = ckpt.load_model(induction_tiny_retrained)
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


def test_a_seed_sweep_trains_each_seed_once_and_keeps_those_done(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOYLAB_HOME", str(tmp_path))
    assert main(["train", "trap-or-gate", "--seeds", "5-6,9", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "trap-or-gate seed 5: 0 steps" in out and "3 of 3 jobs done" in err
    runs = tmp_path / "runs" / "trap-or-gate"
    assert sorted(p.name for p in runs.iterdir()) == ["seed-5", "seed-6", "seed-9"]
    assert main(["train", "trap-or-gate", "--seeds", "5-7", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "already trained (kept; --fresh retrains): seeds 5-6" in err and "1 of 1 jobs done" in err


def test_phase_diagram_on_two_seeds_writes_each_and_their_agreement(tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "pd.safetensors"
    assert main(["phase-diagram", "--seeds", "0-1", "--grid", "3", "--steps", "30", "--out", str(out), "--quiet"]) == 0
    saved = load_file(out)
    assert saved["status"].shape == (2, 3, 3, 2) and saved["W"].shape == (2, 3, 3, 1, 2)
    assert saved["seeds"].tolist() == [0, 1] and saved["seed_agreement"].shape == (3, 3)
    assert ((saved["seed_agreement"] >= 0.5) & (saved["seed_agreement"] <= 1)).all()
    assert "seeds agree on the second feature's phase in" in capsys.readouterr().out
