"""Checkers for lesson 16, attribution patching and EAP: implementations are compared with the checker's own
autograd and with toylab.methods (eap, activation_patching) on the checker's own pairs (never the lesson's), and
with patching for real where the model is linear; answers are checked against the truth's edges, re-measured with
methods.eap, methods.edge_patching and methods.eap_ig, and against the validation harness's figures."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch

from toylab import components as comp
from toylab import methods, validate, zoo
from toylab.components import Edge
from toylab.lessons.checking import call, expect_close, number, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.tasks import logit_diff

from .fixtures import (
    BASELINES,
    FIGURES,
    IG_TOLERANCE,
    MAX_STEPS,
    MODEL,
    SCORING_PAIRS,
    SEED,
    TRAP,
    correlation,
    head_ids,
    noising_shares,
    pair,
    receiver_site,
    sender_site,
    shortfalls,
    understated,
)

CHECK_PAIR_SEED = 11  # the checker's counterfactual pairs for implementations, never the lesson's (0)
N_PAIRS = 32
RECALL = "factual-recall"  # a model with MLPs, where no head's path to the logits is exactly linear
IOI = "ioi-siit"  # four layers, heads acting through other heads' queries


def _zm(name: str, seed: int = SEED):
    return zoo_model(name, seed)


@cache
def _pairs(name: str, seed: int = SEED):
    """The checker's own counterfactual pairs of a zoo model."""
    return _zm(name, seed).task.counterfactual(N_PAIRS, seed=CHECK_PAIR_SEED)


def _metric(model, tokens: torch.Tensor, pair) -> float:
    with torch.no_grad():
        return float(logit_diff(model(tokens), pair))


def _gradients(model, tokens: torch.Tensor, pair, hooks: list[str],
               detach: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """The run of ``tokens``: each hook's activation and dm/d(it), every path from it to m counted (``detach``: each
    hook cut from what feeds it, so a hook's gradient counts only the paths that cross no other hook)."""
    leaves: dict[str, torch.Tensor] = {}

    def leaf(x: torch.Tensor, hook) -> torch.Tensor:
        y = x.detach() if detach else x.clone()  # its own node in the graph
        leaves[hook.name] = y if y.requires_grad else y.requires_grad_(True)
        return leaves[hook.name]

    with torch.enable_grad(), model.hooks([(h, leaf) for h in hooks]):
        m = logit_diff(model(tokens), pair)
        grads = torch.autograd.grad(m, [leaves[h] for h in hooks], allow_unused=True)
    return ({h: leaves[h].detach() for h in hooks},
            {h: torch.zeros_like(leaves[h]) if g is None else g for h, g in zip(hooks, grads)})


def _cached(model, tokens: torch.Tensor, hooks: list[str]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        _, cache_ = model.run_with_cache(tokens, names=hooks)
    return {h: cache_[h] for h in hooks}


def _close(got: float, want: float, rel: float = 1e-3, atol: float = 1e-4) -> bool:
    return abs(got - want) <= atol + rel * abs(want)


def _first_match(got: float, variants: dict[str, float]) -> str | None:
    """The hint of the first variant ``got`` equals (variants already known to differ from the right answer)."""
    return next((says for says, value in variants.items() if _close(got, value)), None)


# ---- 16.1 ----------------------------------------------------------------------------------


@cache
def _one_head_case(name: str, layer: int, head: int) -> dict[str, Any]:
    """Attribution patching of one head's z (m_patched - m_clean, to first order) and what patching it for real does
    to m, on the checker's pairs, with what the neighbours are made of."""
    zm, pair = _zm(name), _pairs(name)
    model, hook = zm.model, f"blocks.{layer}.attn.hook_z"
    z_corr = _cached(model, pair.corrupted.tokens, [hook])[hook]
    values, grads = _gradients(model, pair.clean.tokens, pair, [hook])
    delta, grad = z_corr - values[hook], grads[hook]
    m_clean, m_corr = _metric(model, pair.clean.tokens, pair), _metric(model, pair.corrupted.tokens, pair)
    share = float(noising_shares(model, pair)[layer, head])
    return {"estimate": float((delta[:, :, head] * grad[:, :, head]).sum()), "real": -share * (m_clean - m_corr),
            "delta": delta, "grad": grad, "m_clean": m_clean, "m_corr": m_corr}


def _one_head_neighbours(name: str, layer: int, head: int) -> dict[str, float]:
    """What a learner computes by mistake for one head, by what to say about it (only those that differ)."""
    case, pair = _one_head_case(name, layer, head), _pairs(name)
    hook, estimate = f"blocks.{layer}.attn.hook_z", case["estimate"]
    delta, grad, m_clean, m_corr = case["delta"], case["grad"], case["m_clean"], case["m_corr"]
    _, corr_grads = _gradients(_zm(name).model, pair.corrupted.tokens, pair, [hook])
    neighbours = {
        "that has the wrong sign: the patch moves z from z_clean to z_corr, so the difference is z_corr - z_clean":
            -estimate,
        "that is the gradient of the corrupted run: attribution patching takes it on the clean run, where the "
        "patch starts": float((delta[:, :, head] * corr_grads[hook][:, :, head]).sum()),
        "that is divided by the batch: m is already a mean over the batch, so its gradient carries the 1/batch; "
        "sum over batch and pos": estimate / pair.clean.tokens.shape[0],
        "that is a share of the effect: return the change of m itself, m_patched - m_clean":
            estimate / (m_corr - m_clean),
        "that is a share of the effect, and of the wrong sign: return the change of m itself, m_patched - m_clean":
            estimate / (m_clean - m_corr),
        "that sums every head of the layer: take head `head`'s slice, [:, :, head]": float((delta * grad).sum()),
        "that is the real patch, not its first-order estimate: use the gradient": case["real"],
    }
    return {says: value for says, value in neighbours.items() if not _close(value, estimate)}


def _one_head_cases() -> list[tuple[str, int, int]]:
    cases = []
    for name in (MODEL, RECALL):
        heads = sorted(_zm(name).truth.heads)
        for h in heads if name == MODEL else heads[:1]:  # every truth head of the lesson's model, one layer-0 one
            _, layer, head = comp.parse(h)
            cases.append((name, layer, head))
    return cases


@exercise("atp.one_head", "Attribution patching of one head", "implement", "easy", 15,
          hint="z_corr from run_with_cache on pair.corrupted.tokens; inside torch.enable_grad(), run the clean tokens "
               "with a hook on hook_z that keeps and returns leaf = z.clone(), m = logit_diff(logits, pair), "
               "(grad,) = torch.autograd.grad(m, [leaf]); return float(((z_corr - leaf.detach())[:, :, head] * "
               "grad[:, :, head]).sum())")
def _one_head(fn) -> str:
    lines = []
    for name, layer, head in _one_head_cases():
        zm, pair = _zm(name), _pairs(name)
        case = _one_head_case(name, layer, head)
        estimate, real = case["estimate"], case["real"]
        got = number(call(fn, zm.model, pair, layer, head), f"{name} L{layer}H{head}")
        if not _close(got, estimate):
            raise Wrong(f"{name}, L{layer}H{head} on the checker's pairs: got {got:+.5f}, attribution patching gives "
                        f"{estimate:+.5f}", _first_match(got, _one_head_neighbours(name, layer, head)))
        linear = zm.model.cfg.attn_only and zm.model.cfg.normalization_type is None and layer == zm.model.cfg.n_layers - 1
        if linear and not _close(got, real, rel=1e-3, atol=1e-3):
            raise Wrong(f"{name}, L{layer}H{head}: your estimate {got:+.5f} is not the real patch {real:+.5f}, "
                        "although nothing but linear maps lies between this head and the logits")
        lines.append(f"{name} L{layer}H{head}: estimate {got:+.3f}, real {real:+.3f}"
                     + (" (exact: linear to the logits)" if linear else ""))
    return "your estimates match attribution patching; " + "; ".join(lines)


# ---- 16.2 ----------------------------------------------------------------------------------


@cache
def _every_head_case(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """toylab's node attribution of every head and the real patch's shares, both [layer, head]."""
    zm, pair = _zm(name), _pairs(name)
    cfg = zm.model.cfg
    nodes = methods.eap(zm.model, pair).nodes()
    want = torch.tensor([[nodes[comp.head_id(layer, h)] for h in range(cfg.n_heads)] for layer in range(cfg.n_layers)])
    return want, noising_shares(zm.model, pair)


def _every_head_neighbours(name: str) -> list[tuple[torch.Tensor, str]]:
    """What a learner computes by mistake, [layer, head] each, with what to say about it."""
    zm, pair = _zm(name), _pairs(name)
    model, cfg = zm.model, zm.model.cfg
    want, real = _every_head_case(name)
    m_clean, m_corr = _metric(model, pair.clean.tokens, pair), _metric(model, pair.corrupted.tokens, pair)
    hooks = [f"blocks.{layer}.attn.hook_z" for layer in range(cfg.n_layers)]
    clean, corrupted = _cached(model, pair.clean.tokens, hooks), _cached(model, pair.corrupted.tokens, hooks)

    def estimate(grads: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([((corrupted[h] - clean[h]) * grads[h]).sum((0, 1, 3)) for h in hooks]) / (m_corr - m_clean)

    return [
        (estimate(_gradients(model, pair.clean.tokens, pair, hooks, detach=True)[1]),
         ("each layer's z was detached from what feeds it, so the gradient at an early layer counts only the paths "
          "that skip the later heads: return z.clone() from each hook, which stays in the graph, not z.detach()")),
        (want * (m_corr - m_clean), ("that is the change of m: divide by m_corr - m_clean, to get the share of the "
                                     "effect that patching each head removes")),
        (-want, ("the sign: divide by m_corr - m_clean (the share removed is (m_clean - m_patched) / "
                 "(m_clean - m_corr), and the estimate is m_patched - m_clean)")),
        (estimate(_gradients(model, pair.corrupted.tokens, pair, hooks)[1]),
         "that takes the gradient on the corrupted run: take it on the clean run"),
        (real, "those are the real patches (activation_patching): estimate them from the gradient instead"),
    ]


class _Forwards:
    """Counts the model's forward passes while the learner's function runs (the embedding fires once a pass)."""

    def __init__(self, model):
        self.model, self.n = model, 0

    def __call__(self, x: torch.Tensor, hook) -> None:
        self.n += 1

    def run(self, fn: Callable, *args: Any) -> Any:
        with self.model.hooks([("hook_embed", self)]):
            return call(fn, *args)


@exercise("atp.every_head", "Every head from one backward pass", "implement", "medium", 15,
          hint="cache every layer's hook_z on the corrupted run; on the clean run hook every hook_z with its own leaf "
               "tensor, take torch.autograd.grad(m, leaves) once, sum (z_corr - z_clean) * grad over batch, pos and "
               "d_head per head, stack the layers and divide by m_corr - m_clean")
def _every_head(fn) -> str:
    lines = []
    for name in (MODEL, IOI, RECALL):
        zm, pair = _zm(name), _pairs(name)
        want, real_shares = _every_head_case(name)
        counter = _Forwards(zm.model)
        got = counter.run(fn, zm.model, pair)
        what = f"{name} on the checker's pairs"

        def same(a: torch.Tensor, b: torch.Tensor) -> bool:
            return torch.allclose(a.detach().double(), b.double(), atol=1e-4, rtol=1e-3)

        hint = None
        if isinstance(got, torch.Tensor) and got.shape == want.shape and not same(got, want):
            hint = next((says for value, says in _every_head_neighbours(name)
                         if same(got, value) and not same(value, want)), None)
        expect_close(got, want, what, atol=1e-4, hint=hint)
        if counter.n > 3:
            raise Wrong(f"{what}: your function ran {counter.n} forward passes",
                        "one forward pass on each input and one backward pass for every head together: hook every "
                        "layer's hook_z at once and call torch.autograd.grad once")
        heads = head_ids(zm.model.cfg)
        mine = {h: float(got[comp.parse(h)[1:]]) for h in heads}
        real = {h: float(real_shares[comp.parse(h)[1:]]) for h in heads}
        lines.append(f"{name} {correlation(mine, real):+.2f}")
    return ("your estimates match methods.eap(...).nodes() on three models, from one backward pass; their correlation "
            "with patching each head for real: " + ", ".join(lines))


# ---- 16.3 ----------------------------------------------------------------------------------


def _edge_cases() -> list[tuple[str, Edge]]:
    cases = [(MODEL, e) for e in sorted(_zm(MODEL).truth.edges)] + [(MODEL, Edge("L0H2", "L1H1", "q"))]
    recall = _zm(RECALL).truth.edges
    cases += [(RECALL, e) for e in sorted(recall) if e.receiver.startswith("MLP") or e.sender.startswith("MLP")]
    return cases


@cache
def _eap(name: str):
    return methods.eap(_zm(name).model, _pairs(name))


def _edge_neighbours(name: str, edge: Edge) -> dict[str, float]:
    """What a learner computes by mistake for one edge."""
    zm, pair = _zm(name), _pairs(name)
    model, cfg = zm.model, zm.model.cfg
    (s_hook, s_head), (r_hook, r_head) = sender_site(edge), receiver_site(cfg, edge)
    m_clean, m_corr = _metric(model, pair.clean.tokens, pair), _metric(model, pair.corrupted.tokens, pair)
    want = _eap(name)[edge]
    kind, layer, _ = comp.parse(edge.receiver)
    stream = (f"blocks.{layer}.hook_resid_pre" if kind == "head" else f"blocks.{layer}.hook_resid_mid"
              if kind == "mlp" else r_hook)
    hooks = sorted({s_hook, r_hook, stream})
    _, grads = _gradients(model, pair.clean.tokens, pair, [r_hook])
    _, stream_grads = _gradients(model, pair.clean.tokens, pair, [stream])
    _, corr_grads = _gradients(model, pair.corrupted.tokens, pair, [r_hook])
    clean, corrupted = _cached(model, pair.clean.tokens, hooks), _cached(model, pair.corrupted.tokens, hooks)

    def head(x: torch.Tensor, index: int | None) -> torch.Tensor:
        return x[:, :, index] if index is not None else x

    delta = head(corrupted[s_hook] - clean[s_hook], s_head)
    scale = m_corr - m_clean
    out = {
        "the sign: the estimate of m_patched - m_clean is (s_corr - s_clean) . grad, divided by m_corr - m_clean":
            -want,
        "that is the change of m: divide it by m_corr - m_clean": want * scale,
        "that is the gradient of the corrupted run: take it on the clean run":
            float((delta * head(corr_grads[r_hook], r_head)).sum()) / scale,
    }
    if stream != r_hook:
        out["that is the gradient at the residual stream, which every reader of it shares: take it at the receiver's "
            "own input, receiver_site(cfg, edge)"] = float((delta * stream_grads[stream]).sum()) / scale
    if s_head is not None:
        whole = f"blocks.{comp.parse(edge.sender)[1]}.hook_attn_out"
        change = _cached(model, pair.corrupted.tokens, [whole])[whole] - _cached(model, pair.clean.tokens, [whole])[whole]
        out["that is the whole layer's attention output: the sender is one head, its slice of hook_result"] = \
            float((change * head(grads[r_hook], r_head)).sum()) / scale
    return {says: value for says, value in out.items() if not _close(value, want)}


@exercise("atp.edge", "One edge by hand", "implement", "medium", 20,
          hint="(s_hook, s_head), (r_hook, r_head) = sender_site(edge), receiver_site(model.cfg, edge); cache s_hook "
               "on the corrupted run; on the clean run record s_hook and replace r_hook by x.clone(), kept; "
               "sum (s_corr - s_clean)[:, :, s_head] * grad[:, :, r_head] (no index where the head is None) and "
               "divide by m_corr - m_clean")
def _edge(fn) -> str:
    cases = _edge_cases()
    for name, edge in cases:
        zm, pair = _zm(name), _pairs(name)
        want = _eap(name)[edge]
        got = number(call(fn, zm.model, pair, edge), f"{name} {edge}")
        if not _close(got, want):
            raise Wrong(f"{name}, {edge} on the checker's pairs: got {got:+.5f}, EAP gives {want:+.5f}",
                        _first_match(got, _edge_neighbours(name, edge)))
    kinds = sorted({e.kind for _, e in cases})
    return (f"your scores match methods.eap on {len(cases)} edges of {MODEL} and {RECALL} (kinds {', '.join(kinds)}; "
            "senders embed, heads and MLPs; receivers heads, MLPs and the logits)")


# ---- 16.4 ----------------------------------------------------------------------------------


def _edge_answer(value: Any, what: str, cfg) -> Edge:
    """A learner's edge: an Edge, a (sender, receiver, kind) tuple or the string str(Edge) gives."""
    if isinstance(value, str) and " -> " in value and value.endswith(")"):
        sender, rest = value.split(" -> ", 1)
        receiver, kind = rest[:-1].split(" (", 1) if " (" in rest else (rest, "")
        value = (sender.strip(), receiver.strip(), kind.strip())
    try:
        edge = Edge.parse(value)
        comp.check_edge(edge, cfg)
    except (ValueError, TypeError, KeyError) as err:
        raise Wrong(f"{what}: {value!r} is not an edge of this model ({err})",
                    "write an edge as Edge(sender, receiver, kind) or a tuple such as ('L0H2', 'L1H1', 'k')") from None
    return edge


def _edge_set(value: Any, what: str, cfg) -> set[Edge]:
    if isinstance(value, (Edge, str)) or (isinstance(value, tuple) and len(value) == 3
                                          and all(isinstance(v, str) for v in value)):
        value = [value]  # one edge where a set was asked for
    if isinstance(value, dict):
        raise Wrong(f"{what}: expected a set of edges, got a dict")
    try:
        items = list(value)
    except TypeError:
        raise Wrong(f"{what}: expected a set of edges, got {value!r}") from None
    return {_edge_answer(v, what, cfg) for v in items}


@cache
def _lesson_scores(name: str, seed: int = SEED):
    """EAP and edge patching on the lesson's own pairs of a zoo model (what the lesson shows)."""
    zm = _zm(name, seed)
    pairs = pair(zm)
    return methods.eap(zm.model, pairs), methods.edge_patching(zm.model, pairs)


@exercise("atp.understated", "Predict where EAP understates", "answer", "medium", 10,
          hint="an edge is understated when methods.eap(...)[edge] < UNDERSTATED * methods.edge_patching(...)[edge]; "
               "look for the edges whose effect reaches the answer through a head's query or key, and the edges "
               "upstream of those")
def _understated_answer(answer: Any) -> str:
    names = (MODEL, TRAP)
    if not isinstance(answer, dict) or set(answer) != set(names):
        raise Wrong(f"answer with a dict with the keys {list(names)} (model name -> set of edges), got {answer!r}")
    lines = []
    for name in names:
        zm = _zm(name)
        eap, real = _lesson_scores(name)
        truth = set(zm.truth.edges)
        want = understated(eap.scores, real.scores, truth)
        got = _edge_set(answer[name], name, zm.model.cfg)
        if outside := sorted(got - truth):
            raise Wrong(f"{name}: {outside[0]} is not an edge of the truth", "answer among zm.truth.edges, the edges "
                        "the lesson printed for each model")
        if right := sorted(got - want):
            edge = right[0]
            raise Wrong(f"{name}: EAP scores {edge} {eap[edge]:+.3f} and patching it for real removes {real[edge]:+.3f}: "
                        "EAP gets this one about right",
                        "an edge whose path to the logits is linear (a head's output to the logits, a value input "
                        "read by a head that writes the answer) is estimated well")
        if missing := sorted(want - got):
            edge = missing[0]
            says = ("the edge into a head's query or key: its effect passes that head's softmax" if edge.kind in "qk"
                    else "its receiver's output reaches the answer only through a later head's query or key")
            raise Wrong(f"{name}: you left out {edge}: EAP scores it {eap[edge]:+.3f}, patching it for real removes "
                        f"{real[edge]:+.3f}", says)
        lines.append(f"{name}: " + ", ".join(f"{e} (EAP {eap[e]:+.3f}, real {real[e]:+.3f})" for e in sorted(want)))
    return "; ".join(lines) + ". Each reaches the answer through an attention pattern"


# ---- 16.5 ----------------------------------------------------------------------------------


def _other_seed() -> int:
    return next(s for s in zoo.recipe(TRAP).seeds if s != SEED)


@cache
def _ig(seed: int, steps: int):
    zm = _zm(TRAP, seed)
    return methods.eap_ig(zm.model, pair(zm), steps=steps)


@exercise("atp.ig_steps", "Enough steps", "answer", "easy", 10,
          hint="try methods.eap_ig(trap.model, trap_pairs, steps=s) for growing s and compare each understated edge "
               "with methods.edge_patching: the Riemann sum needs a step small against the width of the switch")
def _ig_steps(answer: Any) -> str:
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise Wrong(f"answer with a number of steps, an int, got {answer!r}")
    if not 1 <= answer <= MAX_STEPS:
        raise Wrong(f"{answer} steps: answer between 1 and MAX_STEPS ({MAX_STEPS}); each step is a forward and a "
                    "backward pass", "fewer will do: look at the sweep of section 5")
    lines = []
    for seed in (SEED, _other_seed()):
        zm = _zm(TRAP, seed)
        eap, real = _lesson_scores(TRAP, seed)
        wanted = sorted(understated(eap.scores, real.scores, zm.truth.edges))
        ig = _ig(seed, answer)
        for edge in wanted:
            if abs(ig[edge] - real[edge]) > IG_TOLERANCE:
                if ig[edge] > real[edge]:
                    says = ("too large: with an even number of steps one point lands on the switch at alpha = 1/2, "
                            "where the gradient is steepest, and stands for a whole step; take more steps")
                else:
                    says = ("too small: the points alpha = k/steps miss most of the switch, where the gradient is; "
                            "take more steps")
                raise Wrong(f"{TRAP} (seed {seed}): with {answer} steps EAP-IG scores {edge} {ig[edge]:+.3f}, patching "
                            f"it for real removes {real[edge]:+.3f} (tolerance {IG_TOLERANCE})", says)
        lines.append(f"seed {seed}: " + ", ".join(f"{e} {ig[e]:+.3f} (real {real[e]:+.3f})" for e in wanted))
    return f"with {answer} steps EAP-IG recovers what EAP misses; " + "; ".join(lines)


# ---- 16.6 ----------------------------------------------------------------------------------


@cache
def _reports() -> dict[str, Any]:
    """The harness's reports of EAP and of edge noising on the trap, as the lesson runs them."""
    return {name: validate.score(validate.BASELINES[name], names=[TRAP], seeds=[SEED], label=name,
                                 n_pairs=SCORING_PAIRS) for name in BASELINES}


@exercise("atp.validate", "What the figures say", "answer", "medium", 10,
          hint="compare the two reports' rows for trap-saturation: the figure where EAP falls far below edge-noising "
               "exposes it; EAP's circuit is reports['eap'].entries[...].circuit, set it against trap.truth.edges")
def _validate(answer: Any) -> str:
    keys = ("exposes", "missing")
    if not isinstance(answer, dict) or set(answer) != set(keys):
        raise Wrong(f"answer with a dict with the keys {keys}, got {answer!r}")
    reports = _reports()
    gaps = shortfalls(reports, TRAP)
    exposes = max(gaps, key=gaps.get)
    eap, real = (reports[name].summary()[TRAP] for name in BASELINES)
    if answer["exposes"] not in FIGURES:
        raise Wrong(f"exposes: answer one of {list(FIGURES)}, got {answer['exposes']!r}")
    if answer["exposes"] != exposes:
        raise Wrong(f"exposes: EAP scores {answer['exposes']} {eap[answer['exposes']][0]:.3f} against "
                    f"{real[answer['exposes']][0]:.3f} for edge noising, a gap of {gaps[answer['exposes']]:.3f}; "
                    f"{exposes} differs by {gaps[exposes]:.3f}",
                    "a ranking figure counts pairs of edges ordered right, and one edge ranked a little low costs few "
                    "pairs; which figure does a circuit with one link missing ruin?")
    zm = _zm(TRAP)
    entry = next(e for e in reports["eap"].entries if e.model == TRAP)
    truth = set(zm.truth.edges)
    want = truth - set(entry.circuit)
    got = _edge_set(answer["missing"], "missing", zm.model.cfg)
    if got != want:
        extra = sorted(got - want)
        says = (f"{extra[0]} is in EAP's circuit" if extra and extra[0] in truth else
                f"{extra[0]} is not an edge of the truth" if extra else
                f"EAP's circuit lacks {min(want - got)} too")
        raise Wrong(f"missing: {sorted(map(str, got))} is not what EAP's circuit lacks of the truth",
                    says + ": compare entry.circuit with trap.truth.edges")
    return (f"EAP's edge AUROC is {eap['edge_auroc[qkv]'][0]:.3f} (edge noising {real['edge_auroc[qkv]'][0]:.3f}), "
            f"but its circuit keeps {eap['faithfulness'][0]:.3f} of the effect (edge noising "
            f"{real['faithfulness'][0]:.3f}): it lacks {', '.join(map(str, sorted(want)))}, and the chain carries "
            "nothing without it")
