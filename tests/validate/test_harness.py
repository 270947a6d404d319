"""The harness: a perfect method scores at the ceiling, chance at about 0.5, garbage gets an error."""

import dataclasses
import statistics

import pytest
import torch

import toylab
from toylab.truth import FeatureDirection
from toylab.components import Edge
from toylab.validate import Featuriser, FeatureDirections, Problem, score, subjects
from toylab.validate.harness import run_one

FAST = ["induction-constructed", "induction-siit"]


@pytest.fixture(scope="module")
def suite():
    return subjects(FAST)


def perfect(problem: Problem):
    truth = problem.answer_key()
    return {e: float(e in truth.edges) for e in problem.edges("qkv")}


def test_a_perfect_method_gets_auroc_1_and_the_cpr_of_the_truth(suite):
    report = score(perfect, suite=suite)
    assert not report.errors and len(report.entries) == 4  # constructed + 3 seeds of siit
    for entry in report.entries:
        m = entry.metrics
        assert m["edge_auroc[qkv]"] == m["edge_auroc[head]"] == m["node_auroc"] == 1.0
        assert m["edge_ap[qkv]"] == m["edge_precision[qkv]"] == m["edge_recall[qkv]"] == 1.0
        assert m["cpr"] == pytest.approx(m["cpr_truth"], abs=0.05)  # ties inside the truth aside
        assert m["faithfulness"] > 0.9  # the certified faithfulness, re-measured on unseen pairs
        assert entry.peeked
    assert "Read the answer key" in report.to_markdown()


def test_random_scores_are_at_chance_and_below_the_truth_cpr(suite):
    aurocs, gaps = [], []
    for seed in range(6):
        def random_method(problem, seed=seed):
            g = torch.Generator().manual_seed(seed)
            return {e: torch.rand(1, generator=g).item() for e in problem.edges("qkv")}
        report = score(random_method, suite=suite)
        aurocs += [e.metrics["edge_auroc[qkv]"] for e in report.entries]
        gaps += [e.metrics["cpr_truth"] - e.metrics["cpr"] for e in report.entries]
        assert not any(e.peeked for e in report.entries)
    assert abs(statistics.fmean(aurocs) - 0.5) < 0.1
    assert min(gaps) > -1e-9 and statistics.fmean(gaps) > 0.2


def test_a_method_failing_on_one_model_does_not_stop_the_others(suite):
    def fragile(problem):
        if problem.name == "induction-constructed":
            return {"L7H0": 1.0}
        return {n: 1.0 for n in problem.nodes()}
    report = score(fragile, suite=suite)
    assert [e.model for e in report.errors] == ["induction-constructed"]
    assert "layer 7" in report.errors[0].error and "nearest valid ids" in report.errors[0].error
    assert all(e.metrics for e in report.entries if e.error is None)
    assert "## Errors" in report.to_markdown()

    def crashing(problem):
        raise RuntimeError("out of ideas")
    assert all("RuntimeError: out of ideas" in e.error for e in score(crashing, suite=suite[:1]).entries)


def test_a_method_that_changes_the_model_is_caught_and_undone(suite):
    subject = suite[0]
    weights = {k: v.clone() for k, v in subject.model.state_dict().items()}

    def vandal(problem):
        with torch.no_grad():
            problem.model.blocks[0].attn.W_Q.add_(1.0)
        return {n: 1.0 for n in problem.nodes()}
    entry = run_one(vandal, subject)
    assert "changed the model's weights" in entry.error
    assert all(torch.equal(v, weights[k]) for k, v in subject.model.state_dict().items())

    def leaves_hooks(problem):
        problem.model.hook_points["blocks.0.attn.hook_z"].fns.append(lambda x, hook: x * 0)
        return {n: 1.0 for n in problem.nodes()}
    entry = run_one(leaves_hooks, subject)
    assert "left hooks" in entry.error and not subject.model.has_hooks()

    def trains(problem):
        problem.model.train()
        return {n: 1.0 for n in problem.nodes()}
    entry = run_one(trains, subject)
    assert "train/eval mode" in entry.error and not subject.model.training


def test_a_circuit_is_one_roc_point(suite):
    def two_heads(problem):
        return {"embed", "L0H1", "L1H1"}
    entry = run_one(two_heads, suite[0])  # the constructed model: exactly its circuit
    assert entry.kind == "circuit"
    assert entry.metrics["tpr"] == 1.0 and entry.metrics["fpr"] == 0.0 and entry.metrics["faithfulness"] > 0.95
    decoys = run_one(lambda p: {"embed", "L0H0", "L1H0"}, suite[0])
    assert decoys.metrics["tpr"] == pytest.approx(1 / 3) and abs(decoys.metrics["faithfulness"]) < 0.05


def test_featurisers_are_scored_by_interchange_accuracy(suite):
    siit = suite[1]
    d = siit.model.cfg.d_model
    whole = run_one(lambda p: Featuriser("previous_token", "blocks.0.hook_attn_out", torch.eye(d)), siit)
    one_dim = run_one(lambda p: Featuriser("previous_token", "blocks.0.hook_attn_out",
                                           torch.randn(1, d, generator=torch.Generator().manual_seed(0))), siit)
    later = run_one(lambda p: Featuriser("previous_token", "blocks.1.hook_attn_out", torch.eye(d)), siit)
    assert whole.metrics["iia"] > 0.9 and whole.metrics["iia_truth"] > 0.9
    assert one_dim.metrics["iia"] < 0.5 and later.metrics["iia"] < 0.5
    undeclared = run_one(lambda p: Featuriser("carry", "blocks.0.hook_attn_out", torch.eye(d)), siit)
    assert "no causal variable 'carry'" in undeclared.error


def test_feature_directions_are_scored_against_declared_features(suite):
    # The token embedding: hook_embed's output for token t is exactly W_E[t], by construction.
    subject = suite[0]
    W_E = subject.model.embed.W_E.detach()
    features = tuple(FeatureDirection(f"token {t}", "hook_embed", tuple(W_E[t].tolist())) for t in range(1, 6))
    with_features = dataclasses.replace(subject, truth=dataclasses.replace(subject.truth, features=features),
                                        cache={})
    exact = run_one(lambda p: FeatureDirections("hook_embed", W_E[1:6].flip(0)), with_features)
    noise = run_one(lambda p: FeatureDirections("hook_embed", torch.randn(5, W_E.shape[1])), with_features)
    assert exact.metrics["mmcs"] == pytest.approx(1.0) and exact.metrics["matched_cosine"] == pytest.approx(1.0)
    assert noise.metrics["mmcs"] < 0.6
    elsewhere = run_one(lambda p: FeatureDirections("blocks.0.hook_resid_post", W_E[1:6]), with_features)
    assert "declares no feature directions" in elsewhere.error


def test_the_report_writes_markdown_json_and_plots(suite, tmp_path):
    import json
    report = score(perfect, suite=suite[:1], label="perfect")
    paths = report.write(tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["summary"]["induction-constructed"]["edge_auroc[qkv]"]["mean"] == 1.0
    assert data["entries"][0]["circuit"] and data["entries"][0]["faithfulness_curve"]["level"] == "edge"
    assert paths["roc"].stat().st_size > 5000 and paths["faithfulness"].stat().st_size > 5000
    assert "| induction-constructed | 1 |" in paths["markdown"].read_text()


def test_edge_scores_at_head_granularity_are_scored_once(suite):
    def heads(problem):
        truth = problem.answer_key()
        return {e: float(e in truth.edges_at("head")) for e in problem.edges("head")}
    entry = run_one(heads, suite[0])
    assert entry.metrics["edge_auroc[head]"] == 1.0 and "edge_auroc[qkv]" not in entry.metrics
    assert all(e.kind in ("head", "resid") for e in entry.circuit)
    assert isinstance(entry.circuit[0], Edge)


def test_the_suite_names_every_zoo_model_with_a_truth():
    from toylab.validate import zoo_names
    names = zoo_names()
    assert {"induction-constructed", "induction-siit", "modadd-113"} <= set(names)
    assert all(toylab.zoo.load(n).truth is not None for n in names)


def test_the_method_gets_its_own_data_seed_and_never_the_scoring_pairs(suite):
    from toylab.validate.harness import SCORING_SEED
    seen = []

    def spy(problem):
        seen.append(problem.data_seed)
        return {n: 1.0 for n in problem.nodes()}
    score(spy, suite=suite[:1], data_seed=5)
    assert seen == [5]


def test_no_seed_a_method_passes_draws_the_scoring_pairs(suite):
    """The scoring seed is unreachable: a Problem's samplers draw only odd seeds, it is even."""
    from toylab.validate.harness import SCORING_SEED

    subject = suite[0]
    problem = Problem(subject.name, subject.seed, subject.model, subject.task)
    scoring = subject.task.counterfactual(16, SCORING_SEED).clean.tokens
    for seed in (SCORING_SEED, SCORING_SEED // 2, (SCORING_SEED - 1) // 2, 0):
        assert not torch.equal(problem.pair(16, seed=seed).clean.tokens, scoring)
    with pytest.raises(ValueError, match="data seed"):
        problem.pair(16, seed=-1)


def test_a_method_that_reads_the_truth_in_any_way_is_marked(suite):
    subject = suite[0]

    def honest(problem):
        return {n: 1.0 for n in problem.nodes()}

    def loads_the_zoo_truth(problem):  # a zoo model comes with its truth.json
        toylab.zoo.load(problem.name, seed=problem.seed)
        return honest(problem)

    def asks_the_recipe(problem):
        toylab.zoo.recipe(problem.name).truth_for(problem.seed, problem.model)
        return honest(problem)

    def reads_the_answer_key(problem):
        problem.answer_key()
        return honest(problem)

    assert not run_one(honest, subject).peeked
    for cheat in (loads_the_zoo_truth, asks_the_recipe, reads_the_answer_key):
        assert run_one(cheat, subject).peeked, cheat.__name__
    from toylab.truth.truth import Truth
    assert not hasattr(Truth.from_dict, "__wrapped__") and "watched" not in Truth.from_dict.__func__.__name__


def test_optional_edges_count_neither_for_nor_against_a_method():
    """induction-tiny declares optional edges: scoring them 1 or 0 changes no edge figure."""
    subject = subjects(["induction-tiny"])[0]
    truth = subject.truth
    assert truth.optional

    def scores(optional_value):
        def method(problem):
            return {e: (optional_value if e in truth.optional else float(e in truth.edges))
                    for e in problem.edges("qkv")}
        return method

    high, low = run_one(scores(1.0), subject).metrics, run_one(scores(0.0), subject).metrics
    for figure in ("edge_auroc[qkv]", "edge_ap[qkv]", "edge_precision[qkv]", "edge_recall[qkv]"):
        assert high[figure] == low[figure] == 1.0, figure


def test_figures_undefined_on_a_model_are_nan_and_shown_as_na():
    """modadd-tiny's truth holds every candidate node: any node method's top |T| is every node."""
    subject = subjects(["modadd-tiny"], [0])[0]
    from toylab.validate.protocol import candidate_nodes
    assert set(subject.truth.nodes_at("head")) >= set(candidate_nodes(subject.model.cfg))
    entry = run_one(lambda problem: {n: 0.0 for n in problem.nodes()}, subject)
    m = entry.metrics
    for figure in ("node_auroc", "node_precision", "faithfulness"):
        assert figure in m and m[figure] != m[figure], figure  # NaN
    assert "completeness" not in m and "minimality" not in m  # a score method's would be P@|T| twice
    report = score(lambda problem: {n: 0.0 for n in problem.nodes()}, suite=[subject])
    assert "n/a" in report.table()


def test_ties_are_not_broken_by_candidate_order():
    from toylab.validate import metrics as mt

    universe = list(range(40))
    ranked = mt.top({u: 0.0 for u in universe}, universe, 10)
    assert ranked != universe[:10] and sorted(ranked) != universe[:10]
    assert ranked == mt.top({u: 0.0 for u in universe}, universe, 10)  # fixed: reproducible
