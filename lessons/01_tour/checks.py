"""Checkers for lesson 01, the tour of the lab: the residual stream, heads, hooks, the truth."""

from __future__ import annotations

import torch

from toylab import methods
from toylab.lessons.checking import call, expect_close, head_set, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.tasks import loss
from toylab.components import head_id

_MODELS = ("induction-tiny", "brackets-siit")  # attention-only and with an MLP


@exercise("tour.resid_after_layer0", "The residual stream is a sum", "implement", "easy", 5,
          hint="resid_post of layer 0 = hook_embed + hook_pos_embed + layer 0's hook_attn_out "
               "(+ its hook_mlp_out when the model has an MLP)")
def _resid_after_layer0(fn) -> str:
    for name in _MODELS:
        zm = zoo_model(name)
        _, cache = zm.model.run_with_cache(zm.task.sample(4, seed=1).tokens)
        expect_close(call(fn, cache), cache["blocks.0.hook_resid_post"], f"on {name}")
    return "the residual stream after layer 0 is exactly the sum of what was written into it"


@exercise("tour.head_output", "One head's output from its z", "implement", "medium", 10,
          hint="result[b, p, :] = z[b, p, head, :] @ W_O[head]; W_O is model.blocks[layer].attn.W_O "
               "with shape [head, d_head, d_model]")
def _head_output(fn) -> str:
    for name in _MODELS:
        zm = zoo_model(name)
        _, cache = zm.model.run_with_cache(zm.task.sample(4, seed=2).tokens)
        for layer, head in ((0, 1), (1, 0)):
            want = cache[f"blocks.{layer}.attn.hook_result"][:, :, head]  # [batch, pos, d_model]
            expect_close(call(fn, zm.model, cache, layer, head), want, f"{name} L{layer}H{head}",
                         hint="the bias b_O is shared by all heads: it is not part of one head's output")
    return "a head's output is its z times its slice of W_O, which is what hook_result holds"


def _zero_ablated_losses(name: str, seed: int) -> dict[str, float]:
    """Loss with each head zero-ablated, measured by intervention (the check's reference)."""
    zm = zoo_model(name, seed)
    batch = zm.task.sample(256, seed=3)
    cfg = zm.model.cfg
    losses = {}
    for head in (head_id(layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)):
        with torch.no_grad(), methods.ablate(zm.model, head, "zero"):
            losses[head] = float(loss(zm.model(batch.tokens), batch))
    return losses


@exercise("tour.most_important_head", "Which head matters most?", "answer", "easy", 10,
          hint="zero one head's slice of blocks.{l}.attn.hook_z with model.hooks(...), measure "
               "toylab.tasks.loss for each head, and answer with the head whose loss rises most")
def _most_important_head(answer) -> str:
    if not isinstance(answer, str):
        raise Wrong(f"answer with one head id such as 'L1H1', got {answer!r}")
    head = answer
    head_set(head, "your answer")
    losses = _zero_ablated_losses("induction-siit", 0)
    best = max(losses, key=losses.get)
    truth = zoo_model("induction-siit", 0).truth
    if head not in losses:
        raise Wrong(f"induction-siit has heads {sorted(losses)}; {head!r} is not one of them")
    if head != best:
        role = truth.nodes.get(head)
        note = f"the truth gives it the role {role!r}" if role else "the truth says it is not in the circuit"
        raise Wrong(f"ablating {head} raises the loss to {losses[head]:.3f}, but another head raises it "
                    f"more ({losses[best]:.3f}); {note}")
    if best not in truth.nodes:  # the check itself must agree with the certified truth
        raise Wrong(f"{best} is not a circuit node of the truth: please report this as a bug")
    return (f"{head} ({truth.nodes[head]}) is the head whose ablation hurts most: loss "
            f"{losses[head]:.3f}; it is in the {truth.provenance} circuit of the truth")
