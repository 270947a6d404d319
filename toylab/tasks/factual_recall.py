"""Factual recall: look up a stored fact about a subject, ``[BOS, relation, subject, =] -> attribute``.

Axis names used in shape comments:
    batch  -- independent prompts (one fact each)
    pos    -- token position: 0 BOS, 1 the relation, 2 the subject, 3 "=" (the answer position)
    fact   -- one of the n_subjects * n_relations facts, indexed subject * n_relations + relation
    attr   -- an attribute value, 0 .. n_attributes - 1 (the output classes)

The toy version of the factual-recall setting of Meng et al. 2022 (ROME) and Geva et al.
2023: "The capital of France is" -> Paris. Facts are a table ``attribute[subject, relation]``
drawn from a seeded generator; nothing about them can be computed, so a model has to store
them in its weights. The circuit the zoo model ``factual-recall`` is trained to (see
``toylab.zoo.truths.FACTUAL_RECALL``) is the one those papers describe in large models:

    1. a layer-0 head at the subject position reads the relation (one position back);
    2. MLP0 at the subject position acts as a key-value memory: keyed on (subject, relation),
       it writes the attribute into the residual stream (the "subject enrichment");
    3. a layer-1 head at the answer position attends to the subject and moves the attribute
       to the logits (the "attribute extraction").

``FactualRecallAlgorithm`` writes that as a causal model with interchangeable variables.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from toylab.tasks.algorithm import Algorithm
from toylab.tasks.base import (
    IGNORE,
    Batch,
    CounterfactualPair,
    SampledTask,
    check_count,
    seeded_generator,
)

BOS, EQUALS = 0, 1
REL_POS, SUBJ_POS, ANSWER_POS = 1, 2, 3
N_CTX = 4


def fact_table(n_subjects: int, n_relations: int, n_attributes: int, table_seed: int) -> Tensor:
    """The facts, attribute[subject, relation] in 0 .. n_attributes - 1: [subject, relation] int64.

    Uniform and independent, from a generator seeded with ``table_seed``, except that each
    subject's attributes are drawn without repetition across relations when there are enough
    attribute values, so that changing the relation always changes the answer.
    """
    g = seeded_generator(table_seed)
    if n_relations <= n_attributes:
        keys = torch.rand(n_subjects, n_attributes, generator=g)  # [subject, attr]
        return keys.argsort(dim=-1)[:, :n_relations].contiguous()  # distinct per subject
    return torch.randint(n_attributes, (n_subjects, n_relations), generator=g)


class FactualRecall(SampledTask):
    """Recall ``attribute[subject, relation]`` from a seeded table of facts.

    Encoding:
        tokens 0 "BOS", 1 "=", then relations ``"r0" .. "r{R-1}"`` (ids 2 .. R + 1), then
        subjects ``"s0" .. "s{S-1}"`` (ids R + 2 .. R + S + 1)       -> d_vocab = R + S + 2
        every prompt is ``[BOS, relation, subject, =]``                 -> n_ctx = 4

    Prompt forms (``n_forms`` F > 1): each relation has F paraphrases, tokens ``"r{i}"`` (form
    0) and ``"r{i}.{f}"``, ids 2 + f * R + i, so subjects move to ids F * R + 2 ..; the same fact
    asked in another form has the same answer (CounterFact's paraphrase prompts). Positions do
    not move, so a circuit's sites are the same in every form. With F = 1 (the default) the
    task, its token ids and its random draws are exactly those of a one-form task.
        targets are IGNORE except at "=" (position 3), which holds the
        attribute, one of ``"a0" .. "a{A-1}"``                          -> d_vocab_out = A

    The relation comes before the subject, as in "The capital of | France | is".

    Data: ``sample`` and training batches draw subject and relation uniformly; the test set
    (``eval_batches()["test"]``) is every fact exactly once, in fact order. The task is pure
    memorisation: there is nothing to generalise to, and a model is right when it has
    stored every fact.
    """

    kind = "factual_recall"

    def __init__(self, n_subjects: int = 48, n_relations: int = 4, n_attributes: int = 8,
                 table_seed: int = 0, n_forms: int = 1) -> None:
        for name, value, low in (("n_subjects", n_subjects, 2), ("n_relations", n_relations, 2),
                                 ("n_attributes", n_attributes, 2), ("n_forms", n_forms, 1)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low} (else there is nothing to recall), got {value}")
        if isinstance(table_seed, bool) or not isinstance(table_seed, int):
            raise ValueError(f"table_seed must be an int, got {table_seed!r}")
        self.n_subjects, self.n_relations, self.n_attributes = n_subjects, n_relations, n_attributes
        self.n_forms = n_forms
        self.table_seed = table_seed
        self.table = fact_table(n_subjects, n_relations, n_attributes, table_seed)  # [subject, relation]
        self._eval: dict[str, Batch] | None = None

    # ---- shape of the problem -------------------------------------------------------
    @property
    def d_vocab(self) -> int:
        return 2 + self.n_forms * self.n_relations + self.n_subjects

    @property
    def d_vocab_out(self) -> int:
        return self.n_attributes

    @property
    def n_ctx(self) -> int:
        return N_CTX

    @property
    def n_facts(self) -> int:
        return self.n_subjects * self.n_relations

    @property
    def token_names(self) -> list[str]:
        return (["BOS", "="] + [f"r{i}" if f == 0 else f"r{i}.{f}" for f in range(self.n_forms)
                                for i in range(self.n_relations)]
                + [f"s{i}" for i in range(self.n_subjects)])

    @property
    def output_names(self) -> list[str]:
        """Name of each output class: ``"a0" .. "a{A-1}"``."""
        return [f"a{i}" for i in range(self.n_attributes)]

    @property
    def positions(self) -> dict[str, int]:
        """Where each part of a prompt sits: relation 1, subject 2, answer ("=") 3."""
        return {"bos": 0, "relation": REL_POS, "subject": SUBJ_POS, "answer": ANSWER_POS}

    def relation_token(self, relation: Tensor | int, form: Tensor | int = 0) -> Tensor:
        return torch.as_tensor(relation) + 2 + torch.as_tensor(form) * self.n_relations

    def subject_token(self, subject: Tensor | int) -> Tensor:
        return torch.as_tensor(subject) + 2 + self.n_forms * self.n_relations

    # ---- encoding -------------------------------------------------------------------
    def make_batch(self, subjects: Tensor, relations: Tensor, forms: Tensor | None = None) -> Batch:
        """Prompts for ``subjects``, ``relations`` and ``forms`` (indices, [batch] each; forms
        default to 0) with their answers."""
        subjects, relations = torch.as_tensor(subjects).long(), torch.as_tensor(relations).long()
        forms = torch.zeros_like(relations) if forms is None else torch.as_tensor(forms).long()
        if forms.shape != relations.shape:
            raise ValueError(f"forms {tuple(forms.shape)} must have the shape of relations {tuple(relations.shape)}")
        if forms.numel() and not (0 <= int(forms.min()) and int(forms.max()) < self.n_forms):
            raise ValueError(f"form indices must lie in [0, {self.n_forms}): the task has {self.n_forms} prompt form(s)")
        if subjects.shape != relations.shape or subjects.ndim != 1:
            raise ValueError(f"subjects {tuple(subjects.shape)} and relations {tuple(relations.shape)} "
                             "must both have shape [batch]")
        if subjects.numel() and not (0 <= int(subjects.min()) and int(subjects.max()) < self.n_subjects):
            raise ValueError(f"subject indices must lie in [0, {self.n_subjects})")
        if relations.numel() and not (0 <= int(relations.min()) and int(relations.max()) < self.n_relations):
            raise ValueError(f"relation indices must lie in [0, {self.n_relations})")
        n = subjects.shape[0]
        tokens = torch.stack([torch.full((n,), BOS), self.relation_token(relations, forms), self.subject_token(subjects),
                              torch.full((n,), EQUALS)], dim=1)  # [batch, pos]
        targets = torch.full_like(tokens, IGNORE)  # [batch, pos]
        targets[:, ANSWER_POS] = self.table[subjects, relations]
        return Batch(tokens, targets)

    def variables(self, tokens: Tensor) -> dict[str, Tensor]:
        """The algorithm's values on prompts [batch, pos], each [batch] int64.

        subject, relation (indices), attribute (``table[subject, relation]``, the answer),
        fact (``subject * n_relations + relation``: which fact the prompt asks for, the "type"
        of the prompt for a probe's control task) and form (which paraphrase of the relation
        the prompt uses).
        """
        self._check_layout(tokens)
        relation_id = tokens[:, REL_POS] - 2
        relation, form = relation_id % self.n_relations, relation_id // self.n_relations
        subject = tokens[:, SUBJ_POS] - 2 - self.n_forms * self.n_relations
        return {"subject": subject, "relation": relation, "attribute": self.table[subject, relation],
                "fact": subject * self.n_relations + relation, "form": form}

    def _check_layout(self, tokens: Tensor) -> None:
        self.check_tokens(tokens)
        if tokens.shape[1] != N_CTX:
            raise ValueError(f"prompts must have length {N_CTX} ([BOS, relation, subject, =]), got {tokens.shape[1]}")
        n_rel_tokens = self.n_forms * self.n_relations
        rel, subj = tokens[:, REL_POS] - 2, tokens[:, SUBJ_POS] - 2 - n_rel_tokens
        if tokens.numel() and ((tokens[:, 0] != BOS).any() or (tokens[:, ANSWER_POS] != EQUALS).any()
                               or (rel < 0).any() or (rel >= n_rel_tokens).any() or (subj < 0).any()):
            raise ValueError("every prompt must read [BOS, relation, subject, =]")

    # ---- generation -----------------------------------------------------------------
    def _sample(self, n: int, g: torch.Generator) -> Batch:
        check_count("n", n)
        subjects = torch.randint(self.n_subjects, (n,), generator=g)  # [batch]
        relations = torch.randint(self.n_relations, (n,), generator=g)  # [batch]
        return self.make_batch(subjects, relations, self._draw_forms(n, g))

    def _draw_forms(self, n: int, g: torch.Generator) -> Tensor | None:
        # Drawn after everything else, and only when there is a choice: one-form data stays as it was.
        return torch.randint(self.n_forms, (n,), generator=g) if self.n_forms > 1 else None

    def sample(self, n: int, seed: int) -> Batch:
        return self._sample(n, seeded_generator(seed))

    def all_facts(self, form: int | None = None) -> Batch:
        """Every fact once, in fact order (subject-major), in prompt form ``form``; with None,
        in every form (form-major): [n_facts * n_forms, pos]."""
        forms = range(self.n_forms) if form is None else [form]
        if form is not None and (isinstance(form, bool) or not isinstance(form, int) or not 0 <= form < self.n_forms):
            raise ValueError(f"form must be an int in [0, {self.n_forms}) or None, got {form!r}")
        fact = torch.arange(self.n_facts).repeat(len(forms))
        return self.make_batch(fact // self.n_relations, fact % self.n_relations,
                               torch.tensor(forms).repeat_interleave(self.n_facts))

    def eval_batches(self) -> dict[str, Batch]:
        if self._eval is None:
            self._eval = {"test": self.all_facts()}
        return dict(self._eval)

    def _resample_until_different(self, base: Tensor, values: Tensor, n_values: int, answer, g: torch.Generator,
                                  rows: Tensor) -> Tensor:
        """New values on ``rows`` of ``values``, differing from ``base`` and changing ``answer``."""
        values = values.clone()
        redraw = rows.clone()
        for _ in range(1000):
            if not redraw.any():
                return values
            values[redraw] = torch.randint(n_values, (int(redraw.sum()),), generator=g)
            redraw = rows & ((values == base) | ~answer(values))
        raise RuntimeError("could not draw a counterfactual that changes the answer")  # pragma: no cover

    def counterfactual(self, n: int, seed: int) -> CounterfactualPair:
        """Clean prompts, and the same with the subject (half the rows) or the relation resampled.

        The resampled subject or relation always changes the answer, so every pair's answers
        differ. Changing the subject tests what the model stores about subjects; changing the
        relation, whether it reads the right fact.
        """
        check_count("n", n)
        g = seeded_generator(seed)
        clean = self._sample(n, g)
        v = self.variables(clean.tokens)
        s, r, answer = v["subject"], v["relation"], v["attribute"]
        change_subject = torch.rand(n, generator=g) < 0.5  # [batch]
        s2 = self._resample_until_different(s, s, self.n_subjects, lambda x: self.table[x, r] != answer, g,
                                            change_subject)
        r2 = self._resample_until_different(r, r, self.n_relations, lambda x: self.table[s, x] != answer, g,
                                            ~change_subject)
        return CounterfactualPair(
            clean=clean, corrupted=self.make_batch(s2, r2, v["form"]),
            description="subject (half the pairs) or relation resampled: the fact asked for, and its answer, change",
        )

    # ---- serialisation --------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        params = {"n_subjects": self.n_subjects, "n_relations": self.n_relations,
                  "n_attributes": self.n_attributes, "table_seed": self.table_seed}
        return params if self.n_forms == 1 else {**params, "n_forms": self.n_forms}


class FactualRecallAlgorithm(Algorithm):
    """Factual recall as a causal model, with interchange interventions on its variables.

    Variables (all single values per prompt; where the zoo model computes each is declared
    by its truth, not here):
        relation         the relation, once it is read at the subject position
        attribute        ``table[subject, relation]``, looked up at the subject position
        moved_attribute  the attribute, once it is moved to the answer position
    Causal graph: (subject, relation) -> attribute -> moved_attribute -> output.

    ``intervene(base, source, v)`` gives the output on ``base`` with ``v`` set to its value
    on ``source``: for ``relation``, ``table[base subject, source relation]``; for
    ``attribute`` and ``moved_attribute``, the source's answer. ``variable="output"`` takes the
    source's answer and ``None`` intervenes on nothing. Returns targets [batch, pos], IGNORE
    except at the answer position.

    ``decoys`` names values that can be read off the model's activations but that the
    output does not depend on where they are read (see the probes lesson): they are not
    variables of the algorithm and have no interventions.
    """

    variables = ("relation", "attribute", "moved_attribute")

    def __init__(self, task: FactualRecall | None = None) -> None:
        if task is None:
            task = FactualRecall()
        if not isinstance(task, FactualRecall):
            raise TypeError(f"FactualRecallAlgorithm needs a FactualRecall task, got {task!r}")
        self.task = task

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        """Independent prompts, with the source's subject and relation both differing from the base's.

        So an intervention on ``relation`` changes the answer on most pairs (unless the base
        subject shares an attribute between the two relations) and one on ``attribute`` or
        ``moved_attribute`` whenever the two facts' attributes differ.
        """
        check_count("n", n)
        task = self.task
        s = torch.randint(task.n_subjects, (n,), generator=generator)  # [batch]
        r = torch.randint(task.n_relations, (n,), generator=generator)
        # A uniform other value: add a non-zero offset modulo the count.
        s2 = (s + torch.randint(1, task.n_subjects, (n,), generator=generator)) % task.n_subjects
        r2 = (r + torch.randint(1, task.n_relations, (n,), generator=generator)) % task.n_relations
        return task.make_batch(s, r, task._draw_forms(n, generator)), task.make_batch(s2, r2, task._draw_forms(n, generator))

    def value(self, batch: Batch | Tensor, variable: str) -> Tensor:
        """The value of ``variable`` on each prompt: [batch] int64 (relation index or attribute)."""
        self.check_variable(variable)
        tokens = batch.tokens if isinstance(batch, Batch) else batch
        v = self.task.variables(tokens)
        return v["relation"] if variable == "relation" else v["attribute"]

    def intervene(self, base: Batch, source: Batch, variable: str | None) -> Tensor:
        if variable is not None and variable != "output":
            self.check_variable(variable)
        if base.tokens.shape != source.tokens.shape:
            raise ValueError(f"base {tuple(base.tokens.shape)} and source {tuple(source.tokens.shape)} must have "
                             "the same shape [batch, pos]")
        if variable is None:
            return self.assign(base, "output", self.task.variables(base.tokens)["attribute"])
        s = self.task.variables(source.tokens)
        return self.assign(base, variable, s["relation"] if variable == "relation" else s["attribute"])

    def assign(self, base: Batch, variable: str, values: Tensor) -> Tensor:
        """Targets [batch, pos] with ``variable`` := ``values`` [batch]: a relation index for
        ``relation`` (the answer becomes ``table[subject, value]``), an attribute for
        ``attribute``, ``moved_attribute`` and ``output`` (the answer becomes the value)."""
        if variable != "output":
            self.check_variable(variable)
        task = self.task
        b = task.variables(base.tokens)
        values = torch.as_tensor(values)
        if values.shape != b["subject"].shape:
            raise ValueError(f"values must have shape [batch] = {tuple(b['subject'].shape)}, got {tuple(values.shape)}")
        n_values = task.n_relations if variable == "relation" else task.n_attributes
        if values.is_floating_point() or (values.numel() and not (0 <= int(values.min()) and int(values.max()) < n_values)):
            raise ValueError(f"{variable} takes integer values in [0, {n_values}); got values in "
                             f"[{values.min().item()}, {values.max().item()}]")
        answer = task.table[b["subject"], values] if variable == "relation" else values.long()
        targets = torch.full_like(base.tokens, IGNORE)  # [batch, pos]
        targets[:, ANSWER_POS] = answer
        return targets


class FactualRecallSplitAlgorithm(FactualRecallAlgorithm):
    """Factual recall with the facts stored in two places: those of subjects below ``boundary``
    in one component, the others in another (the zoo model ``factual-recall-split``).

    Variables:
        relation         the relation, once it is read at the subject position
        attribute_low    ``table[subject, relation]`` for subjects < boundary; nothing otherwise
        attribute_high   the same for subjects >= boundary
        moved_attribute  the attribute, once it is moved to the answer position

    Base and source always share their half of the subjects, so every intervention is defined:
    on ``attribute_low`` the answer becomes the source's where the base is a low subject and
    stays the base's where it is a high one (that store holds nothing for it); the same for
    ``attribute_high`` the other way round. The split is what lets localisation be compared with
    editing where the storage is known (Hase et al. 2023).
    """

    variables = ("relation", "attribute_low", "attribute_high", "moved_attribute")

    def __init__(self, task: FactualRecall | None = None, boundary: int | None = None) -> None:
        super().__init__(task)
        n = self.task.n_subjects
        self.boundary = n // 2 if boundary is None else boundary
        if isinstance(self.boundary, bool) or not isinstance(self.boundary, int) or not 0 < self.boundary < n:
            raise ValueError(f"boundary must be an int in (0, {n}): both halves need subjects, got {boundary!r}")

    def low(self, subjects: Tensor) -> Tensor:
        """Whether each subject's facts are stored in the low store: [batch] bool."""
        return subjects < self.boundary

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        """Independent prompts whose subjects lie in the same half, with a different subject and relation."""
        check_count("n", n)
        task = self.task
        s = torch.randint(task.n_subjects, (n,), generator=generator)  # [batch]
        r = torch.randint(task.n_relations, (n,), generator=generator)
        low = self.low(s)
        start = torch.where(low, 0, self.boundary)
        size = torch.where(low, self.boundary, task.n_subjects - self.boundary)
        offset = (torch.rand(n, generator=generator) * (size - 1)).long() + 1  # 1 .. size - 1
        s2 = start + (s - start + offset) % size
        r2 = (r + torch.randint(1, task.n_relations, (n,), generator=generator)) % task.n_relations
        return (task.make_batch(s, r, task._draw_forms(n, generator)),
                task.make_batch(s2, r2, task._draw_forms(n, generator)))

    def intervene(self, base: Batch, source: Batch, variable: str | None) -> Tensor:
        if variable not in ("attribute_low", "attribute_high"):
            return super().intervene(base, source, variable)
        if base.tokens.shape != source.tokens.shape:
            raise ValueError(f"base {tuple(base.tokens.shape)} and source {tuple(source.tokens.shape)} must have "
                             "the same shape [batch, pos]")
        b, s = self.task.variables(base.tokens), self.task.variables(source.tokens)
        base_low, source_low = self.low(b["subject"]), self.low(s["subject"])
        if (base_low != source_low).any():
            raise ValueError("base and source must have subjects in the same half (see sample_pairs)")
        holds = base_low if variable == "attribute_low" else ~base_low
        return self.assign(base, "output", torch.where(holds, s["attribute"], b["attribute"]))

    def assign(self, base: Batch, variable: str, values: Tensor) -> Tensor:
        if variable in ("attribute_low", "attribute_high"):
            raise ValueError(f"{variable} holds nothing for half the subjects: assign 'attribute' or 'output' instead")
        return super().assign(base, variable if variable != "attribute" else "output", values)
