"""Lesson 13 (attribution graphs): each checker rejects the mistakes a learner makes, with a reason and a hint, and
passes toylab's own functions. (test_runner.py runs the lesson end to end, with and without its solutions.) Right
answers are computed here from the truth, toylab.validate.feature_graphs and the fixtures' reference transcoders,
which the checkers train once per process and these tests share."""

import pytest
import torch
from wrong_answers import wrong_answer_tests

from toylab import sae, zoo
from toylab.lessons import check, lesson_fixtures, load
from toylab.validate.feature_graphs import map_nodes, true_feature_circuit

FIXTURES = lesson_fixtures("graphs")
ZM = zoo.load(FIXTURES.MODEL)
CHECKS = load("graphs")


@pytest.fixture(autouse=True)
def no_grad():
    """As in the lessons, which turn gradients off."""
    with torch.no_grad():
        yield


def test_the_fixtures_prompts_and_configs():
    task = ZM.task
    tokens = FIXTURES.prompt(task)
    a, b = task.pairs[FIXTURES.PAIR].tolist()
    assert tokens.tolist() == [0, a + 2, b + 2, 1] and FIXTURES.answer(task, tokens) == FIXTURES.PAIR + 1
    assert FIXTURES.prompt(task, 2, swap=True)[1:3].tolist() == [int(task.pairs[2, 1]) + 2, int(task.pairs[2, 0]) + 2]
    assert [FIXTURES.answer(task, t) for t in FIXTURES.compare_prompts(task)] == list(range(1, FIXTURES.N_COMPARE + 1))
    cfg = FIXTURES.transcoder_config(ZM.model, kind="skip", architecture="topk")
    assert (cfg.n_layers, cfg.d_in, cfg.d_latent, cfg.skip, cfg.k) == (1, 32, 32, True, 4)
    with pytest.raises(ValueError, match="kind must be one of"):
        FIXTURES.transcoder_config(ZM.model, kind="sideways")


def test_node_cosines_and_top_inputs_read_the_reference_transcoder():
    tc = CHECKS._transcoder()
    task, truth = ZM.task, ZM.truth
    tokens = FIXTURES.prompt(task)
    graph = FIXTURES.graph(ZM.model, tc, tokens)
    on, _ = true_feature_circuit(truth, task, tokens, FIXTURES.answer(task, tokens))
    mapped, best = map_nodes(graph, truth, task, on)
    cosines = FIXTURES.node_cosines(graph, truth, mapped)
    features = {i for i, name in enumerate(mapped) if name is not None and graph.nodes[i].kind == "feature"}
    assert set(cosines) == features  # every feature that maps onto a true one, and no other node
    assert all(c >= 0.8 for c in cosines.values())  # map_nodes' threshold
    assert max(cosines.values(), default=0.0) == pytest.approx(best[task.output_names[FIXTURES.PAIR + 1]])
    node = graph.nodes[int(graph.indices("feature")[0])]
    (inputs,) = FIXTURES.top_inputs(ZM.model, tc, task, [(node.layer, node.pos, node.index)], k=3).values()
    assert 1 <= len(inputs) <= 3 and all(act > 0 for _, act in inputs)
    assert [act for _, act in inputs] == sorted((act for _, act in inputs), reverse=True)
    text, act = inputs[0]  # the top input, recomputed by hand
    names = text.split()
    prompt = task.make_batch(torch.tensor([int(names[0][1:])]), torch.tensor([int(names[1][1:])])).tokens
    x, _ = sae.mlp_activations(ZM.model, prompt)
    assert float(tc.encode(x)[node.pos, node.layer, node.index]) == pytest.approx(act, rel=1e-4)


# ---- mistakes in the implementations ---------------------------------------------------------


def _transcode(tc, x, activate=True, b_enc=True, b_dec=True, skip=True, topk=True, swap=False):
    cfg = tc.cfg
    pre = torch.einsum("bld,ldf->blf", x, tc.W_enc) + (tc.b_enc if b_enc else 0)
    z = pre
    if activate:
        if cfg.architecture == "topk" and topk:
            top = pre.topk(cfg.k, dim=-1)
            z = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        else:
            z = torch.relu(pre)
    y = torch.einsum("blf,lfo->blo", z, torch.stack([tc.W_dec[l, l] for l in range(cfg.n_layers)]))
    y = y + (tc.b_dec if b_dec else 0)
    if cfg.skip and skip:
        y = y + torch.einsum("bld,ldo->blo", x, tc.W_skip)
    return (z, y) if swap else (y, z)


def transcode_pre_activations(tc, x):
    return _transcode(tc, x, activate=False)


def transcode_without_b_enc(tc, x):
    return _transcode(tc, x, b_enc=False)


def transcode_without_b_dec(tc, x):
    return _transcode(tc, x, b_dec=False)


def transcode_without_skip(tc, x):
    return _transcode(tc, x, skip=False)


def transcode_relu_for_topk(tc, x):
    return _transcode(tc, x, topk=False)


def transcode_swapped(tc, x):
    return _transcode(tc, x, swap=True)


def _edge(model, tc, graph, feature, logit, demean=True, activation=True, any_pos=False, sign=1.0, encoder=False):
    f, c = graph.nodes[feature], graph.nodes[logit]
    if f.pos != graph.scored_pos and not any_pos:
        return 0.0
    W_U = model.unembed.W_U
    direction = W_U[:, c.index] - (W_U.mean(1) if demean else 0)
    row = tc.W_enc[f.layer, :, f.index] if encoder else tc.W_dec[f.layer, f.layer, f.index]
    return sign * float((f.value if activation else 1.0) * row @ direction)


def edge_not_demeaned(model, tc, graph, feature, logit):
    return _edge(model, tc, graph, feature, logit, demean=False)


def edge_without_activation(model, tc, graph, feature, logit):
    return _edge(model, tc, graph, feature, logit, activation=False)


def edge_at_every_position(model, tc, graph, feature, logit):
    return _edge(model, tc, graph, feature, logit, any_pos=True)


def edge_sign_flipped(model, tc, graph, feature, logit):
    return _edge(model, tc, graph, feature, logit, sign=-1.0)


def edge_from_encoder(model, tc, graph, feature, logit):
    return _edge(model, tc, graph, feature, logit, encoder=True)


def _circuit(truth, task, tokens, tokens_too=False, logit=True, conjunction=True, edges="both", reverse=False):
    names = task.to_str_tokens(tokens)
    cls = int(task.variables(tokens[None])["conjunction"][0])
    nodes = set(names) if tokens_too else {f.name for f in truth.features if f.variable is None and f.name in names}
    if conjunction:
        nodes |= {f.name for f in truth.features if f.variable is not None and f.value == cls}
    if logit:
        nodes.add("logit:" + task.output_names[cls])
    test = (lambda s, t: s in nodes and t in nodes) if edges == "both" else (lambda s, t: s in nodes or t in nodes)
    found = {(t, s) if reverse else (s, t) for s, t in truth.feature_edges if test(s, t)}
    return nodes, found


def circuit_with_bos_and_equals(truth, task, tokens):
    return _circuit(truth, task, tokens, tokens_too=True)


def circuit_without_logit(truth, task, tokens):
    return _circuit(truth, task, tokens, logit=False)


def circuit_without_conjunction(truth, task, tokens):
    return _circuit(truth, task, tokens, conjunction=False)


def circuit_edges_touching(truth, task, tokens):
    return _circuit(truth, task, tokens, edges="either")


def circuit_edges_reversed(truth, task, tokens):
    return _circuit(truth, task, tokens, reverse=True)


def circuit_nodes_only(truth, task, tokens):
    return _circuit(truth, task, tokens)[0]


# ---- mistakes in the answers ------------------------------------------------------------------


class Lazy:
    """An answer made when its test runs, not when the tests are collected (it needs the checker's transcoders)."""

    def __init__(self, name, make):
        self.__name__, self.make = name, make


def made(answer):
    return answer.make() if isinstance(answer, Lazy) else answer


def _trained(**changes):
    tc = CHECKS._transcoder()
    s = sae.transcoder_scores(ZM.model, tc, ZM.task.eval_batches()["test"])
    return {"transcoder": tc, "fvu": s.fvu[0], "loss_recovered": s.loss_recovered, **changes}


def _figures_of(tc):
    s = sae.transcoder_scores(ZM.model, tc, ZM.task.eval_batches()["test"])
    return {"transcoder": tc, "fvu": s.fvu[0], "loss_recovered": s.loss_recovered}


def _untrained():
    return _figures_of(sae.Transcoder(FIXTURES.transcoder_config(ZM.model)))


def _trained_on_inputs():  # x -> x: a transcoder of the MLP's input, not of the MLP
    tc = sae.Transcoder(FIXTURES.transcoder_config(ZM.model))
    x, _ = FIXTURES.training_data(ZM.model, ZM.task)
    sae.train_transcoder(tc, x, x, steps=200)
    return _figures_of(tc)


def _train_set_figures():
    tc = CHECKS._transcoder()
    x, y = FIXTURES.training_data(ZM.model, ZM.task)
    y_hat, _ = tc(x)
    fvu = float((y_hat - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
    return _trained(fvu=fvu)


def _swapped_figures():
    right = _trained()
    return {**right, "fvu": right["loss_recovered"], "loss_recovered": right["fvu"]}


def _found(**changes):
    want = CHECKS._found()
    return {"found": set(want["found"]), "missed": set(want["missed"]), "conjunction": want["conjunction"], **changes}


def _found_swapped():
    right = _found()
    return {**right, "found": right["missed"], "missed": right["found"]}


def _found_other_status():
    right = _found()["conjunction"]
    return _found(conjunction=next(s for s in ("found", "pruned", "unmatched") if s != right))


def _found_node_labels():  # the graph's node names instead of the truth's
    return _found(found={"T@1", "T@2", "logit 1@3"})


def _found_with_tokens():
    return _found(found=CHECKS._found()["found"] | {"BOS", "="})


def _found_without_logit():
    right = _found()
    return {**right, "found": {n for n in right["found"] if not n.startswith("logit:")}}


def _compare(**changes):
    want = CHECKS._comparison()
    fewer = want["per-layer"]["features"] - want["skip"]["features"]
    right = {kind: {k: round(v, 3) if k != "features" else v for k, v in want[kind].items()} for kind in ("per-layer", "skip")}
    right["fewer_features"] = "skip" if fewer > 0 else "per-layer" if fewer < 0 else "same"
    return {**right, **changes}


def _compare_kinds_swapped():
    right = _compare()
    return {**right, "per-layer": right["skip"], "skip": right["per-layer"]}


def _compare_scores_swapped():
    right = _compare()
    return {**right, "per-layer": {**right["per-layer"], "replacement": right["per-layer"]["completeness"],
                                   "completeness": right["per-layer"]["replacement"]}}


def _compare_full_graph_features():
    right = _compare()
    graphs = [FIXTURES.graph(ZM.model, CHECKS._transcoder(), t) for t in FIXTURES.compare_prompts(ZM.task)]
    full = sum(len(g.indices("feature")) for g in graphs) / len(graphs)
    return {**right, "per-layer": {**right["per-layer"], "features": full}}


def _compare_fewer_wrong():
    right = _compare()["fewer_features"]
    return _compare(fewer_features="per-layer" if right != "per-layer" else "skip")


WRONG = {
    "graphs.transcode": [transcode_pre_activations, transcode_without_b_enc, transcode_without_b_dec,
                         transcode_without_skip, transcode_relu_for_topk, transcode_swapped, "not a function"],
    "graphs.train": [Lazy("untrained", _untrained), Lazy("trained_on_inputs", _trained_on_inputs),
                     Lazy("train_set_figures", _train_set_figures), Lazy("figures_swapped", _swapped_figures),
                     Lazy("no_figures", lambda: {"transcoder": CHECKS._transcoder()}), "garbage"],
    "graphs.logit_edge": [edge_not_demeaned, edge_without_activation, edge_at_every_position, edge_sign_flipped,
                          edge_from_encoder, "not a function"],
    "graphs.true_circuit": [circuit_with_bos_and_equals, circuit_without_logit, circuit_without_conjunction,
                            circuit_edges_touching, circuit_edges_reversed, circuit_nodes_only, "not a function"],
    "graphs.found": [Lazy("swapped", _found_swapped), Lazy("other_status", _found_other_status),
                     Lazy("node_labels", _found_node_labels), Lazy("with_tokens", _found_with_tokens),
                     Lazy("without_logit", _found_without_logit), Lazy("status_typo", lambda: _found(conjunction="gone")),
                     {"found": {"f3"}}, "garbage"],
    "graphs.compare": [Lazy("kinds_swapped", _compare_kinds_swapped), Lazy("scores_swapped", _compare_scores_swapped),
                       Lazy("full_graph_features", _compare_full_graph_features),
                       Lazy("fewer_wrong", _compare_fewer_wrong), {"per-layer": {}, "skip": {}}, "garbage"],
}


(test_wrong_answers_are_rejected_with_a_message_and_a_hint,
 test_every_exercise_of_the_lesson_has_wrong_answers_under_test) = wrong_answer_tests("graphs", WRONG, prepare=made)


@pytest.mark.parametrize("ex_id,mistake,says", [
    ("graphs.transcode", transcode_pre_activations, "pre-activations"),
    ("graphs.transcode", transcode_without_b_enc, "b_enc"),
    ("graphs.transcode", transcode_without_b_dec, "b_dec"),
    ("graphs.transcode", transcode_without_skip, "skip path"),
    ("graphs.transcode", transcode_relu_for_topk, "k largest"),
    ("graphs.transcode", transcode_swapped, "order"),
    ("graphs.train", Lazy("untrained", _untrained), "does not replace the MLP"),
    ("graphs.train", Lazy("trained_on_inputs", _trained_on_inputs), "FVU"),
    ("graphs.train", Lazy("train_set_figures", _train_set_figures), "test set"),
    ("graphs.train", Lazy("figures_swapped", _swapped_figures), "fvu first"),
    ("graphs.logit_edge", edge_not_demeaned, "demean"),
    ("graphs.logit_edge", edge_without_activation, "activation"),
    ("graphs.logit_edge", edge_at_every_position, "scored position"),
    ("graphs.logit_edge", edge_sign_flipped, "sign"),
    ("graphs.logit_edge", edge_from_encoder, "decoder row"),
    ("graphs.true_circuit", circuit_with_bos_and_equals, "BOS"),
    ("graphs.true_circuit", circuit_without_logit, "logit"),
    ("graphs.true_circuit", circuit_without_conjunction, "conjunction"),
    ("graphs.true_circuit", circuit_edges_touching, "both ends"),
    ("graphs.true_circuit", circuit_edges_reversed, "(source, target)"),
    ("graphs.found", Lazy("swapped", _found_swapped), "swapped"),
    ("graphs.found", Lazy("node_labels", _found_node_labels), "not the graph's nodes"),
    ("graphs.found", Lazy("with_tokens", _found_with_tokens), "BOS"),
    ("graphs.found", Lazy("without_logit", _found_without_logit), "whole true circuit"),
    ("graphs.compare", Lazy("kinds_swapped", _compare_kinds_swapped), "swapped"),
    ("graphs.compare", Lazy("scores_swapped", _compare_scores_swapped), "(replacement, completeness)"),
    ("graphs.compare", Lazy("full_graph_features", _compare_full_graph_features), "the pruning keeps"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) or isinstance(v, Lazy) else None)
def test_the_common_mistakes_are_named(ex_id, mistake, says):
    """A learner who computed the neighbouring quantity is told which one it was."""
    feedback = check(ex_id, made(mistake))
    assert not feedback.passed and says in f"{feedback.message} {feedback.hint}", feedback


def test_the_full_graph_for_the_pruned_one_is_named_when_they_differ():
    want = CHECKS._found()
    if want["unpruned"] == want["found"]:
        pytest.skip("on this machine's transcoder, pruning drops no true feature of the lesson's prompt")
    feedback = check("graphs.found", _found(found=want["unpruned"], missed=want["on"] - want["unpruned"]))
    assert not feedback.passed and "the full graph" in feedback.hint


def test_the_reference_functions_and_right_answers_pass():
    """toylab's own functions, written as a learner would call them, pass; so do answers read off the truth."""
    def transcode(tc, x):
        return tc(x)

    def feature_to_logit(model, tc, graph, feature, logit):
        return float(graph.adjacency[logit, feature])

    def true_circuit(truth, task, tokens):
        return true_feature_circuit(truth, task, tokens, int(task.variables(tokens[None])["conjunction"][0]))

    assert check("graphs.transcode", transcode).passed
    assert check("graphs.transcode", lambda tc, x: _transcode(tc, x)).passed  # by hand
    assert check("graphs.train", _trained()).passed
    assert check("graphs.train", _trained(fvu=[_trained()["fvu"]])).passed  # transcoder_scores' per-layer tuple
    assert check("graphs.logit_edge", feature_to_logit).passed
    assert check("graphs.logit_edge", lambda *args: _edge(*args)).passed  # by hand
    assert check("graphs.true_circuit", true_circuit).passed
    assert check("graphs.true_circuit", lambda *args: tuple(map(list, _circuit(*args)))).passed  # lists will do
    assert check("graphs.found", _found()).passed
    assert check("graphs.compare", _compare()).passed
