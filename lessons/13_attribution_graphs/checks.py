"""Checkers for lesson 13, attribution graphs: implementations are compared with toylab.sae.Transcoder, the graph's
own adjacency and toylab.validate.feature_graphs on the checker's own transcoders and prompts (never the lesson's
objects); answers are recomputed from the fixtures' reference transcoders and checked against the truth."""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

from toylab import sae
from toylab.lessons.checking import call, number, zoo_model
from toylab.lessons.exercise import Wrong, exercise
from toylab.validate import map_nodes, true_feature_circuit

from .fixtures import (
    EDGE_THRESHOLD,
    MODEL,
    NODE_THRESHOLD,
    answer,
    compare_prompts,
    graph,
    prompt,
    train,
)

CHECK_SEED = 10  # the checker's random transcoders and inputs, never the lesson's
FVU_BAR, RECOVERED_BAR = 0.02, 0.98  # exercise 13.2: what a trained transcoder reaches (0.001-0.002 and 1.000)
KINDS = ("per-layer", "skip")
CONJUNCTION_STATUSES = ("found", "pruned", "unmatched")


def _zm():
    return zoo_model(MODEL)


@cache
def _transcoder(kind: str = "per-layer") -> sae.Transcoder:
    """The fixtures' reference transcoder of ``kind``, trained once per process (the lesson's, on the same machine)."""
    zm = _zm()
    return train(zm.model, zm.task, kind=kind)


# ---- 13.1 ----------------------------------------------------------------------------------


def _random_transcoder(architecture: str, skip: bool, seed: int) -> sae.Transcoder:
    """A per-layer transcoder of two layers with every parameter random (biases and the skip path too)."""
    cfg = sae.TranscoderConfig(n_layers=2, d_in=12, d_out=10, d_latent=16, architecture=architecture,
                               k=3 if architecture == "topk" else None, skip=skip, seed=seed)
    tc = sae.Transcoder(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tc.b_enc.copy_(torch.randn(tc.b_enc.shape, generator=g) * 0.5)
        tc.b_dec.copy_(torch.randn(tc.b_dec.shape, generator=g))
        if skip:
            tc.W_skip.copy_(torch.randn(tc.W_skip.shape, generator=g) * 0.3)
    return tc.requires_grad_(False)


def _transcode_mistake(got: Any, tc: sae.Transcoder, x: torch.Tensor) -> str | None:
    """Which neighbouring quantity a wrong ``transcode`` returned."""
    if not isinstance(got, (tuple, list)) or len(got) != 2 or not all(isinstance(t, torch.Tensor) for t in got):
        return "return a pair (y_hat, z) of tensors, as transcoder(x) does"
    y_got, z_got = (t.detach() for t in got)
    y, z = tc(x)
    pre = tc.pre_activations(x)
    if z_got.shape == y.shape and y_got.shape == z.shape and z.shape != y.shape:
        return "the order is (y_hat, z): the prediction first, the features second"
    if z_got.shape == z.shape and torch.allclose(z_got, pre, atol=1e-5):
        return "z are the pre-activations: apply the activation (ReLU, or TopK then ReLU)"
    if z_got.shape == z.shape and torch.allclose(z_got, tc.activate(pre - tc.b_enc), atol=1e-5):
        return "add the encoder bias b_enc[l] before the activation"
    if tc.cfg.architecture == "topk" and z_got.shape == z.shape and torch.allclose(z_got, torch.relu(pre), atol=1e-5):
        return "TopK keeps only the k largest pre-activations of each row and zeroes the rest"
    if y_got.shape == y.shape:
        if torch.allclose(y_got, y - tc.b_dec, atol=1e-4):
            return "add the decoder bias b_dec[l]"
        if tc.cfg.skip and torch.allclose(y_got, y - torch.einsum("bld,ldo->blo", x, tc.W_skip), atol=1e-4):
            return "with cfg.skip, add the skip path x[l] @ W_skip[l]"
    return None


@exercise("graphs.transcode", "A transcoder by hand", "implement", "easy", 10,
          hint="pre = einsum('bld,ldf->blf', x, W_enc) + b_enc; z = relu(pre) (topk: keep the k largest, ReLU'd); "
               "y_hat = einsum('blf,lfo->blo', z, W_dec[l, l] stacked over l) + b_dec (+ einsum with W_skip)")
def _transcode(fn) -> str:
    cases = [("relu", False), ("topk", False), ("relu", True), ("topk", True)]
    for i, (architecture, skip) in enumerate(cases):
        tc = _random_transcoder(architecture, skip, CHECK_SEED + i)
        x = torch.randn(6, 2, 12, generator=torch.Generator().manual_seed(CHECK_SEED + 100 + i))
        with torch.no_grad():
            want_y, want_z = tc(x)
            got = call(fn, tc, x.clone())
        what = f"a per-layer {architecture} transcoder" + (" with a skip path" if skip else "")
        ok = (isinstance(got, (tuple, list)) and len(got) == 2
              and all(isinstance(t, torch.Tensor) for t in got)
              and got[0].shape == want_y.shape and got[1].shape == want_z.shape
              and torch.allclose(got[0].detach().float(), want_y, atol=1e-4, rtol=1e-4)
              and torch.allclose(got[1].detach().float(), want_z, atol=1e-5, rtol=1e-4))
        if not ok:
            shapes = (tuple(t.shape) for t in got) if isinstance(got, (tuple, list)) and \
                all(isinstance(t, torch.Tensor) for t in got) else None
            raise Wrong(f"{what}, two layers: your (y_hat, z) differ from transcoder(x)"
                        + (f" (shapes {list(shapes)}, expected {[tuple(want_y.shape), tuple(want_z.shape)]})"
                           if shapes is not None else ""), _transcode_mistake(got, tc, x))
    return "your transcoder matches toylab.sae.Transcoder: ReLU and TopK, with and without a skip path"


# ---- 13.2 ----------------------------------------------------------------------------------


def _figure(value: Any, what: str) -> float:
    if isinstance(value, (tuple, list)) and len(value) == 1:  # transcoder_scores' per-layer tuple, one layer
        value = value[0]
    if isinstance(value, (tuple, list)):
        raise Wrong(f"{what}: the model has one MLP; give one number, got {value!r}")
    return number(value, what)


@exercise("graphs.train", "Train a transcoder, and report it", "build", "easy", 10,
          hint="tc = sae.Transcoder(transcoder_config(model)); x, y = training_data(model, task); "
               "sae.train_transcoder(tc, x, y, steps=steps()); s = sae.transcoder_scores(model, tc, "
               "task.eval_batches()['test']); answer {'transcoder': tc, 'fvu': s.fvu[0], 'loss_recovered': "
               "s.loss_recovered}")
def _train(answer: Any) -> str:
    keys = ("transcoder", "fvu", "loss_recovered")
    if not isinstance(answer, dict) or set(answer) != set(keys):
        raise Wrong(f"answer with a dict with the keys {keys}, got {answer!r}")
    tc = answer["transcoder"]
    if not isinstance(tc, sae.Transcoder):
        raise Wrong(f"transcoder: pass the trained toylab.sae.Transcoder itself, got {type(tc).__name__}")
    zm = _zm()
    cfg = zm.model.cfg
    if (tc.cfg.n_layers, tc.cfg.d_in, tc.cfg.d_out) != (cfg.n_layers, cfg.d_model, cfg.d_model):
        raise Wrong(f"transcoder: it reads {tc.cfg.n_layers} layer(s) of width {tc.cfg.d_in}; {MODEL} has "
                    f"{cfg.n_layers} MLP of width {cfg.d_model}", "use transcoder_config(model)")
    with torch.no_grad():
        s = sae.transcoder_scores(zm.model, tc, zm.task.eval_batches()["test"])
    fvu, recovered = _figure(answer["fvu"], "fvu"), _figure(answer["loss_recovered"], "loss_recovered")
    if abs(fvu - s.fvu[0]) > 1e-5 + 1e-3 * abs(s.fvu[0]) or abs(recovered - s.loss_recovered) > 1e-4:
        swapped = abs(fvu - s.loss_recovered) <= 1e-4 and abs(recovered - s.fvu[0]) <= 1e-4
        raise Wrong(f"your figures, FVU {fvu:.5f} and loss recovered {recovered:.5f}, are not your transcoder's on "
                    f"the test set: FVU {s.fvu[0]:.5f}, loss recovered {s.loss_recovered:.5f}",
                    "fvu first, loss_recovered second" if swapped else
                    "measure on task.eval_batches()['test'] (every ordered pair once) with sae.transcoder_scores")
    problems = []
    if not s.fvu[0] <= FVU_BAR:
        problems.append(f"FVU {s.fvu[0]:.3f} (needs at most {FVU_BAR})")
    if not s.loss_recovered >= RECOVERED_BAR:
        problems.append(f"loss recovered {s.loss_recovered:.3f} (needs at least {RECOVERED_BAR})")
    if problems:
        raise Wrong("your transcoder does not replace the MLP: " + "; ".join(problems),
                    "train it on the MLP's inputs (x) and outputs (y) of training_data(model, task), "
                    "for steps() steps: sae.train_transcoder(tc, x, y, steps=steps())")
    return (f"on the test set: FVU {s.fvu[0]:.4f}, loss recovered {s.loss_recovered:.4f}, L0 {s.l0[0]:.1f} features "
            f"per position of {tc.cfg.d_latent}")


# ---- 13.3 ----------------------------------------------------------------------------------


@cache
def _edge_graphs() -> tuple:
    """The checker's graphs: a marked pair in the other order than the lesson's, and an unmarked pair."""
    zm = _zm()
    task = zm.task
    marked = prompt(task, 5, swap=True)
    table = task.table
    a, b = next((a, b) for a in range(task.n_features) for b in range(a + 1, task.n_features) if table[a, b] == 0
                and (a, b) != (0, 1))
    unmarked = task.make_batch(torch.tensor([b]), torch.tensor([a])).tokens[0]
    with torch.no_grad():
        return tuple(graph(zm.model, _transcoder(), tokens) for tokens in (marked, unmarked))


def _logit_edge_mistake(got: float, g, tc, model, feature: int, logit: int) -> str | None:
    f, c = g.nodes[feature], g.nodes[logit]
    W_U = model.unembed.W_U
    row = tc.W_dec[f.layer, f.layer, f.index]
    demeaned = W_U[:, c.index] - W_U.mean(1)
    neighbours = [
        (float(f.value * row @ W_U[:, c.index]), "demean the logit: its direction is W_U[:, c] - W_U.mean(1)"),
        (float(row @ demeaned), "multiply by the feature's activation (graph.nodes[feature].value)"),
        (float(-f.value * row @ demeaned), "the sign is flipped"),
        (float(f.value * tc.W_enc[f.layer, :, f.index] @ demeaned),
         "a feature writes its decoder row, W_dec[layer, layer, index], not its encoder column"),
    ]
    if f.pos != g.scored_pos:
        says = (f"this feature is at position {f.pos}, not the scored position {g.scored_pos}: in a one-layer model "
                "nothing moves its write there, so its edge to a logit is 0")
        neighbours.insert(0, (float(f.value * row @ demeaned), says))
    for value, says in neighbours:
        if abs(got - value) <= 1e-3 * max(1.0, abs(value)) and abs(value - float(g.adjacency[logit, feature])) > 1e-6:
            return says
    return None


@exercise("graphs.logit_edge", "A feature's edge to a logit", "implement", "medium", 15,
          hint="0 unless graph.nodes[feature].pos == graph.scored_pos; else activation x W_dec[l, l, index] @ "
               "(W_U[:, c] - W_U.mean(1)) with c = graph.nodes[logit].index")
def _logit_edge(fn) -> str:
    zm = _zm()
    tc = _transcoder()
    n = 0
    for g in _edge_graphs():
        for logit in g.indices("logit").tolist():
            for feature in g.indices("feature").tolist():
                want = float(g.adjacency[logit, feature])
                with torch.no_grad():
                    got = number(call(fn, zm.model, tc, g, feature, logit), "the direct effect")
                if abs(got - want) > 1e-3 * max(1.0, abs(want)):
                    raise Wrong(f"{g.nodes[feature]} -> {g.nodes[logit]} on the prompt "
                                f"{' '.join(zm.task.to_str_tokens(g.tokens))}: got {got:.4f}, the graph's "
                                f"adjacency holds {want:.4f}",
                                _logit_edge_mistake(got, g, tc, zm.model, feature, logit))
                n += 1
    return f"your {n} direct effects of features on logits match the graph's adjacency, on a marked and an unmarked prompt"


# ---- 13.4 ----------------------------------------------------------------------------------


def _circuit_prompts(task) -> list[torch.Tensor]:
    """Marked pairs in both orders, and an unmarked prompt."""
    table = task.table
    a, b = next((a, b) for a in range(task.n_features) for b in range(a + 1, task.n_features) if table[a, b] == 0)
    return [prompt(task, 3), prompt(task, 3, swap=True), prompt(task, 17),
            task.make_batch(torch.tensor([a]), torch.tensor([b])).tokens[0]]


def _as_sets(got: Any) -> tuple[set, set]:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Wrong(f"return a pair (nodes, edges), got {got!r}")
    nodes, edges = got
    try:
        nodes = set(nodes)
        edges = {tuple(e) for e in edges}
    except TypeError:
        raise Wrong(f"nodes: a set of names, edges: a set of (source, target) pairs; got {got!r}") from None
    return nodes, edges


@exercise("graphs.true_circuit", "The true circuit of a prompt", "implement", "easy", 10,
          hint="nodes: the input features named after the prompt's tokens, the conjunction whose value is "
               "task.variables(tokens[None])['conjunction'], and 'logit:' + task.output_names[class]; edges: the "
               "truth.feature_edges with both ends in nodes")
def _true_circuit(fn) -> str:
    zm = _zm()
    task, truth = zm.task, zm.truth
    for tokens in _circuit_prompts(task):
        cls = answer(task, tokens)
        want_nodes, want_edges = true_feature_circuit(truth, task, tokens, cls)
        nodes, edges = _as_sets(call(fn, truth, task, tokens.clone()))
        text = " ".join(task.to_str_tokens(tokens))
        if nodes != want_nodes:
            extra, missing = sorted(map(str, nodes - want_nodes)), sorted(map(str, want_nodes - nodes))
            hint = None
            if {"BOS", "="} & nodes:
                hint = "BOS and '=' are tokens, not features: keep the input features (truth features, variable None)"
            elif any(m.startswith("logit:") for m in missing):
                hint = "the circuit ends at the answer's logit, 'logit:' + task.output_names[class]"
            elif missing and cls != 0:
                hint = "a conjunction is on where task.variables(...)['conjunction'] equals its value"
            raise Wrong(f"{text} (class {task.output_names[cls]}): nodes you added {extra}, nodes you missed {missing}",
                        hint)
        if edges != want_edges:
            reversed_edges = {(t, s) for s, t in edges}
            hint = ("edges go (source, target), as truth.feature_edges lists them" if reversed_edges == want_edges
                    else "keep the declared edges with both ends among the nodes" if edges > want_edges else None)
            raise Wrong(f"{text}: edges you added {sorted(edges - want_edges)}, edges you missed "
                        f"{sorted(want_edges - edges)}", hint)
    return ("your circuits match validate.feature_graphs.true_feature_circuit on marked pairs in both orders and an "
            "unmarked pair")


# ---- 13.5 ----------------------------------------------------------------------------------


@cache
def _found() -> dict[str, Any]:
    """The lesson's prompt's pruned graph against its true circuit, with the reference transcoder."""
    zm = _zm()
    task, truth = zm.task, zm.truth
    tokens = prompt(task)
    with torch.no_grad():
        g = graph(zm.model, _transcoder(), tokens)
    on, _ = true_feature_circuit(truth, task, tokens, answer(task, tokens))
    mapped, best = map_nodes(g, truth, task, on)
    pruned = g.prune(NODE_THRESHOLD, EDGE_THRESHOLD)
    kept = {mapped[i] for i in pruned.node_mask.nonzero().flatten().tolist()} - {None}
    everywhere = set(mapped) - {None}
    conjunction = next(f.name for f in truth.features if f.variable is not None and f.name in on)
    status = "found" if conjunction in kept else "pruned" if conjunction in everywhere else "unmatched"
    return {"on": on, "found": on & kept, "missed": on - kept, "unpruned": on & everywhere, "conjunction": status,
            "name": conjunction, "best": best[conjunction]}


def _names(value: Any, what: str) -> set[str]:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise Wrong(f"{what}: expected a set of truth names such as 'f3' or 'logit:f3&f6', got {value!r}")
    items = set(value)
    if not all(isinstance(v, str) for v in items):
        raise Wrong(f"{what}: expected names (strings), got {sorted(map(repr, items))}")
    return items


@exercise("graphs.found", "Found and missed", "answer", "medium", 10,
          hint="kept = {mapped[i] for i in pruned.node_mask.nonzero()} - {None}; found = on & kept; missed = on - kept; "
               "the conjunction is 'pruned' if it is among the mapped names of the full graph but not kept")
def _found_answer(answer: Any) -> str:
    keys = ("found", "missed", "conjunction")
    if not isinstance(answer, dict) or set(answer) != set(keys):
        raise Wrong(f"answer with a dict with the keys {keys}, got {answer!r}")
    want = _found()
    found, missed = _names(answer["found"], "found"), _names(answer["missed"], "missed")
    if not (found | missed) <= want["on"]:
        strangers = sorted((found | missed) - want["on"])
        labels = any(s.startswith(("T@", "F", "E")) and "@" in s for s in strangers)
        raise Wrong(f"{strangers} are not features of the prompt's true circuit {sorted(want['on'])}",
                    "name the true features, as `on` does, not the graph's nodes" if labels else
                    "BOS and '=' are tokens no true feature is named after" if {"BOS", "="} & set(strangers) else None)
    if found != want["found"] or missed != want["missed"]:
        if found == want["missed"] and missed == want["found"]:
            hint = "found and missed are swapped"
        elif found == want["unpruned"] and found != want["found"]:
            hint = "that is the full graph: count only the nodes the pruning keeps (pruned.node_mask)"
        elif found | missed != want["on"]:
            hint = f"found and missed together are the whole true circuit: {sorted(want['on'])}"
        else:
            hint = None
        raise Wrong(f"found {sorted(found)}, missed {sorted(missed)}: not what the pruned graph keeps", hint)
    if answer["conjunction"] not in CONJUNCTION_STATUSES:
        raise Wrong(f"conjunction: one of {CONJUNCTION_STATUSES}, got {answer['conjunction']!r}")
    if answer["conjunction"] != want["conjunction"]:
        says = {"found": f"{want['name']} is not among the kept nodes' names" if want["conjunction"] != "found" else "",
                "pruned": "no node of the full graph maps onto it, kept or not (look at `mapped`, every node)"
                if want["conjunction"] == "unmatched" else "a kept node maps onto it",
                "unmatched": "some node of the full graph maps onto it: look at `mapped`, not only the kept nodes"}
        raise Wrong(f"conjunction: {answer['conjunction']!r} is not what became of {want['name']}",
                    says[answer["conjunction"]] or None)
    return (f"found {sorted(want['found'])}, missed {sorted(want['missed'])}; the conjunction {want['name']} is "
            f"{want['conjunction']} (the best |cosine| of a graph feature with it: {want['best']:.2f})")


# ---- 13.6 ----------------------------------------------------------------------------------


@cache
def _comparison() -> dict[str, dict[str, float]]:
    zm = _zm()
    out = {}
    for kind in KINDS:
        with torch.no_grad():
            graphs = [graph(zm.model, _transcoder(kind), tokens) for tokens in compare_prompts(zm.task)]
        figures = torch.tensor([g.scores() for g in graphs]).mean(0)
        kept = [len(g.prune(NODE_THRESHOLD, EDGE_THRESHOLD).features()) for g in graphs]
        out[kind] = {"replacement": float(figures[0]), "completeness": float(figures[1]),
                     "features": sum(kept) / len(kept)}
    return out


@exercise("graphs.compare", "Per-layer against skip", "answer", "medium", 10,
          hint="for each transcoder, graphs = [graph(model, tc, t) for t in compare_prompts(task)]; average "
               "g.scores() (replacement, completeness) and len(g.prune(NODE_THRESHOLD, EDGE_THRESHOLD).features())")
def _compare(answer: Any) -> str:
    keys = (*KINDS, "fewer_features")
    if not isinstance(answer, dict) or set(answer) != set(keys):
        raise Wrong(f"answer with a dict with the keys {keys}, got {answer!r}")
    want = _comparison()
    figures = ("replacement", "completeness", "features")
    got = {}
    for kind in KINDS:
        row = answer[kind]
        if not isinstance(row, dict) or set(row) != set(figures):
            raise Wrong(f"{kind}: a dict with the keys {figures}, got {row!r}")
        got[kind] = {key: number(row[key], f"{kind}[{key!r}]") for key in figures}
    tolerance = {"replacement": 1e-3, "completeness": 1e-3, "features": 1e-6}
    for kind in KINDS:
        for key in figures:
            if abs(got[kind][key] - want[kind][key]) > tolerance[key]:
                other = KINDS[1 - KINDS.index(kind)]
                hint = None
                if all(abs(got[k][f] - want[KINDS[1 - KINDS.index(k)]][f]) <= tolerance[f] for k in KINDS for f in figures):
                    hint = "the kinds are swapped: 'skip' is train(model, task, kind='skip')"
                elif abs(got[kind]["replacement"] - want[kind]["completeness"]) <= 1e-3 and \
                        abs(got[kind]["completeness"] - want[kind]["replacement"]) <= 1e-3:
                    hint = "graph.scores() returns (replacement, completeness), in that order"
                elif key == "features" and abs(got[kind][key] - want[other][key]) > tolerance[key]:
                    hint = "count the features the pruning keeps, len(graph.prune(NODE_THRESHOLD, EDGE_THRESHOLD)" \
                           ".features()), averaged over compare_prompts(task)"
                raise Wrong(f"{kind}[{key!r}]: got {got[kind][key]:.4f}, the graphs of compare_prompts(task) give "
                            f"{want[kind][key]:.4f}", hint)
    difference = want["per-layer"]["features"] - want["skip"]["features"]
    fewer = "skip" if difference > 1e-9 else "per-layer" if difference < -1e-9 else "same"
    if answer["fewer_features"] != fewer:
        raise Wrong(f"fewer_features: {answer['fewer_features']!r}; the pruned graphs keep "
                    f"{want['per-layer']['features']:.2f} features (per-layer) and {want['skip']['features']:.2f} "
                    "(skip) on average", "answer 'per-layer', 'skip' or 'same'")
    return (f"per-layer: replacement {want['per-layer']['replacement']:.3f}, completeness "
            f"{want['per-layer']['completeness']:.3f}, {want['per-layer']['features']:.2f} features kept; skip: "
            f"{want['skip']['replacement']:.3f}, {want['skip']['completeness']:.3f}, {want['skip']['features']:.2f}")
