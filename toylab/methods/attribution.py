"""Edge attribution patching: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024).

Axis names used in shape comments:
    batch, pos     rows of the counterfactual pair, token positions
    head           attention head within a layer
    d_model        residual stream width
    sender         upstream components whose outputs feed receivers, in residual-stream
                   order: embed, L0H0 .. L0H{H-1}, MLP0, L1H0, ..., MLP{L-1}
    receiver       receiver inputs, in order: for each layer the q inputs of its heads,
                   then their k inputs, then their v inputs, then (unless attention-only)
                   the MLP's input; last the logits (the final ``hook_resid_post``)

An edge ``(s, r, kind)`` of ``toylab.components`` is *ablated* when receiver ``r`` reads,
through that input, the output ``s`` had on the corrupted input instead of its clean one
(``toylab.interventions.ablated``). Measuring that for every edge costs a forward per
edge; attribution patching estimates all of them at once, to first order, from one
backward pass.

Notation: ``m(.)`` is the metric, by default the task's logit difference between the clean
and the counterfactual answer (``toylab.tasks.logit_diff``), averaged over the batch's
scored positions; ``m_clean`` and ``m_corr`` are m of the model on the clean and on the
corrupted tokens.

eap      (Syed et al. 2023). For edge (s, r, kind):
             |sum over batch, pos of (s_corr - s_clean) . dm/d(input_r^kind)|
             / |m_clean - m_corr|
         where s_* is s's output [batch, pos, d_model] and the gradient is
         taken on the clean run at the receiver's own input hook
         (``hook_{q,k,v}_input`` per head, ``hook_mlp_in``, the final
         ``hook_resid_post`` for the logits). m is a mean over the batch, so
         the gradient carries the 1/batch: the sum is the batch-averaged
         first-order estimate of what ablating that edge alone does to m, in
         units of the full effect (comparable to ACDC's "logit_diff" damage).
         Cost: 2 forwards + 1 backward; one einsum over [sender, receiver].
eap_ig   (Hanna et al. 2024, EAP-IG-inputs). As eap, with the
         gradient averaged over ``steps`` runs whose token embeddings
         (``hook_embed``; ``hook_pos_embed`` is identical on both inputs) are
         interpolated, e_k = e_corr + (k / steps) (e_clean - e_corr) for
         k = 0 .. steps - 1 (a left Riemann sum: the corrupted end of the path
         is included, the clean end, where plain EAP takes its gradient, not).
         Cost: 2 + steps forwards + steps backwards.

``EdgeAttribution.scores`` keeps the sign: ``scores[e]`` is the sum above divided by
``m_corr - m_clean`` rather than by its absolute value, i.e. the first-order estimate of
``(m_clean - m(e ablated)) / (m_clean - m_corr)``, the share of the clean-vs-corrupted
effect that ablating ``e`` alone removes (1 for an edge that carries all of it, negative
for one that works against it). ``abs(scores[e])`` is exactly the formula above, the
ranking circuit discovery uses (``top(k, absolute=True)``).

With ``steps=1`` EAP-IG takes its gradient on the corrupted run alone (e_0 = e_corr), so it
equals plain EAP on the pair with clean and corrupted swapped.

eap(..., qk_fix=True)  ("eap-qk", the QK fix of AtP*, Kramár et al. 2024, applied to edges).
         A saturated softmax has a ~0 gradient however much patching its query or keys
         would move it, so for edges into a head's q or k the estimate skips the
         softmax's linearisation: the receiving head's attention pattern is recomputed
         exactly with the sender's corrupted output in its query (or keys) input, and
         only what follows the pattern is linearised:
             sum over batch, head's query and key positions of
             (pattern(patched) - pattern) * dm/d(pattern)
         Edges into v, MLPs and the logits keep plain EAP's estimate. Cost: eap's, plus
         one pattern per (sender, head, q or k), computed from cached inputs (no forward).
         Where the sender's own output moves only through a saturated softmax further
         down (the edge into the sender's v, say), the estimate stays ~0: the fix repairs
         the receiver's softmax, not the ones after it.

eap(..., grad_drop=True)  ("eap-graddrop"; "atp-star", AtP*, with ``qk_fix`` too: GradDrop,
         Kramár et al. 2024). A node whose effects along two paths cancel has a ~0
         gradient however large each path is. GradDrop runs one backward per layer l
         with the gradient stopped at l's outputs (``hook_attn_out``, ``hook_mlp_out``),
         so only the paths that skip l carry it, and scores each edge by the mean over
         the layers l other than its receiver's own (dropping that one zeroes it) of
             |its eap score with l dropped|
         (unsigned; AtP*'s 1 / (n_layers - 1) sum over l, with the logits, which sit in
         no layer, averaged over all n_layers). A cancellation through layer l's MLP reappears when l is dropped.
         It repairs false negatives only: an edge into the cancelling MLP keeps the
         large first-order score its real effect does not have. On a 2-layer model an
         edge into layer 0 whose effect runs only through layer 1 scores exactly 0 (the
         one layer it may drop is its only path): GradDrop is made for deep models, where
         dropping one layer of many leaves most paths. Undefined with one layer (raises). Cost: eap's plus
         n_layers backwards (and, with the QK fix, n_layers more pattern gradients).

edge_patching  (``toylab.methods.patching``: the exact reference the estimates above
         approximate, every edge patched for real). ``direction="noise"``: the clean run with edge e alone
         reading its sender's corrupted output; scores[e] = (m_clean - m(e ablated)) /
         (m_clean - m_corr), the share of the effect that noising e destroys.
         ``direction="denoise"``: the corrupted run with edge e alone reading its
         sender's output on the clean input, everything downstream recomputed;
         scores[e] = (m(e restored) - m_corr) / (m_clean - m_corr), the share denoising
         e restores. Noising one edge of two redundant paths shows
         nothing, denoising shows each (Heimersheim & Nanda 2024).
         Cost: one forward per edge, resumed at the receiver's layer on the rows the
         edge changes, stacked into a few large forwards.

    result = eap(model, pair)
    result.top(5, absolute=True)          # [(Edge("L0H1", "L1H1", "k"), 0.93), ...]
    result[("L0H1", "L1H1", "k")]         # one edge's signed score
    result.promoted()                     # head-level edges: q + k + v
    result.nodes()                        # per sender: the sum over its outgoing edges
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from toylab import components as comp
from toylab.components import Edge
from toylab.hooks import UnknownNameError
from toylab.models import Transformer
from toylab.tasks import CounterfactualPair, logit_diff

Metric = Callable[[Tensor], Tensor]  # logits [batch, pos, d_vocab_out] -> scalar


@dataclass(frozen=True)
class EdgeAttribution:
    method: str  # "eap", "eap-qk", "eap-graddrop", "atp-star" or "eap-ig"
    scores: dict[Edge, float]  # signed, at qkv granularity; every edge of the model but pos_embed's
    clean_metric: float  # m_clean
    corrupted_metric: float  # m_corr

    def __getitem__(self, edge: Edge | tuple[str, str, str]) -> float:
        """One edge's signed score, e.g. ``result[("L0H1", "L1H1", "k")]``."""
        edge = Edge.parse(edge)
        if edge not in self.scores:
            raise UnknownNameError(str(edge), [str(e) for e in self.scores], what="scored edge")
        return self.scores[edge]

    def top(self, k: int = 3, absolute: bool = False) -> list[tuple[Edge, float]]:
        """The ``k`` highest scores as (edge, score), best first; by |score| if ``absolute``."""
        key = (lambda e: abs(self.scores[e])) if absolute else self.scores.get
        return [(e, self.scores[e]) for e in sorted(self.scores, key=key, reverse=True)[:k]]

    def promoted(self) -> dict[Edge, float]:
        """Head-level edges: an edge into a head scores its q + k + v scores (estimates add)."""
        out: dict[Edge, float] = {}
        for edge, value in self.scores.items():
            head = comp.promote_edge(edge)
            out[head] = out.get(head, 0.0) + value
        return out

    def nodes(self) -> dict[str, float]:
        """Per sender, the sum of its outgoing edges' scores.

        The gradient at a sender's output is the sum of the gradients at every input that
        reads it, so this is attribution patching of the node: the first-order estimate of
        resample-ablating its output for every reader (``ablation_scores(..., "resample")``).
        """
        out: dict[str, float] = {}
        for edge, value in self.scores.items():
            out[edge.sender] = out.get(edge.sender, 0.0) + value
        return out


# ---- the public functions ----------------------------------------------------------------


def eap(model: Transformer, pair: CounterfactualPair, *, metric: Metric | None = None,
        qk_fix: bool = False, grad_drop: bool = False) -> EdgeAttribution:
    """Edge attribution patching: 2 forwards and 1 backward (see the module docstring).

    ``metric(logits)`` maps logits [batch, pos, d_vocab_out] to a scalar; by default the
    task's ``logit_diff(logits, pair)``. ``qk_fix`` recomputes the attention pattern
    exactly for edges into queries and keys (AtP*'s QK fix; the result's method is "eap-qk").
    ``grad_drop`` averages |score| over one backward per layer with the gradient through
    that layer's output dropped (AtP*'s GradDrop; "eap-graddrop", or "atp*" with both):
    the scores are then unsigned.
    """
    metric = _default_metric(pair) if metric is None else metric
    clean_tokens, corrupted_tokens = _tokens(model, pair)
    cfg = model.cfg
    with torch.no_grad():
        logits, corrupted = model.run_with_cache(corrupted_tokens, names=_sender_hooks(cfg))
    m_corr = float(metric(logits))
    grads, clean, m_clean = _receiver_gradients(model, clean_tokens, metric)  # [b, p, receiver, m], [b, p, sender, m]
    delta = _stack_senders(corrupted, cfg) - clean  # [batch, pos, sender, d_model]
    if not grad_drop:
        exact = _qk_fixed(model, clean_tokens, metric, delta) if qk_fix else None
        return _attribution("eap-qk" if qk_fix else "eap", cfg, delta, grads, m_clean, m_corr, exact=exact)
    if cfg.n_layers < 2:
        raise ValueError("GradDrop drops one layer's gradient at a time: it needs a model of at least 2 layers")
    total: dict[Edge, float] = {}
    for layer in range(cfg.n_layers):
        dropped, _, _ = _receiver_gradients(model, clean_tokens, metric, drop_layer=layer)
        part = _attribution("eap", cfg, delta, dropped, m_clean, m_corr,
                            exact=_qk_fixed(model, clean_tokens, metric, delta, layer) if qk_fix else None)
        for edge, value in part.scores.items():
            if edge.receiver == "logits" or comp.parse(edge.receiver)[1] != layer:  # its own layer scores 0
                total[edge] = total.get(edge, 0.0) + abs(value) / (cfg.n_layers - (edge.receiver != "logits"))
    return EdgeAttribution("atp-star" if qk_fix else "eap-graddrop", total, m_clean, m_corr)


def eap_ig(model: Transformer, pair: CounterfactualPair, *, steps: int = 5,
           metric: Metric | None = None) -> EdgeAttribution:
    """EAP with the receivers' gradients integrated along corrupted -> clean input embeddings."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    metric = _default_metric(pair) if metric is None else metric
    clean_tokens, corrupted_tokens = _tokens(model, pair)
    cfg = model.cfg
    with torch.no_grad():
        corrupted_logits, corrupted = model.run_with_cache(corrupted_tokens, names=_sender_hooks(cfg))
        # The sender outputs of the clean run itself: the interpolated runs' are not clean.
        clean_logits, clean = model.run_with_cache(clean_tokens, names=_sender_hooks(cfg))
    m_clean, m_corr = float(metric(clean_logits)), float(metric(corrupted_logits))
    e_corr, e_clean = corrupted["hook_embed"], clean["hook_embed"]  # [batch, pos, d_model] each
    total = None  # [batch, pos, receiver, d_model]: the gradients summed over the path
    for k in range(steps):
        embed = e_corr + (k / steps) * (e_clean - e_corr)  # [batch, pos, d_model]
        grads, _, _ = _receiver_gradients(model, clean_tokens, metric, embed)  # [b, p, receiver, m]
        total = grads if total is None else total + grads
    delta = _stack_senders(corrupted, cfg) - _stack_senders(clean, cfg)  # [batch, pos, sender, d_model]
    return _attribution("eap-ig", cfg, delta, total / steps, m_clean, m_corr)


# ---- senders and receivers ---------------------------------------------------------------


def _sender_ids(cfg) -> list[str]:
    """The senders, in residual-stream order (pos_embed left out: it is the same on both inputs)."""
    ids = ["embed"]
    for layer in range(cfg.n_layers):
        ids += [comp.head_id(layer, h) for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            ids.append(f"MLP{layer}")
    return ids


def _sender_hooks(cfg) -> list[str]:
    """Where the senders' outputs are read: one hook_result holds all of a layer's heads."""
    names = ["hook_embed"]
    for layer in range(cfg.n_layers):
        names.append(f"blocks.{layer}.attn.hook_result")
        if not cfg.attn_only:
            names.append(f"blocks.{layer}.hook_mlp_out")
    return names


def _stack_senders(cache, cfg) -> Tensor:
    """Sender outputs in residual-stream order: [batch, pos, sender, d_model]."""
    parts = []
    for name in _sender_hooks(cfg):
        act = cache[name]
        parts.append(act if act.ndim == 4 else act.unsqueeze(2))  # heads [b, p, head, m]; others [b, p, 1, m]
    return torch.cat(parts, dim=2)


def _receiver_ids(cfg) -> list[tuple[str, str]]:
    """(receiver, kind) in the order of the stacked receiver gradients."""
    ids = []
    for layer in range(cfg.n_layers):
        for kind in comp.QKV:
            ids += [(comp.head_id(layer, h), kind) for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            ids.append((f"MLP{layer}", "resid"))
    return ids + [(comp.OUTPUT, "resid")]


def _receiver_hooks(cfg) -> list[str]:
    """Where the receivers read their inputs, in the order of ``_receiver_ids``."""
    names = []
    for layer in range(cfg.n_layers):
        names += [f"blocks.{layer}.hook_{kind}_input" for kind in comp.QKV]
        if not cfg.attn_only:
            names.append(f"blocks.{layer}.hook_mlp_in")
    return names + [f"blocks.{cfg.n_layers - 1}.hook_resid_post"]


# ---- the computation -----------------------------------------------------------------------


def _default_metric(pair: CounterfactualPair) -> Metric:
    def metric(logits: Tensor) -> Tensor:
        # The pair's targets stay on the CPU (the task samples there): bring the logits to them.
        return logit_diff(logits.cpu() if logits.device.type != "cpu" else logits, pair)
    return metric


def _tokens(model: Transformer, pair: CounterfactualPair) -> tuple[Tensor, Tensor]:
    """The pair's clean and corrupted tokens [batch, pos] on the model's device."""
    return pair.clean.tokens.to(model.device), pair.corrupted.tokens.to(model.device)


def _receiver_gradients(model: Transformer, tokens: Tensor, metric: Metric,
                        embed: Tensor | None = None, drop_layer: int | None = None) -> tuple[Tensor, Tensor, float]:
    """d m / d (each receiver input) on one run of ``tokens`` (1 forward, 1 backward).

    ``embed`` [batch, pos, d_model] replaces the token embedding (for integrated gradients).
    ``drop_layer`` stops the gradient at that layer's outputs (attention and MLP): only the
    paths that skip the layer carry it (GradDrop); the forward is unchanged.
    Returns (grads [batch, pos, receiver, d_model], the run's sender outputs
    [batch, pos, sender, d_model], the run's metric m).
    """
    cfg = model.cfg
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def probe(x: Tensor, hook) -> Tensor:
        # A fresh tensor per receiver input: the block hands all heads (and q, k, v) one
        # shared view of the stream, and the MLP and logits read the stream itself, so the
        # gradient there would mix every reader's. Cloning gives this input its own node
        # in the graph; the values, and so the forward, are unchanged.
        y = x.clone()
        inputs[hook.name] = y
        return y

    def record(x: Tensor, hook) -> None:
        outputs[hook.name] = x.detach()

    hooks = [(name, probe) for name in _receiver_hooks(cfg)] + [(name, record) for name in _sender_hooks(cfg)]
    if embed is not None:
        hooks.insert(0, ("hook_embed", lambda x, hook: embed))
    hooks += _dropped(cfg, drop_layer)
    with torch.enable_grad(), model.hooks(hooks):
        m = metric(model(tokens))
        # autograd.grad, not backward(): the parameters' .grad stay untouched.
        names = _receiver_hooks(cfg)
        grads = torch.autograd.grad(m, [inputs[name] for name in names], allow_unused=True)
    parts = []
    for name, grad in zip(names, grads):
        if grad is None:  # an input nothing downstream reads
            grad = torch.zeros_like(inputs[name])
        parts.append(grad if grad.ndim == 4 else grad.unsqueeze(2))  # [b, p, head, m] or [b, p, 1, m]
    # q, k, v inputs of one layer are [b, p, head, m] each: cat keeps the receiver order.
    return torch.cat(parts, dim=2).detach(), _stack_senders(outputs, cfg), float(m.detach())


def _dropped(cfg, layer: int | None) -> list:
    """Hooks that stop the gradient at ``layer``'s outputs (none for None); values unchanged."""
    if layer is None:
        return []
    names = [f"blocks.{layer}.hook_attn_out"] + ([] if cfg.attn_only else [f"blocks.{layer}.hook_mlp_out"])
    return [(name, lambda x, hook: x.detach()) for name in names]


def _check_effect(m_clean: float, m_corr: float) -> None:
    # float32 forwards of the same tokens agree to ~1e-7 relative: below 1e-6 there is no effect.
    if abs(m_clean - m_corr) <= 1e-6 * max(1.0, abs(m_clean), abs(m_corr)):
        raise ValueError("the model's metric does not change between clean and corrupted inputs "
                         f"(m = {m_clean:.3g} on both): nothing to attribute")


def _qk_fixed(model: Transformer, tokens: Tensor, metric: Metric, delta: Tensor,
              drop_layer: int | None = None) -> dict[tuple[int, int], Tensor]:
    """AtP*'s QK fix: for each (sender, q or k receiver), sum of (pattern(patched) - pattern)
    . dm/d(pattern), the patched pattern recomputed exactly. {(sender, receiver) index: value}.
    ``drop_layer`` as in ``_receiver_gradients``."""
    cfg = model.cfg
    names = [f"blocks.{layer}.{name}" for layer in range(cfg.n_layers)
             for name in ("hook_resid_pre", "attn.hook_q", "attn.hook_k")]
    cache: dict[str, Tensor] = {}
    patterns: dict[int, Tensor] = {}

    def record(x: Tensor, hook) -> None:
        cache[hook.name] = x.detach()

    def probe(x: Tensor, hook) -> Tensor:
        y = x.clone()  # its own node in the graph, so its gradient is the pattern's alone
        patterns[int(hook.name.split(".")[1])] = y
        return y

    hooks = [(name, record) for name in names]
    hooks += [(f"blocks.{layer}.attn.hook_pattern", probe) for layer in range(cfg.n_layers)]
    hooks += _dropped(cfg, drop_layer)
    with torch.enable_grad(), model.hooks(hooks):
        m = metric(model(tokens))
        layers = sorted(patterns)
        grads = torch.autograd.grad(m, [patterns[layer] for layer in layers], allow_unused=True)
    receiver_index = {r: i for i, r in enumerate(_receiver_ids(cfg))}
    out: dict[tuple[int, int], Tensor] = {}
    per_layer = cfg.n_heads + (0 if cfg.attn_only else 1)
    with torch.no_grad():
        for layer, grad in zip(layers, grads):
            if grad is None:
                continue
            block = model.blocks[layer]
            attn = block.attn
            n_senders = 1 + layer * per_layer  # embed and everything before this layer
            resid = cache[f"blocks.{layer}.hook_resid_pre"]  # [batch, pos, d_model]
            q, k = cache[f"blocks.{layer}.attn.hook_q"], cache[f"blocks.{layer}.attn.hook_k"]  # [b, p, head, d_head]
            patched_in = block.ln1(resid.unsqueeze(2) + delta[:, :, :n_senders])  # [batch, pos, sender, d_model]
            n = resid.shape[1]
            mask = attn.mask[:n, :n]
            for head in range(cfg.n_heads):
                clean_pattern = patterns[layer][:, head].detach()  # [batch, query_pos, key_pos]
                for kind in ("q", "k"):
                    W, b = (attn.W_Q, attn.b_Q) if kind == "q" else (attn.W_K, attn.b_K)
                    new = torch.einsum("bpsm,md->bpsd", patched_in, W[head]) + b[head]  # [b, pos, sender, d_head]
                    if kind == "q":
                        scores = torch.einsum("bqsd,bkd->bsqk", new, k[:, :, head])
                    else:
                        scores = torch.einsum("bqd,bksd->bsqk", q[:, :, head], new)
                    scores = (scores / attn.scale).masked_fill(~mask, float("-inf"))
                    change = scores.softmax(-1) - clean_pattern.unsqueeze(1)  # [batch, sender, query_pos, key_pos]
                    values = torch.einsum("bsqk,bqk->s", change, grad[:, head])  # [sender]
                    r = receiver_index[(comp.head_id(layer, head), kind)]
                    for sender in range(n_senders):
                        out[(sender, r)] = values[sender]
    return out


def _attribution(method: str, cfg, delta: Tensor, grads: Tensor, m_clean: float, m_corr: float,
                 exact: dict[tuple[int, int], Tensor] | None = None) -> EdgeAttribution:
    """delta . grad summed over batch and pos, per edge, over m_corr - m_clean; ``exact``
    replaces the first-order sum of some (sender, receiver) entries."""
    _check_effect(m_clean, m_corr)
    raw = torch.einsum("bpsm,bprm->sr", delta, grads)  # [sender, receiver]
    for (sender, receiver), value in (exact or {}).items():
        raw[sender, receiver] = value
    scores = (raw / (m_corr - m_clean)).cpu()
    sender_index = {s: i for i, s in enumerate(_sender_ids(cfg))}
    receiver_index = {r: i for i, r in enumerate(_receiver_ids(cfg))}
    edges = [e for e in comp.edges(cfg) if e.sender != "pos_embed"]
    return EdgeAttribution(method, {e: float(scores[sender_index[e.sender], receiver_index[(e.receiver, e.kind)]])
                                    for e in edges}, m_clean, m_corr)


__all__ = ["EdgeAttribution", "eap", "eap_ig"]
