"""The IOI task: templates, both orders, counterfactuals, the algorithm, bad input."""

import pytest
import torch

from toylab.methods.detectors import target_positions
from toylab.tasks import IOI, logit_diff, task_from_dict
from toylab.tasks.ioi import KINDS, TEMPLATES, IOIAlgorithm


@pytest.fixture(scope="module")
def task():
    return IOI()


def test_the_answer_is_the_first_clause_name_the_second_clause_does_not_repeat(task):
    batch = task.sample(512, 0)
    v = task.variables(batch.tokens)
    words = task.to_str_tokens(batch.tokens)
    for row in range(20):
        said = [w for w in words[row] if w.startswith("N")]
        answer = task.token_names[int(batch.targets[row][batch.targets[row] >= 0])]
        assert len(said) == 3 and said.count(answer) == 1 and said[2] != answer
        assert words[row][int(v["answer_pos"][row])] == "to"
    assert (batch.scored.sum(-1) == 1).all()
    assert torch.equal(batch.targets[batch.scored], task.name_token(v["io"]))


def test_no_fixed_position_or_order_solves_it(task):
    """Every template, both orders, and the answer's position varies: copying the name at any
    one position (counted from the start or back from the answer) is right about half the time."""
    batch = task.sample(2000, 1)
    v = task.variables(batch.tokens)
    assert set(v["template"].tolist()) == set(range(len(TEMPLATES))) and set(v["s_position"].tolist()) == {0, 1}
    answers = batch.targets[batch.scored]
    rows = torch.arange(len(batch))
    for offset in range(1, task.n_ctx):
        from_start = (batch.tokens[:, offset] == answers).float().mean()
        back = (v["answer_pos"] - offset).clamp(min=0)
        from_answer = (batch.tokens[rows, back] == answers).float().mean()
        assert from_start < 0.6 and from_answer < 0.6, offset


@pytest.mark.parametrize("kind", KINDS)
def test_counterfactuals(task, kind):
    pair = task.counterfactual(300, 2, kind)
    c, k = task.variables(pair.clean.tokens), task.variables(pair.corrupted.tokens)
    assert torch.equal(pair.clean.scored, pair.corrupted.scored) and torch.equal(c["template"], k["template"])
    s_token = task.name_token(c["s"])
    if kind == "abc":  # a third name: nothing repeats, the contrast is S
        assert (k["s_position"] == -1).all() and ((k["second"] != c["io"]) & (k["second"] != c["s"])).all()
        assert torch.equal(pair.corrupted.targets[pair.corrupted.scored], s_token)
    elif kind == "swap":  # IO repeated: the answer flips to S
        assert torch.equal(k["io"], c["s"]) and torch.equal(k["s"], c["io"])
        assert torch.equal(pair.corrupted.targets[pair.corrupted.scored], s_token)
    else:  # the first clause reordered: the answer stays, S's slot moves
        assert torch.equal(k["io"], c["io"]) and (k["s_position"] == 1 - c["s_position"]).all()
    # The metric: IO - S on the clean prompts' own logits is positive for a model that knows IOI.
    logits = torch.zeros(len(pair), task.n_ctx, task.d_vocab_out)
    logits[pair.clean.scored] = torch.nn.functional.one_hot(pair.clean.targets[pair.clean.scored], task.d_vocab).float()
    assert float(logit_diff(logits, pair)) == pytest.approx(1.0)


def test_the_algorithm(task):
    algorithm = IOIAlgorithm(task)
    base, source = algorithm.sample_pairs(400, torch.Generator().manual_seed(0))
    b, s = task.variables(base.tokens), task.variables(source.tokens)
    assert torch.equal(s["template"], b["template"]) and (s["io"] != b["io"]).all()
    answer = {v: algorithm.intervene(base, source, v)[base.scored] for v in algorithm.variables}
    assert torch.equal(answer["io"], task.name_token(s["io"]))  # the source's IO
    # the slot variables are positions: the source's repeated name's slot, read in the base
    assert torch.equal(answer["duplicate"], answer["s_position"])
    moved = s["s_position"] != b["s_position"]
    assert 0.3 < moved.float().mean() < 0.7
    assert torch.equal(answer["s_position"][moved], task.name_token(b["s"][moved]))
    assert torch.equal(answer["s_position"][~moved], task.name_token(b["io"][~moved]))
    for v in algorithm.variables:  # intervening with the base itself changes nothing
        assert torch.equal(algorithm.intervene(base, base, v), base.targets)


def test_round_trip_and_bad_input(task):
    assert task_from_dict(task.to_dict()) == task
    small = IOI(n_names=3, templates=[0, 2])
    assert small.n_ctx == 1 + max(len(TEMPLATES[t].split()) for t in (0, 2))
    with pytest.raises(ValueError, match="n_names must be >= 3"):
        IOI(n_names=2)
    with pytest.raises(ValueError, match="n_ctx must be an int >= 19"):
        IOI(n_ctx=10)
    with pytest.raises(ValueError, match="templates must be distinct indices"):
        IOI(templates=[0, 0])
    with pytest.raises(ValueError, match="unknown IOI counterfactual 'xyz'"):
        task.counterfactual(4, 0, "xyz")
    with pytest.raises(ValueError, match="io and s must be different"):
        z = torch.zeros(2, dtype=torch.long)
        task.make_batch(z, z, z, z, z, z)
    with pytest.raises(ValueError, match="follow none of the IOI templates"):
        task.variables(torch.ones(1, task.n_ctx, dtype=torch.long))


def test_attention_targets_name_where_each_ioi_head_type_looks(task):
    pair = task.counterfactual(64, 3)
    v = task.variables(pair.clean.tokens)
    targets = task.attention_targets(pair.clean.tokens)
    assert set(targets) == set(task.detectors)
    for row in range(64):
        where = task.positions(int(v["template"][row]))
        s1, io = (where["X1"], where["X2"]) if int(v["s_position"][row]) == 0 else (where["X2"], where["X1"])
        defined = {role: (t[row] >= 0).nonzero().flatten().tolist() for role, t in targets.items()}
        assert defined == {"duplicate-s": [where["S"]], "s-inhibition": [where["answer"]],
                           "name-mover": [where["answer"]]}
        assert int(targets["duplicate-s"][row, where["S"]]) == s1
        assert int(targets["s-inhibition"][row, where["answer"]]) == where["S"]
        assert int(targets["name-mover"][row, where["answer"]]) == io
    # an ABC prompt repeats no name: no IOI head type is defined on it
    assert all((t < 0).all() for t in task.attention_targets(pair.corrupted.tokens).values())
    with pytest.raises(ValueError, match="task-defined ones need task="):
        target_positions(pair.clean.tokens, "name-mover")
    assert torch.equal(target_positions(pair.clean.tokens, "name-mover", task), targets["name-mover"])
