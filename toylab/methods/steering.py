"""Steering: push one activation towards a value of a variable, graded exactly by the task's algorithm.

Axis names used in shape comments:
    batch   -- prompts
    pos     -- token position
    d       -- width of the activation at the steered site
    value   -- the steered variable's values, 0 .. n_values - 1
    k       -- dimensions of a subspace

A **steering target** says "set variable V to value x at this site": the relation read at
the subject position of ``factual-recall``, the bracket balance at the last position of
``brackets-siit``, the operand a of ``modadd-113`` (shifted to a + k). The task's
``Algorithm.assign`` says what every prompt's output must then be, so a steer is graded
exactly, with no judge (AxBench, Wu et al. 2025, needs an LLM for this):

    success        fraction of the prompts whose answer should change that now give exactly
                   the algorithm's answer
    preservation   fraction of the prompts whose answer should not change (V already is x,
                   or the output does not depend on it there) that still give it; n/a where
                   every answer changes
    kl             mean KL(unsteered || steered) of the output distribution on those
                   prompts: how much the steer moves what it should leave alone; n/a likewise

Where the directions come from (``STEER_SOURCES``), all fitted at the target's site on
prompts the grading never sees:

    diff-in-means  mean activation where V = x minus where V != x (DiffMean in AxBench;
                   contrastive activation addition, Rimsky et al. 2024)          -> add
    probe          a multinomial linear probe's logit gradient for x, (W_x - mean_j W_j) / std -> add
    sae            the decoder row of the SAE latent that best separates x (largest mean
                   activation where V = x minus where V != x)                     -> add
    das            a DAS subspace trained for V at the site; its coordinates are set to
                   the mean of the prompts where V = x                            -> set
    truth          the ceiling: the component the truth declares V in, set to its mean where
                   V = x (for modular addition, the embedding's key-frequency planes, i.e.
                   a rotation of the Fourier features by w * k)                     -> set

An additive steer adds ``alpha * scale * unit direction`` (``scale``: the mean norm of the
activation at the site, so alpha is in units of the activation's size); a setting steer
moves the coordinates ``alpha`` of the way to the value's mean (alpha = 1 sets them).
``evaluate_steer`` sweeps alpha on tuning prompts, picks the alpha with the highest
success x preservation, and reports that alpha's figures on fresh prompts. Nothing here
changes the model: the steer is a hook (``toylab.interventions.steered``) that always
comes off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from toylab import components as comp
from toylab.interventions import orthonormal, steered
from toylab.methods.check import seed_spread
from toylab.methods.interchange import DASConfig, Site, activations, check_site, das
from toylab.methods.probes import ProbeConfig, fit_probe
from toylab.models import Transformer
from toylab.tasks import IGNORE, Batch
from toylab.tasks.algorithm import Algorithm
from toylab.tasks.base import Task, check_count
from toylab.tasks.brackets import Brackets, BracketsAlgorithm
from toylab.tasks.factual_recall import FactualRecall, FactualRecallAlgorithm
from toylab.tasks.modular_addition import ModularAddition, ModularAdditionAlgorithm

STEER_SOURCES = ("diff-in-means", "probe", "sae", "das", "truth")
ADD_ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # in units of the site's mean activation norm
SET_ALPHAS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # fractions of the way to the value's mean


@dataclass(frozen=True)
class SteeringTarget:
    """"``variable`` := goal at ``site``", with the right output computed by the task's algorithm."""

    name: str  # e.g. "relation := r1"
    description: str
    task: Task
    site: Site  # where directions are fitted and the steer acts
    variable: str  # the variable whose value the site carries
    n_values: int  # its values are 0 .. n_values - 1
    read: Callable[[Tensor], Tensor]  # tokens [batch, pos] -> the variable's value [batch]
    goal: Callable[[Tensor], Tensor]  # values [batch] -> the values to steer to [batch]
    outcome: Callable[[Batch, Tensor], Tensor]  # (prompts, values [batch]) -> targets [batch, pos] with variable := values
    sample: Callable[[int, int], Batch]  # (n, seed) -> prompts
    das_k: int = 2  # dimensions of the DAS subspace
    # The truth's site for the variable and, optionally, its subspace there: (model) -> (site, basis [d, k] or None).
    truth_steer: Callable[[Transformer], tuple[Site, Tensor | None]] | None = None

    def goals(self, batch: Batch) -> Tensor:
        """The value each prompt of ``batch`` is steered to: [batch]."""
        return self.goal(self.read(batch.tokens))

    def expected(self, batch: Batch) -> Tensor:
        """The algorithm's targets [batch, pos] on ``batch`` once the steer has worked."""
        return self.outcome(batch, self.goals(batch))


# ---- targets on the zoo's tasks ----------------------------------------------------------------


def _check_value(name: str, value: int, n: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise ValueError(f"{name} must be an int in [0, {n}), got {value!r}")


def _truth_component_steer(truth, variable: str, pos: int) -> Callable[[Transformer], tuple[Site, None]] | None:
    """The truth's component for ``variable``, at ``pos``: set its output to the value's mean."""
    if truth is None:
        return None
    found = [v for v in truth.variables if v.name == variable]
    if not found or len(found[0].components) != 1:
        return None
    kind, layer, index = comp.parse(found[0].components[0])
    site = (Site(f"blocks.{layer}.attn.hook_z", pos, index) if kind == "head"
            else Site(f"blocks.{layer}.hook_mlp_out", pos))
    return lambda model: (site, None)


def factual_relation_target(task: FactualRecall, relation: int = 1, truth=None) -> SteeringTarget:
    """``factual-recall``: the relation read at the subject position := ``relation``.

    Steered in the residual stream after layer 0's attention at the subject position, where
    the relation has arrived and MLP0 looks the fact up; the answer must become
    ``table[subject, relation]``.
    """
    _check_value("relation", relation, task.n_relations)
    algorithm = FactualRecallAlgorithm(task)
    pos = task.positions["subject"]
    return SteeringTarget(
        name=f"relation := r{relation}", task=task,
        description=f"the relation read at the subject position set to r{relation}: the answer becomes "
        f"attribute[subject, r{relation}]",
        site=Site("blocks.0.hook_resid_mid", pos), variable="relation", n_values=task.n_relations,
        read=lambda tokens: task.variables(tokens)["relation"],
        goal=lambda values: torch.full_like(values, relation),
        outcome=lambda batch, values: algorithm.assign(batch, "relation", values),
        sample=task.sample, das_k=min(4, task.n_relations),
        truth_steer=_truth_component_steer(truth, "relation", pos),
    )


def brackets_balance_target(task: Brackets, balance: int = 0, truth=None) -> SteeringTarget:
    """``brackets-siit``: the running balance at the last position := ``balance``.

    Steered in the residual stream after layer 0's attention at the last position, where
    L0H1 has written the balance; with 0, a string whose count never went negative before
    its last bracket becomes balanced, and the others keep their answer.
    """
    length = task.length
    if isinstance(balance, bool) or not isinstance(balance, int) or not -length <= balance <= length:
        raise ValueError(f"balance must be an int in [-{length}, {length}], got {balance!r}")
    algorithm = BracketsAlgorithm(task)
    last = task.n_ctx - 1
    at_last = torch.zeros(task.n_ctx, dtype=torch.bool, device="cpu")  # [pos], read by the algorithm (CPU)
    at_last[last] = True
    return SteeringTarget(
        name=f"balance := {balance}", task=task,
        description=f"the running balance at the last position set to {balance}",
        site=Site("blocks.0.hook_resid_mid", last), variable="balance", n_values=2 * length + 1,
        read=lambda tokens: task.variables(tokens)["balance"][:, -1] + length,  # values offset by length
        goal=lambda values: torch.full_like(values, balance + length),
        outcome=lambda batch, values: algorithm.assign(batch, "balance", values - length, positions=at_last),
        sample=task.sample, das_k=2,
        truth_steer=_truth_component_steer(truth, "balance", last),
    )


def key_frequency_basis(model: Transformer, p: int, frequencies: Sequence[int]) -> Tensor:
    """The planes of the token embedding that carry cos/sin(w a) for each key frequency w: [d_model, 2 * len(freqs)]."""
    a = torch.arange(p, dtype=torch.float64, device=model.device)
    W_E = model.embed.W_E.detach()[:p].double()  # [value, d_model]
    waves = [f(2 * math.pi * w * a / p) for w in frequencies for f in (torch.cos, torch.sin)]
    return orthonormal(torch.stack([W_E.T @ wave for wave in waves], dim=1)).float()  # [d_model, k]


def modadd_shift_target(task: ModularAddition, shift: int = 1, truth=None) -> SteeringTarget:
    """``modadd``: the operand a := a + ``shift`` (mod p), steered in the embedding of a.

    The answer must become (a + shift + b) mod p. The truth's steer rotates the key
    frequencies' cos/sin planes of the embedding by w * shift (it needs the truth's claim
    ``key_frequencies``).
    """
    p = task.p
    _check_value("shift", shift, p)
    if shift == 0:
        raise ValueError("shift must be non-zero: a shift of 0 steers nothing")
    algorithm = ModularAdditionAlgorithm(task)
    freqs = (truth.claims or {}).get("key_frequencies") if truth is not None else None
    return SteeringTarget(
        name=f"a := a + {shift}", task=task,
        description=f"the first operand shifted by {shift}: the answer becomes (a + {shift} + b) mod {p}",
        site=Site("blocks.0.hook_resid_pre", 0), variable="a", n_values=p,
        read=lambda tokens: tokens[:, 0].clone(),
        goal=lambda values: (values + shift) % p,
        outcome=lambda batch, values: algorithm.assign(batch, "sum", (values + batch.tokens[:, 1]) % p),
        sample=lambda n, seed: task.sample(n, seed, split="test"), das_k=2 * len(freqs) if freqs else 6,
        truth_steer=None if not freqs else (
            lambda model: (Site("blocks.0.hook_resid_pre", 0), key_frequency_basis(model, p, freqs))),
    )


def steering_targets(task: Task, truth=None) -> dict[str, SteeringTarget]:
    """The steering targets toylab defines on ``task`` (with ``truth``: the ceiling steer too)."""
    if isinstance(task, FactualRecall):
        targets = [factual_relation_target(task, 1, truth)]
    elif isinstance(task, Brackets):
        targets = [brackets_balance_target(task, 0, truth)]
    elif isinstance(task, ModularAddition):
        targets = [modadd_shift_target(task, 1, truth)]
    else:
        raise ValueError(f"no steering targets are defined on {type(task).__name__}; they exist for "
                         "FactualRecall, Brackets and ModularAddition")
    return {t.name: t for t in targets}


# ---- directions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Steer:
    """A fitted steer: one vector per value of the variable, applied at ``site``.

    ``mode="add"``: ``vectors`` are unit directions, added ``alpha * scale`` times.
    ``mode="set"``: ``vectors`` are the values' mean activations; the coordinates in span(``basis``)
    (None: the whole vector) move ``alpha`` of the way to them.
    """

    source: str
    site: Site
    mode: str
    vectors: Tensor  # [value, d]
    scale: float  # mean activation norm at the site (add mode's unit)
    basis: Tensor | None = None  # [d, k]
    info: dict = field(default_factory=dict)  # source-specific figures (probe accuracy, DAS IIA, ...)


def _labelled(model: Transformer, target: SteeringTarget, site: Site, n: int, seed: int) -> tuple[Tensor, Tensor]:
    batch = target.sample(n, seed)
    check_site(model, site, batch.tokens.shape[1])
    return activations(model, batch.tokens.to(model.device), site).float(), target.read(batch.tokens).to(model.device)


def _class_means(x: Tensor, labels: Tensor, n_values: int) -> tuple[Tensor, Tensor]:
    """Mean of x [batch, d] per value [value, d], and how many prompts had each value [value]."""
    counts = torch.bincount(labels, minlength=n_values).to(x.dtype)  # [value]
    sums = torch.zeros(n_values, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    return sums / counts.clamp(min=1).unsqueeze(-1), counts


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _diff_in_means(x: Tensor, labels: Tensor, n_values: int) -> Tensor:
    means, counts = _class_means(x, labels, n_values)
    total = x.sum(0)  # [d]
    rest = (total - means * counts.unsqueeze(-1)) / (len(x) - counts).clamp(min=1).unsqueeze(-1)  # [value, d]
    return _unit(means - rest)


def _sae_directions(x: Tensor, labels: Tensor, n_values: int, seed: int, steps: int) -> tuple[Tensor, dict]:
    from toylab.sae import SAE, SAEConfig, train_sae

    d = x.shape[1]
    cfg = SAEConfig(d_in=d, d_sae=max(4 * d, 2 * n_values), architecture="topk", k=min(8, d), seed=seed)
    sae = SAE(cfg).to(x.device)
    train_sae(sae, x, steps=steps, batch_size=256, lr=3e-3, seed=seed)
    with torch.no_grad():
        z = sae.encode(x)  # [batch, latent]
        means, counts = _class_means(z, labels, n_values)  # [value, latent]
        rest = (z.sum(0) - means * counts.unsqueeze(-1)) / (len(x) - counts).clamp(min=1).unsqueeze(-1)
        latents = (means - rest).argmax(-1)  # [value]: the latent that best separates each value
        explained = 1 - (sae.decode(z) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    return _unit(sae.W_dec.detach()[latents]), {"latents": latents.tolist(),
                                                "explained_variance": float(explained)}


class _SteeringAlgorithm(Algorithm):
    """The target as a one-variable causal model, so DAS can align its variable at the site."""

    def __init__(self, target: SteeringTarget) -> None:
        self.target, self.task, self.variables = target, target.task, (target.variable,)

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        seeds = torch.randint(2**62, (2,), generator=generator, device=generator.device).tolist()
        return self.target.sample(n, seeds[0]), self.target.sample(n, seeds[1])

    def intervene(self, base: Batch, source: Batch, variable: str) -> Tensor:
        self.check_variable(variable)
        return self.target.outcome(base, self.target.read(source.tokens))


def fit_steer(model: Transformer, target: SteeringTarget, source: str, n: int = 2048, seed: int = 0,
              sae_steps: int = 1500, das_config: DASConfig | None = None) -> Steer:
    """Fit ``source``'s steer (one of ``STEER_SOURCES``) for ``target`` on ``n`` prompts drawn with ``seed``."""
    if source not in STEER_SOURCES:
        raise ValueError(f"source must be one of {STEER_SOURCES}, got {source!r}")
    check_count("n", n)
    x, labels = _labelled(model, target, target.site, n, seed)
    missing = (torch.bincount(labels, minlength=target.n_values) == 0).nonzero().flatten()
    goals = target.goal(labels).unique()
    if any(int(g) in missing.tolist() for g in goals):
        raise ValueError(f"none of the {n} fitting prompts has {target.variable} = a value the steer aims at; "
                         "pass a larger n")
    scale = float(x.norm(dim=-1).mean())
    if source == "diff-in-means":
        return Steer(source, target.site, "add", _diff_in_means(x, labels, target.n_values), scale)
    if source == "probe":
        probe = fit_probe(x, labels, target.n_values, ProbeConfig(seed=seed))
        directions = (probe.weight - probe.weight.mean(0)) / probe.std  # [value, d]: d(logit_x - mean logit)/dx
        accuracy = float((probe.predict(x) == labels).float().mean())
        return Steer(source, target.site, "add", _unit(directions), scale, info={"train_accuracy": accuracy})
    if source == "sae":
        directions, info = _sae_directions(x, labels, target.n_values, seed, sae_steps)
        return Steer(source, target.site, "add", directions, scale, info=info)
    if source == "das":
        config = das_config or DASConfig(k=target.das_k, steps=300, n_train=1024, seed=seed)
        result = das(model, _SteeringAlgorithm(target), target.variable, target.site, config)
        means, _ = _class_means(x, labels, target.n_values)
        return Steer(source, target.site, "set", means, scale, result.basis.float(),
                     info={"iia": result.test_iia, "k": result.k})
    # truth
    if target.truth_steer is None:
        raise ValueError(f"{target.name}: no truth steer (pass the zoo model's truth to the target's builder)")
    site, basis = target.truth_steer(model)
    x, labels = _labelled(model, target, site, n, seed)
    means, _ = _class_means(x, labels, target.n_values)
    return Steer(source, site, "set", means, float(x.norm(dim=-1).mean()), basis)


@contextmanager
def apply_steer(model: Transformer, steer: Steer, goals: Tensor, alpha: float) -> Iterator[Transformer]:
    """Within the block, ``steer`` pushes each prompt towards its goal value (``goals`` [batch])."""
    vectors = steer.vectors[goals.to(steer.vectors.device)]  # [batch, d]
    strength = alpha * steer.scale if steer.mode == "add" else alpha
    with steered(model, steer.site.hook, vectors, strength, positions=steer.site.pos, head=steer.site.head,
                 mode=steer.mode, basis=steer.basis) as m:
        yield m


# ---- grading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SteeringScore:
    alpha: float
    success: float | None  # changed prompts now giving exactly the algorithm's answer; None when none should change
    preservation: float | None  # unchanged prompts still right; None (n/a) when every answer changes
    kl: float | None  # mean KL(unsteered || steered) on the unchanged prompts; None likewise
    n_changed: int
    n_unchanged: int

    @property
    def score(self) -> float:
        """What alpha is chosen by: success x preservation (either alone where the other is n/a)."""
        parts = [x for x in (self.success, self.preservation) if x is not None]
        return math.prod(parts) if parts else float("nan")


@torch.no_grad()
def score_steer(model: Transformer, target: SteeringTarget, steer: Steer, batch: Batch, alpha: float) -> SteeringScore:
    """Grade ``steer`` at strength ``alpha`` on ``batch`` against the algorithm."""
    device = model.device
    tokens = batch.tokens.to(device)
    expected = target.expected(batch).to(device)  # [batch, pos]
    scored = expected != IGNORE
    clean_targets = batch.targets.to(device)
    changed = ((expected != clean_targets) & scored).any(-1)  # [batch]
    clean_logits = model(tokens)  # [batch, pos, vocab]
    with apply_steer(model, steer, target.goals(batch), alpha):
        logits = model(tokens)
    hit = ((logits.argmax(-1) == expected) | ~scored).all(-1)  # [batch]
    kl = (F.kl_div(logits.log_softmax(-1), clean_logits.log_softmax(-1), log_target=True, reduction="none")
          .sum(-1) * scored).sum(-1) / scored.sum(-1).clamp(min=1)  # [batch]
    unchanged = ~changed
    return SteeringScore(
        alpha=alpha,
        success=float(hit[changed].float().mean()) if changed.any() else None,
        preservation=float(hit[unchanged].float().mean()) if unchanged.any() else None,
        kl=float(kl[unchanged].mean()) if unchanged.any() else None,
        n_changed=int(changed.sum()), n_unchanged=int(unchanged.sum()),
    )


@dataclass(frozen=True)
class SteeringResult:
    target: str
    source: str
    mode: str
    sweep: tuple[SteeringScore, ...]  # on the tuning prompts, one per alpha
    held_out: SteeringScore  # the chosen alpha, on fresh prompts: the figures to report
    info: dict

    @property
    def alpha(self) -> float:
        return self.held_out.alpha

    def __str__(self) -> str:
        h = self.held_out
        success, pres, kl = ("n/a" if x is None else f"{x:.3f}" for x in (h.success, h.preservation, h.kl))
        return (f"{self.source} on {self.target}: success {success}, preservation {pres}, KL {kl} "
                f"(alpha {h.alpha:g}, {self.mode})")


def evaluate_steer(model: Transformer, target: SteeringTarget, steer: Steer, alphas: Sequence[float] | None = None,
                   n: int = 512, seed: int = 0) -> SteeringResult:
    """Sweep ``alphas`` on ``n`` tuning prompts, choose the best, report it on ``n`` fresh ones.

    Both prompt sets come from seeds the fitting never uses (``fit_steer`` takes ``3 * seed``
    in ``steer_and_score``; these are ``3 * seed + 1`` and ``3 * seed + 2``).
    """
    check_count("n", n)
    alphas = tuple(alphas or (ADD_ALPHAS if steer.mode == "add" else SET_ALPHAS))
    if not alphas or any(isinstance(a, bool) or not isinstance(a, (int, float)) for a in alphas):
        raise ValueError(f"alphas must be a non-empty sequence of numbers, got {alphas!r}")
    tune, test = target.sample(n, 3 * seed + 1), target.sample(n, 3 * seed + 2)
    sweep = tuple(score_steer(model, target, steer, tune, float(a)) for a in alphas)
    best = max(sweep, key=lambda s: (s.score if not math.isnan(s.score) else -1.0, -s.alpha))
    return SteeringResult(target.name, steer.source, steer.mode, sweep,
                          score_steer(model, target, steer, test, best.alpha), dict(steer.info))


def steer_and_score(model: Transformer, target: SteeringTarget, source: str, n_fit: int = 2048, n: int = 512,
                    seed: int = 0, alphas: Sequence[float] | None = None, **fit_options) -> SteeringResult:
    """``fit_steer`` on prompts from ``3 * seed``, then ``evaluate_steer`` on prompts no fit saw."""
    steer = fit_steer(model, target, source, n=n_fit, seed=3 * seed, **fit_options)
    return evaluate_steer(model, target, steer, alphas, n=n, seed=seed)


@dataclass(frozen=True)
class SteeringComparison:
    """Held-out figures per direction source over seeds (the AxBench question, answered exactly)."""

    target: str
    results: dict[str, tuple[SteeringResult, ...]]  # source -> one result per seed

    def summary(self, source: str) -> dict[str, tuple[float, float] | None]:
        """(mean, std over seeds) of success, preservation and KL; None where n/a."""
        out: dict[str, tuple[float, float] | None] = {}
        for name in ("success", "preservation", "kl", "alpha"):
            values = [getattr(r.held_out, name) for r in self.results[source]]
            if any(v is None for v in values):
                out[name] = None
                continue
            t = torch.tensor(values, dtype=torch.float64, device="cpu")
            out[name] = (float(t.mean()), float(t.std()) if len(t) > 1 else 0.0)
        return out

    def table(self) -> str:
        """A markdown table, one row per source."""
        rows = ["| source | success | preservation | KL | alpha |", "|---|---|---|---|---|"]
        for source, results in self.results.items():
            cells = [seed_spread(getattr(r.held_out, name) for r in results) for name in ("success", "preservation", "kl")]
            rows.append(f"| {source} | " + " | ".join(cells) + f" | {seed_spread((r.alpha for r in results), 2)} |")
        return "\n".join(rows)


def compare_steering(model: Transformer, target: SteeringTarget, sources: Sequence[str] = STEER_SOURCES,
                     seeds: Sequence[int] = (0, 1, 2), n_fit: int = 2048, n: int = 512,
                     **fit_options) -> SteeringComparison:
    """``steer_and_score`` for each source and seed (sources needing a truth the target lacks are skipped)."""
    results = {}
    for source in sources:
        if source == "truth" and target.truth_steer is None:
            continue
        results[source] = tuple(steer_and_score(model, target, source, n_fit, n, seed, **fit_options)
                                for seed in seeds)
    return SteeringComparison(target.name, results)
