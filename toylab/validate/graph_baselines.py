"""Built-in feature-graph methods: what the feature-graph track of the leaderboard scores.

Each is a protocol method ``name(problem, *, options) -> FeatureGraph``: it trains its
dictionary on the model's own activations, from prompts of the problem's sampler (a data
stream the harness never scores on), and returns a builder of one prompt's graph. The
harness scores the graphs against the truth's feature circuits on prompts the method never
saw (``toylab.validate.feature_graphs``).

transcoder      per-layer ReLU transcoders, ``methods.attribution_graph`` (Ameisen et al. 2025)
skip            the same with a linear skip path (Paulo et al. 2025)
clt             a cross-layer transcoder: features read at one layer write to every later MLP
sae-atp         SAEs on every MLP's output, edges by attribution patching
                (``methods.sae_attribution_graph``; sparse feature circuits, Marks et al. 2024)
untrained       a transcoder at its random initialisation, exact through its error nodes:
                the floor
truth           a graph of the declared features themselves, wired by the declared edges:
                the ceiling (peeks)

Dictionaries have ``EXPANSION`` x d_model features per layer and train for ``STEPS`` steps
on the activations of ``N_PROMPTS`` prompts: 3-20 s per model and seed on one CPU thread.
"""

from __future__ import annotations

import torch
from torch import Tensor

from toylab.methods.attribution_graph import AttributionGraph, Node, attribution_graph, sae_attribution_graph
from toylab.sae.sae import SAE, SAEConfig, train_sae
from toylab.sae.transcoder import Transcoder, TranscoderConfig, mlp_activations, train_transcoder
from toylab.validate.feature_graphs import true_feature_circuit
from toylab.validate.protocol import FeatureGraph, Method, Problem

EXPANSION = 4
STEPS = 2000
N_PROMPTS = 2048
TRANSCODER_L1 = 1e-2
SAE_L1 = 1e-2


def _activations(problem: Problem, n: int) -> tuple[Tensor, Tensor]:
    if problem.cfg.d_mlp is None:
        raise ValueError(f"{problem.name} has no MLPs: a feature graph replaces MLPs by features")
    return mlp_activations(problem.model, problem.clean(n).tokens)


def _transcoder(problem: Problem, cross_layer: bool, skip: bool, steps: int, n: int, seed: int) -> Transcoder:
    x, y = _activations(problem, n)
    d = problem.cfg.d_model
    tc = Transcoder(TranscoderConfig(n_layers=problem.cfg.n_layers, d_in=d, d_out=d, d_latent=EXPANSION * d,
                                     cross_layer=cross_layer, skip=skip, l1_coefficient=TRANSCODER_L1, seed=seed))
    train_transcoder(tc.to(x.device), x, y, steps=steps, seed=seed)
    return tc.eval().requires_grad_(False)


def _graphs(problem: Problem, transcoder: Transcoder) -> FeatureGraph:
    model = problem.model
    return FeatureGraph(lambda tokens: attribution_graph(model, transcoder, tokens))


def transcoder(problem: Problem, *, steps: int = STEPS, n: int = N_PROMPTS, seed: int = 0) -> FeatureGraph:
    """Per-layer transcoders."""
    return _graphs(problem, _transcoder(problem, False, False, steps, n, seed))


def skip(problem: Problem, *, steps: int = STEPS, n: int = N_PROMPTS, seed: int = 0) -> FeatureGraph:
    """Per-layer skip transcoders."""
    return _graphs(problem, _transcoder(problem, False, True, steps, n, seed))


def clt(problem: Problem, *, steps: int = STEPS, n: int = N_PROMPTS, seed: int = 0) -> FeatureGraph:
    """A cross-layer transcoder."""
    return _graphs(problem, _transcoder(problem, True, False, steps, n, seed))


def untrained(problem: Problem, *, seed: int = 0) -> FeatureGraph:
    """A transcoder at its initialisation: the floor."""
    return _graphs(problem, _transcoder(problem, False, False, 0, 1, seed))


def sae_atp(problem: Problem, *, steps: int = STEPS, n: int = N_PROMPTS, seed: int = 0) -> FeatureGraph:
    """SAEs on every MLP's output; edges by attribution patching."""
    _, y = _activations(problem, n)  # [rows, layer, d_model]
    saes = {}
    for layer in range(problem.cfg.n_layers):
        sae = SAE(SAEConfig(d_in=problem.cfg.d_model, d_sae=EXPANSION * problem.cfg.d_model, architecture="relu",
                            l1_coefficient=SAE_L1, seed=seed + layer)).to(y.device)
        train_sae(sae, y[:, layer], steps=steps, seed=seed + layer)
        saes[layer] = sae.eval().requires_grad_(False)
    model = problem.model
    return FeatureGraph(lambda tokens: sae_attribution_graph(model, saes, tokens))


def truth_graph(problem: Problem) -> FeatureGraph:
    """The declared features on at each prompt, wired by the declared edges (weight 1): what a
    perfect method would draw. Reads the answer key."""
    truth, task = problem.answer_key(), problem.task
    if not truth.features:
        raise ValueError(f"{problem.name} declares no features")

    def build(tokens: Tensor) -> AttributionGraph:
        scored = len(tokens) - 1
        with torch.no_grad():
            probs = problem.model(tokens[None].to(problem.model.device))[0, scored].softmax(-1).cpu()
        answer = int(probs.argmax())
        on, edges = true_feature_circuit(truth, task, tokens, answer)
        names = task.token_names
        nodes: list[Node] = []
        label: list[str | None] = []
        writes: dict[int, dict[str, Tensor]] = {}
        for f in truth.features:
            if f.variable is not None and f.name in on:
                layer = int(f.hook.split(".")[1])
                writes[len(nodes)] = {f.hook: torch.tensor(f.vector, device="cpu")}
                nodes.append(Node("feature", layer, scored if f.pos is None else f.pos, len(nodes), 1.0))
                label.append(f.name)
        for layer in range(problem.cfg.n_layers):
            for pos in range(len(tokens)):
                nodes.append(Node("error", layer, pos, None, 0.0))
                label.append(None)
        for pos, token in enumerate(tokens.tolist()):
            nodes.append(Node("token", None, pos, None, float(token)))
            label.append(names[token])
        nodes.append(Node("logit", None, scored, answer, float(probs[answer])))
        label.append(f"logit:{task.output_names[answer]}")
        A = torch.zeros(len(nodes), len(nodes), device="cpu")  # [target, source]
        for t, target in enumerate(label):
            for s, source in enumerate(label):
                if (source, target) in edges and nodes[s].pos <= nodes[t].pos:
                    A[t, s] = 1.0
        zeros = torch.zeros(len(nodes), device="cpu")  # [node]
        return AttributionGraph(tokens.cpu(), tuple(nodes), A, zeros, zeros.clone(),
                                probs[answer:answer + 1], scored, writes)

    return FeatureGraph(build)


GRAPH_BASELINES: dict[str, Method] = {
    "transcoder": transcoder,
    "skip": skip,
    "clt": clt,
    "sae-atp": sae_atp,
    "untrained": untrained,
    "truth": truth_graph,
}
DESCRIPTIONS = {
    "transcoder": "attribution graph over per-layer ReLU transcoders",
    "skip": "attribution graph over per-layer skip transcoders",
    "clt": "attribution graph over a cross-layer transcoder",
    "sae-atp": "SAE features of each MLP's output, edges by attribution patching",
    "untrained": "a transcoder at initialisation, exact through its errors (floor)",
    "truth": "the declared feature circuit itself (ceiling; reads the answer key)",
}
PEEKS = frozenset({"truth"})

__all__ = ["DESCRIPTIONS", "GRAPH_BASELINES", "PEEKS", "clt", "sae_atp", "skip", "transcoder", "truth_graph",
           "untrained"]
