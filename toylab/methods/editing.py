"""Model editing: rewrite a stored fact (ROME, MEMIT, constrained fine-tuning), scored exactly.

Axis names used in shape comments:
    batch   -- prompts
    edit    -- the facts being edited at once
    d_mlp   -- MLP neurons: the keys a fact store reads
    d_model -- residual stream width: the values it writes

On ``factual-recall`` models the facts are a known table and the store is known (MLP0 at
the subject position; in ``factual-recall-split`` MLP0 or MLP1 by subject), so an edit
"subject s, relation r: attribute a -> a*" is scored as CounterFact does (Meng et al. 2022),
with no sampling of paraphrases or neighbours: all of them are enumerated.

    efficacy        the edited prompt (in form 0, the one the edit was made with) answers a*
    generalisation  the same fact asked in every other prompt form answers a*; n/a when the
                    task has one form
    specificity     every other subject's facts, in every form, keep their answers
    same_subject    the edited subject's other relations keep theirs (the edit must not
                    rewrite the subject, only the fact)

The methods (``EDIT_METHODS``), each returning a new model and never changing the one given:

    rome       Rank-one model editing. At MLP ``layer`` and the subject position, the key k*
               is the neurons' activation on the edit prompt; the value v* is the MLP output
               that makes the model answer a* (optimised, with a penalty on its change);
               W_out += (C^-1 k*) (v* - W_out k*)^T / (k*^T C^-1 k*), with C = E[k k^T]
               over the task's own prompts (all facts, all forms): the smallest change, in
               the keys' metric, that maps k* to v*.
    memit      Many facts at once, spread over ``layers`` (Meng et al. 2023): the residual
               target z_i at the last layer is optimised per fact; then layer by layer the
               remaining gap, shared equally among the layers left, is written by the
               least-squares update  dW = (C0 + K^T K)^-1 K^T R  (K the edits' keys, R their
               residuals, C0 = ``preserve_weight`` x E[k k^T] over the keys of every other
               stored fact: what must be preserved).
    fine-tune  Constrained fine-tuning (FT-L, Zhu et al. 2020, ROME's baseline): Adam on
               W_out of MLP ``layer`` against the edit prompts, each weight's change clamped to
               +-``max_change`` (in units of W_out's std).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from toylab.methods.check import seed_spread
from toylab.models import Transformer
from toylab.tasks.base import check_count, seeded_generator
from toylab.tasks.factual_recall import ANSWER_POS, SUBJ_POS, FactualRecall

EDIT_METHODS = ("rome", "memit", "fine-tune")


@dataclass(frozen=True)
class FactEdit:
    """Make ``subject``'s ``relation`` answer ``attribute`` (indices into the task's table)."""

    subject: int
    relation: int
    attribute: int


def check_edits(task: FactualRecall, edits: Sequence[FactEdit]) -> list[FactEdit]:
    """Raise a clear error for an edit of a fact the task does not have, or that changes nothing."""
    if not isinstance(task, FactualRecall):
        raise TypeError(f"edits are defined on FactualRecall tasks, got {type(task).__name__}")
    edits = [edits] if isinstance(edits, FactEdit) else list(edits)
    if not edits:
        raise ValueError("no edits given")
    seen = set()
    for e in edits:
        if not isinstance(e, FactEdit):
            raise TypeError(f"an edit is a FactEdit(subject, relation, attribute), got {e!r}")
        for name, value, n in (("subject", e.subject, task.n_subjects), ("relation", e.relation, task.n_relations),
                               ("attribute", e.attribute, task.n_attributes)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
                raise ValueError(f"{e}: {name} must be an int in [0, {n}); the task has no such fact")
        if int(task.table[e.subject, e.relation]) == e.attribute:
            raise ValueError(f"{e}: the task already answers a{e.attribute} there; an edit must change the fact")
        if (e.subject, e.relation) in seen:
            raise ValueError(f"{e}: the fact (s{e.subject}, r{e.relation}) is edited twice")
        seen.add((e.subject, e.relation))
    return edits


def random_edits(task: FactualRecall, n: int, seed: int) -> list[FactEdit]:
    """``n`` edits of distinct facts, each to a uniformly drawn different attribute."""
    check_count("n", n)
    if n > task.n_facts:
        raise ValueError(f"n={n} edits but the task has only {task.n_facts} facts")
    g = seeded_generator(seed)
    facts = torch.randperm(task.n_facts, generator=g, device="cpu")[:n]
    shift = torch.randint(1, task.n_attributes, (n,), generator=g, device="cpu")
    out = []
    for fact, k in zip(facts.tolist(), shift.tolist()):
        s, r = divmod(fact, task.n_relations)
        out.append(FactEdit(s, r, (int(task.table[s, r]) + k) % task.n_attributes))
    return out


def _check_layer(model: Transformer, layer: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer must be an int in [0, {model.cfg.n_layers}), got {layer!r}")
    if model.cfg.d_mlp is None or getattr(model.blocks[layer], "mlp", None) is None:
        raise ValueError(f"layer {layer} has no MLP to edit")


def _prompts(task: FactualRecall, edits: Sequence[FactEdit], form: int | None = 0) -> tuple[Tensor, Tensor]:
    """Tokens of each edit's prompt [edit * forms, pos] (form-major) and the new attributes [edit * forms]."""
    forms = range(task.n_forms) if form is None else [form]
    with torch.device("cpu"):  # prompts are task data, built on the CPU like every batch
        s = torch.tensor([e.subject for e in edits]).repeat(len(forms))  # [edit * forms]
        r = torch.tensor([e.relation for e in edits]).repeat(len(forms))  # [edit * forms]
        f = torch.tensor(list(forms)).repeat_interleave(len(edits))  # [edit * forms]
        new = torch.tensor([e.attribute for e in edits]).repeat(len(forms))  # [edit * forms]
    return task.make_batch(s, r, f).tokens, new


@torch.no_grad()
def mlp_keys(model: Transformer, tokens: Tensor, layer: int) -> Tensor:
    """The keys a fact store reads: MLP ``layer``'s neuron activations at the subject position: [batch, d_mlp]."""
    hook = f"blocks.{layer}.mlp.hook_post"
    _, cache = model.run_with_cache(tokens.to(model.device), names=[hook])
    return cache[hook][:, SUBJ_POS].clone()


def key_second_moment(model: Transformer, task: FactualRecall, layer: int) -> Tensor:
    """C = E[k k^T] over every fact in every form, at MLP ``layer``'s subject position: [d_mlp, d_mlp]."""
    keys = mlp_keys(model, task.all_facts().tokens, layer).double()  # [batch, d_mlp]
    return keys.T @ keys / len(keys)


def _preserved_moment(model: Transformer, task: FactualRecall, edits: Sequence[FactEdit], layer: int) -> Tensor:
    """E[k k^T] over the keys of every fact not being edited, in every form: [d_mlp, d_mlp]."""
    everything = task.all_facts()
    v = task.variables(everything.tokens)
    edited = torch.zeros(task.n_subjects, task.n_relations, dtype=torch.bool, device="cpu")  # [subject, relation]
    for e in edits:
        edited[e.subject, e.relation] = True
    keys = mlp_keys(model, everything.tokens[~edited[v["subject"], v["relation"]]], layer).double()
    return keys.T @ keys / len(keys)


def _answer_loss(model: Transformer, tokens: Tensor, new: Tensor) -> Tensor:
    logits = model(tokens)[:, ANSWER_POS]  # [batch, vocab]
    return F.cross_entropy(logits, new.to(logits.device))


def _optimise_delta(model: Transformer, tokens: Tensor, new: Tensor, hook: str, steps: int, lr: float,
                    weight_decay: float) -> Tensor:
    """A vector per prompt added at ``hook``'s subject position so the model answers ``new``: [batch, d_model]."""
    delta = torch.zeros(len(tokens), model.cfg.d_model, device=model.device, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=lr)

    def add(x: Tensor, hook) -> Tensor:
        x = x.clone()
        x[:, SUBJ_POS] = x[:, SUBJ_POS] + delta
        return x

    with torch.enable_grad(), model.hooks([(hook, add)]):
        for _ in range(steps):
            loss = _answer_loss(model, tokens.to(model.device), new) + weight_decay * delta.pow(2).sum(-1).mean()
            (grad,) = torch.autograd.grad(loss, [delta])
            delta.grad = grad
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return delta.detach()


@dataclass(frozen=True)
class EditConfig:
    v_steps: int = 100  # steps optimising the target value / residual
    v_lr: float = 0.1  # Adam, on that vector
    v_weight_decay: float = 1e-3  # penalty on its squared norm: the smallest change that works
    ridge: float = 1e-4  # added to C's diagonal, times its mean eigenvalue, so it inverts
    preserve_weight: float = 100.0  # MEMIT: weight of the preserved keys' moment against the edits' (mom2 weight)
    ft_steps: int = 100  # fine-tune
    ft_lr: float = 1e-2
    max_change: float = 0.15  # fine-tune: largest change of a weight, in units of W_out's std

    def __post_init__(self) -> None:
        for name in ("v_steps", "ft_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EditConfig.{name} must be a positive int, got {value!r}")
        for name in ("v_lr", "ft_lr", "max_change"):
            if not getattr(self, name) > 0:
                raise ValueError(f"EditConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("v_weight_decay", "ridge", "preserve_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"EditConfig.{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class EditResult:
    model: Transformer  # the edited copy; the model given is unchanged
    method: str
    edits: tuple[FactEdit, ...]
    layers: tuple[int, ...]
    info: dict = field(default_factory=dict)


def _solve(C: Tensor, rhs: Tensor, ridge: float) -> Tensor:
    C = C + ridge * C.diagonal().mean().clamp(min=1e-12) * torch.eye(len(C), dtype=C.dtype, device=C.device)
    return torch.linalg.solve(C, rhs)


def rome(model: Transformer, task: FactualRecall, edit: FactEdit, layer: int = 0,
         config: EditConfig = EditConfig()) -> EditResult:
    """Rank-one edit of MLP ``layer``'s output weights so that ``edit`` holds (see the module doc)."""
    (edit,) = check_edits(task, [edit])
    _check_layer(model, layer)
    tokens, new = _prompts(task, [edit])
    k = mlp_keys(model, tokens, layer)[0].double()  # [d_mlp]
    delta = _optimise_delta(model, tokens, new, f"blocks.{layer}.hook_mlp_out", config.v_steps, config.v_lr,
                            config.v_weight_decay)[0].double()  # [d_model]: v* - W_out k*
    C = key_second_moment(model, task, layer)
    c_inv_k = _solve(C, k, config.ridge)  # [d_mlp]
    update = torch.outer(c_inv_k, delta) / (k @ c_inv_k)  # [d_mlp, d_model]
    edited = copy.deepcopy(model)
    with torch.no_grad():
        W_out = edited.blocks[layer].mlp.W_out
        W_out.add_(update.to(W_out.dtype))
    return EditResult(edited, "rome", (edit,), (layer,),
                      {"key": k, "delta": delta, "update_norm": float(update.norm())})


def memit(model: Transformer, task: FactualRecall, edits: Sequence[FactEdit], layers: Sequence[int] = (0,),
          config: EditConfig = EditConfig()) -> EditResult:
    """Edit many facts at once, spreading each update over MLP ``layers`` (see the module doc)."""
    edits = check_edits(task, edits)
    layers = sorted(set(layers))
    if not layers:
        raise ValueError("layers must name at least one MLP layer")
    for layer in layers:
        _check_layer(model, layer)
    tokens, new = _prompts(task, edits)
    last = f"blocks.{layers[-1]}.hook_resid_post"
    delta = _optimise_delta(model, tokens, new, last, config.v_steps, config.v_lr, config.v_weight_decay)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens.to(model.device), names=[last])
    z = (cache[last][:, SUBJ_POS] + delta).double()  # [edit, d_model]: the residual each fact needs
    edited = copy.deepcopy(model)
    norms = []
    for i, layer in enumerate(layers):
        with torch.no_grad():
            _, cache = edited.run_with_cache(tokens.to(model.device), names=[last])
        residual = (z - cache[last][:, SUBJ_POS].double()) / (len(layers) - i)  # [edit, d_model]
        keys = mlp_keys(edited, tokens, layer).double()  # [edit, d_mlp]
        C0 = config.preserve_weight * _preserved_moment(edited, task, edits, layer)  # [d_mlp, d_mlp]
        update = _solve(C0 + keys.T @ keys, keys.T @ residual, config.ridge)  # [d_mlp, d_model]
        with torch.no_grad():
            W_out = edited.blocks[layer].mlp.W_out
            W_out.add_(update.to(W_out.dtype))
        norms.append(float(update.norm()))
    return EditResult(edited, "memit", tuple(edits), tuple(layers), {"update_norms": norms})


def fine_tune(model: Transformer, task: FactualRecall, edits: Sequence[FactEdit], layer: int = 0,
              config: EditConfig = EditConfig()) -> EditResult:
    """Constrained fine-tuning of MLP ``layer``'s W_out on the edit prompts (see the module doc)."""
    edits = check_edits(task, edits)
    _check_layer(model, layer)
    tokens, new = _prompts(task, edits)
    edited = copy.deepcopy(model)
    W_out = edited.blocks[layer].mlp.W_out
    original = W_out.detach().clone()
    bound = config.max_change * float(original.std())
    optimizer = torch.optim.Adam([W_out], lr=config.ft_lr)
    with torch.enable_grad():
        for _ in range(config.ft_steps):
            loss = _answer_loss(edited, tokens.to(model.device), new)
            (grad,) = torch.autograd.grad(loss, [W_out])
            W_out.grad = grad
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                W_out.copy_(original + (W_out - original).clamp(-bound, bound))
    for p in edited.parameters():
        p.grad = None
    return EditResult(edited, "fine-tune", tuple(edits), (layer,), {"final_loss": float(loss.detach())})


def apply_edits(model: Transformer, task: FactualRecall, edits: Sequence[FactEdit], method: str,
                layers: Sequence[int] = (0,), config: EditConfig = EditConfig()) -> EditResult:
    """One edited model holding all ``edits``: MEMIT edits them at once; ROME and fine-tuning
    edit them one after the other (ROME on the first of ``layers``)."""
    if method not in EDIT_METHODS:
        raise ValueError(f"method must be one of {EDIT_METHODS}, got {method!r}")
    edits = check_edits(task, edits)
    if method == "memit":
        return memit(model, task, edits, layers, config)
    if method == "fine-tune":
        return fine_tune(model, task, edits, layers[0], config)
    current, infos = model, []
    for e in edits:
        result = rome(current, task, e, layers[0], config)
        current = result.model
        infos.append(result.info)
    return EditResult(current, "rome", tuple(edits), (layers[0],), {"per_edit": infos})


# ---- scoring -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditScores:
    efficacy: float
    generalisation: float | None  # n/a with one prompt form
    specificity: float  # other subjects' facts unchanged
    same_subject: float  # the edited subjects' other relations unchanged
    n_edits: int

    def __str__(self) -> str:
        gen = "n/a" if self.generalisation is None else f"{self.generalisation:.3f}"
        return (f"efficacy {self.efficacy:.3f}, generalisation {gen}, specificity {self.specificity:.3f}, "
                f"same subject {self.same_subject:.3f} ({self.n_edits} edits)")


@torch.no_grad()
def score_edits(original: Transformer, edited: Transformer, task: FactualRecall,
                edits: Sequence[FactEdit]) -> EditScores:
    """CounterFact's figures, exactly, for ``edited`` holding ``edits`` (see the module doc).

    Specificity counts the prompts the original model got right that the edited one still
    gets right (so a fact the original never knew is not blamed on the edit).
    """
    edits = check_edits(task, edits)
    everything = task.all_facts()  # every fact in every form
    v = task.variables(everything.tokens)
    tokens = everything.tokens.to(original.device)
    before = original(tokens)[:, ANSWER_POS].argmax(-1).cpu()  # [batch]
    after = edited(tokens)[:, ANSWER_POS].argmax(-1).cpu()
    new = task.table.clone()
    for e in edits:
        new[e.subject, e.relation] = e.attribute
    target = new[v["subject"], v["relation"]]  # [batch]
    edited_fact = torch.zeros(task.n_subjects, task.n_relations, dtype=torch.bool, device="cpu")  # [subject, relation]
    edited_subject = torch.zeros(task.n_subjects, dtype=torch.bool, device="cpu")  # [subject]
    for e in edits:
        edited_fact[e.subject, e.relation] = True
        edited_subject[e.subject] = True
    is_edit = edited_fact[v["subject"], v["relation"]]
    is_same = edited_subject[v["subject"]] & ~is_edit
    is_other = ~edited_subject[v["subject"]]
    knew = before == everything.targets[:, ANSWER_POS]

    def rate(mask: Tensor) -> float:
        return float((after[mask] == target[mask]).float().mean()) if mask.any() else float("nan")

    return EditScores(
        efficacy=rate(is_edit & (v["form"] == 0)),
        generalisation=rate(is_edit & (v["form"] != 0)) if task.n_forms > 1 else None,
        specificity=rate(is_other & knew),
        same_subject=rate(is_same & knew),
        n_edits=len(edits),
    )


@dataclass(frozen=True)
class EditingComparison:
    """Per method, the scores of each seed's batch of edits."""

    results: dict[str, tuple[EditScores, ...]]
    n_edits: int
    layers: tuple[int, ...]

    def summary(self, method: str) -> dict[str, tuple[float, float] | None]:
        out: dict[str, tuple[float, float] | None] = {}
        for name in ("efficacy", "generalisation", "specificity", "same_subject"):
            values = [getattr(s, name) for s in self.results[method]]
            if any(x is None for x in values):
                out[name] = None
                continue
            t = torch.tensor(values, dtype=torch.float64, device="cpu")
            out[name] = (float(t.mean()), float(t.std()) if len(t) > 1 else 0.0)
        return out

    def table(self) -> str:
        rows = ["| method | efficacy | generalisation | specificity | same subject |", "|---|---|---|---|---|"]
        for method, scores in self.results.items():
            rows.append(f"| {method} | " + " | ".join(seed_spread(getattr(s, name) for s in scores) for name in
                                                     ("efficacy", "generalisation", "specificity", "same_subject"))
                        + " |")
        return "\n".join(rows)


def compare_editing(model: Transformer, task: FactualRecall, methods: Sequence[str] = EDIT_METHODS,
                    n_edits: int = 8, seeds: Sequence[int] = (0, 1, 2), layers: Sequence[int] = (0,),
                    one_at_a_time: bool = True, config: EditConfig = EditConfig()) -> EditingComparison:
    """Each method on ``n_edits`` random edits per seed.

    With ``one_at_a_time`` every edit is made on its own to the original model and the scores
    are averaged over edits (CounterFact's protocol); otherwise one model holds all of them
    (``apply_edits``: MEMIT's setting).
    """
    results: dict[str, list[EditScores]] = {m: [] for m in methods}
    for method in methods:
        if method not in EDIT_METHODS:
            raise ValueError(f"method must be one of {EDIT_METHODS}, got {method!r}")
        for seed in seeds:
            edits = random_edits(task, n_edits, seed)
            if not one_at_a_time:
                edited = apply_edits(model, task, edits, method, layers, config).model
                results[method].append(score_edits(model, edited, task, edits))
                continue
            scores = [score_edits(model, apply_edits(model, task, [e], method, layers, config).model, task, [e])
                      for e in edits]
            results[method].append(_mean_scores(scores))
    return EditingComparison({m: tuple(v) for m, v in results.items()}, n_edits, tuple(layers))


def _mean_scores(scores: Sequence[EditScores]) -> EditScores:
    def mean(name: str) -> float | None:
        values = [getattr(s, name) for s in scores]
        return None if values[0] is None else float(torch.tensor(values, device="cpu").nanmean())

    return EditScores(mean("efficacy"), mean("generalisation"), mean("specificity"), mean("same_subject"),
                      sum(s.n_edits for s in scores))


# ---- localisation against editing (Hase et al. 2023) --------------------------------------------


def edit_score(scores: EditScores) -> float:
    """CounterFact's overall score S: the harmonic mean of efficacy, generalisation (where
    defined) and specificity; 0 when any of them is 0."""
    parts = [scores.efficacy, scores.specificity] + ([] if scores.generalisation is None else [scores.generalisation])
    if any(math.isnan(p) for p in parts):  # undefined
        return float("nan")
    return 0.0 if min(parts) <= 0 else len(parts) / sum(1 / p for p in parts)


@dataclass(frozen=True)
class LocalisationVsEditing:
    """Per fact: where causal tracing points, where the fact is stored, where editing works best."""

    layers: tuple[int, ...]  # the MLP layers compared
    edits: tuple[FactEdit, ...]
    trace: Tensor  # [fact, layer]: fraction of the answer restored by restoring that MLP's output at the subject
    edit_scores: Tensor  # [fact, layer]: CounterFact's S for a ROME edit at that layer
    stored: tuple[int, ...] | None  # per fact, the layer the truth stores it in (None: not known)

    @property
    def trace_peak(self) -> Tensor:
        """Per fact, the layer whose restoration brings back the most: [fact]."""
        return torch.tensor(self.layers, device="cpu")[self.trace.argmax(-1).cpu()]

    @property
    def best_edit_layer(self) -> Tensor:
        """Per fact, the layer where a ROME edit scores best (ties to the lower layer): [fact]."""
        return torch.tensor(self.layers, device="cpu")[self.edit_scores.nan_to_num(-1.0).argmax(-1).cpu()]

    @property
    def tracing_predicts_editing(self) -> float:
        """Fraction of facts whose tracing peak is the layer where editing works best."""
        return float((self.trace_peak == self.best_edit_layer).float().mean())

    @property
    def tracing_finds_storage(self) -> float | None:
        if self.stored is None:
            return None
        return float((self.trace_peak == torch.tensor(self.stored, device="cpu")).float().mean())

    @property
    def editing_finds_storage(self) -> float | None:
        if self.stored is None:
            return None
        return float((self.best_edit_layer == torch.tensor(self.stored, device="cpu")).float().mean())

    def correlation(self) -> float:
        """Pearson correlation, over (fact, layer), of the tracing score with the edit score
        (Hase et al.'s figure: near 0 in GPT-J)."""
        x, y = self.trace.flatten().double(), self.edit_scores.flatten().double()
        keep = ~(x.isnan() | y.isnan())
        x, y = x[keep] - x[keep].mean(), y[keep] - y[keep].mean()
        denominator = (x.norm() * y.norm()).item()
        return float("nan") if denominator == 0 else float((x @ y) / denominator)

    def mean_edit_score(self, stored_layer: int, edit_layer: int) -> float | None:
        """Mean S of edits at ``edit_layer`` over the facts stored in ``stored_layer``; None if there are none."""
        if self.stored is None:
            return None
        rows = torch.tensor(self.stored, device="cpu") == stored_layer
        if not rows.any():
            return None
        return float(self.edit_scores[rows, self.layers.index(edit_layer)].nanmean())


def localisation_vs_editing(model: Transformer, task: FactualRecall, edits: Sequence[FactEdit],
                            layers: Sequence[int] = (0, 1), stored: Sequence[int] | None = None,
                            n_noise: int = 8, seed: int = 0,
                            config: EditConfig = EditConfig()) -> LocalisationVsEditing:
    """For each edit's fact: causal tracing of the MLPs at the subject (``n_noise`` noise draws
    per prompt form), and a ROME edit at each of ``layers`` scored by CounterFact's S.
    ``stored`` gives, per edit, the layer the truth stores that fact in, when known."""
    from toylab.methods.tracing import TracingConfig, causal_trace

    edits = check_edits(task, edits)
    layers = tuple(layers)
    for layer in layers:
        _check_layer(model, layer)
    if stored is not None and len(stored) != len(edits):
        raise ValueError(f"stored gives {len(stored)} layers for {len(edits)} edits")
    trace = torch.zeros(len(edits), len(layers), device="cpu")  # [edit, layer] figures for the reader
    scores = torch.zeros(len(edits), len(layers), device="cpu")  # [edit, layer]
    for i, e in enumerate(edits):
        forms = torch.arange(task.n_forms, device="cpu").repeat(n_noise)
        batch = task.make_batch(torch.full_like(forms, e.subject), torch.full_like(forms, e.relation), forms)
        result = causal_trace(model, batch, [SUBJ_POS], kinds=("mlp_out",), config=TracingConfig(seed=seed + i))
        trace[i] = result.scores("mlp_out")[list(layers), SUBJ_POS].float()
        for j, layer in enumerate(layers):
            edited = rome(model, task, e, layer, config).model
            scores[i, j] = edit_score(score_edits(model, edited, task, [e]))
    return LocalisationVsEditing(layers, tuple(edits), trace, scores, None if stored is None else tuple(stored))
