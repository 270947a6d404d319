"""Blind circuit challenges: a model whose circuit you are not told, and an exact score.

    path = new_challenge(level=3, seed=None, folder="my-challenge")   # or `toylab challenge new --level 3`
    report = submit(path, {"nodes": ["embed", "L1H2", "logits"]})    # or `toylab challenge submit`

A challenge is drawn from a family per level (``LEVELS``): a certified zoo model of that
family (one of its shipped seeds), **disguised** by the challenge's seed:

- the heads of every layer are permuted, so which head plays which role is drawn at random
  (every placement is possible, whatever the source placed where);
- the residual stream is rotated by a random orthogonal matrix (none of these models has a
  LayerNorm, so the function is unchanged), so no coordinate of the stream means anything
  on its own and weights cannot be matched to the source's by eye.

Permuting heads and rotating the stream are symmetries of the model: every component's
output is the source's, moved, so the source's certified truth, with its head ids mapped,
is the disguised model's. The challenge checks that where it is made, by running both
models on the task (``Challenge.max_logit_diff``, at most ``EQUIVALENCE_TOLERANCE``), so a
challenge is certified by its source's certificate plus that check, in seconds.

The truth is *sealed* in ``challenge.json``: compressed and masked, so that reading it is not
the easy path. It is not encrypted (anyone with toylab can open it) and nothing pretends
otherwise: ``reveal`` opens it and records that it was opened, every later submission is
marked ``looked``, and a submitted method that loads any truth while it runs (the harness's
peek detection) is marked too. Scores use the validation harness's figures
(``toylab.validate``) on pairs the submission never saw.

Submissions (``submit``): a method (any ``problem -> answer`` callable, as for
``toylab validate``), or a JSON-able answer: ``{"nodes": [...]}`` or ``{"edges": [[sender,
receiver, kind], ...]}`` (a circuit), ``{"node_scores": {id: score}}``, ``{"edge_scores":
[[sender, receiver, kind, score], ...]}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from toylab import checkpoint as ckpt
from toylab import zoo
from toylab.models import Transformer
from toylab.tasks import Task, task_from_dict
from toylab.truth import Truth
from toylab.validate.harness import Entry, run_one
from toylab.validate.suite import Subject

FORMAT = "toylab-challenge/1"
CHALLENGE_FILE = "challenge.json"
TASK_FILE = "task.json"
EQUIVALENCE_PROMPTS = 256
EQUIVALENCE_TOLERANCE = 1e-3  # max |logit difference| between the source and its disguise


@dataclass(frozen=True)
class Level:
    title: str
    brief: str  # what the learner is told
    source: str  # the zoo family the circuit is drawn from
    solver: str  # the built-in baseline the tests solve it with


LEVELS: dict[int, Level] = {
    1: Level("One induction head among decoys",
             "An attention-only 2-layer model predicts the next token of a repeated segment. Find the heads that do "
             "it; some heads attend exactly like the circuit's and do nothing.", "induction-constructed",
             "resample-ablation"),
    2: Level("A trained induction circuit with trained decoys",
             "A 2-layer, 4-head model trained on the same task; two of its heads were trained to attend like the "
             "circuit's and to have no effect.", "trap-decoys", "edge-noising"),
    3: Level("A copy circuit with a backup head",
             "y = a over a string of bits and filler. One head carries the answer; another restores it when the "
             "first is knocked out, and three faint distractor heads add a little each.", "trap-self-repair", "eap"),
    4: Level("A long chain among distractors",
             "y = a, passed through a 4-layer, 8-head model with MLPs by a chain of components, among sixteen "
             "distractors that each add a little.", "trap-long-chain", "resample-ablation"),
    5: Level("IOI-like, with backup and negative heads",
             "Indirect object identification ('When A and B went to the P, B gave a O to -> A') in a 4-layer, "
             "4-head attention-only model: duplicate-token, S-inhibition, name-mover, negative and backup heads.",
             "ioi-siit", "resample-ablation"),
}

_HEAD = re.compile(r"\bL(\d+)H(\d+)\b")


class ChallengeError(ValueError):
    """A challenge folder or submission that cannot be used; the message says what to do."""


# ---- the disguise ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Disguise:
    heads: tuple[tuple[int, ...], ...]  # per layer: new head i is the source's head heads[l][i]
    rotation: Tensor  # [d_model, d_model], orthogonal: the new stream is the source's times it

    @classmethod
    def draw(cls, cfg, seed: int) -> Disguise:
        g = torch.Generator().manual_seed(seed)
        heads = tuple(tuple(torch.randperm(cfg.n_heads, generator=g, device="cpu").tolist())
                      for _ in range(cfg.n_layers))
        q, r = torch.linalg.qr(torch.randn(cfg.d_model, cfg.d_model, generator=g, dtype=torch.float64, device="cpu"))
        rotation = q * torch.sign(torch.diagonal(r))  # Haar-distributed
        return cls(heads, rotation)

    def head_map(self) -> dict[str, str]:
        """Source head id -> disguised head id."""
        return {f"L{l}H{old}": f"L{l}H{new}" for l, order in enumerate(self.heads) for new, old in enumerate(order)}

    def apply(self, model: Transformer) -> Transformer:
        """A new model computing the source's function with heads permuted and the stream rotated."""
        if model.cfg.normalization_type is not None:
            raise ChallengeError("a rotated residual stream keeps the function only without LayerNorm")
        R = self.rotation
        state = {k: v.double() for k, v in model.state_dict().items()}
        out = {}
        for key, value in state.items():
            parts = key.split(".")
            name = parts[-1]
            if key in ("embed.W_E", "pos_embed.W_pos") or name in ("W_O", "b_O", "W_out", "b_out"):
                value = value @ R  # writes into the stream
            elif name in ("W_Q", "W_K", "W_V", "W_in") or key == "unembed.W_U":
                value = R.T @ value  # reads from the stream (batched over heads for W_Q, W_K, W_V)
            if parts[0] == "blocks" and parts[2] == "attn" and name != "b_O":
                value = value[list(self.heads[int(parts[1])])]  # every per-head parameter leads with the head
            out[key] = value.float()
        disguised = Transformer(model.cfg)
        disguised.load_state_dict(out)
        return disguised.eval()

    def truth(self, truth: Truth) -> Truth:
        """The source's truth with its head ids mapped and its directions in the stream rotated."""
        mapping = self.head_map()

        def rename(value: Any) -> Any:
            if isinstance(value, str):
                return _HEAD.sub(lambda m: mapping.get(m.group(0), m.group(0)), value)
            if isinstance(value, list):
                return [rename(v) for v in value]
            if isinstance(value, dict):
                return {rename(k): rename(v) for k, v in value.items()}
            return value

        data = rename(truth.to_dict())
        data.pop("certificate", None)  # measured on the source; the challenge records its own check
        R = self.rotation.float()
        for feature in data.get("features", []):
            if len(feature["vector"]) != len(R) or "mlp.hook" in feature["hook"] or "attn.hook" in feature["hook"]:
                raise ChallengeError(f"feature {feature['name']} at {feature['hook']} is not in the residual stream: "
                                     "the disguise cannot rotate it")
            feature["vector"] = (torch.tensor(feature["vector"], device=R.device) @ R).tolist()
        for variable in data.get("variables", []):
            if variable.get("basis"):
                variable["basis"] = (torch.tensor(variable["basis"], device=R.device) @ R).tolist()
        return Truth.from_dict(data)


# ---- sealing the truth -----------------------------------------------------------------------


def _mask(data: bytes, key: bytes) -> bytes:
    stream = b"".join(hashlib.sha256(key + i.to_bytes(8, "big")).digest() for i in range(len(data) // 32 + 1))
    return bytes(a ^ b for a, b in zip(data, stream))


def _seal(truth: Truth, key: bytes) -> str:
    return base64.b64encode(_mask(zlib.compress(json.dumps(truth.to_dict()).encode()), key)).decode()


def _unseal(sealed: str, key: bytes) -> Truth:
    return Truth.from_dict(json.loads(zlib.decompress(_mask(base64.b64decode(sealed), key))))


# ---- challenges ------------------------------------------------------------------------------


@dataclass
class Challenge:
    path: Path
    level: int
    seed: int
    model: Transformer
    task: Task
    record: dict[str, Any]  # challenge.json

    @property
    def title(self) -> str:
        return LEVELS[self.level].title

    @property
    def brief(self) -> str:
        return LEVELS[self.level].brief

    @property
    def revealed(self) -> bool:
        return bool(self.record.get("revealed_at"))

    @property
    def submissions(self) -> list[dict[str, Any]]:
        return list(self.record.get("submissions", []))


def _source(level: int, seed: int) -> tuple[str, int]:
    rec = zoo.recipe(LEVELS[level].source)
    seeds = sorted(rec.seeds)
    return rec.name, seeds[seed % len(seeds)]


def _check_level(level: Any) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
        raise ChallengeError(f"level must be one of {sorted(LEVELS)}, got {level!r}: "
                             + "; ".join(f"{n} {lv.title}" for n, lv in LEVELS.items()))
    return level


def new_challenge(level: int = 1, seed: int | None = None, folder: str | Path | None = None) -> Path:
    """Make a challenge of ``level`` drawn with ``seed`` (a random one when None) in ``folder``
    (default ``challenge-L{level}-{seed}``); returns the folder. Refuses a folder that already
    holds a challenge (its submissions would be lost)."""
    level = _check_level(level)
    if seed is None:
        seed = secrets.randbelow(10**6)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ChallengeError(f"seed must be an int >= 0, got {seed!r}")
    path = Path(folder) if folder is not None else Path(f"challenge-L{level}-{seed}")
    if (path / CHALLENGE_FILE).exists():
        raise ChallengeError(f"{path} already holds a challenge; give another folder (its submissions stay)")
    started = time.perf_counter()
    name, source_seed = _source(level, seed)
    source = zoo.load(name, seed=source_seed)
    if source.truth is None or not (source.truth.certificate or {}).get("passed"):
        raise ChallengeError(f"the source {name} (seed {source_seed}) has no passing certificate")
    disguise = Disguise.draw(source.model.cfg, seed)
    model = disguise.apply(source.model)
    truth = disguise.truth(source.truth)
    truth.check_fits(model.cfg)
    tokens = source.task.sample(EQUIVALENCE_PROMPTS, 2 * seed + 1).tokens
    with torch.no_grad():
        gap = float((model(tokens) - source.model(tokens)).abs().max())
    if not gap <= EQUIVALENCE_TOLERANCE:
        raise ChallengeError(f"the disguised model drifted from its source by {gap:.2e} (> {EQUIVALENCE_TOLERANCE})")
    key = secrets.token_bytes(16)
    record = {
        "format": FORMAT, "level": level, "seed": seed, "title": LEVELS[level].title, "brief": LEVELS[level].brief,
        "task": source.task.to_dict(),
        "submit": "toylab challenge submit FOLDER ANSWER.json | METHOD.py:function",
        "certified_by": {"max_logit_diff": gap, "prompts": EQUIVALENCE_PROMPTS},
        "seal": base64.b64encode(key).decode(), "sealed": _seal(truth, key),
        "created_s": round(time.perf_counter() - started, 3), "revealed_at": None, "submissions": [],
    }
    path.mkdir(parents=True, exist_ok=True)
    ckpt.save_model(path, model, {"challenge": level})
    ckpt.atomic_write_json(path / TASK_FILE, source.task.to_dict())
    ckpt.atomic_write_json(path / CHALLENGE_FILE, record)  # last: a challenge.json means a complete folder
    return path


def load_challenge(path: str | Path) -> Challenge:
    path = Path(path)
    if not (path / CHALLENGE_FILE).is_file():
        raise ChallengeError(f"{path} holds no challenge ({CHALLENGE_FILE}); make one with `toylab challenge new`")
    record = ckpt.read_json(path / CHALLENGE_FILE, "challenge")
    if record.get("format") != FORMAT:
        raise ChallengeError(f"{path / CHALLENGE_FILE} is not a {FORMAT} challenge")
    model, _ = ckpt.load_model(path)
    return Challenge(path, int(record["level"]), int(record["seed"]), model, task_from_dict(record["task"]), record)


def _truth(challenge: Challenge) -> Truth:
    record = challenge.record
    return _unseal(record["sealed"], base64.b64decode(record["seal"]))


def reveal(path: str | Path) -> Truth:
    """Open the sealed truth, and record in the challenge that it was opened: every later
    submission is marked as having looked."""
    challenge = load_challenge(path)
    truth = _truth(challenge)
    if not challenge.revealed:
        challenge.record["revealed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        ckpt.atomic_write_json(challenge.path / CHALLENGE_FILE, challenge.record)
    return truth


def answer_from_json(data: Any) -> Any:
    """A JSON answer (see the module doc) as what a method returns."""
    if not isinstance(data, Mapping) or len(data) != 1:
        raise ChallengeError('an answer is one of {"nodes": [...]}, {"edges": [[sender, receiver, kind], ...]}, '
                             '{"node_scores": {id: score}}, {"edge_scores": [[sender, receiver, kind, score], ...]}')
    (kind, value), = data.items()
    if kind == "nodes":
        return set(value)
    if kind == "edges":
        return {tuple(e) for e in value}
    if kind == "node_scores":
        return dict(value)
    if kind == "edge_scores":
        if not all(isinstance(e, (list, tuple)) and len(e) == 4 for e in value):
            raise ChallengeError("edge_scores is a list of [sender, receiver, kind, score]")
        return {tuple(e[:3]): e[3] for e in value}
    raise ChallengeError(f"unknown answer kind {kind!r}; use nodes, edges, node_scores or edge_scores")


@dataclass(frozen=True)
class Score:
    entry: Entry
    looked: bool  # the truth was revealed before, or the method loaded a truth while it ran

    def figures(self) -> dict[str, float]:
        return {k: v for k, v in self.entry.metrics.items() if not math.isnan(v)}


def submit(path: str | Path, answer: Any, label: str = "submission") -> Score:
    """Score ``answer`` (a method, or a JSON-able answer) against the challenge's truth with the
    harness's figures, and record the submission in the challenge."""
    challenge = load_challenge(path)
    truth = _truth(challenge)
    rec = zoo.recipe(LEVELS[challenge.level].source)
    algorithm = rec.algorithm(challenge.task) if rec.algorithm else None
    subject = Subject(f"challenge L{challenge.level}", 0, challenge.model, challenge.task, truth, algorithm)
    if callable(answer):
        method = answer
    else:
        fixed = answer_from_json(answer) if isinstance(answer, Mapping) else answer
        method = lambda problem: fixed  # noqa: E731
    entry = run_one(method, subject)
    looked = challenge.revealed or entry.peeked
    challenge.record.setdefault("submissions", []).append({
        "label": label, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "looked": looked, "error": entry.error,
        "kind": entry.kind, "figures": {k: v for k, v in entry.metrics.items() if not math.isnan(v)}})
    ckpt.atomic_write_json(challenge.path / CHALLENGE_FILE, challenge.record)
    return Score(entry, looked)


def solve(path: str | Path) -> Score:
    """Submit the level's built-in baseline (``Level.solver``): what a first attempt scores."""
    from toylab.validate.baselines import BASELINES

    level = load_challenge(path).level
    solver = LEVELS[level].solver
    return submit(path, BASELINES[solver], label=f"baseline {solver}")


__all__ = ["CHALLENGE_FILE", "LEVELS", "Challenge", "ChallengeError", "Disguise", "Level", "Score",
           "answer_from_json", "load_challenge", "new_challenge", "reveal", "solve", "submit"]
