"""The featuriser track: where, within its component, does a causal variable live?

Circuit discovery names components; a variable can share its component with others
(``CausalVariable.basis``: a distributed variable, MIB's causal-variable localisation
track). A **featuriser** proposes the subspace of the component's output that carries the
variable, as orthonormal columns, or None for the whole output:

    featuriser(model, algorithm, variable, site, *, seed) -> Tensor [d, k] | None

and is scored by the interchange-intervention accuracy (IIA) of patching that subspace
alone, on pairs drawn from a data seed no featuriser saw (``methods.interchange``). The
site is the truth's (``methods.interchange.variable_site``): the track asks *which
directions*, not *which component*.

full-vector   the whole output (what node-level patching assumes)
neuron-mask   the coordinates a learned mask keeps (``methods.neuron_mask``: DAS over the
              standard basis, desiderata-based masking)
pca           the top principal direction(s) of the site's activations on task inputs
              (unsupervised; k = the truth's width)
das           distributed alignment search (``methods.das``), k = the truth's width
truth         the declared basis: the ceiling (peeks)

The suite is every zoo model whose truth declares a variable with a basis.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from toylab.interventions import orthonormal
from toylab.methods.interchange import (
    DASConfig,
    Site,
    activations,
    das,
    interchange_accuracy,
    neuron_mask,
    variable_site,
)
from toylab.validate.suite import Subject, subjects

SCORE_SEED = 20261203  # the held-out pairs' data seed: no featuriser trains on it
SCORE_PAIRS = 512
STEPS = 150  # DAS and the neuron mask: converged on the distributed trap by ~100

Featuriser = Callable[..., "Tensor | None"]


def full_vector(model, algorithm, variable: str, site: Site, *, k: int, seed: int = 0) -> None:
    """The whole output."""
    return


def neuron_mask_basis(model, algorithm, variable: str, site: Site, *, k: int, seed: int = 0) -> Tensor:
    """The coordinates ``methods.neuron_mask`` keeps."""
    return neuron_mask(model, algorithm, variable, site, DASConfig(steps=STEPS, seed=seed)).basis


def pca(model, algorithm, variable: str, site: Site, *, k: int, seed: int = 0) -> Tensor:
    """The top ``k`` principal directions of the site's activations on the algorithm's inputs."""
    base, source = algorithm.sample_pairs(256, torch.Generator().manual_seed(seed))
    x = activations(model, torch.cat([base.tokens, source.tokens]), site).double()  # [batch, d]
    _, _, v = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    return orthonormal(v[:k].T).float()


def das_basis(model, algorithm, variable: str, site: Site, *, k: int, seed: int = 0) -> Tensor:
    """The subspace ``methods.das`` learns."""
    return das(model, algorithm, variable, site, DASConfig(k=k, steps=STEPS, seed=seed)).basis


FEATURISERS: dict[str, Featuriser] = {
    "full-vector": full_vector,
    "neuron-mask": neuron_mask_basis,
    "pca": pca,
    "das": das_basis,
}
PEEK = "truth"  # the declared basis, scored beside them as the ceiling


@dataclass(frozen=True)
class FeaturiserEntry:
    model: str
    seed: int
    variable: str
    featuriser: str
    iia: float  # held out
    k: int | None  # width of the subspace; None for the whole output
    seconds: float


def _located(subject: Subject) -> list:
    return [v for v in subject.truth.variables if v.basis]


def featuriser_suite(names: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[Subject]:
    """The suite's models whose truth locates a variable within its component (and has an algorithm)."""
    suite = subjects(list(names) if names else None, list(seeds) if seeds else None)
    return [s for s in suite if s.algorithm is not None and _located(s)]


def score_featurisers(featurisers: dict[str, Featuriser] | None = None, suite: Sequence[Subject] | None = None,
                      ) -> list[FeaturiserEntry]:
    """Each featuriser's held-out IIA for every located variable of every model in ``suite``."""
    featurisers = dict(FEATURISERS if featurisers is None else featurisers)
    suite = featuriser_suite() if suite is None else suite
    out = []
    for subject in suite:
        n_pos = subject.task.n_ctx
        for variable in _located(subject):
            site = variable_site(subject.truth, variable.name, n_pos)
            declared = torch.tensor(variable.basis, device="cpu").T  # [d, k]
            k = declared.shape[1]
            runs = {**featurisers, PEEK: lambda *a, declared=declared, **kw: declared}
            for label, featuriser in runs.items():
                start = time.perf_counter()
                basis = featuriser(subject.model, subject.algorithm, variable.name, site, k=k, seed=subject.seed)
                iia = interchange_accuracy(subject.model, subject.algorithm, variable.name, site, basis,
                                           SCORE_PAIRS, SCORE_SEED).accuracy
                out.append(FeaturiserEntry(subject.name, subject.seed, variable.name, label, iia,
                                           None if basis is None else basis.shape[1], time.perf_counter() - start))
    return out


def table(entries: Sequence[FeaturiserEntry]) -> str:
    """Markdown: per model and variable, each featuriser's IIA, mean ± std over seeds."""
    if not entries:
        return ""
    lines = []
    for model in dict.fromkeys(e.model for e in entries):
        variables = list(dict.fromkeys(e.variable for e in entries if e.model == model))
        lines += [f"### {model}", "", "| featuriser | " + " | ".join(f"IIA of {v}" for v in variables) + " | k |",
                  "|---" * (len(variables) + 2) + "|"]
        for label in dict.fromkeys(e.featuriser for e in entries if e.model == model):
            cells, widths = [], set()
            for v in variables:
                values = [e.iia for e in entries if (e.model, e.featuriser, e.variable) == (model, label, v)]
                widths |= {e.k for e in entries if (e.model, e.featuriser, e.variable) == (model, label, v)}
                spread = statistics.pstdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.fmean(values):.3f} ± {spread:.3f} (n={len(values)})")
            width = "whole" if widths == {None} else ", ".join(str(w) for w in sorted(w for w in widths if w is not None))
            name = f"{label} (peeks)" if label == PEEK else label
            lines.append("| " + " | ".join([name, *cells, width]) + " |")
        lines.append("")
    return "\n".join(lines)


__all__ = ["FEATURISERS", "PEEK", "Featuriser", "FeaturiserEntry", "das_basis", "featuriser_suite", "full_vector",
           "neuron_mask_basis", "pca", "score_featurisers", "table"]
