import pytest
import torch

from toylab import zoo
from toylab.methods.patching import (
    PATCH_TARGETS,
    _Setup,
    activation_patching,
    naive_activation_patching,
    naive_path_patching,
    path_patching,
)
from toylab.models import Transformer, TransformerConfig
from toylab.tasks.base import IGNORE, Batch, CounterfactualPair, logit_diff
from toylab import components as comp
from toylab.interventions import ablated_logits


@pytest.fixture(scope="module")
def models():
    return {name: zoo.load(name) for name in ("induction-tiny", "modadd-tiny", "brackets-siit",
                                              "induction-constructed", "induction-2l")}


def _random_pair(cfg, batch=3, seed=0):
    """Pairs that differ at position 2 and are scored at the last position."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, cfg.d_vocab, (batch, cfg.n_ctx), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2] = (corrupt[:, 2] + 1) % cfg.d_vocab
    clean_t = torch.full_like(clean, IGNORE)
    clean_t[:, -1] = 1
    corrupt_t = clean_t.clone()
    corrupt_t[:, -1] = 2
    return CounterfactualPair(Batch(clean, clean_t), Batch(corrupt, corrupt_t), "position 2 changed")


# Shapes the zoo does not ship: LayerNorm, bidirectional attention, gelu, three layers.
SHAPES = {
    "ln-bidirectional-gelu": {"normalization_type": "LN", "attention_dir": "bidirectional", "act_fn": "gelu",
                              "d_mlp": 32},
    "ln-causal-gelu_new": {"normalization_type": "LN", "act_fn": "gelu_new", "d_mlp": 32},
    "3-layer-attn-only": {"n_layers": 3},
}


def _random_model(shape):
    kw = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_vocab": 10, "n_ctx": 8, "init_range": 0.3}
    return Transformer(TransformerConfig(**{**kw, **SHAPES[shape]}), seed=1)


def _targets(cfg):
    return [t for t in PATCH_TARGETS if not (t == "mlp_out" and cfg.attn_only)]


def _run_from(setup, layer, stage, resid, start, extras):
    """Logits of the fast path's functional forward, resumed at (layer, stage), every later position."""
    def past(name):  # the cached run's keys and values before ``start``
        return setup.base[name][:, :start]

    final, _ = setup.forward.resid_from(resid, layer, stage, start, past=past, deltas=extras)
    return setup.forward.unembed(final)


def _assert_same(fast, naive):
    assert fast.axes == naive.axes and fast.scores.shape == naive.scores.shape
    assert torch.equal(fast.scores.isnan(), naive.scores.isnan())
    assert (fast.scores - naive.scores).nan_to_num(0).abs().max() < 1e-5
    # The fast path runs its own hook-free forward, so its baselines agree to float rounding.
    assert fast.clean_metric == pytest.approx(naive.clean_metric, rel=1e-5, abs=1e-6)
    assert fast.corrupted_metric == pytest.approx(naive.corrupted_metric, rel=1e-5, abs=1e-6)


# ---- fast == naive ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["induction-tiny", "modadd-tiny", "brackets-siit"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_fast_activation_patching_matches_the_naive_loop_on_zoo_models(models, name, direction):
    zm = models[name]
    pair = zm.task.counterfactual(3, seed=1)
    for target in _targets(zm.model.cfg):
        fast = activation_patching(zm.model, pair, target, direction=direction)
        naive = naive_activation_patching(zm.model, pair, target, direction=direction)
        _assert_same(fast, naive)
        assert not fast.scores.isnan().any()
        # modadd's query at '=' reads only '=', the same token in both runs: q patches do nothing.
        if not (name == "modadd-tiny" and target == "q"):
            assert fast.scores.abs().max() > 1e-3, f"{target}: every patch scored 0, the test would be vacuous"
    assert not zm.model.has_hooks()


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_rows_that_change_at_different_positions_or_not_at_all(models, direction):
    """Row 0 identical in both runs, the others changed at different positions: the fast path
    skips rows and positions per row, so a mix-up of rows and positions would show here."""
    zm = models["induction-tiny"]
    pair = zm.task.counterfactual(6, seed=2)
    corrupted = pair.corrupted.tokens.clone()
    corrupted[0] = pair.clean.tokens[0]
    targets = pair.corrupted.targets.clone()
    targets[0] = pair.clean.targets[0]
    mixed = CounterfactualPair(pair.clean, Batch(corrupted, targets), "row 0 unchanged")
    answers = mixed.clean.targets[:, -2:-1], mixed.corrupted.targets[:, -2:-1]  # [batch, 1]

    def last_token(logits):  # a metric of our own, which the default-metric shortcuts must not assume
        second_last = logits[:, -2]  # [batch, d_vocab_out]
        return (second_last.gather(-1, answers[0]) - second_last.gather(-1, answers[1])).mean()

    for metric in (None, last_token):
        for target in _targets(zm.model.cfg):
            _assert_same(activation_patching(zm.model, mixed, target, metric=metric, direction=direction),
                         naive_activation_patching(zm.model, mixed, target, metric=metric, direction=direction))
        _assert_same(path_patching(zm.model, mixed, "L1H0", "k", metric=metric, direction=direction),
                     naive_path_patching(zm.model, mixed, "L1H0", "k", metric=metric, direction=direction))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_fast_patching_matches_naive_on_other_model_shapes(shape):
    model = _random_model(shape)
    pair = _random_pair(model.cfg)
    for direction in ("denoise", "noise"):
        for target in _targets(model.cfg):
            _assert_same(activation_patching(model, pair, target, direction=direction),
                         naive_activation_patching(model, pair, target, direction=direction))
        receivers = [("L1H0", "q"), ("L1H1", "k"), (["L1H0", "L1H1"], "v"), ("logits", "resid")]
        receivers += [] if model.cfg.attn_only else [("MLP1", "resid"), ("MLP0", "resid")]
        receivers += [("L2H0", "k"), (["L1H0", "L2H1"], "q")] if model.cfg.n_layers == 3 else []
        for receiver, kind in receivers:
            _assert_same(path_patching(model, pair, receiver, kind, direction=direction),
                         naive_path_patching(model, pair, receiver, kind, direction=direction))


def test_the_functional_forward_matches_the_hooked_one():
    # Resuming at layer 0 from the embeddings with no patch must give the model's own logits,
    # on every shape (LayerNorm, MLP activations, bidirectional masks).
    for shape in SHAPES:
        model = _random_model(shape)
        pair = _random_pair(model.cfg)
        setup = _Setup.make(model, pair, "resid_pre", None, "noise")
        resid = setup.base["blocks.0.hook_resid_pre"]
        with torch.no_grad():
            logits = _run_from(setup, 0, "pre", resid, 0, {})
            suffix = _run_from(setup, 1, "pre", setup.base["blocks.1.hook_resid_pre"][:, 5:], 5, {})
        assert (logits - model(pair.clean.tokens)).abs().max() < 1e-5
        if model.cfg.attention_dir == "causal":  # resumed at position 5 on the cached keys
            assert (suffix - model(pair.clean.tokens)[:, 5:]).abs().max() < 1e-5


def test_the_hook_free_cache_matches_run_with_cache(models):
    # The fast path caches both runs through its own forward; every activation it keeps must
    # be the hooked model's, on the zoo and on the shapes the zoo does not ship.
    cases = [(_random_model(shape), None) for shape in SHAPES] + [(models[name].model, models[name])
                                                                  for name in ("brackets-siit", "induction-2l")]
    for model, zm in cases:
        pair = zm.task.counterfactual(4, seed=3) if zm else _random_pair(model.cfg)
        lean = _Setup.make(model, pair, None, None, "noise")
        hooked = _Setup.make(model, pair, None, None, "noise", hooked=True)
        assert lean.base_logits is None  # logit_diff's terms only, at the scored positions
        assert torch.allclose(lean.base_diff, hooked.base_diff, atol=1e-5)
        for run, reference in ((lean.base, hooked.base), (lean.source, hooked.source)):
            names = set(reference) - {f"blocks.{layer}.attn.hook_result" for layer in range(model.cfg.n_layers)}
            assert set(run) == names
            for name in names:
                assert run[name].shape == reference[name].shape, name
                assert torch.allclose(run[name], reference[name], atol=1e-5), name


def test_attached_hooks_are_honoured(models):
    # The fast path fires no hooks, so with hooks attached it hands over to the hooked reference:
    # patching a model whose head L0H0 is zero-ablated must see the ablation.
    zm = models["induction-2l"]
    pair = zm.task.counterfactual(8, seed=4)

    def ablate(z, hook):
        z = z.clone()
        z[:, :, 0] = 0
        return z

    plain = activation_patching(zm.model, pair, "head")
    with zm.model.hooks([("blocks.0.attn.hook_z", ablate)]):
        ablated = activation_patching(zm.model, pair, "head")
        reference = naive_activation_patching(zm.model, pair, "head")
        paths = path_patching(zm.model, pair, "L1H1", "k")
        paths_reference = naive_path_patching(zm.model, pair, "L1H1", "k")
    assert not zm.model.has_hooks()
    _assert_same(ablated, reference)
    _assert_same(paths, paths_reference)
    # Both runs have L0H0 zeroed, so patching it restores nothing; unhooked it restores a share.
    assert ablated["L0H0"] == 0 and plain["L0H0"] > 0.05


@pytest.mark.parametrize("name", ["induction-tiny", "brackets-siit"])
def test_fast_path_patching_matches_naive_on_zoo_models(models, name):
    zm = models[name]
    pair = zm.task.counterfactual(3, seed=1)
    cases = [("L1H0", "q"), ("L1H1", "k"), ("L1H1", "v"), ("logits", "resid")]
    cases += [] if zm.model.cfg.attn_only else [("MLP1", "resid")]
    for direction in ("denoise", "noise"):
        for receiver, kind in cases:
            _assert_same(path_patching(zm.model, pair, receiver, kind, direction=direction),
                         naive_path_patching(zm.model, pair, receiver, kind, direction=direction))


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_path_patching_is_the_edge_ablation_of_toylab_truth(models, direction):
    zm = models["induction-tiny"]
    model, pair = zm.model, zm.task.counterfactual(4, seed=2)
    result = path_patching(model, pair, "L1H1", "k", direction=direction)
    every_edge = set(comp.edges(model.cfg))
    # Denoising runs the corrupted input with the edge reading the clean sender, and back.
    run, other = ((pair.corrupted, pair.clean) if direction == "denoise" else (pair.clean, pair.corrupted))
    for sender in ("L0H0", "L0H1"):
        logits = ablated_logits(model, run.tokens, other.tokens, every_edge - {comp.Edge(sender, "L1H1", "k")})
        expected = (logit_diff(logits, pair).item() - result.corrupted_metric) / (
            result.clean_metric - result.corrupted_metric)
        assert result[sender] == pytest.approx(expected, abs=1e-5)
        assert abs(result[sender] - (1.0 if direction == "noise" else 0.0)) > 1e-3  # a real effect
    assert result.scores[1].isnan().all()  # layer-1 heads are not upstream of L1H1


# ---- against the ground truth -------------------------------------------------------------


def _truth_heads(zm):
    return {n for n in zm.truth.nodes if comp.parse(n)[0] == "head"}


@pytest.mark.parametrize("name,seed", [("induction-constructed", None), ("induction-siit", 0)])
def test_head_patching_singles_out_the_truths_heads(name, seed):
    zm = zoo.load(name, seed=seed)
    pair = zm.task.counterfactual(16, seed=0)
    result = activation_patching(zm.model, pair, "head")
    circuit = _truth_heads(zm)
    assert {label for label, _ in result.top(len(circuit))} == circuit
    prev, induction = sorted(circuit)  # L0Hx, L1H1
    assert result[induction] > 0.9 and result[prev] > 0.3
    for head in comp.nodes(zm.model.cfg):
        if comp.parse(head)[0] == "head" and head not in circuit:
            assert abs(result[head]) < 0.05, head  # decoys and inert heads


def test_head_patching_on_the_trained_induction_model_ranks_its_circuit():
    # induction-2l shares the work among all eight heads (all are in its truth); the two
    # previous-token heads and the four induction heads are the six largest scores.
    zm = zoo.load("induction-2l")
    pair = zm.task.counterfactual(16, seed=0)
    result = activation_patching(zm.model, pair, "head")
    assert set(_truth_heads(zm)) == {f"L{l}H{h}" for l in range(2) for h in range(4)}
    top6 = {label for label, _ in result.top(6)}
    assert top6 == {"L0H2", "L0H3", "L1H0", "L1H1", "L1H2", "L1H3"}
    assert (result.scores > 0.05).all()


@pytest.mark.parametrize("name,seed,prev,decoys", [
    ("induction-constructed", None, "L0H1", ["L0H0"]),
    ("induction-siit", 0, "L0H2", ["L0H0", "L0H1", "L0H3"]),
])
def test_path_patching_into_the_induction_key_finds_the_previous_token_head(name, seed, prev, decoys):
    zm = zoo.load(name, seed=seed)
    pair = zm.task.counterfactual(16, seed=0)
    key = path_patching(zm.model, pair, "L1H1", "k")
    assert comp.Edge(prev, "L1H1", "k") in set(zm.truth.edges)
    assert key.top(1)[0][0] == prev and key[prev] > 0.3
    assert all(abs(key[d]) < 0.01 for d in decoys)
    query = path_patching(zm.model, pair, "L1H1", "q")
    assert query.scores[0].abs().max() < 0.01  # no sender reaches the induction head's query
    if name == "induction-constructed":
        assert query.scores[0].abs().max() < 1e-6


def test_resid_pre_at_layer_0_acts_only_where_the_first_occurrence_was_shuffled(models):
    zm = models["induction-constructed"]
    pair = zm.task.counterfactual(16, seed=0)
    result = activation_patching(zm.model, pair, "resid_pre")
    changed = (pair.clean.tokens != pair.corrupted.tokens).any(dim=0)  # [pos]
    # Where no row's token changed, the layer-0 stream is the same in both runs: exactly 0.
    assert (result.scores[0][~changed] == 0).all()
    assert result.scores[0][changed].max() > 0.05


# ---- the result and bad input ---------------------------------------------------------------


def test_result_labels_and_lookup(models):
    zm = models["induction-tiny"]
    pair = zm.task.counterfactual(3, seed=1)
    heads = activation_patching(zm.model, pair, "head")
    assert heads.axes == ("layer", "head") and heads.scores.shape == (2, 2)
    label, score = heads.top(1)[0]
    assert heads[label] == score == float(heads.scores.max())
    per_pos = activation_patching(zm.model, pair, "head_pos")
    assert per_pos.axes == ("layer", "head", "pos") and " pos " in per_pos.top(1)[0][0]
    assert activation_patching(zm.model, pair, "resid_pre").top(1)[0][0].startswith("L")
    with pytest.raises(ValueError, match="head id"):
        heads["MLP0"]
    with pytest.raises(ValueError, match="axes"):
        per_pos["L0H0"]


def test_bad_input_gives_clear_errors(models):
    zm = models["induction-tiny"]
    model, pair = zm.model, zm.task.counterfactual(2, seed=0)
    with pytest.raises(ValueError, match="resid_pre"):  # the message lists the valid targets
        activation_patching(model, pair, "residual")
    long = torch.zeros(2, model.cfg.n_ctx + 1, dtype=torch.long)
    too_long = CounterfactualPair(Batch(long, long.clone()), Batch(long.clone(), long.clone()), "long")
    with pytest.raises(ValueError, match="n_ctx"):
        activation_patching(model, too_long, "head")
    with pytest.raises(ValueError, match="scalar"):
        activation_patching(model, pair, "head", metric=lambda logits: logits[:, -1, 0])
    with pytest.raises(ValueError, match="direction"):
        activation_patching(model, pair, "head", direction="both")
    with pytest.raises(ValueError, match="attention-only"):
        activation_patching(model, pair, "mlp_out")
    with pytest.raises(ValueError, match="receiver_input"):
        path_patching(model, pair, "L1H1", "z")
    with pytest.raises(ValueError, match="not 'resid'"):
        path_patching(model, pair, "L1H1", "resid")
    with pytest.raises(ValueError, match="upstream"):
        path_patching(model, pair, "L1H1", "k", senders=["L1H0"])
    assert not model.has_hooks()


@pytest.mark.parametrize("name", ["brackets-siit", "trap-self-repair", "induction-siit"])
@pytest.mark.parametrize("direction", ["noise", "denoise"])
def test_edge_patching_gives_the_edge_ablation_engines_scores(name, direction):
    """The fast sweep (each edge resumed at its receiver, on the rows it changes) against one
    hooked forward per edge through toylab.interventions, the engine the certificates use."""
    from toylab import zoo
    from toylab.methods.patching import edge_patching, naive_edge_patching

    zm = zoo.load(name)
    pair = zm.task.counterfactual(12, 11)
    fast, naive = edge_patching(zm.model, pair, direction=direction), naive_edge_patching(zm.model, pair,
                                                                                          direction=direction)
    assert fast.scores.keys() == naive.scores.keys()
    assert max(abs(fast[e] - naive[e]) for e in fast.scores) < 1e-4
