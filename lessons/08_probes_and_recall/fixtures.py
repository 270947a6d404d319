"""Lesson 8's fixtures, shared by the lesson, its checkers and the lab's "8 Probes and factual recall" page."""

from toylab import methods

MODEL = "factual-recall"

# Where the probes are trained: after each component of the two-layer model, at every position.
PROBE_HOOKS = ("hook_embed", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post", "blocks.1.hook_resid_mid",
               "blocks.1.hook_resid_post")
PROBE_CONFIG = methods.ProbeConfig(steps=100, lr=0.1)


def candidate_sites() -> list[methods.Site]:
    """The sites of exercise 8.4: the attribute can be decoded at every one of them."""
    return [methods.Site("blocks.0.hook_mlp_out", 2), methods.Site("blocks.0.hook_resid_post", 2),
            methods.Site("blocks.1.hook_resid_mid", 2), methods.Site("blocks.1.hook_resid_post", 2),
            methods.Site("blocks.1.hook_resid_post", 3)]
