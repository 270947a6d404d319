"""Checkers for lesson 08, probes, causal variables and factual recall: against toylab and the truth."""

from __future__ import annotations

from typing import Any

import torch

from toylab import methods
from toylab.lessons.checking import call, number, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.methods.tracing import embedding_noise

from .fixtures import MODEL, candidate_sites

IIA_USED = 0.9  # a site uses the attribute if swapping it from the source moves the answer this often


@exercise("probes.trace_mlp", "Restore one MLP state", "implement", "medium", 15,
          hint="add noise[:, 0] to hook_embed at the subject position (2); in the same run, copy the clean "
               "run's blocks.{layer}.hook_mlp_out[:, pos] in; return the mean softmax probability of "
               "batch.targets at the answer position (3)")
def _trace_mlp(fn) -> str:
    zm = zoo_model(MODEL)
    batch = zm.task.sample(64, seed=21)
    noise = embedding_noise(zm.model, 64, 1, scale=3.0, seed=22)  # [batch, 1, d_model]
    want = methods.causal_trace(zm.model, batch, [2], kinds=["mlp_out"], noise=noise)
    for layer, pos in ((0, 2), (1, 3), (0, 3)):
        got = number(call(fn, zm.model, batch, noise, layer, pos), f"layer {layer}, pos {pos}")
        expected = float(want.p_restored["mlp_out"][layer, pos])
        if abs(got - expected) > 1e-4:
            hint = None
            if abs(got - want.p_clean) < 1e-4:
                hint = "that is the clean probability: the noise must stay on the subject's embedding"
            elif abs(got - want.p_corrupted) < 1e-4:
                hint = "that is the corrupted probability: the restored state did not reach the run"
            raise Wrong(f"layer {layer}, pos {pos}: got {got:.4f}, causal_trace gives {expected:.4f}", hint)
    return "your restoration matches methods.causal_trace"


@exercise("probes.fact_store", "Where are the facts stored?", "answer", "easy", 5,
          hint="read the mlp_out panel of the trace: the (layer, position) whose restoration brings the answer back")
def _fact_store(answer) -> str:
    if not isinstance(answer, (tuple, list)) or len(answer) != 2 or not all(isinstance(a, int) for a in answer):
        raise Wrong(f"answer with (layer, position), two ints, got {answer!r}")
    zm = zoo_model(MODEL)
    store = methods.variable_site(zm.truth, "attribute", zm.task.n_ctx)
    truth = (int(store.hook.split(".")[1]), store.pos)
    if tuple(answer) != truth:
        layer, pos = answer
        names = ["BOS", "the relation", "the subject", "="]
        where = names[pos] if 0 <= pos < len(names) else f"position {pos}"
        raise Wrong(f"the truth does not store the facts in MLP{layer} at {where}")
    return (f"MLP{truth[0]} at the subject position: the truth's fact store ({zm.truth.provenance}), "
            "found by corrupting and restoring, never by reading the truth")


@exercise("probes.control_labels", "A control task", "implement", "medium", 15,
          hint="find the distinct types (types.unique(return_inverse=True)); give each one the label of a "
               "randomly chosen example (so labels keep their frequencies); then look each example's type up")
def _control_labels(fn) -> str:
    g = torch.Generator().manual_seed(0)
    types = torch.randint(400, (4000,), generator=g)  # [batch]
    true = torch.multinomial(torch.tensor([0.7, 0.1, 0.1, 0.1]), 400, replacement=True, generator=g)  # [type]
    labels = true[types]
    got = call(fn, labels, types, 0)
    if not isinstance(got, torch.Tensor) or got.shape != labels.shape:
        raise Wrong(f"return one control label per example, a tensor of shape {tuple(labels.shape)}")
    got = got.long()
    _, inverse = types.unique(return_inverse=True)
    per_type = torch.zeros(400, 4).index_add_(0, inverse, torch.nn.functional.one_hot(got, 4).float())
    if ((per_type > 0).sum(-1) > 1).any():
        raise Wrong("examples of the same type got different control labels",
                    "draw one label per type, then give it to every example of that type")
    if (got == labels).float().mean() > 0.8:
        raise Wrong("your control labels are (nearly) the true labels: a control task must be random")
    share = (per_type.argmax(-1) == 0).float().mean().item()
    if not 0.6 <= share <= 0.8:
        raise Wrong(f"{share:.0%} of types got label 0, while 70% of the examples have it: control labels "
                    "must follow the labels' own distribution")
    return "one random label per type, with the labels' frequencies: a fair control task"


def _site_name(site: Any) -> str:
    if isinstance(site, methods.Site):
        return str(site)
    if isinstance(site, str):
        return site
    raise Wrong(f"give sites as methods.Site(...) or their str(), e.g. 'blocks.0.hook_resid_post[2]'; got {site!r}")


@exercise("probes.used_sites", "Decoded, but is it used?", "answer", "medium", 10,
          hint="for each candidate, measure methods.interchange_accuracy(model, algorithm, 'attribute', site): "
               "keep the sites where swapping in the source's activation gives the source's attribute")
def _used_sites(answer) -> str:
    if isinstance(answer, (str, methods.Site)) or not hasattr(answer, "__iter__"):
        raise Wrong(f"answer with a set of sites, got {answer!r}")
    names = {_site_name(s) for s in answer}
    zm = zoo_model(MODEL)
    candidates = {str(s): s for s in candidate_sites()}
    unknown = sorted(names - set(candidates))
    if unknown:
        raise Wrong(f"{unknown[0]} is not one of the candidate sites {sorted(candidates)}")
    iia = {name: methods.interchange_accuracy(zm.model, zm.algorithm, "attribute", site, n=256, seed=23).accuracy
           for name, site in candidates.items()}
    used = {name for name, value in iia.items() if value >= IIA_USED}
    for name in sorted(names - used):
        raise Wrong(f"{name}: the attribute can be read there, but swapping it moves the answer on only "
                    f"{iia[name]:.0%} of pairs: nothing downstream reads it")
    for name in sorted(used - names):
        raise Wrong(f"you left out {name}: swapping it gives the source's attribute on {iia[name]:.0%} of pairs")
    return (f"{sorted(names)}: the fact store and the path from it to the answer; the decoys are read by "
            "nothing that reaches the answer position")
