"""Attribution graphs: one prompt traced through transcoder features (Ameisen et al. 2025).

Axis names used in shape comments:
    node    -- a node of the graph: features, then errors, then tokens, then logits (circuit-tracer's order)
    pos     -- token position of the prompt
    layer   -- MLP layer
    d_model -- residual stream width

The MLPs are replaced by a transcoder (``toylab.sae.transcoder``), made exact on this prompt
by an **error node** per (layer, position): what the transcoder misses. With the attention
patterns (and LayerNorm scales) frozen at their values on the prompt, everything between
the nodes is linear, so each node's input is a sum of direct effects:

    token      the embedding at a position (token + position embedding): a source
    feature    an active transcoder feature (layer, position, index); its input is its
               pre-activation, it writes activation x decoder row(s) into the residual stream
    error      transcoder error at (layer, position): a source
    logit      a top output class at the scored position, its logit minus the mean logit

    A[target, source] = (d target's input / d residual at source's write) . source's write

computed exactly by one backward pass per target (batched), through frozen attention and
skip paths only. A row sums, with the biases, to the target's actual input
(``AttributionGraph.bias`` holds that remainder; the tests check the sum).

Pruning and the graph-level figures follow circuit-tracer's definitions: influence is
computed on |A| with rows normalised to sum to one, as logit_weights @ (A + A^2 + ...);
``prune`` keeps the nodes carrying ``node_threshold`` of the total influence and then the
edges carrying ``edge_threshold``; the **replacement score** is the share of the tokens'
and errors' influence on the logits that comes from tokens, and the **completeness score**
the influence-weighted share of every node's input that does not come from error nodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

from toylab.models import Transformer
from toylab.sae.sae import SAE
from toylab.sae.transcoder import Transcoder

NODE_KINDS = ("feature", "error", "token", "logit")


@dataclass(frozen=True)
class Node:
    kind: str  # one of NODE_KINDS
    layer: int | None  # features and errors: the MLP layer; tokens: None; logits: None
    pos: int
    index: int | None  # features: the latent; logits: the output class; else None
    value: float  # features: activation; logits: probability; tokens: the token id; errors: the error's norm

    def __str__(self) -> str:
        if self.kind == "feature":
            return f"F{self.layer}.{self.index}@{self.pos}"
        if self.kind == "error":
            return f"E{self.layer}@{self.pos}"
        if self.kind == "token":
            return f"T@{self.pos}"
        return f"logit {self.index}@{self.pos}"


@dataclass(frozen=True)
class AttributionGraph:
    tokens: Tensor  # [pos]
    nodes: tuple[Node, ...]
    adjacency: Tensor  # [node (target), node (source)]: direct effects
    target_values: Tensor  # [node]: each node's actual input (features: pre-activation; logits: demeaned logit); 0 for sources
    bias: Tensor  # [node]: the part of the input no node accounts for (biases)
    logit_probabilities: Tensor  # [n_logits]
    scored_pos: int
    # Feature node index -> {hook: the direction it writes there [d_model]}: what the node *is*,
    # so a graph can be read without the dictionary that built it (e.g. matched to true features).
    writes: dict[int, dict[str, Tensor]] = field(default_factory=dict)

    def indices(self, kind: str) -> Tensor:
        return torch.tensor([i for i, n in enumerate(self.nodes) if n.kind == kind], dtype=torch.long,
                            device=self.adjacency.device)

    @property
    def logit_weights(self) -> Tensor:
        """[node]: each logit node's probability, 0 elsewhere (what influence is measured against)."""
        w = torch.zeros(len(self.nodes), dtype=self.adjacency.dtype, device=self.adjacency.device)  # [node]
        w[self.indices("logit")] = self.logit_probabilities.to(w.dtype)
        return w

    def influence(self, adjacency: Tensor | None = None) -> Tensor:
        """Each node's total (direct and indirect) influence on the logits: [node]."""
        if adjacency is None:
            return self._influence
        return influence(adjacency, self.logit_weights)

    @cached_property
    def _influence(self) -> Tensor:  # the whole graph's, used by scores, prune and scoring alike
        return influence(self.adjacency, self.logit_weights)

    def scores(self) -> tuple[float, float]:
        """(replacement score, completeness score) as circuit-tracer defines them; the replacement
        score is n/a (NaN) on a graph where neither tokens nor errors reach the logits."""
        normalised = normalise_rows(self.adjacency)
        node_influence = self._influence
        errors, tokens = self.indices("error"), self.indices("token")
        token_influence, error_influence = node_influence[tokens].sum(), node_influence[errors].sum()
        reaching = token_influence + error_influence
        replacement = float(token_influence / reaching) if reaching > 0 else math.nan
        non_error = 1 - normalised[:, errors].sum(-1)  # [node]
        weight = node_influence + self.logit_weights
        completeness = float((non_error * weight).sum() / weight.sum())
        return replacement, completeness

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PrunedGraph:
        """circuit-tracer's pruning: keep the most influential nodes, then edges (see the module doc)."""
        for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        w = self.logit_weights
        node_influence = self._influence
        node_mask = node_influence >= _threshold(node_influence, node_threshold)
        always = torch.cat([self.indices("token"), self.indices("logit")])
        node_mask[always] = True
        pruned = self.adjacency.clone()
        pruned[~node_mask] = 0
        pruned[:, ~node_mask] = 0
        normalised = normalise_rows(pruned)
        edge_scores = normalised * (influence(pruned, w) + w)[:, None]
        edge_mask = edge_scores >= _threshold(edge_scores.flatten(), edge_threshold)
        edge_mask &= pruned != 0
        features = self.indices("feature")
        inner = torch.cat([features, self.indices("error")])
        while True:  # drop nodes left without outgoing (features, errors) or incoming (features) edges
            before = node_mask.clone()
            edge_mask[~node_mask] = False
            edge_mask[:, ~node_mask] = False
            node_mask[inner] &= edge_mask[:, inner].any(0)
            node_mask[features] &= edge_mask[features].any(1)
            if torch.equal(before, node_mask):
                break
        return PrunedGraph(self, node_mask, edge_mask)


@dataclass(frozen=True)
class PrunedGraph:
    graph: AttributionGraph
    node_mask: Tensor  # [node] bool
    edge_mask: Tensor  # [node, node] bool

    @property
    def nodes(self) -> list[Node]:
        return [n for n, keep in zip(self.graph.nodes, self.node_mask.tolist()) if keep]

    def features(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "feature"]

    def edges(self) -> list[tuple[Node, Node, float]]:
        """(source, target, weight) of every kept edge, strongest first."""
        targets, sources = self.edge_mask.nonzero(as_tuple=True)
        weights = self.graph.adjacency[targets, sources]
        order = weights.abs().argsort(descending=True)
        return [(self.graph.nodes[int(sources[i])], self.graph.nodes[int(targets[i])], float(weights[i]))
                for i in order]


def normalise_rows(adjacency: Tensor) -> Tensor:
    """|A| with each row divided by its sum (rows of zeros stay zero)."""
    a = adjacency.abs()
    return a / a.sum(-1, keepdim=True).clamp(min=1e-10)


def influence(adjacency: Tensor, logit_weights: Tensor) -> Tensor:
    """logit_weights @ (N + N^2 + ...) for N the row-normalised |A|: [node].

    The graph is acyclic (a node reads only earlier layers), so N is nilpotent and the series
    ends after as many terms as the longest path (n_layers + 1 edges): summed term by term, a
    matrix-vector product each, instead of solving (I - N)^T x = N^T w in O(node^3).
    """
    n = normalise_rows(adjacency).double()
    term = logit_weights.double().to(n.device)
    total = torch.zeros_like(term)
    for _ in range(len(n)):
        term = term @ n
        if not term.any():
            return total.to(adjacency.dtype)
        total += term
    raise ValueError("the graph has a cycle: influence is defined for acyclic graphs only")


def _threshold(scores: Tensor, fraction: float) -> Tensor:
    """The score above which the highest scores hold ``fraction`` of the total."""
    ordered = scores.flatten().sort(descending=True).values
    total = ordered.sum()
    if total <= 0:
        return ordered.new_tensor(float("inf"))
    cumulative = ordered.cumsum(0) / total
    index = min(int(torch.searchsorted(cumulative, cumulative.new_tensor(fraction))), len(ordered) - 1)
    return ordered[index]


# ---- building a graph ----------------------------------------------------------------------------


def _top_logits(logits: Tensor, max_n: int, cumulative: float) -> tuple[Tensor, Tensor]:
    probs = logits.softmax(-1)
    top = probs.sort(descending=True)
    n = int((top.values.cumsum(0) < cumulative).sum()) + 1
    n = max(1, min(n, max_n))
    return top.indices[:n], top.values[:n]


@dataclass(frozen=True)
class _Dictionary:
    """What a graph builder needs from the features replacing the MLPs, on one prompt.

    ``z`` [pos, layer, latent] are the activations, ``W`` [source, dest, latent, d_model] the
    decoder (zero where a source does not write), ``errors`` [pos, layer, d_model] what the
    replacement misses, ``constant`` [pos, layer, d_model] each MLP output held fixed in the
    linearised run, and ``live(layer, mlp_in, mlp_out)`` the layer's feature pre-activations
    [batch, pos, latent] computed in that run (with gradients), plus any live extra output.
    """

    z: Tensor
    W: Tensor
    errors: Tensor
    constant: Tensor
    live: Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor | None]]


def _check_prompt(model: Transformer, tokens: Tensor, scored_pos: int) -> int:
    if tokens.ndim != 1:
        raise ValueError(f"an attribution graph is of one prompt: tokens [pos], got shape {tuple(tokens.shape)}")
    n_pos = len(tokens)
    if not -n_pos <= scored_pos < n_pos:
        raise ValueError(f"scored_pos {scored_pos} is out of range for a prompt of {n_pos} tokens")
    if model.cfg.d_mlp is None:
        raise ValueError("the model has no MLPs: an attribution graph replaces MLPs by features")
    return scored_pos % n_pos


def _cache_names(model: Transformer) -> list[str]:
    L = model.cfg.n_layers
    return ([f"blocks.{l}.hook_mlp_in" for l in range(L)] + [f"blocks.{l}.hook_mlp_out" for l in range(L)]
            + [f"blocks.{l}.attn.hook_pattern" for l in range(L)] + ["hook_embed", "hook_pos_embed"]
            + [n for n in model.hook_names() if n.endswith("hook_scale")])


def attribution_graph(model: Transformer, transcoder: Transcoder, tokens: Tensor, scored_pos: int = -1,
                      max_logits: int = 10, logit_probability: float = 0.95) -> AttributionGraph:
    """The attribution graph of one prompt ``tokens`` [pos] (see the module doc).

    Logit nodes are the most likely output classes at ``scored_pos``, until they hold
    ``logit_probability`` of the probability or there are ``max_logits``.
    """
    cfg, tc = model.cfg, transcoder.cfg
    scored_pos = _check_prompt(model, tokens, scored_pos)
    if tc.n_layers != cfg.n_layers or tc.d_in != cfg.d_model or tc.d_out != cfg.d_model:
        raise ValueError(f"the transcoder ({tc.n_layers} layers, width {tc.d_in}) does not fit the model "
                         f"({cfg.n_layers} layers, width {cfg.d_model})")
    L = cfg.n_layers
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens[None].to(model.device), names=_cache_names(model))
        x = torch.stack([cache[f"blocks.{l}.hook_mlp_in"][0] for l in range(L)], dim=1)  # [pos, layer, d_model]
        y = torch.stack([cache[f"blocks.{l}.hook_mlp_out"][0] for l in range(L)], dim=1)
        z = transcoder.encode(x)  # [pos, layer, latent]
        skip = torch.einsum("pld,ldo->plo", x, transcoder.W_skip) if tc.skip else torch.zeros_like(y)
        errors = y - transcoder.decode(z, x)
    W_enc, b_enc = transcoder.W_enc.detach(), transcoder.b_enc.detach()
    W_skip = transcoder.W_skip.detach() if tc.skip else None

    def live(layer: int, mlp_in: Tensor, mlp_out: Tensor) -> tuple[Tensor, Tensor | None]:
        # Features read the MLP's input: linear in every upstream node.
        return mlp_in @ W_enc[layer] + b_enc[layer], None if W_skip is None else mlp_in @ W_skip[layer]

    W = (transcoder.W_dec * transcoder.writes[:, :, None, None]).detach()
    return _build(model, tokens, scored_pos, logits[0, scored_pos], cache,
                  _Dictionary(z, W, errors, y - skip, live), max_logits, logit_probability)


def sae_attribution_graph(model: Transformer, saes: Mapping[int, SAE], tokens: Tensor, scored_pos: int = -1,
                          max_logits: int = 10, logit_probability: float = 0.95) -> AttributionGraph:
    """The graph of one prompt over SAE features of every MLP's output (``saes[layer]`` reads
    ``blocks.{layer}.hook_mlp_out``), with edges by attribution patching (Syed et al. 2023,
    sparse feature circuits as in Marks et al. 2024): gradient x activation, with a zero
    baseline, attention frozen as in ``attribution_graph``.

    The difference from a transcoder's graph is where the nonlinearity sits: an SAE feature
    reads the MLP's *output*, so the edge from an upstream node into it passes through the
    MLP and is a first-order estimate; the rows no longer sum to the nodes' inputs (``bias``
    holds what the estimate misses). Error nodes hold what each SAE misses.
    """
    cfg = model.cfg
    scored_pos = _check_prompt(model, tokens, scored_pos)
    L = cfg.n_layers
    missing = [l for l in range(L) if l not in saes]
    if missing:
        raise ValueError(f"an SAE graph needs an SAE on every MLP's output; none for layers {missing} "
                         f"(saes maps each layer 0..{L - 1} to the SAE reading blocks.{{layer}}.hook_mlp_out)")
    for l, sae in saes.items():
        if sae.cfg.d_in != cfg.d_model:
            raise ValueError(f"the SAE of layer {l} reads width {sae.cfg.d_in}; hook_mlp_out has width {cfg.d_model}")
    d_sae = {sae.cfg.d_sae for sae in saes.values()}
    if len(d_sae) != 1:
        raise ValueError(f"the SAEs must have one width (d_sae) across layers, got {sorted(d_sae)}")
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens[None].to(model.device), names=_cache_names(model))
        y = torch.stack([cache[f"blocks.{l}.hook_mlp_out"][0] for l in range(L)], dim=1)  # [pos, layer, d_model]
        z = torch.stack([saes[l].encode(y[:, l]) for l in range(L)], dim=1)  # [pos, layer, latent]
        errors = y - torch.stack([saes[l].decode(z[:, l]) for l in range(L)], dim=1)
        W = torch.zeros(L, L, d_sae.pop(), cfg.d_model, device=y.device)
        for l in range(L):
            W[l, l] = saes[l].W_dec
    encoders = [(saes[l].W_enc.detach(), saes[l].b_enc.detach(),
                 saes[l].b_dec.detach() if saes[l].cfg.apply_b_dec_to_input else 0.0) for l in range(L)]

    def live(layer: int, mlp_in: Tensor, mlp_out: Tensor) -> tuple[Tensor, None]:
        W_enc, b_enc, b_dec = encoders[layer]
        return (mlp_out - b_dec) @ W_enc + b_enc, None  # through the MLP: not linear upstream

    return _build(model, tokens, scored_pos, logits[0, scored_pos], cache, _Dictionary(z, W, errors, y, live),
                  max_logits, logit_probability)


def _build(model: Transformer, tokens: Tensor, scored_pos: int, final_logits: Tensor, cache, d: _Dictionary,
           max_logits: int, logit_probability: float) -> AttributionGraph:
    cfg, device, n_pos, L = model.cfg, model.device, len(tokens), model.cfg.n_layers
    tokens = tokens.to(device)
    classes, probs = _top_logits(final_logits, max_logits, logit_probability)
    active = (d.z > 0).nonzero().tolist()  # [(pos, layer, latent)]
    nodes = [Node("feature", l, p, f, float(d.z[p, l, f])) for p, l, f in active]
    nodes += [Node("error", l, p, None, float(d.errors[p, l].norm())) for l in range(L) for p in range(n_pos)]
    nodes += [Node("token", None, p, None, float(tokens[p])) for p in range(n_pos)]
    nodes += [Node("logit", None, scored_pos, int(c), float(pr)) for c, pr in zip(classes.tolist(), probs.tolist())]
    n_features = len(active)
    targets = list(range(n_features)) + list(range(len(nodes) - len(classes), len(nodes)))
    B = len(targets)

    # The linearised forward: frozen patterns and scales, MLP outputs constant (but for a live
    # skip path), and a zero injection at every write point whose gradient is the sensitivity there.
    inject = {name: torch.zeros(B, n_pos, cfg.d_model, device=device, requires_grad=True)
              for name in ["embed"] + [f"mlp{l}" for l in range(L)]}
    frozen = {n: cache[n].detach() for n in cache if n.endswith(("hook_pattern", "hook_scale"))}

    def freeze(value: Tensor, hook) -> Tensor:
        return frozen[hook.name].expand_as(value)

    def embed(value: Tensor, hook) -> Tensor:
        return value + inject["embed"]

    mlp_inputs: dict[int, Tensor] = {}
    pre: dict[int, Tensor] = {}

    def read(value: Tensor, hook) -> Tensor:
        mlp_inputs[int(hook.name.split(".")[1])] = value
        return value

    def write(value: Tensor, hook) -> Tensor:
        layer = int(hook.name.split(".")[1])
        pre[layer], extra = d.live(layer, mlp_inputs[layer], value)
        out = d.constant[:, layer].expand(B, -1, -1) + inject[f"mlp{layer}"]
        return out if extra is None else out + extra

    hooks = [(n, freeze) for n in frozen] + [("hook_embed", embed)]
    hooks += [(f"blocks.{l}.hook_mlp_in", read) for l in range(L)] + [(f"blocks.{l}.hook_mlp_out", write) for l in range(L)]
    row = torch.arange(B, device=device)
    with torch.enable_grad(), model.hooks(hooks):
        out = model(tokens[None].expand(B, -1))  # [B, pos, vocab]
        values = torch.zeros(B, device=device)
        if n_features:
            p, l, f = (torch.tensor(c, device=device) for c in zip(*active))
            stacked = torch.stack([pre[layer] for layer in range(L)], dim=2)  # [B, pos, layer, latent]
            values[:n_features] = stacked[row[:n_features], p, l, f]
        final = out[n_features:, scored_pos]  # [n_logits, vocab]
        values[n_features:] = final[torch.arange(len(classes), device=device), classes] - final.mean(-1)
        grads = torch.autograd.grad(values.sum(), list(inject.values()))
    grad = dict(zip(inject, grads))  # name -> [B, pos, d_model]

    with torch.no_grad():
        A = torch.zeros(len(nodes), len(nodes), device=device)
        rows = torch.tensor(targets, device=device)
        embedding = (cache["hook_embed"][0] + cache["hook_pos_embed"][0])  # [pos, d_model]
        token_cols = torch.arange(len(nodes) - len(classes) - n_pos, len(nodes) - len(classes), device=device)
        A[rows[:, None], token_cols[None]] = torch.einsum("bpd,pd->bp", grad["embed"], embedding)
        for l in range(L):
            cols = torch.arange(n_features + l * n_pos, n_features + (l + 1) * n_pos, device=device)
            A[rows[:, None], cols[None]] = torch.einsum("bpd,pd->bp", grad[f"mlp{l}"], d.errors[:, l])
        writing = d.W.abs().sum(-1) > 0  # [source, dest, latent]
        for j, (p, l, f) in enumerate(active):
            sensitivity = sum(grad[f"mlp{dest}"][:, p] @ d.W[l, dest, f] for dest in range(l, L) if writing[l, dest, f])
            A[rows, j] = d.z[p, l, f] * sensitivity
        actual = values.detach()
        bias = torch.zeros(len(nodes), device=device)
        bias[rows] = actual - A[rows].sum(-1)
        target_values = torch.zeros(len(nodes), device=device)
        target_values[rows] = actual
        writes = {j: {f"blocks.{dest}.hook_mlp_out": d.W[l, dest, f].cpu() for dest in range(l, L)
                      if writing[l, dest, f]} for j, (p, l, f) in enumerate(active)}
    return AttributionGraph(tokens.cpu(), tuple(nodes), A.cpu(), target_values.cpu(), bias.cpu(), probs.cpu(),
                            scored_pos, writes)
