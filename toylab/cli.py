"""The ``toylab`` command: list, inspect and reproduce the zoo.

    toylab list                       the zoo, with each shipped model's measured metrics
    toylab info NAME|DIR              a model's card, re-checking its claims on the weights
    toylab train NAME [--seed S]      reproduce a zoo model from its seed (resumes if interrupted)
    toylab train NAME --seeds 0-49    a sweep of seeds, each into its own run folder
    toylab truth NAME [--seed S]      a model's ground-truth circuit, provenance and certificate
    toylab progress NAME [--seed S]   retrain a grokking run with snapshots; its progress measures and phases
    toylab lab [--port P]             open the lab: the Streamlit app with a page per lesson
    toylab lessons [LESSON]           the lessons and their exercises; --run checks a lesson, --notebook writes .ipynb
    toylab validate FILE.py:FN        score a method against every known circuit (report, JSON, ROC plot)
    toylab leaderboard                score the built-in baselines; write docs/leaderboard.md
    toylab report                     steering and editing graded on the zoo; write docs/steering_and_editing.md
    toylab challenge new|submit|solve|reveal|levels   blind circuit challenges, scored exactly
    toylab phase-diagram [--seeds S]  superposition's phase diagram, on several seeds

Sweeps (train --seeds, validate, leaderboard, phase-diagram) run here one job after another,
or with --ray [ADDRESS] as Ray tasks on a local or existing cluster; --device picks the torch
device (cpu by default).
"""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import linecache
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import torch

from toylab import __version__, zoo
from toylab.checkpoint import CheckpointError, load_model
from toylab.train import TrainingInterrupted

# ---- bad input -------------------------------------------------------------------------------
# Every expected failure ends as one line, `toylab: error: WHAT (and what to do)`, with exit
# status 2, before any work starts and with nothing written: argparse types check each value
# (_seed, _port, _zoo_name, _out_folder, ...), the commands check what needs two values or the
# disk (_check_output_folder, _check_port_free) and raise UsageError, and main() turns the
# known family of expected exceptions into the line (_expected_failure). Anything else is a bug
# and keeps its traceback.

SEED_MAX = 2**32 - 1
# A folder is toylab's own run if it holds one of RUN_MARKERS, or only names a run writes (say, the
# config.json of a save that a full disk stopped): `train` and `progress` write only into such a
# folder or an empty one, and `--fresh` deletes only such a folder.
RUN_MARKERS = ("run.json", "card.json", "checkpoints", "snapshots", "progress.json")
RUN_FILES = (*RUN_MARKERS, "config.json", "model.safetensors", "history.json", "truth.json")


class UsageError(Exception):
    """Input the user can fix: printed as one ``toylab: error: ...`` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are toylab's line, ``toylab: error: WHAT (see `toylab CMD --help`)``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _int_in(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise argparse.ArgumentTypeError(f"{what} is an integer {bounds}, got {text!r}")
    return value


def _seed(text: str) -> int:
    """argparse type of --seed: an integer from 0 to 2**32 - 1."""
    return _int_in(text, 0, SEED_MAX, "a seed")


MAX_SEEDS = 10_000  # a sweep larger than this is more likely a typo (0-1000000) than a plan


def _seeds(text: str) -> list[int]:
    """argparse type of --seeds: seeds and ranges, e.g. ``0-49`` or ``0,3,7-9`` (a range includes both ends)."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, dash, high = part.partition("-")
        first = _seed(low.strip())
        last = _seed(high.strip()) if dash else first
        if last < first:
            raise argparse.ArgumentTypeError(f"seed range {part!r} runs backwards: write it low-high, e.g. {last}-{first}")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise argparse.ArgumentTypeError(f"{text!r} asks for more than {MAX_SEEDS:,} seeds")
        seeds += range(first, last + 1)
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seed in {text!r}: write seeds and ranges, e.g. 0-49 or 0,3,7-9")
    return seeds


def _device(text: str) -> str:
    """argparse type of --device: a torch device this machine has (cpu, cuda, cuda:1, mps)."""
    from toylab.devices import resolve_device

    try:
        return str(resolve_device(text))
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_scale_out(p: argparse.ArgumentParser, jobs: str) -> None:
    """--ray and --device, alike on every command that runs independent jobs."""
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help=f"run {jobs} as Ray tasks: on a new local cluster without ADDRESS, or on the cluster at "
                        "ADDRESS (auto: the one this node belongs to; or HEAD:6379); needs the ray extra. Same "
                        "results as without")
    p.add_argument("--device", type=_device, default="cpu", help="torch device: cpu (default), cuda, cuda:1, mps")


def _seed_list(args: argparse.Namespace) -> list[int] | None:
    """--seeds (repeatable, each a list or range) as one list without repeats, or None."""
    if not args.seeds:
        return None
    return list(dict.fromkeys(seed for group in args.seeds for seed in group))


def _every(text: str) -> int:
    """argparse type of --every: a positive number of steps (at most the recipe's, checked by the command)."""
    return _int_in(text, 1, None, "--every (snapshot every N steps)")


def _port(text: str) -> int:
    """argparse type of --port: an integer from 1 to 65535."""
    return _int_in(text, 1, 65535, "a port")


def _zoo_name(text: str) -> str:
    """argparse type of a zoo name: unknown names are refused with the nearest ones."""
    try:
        zoo.recipe(text)
    except KeyError as err:
        raise argparse.ArgumentTypeError(f"{err.args[0]}; `toylab list` shows them") from None
    return text


def _grokking_name(text: str) -> str:
    """argparse type of `toylab progress`'s name: a trained modular-addition recipe."""
    from toylab.tasks import ModularAddition

    _zoo_name(text)
    grokking = [n for n in zoo.names()
                if isinstance(zoo.recipe(n).task, ModularAddition) and zoo.recipe(n).build is None]
    if text not in grokking:
        raise argparse.ArgumentTypeError(f"{text} is not a trained modular-addition recipe; progress measures are "
                                         f"for grokking runs: {grokking}")
    return text


def _model_ref(text: str) -> str:
    """argparse type of NAME|DIR: a zoo name or an existing folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty name: give a zoo name (see `toylab list`) or a model folder")
    if text in zoo.RECIPES or Path(text).is_dir():
        return text
    if os.path.lexists(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a model folder: give a zoo name (see `toylab list`) "
                                         "or a folder written by `toylab train`")
    try:
        zoo.recipe(text)
    except KeyError as err:
        raise argparse.ArgumentTypeError(f"{err.args[0]}; nor is there a folder {text}") from None
    return text


def _lesson(text: str):
    """argparse type of a lesson: its number, folder or exercise prefix (-> the Lesson)."""
    from toylab import lessons

    try:
        return lessons.find(text)
    except FileNotFoundError as err:
        raise argparse.ArgumentTypeError(f"{err}; `toylab lessons` lists them") from None


def _baseline(text: str) -> str:
    """argparse type of --method of `toylab leaderboard`: a built-in baseline (circuit or feature graph)."""
    from toylab.validate.baselines import BASELINES
    from toylab.validate.graph_baselines import GRAPH_BASELINES

    known = sorted(set(BASELINES) | set(GRAPH_BASELINES))
    if text not in known:
        nearest = difflib.get_close_matches(text, known, n=3, cutoff=0.3)
        hint = f"did you mean {nearest}? " if nearest else ""
        raise argparse.ArgumentTypeError(f"no built-in baseline named {text!r}; {hint}built-in: {known}")
    return text


def _method_spec(text: str) -> str:
    """argparse type of `toylab validate`'s METHOD: FILE.py:function (an existing file) or module:function."""
    target, colon, attr = text.rpartition(":")
    if not colon or not target or not attr.isidentifier():
        raise argparse.ArgumentTypeError(f"method {text!r}: write FILE.py:function or module:function "
                                         "(e.g. my_method.py:find)")
    if target.endswith(".py"):
        if Path(target).is_dir():
            raise argparse.ArgumentTypeError(f"method file {target} is a folder; give the .py file that defines {attr}")
        if not Path(target).is_file():
            raise argparse.ArgumentTypeError(f"method file {target} not found (from {Path.cwd()})")
    return text


def _folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be, or be created as, a folder toylab writes into; None if it can."""
    if os.path.lexists(path) and not path.is_dir():
        return f"{path} exists and is not a folder" + (" (a broken link)" if path.is_symlink() else "")
    existing = path.absolute()
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"{path} cannot be created: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is read-only (no permission to write in it)"
    return None


def _out_folder(text: str) -> str:
    """argparse type of --out when it is a folder: it is one, or can be created, and is writable."""
    problem = _folder_problem(Path(text)) if text.strip() else "an empty path"  # Path("") would be "."
    if problem:
        raise argparse.ArgumentTypeError(f"{problem}; give --out a folder you can write")
    return text


def _out_file(text: str) -> str:
    """argparse type of --out when it is a file: not a folder, in a folder that can be written."""
    path = Path(text)
    if not text.strip() or path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is {'a folder' if text.strip() else 'empty'}; give --out a "
                                         "file path, e.g. leaderboard.md")
    problem = _folder_problem(path.parent)
    if problem:
        raise argparse.ArgumentTypeError(f"cannot write {path}: {problem}")
    return text


def _check_output_folder(out: Path, *, explicit: bool, fresh: bool = False) -> None:
    """Before a run writes into ``out``: a writable folder, and a toylab run or empty if it exists.

    A default folder (``explicit`` false) lies under TOYLAB_HOME. ``fresh`` is about to delete it.
    """
    where = "give --out a folder you can write" if explicit else "set TOYLAB_HOME to a folder you can write, or use --out"
    problem = _folder_problem(out)
    if problem:
        raise UsageError(f"{problem}; {where}")
    if out.is_dir() and not any((out / m).exists() for m in RUN_MARKERS):
        foreign = sorted(p.name for p in out.iterdir()
                         if p.name not in RUN_FILES and not (p.name.startswith(".") and p.name.endswith(".tmp")))
        if foreign:
            action = "delete it (--fresh)" if fresh else "write a run into it"
            raise UsageError(f"{out} holds files that are not a toylab run ({', '.join(foreign[:5])}"
                             f"{', ...' if len(foreign) > 5 else ''}): toylab will not {action}; give --out a new or "
                             "empty folder")
    if fresh and out.is_dir() and not os.access(out.parent, os.W_OK | os.X_OK):
        raise UsageError(f"--fresh cannot delete {out}: {out.parent} is read-only")


def _check_port_free(port: int) -> None:
    """Refuse a port that another server (another lab?) holds on localhost, before starting Streamlit."""
    for family, kind, proto, _, address in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Streamlit (tornado) binds it
            try:
                probe.bind(address)
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    raise UsageError(f"port {port} on localhost is in use (a lab already running?); open "
                                     f"http://localhost:{port}/ or choose another port with --port") from None
                if err.errno in (errno.EACCES, errno.EPERM):
                    raise UsageError(f"port {port} needs privileges here (ports below 1024 do); choose a port "
                                     "from 1024 to 65535 with --port") from None
                if err.errno != errno.EADDRNOTAVAIL:  # e.g. no IPv6 on this machine: that address is not used
                    raise


def _raised_by_toylab(err: BaseException) -> bool:
    """Whether ``err`` came from a ``raise`` statement in toylab's own code: a message for the user.

    A KeyError from a dict lookup, a ValueError from an unpacking or from torch, is a bug: the
    innermost frame is then not a toylab ``raise``.
    """
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    package = str(Path(__file__).resolve().parent)
    if not os.path.realpath(filename).startswith(package + os.sep):
        return False
    return re.search(r"\braise\b", linecache.getline(filename, tb.tb_lineno)) is not None


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_OS_MESSAGES = {
    errno.ENOSPC: "no space left on the device writing {path}: free some space or write elsewhere (--out, or "
                  "TOYLAB_HOME for the default folders), then run the same command again; toylab writes each file "
                  "whole or not at all",
    errno.EDQUOT: "disk quota exceeded writing {path}: free some space or write elsewhere (--out, or TOYLAB_HOME), "
                  "then run the same command again",
    errno.EROFS: "{path} is on a read-only file system: write elsewhere (--out, or TOYLAB_HOME for the default "
                 "folders)",
    errno.EACCES: "permission denied: {path}; to write, choose a folder you can write (--out, or TOYLAB_HOME for "
                  "the default folders)",
    errno.EPERM: "operation not permitted on {path}; to write, choose a folder you can write (--out, or TOYLAB_HOME)",
    errno.ENOENT: "no such file or folder: {path}",
    errno.ENOTDIR: "{path}: part of this path is a file, not a folder",
    errno.EEXIST: "{path} already exists and is not a folder; give --out a folder (new, empty or a toylab run)",
    errno.EISDIR: "{path} is a folder where a file was expected",
    errno.ENAMETOOLONG: "file name too long: {path}",
}


def _expected_failure(err: Exception) -> str | None:
    """The one-line message of an expected failure; None for a bug (which keeps its traceback)."""
    if isinstance(err, (UsageError, CheckpointError)):
        message = str(err)
    elif isinstance(err, OSError) and err.errno in _OS_MESSAGES:
        path = err.filename if err.filename is not None else "a file"
        message = _OS_MESSAGES[err.errno].format(path=path)
    elif isinstance(err, (OSError, KeyError, ValueError)) and _raised_by_toylab(err) and err.args \
            and isinstance(err.args[0], str) and " " in err.args[0]:
        message = err.args[0]  # toylab's own message (KeyError's str() would quote it)
    else:
        return None
    return re.sub(r"\s*\n\s*", " ", message).strip()


def _fmt_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if not k.startswith("train_step"))


def cmd_list(args: argparse.Namespace) -> int:
    rows = [("NAME", "TASK", "MODEL", "TRUTH", "SHIPPED")]
    for name in zoo.names():
        rec = zoo.recipe(name)
        cfg = rec.model
        arch = f"{cfg.n_layers}L x {cfg.n_heads}H, d_model {cfg.d_model}" + (", attn-only" if cfg.attn_only else f", d_mlp {cfg.d_mlp}")
        shipped = "yes" if (zoo.SHIPPED_DIR / name / "card.json").exists() else "no (toylab train " + name + ")"
        if len(rec.seeds) > 1:
            shipped += f", seeds {','.join(map(str, rec.seeds))}"
        rows.append((name, repr(rec.task), arch, rec.provenance or "-", shipped))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    zm = zoo.load(args.name)
    card = zm.card
    print(f"{zm.name}: {card.get('description', '')}")
    print(f"  path        {zm.path}")
    print(f"  task        {zm.task!r}")
    print(f"  model       {zm.model.extra_repr()}; {zm.model.n_params:,} parameters; {len(zm.model.hook_names())} hooks")
    if card.get("constructed"):
        print("  built       every weight set by hand, no training")
    else:
        print(f"  trained     seed {card.get('seed')}, {card.get('steps')} steps in {card.get('train_time_s')} s"
              + (" (stopped early by rule: " + card['recipe']['train']['stop_when'] + ")"
                 if card.get("stopped_early") else ""))
    if zm.truth is not None:
        cert = card.get("certificate", {})
        verdict = "passed" if cert.get("passed") else "FAILED" if cert else "not recorded"
        print(f"  truth       {zm.truth.provenance}, certificate {verdict} (toylab truth {zm.name} for details)")
    print(f"  metrics     {_fmt_metrics(card.get('metrics', {}))}  (recorded at the end of training)")
    versions = card.get("versions", {})
    print("  versions    " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform"))
    print(f"  weights     sha256 {card.get('weights_sha256', '?')[:16]}...")
    checks = zm.check()
    if checks:
        print("  claims (measured now on the loaded weights):")
        for claim, (value, holds) in checks.items():
            print(f"    [{'ok' if holds else 'FAILS'}] {claim}   measured {value:.4f}")
    return 0 if all(holds for _, holds in checks.values()) else 1


def cmd_train(args: argparse.Namespace) -> int:
    if args.seeds is not None:
        return _train_seeds(args)
    if args.ray is not None:
        raise UsageError("--ray fans out a sweep of seeds: give them with --seeds (e.g. --seeds 0-9)")
    rec = zoo.recipe(args.name)
    seed = rec.train.seed if args.seed is None else args.seed
    out = Path(args.out) if args.out else zoo.runs_dir() / args.name / f"seed-{seed}"
    _check_output_folder(out, explicit=bool(args.out), fresh=args.fresh)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    resuming = (out / "checkpoints" / "LATEST").exists()
    print(f"{'resuming' if resuming else 'training'} {args.name} (seed {seed}) into {out}")
    try:
        result = zoo.train_recipe(args.name, seed=seed, out=out, progress=not args.quiet, device=args.device)
    except TrainingInterrupted as stop:
        print(f"\n{stop}", file=sys.stderr)
        return 130
    print(f"done: {result.steps} steps, {result.train_time_s:.1f} s of training; {_fmt_metrics(result.metrics)}")
    shipped = zoo.SHIPPED_DIR / args.name
    if seed == rec.train.seed and (shipped / "model.safetensors").exists() and shipped.resolve() != out.resolve():
        reference, shipped_card = load_model(shipped)
        print(_reproduction_verdict(reference, shipped_card, result, out))
    return 0


def _train_seeds(args: argparse.Namespace) -> int:
    """`toylab train NAME --seeds ...`: every seed into $TOYLAB_HOME/runs/NAME/seed-S, serially or on Ray."""
    from toylab.zoo.seeds import seed_dir, train_seeds

    if args.seed is not None or args.out is not None:
        raise UsageError(f"--seeds trains each seed into its own folder ({seed_dir(args.name, 0).parent}/seed-S): "
                         "drop --seed and --out, or train one seed with --seed S [--out DIR]")
    seeds = _seed_list(args)
    for seed in seeds:
        _check_output_folder(seed_dir(args.name, seed), explicit=False, fresh=args.fresh)
    where = "here" if args.ray is None else "on a local Ray cluster" if args.ray == "local" else f"on {args.ray}"
    print(f"training {args.name}, {len(seeds)} seed{'s' * (len(seeds) > 1)}, {where}, into "
          f"{seed_dir(args.name, seeds[0]).parent}", file=sys.stderr)
    outcome, skipped = train_seeds(args.name, seeds, ray=args.ray, device=args.device, fresh=args.fresh,
                                   progress=not args.quiet)
    if skipped:
        print(f"already trained (kept; --fresh retrains): seeds {_ranges(skipped)}", file=sys.stderr)
    for job, result in outcome.results.items():
        print(f"{job}: {result['steps']} steps; {_fmt_metrics(result['metrics'])}")
    print(outcome.summary(), file=sys.stderr)
    return 1 if outcome.failures else 0


def _ranges(seeds: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    runs: list[list[int]] = []
    for seed in sorted(seeds):
        if runs and seed == runs[-1][1] + 1:
            runs[-1][1] = seed
        else:
            runs.append([seed, seed])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def _reproduction_verdict(reference: torch.nn.Module, shipped_card: dict, result, out: Path) -> str:
    """Whether a retrained model is the shipped one bit for bit, and whether that was promised here."""
    from toylab.checkpoint import CARD_FILE, read_json
    from toylab.train import BITWISE_FIELDS, DEVICE_FIELD, bitwise_environment

    ours = result.model.state_dict()
    diffs = {k: (w - ours[k]).abs().max().item() for k, w in reference.state_dict().items()}
    diff = max(diffs.values())
    if shipped_card.get("constructed"):  # no training: nothing depends on the machine's kernels
        return ("built by hand like the shipped model: " + ("bitwise identical weights" if diff == 0 else
                f"weights differ by up to {diff:.3g}; the construction should not depend on the machine"))
    shipped_env = bitwise_environment(shipped_card.get("versions", {}))
    here_env = bitwise_environment(read_json(out / CARD_FILE, "model card").get("versions", {}))
    fields = (*BITWISE_FIELDS, DEVICE_FIELD)
    differing = [k for k in fields if shipped_env[k] != here_env[k]]
    where = ", ".join(f"{k} {here_env[k]}" for k in fields)
    if not differing:
        if diff == 0:
            return f"bitwise identical to the shipped checkpoint, as promised on this environment ({where})"
        return (f"weights differ from the shipped checkpoint by up to {diff:.3g}, although this environment "
                f"({where}) is the one that trained it: bitwise reproduction was promised here; please report it")
    shipped_says = ", ".join(f"{k} {shipped_env[k]}" for k in differing)
    here_says = ", ".join(f"{k} {here_env[k]}" for k in differing)
    promise = (f"bitwise reproduction is promised only where {', '.join(fields)} match: "
               f"shipped {shipped_says}; here {here_says}")
    if differing == ["threads"]:
        promise += f" (OMP_NUM_THREADS={shipped_env['threads']} sets the thread count)"
    if diff == 0:
        return f"bitwise identical to the shipped checkpoint, although {promise}"
    recorded = shipped_card.get("metrics", {})
    metric_diff = max((abs(v - recorded[k]) for k, v in result.metrics.items() if k in recorded), default=None)
    metrics = "" if metric_diff is None else f", its metrics by up to {metric_diff:.3g}"
    # A key bias shifts every score of a query alike, which the softmax ignores: its gradient is
    # rounding noise that AdamW scales up, so key biases differ most and matter least.
    free = max((d for k, d in diffs.items() if k.endswith("attn.b_K")), default=0.0)
    rest = max((d for k, d in diffs.items() if not k.endswith("attn.b_K")), default=0.0)
    weights = f"{rest:.3g}" + (f" (the key biases, which change no output, by {free:.3g})" if free > rest else "")
    return (f"weights differ from the shipped checkpoint by up to {weights}{metrics} (steps {result.steps}, "
            f"shipped {shipped_card.get('steps')}); {promise}")


def cmd_truth(args: argparse.Namespace) -> int:
    if args.seed is not None and args.name not in zoo.RECIPES:
        raise UsageError(f"--seed picks a shipped seed of a zoo model; {args.name} is a folder (its card says its seed)")
    zm = zoo.load(args.name, seed=args.seed) if args.name in zoo.RECIPES else zoo.load(args.name)
    if args.record:  # before certifying, which takes a while: the truth is written beside the weights
        problem = _folder_problem(zm.path)
        if problem:
            raise UsageError(f"--record writes {zm.path / 'truth.json'}, but {problem}")
    if zm.truth is None:
        print(f"{zm.name} (seed {zm.seed}) has no ground truth: a certified truth holds only for the seed "
              "it was identified on", file=sys.stderr)
        return 1
    if args.record:
        # A zoo recipe's truth is declared in toylab.zoo.truths: record that one (an edited
        # declaration reaches the shipped JSON); a folder's own truth.json otherwise.
        declared = zm.recipe.truth_for(zm.seed, zm.model) if zm.recipe and args.name in zoo.RECIPES else None
        certificate = zoo.record_truth(zm.path, zm.model, zm.task, declared or zm.truth, zm.algorithm)
        print(f"recorded {zm.path / 'truth.json'}: optional edges declared, certificate "
              f"{'PASSED' if certificate.passed else 'FAILED'} on held-out data seed {certificate.seed}")
        zm = zoo.load(zm.path)
    print(zm.truth.summary())
    if args.recorded:
        recorded = zm.truth.certificate
        if recorded is None:
            print("no certificate recorded", file=sys.stderr)
            return 1
        print(f"certificate (recorded): {'PASSED' if recorded['passed'] else 'FAILED'}; "
              f"full {recorded['full']:.3f}, empty {recorded['empty']:.3f}")
        for check in recorded["checks"]:
            mark = "pass" if check["passed"] else "FAIL"
            ci = "" if check.get("interval") is None else f" [{check['interval'][0]:.3f}, {check['interval'][1]:.3f}]"
            print(f"  {mark}  {check['name']}: {check['value']:.3f}{ci} (needs {check['op']} {check['threshold']:g})")
        return 0 if recorded["passed"] else 1
    certificate = zm.certify()
    print(certificate.summary().replace("certificate of", "certificate (recomputed now) of", 1))
    return 0 if certificate.passed else 1


def cmd_progress(args: argparse.Namespace) -> int:
    from toylab.methods.progress import PROGRESS_FILE
    from toylab.zoo import grokking_run, progress_dir

    rec = zoo.recipe(args.name)
    seed = rec.train.seed if args.seed is None else args.seed
    if args.every is not None and args.every > rec.train.steps:
        raise UsageError(f"--every {args.every} is more than the {rec.train.steps} steps of {args.name}: snapshot "
                         f"every 1 to {rec.train.steps} steps (default {rec.train.steps} / 200, rounded up)")
    out = Path(args.out) if args.out else progress_dir(args.name, seed)
    _check_output_folder(out, explicit=bool(args.out), fresh=args.fresh)
    print(f"grokking run of {args.name} (seed {seed}) with snapshots in {out}")
    try:
        measures = grokking_run(args.name, seed=seed, every=args.every, out=out, fresh=args.fresh,
                                progress=not args.quiet)
    except TrainingInterrupted as stop:
        print(f"\n{stop}", file=sys.stderr)
        return 130
    print(f"wrote {out / PROGRESS_FILE}: {len(measures)} checkpoints (steps {measures.steps[0]}-{measures.steps[-1]}, "
          f"every {measures.meta.get('every')}), snapshots in {out / 'snapshots'}")
    print(f"key frequencies {list(measures.key_frequencies)}, from {measures.meta.get('key_frequencies_source')}")
    print(measures.phases().table())
    return 0


APPS_DIR = Path(__file__).resolve().parents[1] / "apps"


def cmd_lab(args: argparse.Namespace) -> int:
    home = APPS_DIR / "Home.py"
    if not home.exists():
        raise UsageError(f"the apps are not at {home}; the lab runs from a source checkout "
                         "(git clone, then pip install -e .)")
    _check_port_free(args.port)
    # Localhost only and no usage statistics: the lab makes no network calls. Always headless:
    # without it, Streamlit's first run on a machine (no ~/.streamlit yet) stops at its
    # "Welcome to Streamlit! Email:" prompt, and with no terminal it exits. toylab opens the
    # browser itself once the server answers.
    command = [sys.executable, "-m", "streamlit", "run", str(home), "--server.address", "localhost",
               "--server.port", str(args.port), "--browser.gatherUsageStats", "false",
               "--server.headless", "true", "--client.toolbarMode", "minimal"]
    # The lab's models are tiny: a torch thread pool costs more than it gives, and on a
    # loaded machine its spinning threads made a toy-model sweep 50 times slower. One
    # thread per forward; Streamlit's sessions still run side by side. The user's setting wins.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    url = f"http://localhost:{args.port}/"
    print(f"starting the lab at {url} (Ctrl-C stops it)", flush=True)
    import signal
    import threading

    proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    # A plain `kill` (SIGTERM) of toylab stops Streamlit too, instead of orphaning it on the port.
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main_thread else None
    try:
        if _wait_until_serving(url, proc, timeout_s=120):
            print(f"the lab is open at {url}", flush=True)
            if not args.no_browser:
                _open_browser(url)
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C (which reached Streamlit too) or SIGTERM: stop Streamlit
        try:
            proc.terminate()
            proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.kill()
            proc.wait()
        return 0
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_until_serving(url: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    """Poll the lab's localhost port until it accepts a connection; False if the server exits
    or stays silent ``timeout_s``. Only a TCP connect to localhost: the lab makes no request."""
    import socket
    import time
    from urllib.parse import urlsplit

    address = urlsplit(url)
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection((address.hostname, address.port), timeout=2):
                return True
        except OSError:
            time.sleep(0.25)
    if proc.poll() is None:
        print(f"toylab: the lab has not answered at {url} after {timeout_s:.0f} s; still waiting on it",
              file=sys.stderr)
    return False


def _open_browser(url: str) -> None:
    """Open ``url`` in a browser tab; without one (a server, no display) say where the lab is."""
    import webbrowser

    try:
        opened = webbrowser.open(url, new=2)
    except Exception:  # noqa: BLE001 - a browser that fails to start must not stop the lab
        opened = False
    if not opened:
        print(f"no browser could be opened here; open {url} yourself", flush=True)


def cmd_lessons(args: argparse.Namespace) -> int:
    from toylab import lessons

    if args.run and args.notebook:
        raise UsageError("--run runs the lesson here, --notebook writes it as a notebook: give one of them")
    mode = "--run" if args.run else "--notebook" if args.notebook else None
    needs = {"solutions": ("--run", "--notebook"), "fast": ("--run",), "out": ("--notebook",), "force": ("--notebook",)}
    stray = [flag for flag in needs if getattr(args, flag) not in (None, False) and mode not in needs[flag]]
    if stray:
        modes = [m for m in ("--run", "--notebook") if all(m in needs[flag] for flag in stray)]
        if mode is None and modes:
            lesson = args.lesson.number if args.lesson is not None else "LESSON"
            shown = " ".join(f"--{flag}" + (f" {args.out}" if flag == "out" else "") for flag in stray)
            raise UsageError(f"--{' and --'.join(stray)} only appl{'ies' if len(stray) == 1 else 'y'} with "
                             f"{' or '.join(modes)}: `toylab lessons {lesson} {modes[0]} {shown}`")
        raise UsageError("; ".join(f"--{flag} applies only with {' or '.join(needs[flag])}" for flag in stray)
                         + (f", not with {mode}" if mode else ""))
    if args.run and args.lesson is None:
        raise UsageError("--run needs a lesson to run: `toylab lessons 01 --run` (`toylab lessons` lists them)")
    if args.notebook:
        return _write_notebooks([args.lesson] if args.lesson is not None else lessons.lessons(), args)
    if args.lesson is None:
        from toylab.lessons.curriculum import curriculum

        print("The lessons in the order to follow; each comes after the lessons it builds on.")
        for step in curriculum():
            lesson = step.lesson
            after = ", ".join(a.split("_", 1)[0] for a in step.after) or "nothing"
            print(f"{step.position:2d}. {lesson.name} (after {after}; exercises about {step.minutes} min): "
                  f"python {lesson.path}")
            for ex_id in lesson.exercises:
                print(f"      {ex_id:36s} {lessons.get(ex_id).card}")
        return 0
    lesson = args.lesson  # a Lesson: the argparse type found it
    if not args.run:
        print(lesson.path)
        return 0
    run = lessons.run_lesson(lesson, solutions=args.solutions, fast=args.fast, strict=False)
    for feedback in run.checks:
        print(feedback)
    if run.returncode:
        print(run.output[-4000:], file=sys.stderr)
    return 0 if run.ok else 1


def _write_notebooks(selected: list, args: argparse.Namespace) -> int:
    """`toylab lessons [LESSON] --notebook`: every notebook planned (and any refusal raised)
    before the first is written, so that a refusal writes nothing."""
    from toylab.lessons import notebook

    out = Path(args.out) if args.out is not None else Path.cwd()
    plans, edited = [], []
    for lesson in selected:
        try:
            plans.append(notebook.plan(lesson, out, solutions=args.solutions, force=args.force))
        except notebook.NotebookEdited as err:
            edited.append(err)
    if edited:
        paths = ", ".join(str(err.path) for err in edited[:3]) + (f" and {len(edited) - 3} more" if len(edited) > 3 else "")
        why = edited[0].why if len(edited) == 1 else "have been edited, or are not notebooks toylab wrote"
        it = "it" if len(edited) == 1 else "them"
        force = f"; to replace {it} with the lesson as shipped, add --force" if all(e.forceable for e in edited) else ""
        raise UsageError(f"{paths} {why}; nothing written. To keep that work, move or rename {it}, or write elsewhere "
                         f"with --out DIR{force}")
    verbs = {"new": "wrote", "updated": "updated", "replaced": "replaced", "unchanged": "up to date:"}
    for path, text, status in plans:
        if status != "unchanged":
            notebook.write_text(path, text)
        print(f"{verbs[status]} {path}")
    if len(plans) == 1:
        print(f"open it with `jupyter lab {plans[0][0]}`, or in VS Code; run its first cell first")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from toylab import validate
    from toylab.validate.suite import subjects

    label = args.method.rpartition(":")[2]
    out = Path(args.out) if args.out else Path(f"validate-{label}")
    problem = _folder_problem(out)
    if problem:
        raise UsageError(f"the report cannot be written: {problem}; give --out a folder you can write")
    names = args.model or None
    seeds = _seed_list(args)
    _check_seeds(names, seeds)
    # the models first: a bad folder or seed is refused before the method runs
    suite = subjects(names, seeds, args.device)
    try:
        method = validate.load_method(args.method)
    except Exception as err:  # the method file's own errors keep their traceback: they are in its code
        if not (isinstance(err, (ImportError, SyntaxError)) or _raised_by_toylab(err)):
            raise
        raise UsageError(f"cannot load method {args.method!r}: {err}") from None
    print(f"scoring {label} on {', '.join(names) if names else 'every zoo model with a truth'}", file=sys.stderr)
    report = validate.score(method, label=label, suite=suite, ray=args.ray, device=args.device,
                            progress=args.ray is not None)
    print(report.table())
    for entry in report.errors:
        print(f"error on {entry.model} (seed {entry.seed}): {entry.error}", file=sys.stderr)
    paths = report.write(out)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 1 if report.errors and len(report.errors) == len(report.entries) else 0


def _check_seeds(names: list[str] | None, seeds: list[int] | None) -> None:
    """Say which asked-for seeds of the named zoo models are neither shipped nor trained here
    (they are left out), and refuse a selection that leaves a named model with none."""
    from toylab.validate.suite import missing_seeds

    if seeds is None:
        return
    for name in names or []:
        if name not in zoo.RECIPES:
            continue
        missing = missing_seeds(name, seeds)
        if not missing:
            continue
        rec = zoo.recipe(name)
        try:
            any_seed = rec.truth_for(max(rec.seeds) + 1) is not None
        except ValueError:  # identified on each seed's weights: any seed has one
            any_seed = True
        if any_seed:
            remedy = f"train them: toylab train {name} --seeds {_ranges(missing).replace(', ', ',')}"
        else:
            remedy = f"its truth is known only on the seeds it ships, {_ranges(rec.seeds)}"
        if len(missing) == len(seeds):
            raise UsageError(f"{name} has none of seeds {_ranges(seeds)} shipped or trained here with a certified "
                             f"truth; {remedy}")
        print(f"{name}: seeds {_ranges(missing)} are neither shipped nor trained here with a certified truth, and "
              f"are left out ({remedy})", file=sys.stderr)


def cmd_phase_diagram(args: argparse.Namespace) -> int:
    """`toylab phase-diagram`: the 2-features-in-1-dimension phase diagram on several seeds."""
    from safetensors.torch import save

    from toylab.checkpoint import atomic_write_bytes
    from toylab.methods.superposition import phase_diagram_seeds, seed_agreement

    seeds = _seed_list(args) or [0]
    out = Path(args.out)
    problem = _folder_problem(out.parent)
    if problem:
        raise UsageError(f"cannot write {out}: {problem}; give --out a file in a folder you can write")
    diagrams, outcome = phase_diagram_seeds(seeds, ray=args.ray, device=args.device, progress=not args.quiet,
                                            n_density=args.grid, n_importance=args.grid, steps=args.steps)
    print(outcome.summary(), file=sys.stderr)
    if not diagrams:
        return 1
    done = list(diagrams.values())
    agreement = seed_agreement(done)  # [importance, density]
    first = done[0]
    tensors = {"seeds": torch.tensor(list(diagrams)), "density": first.density,
               "relative_importance": first.relative_importance,
               "status": torch.stack([d.status for d in done]),  # [seed, importance, density, feature]
               "W": torch.stack([d.W for d in done]), "b": torch.stack([d.b for d in done]),
               "seed_agreement": agreement}
    atomic_write_bytes(out, save({k: v.contiguous() for k, v in tensors.items()}))
    print(f"wrote {out}: status, W, b per seed ({_ranges(list(diagrams))}) on a {args.grid} x {args.grid} grid")
    if len(done) > 1:
        print(f"seeds agree on the second feature's phase in {(agreement == 1).float().mean().item():.1%} of cells; "
              f"mean agreement {agreement.mean().item():.3f}, least {agreement.min().item():.3f}")
    return 1 if outcome.failures else 0


def cmd_challenge(args: argparse.Namespace) -> int:
    from toylab import challenges

    if args.action == "levels":
        for number, level in challenges.LEVELS.items():
            print(f"{number}  {level.title}: {level.brief}")
        return 0
    if args.action == "new":
        if args.out:
            problem = _folder_problem(Path(args.out))
            if problem:
                raise UsageError(f"cannot make the challenge in {args.out}: {problem}")
        path = challenges.new_challenge(args.level, args.seed, args.out)
        challenge = challenges.load_challenge(path)
        print(f"challenge level {challenge.level} in {path}: {challenge.title}\n{challenge.brief}\n"
              f"model: {path / 'config.json'}, weights: {path / 'model.safetensors'}, task: {path / 'task.json'}\n"
              f"submit: toylab challenge submit {path} ANSWER.json | METHOD.py:function")
        return 0
    if args.folder is None:
        raise UsageError(f"toylab challenge {args.action} needs the challenge folder (made by toylab challenge new)")
    challenge = challenges.load_challenge(args.folder)
    if args.action == "reveal":
        truth = challenges.reveal(args.folder)
        print(truth.summary())
        print("(recorded: later submissions to this challenge are marked as having looked)", file=sys.stderr)
        return 0
    if args.action == "solve":
        score = challenges.solve(args.folder)
    else:
        if args.answer is None:
            raise UsageError("give the answer: a JSON file ({\"nodes\": [...]}, {\"edges\": [...]}, ...) or "
                             "METHOD.py:function")
        if args.answer.endswith(".json"):
            answer = _read_answer(Path(args.answer))
        else:
            from toylab import validate
            answer = validate.load_method(_method_spec(args.answer))
        score = challenges.submit(args.folder, answer, label=args.answer)
    entry = score.entry
    if entry.error:
        print(f"not scored: {entry.error}", file=sys.stderr)
        return 1
    print(f"level {challenge.level} ({challenge.title}), {entry.kind}"
          + (" -- LOOKED at the truth: not a blind score" if score.looked else ""))
    for name, value in score.figures().items():
        print(f"  {name:<24} {value:.3f}")
    return 0


def _read_answer(path: Path):
    from toylab import challenges

    if not path.is_file():
        raise UsageError(f"answer file {path} not found")
    try:
        return challenges.answer_from_json(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON: {err}") from None


LEADERBOARD = Path(__file__).resolve().parents[1] / "docs" / "leaderboard.md"
REPORT = Path(__file__).resolve().parents[1] / "docs" / "steering_and_editing.md"


def _write_document(args: argparse.Namespace, default: Path, build: Callable[[], str]) -> int:
    """Print or write (atomically, to --out or ``default``) the markdown ``build()`` makes; the
    destination is checked before building, which takes minutes."""
    from toylab.checkpoint import atomic_write_bytes

    if args.print and args.out:
        raise UsageError("--print writes nothing, --out names where to write: give one of them")
    out = Path(args.out) if args.out else default
    if not args.print:
        problem = _folder_problem(out.parent)
        if problem:
            raise UsageError(f"cannot write {out}: {problem}; give --out a file in a folder you can write")
    text = build()
    if args.print:
        print(text)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode())
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _progress(label: str) -> None:
    print(f"{label} ...", file=sys.stderr, flush=True)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from toylab.validate.baselines import BASELINES
    from toylab.validate.graph_baselines import GRAPH_BASELINES
    from toylab.validate.leaderboard import leaderboard

    def build() -> str:
        methods = {m: BASELINES[m] for m in (args.method or BASELINES) if m in BASELINES}
        graph_methods = {m: GRAPH_BASELINES[m] for m in (args.method or GRAPH_BASELINES) if m in GRAPH_BASELINES}
        return leaderboard(methods, names=args.model or None, seeds=seeds, graph_methods=graph_methods,
                           progress=True, device=args.device, ray=args.ray).to_markdown()

    seeds = _seed_list(args)
    _check_seeds(args.model, seeds)
    return _write_document(args, LEADERBOARD, build)


def cmd_report(args: argparse.Namespace) -> int:
    from toylab.validate.interventions import editing_report, steering_report

    def build() -> str:
        seeds = tuple(args.seed or (0, 1, 2))
        parts = ["# Steering and editing, graded exactly", "",
                 "Written by `toylab report`; every figure is measured against the task's algorithm or fact table.",
                 ""]
        if args.only in (None, "steering"):
            parts.append(steering_report(seeds=seeds, progress=_progress))
        if args.only in (None, "editing"):
            parts.append(editing_report(seeds=seeds, progress=_progress))
        return "\n".join(parts)

    return _write_document(args, REPORT, build)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="toylab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"toylab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the zoo's models", description="List the zoo's recipes and whether each ships a checkpoint.")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="show a model's card and re-check its claims",
                       description="Show a zoo model's card (or a run folder's) and re-measure its claims on the weights.")
    p.add_argument("name", type=_model_ref,
                   help="a zoo name (see `toylab list`) or a run folder written by `toylab train`")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="reproduce a zoo model from its seed",
                       description="Train a zoo recipe from scratch. Interrupt with Ctrl-C at any time: "
                       "running the same command again resumes where it stopped.")
    p.add_argument("name", type=_zoo_name, help="a zoo name (see `toylab list`)")
    p.add_argument("--seed", type=_seed, default=None, help="seed for init and data, 0 to 2**32-1 (default: the recipe's, which reproduces the shipped model)")
    p.add_argument("--out", type=_out_folder, default=None, help="output folder, new, empty or a toylab run (default: $TOYLAB_HOME/runs/NAME/seed-S, TOYLAB_HOME defaulting to ~/.cache/toylab)")
    p.add_argument("--fresh", action="store_true", help="delete the output folder (a toylab run) first instead of resuming")
    p.add_argument("--seeds", type=_seeds, action="append", metavar="SEEDS",
                   help="a sweep: train each of these seeds (e.g. 0-49, or 0,3,7-9) into "
                        "$TOYLAB_HOME/runs/NAME/seed-S, keeping seeds already trained; with --ray, in parallel")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_scale_out(p, "the seeds")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("truth", help="show a model's ground-truth circuit and certificate",
                       description="Print a zoo model's ground truth (circuit, roles, variables, claims, "
                       "provenance) and its certificate, recomputed from the weights by interventions.")
    p.add_argument("name", type=_model_ref,
                   help="a zoo name (see `toylab list`) or a run folder written by `toylab train`")
    p.add_argument("--seed", type=_seed, default=None, help="which shipped seed of a zoo name (default: the recipe's own)")
    p.add_argument("--recorded", action="store_true", help="print the certificate recorded at training time "
                   "instead of recomputing it")
    p.add_argument("--record", action="store_true", help="declare the truth's optional edges, certify it on "
                   "held-out pairs and write truth.json beside the weights (how the shipped truths are recorded)")
    p.set_defaults(func=cmd_truth)

    p = sub.add_parser("progress", help="progress measures and phases of a grokking run",
                       description="Retrain a modular-addition recipe with weight snapshots along the run (into "
                       "the cache; resumes if interrupted) and measure train/test, restricted and excluded loss, "
                       "the embedding's Fourier Gini and the weight norm at each snapshot; print the phases.")
    p.add_argument("name", type=_grokking_name, help="a modular-addition zoo name, e.g. modadd-113")
    p.add_argument("--seed", type=_seed, default=None, help="seed for init and data, 0 to 2**32-1 (default: the recipe's)")
    p.add_argument("--every", type=_every, default=None,
                   help="snapshot every N steps, 1 to the recipe's steps (default: the recipe's steps / 200)")
    p.add_argument("--out", type=_out_folder, default=None, help="output folder (default: $TOYLAB_HOME/runs/NAME/progress-seed-S)")
    p.add_argument("--fresh", action="store_true", help="delete the output folder (a toylab run) first instead of reusing it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_progress)

    p = sub.add_parser("lab", help="open the lab (Streamlit app) in the browser",
                       description="Start the lab's Streamlit app on localhost: a landing page and a live "
                       "page per lesson. It binds to localhost and sends no usage statistics.")
    p.add_argument("--port", type=_port, default=8501, help="a free port on localhost, 1-65535 (default 8501)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("lessons", help="list the lessons and their exercises, check one, or write it as a notebook",
                       description="List the lessons and their exercises (difficulty, time). With a lesson and "
                       "--run, run it top to bottom and report every exercise check. With --notebook, write it as a "
                       "Jupyter notebook (.ipynb) that runs the same cells and checks; a notebook edited since "
                       "toylab wrote it is kept unless --force.")
    p.add_argument("lesson", nargs="?", default=None, type=_lesson,
                   help="a lesson's number, folder or exercise prefix, e.g. 01, 01_tour or tour")
    p.add_argument("--run", action="store_true", help="run the lesson and report its checks")
    p.add_argument("--notebook", action="store_true",
                   help="write the lesson (every lesson, without LESSON) as a Jupyter notebook, NN_name.ipynb")
    p.add_argument("--solutions", action="store_true",
                   help="with --run or --notebook: splice in the reference solutions (NN_name.solutions.ipynb)")
    p.add_argument("--fast", action="store_true", help="with --run: small batches, as the tests run it")
    p.add_argument("--out", type=_out_folder, default=None, metavar="DIR",
                   help="with --notebook: the folder to write into (default: the current folder)")
    p.add_argument("--force", action="store_true",
                   help="with --notebook: replace a notebook that was edited since toylab wrote it")
    p.set_defaults(func=cmd_lessons)

    p = sub.add_parser("validate", help="score a method against every known circuit",
                       description="Run METHOD (FILE.py:function or module:function) on every zoo model with a "
                                   "truth (or those named with --model), print a table, and write report.md, "
                                   "report.json, roc.png and faithfulness.png.")
    p.add_argument("method", type=_method_spec,
                   help="FILE.py:function or package.module:function. Loading FILE.py runs it, as `python FILE.py` "
                        "would (checked first, without running it, to define the function; a lesson file is refused)")
    p.add_argument("--model", action="append", metavar="NAME|DIR", type=_model_ref,
                   help="a zoo model or a folder (config.json, model.safetensors, truth.json, task.json); repeatable")
    p.add_argument("--seeds", "--seed", type=_seeds, nargs="+", action="extend", metavar="SEEDS",
                   help="only these training seeds of each zoo model (e.g. 0 1 2, or 0-49): shipped ones, and "
                        "those trained here with `toylab train NAME --seeds ...`")
    p.add_argument("--out", type=_out_folder, help="report folder (default: validate-FUNCTION)")
    _add_scale_out(p, "the models")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("leaderboard", help="score the built-in baselines and write docs/leaderboard.md",
                       description="Score every built-in baseline on every known circuit and write the "
                                   "leaderboard document.")
    p.add_argument("--method", action="append", type=_baseline, help="only this baseline (repeatable)")
    p.add_argument("--model", action="append", metavar="NAME|DIR", type=_model_ref, help="only this model (repeatable)")
    p.add_argument("--seeds", "--seed", type=_seeds, nargs="+", action="extend", metavar="SEEDS",
                   help="only these training seeds (e.g. 0 1 2, or 0-49), shipped or trained here")
    p.add_argument("--out", type=_out_file, help=f"where to write (default: {LEADERBOARD.relative_to(LEADERBOARD.parents[1])})")
    p.add_argument("--print", action="store_true", help="print the document instead of writing it")
    _add_scale_out(p, "the models")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("phase-diagram", help="superposition's phase diagram on several seeds",
                       description="Train 2 features in 1 hidden dimension across relative importance x density "
                                   "(toylab.methods.phase_diagram), once per seed, and say where the seeds agree. "
                                   "Writes the grids, each seed's status, weights and the agreement as safetensors.")
    p.add_argument("--seeds", type=_seeds, action="append", metavar="SEEDS", help="e.g. 0-4 (default: 0)")
    p.add_argument("--grid", type=lambda t: _int_in(t, 2, 200, "--grid (cells per axis)"), default=20,
                   help="cells per axis, 2 to 200 (default 20)")
    p.add_argument("--steps", type=lambda t: _int_in(t, 1, None, "--steps"), default=1000,
                   help="training steps per diagram (default 1000)")
    p.add_argument("--out", type=_out_file, default="phase_diagram.safetensors",
                   help="where to write (default: phase_diagram.safetensors)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_scale_out(p, "the seeds")
    p.set_defaults(func=cmd_phase_diagram)

    p = sub.add_parser("challenge", help="blind circuit challenges: a model whose circuit you are not told",
                       description="Make a challenge (a certified model, its heads shuffled and its residual stream "
                                   "rotated, its truth sealed), submit an answer or a method, see the exact score.")
    p.add_argument("action", choices=("new", "submit", "solve", "reveal", "levels"),
                   help="new: make one; submit: score an answer; solve: score the level's built-in baseline; "
                        "reveal: open the truth (recorded); levels: list the levels")
    p.add_argument("folder", nargs="?", help="the challenge folder (submit, solve, reveal)")
    p.add_argument("answer", nargs="?", help="submit: ANSWER.json or METHOD.py:function")
    p.add_argument("--level", type=int, default=1, help="new: the level (toylab challenge levels)")
    p.add_argument("--seed", type=_seed, default=None, help="new: the draw (default: a random one)")
    p.add_argument("--out", default=None, help="new: the folder (default: challenge-L{level}-{seed})")
    p.set_defaults(func=cmd_challenge)

    p = sub.add_parser("report", help="grade steering and editing on the zoo; write docs/steering_and_editing.md",
                       description="Compare steering-direction sources and editing methods on the zoo models whose "
                                   "algorithm says exactly what the output must become, and write the tables.")
    p.add_argument("--only", choices=("steering", "editing"), help="only this half")
    p.add_argument("--seed", type=_seed, nargs="+", help="seeds to average over (default 0 1 2)")
    p.add_argument("--out", type=_out_file, help=f"where to write (default: {REPORT.relative_to(REPORT.parents[1])})")
    p.add_argument("--print", action="store_true", help="print the document instead of writing it")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an expected failure is one `toylab: error:` line and status 2 (see _expected_failure)."""
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "ray", None) is not None:
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise UsageError("--ray needs Ray: pip install torch==2.13.0 -e \".[ray]\" (the pin keeps pip "
                                 "from swapping torch), or drop --ray to run here")
        return args.func(args)
    except KeyboardInterrupt:
        print("toylab: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        message = _expected_failure(err)
        if message is None:
            raise  # a bug: its traceback is what to report
        print(f"toylab: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
