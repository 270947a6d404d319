"""Linear probes and their control tasks, checked against where the truth says variables live."""

import pytest
import torch

from toylab import methods, zoo
from toylab.hooks import UnknownNameError
from toylab.methods import ProbeConfig, Site
from toylab.methods.probes import control_labels, probe_activations

CONFIG = ProbeConfig(steps=100, lr=0.1)


@pytest.fixture(scope="module")
def zm():
    return zoo.load("factual-recall")


@pytest.fixture(scope="module")
def data(zm):
    batch = zm.task.sample(1024, seed=1)
    return batch.tokens, zm.task.variables(batch.tokens)


def _truth_probe_site(zm, variable):
    """The residual stream just after the component the truth declares ``variable`` in, at its position."""
    site = methods.variable_site(zm.truth, variable, zm.task.n_ctx)
    layer = int(site.hook.split(".")[1])
    return (f"blocks.{layer}.hook_resid_post" if "mlp" in site.hook else f"blocks.{layer}.hook_resid_mid"), site.pos


def test_the_attribute_is_decoded_where_the_truth_stores_it_and_not_before(zm, data):
    tokens, v = data
    hook, pos = _truth_probe_site(zm, "attribute")
    assert (hook, pos) == ("blocks.0.hook_resid_post", zm.task.positions["subject"])
    grid = methods.probe_grid(zm.model, tokens, v["attribute"], ["hook_embed", "blocks.0.hook_resid_mid", hook],
                              config=CONFIG, types=v["fact"])
    acc, sel = grid.at(hook, pos)
    assert acc >= 0.95 and sel >= 0.3, (acc, sel)
    # Before MLP0 (subject and relation present, the fact not looked up), and at the answer
    # position before the mover head: no better than memorising facts.
    for where in [("hook_embed", pos), ("blocks.0.hook_resid_mid", pos), (hook, zm.task.positions["answer"])]:
        acc_there, sel_there = grid.at(*where)
        assert acc_there <= 0.6 and sel_there <= 0.15, (where, acc_there, sel_there)


def test_the_relation_is_decoded_at_the_subject_after_the_relation_mover_not_before(zm, data):
    tokens, v = data
    hook, pos = _truth_probe_site(zm, "relation")
    assert (hook, pos) == ("blocks.0.hook_resid_mid", 2)
    after = methods.train_probe(zm.model, tokens, v["relation"], Site(hook, pos), CONFIG, types=v["fact"])
    before = methods.train_probe(zm.model, tokens, v["relation"], Site("hook_embed", pos), CONFIG, types=v["fact"])
    assert after.accuracy >= 0.95 and after.selectivity >= 0.3, str(after)
    assert before.accuracy <= before.majority + 0.1, str(before)


def test_the_decoy_is_decoded_though_nothing_reads_it(zm, data):
    """After the last layer, at the subject, the attribute is still in the residual stream."""
    tokens, v = data
    decoy = methods.train_probe(zm.model, tokens, v["attribute"], Site("blocks.1.hook_resid_post", 2), CONFIG)
    assert decoy.accuracy >= 0.95  # decodable; test_interchange shows it is not used there


def test_control_task_exposes_a_probe_that_memorises():
    """Random labels per type on one-hot inputs: a probe learns them as well as the real labels."""
    g = torch.Generator().manual_seed(0)
    types = torch.randint(16, (800,), generator=g)
    x = torch.eye(16)[types] + 0.01 * torch.randn(800, 16, generator=g)  # [batch, d]: identity only
    labels = torch.randint(4, (16,), generator=g)[types]  # a lookup table, no structure
    result = probe_activations(x, labels, Site("x", 0), CONFIG, types)
    assert result.accuracy >= 0.95 and result.control_accuracy >= 0.9 and abs(result.selectivity) < 0.1
    # A label written linearly into a space too small to memorise 64 types: high selectivity.
    types = torch.randint(64, (2000,), generator=g)
    codes = torch.randn(64, 6, generator=g)
    labels = (codes[:, 0] > 0).long()[types]
    result = probe_activations(codes[types], labels, Site("x", 0), CONFIG, types)
    assert result.accuracy >= 0.95 and result.selectivity >= 0.2, str(result)


def test_control_labels_follow_types_and_the_label_distribution():
    labels = torch.tensor([0, 0, 0, 1] * 250)
    types = torch.arange(1000) % 100
    control = control_labels(labels, types, seed=0)
    for t in range(100):
        assert control[types == t].unique().numel() == 1
    assert 0.6 <= (control == 0).float().mean() <= 0.9
    assert not torch.equal(control, control_labels(labels, types, seed=1))


def test_bad_inputs_are_refused(zm, data):
    tokens, v = data
    with pytest.raises(UnknownNameError, match="nearest valid names"):
        methods.train_probe(zm.model, tokens, v["attribute"], Site("blocks.0.hook_resid_pots", 2))
    with pytest.raises(ValueError, match="out of range"):
        methods.train_probe(zm.model, tokens, v["attribute"], Site("blocks.0.hook_resid_post", 4))
    with pytest.raises(ValueError, match="one entry per prompt"):
        methods.train_probe(zm.model, tokens, v["attribute"][:10], Site("blocks.0.hook_resid_post", 2))
    with pytest.raises(ValueError, match="head=h"):
        methods.train_probe(zm.model, tokens, v["attribute"], Site("blocks.0.attn.hook_z", 2))
    with pytest.raises(ValueError, match="test_frac"):
        ProbeConfig(test_frac=1.0)


def test_probing_does_not_change_the_model(zm, data):
    tokens, v = data
    before = {k: p.clone() for k, p in zm.model.state_dict().items()}
    methods.train_probe(zm.model, tokens[:200], v["attribute"][:200], Site("blocks.0.hook_resid_post", 2), CONFIG)
    assert all(torch.equal(before[k], p) for k, p in zm.model.state_dict().items())
    assert all(p.grad is None for p in zm.model.parameters())
