"""Fourier analysis of modular addition (Nanda et al. 2023, "Progress measures for grokking
via mechanistic interpretability"; ARENA 1.5.2).

Axis names used in shape comments:
    x          a residue 0 .. p-1 (an input a or b, or an output c)
    a, b, c    the two operands and the output class, each a residue 0 .. p-1
    pair       one of the p^2 pairs (a, b), indexed a * p + b
    basis      an element of the real Fourier basis over Z_p: const, cos 1, sin 1, cos 2, ...
    freq       a frequency w = 1 .. (p-1)/2 (cos and sin of w together); index w - 1
    neuron     an MLP neuron, 0 .. d_mlp - 1
    d_model    residual stream width
    key        one of K chosen frequencies (key frequencies, or any set under test)
    dir        one of the 2K directions cos(w(a+b)), sin(w(a+b)) of those K frequencies

A frequency w means the functions cos(2 pi w x / p) and sin(2 pi w x / p); w and p - w are
the same frequency, so w runs over 1 .. (p-1)/2. ``p`` must be odd (the task makes it prime).

The grokked circuit: the embedding reads a and b onto cos/sin of a few *key frequencies*,
attention and the MLP multiply them into cos(w(a+b)) and sin(w(a+b)), and the unembedding
turns those into logits ~ sum_w A_w cos(w(a+b-c)), which peak at c = (a+b) mod p.

    basis, names = fourier_basis(113)                  # [basis, x], ["const", "cos 1", ...]
    freqs = key_frequencies(model, task)               # e.g. [21, 29, 31]
    freq, frac = neuron_frequencies(model, task)       # each neuron's frequency
    frequency_losses(model, task, freqs)               # full / restricted / excluded loss
    check_key_frequencies(model, task, freqs)          # the certificate's checks

Everything is computed from the weights by running the model on all p^2 inputs; labels are
used only by the losses. Analysis runs in float64 on the CPU; the model is never modified.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from toylab.methods.check import Check
from toylab.models import Transformer
from toylab.tasks import ModularAddition, Task

SPLITS = ("train", "test", "all")

# key_frequencies(k=None) keeps a frequency when its share of the MLP neurons' non-constant
# activation variance (mlp_frequency_spectrum) is at least KEY_FREQUENCY_MIN_SHARE and at
# least KEY_FREQUENCY_MIN_RATIO times the median share. Measured shares: key frequencies
# 0.125 - 0.707, every other frequency <= 0.0132, median 0.0001 - 0.0008 (modadd-113,
# modadd-tiny seeds 0 and 1), so 0.03 sits mid-gap on a log scale; untrained models spread the variance
# evenly (every share 0.015 - 0.055, median 0.017 - 0.037), so the median rule returns none.
KEY_FREQUENCY_MIN_SHARE = 0.03
KEY_FREQUENCY_MIN_RATIO = 10.0

# check_key_frequencies: the restricted loss may exceed the full model's train loss by at
# most this many nats (see check_key_frequencies for the measurements behind it).
RESTRICTED_SLACK = 0.005


# ---- the basis ----------------------------------------------------------------------
def fourier_basis(p: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, list[str]]:
    """The orthonormal real Fourier basis over Z_p, one basis vector per row.

    Rows, in order: ``const`` = 1/sqrt(p), then for w = 1 .. (p-1)/2 ``cos w`` =
    sqrt(2/p) cos(2 pi w x / p) and ``sin w`` = sqrt(2/p) sin(2 pi w x / p). The matrix is
    orthogonal (``basis @ basis.T == I``), so ``basis @ f`` gives the coefficients of a
    function ``f`` [x] and ``basis.T @ coefficients`` rebuilds it.

    Returns ``(basis [basis, x], names)`` with names "const", "cos 1", "sin 1", ...
    Raises ValueError unless ``p`` is an odd int >= 3 (the task's prime modulus).
    """
    p = _check_p(p)
    x = torch.arange(p, dtype=torch.float64, device="cpu")  # [x]
    rows = [torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64, device="cpu")]
    names = ["const"]
    for w in range(1, (p - 1) // 2 + 1):
        angle = 2 * math.pi * w * x / p  # [x]
        rows += [math.sqrt(2 / p) * torch.cos(angle), math.sqrt(2 / p) * torch.sin(angle)]
        names += [f"cos {w}", f"sin {w}"]
    return torch.stack(rows).to(dtype), names  # [basis, x]


def _frequency_groups(p: int) -> Tensor:
    """For each basis row, its frequency: 0 for const, w for cos w and sin w. [basis]"""
    return torch.cat([torch.zeros(1, dtype=torch.long, device="cpu"), torch.arange(2, p + 1, device="cpu") // 2])


# ---- weights and neurons ------------------------------------------------------------
def embedding_fourier_norms(model: Transformer, p: int) -> Tensor:
    """Norm of the embedding of the number tokens along each Fourier basis direction. [basis] float64

    ``W_E[:p]`` (the rows of the tokens 0 .. p-1, as a function of x with values in
    d_model) is expanded in the Fourier basis over x (``fourier_basis``); entry i is the
    norm (over d_model) of the coefficient of basis row i: const, cos 1, sin 1, ...
    """
    p = _check_p(p)
    cfg = model.cfg
    if cfg.d_vocab_out != p or cfg.d_vocab < p:
        raise ValueError(
            f"p={p} does not match the model: it has d_vocab={cfg.d_vocab}, d_vocab_out="
            f"{cfg.d_vocab_out}; a modular-addition model for p has d_vocab_out = p"
        )
    basis, _ = fourier_basis(p, torch.float64)  # [basis, x]
    with torch.no_grad():
        w_e = model.embed.W_E[:p].detach().to("cpu", torch.float64)  # [x, d_model]
    return (basis @ w_e).norm(dim=-1)  # [basis]


def embedding_frequency_norms(model: Transformer, p: int) -> Tensor:
    """Norm of the embedding of the number tokens along each frequency. [freq]

    Entry w - 1 is the norm of the cos w and sin w coefficients together
    (``embedding_fourier_norms``), sqrt(|c_cos w|^2 + |c_sin w|^2). A grokked model's
    embedding is sparse in this basis: large only at its key frequencies (Nanda et al.,
    Fig. 3), though less cleanly than the MLP (see ``key_frequencies``).
    """
    sq = embedding_fourier_norms(model, p).pow(2)  # [basis]
    return (sq[1::2] + sq[2::2]).sqrt().float()  # [freq]


def _neuron_spectrum(model: Transformer, task: Task, layer: int) -> tuple[Tensor, Tensor]:
    """Each MLP neuron's variance per frequency over all pairs (see ``grid_spectrum``).

    The neurons are ``blocks.{layer}.mlp.hook_post`` at the "=" position. Returns
    ``(per_freq [freq, neuron], total [neuron])``.
    """
    task = _check_model_task(model, task)
    _check_layer(model, layer)
    p = task.p
    tokens = task.all_pairs().tokens  # [pair, pos], row a * p + b
    hook = f"blocks.{layer}.mlp.hook_post"
    param = next(model.parameters())
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens.to(param.device), names=hook)
    acts = cache[hook][:, 2].to("cpu", torch.float64)  # [pair, neuron]
    return grid_spectrum(acts.T.reshape(-1, p, p))


def grid_spectrum(grid: Tensor) -> tuple[Tensor, Tensor]:
    """Variance per frequency of functions on the (a, b) grid.

    ``grid`` [neuron, a, b] holds one function X[a, b] per neuron. Its 2D Fourier
    coefficients are C[i, j] = sum_ab basis[i, a] basis[j, b] X[a, b]. Frequency w's part
    is the sum of C[i, j]^2 over i, j in {const, cos w, sin w}, (const, const) excluded:
    the terms cos(wa), sin(wa), cos(wb), sin(wb) and their four products. Returns
    ``(per_freq [freq, neuron], total [neuron])``, total = sum_ab (X - mean X)^2, so
    per_freq / total is a fraction of the neuron's variance.
    """
    p = grid.shape[-1]
    basis = fourier_basis(p, torch.float64)[0].to(grid.device)  # [basis, x]
    coef = basis @ grid.to(torch.float64) @ basis.T  # [neuron, basis, basis]: C[n, i, j]
    sq = coef.pow(2)  # [neuron, basis, basis]
    group = _frequency_groups(p).to(grid.device)  # [basis]
    one_hot = F.one_hot(group).to(torch.float64).T  # [const + freq, basis]
    by_group = one_hot @ sq @ one_hot.T  # [neuron, const + freq, const + freq]; group 0 is const
    w = torch.arange(1, (p - 1) // 2 + 1, device=grid.device)  # [freq]
    per_freq = (by_group[:, w, w] + by_group[:, 0, w] + by_group[:, w, 0]).T  # [freq, neuron]
    total = sq.sum((1, 2)) - sq[:, 0, 0]  # [neuron]
    return per_freq, total


def neuron_frequencies(model: Transformer, task: Task, layer: int = 0) -> tuple[Tensor, Tensor]:
    """Each MLP neuron's frequency, and the fraction of its variance that frequency explains.

    A neuron's activation (``blocks.{layer}.mlp.hook_post`` at the "=" position) over all
    p^2 pairs is a [p, p] grid over (a, b). In its 2D Fourier transform, frequency w
    explains the terms cos(wa), sin(wa), cos(wb), sin(wb) and their four products (the
    squared coefficients of every (i, j) in {const, cos w, sin w}^2 but (const, const)).
    The neuron's frequency is the w explaining the most of its non-constant variance
    sum_ab (X - mean X)^2, and ``frac_explained`` is that fraction, in [0, 1]. In a grokked
    model most neurons have a single key frequency with frac_explained > 0.9.

    Returns ``(freq [neuron] int64 in 1 .. (p-1)/2, frac_explained [neuron] float32)``; a
    neuron that is constant over all pairs (e.g. dead) gets freq 0 and frac_explained 0.
    """
    return dominant_frequency(*_neuron_spectrum(model, task, layer))


def dominant_frequency(per_freq: Tensor, total: Tensor) -> tuple[Tensor, Tensor]:
    """(freq [neuron], frac_explained [neuron]) from ``grid_spectrum``'s output."""
    alive = total > 1e-12 * total.max().clamp(min=1e-300)  # [neuron]
    frac = torch.where(alive, per_freq / total.clamp(min=1e-300), torch.zeros_like(per_freq))  # [freq, neuron]
    best, index = frac.max(0)  # [neuron], [neuron]
    freq = torch.where(alive, index + 1, torch.zeros_like(index))  # [neuron]
    return freq, best.float()


def mlp_frequency_spectrum(model: Transformer, task: Task, layer: int = 0) -> Tensor:
    """Share of the MLP's activation variance carried by each frequency. [freq]

    Summed over neurons: sum_n (frequency w's variance of neuron n, as in
    ``neuron_frequencies``) / sum_n (neuron n's non-constant variance). Entries are >= 0
    and sum to at most 1 (terms that mix two frequencies, like cos(w1 a) cos(w2 b), belong
    to none). Neurons with larger activations weigh more, as they do in the output.
    """
    per_freq, total = _neuron_spectrum(model, task, layer)  # [freq, neuron], [neuron]
    return (per_freq.sum(-1) / total.sum().clamp(min=1e-300)).float()  # [freq]


def key_frequencies(model: Transformer, task: Task, k: int | None = None, layer: int = 0) -> list[int]:
    """The key frequencies of a modular-addition model, from its MLP neurons. Ascending.

    Computed from the weights alone (the model run on all p^2 inputs, no labels): the
    spectrum ``mlp_frequency_spectrum`` gives each frequency's share of the MLP neurons'
    activation variance. With ``k`` given, the k frequencies with the largest shares. With
    ``k=None`` every frequency whose share is at least ``KEY_FREQUENCY_MIN_SHARE`` (3% of
    the variance) and at least ``KEY_FREQUENCY_MIN_RATIO`` (10) times the median share (it
    stands out from a typical frequency). In grokked models the key frequencies each carry
    12-70% and every other one under 1.5%, so the rule sits in a wide gap; an untrained model
    spreads its variance evenly and gets an empty list.

    The MLP is used rather than the embedding (``embedding_frequency_norms``) because the
    embedding may keep sizeable weight on frequencies the rest of the circuit does not use
    (modadd-113's embedding is large at 7 and 2 as well as at its key frequencies).
    """
    share = mlp_frequency_spectrum(model, task, layer)  # [freq]
    n_freq = share.numel()
    if k is None:
        bar = max(KEY_FREQUENCY_MIN_SHARE, KEY_FREQUENCY_MIN_RATIO * share.median().item())
        chosen = (share >= bar).nonzero().flatten()  # [key]
    else:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_freq:
            raise ValueError(
                f"k must be None or an int in 1 .. {n_freq} (the number of frequencies for p={task.p}), got {k!r}"
            )
        chosen = share.topk(k).indices  # [key]
    return sorted(int(i) + 1 for i in chosen)


# ---- restricted and excluded loss ---------------------------------------------------
@dataclass(frozen=True)
class FrequencyLosses:
    """Cross-entropy losses (nats) on one split of the task, for a set of frequencies."""

    freqs: tuple[int, ...]
    split: str
    full: float  # the model as it is
    restricted: float  # logits reduced to the freqs' cos/sin(w(a+b)) directions plus constant
    excluded: float  # logits with those directions removed


def _all_logits(model: Transformer, task: ModularAddition) -> Tensor:
    """The model's logits at "=" for every pair, as a grid. [a, b, c] float64, CPU.

    Only "=" is read, so the hook-free last-position forward does the work (2-6x
    faster); with hooks attached (an ablation, a patch) the hooked forward runs instead.
    """
    from toylab.models.fast import last_position_logits

    p = task.p
    tokens = task.all_pairs().tokens.to(next(model.parameters()).device)  # [pair, pos], row a * p + b
    with torch.no_grad():
        logits = model(tokens)[:, 2] if model.has_hooks() else last_position_logits(model, tokens)  # [pair, c]
    return logits.to("cpu", torch.float64).reshape(p, p, p)  # [a, b, c]


def _sum_projection(logits: Tensor, freqs: tuple[int, ...]) -> Tensor:
    """Projection of logits [a, b, c] onto span{cos(w(a+b)), sin(w(a+b)) : w in freqs}. [a, b, c]

    The projection is over the (a, b) grid, separately for each c. The 2K directions are
    orthogonal, each with squared norm p^2 / 2 over the grid.
    """
    p = logits.shape[0]
    if not freqs:
        return torch.zeros_like(logits)
    x = torch.arange(p, dtype=torch.float64, device=logits.device)
    s = (x[:, None] + x[None, :])  # [a, b], a + b (periodicity makes "mod p" implicit)
    w = torch.tensor(freqs, dtype=torch.float64, device=logits.device)  # [key]
    angle = 2 * math.pi * w[:, None, None] * s / p  # [key, a, b]
    dirs = torch.cat([angle.cos(), angle.sin()]) * (math.sqrt(2) / p)  # [dir, a, b], unit norm
    coef = torch.einsum("kab,abc->kc", dirs, logits)  # [dir, c]
    return torch.einsum("kab,kc->abc", dirs, coef)  # [a, b, c]


def _split_loss(logits: Tensor, task: ModularAddition, split: str) -> float:
    pairs = _split_pairs(task, split)  # [n, 2]
    a, b = pairs[:, 0], pairs[:, 1]
    return F.cross_entropy(logits[a, b], (a + b) % task.p).item()  # logits[a, b]: [n, c]


def frequency_losses(model: Transformer, task: Task, freqs: Iterable[int], split: str = "train") -> FrequencyLosses:
    """Full, restricted and excluded loss for the frequencies ``freqs`` (Nanda et al. 2023).

    The logits at "=" over all pairs form L[a, b, c]. For each output c, L[:, :, c] is a
    function of (a, b); in the 2D Fourier basis over (a, b) the terms
    cos(w(a+b)) = cos(wa)cos(wb) - sin(wa)sin(wb) and sin(w(a+b)) = sin(wa)cos(wb) +
    cos(wa)sin(wb) span a plane for each w. Let P be the orthogonal projection of L[:, :, c]
    onto the planes of the w in ``freqs`` (for every c), and M[c] = mean over (a, b) of
    L[a, b, c] (the constant term). Then

        restricted logits = M + P(L)     keep only the freqs' directions (and the constant)
        excluded logits   = L - P(L)     remove the freqs' directions, keep everything else

    and each loss is the mean cross-entropy of those logits on ``split`` ("train" as in the
    paper, "test" or "all"). A circuit of the form sum_w A_w cos(w(a+b-c)) lies entirely in
    these planes, so on a grokked model the restricted loss is low (often below the full
    loss: the other directions are mostly noise) and the excluded loss is high, above the
    log(p) of uniform guessing. ``freqs`` may be empty (then restricted keeps only M).
    """
    task = _check_model_task(model, task)
    freq_tuple = _check_freqs(freqs, task.p)
    _check_split(split)
    logits = _all_logits(model, task)  # [a, b, c]
    return _losses(logits, task, freq_tuple, split)


def _losses(logits: Tensor, task: ModularAddition, freqs: tuple[int, ...], split: str) -> FrequencyLosses:
    proj = _sum_projection(logits, freqs)  # [a, b, c]
    const = logits.mean((0, 1), keepdim=True)  # [1, 1, c]
    return FrequencyLosses(
        freqs=freqs,
        split=split,
        full=_split_loss(logits, task, split),
        restricted=_split_loss(const + proj, task, split),
        excluded=_split_loss(logits - proj, task, split),
    )


def restricted_loss(model: Transformer, task: Task, freqs: Iterable[int], split: str = "train") -> float:
    """Loss with the logits reduced to the freqs' cos/sin(w(a+b)) directions plus constant.

    See ``frequency_losses`` for the precise definition.
    """
    return frequency_losses(model, task, freqs, split).restricted


def excluded_loss(model: Transformer, task: Task, freqs: Iterable[int], split: str = "train") -> float:
    """Loss with the freqs' cos/sin(w(a+b)) directions removed from the logits.

    See ``frequency_losses`` for the precise definition.
    """
    return frequency_losses(model, task, freqs, split).excluded


# ---- certificate checks -------------------------------------------------------------
def check_key_frequencies(model: Transformer, task: Task, freqs: Iterable[int]) -> list[Check]:
    """The certificate checks of the claim "the model's key frequencies are ``freqs``".

    All on the train split (as in Nanda et al.), with tau = full train loss + 0.005 nats
    (``RESTRICTED_SLACK``):

        sufficiency  restricted loss <= tau: the freqs' directions alone do what the
                     model does, to within 0.005 nats.
        necessity    excluded loss >= full train loss + log(p): removing them costs at
                     least the whole gap between uniform guessing and a perfect model
                     (relative to the full loss, so a model that never learned fails).
        minimality   for each w in freqs, restricted loss of freqs without w >= tau: every
                     frequency is needed (an extra, unused frequency fails here).

    Measured on the zoo as shipped in 2026-12 (full / restricted / excluded train loss, nats;
    log 113 = 4.73, log 53 = 3.97):
        modadd-113 seed 0   [21, 29, 31]: 0.025 / 0.017 / 6.01; dropping one frequency gives
                            restricted 0.74 - 1.46
        modadd-tiny seed 0  [16, 19]: 0.027 / 0.028 / 6.57; dropping one gives 1.9 - 3.1
        modadd-tiny seed 2  [2, 5, 8, 19]: 0.0058 / 0.0015 / 6.02; dropping one gives 0.06 - 0.27
    Necessity passes by 1.3x (113), 1.6x and 1.5x (tiny); a missing frequency raises the
    restricted loss 10-fold or more. Random frequency sets of the same size give restricted
    ~7-8 and excluded ~ the full loss, failing sufficiency and necessity by orders of
    magnitude; an untrained model fails necessity (excluded ~ full ~ log p).

    Returns ``toylab.methods.check.Check`` objects (name, value, op, threshold; ``.passed``).
    Raises ValueError on an empty or invalid frequency list. Certificates call it as
    ``toylab.truth.certify.CLAIM_CHECKS["key_frequencies"]``.
    """
    task = _check_model_task(model, task)
    freq_tuple = _check_freqs(freqs, task.p)
    if not freq_tuple:
        raise ValueError("check_key_frequencies needs at least one frequency; got an empty list")
    logits = _all_logits(model, task)  # [a, b, c]
    losses = _losses(logits, task, freq_tuple, "train")
    tau = losses.full + RESTRICTED_SLACK
    listed = ", ".join(map(str, freq_tuple))
    checks = [
        Check(f"key frequencies [{listed}]: restricted train loss (full {losses.full:.4f} + {RESTRICTED_SLACK})",
              losses.restricted, "<=", tau),
        Check(f"key frequencies [{listed}]: excluded train loss (full + log p)",
              losses.excluded, ">=", losses.full + math.log(task.p)),
    ]
    for w in freq_tuple:
        rest = tuple(v for v in freq_tuple if v != w)
        without = _losses(logits, task, rest, "train").restricted
        checks.append(Check(f"key frequency {w} is needed: restricted train loss without it", without, ">=", tau))
    return checks


# ---- validation ---------------------------------------------------------------------
def _check_p(p: int) -> int:
    if isinstance(p, bool) or not isinstance(p, int):
        raise ValueError(f"p must be an int (an odd prime such as 113), got {p!r}")  # noqa: TRY004
    if p < 3 or p % 2 == 0:
        raise ValueError(f"p must be an odd int >= 3 (the task's prime modulus, e.g. 113), got {p}")
    return p


def _check_model_task(model: Transformer, task: Task) -> ModularAddition:
    if not isinstance(task, ModularAddition):
        raise ValueError(f"Fourier analysis needs a ModularAddition task, got {type(task).__name__}")  # noqa: TRY004
    _check_p(task.p)
    cfg = model.cfg
    if cfg.d_vocab_out != task.p or cfg.d_vocab != task.d_vocab or cfg.n_ctx < task.n_ctx:
        raise ValueError(
            f"the model does not fit the task (p={task.p}): it has d_vocab={cfg.d_vocab}, "
            f"d_vocab_out={cfg.d_vocab_out}, n_ctx={cfg.n_ctx}; the task needs d_vocab="
            f"{task.d_vocab}, d_vocab_out={task.p}, n_ctx >= {task.n_ctx}"
        )
    return task


def _check_layer(model: Transformer, layer: int) -> None:
    n_layers = model.cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer must be an int in 0 .. {n_layers - 1}, got {layer!r}")
    if model.cfg.attn_only:
        raise ValueError("the model is attention-only: it has no MLP neurons to analyse")


def _check_freqs(freqs: Iterable[int], p: int) -> tuple[int, ...]:
    """``freqs`` as a sorted tuple of distinct ints in 1 .. (p-1)/2, else ValueError."""
    n_freq = (p - 1) // 2
    if isinstance(freqs, (str, bytes)) or not isinstance(freqs, Iterable):
        raise ValueError(f"freqs must be a list of ints in 1 .. {n_freq}, got {freqs!r}")  # noqa: TRY004
    out = []
    for w in freqs:
        try:
            if isinstance(w, bool):
                raise TypeError
            value = operator.index(w)
        except TypeError:
            raise ValueError(f"frequencies must be ints, got {w!r} in {freqs!r}") from None
        if not 1 <= value <= n_freq:
            hint = f" (frequency {value} is the same as {p - value})" if n_freq < value < p else ""
            raise ValueError(f"frequency {value} is out of range: for p={p} frequencies run over 1 .. {n_freq}{hint}")
        out.append(value)
    if len(set(out)) != len(out):
        raise ValueError(f"frequencies must be distinct, got {out}")
    return tuple(sorted(out))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _split_pairs(task: ModularAddition, split: str) -> Tensor:
    """The (a, b) pairs of ``split``. [n, 2]"""
    _check_split(split)
    if split == "train":
        return task.train_pairs
    if split == "test":
        return task.test_pairs
    return task.all_pairs().tokens[:, :2]
