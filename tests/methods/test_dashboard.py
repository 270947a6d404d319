"""Feature dashboards: every figure of methods.feature_dashboard checked against an independent computation on a
zoo model, truth matches against features planted from the model's own truth, and bad input refused in words."""

import pytest
import torch

from toylab import methods, sae, zoo
from toylab.hooks import UnknownNameError
from toylab.methods import Neuron, SAELatent, TranscoderFeature

ZM = zoo.load("conjunctions")  # 1 layer, d_model 32, d_mlp 8; the truth declares features at hook_mlp_out and embed
MODEL, TASK, TRUTH = ZM.model, ZM.task, ZM.truth
N = 512
TOKENS = TASK.sample(N, seed=3).tokens
CONJUNCTION = next(f for f in TRUTH.features if f.hook == "blocks.0.hook_mlp_out")
INPUT = next(f for f in TRUTH.features if f.hook == "hook_embed")


@pytest.fixture(scope="module")
def cache():
    return methods.dashboard_activations(MODEL, TOKENS, task=TASK)


@pytest.fixture(scope="module")
def neuron_acts():
    """blocks.0.mlp.hook_post of TOKENS from the model's own run_with_cache: [batch, pos, d_mlp]."""
    with torch.no_grad():
        _, c = MODEL.run_with_cache(TOKENS, names=["blocks.0.mlp.hook_post"])
    return c["blocks.0.mlp.hook_post"]


def untrained_sae(d_in: int, d_sae: int = 16) -> sae.SAE:
    return sae.SAE(sae.SAEConfig(d_in=d_in, d_sae=d_sae, architecture="relu")).requires_grad_(False)


def transcoder() -> sae.Transcoder:
    cfg = MODEL.cfg
    return sae.Transcoder(sae.TranscoderConfig(n_layers=1, d_in=cfg.d_model, d_out=cfg.d_model,
                                               d_latent=16)).requires_grad_(False)


def expected_logits(direction: torch.Tensor, k: int) -> tuple[list[str], list[str]]:
    effect = direction @ MODEL.unembed.W_U.detach()  # [d_vocab_out]
    order = effect.argsort(descending=True).tolist()
    return [TASK.output_names[i] for i in order[:k]], [TASK.output_names[i] for i in order[::-1][:k]]


@pytest.mark.parametrize("index", [0, 3, 7])
def test_top_inputs_are_the_largest_activations_of_the_data(cache, neuron_acts, index):
    d = methods.feature_dashboard(MODEL, cache, Neuron(0, index), n_top=6)
    acts = neuron_acts[..., index]  # [batch, pos]
    maxima = acts.max(1).values
    assert d.max_activation == pytest.approx(float(acts.max()))
    assert d.top[0].max_activation == pytest.approx(float(acts.max()))
    listed = {tuple(TOKENS[p.row].tolist()) for p in d.top}
    assert len(listed) == len(d.top) == 6  # distinct prompts
    for p in d.top:
        assert p.tokens == tuple(TASK.to_str_tokens(TOKENS[p.row]))
        assert list(p.activations) == pytest.approx(acts[p.row].tolist())
        assert p.max_pos == int(acts[p.row].argmax())
    assert [p.max_activation for p in d.top] == sorted((p.max_activation for p in d.top), reverse=True)
    # no prompt left out fires more than the last one listed
    left_out = [float(maxima[r]) for r in range(N) if tuple(TOKENS[r].tolist()) not in listed]
    assert max(left_out) <= d.top[-1].max_activation + 1e-6


def test_histogram_counts_every_firing_position_and_density_is_their_fraction(cache, neuron_acts):
    d = methods.feature_dashboard(MODEL, cache, Neuron(0, 2), n_bins=17)
    acts = neuron_acts[..., 2]
    firing = int((acts > 0).sum())
    assert sum(d.hist_counts) == d.n_firing == firing and len(d.hist_counts) == 17 == len(d.hist_edges) - 1
    assert d.hist_edges[0] == pytest.approx(float(acts[acts > 0].min()))
    assert d.hist_edges[-1] == pytest.approx(float(acts.max()))
    assert d.density == pytest.approx(firing / acts.numel())
    assert d.prompt_density == pytest.approx(float((acts.max(1).values > 0).float().mean()))


def test_quantile_groups_split_the_firing_prompts_by_their_maximum(cache, neuron_acts):
    d = methods.feature_dashboard(MODEL, cache, Neuron(0, 5), n_quantiles=3, n_per_quantile=2)
    maxima = neuron_acts[..., 5].max(1).values
    assert sum(q.n_prompts for q in d.quantiles) == int((maxima > 0).sum())
    assert d.quantiles[0].low == 0 and d.quantiles[-1].high == pytest.approx(d.max_activation)
    for q in d.quantiles:
        assert len(q.examples) <= 2
        for p in q.examples:
            assert q.low < p.max_activation <= q.high + 1e-5
    assert methods.feature_dashboard(MODEL, cache, Neuron(0, 5)).quantiles == ()


def test_promoted_and_suppressed_outputs_are_the_output_direction_through_W_U(cache):
    d = methods.feature_dashboard(MODEL, cache, Neuron(0, 1), n_logits=5)
    up, down = expected_logits(MODEL.blocks[0].mlp.W_out.detach()[1], 5)
    assert [name for name, _ in d.promoted] == up and [name for name, _ in d.suppressed] == down
    assert d.promoted[0][1] == pytest.approx(float((MODEL.blocks[0].mlp.W_out[1] @ MODEL.unembed.W_U).detach().max()),
                                             rel=1e-5)
    assert "direct path only" in d.logits_note

    sae_ = untrained_sae(32)
    d = methods.feature_dashboard(MODEL, cache, SAELatent(sae_, "blocks.0.hook_resid_post", 4), n_logits=3)
    assert [name for name, _ in d.promoted] == expected_logits(sae_.W_dec.detach()[4], 3)[0]

    tc = transcoder()
    d = methods.feature_dashboard(MODEL, cache, TranscoderFeature(tc, 0, 9), n_logits=3)
    assert [name for name, _ in d.suppressed] == expected_logits(tc.W_dec.detach()[0, 0, 9], 3)[1]


def test_a_latent_of_an_mlp_width_hook_has_no_logit_effects_and_says_why(cache):
    d = methods.feature_dashboard(MODEL, cache, SAELatent(untrained_sae(8), "blocks.0.mlp.hook_post", 0))
    assert d.promoted is None and d.suppressed is None
    assert "n/a" in d.logits_note and "d_model=32" in d.logits_note


def test_truth_match_finds_a_planted_conjunction_and_a_planted_input_feature(cache):
    tc = transcoder()
    with torch.no_grad():
        tc.W_dec[0, 0, 5] = 3.0 * torch.tensor(CONJUNCTION.vector)  # the scale does not matter to a cosine
    d = methods.feature_dashboard(MODEL, cache, TranscoderFeature(tc, 0, 5), truth=TRUTH)
    m = d.truth_match
    assert (m.name, m.hook, m.pos, m.variable, m.value) == (CONJUNCTION.name, "blocks.0.hook_mlp_out",
                                                             CONJUNCTION.pos, "conjunction", CONJUNCTION.value)
    assert m.cosine == pytest.approx(1.0, abs=1e-5)
    assert m.n_declared == sum(f.hook == "blocks.0.hook_mlp_out" for f in TRUTH.features)
    acts = cache.activations(TranscoderFeature(tc, 0, 5))
    assert m.fires_at_pos == pytest.approx(float((acts[:, CONJUNCTION.pos] > 0).float().mean()))
    # the other features of the transcoder match less well; the table puts the planted one first
    table = methods.feature_table(MODEL, cache, TranscoderFeature(tc, 0, 0), truth=TRUTH)
    assert table.rows()[0]["index"] == 5 and table.rows()[0]["truth match"] == CONJUNCTION.name
    assert all(row["cosine"] < 0.99 for row in table.rows()[1:])

    sae_ = untrained_sae(32)
    with torch.no_grad():
        sae_.W_dec[2] = torch.tensor(INPUT.vector)
    d = methods.feature_dashboard(MODEL, cache, SAELatent(sae_, "hook_embed", 2), truth=TRUTH)
    assert d.truth_match.name == INPUT.name and d.truth_match.cosine == pytest.approx(1.0, abs=1e-5)
    assert d.truth_match.pos is None


def test_truth_match_is_none_where_the_truth_declares_nothing(cache):
    sae_ = untrained_sae(32)
    with torch.no_grad():
        sae_.W_dec[0] = torch.tensor(CONJUNCTION.vector)  # a declared direction, but at a hook with no declaration
    d = methods.feature_dashboard(MODEL, cache, SAELatent(sae_, "blocks.0.hook_resid_post", 0), truth=TRUTH)
    assert d.truth_match is None and "declares no feature where this one writes" in d.truth_note
    d = methods.feature_dashboard(MODEL, cache, Neuron(0, 0))  # no truth given
    assert d.truth_match is None and d.truth_note == "no truth given"
    table = methods.feature_table(MODEL, cache, Neuron(0, 0))
    assert set(table.match) == {None} and "truth match" not in table.rows()[0]
    modadd = zoo.load("modadd-113")  # its truth declares no features at all
    d = methods.feature_dashboard(modadd, modadd.task.sample(64, seed=0).tokens, Neuron(0, 0))
    assert d.truth_match is None and d.truth_note == "the truth declares no features"


def test_one_forward_pass_serves_every_feature_of_a_source_and_a_zoo_model_brings_its_truth():
    cache = methods.dashboard_activations(ZM, TASK, n_prompts=256, seed=1)
    assert cache.forward_passes == 1 and cache.n_prompts == 256
    for i in range(MODEL.cfg.d_mlp):
        methods.feature_dashboard(ZM, cache, Neuron(0, i))
    methods.feature_dashboard(ZM, cache, TranscoderFeature(transcoder(), 0, 3))
    assert cache.forward_passes == 1  # MLP inputs were cached with the neurons
    direct = methods.feature_dashboard(ZM, TASK, Neuron(0, 4), n_prompts=256, seed=1)
    cached = methods.feature_dashboard(ZM, cache, Neuron(0, 4))
    assert direct == cached and direct.truth_match is not None  # the zoo model's truth
    cache.max_sources = 1  # the oldest source is dropped, and recomputed (from the cached hooks) when asked again
    methods.feature_dashboard(ZM, cache, SAELatent(untrained_sae(32), "hook_embed", 0))
    assert len(cache._sources) == 1 and methods.feature_dashboard(ZM, cache, Neuron(0, 4)) == cached
    assert cache.forward_passes == 2  # hook_embed's


def test_bad_input_is_refused_with_what_was_wrong_and_what_to_do(cache):
    with pytest.raises(ValueError, match=r"index 8 is out of range; MLP0 \(d_mlp\) has 8 \(0..7\)"):
        methods.feature_dashboard(MODEL, cache, Neuron(0, 8))
    with pytest.raises(ValueError, match=r"layer 1 is out of range; the model has 1 layer \(0..0\)"):
        methods.feature_dashboard(MODEL, cache, Neuron(1, 0))
    with pytest.raises(ValueError, match="reads d_in=32, but blocks.0.mlp.hook_post has width 8.*train an SAE"):
        methods.feature_dashboard(MODEL, cache, SAELatent(untrained_sae(32), "blocks.0.mlp.hook_post", 0))
    with pytest.raises(ValueError, match=r"index 16 is out of range; the SAE \(d_sae\) has 16"):
        methods.feature_dashboard(MODEL, cache, SAELatent(untrained_sae(32), "hook_embed", 16))
    with pytest.raises(UnknownNameError, match="nearest valid names"):
        methods.feature_dashboard(MODEL, cache, SAELatent(untrained_sae(32), "blocks.0.hook_mlp_outt", 0))
    wide = sae.Transcoder(sae.TranscoderConfig(n_layers=2, d_in=32, d_out=32, d_latent=4))
    with pytest.raises(ValueError, match="has 2 layers of width 32 -> 32, but the model has 1 MLPs"):
        methods.feature_dashboard(MODEL, cache, TranscoderFeature(wide, 0, 0))
    with pytest.raises(TypeError, match="a feature is Neuron"):
        methods.feature_dashboard(MODEL, cache, (0, 3))
    with pytest.raises(ValueError, match="n_top must be an int >= 1"):
        methods.feature_dashboard(MODEL, cache, Neuron(0, 0), n_top=0)
    with pytest.raises(TypeError, match="task_or_tokens must be"):
        methods.feature_dashboard(MODEL, [[0, 1]], Neuron(0, 0))
    induction = zoo.load("induction-2l").model
    with pytest.raises(ValueError, match="attention-only, it has no MLP neurons; look at SAELatent"):
        methods.feature_dashboard(induction, torch.zeros(2, 4, dtype=torch.long), Neuron(0, 0))
    with pytest.raises(ValueError, match="computed with another model"):
        methods.feature_dashboard(zoo.load("factual-recall").model, cache, Neuron(0, 0))
