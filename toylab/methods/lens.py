"""The logit lens and direct logit attribution: reading the residual stream as logits.

Axis names used in shape comments:
    batch, pos        as everywhere
    stage             a point of the residual stream: resid_pre of each layer (resid_mid
                      too where an MLP follows), then the final resid_post
    component         a term of the final residual stream: embed, pos_embed, L{l}H{h},
                      MLP{l}, and "bias" (every b_O and b_out, summed)
    d_model, d_vocab_out

Logit lens (nostalgebraist 2020): decode an intermediate residual stream with the model's
own final LayerNorm (its scale computed at that stage) and unembedding, as if the remaining
layers were skipped. In a 2-layer attention-only induction model the stream before layer 1
can only predict from the current token, so its accuracy on the repeated half is low; the
final stage is the model itself.

Direct logit attribution (Elhage et al. 2021; ARENA 1.2): the final residual stream is a
sum of the components' outputs, so its projection on an answer direction (the unembedding
of the answer, or answer minus counterfactual answer) splits into one term per component.
ln_final's scale is frozen from the run itself, as TransformerLens's ``apply_ln_to_stack``,
and, where it is a LayerNorm, each term is centred as LayerNorm centres their sum. The
terms then add up exactly to the logit (difference), up to ``offset``: the unembedding's
b_U and ln_final's b, which no component writes. Direct attribution counts only the path
straight to the logits: a previous-token head, whose effect flows through a later head's
key, attributes ~0 directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor

from toylab import components as comp
from toylab.hooks import UnknownNameError
from toylab.models import Transformer
from toylab.models.layernorm import LayerNorm
from toylab.tasks.base import IGNORE, Batch, CounterfactualPair


def _stages(model: Transformer) -> list[str]:
    names = []
    for layer in range(model.cfg.n_layers):
        names.append(f"blocks.{layer}.hook_resid_pre")
        if not model.cfg.attn_only:  # in attention-only blocks resid_mid is resid_post
            names.append(f"blocks.{layer}.hook_resid_mid")
    return names + [f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]


def _label(hook: str) -> str:
    _, layer, name = hook.split(".")
    return f"{name.removeprefix('hook_')} {layer}"


@dataclass(frozen=True)
class LogitLens:
    stages: list[str]  # labels, e.g. "resid_pre 1"; the last, "resid_post {n_layers-1}", is the model
    hooks: list[str]  # the hook name of each stage
    loss: Tensor  # [stage] mean cross-entropy over the scored positions
    accuracy: Tensor  # [stage] fraction of scored positions whose arg-max is the target
    position_accuracy: Tensor  # [stage, pos] NaN where no row is scored
    position_logprob: Tensor  # [stage, pos] mean log-probability of the target; NaN where unscored

    def __getitem__(self, stage: str) -> dict[str, float]:
        """Loss and accuracy at one stage, by label or hook name."""
        names = self.stages if stage in self.stages else self.hooks
        if stage not in names:
            raise UnknownNameError(stage, self.stages + self.hooks, what="logit lens stage")
        i = names.index(stage)
        return {"loss": float(self.loss[i]), "accuracy": float(self.accuracy[i])}


@torch.no_grad()
def logit_lens(model: Transformer, batch: Batch) -> LogitLens:
    """Decode every residual stage with ln_final and the unembedding; score it on ``batch``."""
    mask = batch.scored.to(model.device)  # [batch, pos]
    if not mask.any():
        raise ValueError("the batch has no scored position (every target is IGNORE)")
    hooks = _stages(model)
    _, cache = model.run_with_cache(batch.tokens, names=hooks)
    count = mask.sum(0)  # [pos]
    per_pos = torch.where(count > 0, 1.0 / count.clamp(min=1), float("nan"))  # [pos]
    raw_targets = batch.targets.to(model.device)  # [batch, pos]
    targets = raw_targets.clamp(min=0)
    loss, acc, pos_acc, pos_logprob = [], [], [], []
    for hook in hooks:
        logits = model.unembed(model.ln_final(cache[hook]))  # [batch, pos, d_vocab_out]
        logprobs = logits.log_softmax(-1)
        target_logprob = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [batch, pos]
        correct = (logits.argmax(-1) == targets).float()  # [batch, pos]
        loss.append(F.cross_entropy(logits[mask], raw_targets[mask]))
        acc.append(correct[mask].mean())
        pos_acc.append((correct * mask).sum(0) * per_pos)  # [pos]
        pos_logprob.append((target_logprob * mask).sum(0) * per_pos)
    return LogitLens([_label(h) for h in hooks], hooks, torch.stack(loss), torch.stack(acc),
                     torch.stack(pos_acc), torch.stack(pos_logprob))


@dataclass(frozen=True)
class DirectLogitAttribution:
    components: list[str]  # embed, pos_embed, L{l}H{h} ..., MLP{l} ..., bias
    per_position: Tensor  # [component, pos] mean over the rows scored at that position; NaN where none
    total: Tensor  # [component] mean over every scored (row, position)
    offset: float  # b_U and ln_final's b on the direction: total.sum() + offset == metric
    metric: float  # the model's own mean logit difference (pair) or target logit (batch)
    per_row: Tensor  # [component, batch] mean over each row's scored positions; NaN for a row with none
    metric_per_row: Tensor  # [batch] the model's own metric on each row

    def __getitem__(self, component: str) -> float:
        """One component's direct attribution, e.g. ``dla["L1H1"]``."""
        if component not in self.components:
            raise UnknownNameError(component, self.components, what="attributed component")
        return float(self.total[self.components.index(component)])

    def by_layer(self) -> dict[str, float]:
        """Heads summed per layer ("L0", "L1", ...); other components as they are."""
        out: dict[str, float] = {}
        for name, value in zip(self.components, self.total.tolist()):
            key = name.split("H")[0] if name != "bias" and comp.parse(name)[0] == "head" else name
            out[key] = out.get(key, 0.0) + value
        return out

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` components with the largest |attribution|, as (id, signed attribution)."""
        order = self.total.abs().argsort(descending=True)[:k]
        return [(self.components[int(i)], float(self.total[i])) for i in order]


@torch.no_grad()
def direct_logit_attribution(model: Transformer, data: CounterfactualPair | Batch) -> DirectLogitAttribution:
    """Split the clean run's logit difference (pair) or target logit (batch) into components."""
    if isinstance(data, CounterfactualPair):
        batch = data.clean
        answer, counter = data.clean.targets, data.corrupted.targets  # [batch, pos]
        mask = (answer != IGNORE) & (counter != IGNORE) & (answer != counter)
    elif isinstance(data, Batch):
        batch, answer, counter = data, data.targets, None
        mask = data.scored
    else:
        raise TypeError(f"direct_logit_attribution takes a CounterfactualPair or a Batch, got {type(data).__name__}")
    if not mask.any():
        raise ValueError("no position is scored (for a pair: none where the two answers differ)")
    answer, mask = answer.to(model.device), mask.to(model.device)
    counter = None if counter is None else counter.to(model.device)
    cfg = model.cfg
    W_U, b_U = model.unembed.W_U.detach(), model.unembed.b_U.detach()  # [d_model, d_vocab_out]
    direction = W_U.T[answer.clamp(min=0)]  # [batch, pos, d_model]
    offset = b_U[answer.clamp(min=0)]  # [batch, pos]
    if counter is not None:
        direction = direction - W_U.T[counter.clamp(min=0)]
        offset = offset - b_U[counter.clamp(min=0)]

    names = ["hook_embed", "hook_pos_embed"]
    names += [f"blocks.{layer}.attn.hook_result" for layer in range(cfg.n_layers)]
    names += [] if cfg.attn_only else [f"blocks.{layer}.hook_mlp_out" for layer in range(cfg.n_layers)]
    ln = model.ln_final if isinstance(model.ln_final, LayerNorm) else None
    names += ["ln_final.hook_scale"] if ln is not None else []
    logits, cache = model.run_with_cache(batch.tokens, names=names)

    terms, labels = [cache["hook_embed"], cache["hook_pos_embed"]], ["embed", "pos_embed"]  # [batch, pos, d_model]
    bias = sum(block.attn.b_O.detach() for block in model.blocks)  # [d_model]
    for layer in range(cfg.n_layers):
        result = cache[f"blocks.{layer}.attn.hook_result"]  # [batch, pos, head, d_model]
        terms += list(result.unbind(2))
        labels += [comp.head_id(layer, h) for h in range(cfg.n_heads)]
    for layer in range(cfg.n_layers if not cfg.attn_only else 0):
        b_out = model.blocks[layer].mlp.b_out.detach()
        terms.append(cache[f"blocks.{layer}.hook_mlp_out"] - b_out)  # the bias goes to "bias"
        labels.append(f"MLP{layer}")
        bias = bias + b_out
    terms.append(bias.expand_as(terms[0]))
    labels.append("bias")
    stack = torch.stack(terms)  # [component, batch, pos, d_model]
    if ln is not None:
        # LayerNorm is linear once its scale is fixed: centre each term, divide by the run's scale.
        stack = (stack - stack.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"] * ln.w.detach()
        offset = offset + einsum(ln.b.detach(), direction, "m, b p m -> b p")
    attribution = einsum(stack, direction, "c b p m, b p m -> c b p")  # [component, batch, pos]

    mask_f = mask.float()
    count = mask_f.sum(0)  # [pos]
    per_position = (attribution * mask_f).sum(1) / count  # [component, pos], NaN where count == 0
    per_position = torch.where(count > 0, per_position, float("nan"))
    total = (attribution * mask_f).sum((1, 2)) / mask_f.sum()  # [component]
    offset_mean = float((offset * mask_f).sum() / mask_f.sum())
    chosen = logits.gather(-1, answer.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [batch, pos]
    if counter is not None:
        chosen = chosen - logits.gather(-1, counter.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    metric = float((chosen * mask_f).sum() / mask_f.sum())
    per_row = (attribution * mask_f).sum(2) / mask_f.sum(1)  # [component, batch]
    metric_per_row = (chosen * mask_f).sum(1) / mask_f.sum(1)  # [batch]
    return DirectLogitAttribution(labels, per_position, total, offset_mean, metric, per_row, metric_per_row)
