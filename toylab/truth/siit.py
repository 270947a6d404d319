"""Strict interchange-intervention training (SIIT): train a circuit into chosen components.

Following InterpBench (Gupta et al. 2024), the loss on each step has three terms:

    behaviour   cross-entropy of the model on the task (it must still solve it);
    IIT         pick a causal variable of the truth; run the base input with the
                variable's components patched from a source input; cross-entropy against
                the algorithm's output under the same intervention. This puts each
                variable where the truth declares it.
    strict      resample-ablate a random subset of the nodes outside the circuit (their
                outputs patched from the source; each node kept with a probability drawn
                uniformly per step, so both single nodes and nearly all of them get
                ablated) and ask for the base answers: what is outside must not matter.

    decoy       (decoy traps only: ``Truth.trap`` of kind "decoys") for each decoy head,
                -log of its attention on the key its declared role's detector names
                (``truth.attention``), averaged over the queries where it is defined:
                the decoy attends like a circuit head, while the strict term keeps it
                from mattering.

    loss = behaviour_weight * behaviour + iit_weight * IIT + strict_weight * strict
           (+ decoy_weight * decoy)

with InterpBench's default weights 1, 1 and 0.4 (decoy 1). Source activations keep their gradient,
as in InterpBench, so both runs learn. All randomness comes from
``step_generator(seed, step, "siit")``, so resumed runs stay bitwise identical.
"""

from __future__ import annotations

from typing import Any

import torch

from toylab import components as comp
from toylab.interventions import interchanged
from toylab.methods.detectors import target_positions
from toylab.models import Transformer
from toylab.tasks import Batch, loss
from toylab.tasks.algorithm import Algorithm
from toylab.tasks.base import step_generator
from toylab.train import Objective
from toylab.truth.truth import Truth


class SIIT(Objective):
    def __init__(self, algorithm: Algorithm, truth: Truth, behaviour_weight: float = 1.0,
                 iit_weight: float = 1.0, strict_weight: float = 0.4, decoy_weight: float = 1.0) -> None:
        if not truth.variables:
            raise ValueError(f"SIIT needs causal variables to align; the truth of {truth.model} declares none")
        for variable in truth.variables:
            algorithm.check_variable(variable.name)
        self.algorithm, self.truth = algorithm, truth
        self.weights = {"behaviour": behaviour_weight, "iit": iit_weight, "strict": strict_weight}
        decoys = truth.trap.nodes.get("decoy", ()) if truth.trap and truth.trap.kind == "decoys" else ()
        roles = {role.head: role.pattern for role in truth.attention}
        missing = [d for d in decoys if d not in roles]
        if missing:
            raise ValueError(f"decoys {missing} have no attention role in the truth to imitate")
        self.decoys = {d: roles[d] for d in decoys}  # head -> detector
        if self.decoys:
            self.weights["decoy"] = decoy_weight

    def outside(self, model: Transformer) -> list[str]:
        """Heads and MLPs outside the circuit: the strict term ablates them."""
        inside = set(self.truth.nodes_at("head"))
        return [n for n in comp.nodes(model.cfg) if n not in inside and n not in comp.INPUTS and n != comp.OUTPUT]

    def terms(self, model: Transformer, batch: Batch, step: int, seed: int) -> dict[str, torch.Tensor]:
        g = step_generator(seed, step, "siit")
        device = model.device
        base, source = self.algorithm.sample_pairs(len(batch), g)
        variable = self.truth.variables[int(torch.randint(len(self.truth.variables), (), generator=g))]
        targets = self.algorithm.intervene(base, source, variable.name).to(device)
        base, source = base.to(device), source.to(device)
        out = {"behaviour": loss(model(batch.tokens), batch)}

        with interchanged(model, source.tokens, variable.components, variable.positions, detach_source=False):
            patched = model(base.tokens)
        out["iit"] = loss(patched, Batch(base.tokens, targets))

        outside = self.outside(model)
        rate = torch.rand((), generator=g)
        chosen = [n for n, hit in zip(outside, torch.rand(len(outside), generator=g) < rate) if hit]
        if chosen:
            with interchanged(model, source.tokens, chosen, "all", detach_source=False):
                ablated = model(base.tokens)
            out["strict"] = loss(ablated, base)
        if self.decoys:
            out["decoy"] = self._decoy_term(model, batch.tokens)
        return out

    def _decoy_term(self, model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
        """Mean -log attention of each decoy on its detector's target key."""
        layers = sorted({comp.parse(head)[1] for head in self.decoys})
        patterns: dict[int, torch.Tensor] = {}

        def keep(x: torch.Tensor, hook) -> None:
            patterns[int(hook.name.split(".")[1])] = x  # [batch, head, query_pos, key_pos]

        with model.hooks([(f"blocks.{layer}.attn.hook_pattern", keep) for layer in layers]):
            model(tokens)
        terms = []
        for head, detector in self.decoys.items():
            _, layer, index = comp.parse(head)
            target = target_positions(tokens, detector)  # [batch, query_pos], -1 where undefined
            valid = target >= 0
            mass = patterns[layer][:, index].gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            terms.append(-(mass[valid] + 1e-6).log().mean())
        return torch.stack(terms).mean()

    def loss(self, model: Transformer, batch: Batch, step: int, seed: int) -> torch.Tensor:
        return sum(self.weights[name] * value for name, value in self.terms(model, batch, step, seed).items())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "siit", "algorithm": type(self.algorithm).__name__, "weights": self.weights,
                "nodes": list(self.truth.nodes), **({"decoys": self.decoys} if self.decoys else {}),
                "variables": {v.name: [list(v.components), v.positions] for v in self.truth.variables}}
