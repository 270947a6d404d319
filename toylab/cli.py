"""The ``toylab`` command: list, inspect and reproduce the zoo.

    toylab list                       the zoo, with each shipped model's measured metrics
    toylab info NAME|DIR              a model's card, re-checking its claims on the weights
    toylab train NAME [--seed S]      reproduce a zoo model from its seed (resumes if interrupted)
    toylab truth NAME [--seed S]      a model's ground-truth circuit, provenance and certificate
    toylab progress NAME [--seed S]   retrain a grokking run with snapshots; its progress measures and phases
    toylab lab [--port P]             open the lab: the Streamlit app with a page per lesson
    toylab lessons [LESSON]           the lessons and their exercises; --run checks a lesson
    toylab validate FILE.py:FN        score a method against every known circuit (report, JSON, ROC plot)
    toylab leaderboard                score the built-in baselines; write docs/leaderboard.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from toylab import __version__, zoo
from toylab.checkpoint import CheckpointError, load_model
from toylab.train import TrainingInterrupted


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
    rec = zoo.recipe(args.name)
    seed = rec.train.seed if args.seed is None else args.seed
    out = Path(args.out) if args.out else zoo.runs_dir() / args.name / f"seed-{seed}"
    if args.fresh and out.exists():
        shutil.rmtree(out)
    resuming = (out / "checkpoints" / "LATEST").exists()
    print(f"{'resuming' if resuming else 'training'} {args.name} (seed {seed}) into {out}")
    try:
        result = zoo.train_recipe(args.name, seed=seed, out=out, progress=not args.quiet)
    except TrainingInterrupted as stop:
        print(f"\n{stop}", file=sys.stderr)
        return 130
    print(f"done: {result.steps} steps, {result.train_time_s:.1f} s of training; {_fmt_metrics(result.metrics)}")
    shipped = zoo.SHIPPED_DIR / args.name
    if seed == rec.train.seed and (shipped / "model.safetensors").exists() and shipped.resolve() != out.resolve():
        reference, _ = load_model(shipped)
        diffs = [(a - b).abs().max().item() for a, b in zip(reference.state_dict().values(), result.model.state_dict().values())]
        if max(diffs) == 0:
            print("reproduced the shipped checkpoint exactly (bitwise identical weights)")
        else:
            print(f"weights differ from the shipped checkpoint by up to {max(diffs):.3g} "
                  f"(another machine or thread count: {torch.get_num_threads()} threads here)")
    return 0


def cmd_truth(args: argparse.Namespace) -> int:
    zm = zoo.load(args.name, seed=args.seed) if args.name in zoo.RECIPES else zoo.load(args.name)
    if zm.truth is None:
        print(f"{zm.name} (seed {zm.seed}) has no ground truth: a certified truth holds only for the seed "
              "it was identified on", file=sys.stderr)
        return 1
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
            print(f"  {mark}  {check['name']}: {check['value']:.3f} (needs {check['op']} {check['threshold']:g})")
        return 0 if recorded["passed"] else 1
    certificate = zm.certify()
    print(certificate.summary().replace("certificate of", "certificate (recomputed now) of", 1))
    return 0 if certificate.passed else 1


def cmd_progress(args: argparse.Namespace) -> int:
    from toylab.methods.progress import PROGRESS_FILE
    from toylab.zoo import grokking_run, progress_dir

    rec = zoo.recipe(args.name)
    seed = rec.train.seed if args.seed is None else args.seed
    out = Path(args.out) if args.out else progress_dir(args.name, seed)
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
        print(f"toylab: error: the apps are not at {home}; the lab runs from a source checkout "
              "(git clone, then pip install -e .)", file=sys.stderr)
        return 2
    # Localhost only and no usage statistics: the lab makes no network calls.
    command = [sys.executable, "-m", "streamlit", "run", str(home), "--server.address", "localhost",
               "--server.port", str(args.port), "--browser.gatherUsageStats", "false",
               "--server.headless", "true" if args.no_browser else "false",
               "--client.toolbarMode", "minimal"]
    # The lab's models are tiny: a torch thread pool costs more than it gives, and on a
    # loaded machine its spinning threads made a toy-model sweep 50 times slower. One
    # thread per forward; Streamlit's sessions still run side by side. The user's setting wins.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"opening the lab at http://localhost:{args.port} (Ctrl-C stops it)")
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0


def cmd_lessons(args: argparse.Namespace) -> int:
    from toylab import lessons

    if args.lesson is None:
        for path in lessons.lessons():
            ids = [c.exercise for c in lessons.cells(path.read_text()) if c.exercise]
            print(f"{path.stem}: python {path}")
            for ex_id in ids:
                print(f"    {ex_id:36s} {lessons.get(ex_id).card}")
        return 0
    path = lessons.find(args.lesson)
    if not args.run:
        print(path)
        return 0
    run = lessons.run_lesson(path, solutions=args.solutions, fast=args.fast, strict=False)
    for feedback in run.checks:
        print(feedback)
    if run.returncode:
        print(run.output[-4000:], file=sys.stderr)
    return 0 if run.ok else 1


def cmd_validate(args: argparse.Namespace) -> int:
    from toylab import validate

    try:
        method = validate.load_method(args.method)
    except (ImportError, AttributeError, FileNotFoundError, TypeError, SyntaxError) as err:
        print(f"toylab: error: cannot load method {args.method!r}: {err}", file=sys.stderr)
        return 2
    label = args.method.rpartition(":")[2]
    names = args.model or None
    print(f"scoring {label} on {', '.join(names) if names else 'every zoo model with a truth'}", file=sys.stderr)
    report = validate.score(method, names=names, seeds=args.seed, label=label)
    print(report.table())
    for entry in report.errors:
        print(f"error on {entry.model} (seed {entry.seed}): {entry.error}", file=sys.stderr)
    out = Path(args.out) if args.out else Path(f"validate-{label}")
    paths = report.write(out)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 1 if report.errors and len(report.errors) == len(report.entries) else 0


LEADERBOARD = Path(__file__).resolve().parents[1] / "docs" / "leaderboard.md"


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from toylab.checkpoint import atomic_write_bytes
    from toylab.validate.baselines import BASELINES
    from toylab.validate.leaderboard import leaderboard

    unknown = [m for m in args.method or () if m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; built-in: {sorted(BASELINES)}")
    methods = {m: BASELINES[m] for m in (args.method or BASELINES)}
    board = leaderboard(methods, names=args.model or None, seeds=args.seed,
                        progress=lambda label: print(f"scoring {label} ...", file=sys.stderr, flush=True))
    text = board.to_markdown()
    if args.print:
        print(text)
        return 0
    out = Path(args.out) if args.out else LEADERBOARD
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode())
    print(f"wrote {out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toylab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"toylab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the zoo's models", description="List the zoo's recipes and whether each ships a checkpoint.")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="show a model's card and re-check its claims",
                       description="Show a zoo model's card (or a run folder's) and re-measure its claims on the weights.")
    p.add_argument("name", help="a zoo name (see `toylab list`) or a run folder written by `toylab train`")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="reproduce a zoo model from its seed",
                       description="Train a zoo recipe from scratch. Interrupt with Ctrl-C at any time: "
                       "running the same command again resumes where it stopped.")
    p.add_argument("name", help="a zoo name (see `toylab list`)")
    p.add_argument("--seed", type=int, default=None, help="seed for init and data (default: the recipe's, which reproduces the shipped model)")
    p.add_argument("--out", default=None, help="output folder (default: $TOYLAB_HOME/runs/NAME/seed-S, TOYLAB_HOME defaulting to ~/.cache/toylab)")
    p.add_argument("--fresh", action="store_true", help="delete the output folder first instead of resuming")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("truth", help="show a model's ground-truth circuit and certificate",
                       description="Print a zoo model's ground truth (circuit, roles, variables, claims, "
                       "provenance) and its certificate, recomputed from the weights by interventions.")
    p.add_argument("name", help="a zoo name (see `toylab list`) or a run folder written by `toylab train`")
    p.add_argument("--seed", type=int, default=None, help="which shipped seed (default: the recipe's own)")
    p.add_argument("--recorded", action="store_true", help="print the certificate recorded at training time "
                   "instead of recomputing it")
    p.set_defaults(func=cmd_truth)

    p = sub.add_parser("progress", help="progress measures and phases of a grokking run",
                       description="Retrain a modular-addition recipe with weight snapshots along the run (into "
                       "the cache; resumes if interrupted) and measure train/test, restricted and excluded loss, "
                       "the embedding's Fourier Gini and the weight norm at each snapshot; print the phases.")
    p.add_argument("name", help="a modular-addition zoo name, e.g. modadd-113")
    p.add_argument("--seed", type=int, default=None, help="seed for init and data (default: the recipe's)")
    p.add_argument("--every", type=int, default=None, help="snapshot every N steps (default: the recipe's steps / 200)")
    p.add_argument("--out", default=None, help="output folder (default: $TOYLAB_HOME/runs/NAME/progress-seed-S)")
    p.add_argument("--fresh", action="store_true", help="delete the output folder first instead of reusing it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_progress)

    p = sub.add_parser("lab", help="open the lab (Streamlit app) in the browser",
                       description="Start the lab's Streamlit app on localhost: a landing page and a live "
                       "page per lesson. It binds to localhost and sends no usage statistics.")
    p.add_argument("--port", type=int, default=8501, help="port on localhost (default 8501)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("lessons", help="list the lessons and their exercises, or check one",
                       description="List the lessons and their exercises (difficulty, time). With a lesson and "
                       "--run, run it top to bottom and report every exercise check.")
    p.add_argument("lesson", nargs="?", default=None, help="a lesson number or name, e.g. 01 or 01_tour")
    p.add_argument("--run", action="store_true", help="run the lesson and report its checks")
    p.add_argument("--solutions", action="store_true", help="with --run: splice in the reference solutions")
    p.add_argument("--fast", action="store_true", help="with --run: small batches, as the tests run it")
    p.set_defaults(func=cmd_lessons)

    p = sub.add_parser("validate", help="score a method against every known circuit",
                       description="Run METHOD (FILE.py:function or module:function) on every zoo model with a "
                                   "truth (or those named with --model), print a table, and write report.md, "
                                   "report.json, roc.png and faithfulness.png.")
    p.add_argument("method", help="FILE.py:function or package.module:function")
    p.add_argument("--model", action="append", metavar="NAME|DIR",
                   help="a zoo model or a folder (config.json, model.safetensors, truth.json, task.json); repeatable")
    p.add_argument("--seed", type=int, nargs="+", help="only these training seeds of each zoo model")
    p.add_argument("--out", help="report folder (default: validate-FUNCTION)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("leaderboard", help="score the built-in baselines and write docs/leaderboard.md",
                       description="Score every built-in baseline on every known circuit and write the "
                                   "leaderboard document.")
    p.add_argument("--method", action="append", help="only this baseline (repeatable)")
    p.add_argument("--model", action="append", metavar="NAME|DIR", help="only this model (repeatable)")
    p.add_argument("--seed", type=int, nargs="+", help="only these training seeds")
    p.add_argument("--out", help=f"where to write (default: {LEADERBOARD.relative_to(LEADERBOARD.parents[1])})")
    p.add_argument("--print", action="store_true", help="print the document instead of writing it")
    p.set_defaults(func=cmd_leaderboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, CheckpointError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"toylab: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
