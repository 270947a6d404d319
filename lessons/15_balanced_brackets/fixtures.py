"""Lesson 15's fixtures, shared by the lesson, its checkers and the lab's "15 Balanced brackets" page.

Where each variable lives is never written here: it is read from the model's truth (``truth_sites``), and what
each intervention must do from the task's algorithm (``BracketsAlgorithm.intervene``).
"""

from dataclasses import dataclass
from typing import Any

import torch

from toylab import methods
from toylab.interventions import interchange_accuracy, interchanged
from toylab.tasks import Batch, CounterfactualPair, logit_diff, normalised

MODEL = "brackets-siit"  # L0H1 counts, MLP0 flags, L1H1 gathers the flags, MLP1 answers; L0H0 and L1H0 are inert
N_STRINGS = 512  # strings the layer-0 readouts and the flag readout are measured on
N_PAIRS = 256  # (base, source) pairs per interchange-intervention accuracy; counterfactual pairs per ablation
IIA_BAR = 0.9  # exercise 15.5: a component carries a variable where its IIA reaches this
DESTROYS = 0.5  # exercise 15.6: a component matters for a failure where ablating it destroys this much
VARIABLES = ("balance", "negative", "any_negative")  # the truth's variables, in causal order
# Where each variable is swapped for its IIA: the positions the truth declares it at, and for the per-position flag
# also every position but the last (where "negative" everywhere would be "any_negative" itself).
IIA_TESTS = (("balance", "all"), ("negative", "all"), ("negative", "all but last"), ("any_negative", "last"))
KINDS = ("dips", "unclosed")  # the two edits of task.counterfactual: a swapped pair, or one ")" turned "("
FLAG_HOOK = "blocks.0.hook_mlp_out"  # where the flags are read (and where the truth puts "negative")


def components(cfg: Any) -> list[str]:
    """Every head and MLP, in the order the residual stream meets them: L0H0, L0H1, MLP0, L1H0, ..."""
    out = []
    for layer in range(cfg.n_layers):
        out += [f"L{layer}H{head}" for head in range(cfg.n_heads)] + ([] if cfg.attn_only else [f"MLP{layer}"])
    return out


def positions(which: str, n_ctx: int) -> torch.Tensor:
    """"all", "last" or "all but last" as a bool mask [pos]."""
    mask = torch.ones(n_ctx, dtype=torch.bool)
    if which == "last":
        mask[:-1] = False
    elif which == "all but last":
        mask[-1] = False
    elif which != "all":
        raise ValueError(f"positions must be 'all', 'last' or 'all but last', got {which!r}")
    return mask


def truth_sites(truth: Any) -> dict[str, str]:
    """The component the truth puts each variable in: {"balance": "L0H1", ...}."""
    return {v.name: v.components[0] for v in truth.variables if len(v.components) == 1}


def truth_flag_directions(truth: Any, hook: str = FLAG_HOOK) -> torch.Tensor:
    """The flag directions the truth declares (its features of the variable "negative" at ``hook``, one per position
    where one is declared), as unit rows [feature, d_model] in float64; [0, 0] where it declares none."""
    vectors = [f.vector for f in getattr(truth, "features", ()) if f.variable == "negative" and f.hook == hook]
    if not vectors:
        return torch.zeros(0, 0, dtype=torch.float64)
    out = torch.tensor(vectors, dtype=torch.float64)
    return out / out.norm(dim=-1, keepdim=True)


class AtPositions:
    """``algorithm`` with its interventions made only at ``positions`` (a bool mask [pos]): what
    ``toylab.interventions.interchange_accuracy`` asks of an algorithm, for a variable swapped there alone."""

    def __init__(self, algorithm: Any, mask: torch.Tensor) -> None:
        self.algorithm, self.mask = algorithm, mask
        self.task, self.variables = algorithm.task, algorithm.variables

    def check_variable(self, variable: str) -> None:
        self.algorithm.check_variable(variable)

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        return self.algorithm.sample_pairs(n, generator)

    def intervene(self, base: Batch, source: Batch, variable: str) -> torch.Tensor:
        return self.algorithm.intervene(base, source, variable, self.mask)


def iia(model: Any, algorithm: Any, variable: str, component: str, mask: torch.Tensor, n: int = N_PAIRS,
        seed: int = 0) -> float:
    """toylab's interchange-intervention accuracy: ``n`` pairs from ``algorithm.sample_pairs`` (generator seeded with
    ``seed``), ``component``'s output taken from the source at ``mask``'s positions, against the algorithm's answer
    with ``variable`` taken from the source there."""
    with torch.no_grad():
        return interchange_accuracy(model, AtPositions(algorithm, mask), variable,
                                    lambda source: interchanged(model, source, [component], mask), n, seed)[0]


def failure_pairs(task: Any, n: int = N_PAIRS, seed: int = 0) -> dict[str, CounterfactualPair]:
    """``task.counterfactual(n, seed)`` split by its edit: "dips" (a matched pair swapped: the unbalanced string ends
    at zero but dips below it) and "unclosed" (one ")" turned "(": it never dips but ends at +2)."""
    pair = task.counterfactual(n, seed)
    clean, corrupted = task.variables(pair.clean.tokens), task.variables(pair.corrupted.tokens)
    dips = clean["final_zero"] == corrupted["final_zero"]  # only any_negative differs: the swap
    return {kind: CounterfactualPair(pair.clean[rows], pair.corrupted[rows], f"{kind}: {pair.description}")
            for kind, rows in (("dips", dips), ("unclosed", ~dips))}


def destroyed(model: Any, pair: CounterfactualPair, names: list[str] | None = None) -> dict[str, float]:
    """Per component, the fraction of the clean-minus-corrupted logit difference that resample-ablating it (its
    output taken from the corrupted string, ``methods.ablation_scores``) destroys: 1 - the normalised score."""
    with torch.no_grad():
        scores = methods.ablation_scores(model, pair, names or components(model.cfg), method="resample")
        clean = float(logit_diff(model(pair.clean.tokens), pair))
        corrupted = float(logit_diff(model(pair.corrupted.tokens), pair))
    return {c: 1.0 - normalised(float(s), clean, corrupted) for c, s in zip(scores.components, scores.scores)}


def truth_failures(truth: Any, task: Any, pairs: dict[str, CounterfactualPair]) -> dict[str, set[str]]:
    """What the truth predicts each failure hinges on: the components of the variables whose value differs between
    the two strings of most pairs of that kind, and the truth's node that computes the answer from them."""
    sites = truth_sites(truth)
    answer = {node for node, role in truth.nodes.items() if role == "answer"}
    out = {}
    for kind, pair in pairs.items():
        clean, corrupted = task.variables(pair.clean.tokens), task.variables(pair.corrupted.tokens)
        differ = {name for name in sites
                  if (clean[name] != corrupted[name]).reshape(len(pair.clean), -1).any(-1).float().mean() > 0.5}
        out[kind] = {sites[name] for name in differ} | answer
    return out


def layer0_readouts(model: Any, task: Any, tokens: torch.Tensor,
                    head: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Head ``head`` of layer 0 at every bracket's position of ``tokens`` [batch, pos], pooled over positions: its
    output ``hook_z`` [n, d_head], the balance there [n] (float64) and the position [n] (1 .. length)."""
    balance = task.variables(tokens)["balance"]  # [batch, pos]
    with torch.no_grad():
        z = model.run_with_cache(tokens, names=["blocks.0.attn.hook_z"])[1]["blocks.0.attn.hook_z"][:, :, head]
    pos = torch.arange(tokens.shape[1]).expand_as(tokens)
    return z[:, 1:].reshape(-1, z.shape[-1]), balance[:, 1:].reshape(-1).double(), pos[:, 1:].reshape(-1)


@dataclass(frozen=True)
class FlagReadout:
    """The flag read off MLP0's output along one direction: 0 at the mean projection where the balance is not below
    zero, 1 at the mean where it is, clipped to [0, 1]."""

    direction: torch.Tensor  # [d_model], unit
    off: float  # mean projection where the flag is off
    on: float  # mean projection where it is on

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        """acts [..., d_model] -> the flag read out [...]."""
        return ((acts.double() @ self.direction - self.off) / (self.on - self.off)).clamp(0.0, 1.0)


def fit_flag_readout(model: Any, task: Any, n: int = N_STRINGS, seed: int = 0, hook: str = FLAG_HOOK) -> FlagReadout:
    """The difference in means of ``hook`` (MLP0's output) between the bracket positions where the balance is below
    zero and the others, on ``n`` strings drawn with ``seed``: exercise 15.3's direction, with its two means."""
    tokens = task.sample(n, seed=seed).tokens
    on = task.variables(tokens)["negative"][:, 1:].reshape(-1)
    with torch.no_grad():
        x = model.run_with_cache(tokens, names=[hook])[1][hook][:, 1:].reshape(-1, model.cfg.d_model).double()
    difference = x[on].mean(0) - x[~on].mean(0)
    direction = difference / difference.norm()
    return FlagReadout(direction, float((x[~on] @ direction).mean()), float((x[on] @ direction).mean()))


def flag_readout(model: Any, readout: FlagReadout, tokens: torch.Tensor, hook: str = FLAG_HOOK) -> torch.Tensor:
    """The flag ``readout`` reads at every position of ``tokens`` [batch, pos]: [batch, pos] in [0, 1]."""
    with torch.no_grad():
        return readout(model.run_with_cache(tokens, names=[hook])[1][hook])
