"""Indirect object identification in a synthetic vocabulary (Wang et al. 2022).

Axis names: batch, pos (as everywhere); slot -- the two names of the first clause.

    [BOS] When Anna and Bob went to the park , Bob gave a ring to   ->  Anna

The first clause names two people; the second repeats one of them, the subject S, and the
answer is the other, the indirect object IO. Several templates of different lengths put the
names at different positions, and both orders occur, ABBA (IO first) and BABA (S first), so
no fixed offset solves the task: a model has to find the name that is *not* repeated. The
circuit Wang et al. found in GPT-2 small does it in three steps, which ``IOIAlgorithm``
writes as a causal model:

    duplicate    at the second mention of S, where this name occurred before: the slot (0 or
                 1) of the first clause that holds it (duplicate-token heads; in GPT-2 small
                 they write S1's position, not its name)
    s_position   the same slot, moved to the last position (S-inhibition heads), where the
                 name movers' queries read it
    io           the name the name-mover heads copy to the output: the first clause's other
                 name

Counterfactuals (``counterfactual(n, seed, kind)``), as in the paper:

    abc     the second mention of S replaced by a third name C: nothing is repeated, so no
            name is the answer (the contrast token stays S)
    swap    the second mention of S replaced by IO: IO is now the repeated name, and the
            answer flips to S
    order   the first clause's names swapped (ABBA <-> BABA): the answer stays, and only
            where S sits moves (for interchange interventions on s_position; its logit
            difference contrasts the answer with S, as the clean prompt's does)

The metric is the logit difference between the clean answer and the corrupted target (for
``abc``, the subject S: the paper's IO - S).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from toylab.tasks.algorithm import Algorithm
from toylab.tasks.base import IGNORE, Batch, CounterfactualPair, SampledTask, check_count, seeded_generator

PAD, BOS = 0, 1
# X1 and X2 are the first clause's names (slot 0, slot 1), S the second mention of the subject,
# P a place and O an object. The prompt ends where the indirect object is to be said.
TEMPLATES = (
    "When X1 and X2 went to the P , S gave a O to",
    "When X1 and X2 got a O at the P , S decided to give it to",
    "After X1 and X2 went to the P , S gave a O to",
    "Then , X1 and X2 had a long day at the P . S gave a O to",
    "While X1 and X2 were working at the P , S handed a O to",
    "Friends X1 and X2 found a O at the P . S gave it to",
)
SLOTS = ("X1", "X2", "S", "P", "O")
KINDS = ("abc", "swap", "order")
ORDERS = ("ABBA", "BABA")  # slot of IO in the first clause: 0 (ABBA) or 1 (BABA)


def _words() -> list[str]:
    return sorted({w for t in TEMPLATES for w in t.split() if w not in SLOTS})


class IOI(SampledTask):
    """Say the name of the first clause that the second clause does not repeat.

    Encoding:
        tokens 0 "PAD", 1 "BOS", then the templates' words (sorted), then names
        "N0" .. "N{n-1}", places "P0" .., objects "O0" ..                   -> d_vocab
        every prompt is ``[BOS, template ...]`` right-padded with PAD to n_ctx (the longest
        template plus BOS, unless given); the answer position is the template's last word
        ("to"), the only scored position; its target is the IO name's token id
        outputs are the whole vocabulary                                     -> d_vocab_out = d_vocab

    Data: template, order (ABBA/BABA), two distinct names, place and object uniform and
    independent. ``templates`` restricts to some of ``TEMPLATES`` (by index).
    """

    kind = "ioi"
    detectors = ("duplicate-s", "s-inhibition", "name-mover")  # head types of attention_targets

    def __init__(self, n_names: int = 16, n_places: int = 6, n_objects: int = 6,
                 templates: tuple[int, ...] | list[int] | None = None, n_ctx: int | None = None) -> None:
        for name, value, low, why in (("n_names", n_names, 3, "IO, S and a third name for the ABC corruption"),
                                      ("n_places", n_places, 1, "every template names a place"),
                                      ("n_objects", n_objects, 1, "every template names an object")):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low} ({why}), got {value}")
        chosen = tuple(range(len(TEMPLATES))) if templates is None else tuple(templates)
        if not chosen or any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(TEMPLATES)
                             for t in chosen) or len(set(chosen)) != len(chosen):
            raise ValueError(f"templates must be distinct indices into the {len(TEMPLATES)} TEMPLATES, got {templates!r}")
        self.n_names, self.n_places, self.n_objects, self.templates = n_names, n_places, n_objects, chosen
        longest = 1 + max(len(TEMPLATES[t].split()) for t in chosen)
        if n_ctx is None:
            n_ctx = longest
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < longest:
            raise ValueError(f"n_ctx must be an int >= {longest} (BOS and the longest chosen template), got {n_ctx!r}")
        self._n_ctx = n_ctx
        self._eval: dict[str, Batch] | None = None
        words = _words()
        self._word_id = {w: 2 + i for i, w in enumerate(words)}
        self._first_name = 2 + len(words)
        # Each template as ids [n_ctx] with -1..-5 marking X1, X2, S, P, O, and PAD after it.
        rows = []
        for t in range(len(TEMPLATES)):
            ids = [BOS] + [-(SLOTS.index(w) + 1) if w in SLOTS else self._word_id[w] for w in TEMPLATES[t].split()]
            rows.append(ids + [PAD] * (max(n_ctx, len(ids)) - len(ids)))
        width = max(len(r) for r in rows)
        self._layout = torch.tensor([r + [PAD] * (width - len(r)) for r in rows])  # [template, pos]
        self._answer_pos = torch.tensor([len(t.split()) for t in TEMPLATES])  # [template]: the last word, after BOS
        # [template] each: where each slot sits (the first X1, X2, S, P, O mark of the template)
        self._slot_pos = {slot: (self._layout == -(i + 1)).int().argmax(-1) for i, slot in enumerate(SLOTS)}

    # ---- shape of the problem -------------------------------------------------------
    @property
    def d_vocab(self) -> int:
        return self._first_name + self.n_names + self.n_places + self.n_objects

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def token_names(self) -> list[str]:
        return (["PAD", "BOS", *self._word_id] + [f"N{i}" for i in range(self.n_names)]
                + [f"P{i}" for i in range(self.n_places)] + [f"O{i}" for i in range(self.n_objects)])

    def name_token(self, name: Tensor | int) -> Tensor:
        return torch.as_tensor(name) + self._first_name

    @property
    def name_tokens(self) -> Tensor:
        """The token ids of every name: [n_names]."""
        return torch.arange(self.n_names) + self._first_name

    def positions(self, template: int) -> dict[str, int]:
        """Where template ``template``'s parts sit: X1, X2, S (second mention), P, O, and answer."""
        out = {slot: int(self._slot_pos[slot][template]) for slot in SLOTS}
        out["answer"] = int(self._answer_pos[template])
        return out

    # ---- encoding -------------------------------------------------------------------
    def make_batch(self, template: Tensor, io: Tensor, s: Tensor, order: Tensor, place: Tensor, obj: Tensor,
                   second: Tensor | None = None) -> Batch:
        """Prompts from indices [batch] each: template, IO and S names, order (0 ABBA, 1 BABA),
        place, object; ``second`` is the name said in the second clause (default S: the task's
        prompts; another name gives the counterfactuals). Targets: the name that is in the first
        clause and not repeated (IO when ``second`` is S), IGNORE if none or both are."""
        template, io, s, order, place, obj = (torch.as_tensor(x).long() for x in (template, io, s, order, place, obj))
        second = s if second is None else torch.as_tensor(second).long()
        n = template.shape[0]
        for name, x, hi in (("template", template, len(TEMPLATES)), ("io", io, self.n_names), ("s", s, self.n_names),
                            ("order", order, 2), ("place", place, self.n_places), ("obj", obj, self.n_objects),
                            ("second", second, self.n_names)):
            if x.shape != (n,):
                raise ValueError(f"{name} must have shape [batch]={n}, got {tuple(x.shape)}")
            if n and not (0 <= int(x.min()) and int(x.max()) < hi):
                raise ValueError(f"{name} indices must lie in [0, {hi})")
        if (io == s).any():
            raise ValueError("io and s must be different names on every row")
        tokens = self._layout[template].clone()[:, :self.n_ctx]  # [batch, pos]
        x1 = torch.where(order == 0, io, s)
        x2 = torch.where(order == 0, s, io)
        for slot, value in (("X1", self.name_token(x1)), ("X2", self.name_token(x2)), ("S", self.name_token(second)),
                            ("P", place + self._first_name + self.n_names),
                            ("O", obj + self._first_name + self.n_names + self.n_places)):
            mark = tokens == -(SLOTS.index(slot) + 1)
            tokens = torch.where(mark, value.unsqueeze(1).expand_as(tokens), tokens)
        targets = torch.full_like(tokens, IGNORE)
        answer_pos = self._answer_pos[template]  # [batch]
        answer = torch.where(second == s, io, torch.where(second == io, s, torch.full_like(io, -1)))
        rows = torch.arange(n)
        targets[rows, answer_pos] = torch.where(answer >= 0, self.name_token(answer.clamp(min=0)), IGNORE)
        return Batch(tokens, targets)

    def variables(self, tokens: Tensor) -> dict[str, Tensor]:
        """The prompt's parts, each [batch] int64: template, x1 and x2 (first-clause names),
        second (the second clause's name), and, where the second name repeats one of the first
        clause, s, io, s_position (slot of S: 0 or 1, else -1) and answer_pos."""
        self.check_tokens(tokens)
        if tokens.shape[1] != self.n_ctx:
            raise ValueError(f"IOI prompts have length {self.n_ctx}, got {tokens.shape[1]}")
        layout = self._layout[:, :self.n_ctx]  # [template, pos]
        fixed = layout >= 0  # [template, pos]
        match = ((tokens.unsqueeze(1) == layout.unsqueeze(0)) | ~fixed.unsqueeze(0)).all(-1)  # [batch, template]
        if not match.any(-1).all():
            raise ValueError("some prompts follow none of the IOI templates")
        template = match.float().argmax(-1)
        pos = {slot: self._slot_pos[slot][template] for slot in SLOTS}
        rows = torch.arange(tokens.shape[0])
        name = {slot: tokens[rows, pos[slot]] - self._first_name for slot in ("X1", "X2", "S")}
        s_position = torch.where(name["S"] == name["X1"], 0, torch.where(name["S"] == name["X2"], 1, -1))
        io = torch.where(s_position == 0, name["X2"], torch.where(s_position == 1, name["X1"], -1))
        answer_pos = self._answer_pos[template]
        return {"template": template, "x1": name["X1"], "x2": name["X2"], "second": name["S"],
                "s": torch.where(s_position >= 0, name["S"], -1), "io": io, "s_position": s_position,
                "answer_pos": answer_pos}

    def attention_targets(self, tokens: Tensor) -> dict[str, Tensor]:
        """Where each IOI head type attends (Wang et al. 2022), for ``methods.detectors``:
        [batch, query_pos] int64 key positions each, -1 where the type is undefined.

            duplicate-s    the second mention of S -> its first mention (S1)
            s-inhibition   the answer position -> the second mention of S (S2)
            name-mover     the answer position -> the indirect object in the first clause

        Prompts whose second clause repeats no name (ABC) define none of them.
        """
        v = self.variables(tokens)
        template, slot = v["template"], v["s_position"]
        rows = torch.arange(tokens.shape[0])
        defined = slot >= 0
        x1, x2, s2 = self._slot_pos["X1"][template], self._slot_pos["X2"][template], self._slot_pos["S"][template]
        s1 = torch.where(slot == 0, x1, x2)
        io = torch.where(slot == 0, x2, x1)
        out = {}
        for role, query, key in (("duplicate-s", s2, s1), ("s-inhibition", v["answer_pos"], s2),
                                 ("name-mover", v["answer_pos"], io)):
            target = torch.full(tokens.shape, -1, dtype=torch.long)
            target[rows[defined], query[defined]] = key[defined]
            out[role] = target
        return out

    # ---- generation -----------------------------------------------------------------
    def _draw(self, n: int, g: torch.Generator) -> dict[str, Tensor]:
        check_count("n", n)
        template = torch.tensor(self.templates)[torch.randint(len(self.templates), (n,), generator=g)]
        io = torch.randint(self.n_names, (n,), generator=g)
        s = (io + torch.randint(1, self.n_names, (n,), generator=g)) % self.n_names  # another name
        return {"template": template, "io": io, "s": s, "order": torch.randint(2, (n,), generator=g),
                "place": torch.randint(self.n_places, (n,), generator=g),
                "obj": torch.randint(self.n_objects, (n,), generator=g)}

    def _sample(self, n: int, g: torch.Generator) -> Batch:
        return self.make_batch(**self._draw(n, g))

    def sample(self, n: int, seed: int) -> Batch:
        return self._sample(n, seeded_generator(seed))

    def counterfactual(self, n: int, seed: int, kind: str = "abc") -> CounterfactualPair:
        """Clean prompts and their ``kind`` counterfactual (see the module docstring).

        ``corrupted.targets`` holds the token the metric contrasts the clean answer with: S for
        ``abc`` (no name is the answer there) and ``order``, the new answer (S) for ``swap``.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown IOI counterfactual {kind!r}; the kinds are {list(KINDS)}")
        g = seeded_generator(seed)
        d = self._draw(n, g)
        clean = self.make_batch(**d)
        if kind == "swap":
            corrupted = self.make_batch(**d, second=d["io"])
            return CounterfactualPair(clean, corrupted, "the second mention of S replaced by IO: the answer flips to S")
        if kind == "abc":
            # C: a third name, uniform among those that are neither IO nor S
            c = torch.randint(self.n_names - 2, (n,), generator=g)
            low, high = torch.minimum(d["io"], d["s"]), torch.maximum(d["io"], d["s"])
            c = c + (c >= low).long()
            c = c + (c >= high).long()
            tokens = self.make_batch(**d, second=c).tokens
            description = "the second mention of S replaced by a third name C (ABC): nothing is repeated"
        else:
            tokens = self.make_batch(**{**d, "order": 1 - d["order"]}).tokens
            description = "the first clause's names swapped (ABBA <-> BABA): only where S sits changes"
        contrast = torch.where(clean.scored, self.name_token(d["s"]).unsqueeze(1), IGNORE)  # S at the answer
        return CounterfactualPair(clean, Batch(tokens, contrast), description)

    # ---- serialisation --------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"n_names": self.n_names, "n_places": self.n_places, "n_objects": self.n_objects,
                "templates": list(self.templates), "n_ctx": self.n_ctx}


class IOIAlgorithm(Algorithm):
    """IOI as a causal model: duplicate -> s_position -> io -> output.

    Variables (one value per prompt):
        duplicate    the first-clause slot (0 or 1) of the repeated name, at its second mention
        s_position   that slot, moved to the answer position
        io           the name copied to the output: the first clause's other slot

    Both slot variables are positions, not names, as in GPT-2 small (Wang et al. 2022, sec.
    3.3: S-inhibition heads move S1's position): the name movers' queries ask for "the
    name in the other slot". ``intervene(base, source, v)`` gives the output on ``base``
    with ``v`` from ``source``: ``duplicate`` and ``s_position`` -> the base's name in the
    other slot than the source's; ``io`` -> the source's IO name. Pairs: the source is an
    independent prompt of the base's template whose IO differs from the base's, so ``io``
    always changes the output and the slot variables in half the pairs. Drawn independently,
    a source shares the base's names only by chance, so a patched run (and SIIT's resample
    ablations from it) cannot hand a component the base's names through the source.
    """

    variables = ("duplicate", "s_position", "io")

    def __init__(self, task: IOI | None = None) -> None:
        task = IOI() if task is None else task
        if not isinstance(task, IOI):
            raise TypeError(f"IOIAlgorithm needs an IOI task, got {task!r}")
        self.task = task

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[Batch, Batch]:
        d = self.task._draw(n, generator)
        source = {**self.task._draw(n, generator), "template": d["template"]}
        clash = source["io"] == d["io"]  # the source's IO must differ from the base's, or io changes nothing
        source["io"] = torch.where(clash, d["s"], source["io"])
        source["s"] = torch.where(source["s"] == source["io"], d["io"], source["s"])
        return self.task.make_batch(**d), self.task.make_batch(**source)

    def intervene(self, base: Batch, source: Batch, variable: str) -> Tensor:
        self.check_variable(variable)
        if base.tokens.shape != source.tokens.shape:
            raise ValueError(f"base {tuple(base.tokens.shape)} and source {tuple(source.tokens.shape)} must have "
                             "the same shape [batch, pos]")
        b, s = self.task.variables(base.tokens), self.task.variables(source.tokens)
        if variable == "io":
            answer = s["io"]
        else:
            slot = s["s_position"]
            answer = torch.where(slot == 0, b["x2"], torch.where(slot == 1, b["x1"], -1))
        targets = torch.full_like(base.tokens, IGNORE)
        rows = torch.arange(base.tokens.shape[0])
        targets[rows, b["answer_pos"]] = torch.where(answer >= 0, self.task.name_token(answer.clamp(min=0)), IGNORE)
        return targets


__all__ = ["IOI", "KINDS", "TEMPLATES", "IOIAlgorithm"]
