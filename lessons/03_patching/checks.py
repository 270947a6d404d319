"""Checkers for lesson 03, activation and path patching, against the naive loop and the truth."""

from __future__ import annotations

from toylab import methods
from toylab.lessons.checking import call, first_difference, head_set, number, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.methods.patching import naive_activation_patching, naive_path_patching


@exercise("patching.patch_resid_pre", "One activation patch", "implement", "medium", 15,
          hint="run pair.corrupted.tokens with a hook on blocks.{layer}.hook_resid_pre that copies the "
               "clean run's value at [:, pos] into the activation; score with logit_diff(logits, pair), "
               "normalised: (patched - corrupted) / (clean - corrupted)")
def _patch_resid_pre(fn) -> str:
    zm = zoo_model("induction-tiny")
    pair = zm.task.counterfactual(32, seed=8)
    want = naive_activation_patching(zm.model, pair, "resid_pre").scores  # [layer, pos]
    n = want.shape[1]
    for layer, pos in ((0, n - 3), (1, n - 1), (0, 2), (1, n // 2)):
        got = number(call(fn, zm.model, pair, layer, pos), f"layer {layer}, pos {pos}")
        if abs(got - float(want[layer, pos])) > 1e-4:
            hint = None
            if abs(got - (1 - float(want[layer, pos]))) < 1e-4:
                hint = "that is 1 minus the answer: patch clean into the corrupted run, not the reverse"
            raise Wrong(f"layer {layer}, pos {pos}: got {got:.4f}, the naive loop gives {float(want[layer, pos]):.4f}",
                        hint)
    return "your patch matches toylab's naive patching loop"


@exercise("patching.important_heads", "Which heads carry the answer?", "answer", "easy", 10,
          hint="methods.activation_patching(model, pair, 'head') gives one score per head; keep the heads "
               "that restore at least a tenth of the logit difference")
def _important_heads(answer) -> str:
    heads = head_set(answer, "your answer")
    zm = zoo_model("induction-siit", 0)
    result = methods.activation_patching(zm.model, zm.task.counterfactual(128, seed=9), "head")
    truth = set(zm.truth.heads)
    if difference := first_difference(heads, truth):
        head, extra = difference
        if extra:
            raise Wrong(f"{head} restores only {result[head]:.3f} of the logit difference when patched, and "
                        "the truth says it is inert")
        raise Wrong(f"you left out {head}, which restores {result[head]:.2f} when patched")
    return f"{sorted(heads)}: exactly the heads of the truth ({zm.truth.provenance})"


@exercise("patching.path_patch_k", "One path patch", "implement", "hard", 20,
          hint="add the sender's clean-minus-corrupted output (hook_result[:, :, head]) to the receiver's own "
               "key input, blocks.{l}.hook_k_input[:, :, head], in the corrupted run; nothing else changes")
def _path_patch_k(fn) -> str:
    for name, seed in (("induction-constructed", None), ("induction-2l", None)):
        zm = zoo_model(name, seed)
        pair = zm.task.counterfactual(32, seed=10)
        for sender, receiver in (("L0H1", "L1H1"), ("L0H0", "L1H1")):
            want = naive_path_patching(zm.model, pair, receiver, "k", senders=[sender])[sender]
            got = number(call(fn, zm.model, pair, sender, receiver), f"{name} {sender} -> {receiver}")
            if abs(got - want) > 1e-4:
                raise Wrong(f"{name} {sender} -> {receiver} (k): got {got:.4f}, the naive reference gives {want:.4f}",
                            "patching the sender's whole output (activation patching) also changes what "
                            "the receiver's query and value read: add the delta to the key input only")
    return "your path patch matches toylab's naive path patching"


@exercise("patching.senders", "Who writes the keys, who the values?", "answer", "medium", 15,
          hint="path-patch from every layer-0 head into the keys of all layer-1 heads at once "
               "(receivers=['L1H0', 'L1H1', 'L1H2', 'L1H3']), then into their values; keep senders above 0.05")
def _senders(answer) -> str:
    if not isinstance(answer, dict) or set(answer) != {"k", "v"}:
        raise Wrong(f"answer with a dict {{'k': set of heads, 'v': set of heads}}, got {answer!r}")
    zm = zoo_model("induction-2l")
    for kind in ("k", "v"):
        heads = head_set(answer[kind], f"your {kind!r} senders")
        truth = {e.sender for e in zm.truth.edges if e.kind == kind and e.sender.startswith("L0")}
        if difference := first_difference(heads, truth):
            head, extra = difference
            verb = "does not send" if extra else "also sends"
            raise Wrong(f"{head} {verb} to the induction heads' {kind} input according to the certified truth")
    return "both sets match the certified circuit: in a trained model the work is shared between heads"
