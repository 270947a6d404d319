"""Lesson 16's fixtures, shared by the lesson, its checkers and the lab's "16 Attribution patching" page.

Which heads and edges form each circuit is never written here: it is read from the model's truth.
"""

from typing import Any

import torch

from toylab import components as comp
from toylab import methods
from toylab.components import Edge
from toylab.tasks import logit_diff

MODEL = "induction-siit"  # sections 1 to 3: attention only, no LayerNorm, a known induction circuit
MODELS = ("induction-siit", "factual-recall", "ioi-siit")  # where node attribution is compared with patching
TRAP = "trap-saturation"  # sections 4 to 6: the same comparison on a model built to break it (lesson 9)
SEED = 0  # the zoo seed the lesson works on (the checkers test implementations on other pairs and seeds)
PAIR_SEED = 0  # the lesson's counterfactual pairs: task.counterfactual(N_PAIRS, seed=PAIR_SEED)
N_PAIRS = 32
UNDERSTATED = 0.5  # exercise 16.4: EAP understates an edge that it scores below this share of its real effect
IG_TOLERANCE = 0.05  # exercise 16.5: EAP-IG recovers an edge when it scores it within this of noising it
MAX_STEPS = 64  # exercise 16.5: the most EAP-IG steps an answer may take (each is a forward and a backward)
IG_SWEEP = (1, 2, 3, 5, 10, 16)  # the step counts the lesson and the page draw EAP-IG at: odd, even, enough
FIGURES = ("edge_auroc[qkv]", "faithfulness")  # exercise 16.6: the harness's figures the question is about
BASELINES = ("eap", "edge-noising")  # exercise 16.6: attribution patching, and the patching it estimates
LEVELS = ("nodes", "edges")  # what estimates and real_patch score: every head and MLP, or every edge
SCORING_PAIRS = 32  # exercise 16.6: the pairs the harness scores on (validate.score's n_pairs; its default is 128)


def pair(zm: Any, n: int = N_PAIRS, seed: int = PAIR_SEED) -> Any:
    """The lesson's counterfactual pairs of the zoo model ``zm``."""
    return zm.task.counterfactual(n, seed=seed)


def head_ids(cfg: Any) -> list[str]:
    """Every head, in [layer, head] order: L0H0, L0H1, ..."""
    return [comp.head_id(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]


def noising_shares(model: Any, pair: Any) -> torch.Tensor:
    """Real activation patching of each head's output (hook_z), clean run, corrupted head: the share of the
    clean-minus-corrupted effect it removes, (m_clean - m_patched) / (m_clean - m_corr), [layer, head]."""
    return 1 - methods.activation_patching(model, pair, "head", direction="noise").scores


def estimates(model: Any, pair: Any, level: str, steps: int = 0) -> dict[Any, float]:
    """Attribution patching of every head and MLP (``level="nodes"``: ``eap(...).nodes()``, the sum of each
    sender's outgoing edges) or of every edge (``"edges"``: ``eap``), by EAP-IG with ``steps`` > 0: the estimated
    share of the effect that patching each removes."""
    _check_level(level)
    result = methods.eap_ig(model, pair, steps=steps) if steps else methods.eap(model, pair)
    if level == "edges":
        return dict(result.scores)
    nodes = result.nodes()
    return {c: nodes[c] for c in comp.nodes(model.cfg) if c in nodes and comp.parse(c)[0] in ("head", "mlp")}


def real_patch(model: Any, pair: Any, level: str) -> dict[Any, float]:
    """Patching for real what ``estimates`` estimates: each head and MLP resample-ablated (its output taken from
    the corrupted run, ``ablation_scores``), or each edge patched alone (``edge_patching``), as the share of the
    effect removed."""
    _check_level(level)
    if level == "edges":
        return dict(methods.edge_patching(model, pair).scores)
    ablation = methods.ablation_scores(model, pair, method="resample")
    scale = estimate_scale(model, pair)
    return {c: float(e) / scale for c, e in zip(ablation.components, ablation.effect.tolist())}


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def estimate_scale(model: Any, pair: Any) -> float:
    """m_clean - m_corr, the whole effect every share is a fraction of."""
    with torch.no_grad():
        return float(logit_diff(model(pair.clean.tokens), pair) - logit_diff(model(pair.corrupted.tokens), pair))


def sender_site(edge: Edge) -> tuple[str, int | None]:
    """Where an edge's sender writes: (hook name, head index or None). A head's output is its slice of
    ``hook_result`` [batch, pos, head, d_model]; the embedding's ``hook_embed`` and an MLP's ``hook_mlp_out``
    are [batch, pos, d_model]."""
    kind, layer, head = comp.parse(edge.sender)
    if kind == "embed":
        return "hook_embed", None
    if kind == "head":
        return f"blocks.{layer}.attn.hook_result", head
    if kind == "mlp":
        return f"blocks.{layer}.hook_mlp_out", None
    raise ValueError(f"{edge.sender!r} sends no edge the lesson scores")


def receiver_site(cfg: Any, edge: Edge) -> tuple[str, int | None]:
    """Where an edge's receiver reads: (hook name, head index or None). A head reads its own copy of the stream,
    ``blocks.{l}.hook_{q,k,v}_input`` [batch, pos, head, d_model]; an MLP ``blocks.{l}.hook_mlp_in`` and the
    logits the last block's ``hook_resid_post``, both [batch, pos, d_model]."""
    kind, layer, head = comp.parse(edge.receiver)
    if kind == "head":
        return f"blocks.{layer}.hook_{edge.kind}_input", head
    if kind == "mlp":
        return f"blocks.{layer}.hook_mlp_in", None
    if kind == "logits":
        return f"blocks.{cfg.n_layers - 1}.hook_resid_post", None
    raise ValueError(f"{edge.receiver!r} receives no edge the lesson scores")


def understated(estimate: dict, real: dict, edges: Any, ratio: float = UNDERSTATED) -> set:
    """The edges (or nodes) among ``edges`` whose estimate is below ``ratio`` times what patching them removes."""
    return {e for e in edges if real[e] > 0 and estimate[e] < ratio * real[e]}


def correlation(estimate: dict, real: dict) -> float:
    """Pearson's correlation of two scorings over the keys of ``real``."""
    keys = list(real)
    values = torch.tensor([[float(estimate[k]) for k in keys], [float(real[k]) for k in keys]], dtype=torch.float64)
    return float(torch.corrcoef(values)[0, 1])


def recovered(scores: Any, real: dict, edges: Any, tolerance: float = IG_TOLERANCE) -> bool:
    """Whether ``scores`` (an EdgeAttribution or a dict) are within ``tolerance`` of ``real`` on every edge."""
    return all(abs(scores[e] - real[e]) <= tolerance for e in edges)


def shortfalls(reports: dict, model: str, figures: tuple[str, ...] = FIGURES) -> dict[str, float]:
    """Per figure, how far the attribution estimate (``reports["eap"]``) falls below the patching it estimates
    (``reports["edge-noising"]``) on ``model``: the harness's figure, mean over the seeds scored."""
    eap, real = (reports[name].summary()[model] for name in BASELINES)
    return {f: real[f][0] - eap[f][0] for f in figures}
