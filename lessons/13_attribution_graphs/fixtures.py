"""Lesson 13's fixtures, shared by the lesson, its checkers and the lab's "13 Attribution graphs" page.

How each transcoder is configured and trained, the lesson's prompt, and the two readings of a graph the truth does
not give by itself: each node's cosine with the true feature it maps onto, and each feature's top activating
inputs. What the true feature circuit of a prompt is, and which graph node maps onto which of its features, is
never written here: it is ``toylab.validate.feature_graphs`` on the model's truth.
"""

from collections.abc import Sequence
from typing import Any

import torch

from toylab import sae
from toylab.lessons import fast
from toylab.methods import attribution_graph

MODEL = "conjunctions"  # 1 layer, an MLP of 8 neurons computing 24 conjunctions of 16 features; a feature-level truth
MODELS = ("conjunctions", "factual-recall")  # the lab's page (a model whose truth declares no features is shown bare)
KINDS = {"per-layer": {}, "skip": {"skip": True}, "cross-layer": {"cross_layer": True}}
ARCHITECTURES = {"relu": {"l1_coefficient": 1.0}, "topk": {"k": 4}, "jumprelu": {"l0_coefficient": 1.0}}
D_LATENT = {"conjunctions": 32, "factual-recall": 64}  # features per layer
N_TRAIN = 2048  # prompts whose MLP inputs and outputs, at every position, train a transcoder (seed TRAIN_SEED)
TRAIN_SEED = 1
STEPS = 600  # Adam steps (batch 256, lr 3e-3): about a second on one CPU thread for conjunctions
STEPS_FAST = 300  # the lesson in fast mode, as the tests run it (FVU about 0.003 instead of 0.002)
NODE_THRESHOLD, EDGE_THRESHOLD = 0.8, 0.98  # circuit-tracer's pruning defaults
PAIR = 0  # the lesson's prompt: the features of marked pair PAIR (class PAIR + 1), in the order task.pairs lists them
N_COMPARE = 8  # exercise 13.6: the graphs of the first N_COMPARE marked pairs
TOP_K = 5  # top activating inputs shown per feature


def steps() -> int:
    """Training steps of the lesson's transcoders (fewer in fast mode; the lab is never in fast mode)."""
    return STEPS_FAST if fast() else STEPS


def transcoder_config(model: Any, name: str = MODEL, kind: str = "per-layer",
                      architecture: str = "relu", seed: int = 0) -> sae.TranscoderConfig:
    """The transcoder of every MLP of ``model`` (the zoo model ``name``) of a kind and an architecture."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {list(ARCHITECTURES)}, got {architecture!r}")
    cfg = model.cfg
    return sae.TranscoderConfig(n_layers=cfg.n_layers, d_in=cfg.d_model, d_out=cfg.d_model,
                                d_latent=D_LATENT.get(name, 64), architecture=architecture,
                                seed=seed, **ARCHITECTURES[architecture], **KINDS[kind])


def training_data(model: Any, task: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Every MLP's inputs and outputs at every position of N_TRAIN prompts: ([row, layer, d_model], the same)."""
    return sae.mlp_activations(model, task.sample(N_TRAIN, TRAIN_SEED).tokens)


def train(model: Any, task: Any, name: str = MODEL, kind: str = "per-layer", architecture: str = "relu",
          n_steps: int | None = None) -> sae.Transcoder:
    """A transcoder of ``transcoder_config``, trained by ``sae.train_transcoder`` on ``training_data``
    (``n_steps``, by default ``steps()``); deterministic on one machine."""
    transcoder = sae.Transcoder(transcoder_config(model, name, kind, architecture))
    x, y = training_data(model, task)
    sae.train_transcoder(transcoder, x, y, steps=steps() if n_steps is None else n_steps)
    return transcoder.requires_grad_(False)


def prompt(task: Any, pair: int = PAIR, swap: bool = False) -> torch.Tensor:
    """``[BOS, a, b, =]`` for marked pair ``pair`` of conjunctions (b first with ``swap``): tokens [pos]."""
    a, b = task.pairs[pair].tolist()
    if swap:
        a, b = b, a
    return task.make_batch(torch.tensor([a]), torch.tensor([b])).tokens[0]


def answer(task: Any, tokens: torch.Tensor) -> int:
    """The class conjunctions answers on one prompt ``tokens`` [pos]: the marked pair it holds + 1, or 0 ("none")."""
    return int(task.variables(tokens[None])["conjunction"][0])


def graph(model: Any, transcoder: sae.Transcoder, tokens: torch.Tensor) -> Any:
    """``methods.attribution_graph`` of one prompt, scored at its last position."""
    return attribution_graph(model, transcoder, tokens, scored_pos=len(tokens) - 1)


def compare_prompts(task: Any, n: int = N_COMPARE) -> list[torch.Tensor]:
    """Exercise 13.6's prompts: marked pairs 0 .. n - 1, each in the order task.pairs lists it."""
    return [prompt(task, k) for k in range(n)]


def node_cosines(graph: Any, truth: Any, mapped: Sequence[str | None]) -> dict[int, float]:
    """For each graph feature that maps onto a true feature (``mapped``, from ``map_nodes``), the |cosine| of what it
    writes with that feature's direction, at the feature's hook (the largest over the hooks it writes to)."""
    vectors = {f.name: (f.hook, torch.tensor(f.vector)) for f in truth.features}
    out = {}
    for i, name in enumerate(mapped):
        if name is None or graph.nodes[i].kind != "feature" or name not in vectors:
            continue
        hook, vector = vectors[name]
        rows = [row for h, row in graph.writes.get(i, {}).items() if h == hook]
        if rows:
            out[i] = max(float((row @ vector.to(row)).abs() / (row.norm() * vector.norm()).clamp(min=1e-12))
                         for row in rows)
    return out


def prompt_text(task: Any, tokens: torch.Tensor) -> str:
    """'f3 f6 =': a prompt's tokens after BOS, as strings."""
    names = task.to_str_tokens(tokens)
    return " ".join(names[1:] if names and names[0] == "BOS" else names)


@torch.no_grad()
def top_inputs(model: Any, transcoder: sae.Transcoder, task: Any, features: Sequence[tuple[int, int, int]],
               k: int = TOP_K) -> dict[tuple[int, int, int], list[tuple[str, float]]]:
    """For each feature (layer, pos, index), the ``k`` prompts of the task's test set on which it is most active at
    ``pos``, with that activation (prompts where it is off left out)."""
    tokens = task.eval_batches()["test"].tokens
    x, _ = sae.mlp_activations(model, tokens)
    z = transcoder.encode(x.to(transcoder.W_enc.device)).reshape(len(tokens), tokens.shape[1], transcoder.cfg.n_layers,
                                                               transcoder.cfg.d_latent)  # [prompt, pos, layer, latent]
    out = {}
    for layer, pos, index in features:
        acts = z[:, pos, layer, index]
        order = acts.argsort(descending=True)[:k]
        out[(layer, pos, index)] = [(prompt_text(task, tokens[i]), float(acts[i])) for i in order.tolist()
                                    if acts[i] > 0]
    return out
