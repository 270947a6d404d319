"""Lesson 17's fixtures, shared by the lesson, its checkers and the lab's "17 Build the transformer" page.

The learner's modules are compared with toylab's own (``toylab.models``) on the same weights. Two tools make that
possible for any ``nn.Module`` a learner writes, whatever it subclasses:

- ``load_weights(module, state_dict)``: a state dict with TransformerLens's keys loaded into the learner's module
  tree, with an error that names every missing, unexpected or misshapen parameter;
- ``record(module)``: every submodule whose name starts with ``hook_`` (a ``HookPoint``), recorded by its path as
  it fires (torch forward hooks, so a plain ``nn.Module`` tree works too).

No zoo model has LayerNorm (every recipe sets ``normalization_type=None``), so the LayerNorm path is checked on
``LN_CONFIG``: toylab's modules with seeded random weights, gains and biases included (``random_model``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from toylab.models import Transformer, TransformerConfig

ATTN_ONLY = "induction-tiny"  # 2 layers x 2 heads, d_model 32, attention only
WITH_MLP = "factual-recall"  # 2 layers x 2 heads, d_model 32, ReLU MLPs of 64
IGNORE = float("-inf")  # what TransformerLens (and toylab) writes into hook_attn_scores where the mask hides a key

# A toylab config with what no zoo model has: pre-LayerNorm and a GELU MLP (GPT-2's tanh approximation). Its
# d_model is the zoo models', so their residual streams can go through its LayerNorm.
LN_CONFIG = TransformerConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, d_vocab=25, n_ctx=16, d_mlp=64,
                              act_fn="gelu_new", normalization_type="LN")
GELU_CONFIG = dataclasses.replace(LN_CONFIG, act_fn="gelu")  # the exact GELU

# The hook points of each part, in the order they fire; toylab's names (TransformerLens's, every one always firing).
ATTENTION_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z", "hook_result")
MLP_HOOKS = ("hook_pre", "hook_post")
BLOCK_HOOKS = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
EMBED_HOOKS = ("hook_embed", "hook_pos_embed")

# What each hook of one forward pass records: its shape and how it is computed from the hooks before it. The lesson
# prints it, the page shows it beside each tensor. ``l`` is the block.
STEPS = (
    ("hook_embed", "[batch, pos, d_model]", "W_E[tokens]"),
    ("hook_pos_embed", "[batch, pos, d_model]", "W_pos[0 .. pos-1], the same for every sequence"),
    ("blocks.l.hook_resid_pre", "[batch, pos, d_model]", "embed + pos_embed (block 0), else the last resid_post"),
    ("blocks.l.attn.hook_q", "[batch, pos, head, d_head]", "ln1(resid_pre) @ W_Q[head] + b_Q[head]"),
    ("blocks.l.attn.hook_k", "[batch, pos, head, d_head]", "ln1(resid_pre) @ W_K[head] + b_K[head]"),
    ("blocks.l.attn.hook_v", "[batch, pos, head, d_head]", "ln1(resid_pre) @ W_V[head] + b_V[head]"),
    ("blocks.l.attn.hook_attn_scores", "[batch, head, query_pos, key_pos]",
     "q · k / sqrt(d_head); IGNORE (-inf) where key_pos > query_pos"),
    ("blocks.l.attn.hook_pattern", "[batch, head, query_pos, key_pos]", "softmax of the scores over key_pos"),
    ("blocks.l.attn.hook_z", "[batch, pos, head, d_head]", "sum over key_pos of pattern x v"),
    ("blocks.l.attn.hook_result", "[batch, pos, head, d_model]", "z[head] @ W_O[head]: each head's output"),
    ("blocks.l.hook_attn_out", "[batch, pos, d_model]", "sum over heads of result, + b_O"),
    ("blocks.l.hook_resid_mid", "[batch, pos, d_model]", "resid_pre + attn_out"),
    ("blocks.l.mlp.hook_pre", "[batch, pos, d_mlp]", "ln2(resid_mid) @ W_in + b_in"),
    ("blocks.l.mlp.hook_post", "[batch, pos, d_mlp]", "act_fn(pre): relu, gelu or gelu_new"),
    ("blocks.l.hook_mlp_out", "[batch, pos, d_model]", "post @ W_out + b_out"),
    ("blocks.l.hook_resid_post", "[batch, pos, d_model]", "resid_mid + mlp_out (attention only: resid_mid)"),
    ("logits", "[batch, pos, d_vocab_out]", "ln_final(last resid_post) @ W_U + b_U"),
)


def step_of(hook: str) -> tuple[str, str] | None:
    """(shape, formula) of a hook name of any block ("blocks.1.attn.hook_q"), from ``STEPS``; None if not there."""
    parts = hook.split(".")
    generic = ".".join(["blocks", "l", *parts[2:]]) if parts[0] == "blocks" and len(parts) > 2 else hook
    for name, shape, formula in STEPS:
        if name == generic:
            return shape, formula
    return None


def random_model(cfg: TransformerConfig = LN_CONFIG, seed: int = 0) -> Transformer:
    """A toylab model of ``cfg`` whose every parameter is random: weights from the model's own seeded init, then
    biases, LayerNorm gains and biases drawn too (a fresh model has them at 0 and 1, which would hide a learner who
    forgot them)."""
    model = Transformer(cfg, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "w":  # LayerNorm gains around 1
                param.copy_(1.0 + 0.3 * torch.randn(param.shape, generator=generator))
            elif not leaf.startswith("W_"):  # biases
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))
    return model.eval()


def load_weights(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load ``state_dict`` (TransformerLens's keys: "W_Q", "blocks.0.attn.W_Q", ...) into ``module`` and return it.

    Buffers the module derives itself (a mask, IGNORE) may be missing from the state dict; a parameter may not.
    Raises ValueError naming every parameter the module lacks, has in excess or has in another shape.
    """
    own = dict(module.named_parameters())

    def some(names: list[str]) -> str:
        shown = ", ".join(map(repr, names[:7]))
        return f"[{shown}]" if len(names) <= 7 else f"[{shown}, ... ({len(names)} in all)]"

    problems = []
    unexpected = sorted(set(state_dict) - set(module.state_dict()))
    missing = sorted(set(own) - set(state_dict))
    if missing:
        problems.append(f"your module has parameters {some(missing)} that the weights do not (TransformerLens's names "
                        f"are {some(sorted(state_dict))})")
    if unexpected:
        problems.append(f"the weights have {some(unexpected)}, which your module lacks (its parameters: "
                        f"{some(sorted(own))})")
    shapes = [f"{name}: yours {tuple(own[name].shape)}, the weights' {tuple(value.shape)}"
              for name, value in state_dict.items() if name in own and own[name].shape != value.shape]
    if shapes:
        problems.append("shapes differ: " + "; ".join(shapes))
    if problems:
        raise ValueError("; ".join(problems))
    module.load_state_dict(dict(state_dict), strict=False)
    return module


class record:  # lower case: used as a function, ``with record(module) as seen:``
    """Record what every hook point of ``module`` (a submodule named ``hook_*``) outputs, by its path in the module
    ("hook_q" for an attention module, "blocks.0.attn.hook_q" for a whole model), detached, while the block runs::

        with record(module) as seen:
            module(x)
        seen["hook_q"]
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.seen: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []

    def __enter__(self) -> dict[str, torch.Tensor]:
        for name, sub in self.module.named_modules():
            if name.rsplit(".", 1)[-1].startswith("hook_"):
                self.handles.append(sub.register_forward_hook(self._keeper(name)))
        return self.seen

    def _keeper(self, name: str) -> Any:
        def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                self.seen[name] = output.detach()
        return keep

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def prompts(zm: Any, n: int | None = None) -> torch.Tensor:
    """The first ``n`` prompts of the task's test set (all of them when None): tokens [batch, pos]."""
    tokens = zm.task.eval_batches()["test"].tokens
    return tokens if n is None else tokens[:n]
