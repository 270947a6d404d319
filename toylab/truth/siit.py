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

    self-repair (truths that claim ``self_repair``: primaries and backups, as IOI's name
                movers and backup name movers) knock out the primaries (their mean output
                over the task's counterfactual inputs, as Wang et al. 2022 ablate name
                movers), resample the negative heads and every node outside the circuit
                but the backups from other prompts, and ask for the clean answers; with
                the pattern term on, the backups must also attend there where the
                primaries' role says (-log attention, as below). On the clean run, a hinge
                keeps the direct effect on the logit difference of every head outside the
                circuit, the backups included, within +-``QUIET_MARGIN``. So the backups
                take over when the primaries are gone and stay quiet while they speak.
    negative    (truths that claim ``negative`` heads, as IOI's negative name mover) a hinge
                pushes each negative head's direct effect on the logit difference (its
                output at the scored positions read along W_U[answer] - W_U[counterfactual
                answer]) below -``NEGATIVE_MARGIN``: it writes against the answer.
    pattern     (with ``pattern_weight`` > 0) for every head with a declared attention role,
                -log of its attention on the key its role's detector names, averaged over
                the queries where it is defined: the roles sit in the chosen heads with the
                declared patterns, not only the variables.

    decoy       (decoy traps only: ``Truth.trap`` of kind "decoys") for each decoy head,
                -log of its attention on the key its declared role's detector names
                (``truth.attention``), averaged over the queries where it is defined:
                the decoy attends like a circuit head, while the strict term keeps it
                from mattering.

    loss = behaviour_weight * behaviour + iit_weight * IIT + strict_weight * strict
           (+ self_repair_weight * self-repair + negative_weight * negative
              + pattern_weight * pattern + decoy_weight * decoy)

with InterpBench's default weights 1, 1 and 0.4 (self-repair, negative and decoy 1; pattern
0). Source activations keep their gradient, as in InterpBench, so both runs learn. All randomness comes from
``step_generator(seed, step, "siit")``, so resumed runs stay bitwise identical.
"""

from __future__ import annotations

from typing import Any

import torch

from toylab import components as comp
from toylab.interventions import cache_with_grad, interchanged
from toylab.methods.detectors import target_positions
from toylab.models import Transformer
from toylab.tasks import Batch, loss
from toylab.tasks.algorithm import Algorithm
from toylab.tasks.base import CounterfactualPair, logit_diff_mask, step_generator
from toylab.train import Objective
from toylab.truth.truth import Truth

NEGATIVE_MARGIN = 1.0  # a negative head's direct effect on the logit difference is pushed below -this
QUIET_MARGIN = 0.5  # a head outside the circuit: its direct effect on the clean logit difference is pushed within +-this


def _attention_nll(pattern: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean -log attention on the target key (pattern [batch, query_pos, key_pos], target
    [batch, query_pos], -1 where undefined), over the queries where it is defined."""
    valid = target >= 0
    mass = pattern.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [batch, query_pos]
    return -(mass[valid] + 1e-6).log().mean()


class SIIT(Objective):
    def __init__(self, algorithm: Algorithm, truth: Truth, behaviour_weight: float = 1.0,
                 iit_weight: float = 1.0, strict_weight: float = 0.4, decoy_weight: float = 1.0,
                 self_repair_weight: float = 1.0, negative_weight: float = 1.0, pattern_weight: float = 0.0) -> None:
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
        repair = truth.claims.get("self_repair", {})
        self.primaries, self.backups = list(repair.get("primaries", ())), list(repair.get("backups", ()))
        self.negative = list(truth.claims.get("negative", ()))
        self.patterned = roles if pattern_weight > 0 else {}  # head -> detector
        for name, weight, on in (("self_repair", self_repair_weight, self.primaries),
                                 ("negative", negative_weight, self.negative), ("pattern", pattern_weight, self.patterned)):
            if on:
                self.weights[name] = weight

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
        if self.primaries or self.negative or self.patterned:
            pair = self.algorithm.task.counterfactual(len(batch), int(torch.randint(2**62, (), generator=g)))
            pair = CounterfactualPair(pair.clean.to(device), pair.corrupted.to(device), pair.description)
            out.update(self._shaping_terms(model, pair))
        if self.decoys:
            out["decoy"] = self._decoy_term(model, batch.tokens)
        return out

    def _shaping_terms(self, model: Transformer, pair: CounterfactualPair) -> dict[str, torch.Tensor]:
        """self-repair, negative and pattern terms, from one clean run (and a repaired one)."""
        clean, corrupted = pair.clean, pair.corrupted
        results: dict[str, torch.Tensor] = {}

        def keep(x: torch.Tensor, hook) -> None:
            results[hook.name] = x

        def layer_head(head: str) -> tuple[int, int]:
            return comp.parse(head)[1:]

        quiet = [n for n in self.outside(model) if comp.parse(n)[0] == "head"] if self.primaries else []
        names = sorted({f"blocks.{layer_head(h)[0]}.attn.hook_result" for h in [*quiet, *self.negative]}
                       | {f"blocks.{layer_head(h)[0]}.attn.hook_pattern" for h in self.patterned})
        with model.hooks([(name, keep) for name in names]):
            model(clean.tokens)
        mask = logit_diff_mask(pair)  # [batch, pos]
        W_U = model.unembed.W_U  # [d_model, d_vocab_out]
        direction = W_U.T[clean.targets.clamp(min=0)] - W_U.T[corrupted.targets.clamp(min=0)]  # [batch, pos, d_model]

        def direct(head: str) -> torch.Tensor:  # [n scored]: the head's direct effect on the logit difference
            layer, index = layer_head(head)
            return (results[f"blocks.{layer}.attn.hook_result"][:, :, index] * direction).sum(-1)[mask]

        out = {}
        if self.primaries:
            # The primaries output their mean over the counterfactual batch (Wang et al.'s knockout:
            # the mean over the ABC distribution carries no name), and everything outside the circuit
            # but the backups is resampled: the backups, not a bystander, must take over.
            z_names = sorted({f"blocks.{layer_head(h)[0]}.attn.hook_z" for h in self.primaries})
            means = {name: z.mean(0, keepdim=True) for name, z in cache_with_grad(model, corrupted.tokens, z_names).items()}

            def knock_out(z: torch.Tensor, hook) -> torch.Tensor:  # [batch, pos, head, d_head]
                select = torch.zeros(z.shape[2], dtype=torch.bool, device=z.device)
                select[[layer_head(h)[1] for h in self.primaries if f"blocks.{layer_head(h)[0]}." in hook.name]] = True
                return torch.where(select.view(1, 1, -1, 1), means[hook.name], z)

            # Resampled from other prompts (a counterfactual shares the clean names, which would leak).
            other = corrupted.tokens.roll(1, 0)
            bystanders = [n for n in self.outside(model) if n not in self.backups] + self.negative
            backup_patterns: dict[str, torch.Tensor] = {}
            pattern_names = [f"blocks.{layer_head(h)[0]}.attn.hook_pattern" for h in self.backups] if self.patterned else []
            with interchanged(model, other, bystanders, "all", detach_source=False), \
                    model.hooks([(name, knock_out) for name in z_names]
                                + [(name, lambda x, hook: backup_patterns.__setitem__(hook.name, x)) for name in pattern_names]):
                repaired = model(clean.tokens)
            # Every head outside the circuit, the backups included, writes (almost) nothing to the
            # clean logit difference: a loss on answers alone saturates once they are confident.
            out["self_repair"] = loss(repaired, clean) + torch.stack(
                [torch.relu(direct(h).abs() - QUIET_MARGIN).mean() for h in quiet]).mean()
            if pattern_names and self.primaries[0] in self.patterned:  # the backups attend as the primaries did
                target = target_positions(clean.tokens, self.patterned[self.primaries[0]], self.algorithm.task)
                out["self_repair"] = out["self_repair"] + torch.stack(
                    [_attention_nll(backup_patterns[f"blocks.{layer_head(h)[0]}.attn.hook_pattern"][:, layer_head(h)[1]], target)
                     for h in self.backups]).mean()
        if self.negative:
            out["negative"] = torch.stack([torch.relu(direct(h) + NEGATIVE_MARGIN).mean() for h in self.negative]).mean()
        if self.patterned:
            terms = []
            for head, detector in self.patterned.items():
                layer, index = layer_head(head)
                target = target_positions(clean.tokens, detector, self.algorithm.task)  # [batch, query_pos]
                terms.append(_attention_nll(results[f"blocks.{layer}.attn.hook_pattern"][:, index], target))
            out["pattern"] = torch.stack(terms).mean()
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
            target = target_positions(tokens, detector, self.algorithm.task)  # [batch, query_pos], -1 where undefined
            terms.append(_attention_nll(patterns[layer][:, index], target))
        return torch.stack(terms).mean()

    def loss(self, model: Transformer, batch: Batch, step: int, seed: int) -> torch.Tensor:
        return sum(self.weights[name] * value for name, value in self.terms(model, batch, step, seed).items())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "siit", "algorithm": type(self.algorithm).__name__, "weights": self.weights,
                **({"self_repair": self.truth.claims["self_repair"]} if self.primaries else {}),
                **({"negative": list(self.truth.claims["negative"])} if self.negative else {}),
                "nodes": list(self.truth.nodes), **({"decoys": self.decoys} if self.decoys else {}),
                "variables": {v.name: [list(v.components), v.positions] for v in self.truth.variables}}
