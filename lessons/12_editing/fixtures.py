"""Lesson 12's fixtures, shared by the lesson, its checkers and the lab's "12 Editing facts" page.

Where a fact is stored is never written here: it is read from the model's truth (the component
of its ``attribute`` variable; on ``factual-recall-split``, of ``attribute_low`` or
``attribute_high`` by the algorithm's boundary between the two halves of the subjects).
"""

from typing import Any

import torch

from toylab import methods
from toylab.components import parse
from toylab.lessons import fast
from toylab.methods import FactEdit

MODEL = "factual-recall"  # one store (MLP0 at the subject), one prompt form
SPLIT_MODEL = "factual-recall-split"  # two stores (MLP0 for one half of the subjects, MLP1 for the other), three forms
EDIT_SEED = 0  # the lesson's first edit: methods.random_edits(task, 1, seed=EDIT_SEED)
PER_HALF = 1 if fast() else 2  # exercise 12.6: facts from each store (one in fast mode, as the tests run the lesson)
N_NOISE = 4  # noise draws per prompt form when tracing a fact (localisation_vs_editing's n_noise)
WORKS = 0.8  # exercise 12.6: edits "work" at a layer when their mean S there is at least this (a failed edit scores 0)


def first_edit(task: Any, seed: int = EDIT_SEED) -> FactEdit:
    """One edit of one fact to a different attribute, drawn by ``methods.random_edits``."""
    return methods.random_edits(task, 1, seed=seed)[0]


def copy_model(model: Any) -> Any:
    """A new model with ``model``'s weights (what ``copy.deepcopy(model)`` gives): edit it, the original stays."""
    clone = type(model)(model.cfg)
    clone.load_state_dict(model.state_dict())
    return clone.to(next(model.parameters()).device)


def edit_prompt(task: Any, edit: FactEdit, form: int = 0) -> torch.Tensor:
    """The prompt an edit is made with (form 0, as ``rome`` does), or the same fact in another form: [1, pos]."""
    return task.make_batch(torch.tensor([edit.subject]), torch.tensor([edit.relation]), torch.tensor([form])).tokens


def rome_delta(model: Any, task: Any, edit: FactEdit, layer: int) -> tuple[Any, torch.Tensor]:
    """``methods.rome``'s edit, and the target change of MLP ``layer``'s output it optimised
    (v* - W_out k*, [d_model], float64), which it reports in ``info["delta"]``."""
    result = methods.rome(model, task, edit, layer)
    return result, result.info["delta"]


def stored_layer(zm: Any, subject: int) -> int | None:
    """The MLP layer the truth stores ``subject``'s facts in; None when the truth does not say."""
    variables = {v.name: v for v in zm.truth.variables} if zm.truth is not None else {}
    if "attribute_low" in variables and "attribute_high" in variables:
        low = bool(zm.algorithm.low(torch.tensor([subject]))[0])
        variable = variables["attribute_low" if low else "attribute_high"]
    elif "attribute" in variables:
        variable = variables["attribute"]
    else:
        return None
    kind, layer, _ = parse(variable.components[0])
    return layer if kind == "mlp" else None


def split_facts(zm: Any, per_half: int = PER_HALF, seed: int = 0) -> list[FactEdit]:
    """``per_half`` edits from each store of ``factual-recall-split`` (those stored in the lower layer first), each
    to a different attribute, in the order ``methods.random_edits`` draws them."""
    drawn = methods.random_edits(zm.task, zm.task.n_facts, seed=seed)
    layers = sorted({stored_layer(zm, e.subject) for e in drawn})
    return [e for layer in layers for e in [e for e in drawn if stored_layer(zm, e.subject) == layer][:per_half]]


def fact_label(task: Any, edit: FactEdit) -> str:
    """'s3 r1: a5 -> a2', the fact and its edit."""
    return f"s{edit.subject} r{edit.relation}: a{int(task.table[edit.subject, edit.relation])} -> a{edit.attribute}"
