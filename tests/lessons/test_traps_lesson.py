"""Lesson 9 (why methods fail): each checker rejects the mistakes a learner makes, with a reason and a hint.

The lesson itself runs with and without its solutions in test_runner.py, like every lesson.
"""

import pytest
import torch
from wrong_answers import wrong_answer_tests

from toylab import components, methods, zoo
from toylab.components import Edge
from toylab.interventions import ablated_logits
from toylab.lessons import check, lesson_fixtures, load
from toylab.methods import DASResult, Site
from toylab.tasks import logit_diff

FIXTURES = lesson_fixtures("traps")
SEED = FIXTURES.SEED


@pytest.fixture(autouse=True)
def no_grad():
    """As in the lessons, which turn gradients off (the checkers turn them on where they need them)."""
    with torch.no_grad():
        yield


def _truth(trap: str):
    return zoo.load(f"trap-{trap}", seed=SEED).truth


def _head(head: str) -> tuple[str, int]:
    layer, index = (int(part) for part in head[1:].split("H"))
    return f"blocks.{layer}.attn.hook_result", index


def _score(model, pair, m) -> float:
    m_clean, m_corr = (float(logit_diff(model(t), pair)) for t in (pair.clean.tokens, pair.corrupted.tokens))
    return (float(m) - m_corr) / (m_clean - m_corr)


# ---- mistakes in the implementations ---------------------------------------------------------


def direct_effect_ignoring_ablation(model, pair, head, ablated=()):  # reads the clean run whatever is ablated
    _, cache = model.run_with_cache(pair.clean.tokens)
    name, index = _head(head)
    return float(logit_diff(cache[name][:, :, index] @ model.unembed.W_U, pair))


def direct_effect_of_the_whole_model(model, pair, head, ablated=()):  # the logit difference, not the head's part
    return float(logit_diff(model(pair.clean.tokens), pair))


def direct_effect_sign_flipped(model, pair, head, ablated=()):
    return -load("traps").reference_direct_effect(model, pair, head, ablated)  # the checker's own reference


def _noise_one(model, pair, edge) -> float:
    """The share of the effect that noising ``edge`` alone removes (toylab's edge patching, one edge)."""
    everything = set(components.edges(model.cfg))
    logits = ablated_logits(model, pair.clean.tokens, pair.corrupted.tokens, everything - {edge})
    return 1 - _score(model, pair, logit_diff(logits, pair))


def denoise_by_noising(model, pair, edge):  # the clean run with the corrupted output: noising
    return _noise_one(model, pair, edge)


def denoise_whole_sender(model, pair, edge):  # patches the sender's output for every reader: activation patching
    if edge.sender == "embed":
        name, index = "hook_embed", None
    elif edge.sender.startswith("MLP"):
        name, index = f"blocks.{edge.sender[3:]}.hook_mlp_out", None
    else:
        name, index = _head(edge.sender)
    _, clean = model.run_with_cache(pair.clean.tokens, names=[name])

    def restore(x, hook):
        x = x.clone()
        if index is None:
            return clean[name]
        x[:, :, index] = clean[name][:, :, index]
        return x

    with model.hooks([(name, restore)]):
        m = logit_diff(model(pair.corrupted.tokens), pair)
    return _score(model, pair, m)


def q_edge_plain_eap(model, pair, sender, receiver):  # no fix: the saturated softmax's gradient
    return methods.eap(model, pair)[Edge(sender, receiver, "q")]


def q_edge_real_patching(model, pair, sender, receiver):  # exact, but not the QK fix (LayerNorm after the pattern)
    return _noise_one(model, pair, Edge(sender, receiver, "q"))


def q_edge_sign_flipped(model, pair, sender, receiver):
    return -methods.eap(model, pair, qk_fix=True)[Edge(sender, receiver, "q")]


def node_attribution_real_twice(model, pair, head):  # the ablation where the estimate belongs
    result = methods.ablation_scores(model, pair, components=[head], method="resample")
    real = result[head] / (result.baseline - float(logit_diff(model(pair.corrupted.tokens), pair)))
    return real, real


def node_attribution_sign_flipped(model, pair, head):
    _, real = node_attribution_real_twice(model, pair, head)
    return -methods.eap(model, pair).nodes()[head], real


def node_attribution_one_number(model, pair, head):
    return methods.eap(model, pair).nodes()[head]


def channel_iia_whole_output(model, algorithm, variable, channel, n=256, seed=0):  # swaps every channel
    return methods.interchange_accuracy(model, algorithm, variable, Site(*FIXTURES.CODE_SITE), None, n, seed).accuracy


def channel_iia_other_bit(model, algorithm, variable, channel, n=256, seed=0):  # scores the other bit's swap
    return load("traps").reference_channel_iia(model, algorithm, "b" if variable == "a" else "a", channel, n, seed)


def channel_iia_ignoring_n_and_seed(model, algorithm, variable, channel, n=256, seed=0):
    return load("traps").reference_channel_iia(model, algorithm, variable, channel)


# ---- mistakes in the answers ------------------------------------------------------------------


def self_repair_mistakes():
    trap = _truth("self-repair").trap
    (primary,), (backup,) = trap.nodes["primary"], trap.nodes["backup"]
    distractor = next(h for h in ("L0H1", "L0H2", "L0H3", "L1H0", "L1H2", "L1H3") if h not in (primary, backup))
    return [{"inert": backup, "repairs": primary}, {"inert": primary, "repairs": distractor},
            {"inert": primary, "repairs": primary}, {"inert": distractor, "repairs": backup}, primary,
            {"inert": "L7H0", "repairs": backup}]


def together_mistakes():
    truth = _truth("or-gate")
    path_a, path_b = truth.trap.paths
    last = Edge("MLP0", "logits", "resid")
    return [tuple(path_a), (last, path_b[0]), (path_a[0],), (path_a[0], Edge("embed", "L1H0", "v")),
            (path_a[0], path_b[0], last), "garbage"]


def understated_mistakes():
    truth = _truth("saturation")
    query = next(e for e in truth.edges if e.kind == "q")
    value = next(e for e in truth.edges if e.kind == "v")
    direct = next(e for e in truth.edges if e.receiver == "logits")
    return [{query}, {value}, {query, value, direct}, query, "garbage"]


def overstated_mistakes():
    (head,) = _truth("cancellation").trap.nodes["cancelling"]
    return [Edge(head, "logits", "resid"), (head, "logits", "resid"), Edge("embed", head, "v"), "MLP1", "garbage"]


def _distributed_result(basis, variable="a", site=None) -> DASResult:
    """A DASResult as methods.das returns it, with a given direction (no training: the checker measures it)."""
    return DASResult(variable, site or Site(*FIXTURES.CODE_SITE), basis, 1.0, 1.0)


def _directions():
    return {v.name: torch.tensor(v.basis).T for v in _truth("distributed").variables}  # [d_model, 1]


def _off_plane(cos: float) -> DASResult:
    """a's direction tilted, by a direction MLP0 never writes, to |cosine| ``cos``: IIA 1, cosine low."""
    u = _directions()["a"][:, 0]
    dead = torch.zeros_like(u)
    dead[0] = 1.0  # a token's one-hot channel: MLP0's output is 0 there
    return _distributed_result((cos * u + (1 - cos**2) ** 0.5 * dead)[:, None])


def das_direction_mistakes():
    directions = _directions()
    return [_off_plane(0.9), _distributed_result(directions["b"]), _distributed_result(directions["a"], "b"),
            _distributed_result(directions["a"], site=Site("blocks.1.hook_mlp_out", -1)),
            _distributed_result(torch.eye(directions["a"].shape[0])[:, [26]]),  # one code channel: IIA ~0.5
            directions["a"], "garbage"]


def gradient_blind_mistakes():
    edges = set(_truth("long-chain").edges)
    after_mlp1 = {e for e in edges if e.sender == "MLP1" or (e.sender.startswith("L") and int(e.sender[1]) >= 2)}
    return [edges, after_mlp1, next(iter(edges - after_mlp1)), {Edge("embed", "L0H0", "q")}, "garbage"]


WRONG = {
    "traps.self_repair": self_repair_mistakes(),
    "traps.direct_effect": [direct_effect_ignoring_ablation, direct_effect_of_the_whole_model,
                            direct_effect_sign_flipped, "not a function"],
    "traps.denoise_edge": [denoise_by_noising, denoise_whole_sender],
    "traps.together": together_mistakes(),
    "traps.understated_edges": understated_mistakes(),
    "traps.q_edge_fixed": [q_edge_plain_eap, q_edge_real_patching, q_edge_sign_flipped, "not a function"],
    "traps.switch_alphas": [{1: 0.1, 0: 0.9}, {1: 0.8, 0: 0.2}, {1: 0.9}, [0.9, 0.1], {"one": 0.9, "zero": 0.1}],
    "traps.overstated_edge": overstated_mistakes(),
    "traps.gradient_blind": gradient_blind_mistakes(),
    "traps.node_attribution": [node_attribution_real_twice, node_attribution_sign_flipped,
                               node_attribution_one_number],
    "traps.channel_iia": [channel_iia_whole_output, channel_iia_other_bit, channel_iia_ignoring_n_and_seed,
                          "not a function"],
    "traps.whole_output": [{"swaps": {"a"}, "agree": "b"}, {"swaps": {"b"}, "agree": "b"},
                           {"swaps": {"a", "b"}, "agree": "a"}, {"swaps": {"a", "b", "s"}, "agree": "b"},
                           {"swaps": {"x"}, "agree": "b"}, {"swaps": 3, "agree": "b"}, "b"],
    "traps.das_direction": das_direction_mistakes(),
}


(test_wrong_answers_are_rejected_with_a_message_and_a_hint,
 test_every_exercise_of_the_lesson_has_wrong_answers_under_test) = wrong_answer_tests("traps", WRONG)


@pytest.mark.parametrize("mistake,says", [(denoise_by_noising, "that is noising"),
                                          (denoise_whole_sender, "activation patching of the node"),
                                          (q_edge_plain_eap, "plain EAP"),
                                          (q_edge_real_patching, "real patching"),
                                          (node_attribution_real_twice, "real ablation"),
                                          (channel_iia_whole_output, "whole output"),
                                          (channel_iia_other_bit, "other bit")])
def test_the_common_mistakes_are_named(mistake, says):
    """A learner who computed the neighbouring quantity is told which one it was."""
    ex_id = {"denoise_by_noising": "traps.denoise_edge", "denoise_whole_sender": "traps.denoise_edge",
             "q_edge_plain_eap": "traps.q_edge_fixed",
             "q_edge_real_patching": "traps.q_edge_fixed",
             "node_attribution_real_twice": "traps.node_attribution",
             "channel_iia_whole_output": "traps.channel_iia",
             "channel_iia_other_bit": "traps.channel_iia"}[mistake.__name__]
    feedback = check(ex_id, mistake)
    assert not feedback.passed and says in feedback.hint, feedback


def test_answers_are_checked_against_the_truth_of_the_lessons_seed():
    """The right answers, read off the truth, pass; the wrong path is named when both edges share one."""
    trap = _truth("self-repair").trap
    assert check("traps.self_repair", {"inert": trap.nodes["primary"][0], "repairs": trap.nodes["backup"][0]}).passed
    path_a, path_b = _truth("or-gate").trap.paths
    assert check("traps.together", (path_a[0], path_b[1])).passed  # any edge of each path will do
    assert "both lie on path 0" in check("traps.together", tuple(path_a)).message
    assert check("traps.switch_alphas", {1: 0.9, 0: 0.1}).passed
    assert "swapped" in check("traps.switch_alphas", {1: 0.1, 0: 0.9}).message


def test_the_distributed_trap_is_checked_against_its_truth():
    """The reference channel IIA, the truth's answer and DAS's direction pass; a direction off the plane
    MLP0 writes in is told why its IIA is fine but its cosine is not."""
    assert check("traps.channel_iia", load("traps").reference_channel_iia).passed
    assert check("traps.whole_output", {"swaps": ["b", "a"], "agree": "b"}).passed
    zm = zoo.load("trap-distributed", seed=SEED)
    learned = methods.das(zm.model, zm.algorithm, "a", Site(*FIXTURES.CODE_SITE), methods.DASConfig(**FIXTURES.DAS_CONFIG))
    assert check("traps.das_direction", learned).passed
    assert check("traps.das_direction", _off_plane(0.97)).passed  # the threshold is 0.95
    tilted = check("traps.das_direction", _off_plane(0.9))
    assert "IIA is 1.000" in tilted.message and "never takes" in tilted.hint
    assert "closer to b's" in check("traps.das_direction", _distributed_result(_directions()["b"])).hint
    assert "not in MLP0's output" in check("traps.whole_output", {"swaps": {"a", "b", "s"}, "agree": "b"}).message
