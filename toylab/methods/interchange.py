"""Causal variable localisation: interchange interventions on a subspace, IIA and DAS.

Axis names used in shape comments:
    batch   -- (base, source) pairs, or prompts
    pos     -- token position
    d       -- width of the activation at a site: d_model for the residual stream and
               layer outputs, d_mlp for ``mlp.hook_post``, d_head for one head's q/k/v/z
    k       -- dimensions of the intervened subspace
    vocab   -- output classes

A **site** is one activation vector: a hook at one position (and, for per-head hooks such
as ``attn.hook_z``, one head). An **interchange intervention** on a subspace of a site runs
the base input with the site's component in that subspace taken from the source input:

    x_base  <-  x_base + (x_source - x_base) @ B @ B.T        B: [d, k], orthonormal columns

(B = the identity swaps the whole vector.) The high-level algorithm says what the output
should then be (``Algorithm.intervene``); the **interchange-intervention accuracy** (IIA)
is the fraction of pairs on which the model's arg-max output equals it (Geiger et al.
2021, 2024). A high IIA at a site says the model *uses* the variable there, through that
subspace: a probe only says it can be read off.

Where B comes from:
    the whole vector     ``basis=None``
    a linear probe       ``probe_subspace(probe)``: the directions the probe reads
    an SAE               ``sae_subspace(sae, latents)``: the decoder directions of latents
    a neuron mask        ``neuron_mask(...)``: the coordinates (neurons) a learned mask
                         keeps: DAS restricted to the standard basis
    DAS                  ``das(...)``: a rotation learned so that swapping its first k
                         coordinates gives the algorithm's counterfactual outputs (distributed
                         alignment search, Geiger et al. 2024), trained on some pairs and
                         scored on others.

Interventions are context managers that always remove their hooks; nothing here changes
the model (DAS trains only its own rotation, and gradients never reach the model's weights).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import orthogonal

from toylab.components import PER_HEAD_HOOKS
from toylab.hooks import UnknownNameError
from toylab.interventions import interchange_accuracy as _iia
from toylab.interventions import orthonormal, patch_subspace
from toylab.models import Transformer
from toylab.tasks import IGNORE, Batch
from toylab.tasks.algorithm import Algorithm


@dataclass(frozen=True)
class Site:
    """One activation vector: ``hook`` at position ``pos`` (and ``head`` for per-head hooks)."""

    hook: str  # e.g. "blocks.0.hook_resid_post"
    pos: int  # token position; negative counts from the end
    head: int | None = None  # required for hooks shaped [batch, pos, head, d_head]

    def __post_init__(self) -> None:
        if not isinstance(self.hook, str):
            raise TypeError(f"Site.hook must be a hook name, got {self.hook!r}")
        for name in ("pos", "head"):
            value = getattr(self, name)
            if (value is not None or name == "pos") and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"Site.{name} must be an int, got {value!r}")

    def __str__(self) -> str:
        return f"{self.hook}[{self.pos}]" + ("" if self.head is None else f"[head {self.head}]")


def variable_site(truth, variable: str, n_pos: int) -> Site:
    """Where ``truth`` declares ``variable``: its component's output hook at its position.

    A head ``L{l}H{h}`` gives ``blocks.{l}.attn.hook_z`` (head h), an MLP ``MLP{l}``
    ``blocks.{l}.hook_mlp_out``. The variable must sit in one component at one position.
    """
    found = [v for v in truth.variables if v.name == variable]
    if not found:
        raise KeyError(f"{truth.model} declares no variable {variable!r}; "
                       f"its variables: {[v.name for v in truth.variables]}")
    return site_of(found[0], n_pos)


def site_of(var, n_pos: int) -> Site:
    """The site of a ``CausalVariable`` that sits in one component at one position."""
    from toylab import components as comp
    from toylab.interventions import position_mask

    positions = position_mask(var.positions, n_pos).nonzero().flatten().tolist()
    if len(var.components) != 1 or len(positions) != 1:
        raise ValueError(f"{var.name!r} sits in {list(var.components)} at positions {var.positions!r}: "
                         "a site is one component at one position")
    kind, layer, index = comp.parse(var.components[0])
    if kind == "head":
        return Site(f"blocks.{layer}.attn.hook_z", positions[0], index)
    if kind == "mlp":
        return Site(f"blocks.{layer}.hook_mlp_out", positions[0])
    raise ValueError(f"{var.name!r} sits in {var.components[0]!r}: only heads and MLPs have an output site")


def check_site(model: Transformer, site: Site, n_pos: int) -> None:
    """Raise a clear error if ``site`` is not an activation vector of ``model`` on ``n_pos`` tokens."""
    if site.hook not in model.hook_names():
        raise UnknownNameError(site.hook, model.hook_names())
    if not -n_pos <= site.pos < n_pos:
        raise ValueError(f"site {site}: position {site.pos} is out of range for prompts of {n_pos} tokens")
    per_head = site.hook.split(".")[-1] in PER_HEAD_HOOKS
    if site.hook.endswith(("hook_pattern", "hook_attn_scores")):
        raise ValueError(f"site {site}: attention patterns are not activation vectors; use hook_z, "
                         "hook_result or a residual-stream hook")
    if per_head and site.head is None:
        raise ValueError(f"site {site}: {site.hook} holds one vector per head; give Site(..., head=h)")
    if per_head and not 0 <= site.head < model.cfg.n_heads:
        raise ValueError(f"site {site}: head {site.head} out of range; the model has {model.cfg.n_heads} heads")
    if not per_head and site.head is not None:
        raise ValueError(f"site {site}: {site.hook} has no head axis; leave head=None")


def _select(x: Tensor, site: Site) -> Tensor:
    """The site's vectors [batch, d] out of a hook's activation [batch, pos, ...]."""
    x = x[:, site.pos]
    return x if site.head is None else x[:, site.head]


@torch.no_grad()
def activations(model: Transformer, tokens: Tensor, site: Site) -> Tensor:
    """The activation at ``site`` on each prompt: [batch, d]."""
    check_site(model, site, tokens.shape[1])
    _, cache = model.run_with_cache(tokens.to(model.device), names=[site.hook])
    return _select(cache[site.hook], site).clone()


def _check_basis(basis: Tensor | None, d: int, site: Site) -> Tensor | None:
    if basis is None:
        return None
    if basis.ndim != 2 or basis.shape[0] != d:
        raise ValueError(f"basis for {site} must have shape [d={d}, k], got {tuple(basis.shape)}")
    gram = basis.T @ basis  # [k, k]
    if not torch.allclose(gram, torch.eye(basis.shape[1], dtype=basis.dtype, device=basis.device), atol=1e-4):
        raise ValueError("basis columns must be orthonormal; "
                         "pass it through toylab.interventions.orthonormal(basis) first")
    return basis


def _patch_hook(site: Site, source_vectors: Tensor, basis: Tensor | None):
    def hook(x: Tensor, hook) -> Tensor:  # x: [batch, pos, d] or [batch, pos, head, d_head]
        x = x.clone()
        index = (slice(None), site.pos) if site.head is None else (slice(None), site.pos, site.head)
        x[index] = patch_subspace(x[index], source_vectors, basis)
        return x
    return hook


@contextmanager
def subspace_interchange(model: Transformer, source_tokens: Tensor, site: Site,
                         basis: Tensor | None = None) -> Iterator[Transformer]:
    """Within the block, the model's activation at ``site`` takes its ``basis`` component from ``source_tokens``.

    ``basis`` [d, k] has orthonormal columns (``orthonormal``), or is None for the whole
    vector. Prompts run inside must have the batch size and length of ``source_tokens``.
    """
    source = activations(model, source_tokens, site)  # [batch, d]
    basis = _check_basis(None if basis is None else basis.to(source.device, source.dtype), source.shape[-1], site)
    with model.hooks([(site.hook, _patch_hook(site, source, basis))]):
        yield model


def probe_subspace(probe) -> Tensor:
    """The directions a linear probe reads, as orthonormal columns [d, k] (k <= classes - 1).

    A multinomial probe's logits are ``((x - mean) / std) @ W.T + b``; only differences
    between classes matter, so the subspace is spanned by the centred rows of ``W / std``.
    """
    W = probe.weight / probe.std  # [class, d]
    return orthonormal((W - W.mean(0, keepdim=True)).T)


def sae_subspace(sae, latents: Sequence[int]) -> Tensor:
    """The decoder directions of ``latents`` of an SAE, as orthonormal columns [d_in, k]."""
    latents = list(latents)
    if not latents:
        raise ValueError("give at least one latent")
    bad = [i for i in latents if not 0 <= i < sae.cfg.d_sae]
    if bad:
        raise ValueError(f"latents {bad} out of range; the SAE has {sae.cfg.d_sae}")
    return orthonormal(sae.W_dec.detach()[latents].T)


# ---- interchange-intervention accuracy --------------------------------------------------


@dataclass(frozen=True)
class IIAResult:
    variable: str
    site: Site
    accuracy: float  # IIA: fraction of pairs whose arg-max output is the algorithm's counterfactual
    unchanged: float  # fraction of pairs whose output stayed the base answer (where it differs from the expected)
    n_pairs: int
    dim: int | None  # dimension of the intervened subspace; None for the whole vector
    method: str  # "full", "subspace" or "das"

    def __str__(self) -> str:
        dim = "whole vector" if self.dim is None else f"{self.dim}-dim subspace"
        return f"IIA of {self.variable} at {self.site} ({self.method}, {dim}): {self.accuracy:.3f} over {self.n_pairs} pairs"


def _scored_accuracy(logits: Tensor, expected: Tensor) -> Tensor:
    """Per pair, 1.0 if every scored position's arg-max equals ``expected`` [batch, pos]."""
    scored = expected != IGNORE
    hit = (logits.argmax(-1) == expected) | ~scored  # [batch, pos]
    return hit.all(-1).float()  # [batch]


def _pairs(algorithm: Algorithm, variable: str, n: int, seed: int) -> tuple[Batch, Batch, Tensor]:
    algorithm.check_variable(variable)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    base, source = algorithm.sample_pairs(n, torch.Generator().manual_seed(seed))
    expected = algorithm.intervene(base, source, variable)  # [batch, pos]
    if not (expected != IGNORE).any():
        raise ValueError(f"the algorithm defines no output under an intervention on {variable!r}")
    return base, source, expected


@torch.no_grad()
def interchange_accuracy(model: Transformer, algorithm: Algorithm, variable: str, site: Site,
                         basis: Tensor | None = None, n: int = 256, seed: int = 0,
                         method: str | None = None) -> IIAResult:
    """IIA of ``variable`` at ``site`` through ``basis`` (None: the whole vector) on ``n`` fresh pairs.

    IIA as ``toylab.interventions.interchange_accuracy`` defines it (scored positions whose
    arg-max is the algorithm's counterfactual output); ``unchanged`` adds, from the same
    run, how often the output stayed the base answer where it should have moved.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    accuracy, base, expected, logits = _iia(
        model, algorithm, variable, lambda source: subspace_interchange(model, source, site, basis), n, seed)
    base_answer = torch.where(expected != IGNORE, base.targets.to(expected.device), IGNORE)
    moved = (base_answer != expected).any(-1)  # pairs where the intervention should change the output
    stayed = _scored_accuracy(logits, base_answer)[moved].mean().item() if moved.any() else 0.0
    return IIAResult(variable, site, accuracy, stayed, n, None if basis is None else basis.shape[1],
                     method or ("full" if basis is None else "subspace"))


# ---- distributed alignment search --------------------------------------------------------


@dataclass(frozen=True)
class DASConfig:
    k: int = 1  # dimensions of the aligned subspace
    steps: int = 200  # optimizer steps
    lr: float = 2e-2  # Adam, on the rotation's parameters
    batch_size: int = 128
    n_train: int = 512  # training pairs
    n_test: int = 256  # held-out pairs the reported IIA is measured on
    seed: int = 0  # rotation init, training pairs (seed) and test pairs (seed + 1)

    def __post_init__(self) -> None:
        for name in ("k", "steps", "batch_size", "n_train", "n_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DASConfig.{name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"DASConfig.lr must be > 0, got {self.lr}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"DASConfig.seed must be an int, got {self.seed!r}")


@dataclass(frozen=True)
class DASResult:
    variable: str
    site: Site
    basis: Tensor  # [d, k] orthonormal columns: the learned subspace
    train_iia: float
    test_iia: float  # on held-out pairs: the figure to report
    losses: tuple[float, ...] = field(default=())

    @property
    def k(self) -> int:
        return self.basis.shape[1]

    def __str__(self) -> str:
        return (f"DAS for {self.variable} at {self.site}, k={self.k}: IIA {self.test_iia:.3f} held out "
                f"({self.train_iia:.3f} on training pairs)")


def _fit_interchange(model: Transformer, algorithm: Algorithm, variable: str, site: Site, config: DASConfig,
                     make, lr: float) -> tuple[float, ...]:
    """The training both DAS and the neuron mask run: ``make(d, generator)`` returns (params,
    move, penalty), ``move(x_base, x_source)`` the site's patched vectors [batch, d]; Adam on
    params minimises the algorithm's counterfactual cross-entropy (+ ``penalty()``) over
    ``config``'s pairs. The model's weights get no gradient. Returns the losses."""
    device = model.device
    base, source, expected = _pairs(algorithm, variable, config.n_train, config.seed)
    check_site(model, site, base.tokens.shape[1])
    base_tokens, expected = base.tokens.to(device), expected.to(device)
    source_acts = activations(model, source.tokens.to(device), site)  # [batch, d]
    g = torch.Generator().manual_seed(config.seed)
    params, move, penalty = make(source_acts.shape[-1], g)
    optimizer = torch.optim.Adam(params, lr=lr)
    current: dict[str, Tensor] = {}

    def hook(x: Tensor, hook) -> Tensor:
        x = x.clone()
        index = (slice(None), site.pos) if site.head is None else (slice(None), site.pos, site.head)
        x[index] = move(x[index], current["source"])
        return x

    losses = []
    scored = expected != IGNORE
    with torch.enable_grad(), model.hooks([(site.hook, hook)]):
        for _ in range(config.steps):
            rows = torch.randint(config.n_train, (min(config.batch_size, config.n_train),), generator=g, device="cpu")
            current["source"] = source_acts[rows]
            logits = model(base_tokens[rows])  # [batch, pos, vocab]
            loss = F.cross_entropy(logits[scored[rows]], expected[rows][scored[rows]])
            if penalty is not None:
                loss = loss + penalty()
            grads = torch.autograd.grad(loss, params)  # only these: the model's .grad stays untouched
            for p, grad in zip(params, grads):
                p.grad = grad
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    return tuple(losses)


def das(model: Transformer, algorithm: Algorithm, variable: str, site: Site,
        config: DASConfig = DASConfig()) -> DASResult:
    """Learn a k-dim subspace at ``site`` whose interchange makes the model follow ``variable``.

    A rotation R of the site's space (an orthogonal parametrisation) is trained so that
    swapping the first k rotated coordinates from the source gives the algorithm's
    counterfactual output (cross-entropy at the scored positions); B = the first k columns
    of R. The model's weights receive no gradient and are never changed.
    """
    if not isinstance(config, DASConfig):
        raise TypeError(f"config must be a DASConfig, got {type(config).__name__}")
    made: dict[str, nn.Module] = {}

    def rotate(d: int, g: torch.Generator):
        if config.k > d:
            raise ValueError(f"DASConfig.k={config.k} exceeds the site's dimension d={d}")
        linear = nn.Linear(d, d, bias=False, device="cpu")
        with torch.no_grad():
            linear.weight.copy_(torch.linalg.qr(torch.randn(d, d, generator=g, device="cpu"))[0])
        made["rotation"] = rotation = orthogonal(linear).to(model.device)
        params = [p for p in rotation.parameters() if p.requires_grad]
        return params, lambda x, src: patch_subspace(x, src, rotation.weight[:, :config.k]), None

    losses = _fit_interchange(model, algorithm, variable, site, config, rotate, config.lr)
    rotation = made["rotation"]
    basis = rotation.weight[:, :config.k].detach().clone()
    train = interchange_accuracy(model, algorithm, variable, site, basis, config.n_train, config.seed).accuracy
    test = interchange_accuracy(model, algorithm, variable, site, basis, config.n_test, config.seed + 1).accuracy
    return DASResult(variable, site, basis, train, test, losses)


@dataclass(frozen=True)
class NeuronMaskResult:
    variable: str
    site: Site
    neurons: tuple[int, ...]  # the coordinates of the site the mask keeps
    train_iia: float
    test_iia: float  # on held-out pairs, interchanging the kept coordinates
    d: int  # the site's width

    @property
    def basis(self) -> Tensor:
        """The kept coordinates as standard-basis columns [d, k]."""
        return torch.eye(self.d, device="cpu")[:, list(self.neurons)]

    def __str__(self) -> str:
        return (f"neuron mask for {self.variable} at {self.site}: {len(self.neurons)} of {self.d} coordinates, "
                f"IIA {self.test_iia:.3f} held out")


def neuron_mask(model: Transformer, algorithm: Algorithm, variable: str, site: Site,
                config: DASConfig = DASConfig(), sparsity: float = 0.01) -> NeuronMaskResult:
    """Learn which coordinates (neurons) of ``site`` to interchange so the model follows ``variable``.

    DAS restricted to the standard basis (desiderata-based masking, Davies et al. 2023; MIB's
    neuron-level featuriser): a mask m = sigmoid(w) over the site's d coordinates, the base
    activation x moved to x + m * (x_source - x), trained with the algorithm's counterfactual
    cross-entropy plus ``sparsity`` * mean(m) (``config``'s steps, lr, pairs and seed; not k);
    the coordinates with m > 0.5 are kept (at least the one of largest m). Where the variable
    lies along a direction that mixes coordinates, no mask can move it alone.
    """
    if not isinstance(config, DASConfig):
        raise TypeError(f"config must be a DASConfig, got {type(config).__name__}")
    made: dict[str, Tensor] = {}

    def masks(d: int, g: torch.Generator):
        made["w"] = w = torch.zeros(d, device=model.device, requires_grad=True)  # m = 0.5 everywhere to start
        return ([w], lambda x, src: x + torch.sigmoid(w) * (src - x),
                lambda: sparsity * torch.sigmoid(w).mean())

    # A mask's logits have further to move than a rotation's parameters: 5 times DAS's rate.
    _fit_interchange(model, algorithm, variable, site, config, masks, config.lr * 5)
    w, d = made["w"], made["w"].shape[0]
    mask = torch.sigmoid(w.detach()).cpu()
    kept = tuple(int(i) for i in (mask > 0.5).nonzero().flatten()) or (int(mask.argmax()),)
    basis = torch.eye(d, device="cpu")[:, list(kept)]
    train = interchange_accuracy(model, algorithm, variable, site, basis, config.n_train, config.seed).accuracy
    test = interchange_accuracy(model, algorithm, variable, site, basis, config.n_test, config.seed + 1).accuracy
    return NeuronMaskResult(variable, site, kept, train, test, d)


def iia_sweep(model: Transformer, algorithm: Algorithm, variable: str, sites: Sequence[Site],
              config: DASConfig = DASConfig()) -> dict[Site, DASResult]:
    """``das`` at each site, same config: where does a k-dim subspace carry ``variable``?"""
    return {site: das(model, algorithm, variable, site, config) for site in sites}


__all__ = [
    "DASConfig",
    "DASResult",
    "IIAResult",
    "NeuronMaskResult",
    "Site",
    "activations",
    "check_site",
    "das",
    "iia_sweep",
    "interchange_accuracy",
    "neuron_mask",
    "orthonormal",
    "patch_subspace",
    "probe_subspace",
    "sae_subspace",
    "site_of",
    "subspace_interchange",
    "variable_site",
]
