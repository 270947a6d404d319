"""The checker: right answers pass, wrong ones are rejected with a reason and a hint."""

import pytest
import torch

from toylab.lessons import ExerciseFailed, Wrong, check, exercise, get, lesson_fixtures, load


@pytest.fixture(autouse=True)
def no_grad():
    """As in the lessons, which turn gradients off: nothing here trains."""
    with torch.no_grad():
        yield


def resid_missing_pos_embed(cache):
    return cache["hook_embed"] + cache["blocks.0.hook_attn_out"]


def resid_without_mlp(cache):
    return cache["hook_embed"] + cache["hook_pos_embed"] + cache["blocks.0.hook_attn_out"]


def head_output_with_bias(model, cache, layer, head):
    z = cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
    return z @ model.blocks[layer].attn.W_O[head] + model.blocks[layer].attn.b_O


def head_output_wrong_head(model, cache, layer, head):
    z = cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
    return z @ model.blocks[layer].attn.W_O[1 - head]


def previous_token_per_row(pattern):  # forgot to average over the batch
    return torch.diagonal(pattern, offset=-1, dim1=-2, dim2=-1).mean(dim=-1)


def previous_token_includes_diagonal(pattern):  # attention to itself, not to the previous token
    return torch.diagonal(pattern, dim1=-2, dim2=-1).mean(dim=(0, 2))


def induction_score_first_occurrence(pattern, tokens):  # the earliest, not the most recent, occurrence
    n = tokens.shape[1]
    pos = torch.arange(n)
    earlier = (tokens[:, :, None] == tokens[:, None, :]) & (pos[None, :] < pos[:, None])
    first = torch.where(earlier, pos, n).amin(dim=-1)
    valid = first < n
    index = (first + 1).clamp(max=n - 1)[:, None, :, None].expand(-1, pattern.shape[1], -1, 1)
    attn = pattern.gather(-1, index).squeeze(-1)
    return (attn * valid[:, None]).sum(dim=(0, 2)) / valid.sum()


def ov_without_unembed(model, layer, head):
    attn = model.blocks[layer].attn
    return model.embed.W_E @ attn.W_V[head] @ attn.W_O[head]


def ov_transposed(model, layer, head):
    attn = model.blocks[layer].attn
    return (model.embed.W_E @ attn.W_V[head] @ attn.W_O[head] @ model.unembed.W_U).T


def q_composition(model, sl, sh, rl, rh):  # W_QK not transposed: the query side
    s, r = model.blocks[sl].attn, model.blocks[rl].attn
    A, B = s.W_V[sh] @ s.W_O[sh], r.W_Q[rh] @ r.W_K[rh].T
    return float(((A @ B).norm() / (A.norm() * B.norm())).detach())


def patch_noising(model, pair, layer, pos):  # patches corrupted into clean: the reverse
    from toylab.tasks import logit_diff

    name = f"blocks.{layer}.hook_resid_pre"
    _, cache = model.run_with_cache(pair.corrupted.tokens, names=[name])
    clean = logit_diff(model(pair.clean.tokens), pair)
    corrupted = logit_diff(model(pair.corrupted.tokens), pair)

    def patch(x, hook):
        x = x.clone()
        x[:, pos] = cache[name][:, pos]
        return x

    with model.hooks([(name, patch)]):
        patched = logit_diff(model(pair.clean.tokens), pair)
    return float((patched - corrupted) / (clean - corrupted))


def path_patch_whole_head(model, pair, sender, receiver):  # activation patching of the sender instead
    from toylab.tasks import logit_diff

    layer, head = int(sender[1]), int(sender[3])
    name = f"blocks.{layer}.attn.hook_z"
    _, cache = model.run_with_cache(pair.clean.tokens, names=[name])
    clean = logit_diff(model(pair.clean.tokens), pair)
    corrupted = logit_diff(model(pair.corrupted.tokens), pair)

    def patch(z, hook):
        z = z.clone()
        z[:, :, head] = cache[name][:, :, head]
        return z

    with model.hooks([(name, patch)]):
        patched = logit_diff(model(pair.corrupted.tokens), pair)
    return float((patched - corrupted) / (clean - corrupted))


def loss_summed_over_batch(out, batch, importance):
    return (importance * (batch - out) ** 2).sum(dim=(0, -1))


def loss_without_importance(out, batch, importance):
    return ((batch - out) ** 2).sum(dim=-1).mean(dim=0)


def dimensionality_nan_for_zero(W):
    norms = W.norm(dim=1)
    unit = W / norms[:, None, :]
    return norms**2 / (torch.einsum("ihf,ihg->ifg", unit, W) ** 2).sum(-1)


def dimensionality_squared_cosines(W):
    unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return 1 / (torch.einsum("ihf,ihg->ifg", unit, unit) ** 2).sum(-1)


def topk_without_b_dec(x, W_enc, b_enc, b_dec, k):
    pre = x @ W_enc + b_enc
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def topk_without_relu(x, W_enc, b_enc, b_dec, k):
    pre = (x - b_dec) @ W_enc + b_enc
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values)


def mmcs_per_atom(features, decoder):
    f = features / features.norm(dim=-1, keepdim=True)
    d = decoder / decoder.norm(dim=-1, keepdim=True)
    return float((f @ d.T).max(dim=0).values.mean())


def untrained_sae(d_in=32, d_sae=256):
    from toylab.sae import SAE, SAEConfig

    return SAE(SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=4))


def toy_feature_mistakes():
    """SAEs that never learnt the toy model's features, each answered with the latent that fires most
    for each feature alone (distinct, so that only the truth can reject them): untrained (which the
    checker once passed), with a random decoder, with a decoder copying the model's W behind an
    untrained encoder, and the true features plus louder latents that write nothing. By name."""
    from toylab.sae import SAE, SAEConfig

    model = load("sae")._toy_model()  # the checker's own, trained once
    n = model.cfg.n_features
    with torch.no_grad():
        alone = model.hidden(torch.eye(n)[:, None, :])[:, 0]  # [feature, hidden]

    def untrained(seed):
        return SAE(SAEConfig(d_in=10, d_sae=40, architecture="topk", k=2, seed=seed))

    def random_decoder(seed):
        sae = untrained(seed)
        with torch.no_grad():
            sae.W_dec.copy_(torch.nn.functional.normalize(
                torch.randn(40, 10, generator=torch.Generator().manual_seed(100 + seed)), dim=-1))
        return sae

    def decoder_copies_w(seed):
        sae = untrained(seed)
        with torch.no_grad():
            sae.W_dec[:n] = model.W[0].detach().T  # the true directions, rows of the decoder
        return sae

    def silent_detectors(seed):  # latents 0-19 are the true features; 20-39 fire more for them and write nothing
        sae = SAE(SAEConfig(d_in=10, d_sae=40, architecture="topk", k=4, seed=seed))
        W = model.W[0].detach()  # [hidden, feature]
        with torch.no_grad():
            sae.W_enc.copy_(torch.cat([W, 1.5 * W], dim=1))
            sae.W_dec.copy_(torch.cat([W.T, torch.zeros_like(W.T)]))
            sae.b_enc.zero_()
            sae.b_dec.zero_()
        return sae

    def with_own_latents(make):
        for seed in range(100):
            sae = make(seed)
            with torch.no_grad():
                latents = sae.encode(alone).argmax(-1).tolist()
            if len(set(latents)) == n:
                return sae, latents
        raise AssertionError(f"no seed of {make.__name__} fires a distinct latent for each feature")

    return {make.__name__: with_own_latents(make)
            for make in (untrained, random_decoder, decoder_copies_w, silent_detectors)}


TOY_FEATURE_MISTAKES = toy_feature_mistakes()


def basis_unnormalised(p):
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for w in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * torch.pi * w * x / p), torch.sin(2 * torch.pi * w * x / p)]
    return torch.stack(rows)


def basis_sin_first(p):
    from toylab.methods.fourier import fourier_basis

    basis = fourier_basis(p, torch.float64)[0]
    order = [0] + [i + d for i in range(1, p, 2) for d in (1, 0)]
    return basis[order]


def basis_as_columns(p):
    from toylab.methods.fourier import fourier_basis

    return fourier_basis(p, torch.float64)[0].T


def trig_logits_difference(a, b, freqs, p):  # cos(wa)cos(wb) + sin(wa)sin(wb): cos(w(a-b))
    c = torch.arange(p, dtype=torch.float64)
    out = torch.zeros(len(a), p, dtype=torch.float64)
    for w in freqs:
        wa, wb, wc = (2 * torch.pi * w * v.double() / p for v in (a, b, c))
        cos_sum, sin_sum = wa.cos() * wb.cos() + wa.sin() * wb.sin(), wa.sin() * wb.cos() - wa.cos() * wb.sin()
        out += cos_sum[:, None] * wc.cos() + sin_sum[:, None] * wc.sin()
    return out


def trig_logits_in_radians(a, b, freqs, p):  # forgot 2 pi / p
    c = torch.arange(p, dtype=torch.float64)
    return sum(torch.cos(w * (a.double()[:, None] + b.double()[:, None] - c)) for w in freqs)


def _fraction_terms(grids, w):
    from toylab.methods.fourier import fourier_basis

    B = fourier_basis(grids.shape[-1], torch.float64)[0]
    sq = (B @ grids.double() @ B.T) ** 2
    rows = [0, 2 * w - 1, 2 * w]
    return sq, sq[:, rows][:, :, rows].sum((1, 2)) - sq[:, 0, 0]


def fraction_products_only(grids, w):
    sq, _ = _fraction_terms(grids, w)
    rows = [2 * w - 1, 2 * w]
    return sq[:, rows][:, :, rows].sum((1, 2)) / (sq.sum((1, 2)) - sq[:, 0, 0])


def fraction_mean_in_total(grids, w):
    sq, part = _fraction_terms(grids, w)
    return part / sq.sum((1, 2))


def key_frequency_mistakes():
    """The certified set with one left out, with the largest non-key embedding frequency added, and
    the five largest embedding frequencies (read from the zoo, never hard-coded: models get retrained)."""
    from toylab import methods, zoo

    zm = zoo.load(lesson_fixtures("grokking").MODEL)
    truth = sorted(zm.truth.claims["key_frequencies"])
    by_norm = [int(i) + 1 for i in methods.embedding_frequency_norms(zm.model, zm.task.p).argsort(descending=True)]
    decoy = next(w for w in by_norm if w not in truth)
    return [truth[1:], sorted(truth + [decoy]), sorted(by_norm[:5]), [], [zm.task.p], "garbage"]


def halfway_mistakes():
    """Swapped, and train loss for test loss (from the shipped run, if it ships yet)."""
    from toylab import zoo

    checks = load("grokking")
    m = zoo.load_shipped_progress(lesson_fixtures("grokking").PROGRESS_MODEL)
    r, t, tr = (checks._halfway(m, f"{k}_loss")[0] for k in ("restricted", "test", "train"))
    return [{"restricted": t, "test": r}, {"restricted": r, "test": tr}, {"restricted": 1}, [r, t]]


def trace_restoring_resid(model, batch, noise, layer, pos):  # restores the residual stream, not the MLP
    name = f"blocks.{layer}.hook_resid_post"
    _, clean = model.run_with_cache(batch.tokens, names=[name])

    def corrupt(x, hook):
        x = x.clone()
        x[:, 2] += noise[:, 0]
        return x

    def restore(x, hook):
        x = x.clone()
        x[:, pos] = clean[name][:, pos]
        return x

    with model.hooks([("hook_embed", corrupt), (name, restore)]):
        return float(model(batch.tokens)[:, 3].softmax(-1).gather(-1, batch.targets[:, 3:4]).mean())


def trace_without_noise(model, batch, noise, layer, pos):  # forgot to corrupt: the clean probability
    return float(model(batch.tokens)[:, 3].softmax(-1).gather(-1, batch.targets[:, 3:4]).mean())


def control_is_the_labels(labels, types, seed):
    return labels.clone()


def control_per_example(labels, types, seed):  # a fresh label for every example, not per type
    g = torch.Generator().manual_seed(seed)
    return labels[torch.randint(len(labels), (len(labels),), generator=g)]


def control_uniform(labels, types, seed):  # per type, but uniform over classes
    unique, inverse = types.unique(return_inverse=True)
    g = torch.Generator().manual_seed(seed)
    return torch.randint(int(labels.max()) + 1, (len(unique),), generator=g)[inverse]


def used_sites_mistakes():
    from toylab.methods import Site

    store, after = Site("blocks.0.hook_mlp_out", 2), Site("blocks.0.hook_resid_post", 2)
    out, decoy = Site("blocks.1.hook_resid_post", 3), Site("blocks.1.hook_resid_post", 2)
    return [{store}, {store, after, out, decoy}, {str(store), str(after)}, {store, after, out, Site("hook_embed", 2)},
            "blocks.0.hook_mlp_out[2]"]


def resample_scores_signed(problem):  # forgot the absolute value
    reference_node_scores = load("validate").reference_node_scores
    pair = problem.pair(64)
    base = float(problem.metric(problem.model(pair.clean.tokens), pair))
    return {n: -v for n, v in reference_node_scores(problem).items()} if base > 0 else reference_node_scores(problem)


def resample_scores_unnormalised(problem):  # forgot to divide by |m_clean - m_corrupted|
    checks = load("validate")
    gap = checks._gap(problem)
    return {n: v * gap for n, v in checks.reference_node_scores(problem).items()}


def resample_scores_heads_only(problem):  # embed and MLPs left out
    return {n: v for n, v in load("validate").reference_node_scores(problem).items() if n.startswith("L")}


def resample_scores_mutating(problem):  # right scores, but zeroes a weight on the way
    problem.model.unembed.W_U.data[0, 0] = 0.0
    return load("validate").reference_node_scores(problem)


def edge_scores_peeking(problem):  # the ceiling: reads the answer key
    from toylab.validate.baselines import BASELINES

    return BASELINES["truth"](problem)


def edge_scores_random(problem):
    from toylab.validate.baselines import BASELINES

    return BASELINES["random"](problem)


def edge_scores_from_attention(problem):  # node scores, not edges
    from toylab.validate.baselines import BASELINES

    return BASELINES["attention-heuristic"](problem)


WRONG = {
    "induction.previous_token_score": [previous_token_per_row, previous_token_includes_diagonal],
    "induction.induction_score": [induction_score_first_occurrence],
    "induction.circuit_heads": [{"L0H0", "L0H1", "L1H0", "L1H1"}, {"L1H1"}, {"L0H0", "L1H0"}, "garbage"],
    "induction.ov_circuit": [ov_without_unembed, ov_transposed],
    "induction.k_composition": [q_composition],
    "induction.k_edge": [("L0H1", "L1H1", "q"), ("L0H0", "L1H0", "k"), ("embed", "L1H1", "v"), "L0H1->L1H1"],
    "patching.patch_resid_pre": [patch_noising],
    "patching.important_heads": [{"L1H1"}, {"L0H2", "L1H1", "L0H3"}],
    "patching.path_patch_k": [path_patch_whole_head],
    "patching.senders": [{"k": {"L0H2"}, "v": {"L0H0", "L0H1"}}, {"k": {"L0H2", "L0H3"}, "v": {"L0H0"}},
                         {"k": {"L0H2", "L0H3"}}, ["L0H2"]],
    "tour.resid_after_layer0": [resid_missing_pos_embed, resid_without_mlp, "not a function"],
    "tour.head_output": [head_output_with_bias, head_output_wrong_head],
    "tour.most_important_head": ["L0H0", "L1H3", "MLP0", 42, ["L1H1", "L0H2"]],
    "superposition.loss": [loss_summed_over_batch, loss_without_importance],
    "superposition.dimensionality": [dimensionality_nan_for_zero, dimensionality_squared_cosines],
    "superposition.represented": [[5, 5, 5, 5, 5], [2, 2, 2, 2, 2], [2, 5], "garbage"],
    "superposition.phase_change": [0.01, 0.05, 1.5, "garbage"],
    "sae.topk_encode": [topk_without_b_dec, topk_without_relu],
    "sae.mmcs": [mmcs_per_atom],
    "sae.recover": [untrained_sae(), untrained_sae(d_in=16), "garbage"],
    "sae.toy_features": [*TOY_FEATURE_MISTAKES.values(), (untrained_sae(10, 40), list(range(20))),
                         (untrained_sae(10, 40), [0] * 20), (untrained_sae(32, 40), list(range(20))), "garbage"],
    "grokking.fourier_basis": [basis_unnormalised, basis_sin_first, basis_as_columns],
    "grokking.trig_logits": [trig_logits_difference, trig_logits_in_radians, "not a function"],
    "grokking.frequency_fraction": [fraction_products_only, fraction_mean_in_total],
    "grokking.key_frequencies": key_frequency_mistakes(),
    "grokking.halfway_steps": halfway_mistakes(),
    "validate.resample_scores": [resample_scores_signed, resample_scores_unnormalised, resample_scores_heads_only,
                                 resample_scores_mutating, "not a function"],
    "validate.heuristic_failure": [("induction-siit", 1.0), ("induction-constructed", 0.5), ("induction-2l", 0.583),
                                   "induction-constructed", "garbage"],
    "validate.decoy_heads": [{"L0H1", "L1H1"}, {"L0H0"}, {"L0H0", "L1H0", "L1H1"}, {"L0H5"}, set(), "garbage"],
    "validate.edge_method": [edge_scores_peeking, edge_scores_random, edge_scores_from_attention, "not a function"],
    "probes.trace_mlp": [trace_restoring_resid, trace_without_noise],
    "probes.fact_store": [(1, 2), (0, 3), (1, 3), "MLP0", (0, 2, 1)],
    "probes.control_labels": [control_is_the_labels, control_per_example, control_uniform],
    "probes.used_sites": used_sites_mistakes(),
}


@pytest.mark.parametrize("ex_id,answer", [(k, a) for k, answers in WRONG.items() for a in answers],
                         ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", type(v).__name__))
def test_wrong_answers_are_rejected_with_a_message_and_a_hint(ex_id, answer, capsys):
    feedback = check(ex_id, answer)
    assert not feedback.passed and feedback.done
    assert feedback.message and feedback.hint
    assert "[wrong]" in capsys.readouterr().out


OWN_WRONG_ANSWERS = ("traps", "ioi", "steering", "editing", "graphs", "lens", "brackets", "atp", "build")


def test_every_exercise_has_wrong_answers_under_test():
    from toylab.lessons import exercises, find

    # lessons 9 on keep their wrong answers in a test file of their own (tests/lessons/test_traps_lesson.py,
    # test_ioi_lesson.py, ...), which checks its own coverage
    own = set().union(*(find(prefix).exercises for prefix in OWN_WRONG_ANSWERS))
    assert set(exercises()) - own == set(WRONG)


def test_an_sae_that_reconstructs_well_but_misses_the_features_is_rejected():
    """A ReLU SAE with L1 that trains briefly explains the data yet fails the truth-based bar."""
    from toylab.sae import SAE, SAEConfig, train_sae

    with torch.enable_grad():
        sae = SAE(SAEConfig(d_in=32, d_sae=256, architecture="relu", l1_coefficient=3e-3))
        train_sae(sae, lesson_fixtures("sae").dictionary().sample, steps=200, batch_size=256, seed=0)
    feedback = check("sae.recover", sae)
    assert not feedback.passed and "L0" in feedback.message


def test_a_latent_map_that_cosines_could_support_is_checked_by_feeding_features():
    """Right SAE, latents of two features swapped: the checker names the latent that fires."""
    from toylab.sae import SAE, SAEConfig, score_sae, train_sae

    model = load("sae")._toy_model()  # the checker's own, trained once
    activations = lesson_fixtures("sae").activation_sampler(model)

    with torch.enable_grad():
        sae = SAE(SAEConfig(d_in=10, d_sae=40, architecture="topk", k=2))
        train_sae(sae, activations, steps=1000, batch_size=256, seed=0, resample_every=250)
    x, c = activations(4096, torch.Generator().manual_seed(1))
    latents = list(score_sae(sae, model.W[0].detach().T, x, c).matched_latent)
    assert check("sae.toy_features", (sae, latents)).passed
    latents[3], latents[7] = latents[7], latents[3]
    feedback = check("sae.toy_features", (sae, latents))
    assert not feedback.passed and feedback.message.startswith("feature 3 alone makes latent")


@pytest.mark.parametrize("name,says", [("untrained", "has not recovered the toy model's features"),
                                       ("random_decoder", "has not recovered the toy model's features"),
                                       ("decoder_copies_w", "has not recovered the toy model's features"),
                                       ("silent_detectors", "decoder row is not feature")])
def test_an_sae_whose_latents_fire_but_that_never_learnt_the_features_is_rejected(name, says):
    """Its latents fire, one per feature, for each feature alone: only the truth tells it is useless."""
    feedback = check("sae.toy_features", TOY_FEATURE_MISTAKES[name])
    assert not feedback.passed and feedback.done
    assert says in feedback.message and "train" in feedback.hint


def test_a_decoy_answer_is_told_what_the_truth_says():
    feedback = check("tour.most_important_head", "L0H0")
    assert "not in the circuit" in feedback.message


def test_unfinished_and_crashing_answers_are_reported_not_raised():
    def stub(cache):
        raise NotImplementedError

    def crash(cache):
        return cache["no such hook"]

    assert not check("tour.resid_after_layer0", stub).done
    crashed = check("tour.resid_after_layer0", crash)
    assert crashed.done and "raised" in crashed.message


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("TOYLAB_LESSONS_STRICT", "1")
    with pytest.raises(ExerciseFailed, match="tour.resid_after_layer0"):
        check("tour.resid_after_layer0", resid_missing_pos_embed)


def test_unknown_exercise_names_the_nearest():
    with pytest.raises(KeyError, match="tour.head_output"):
        get("tour.head_outptu")


def test_exercise_registration_validates():
    with pytest.raises(ValueError, match="difficulty"):
        exercise("x.y", "t", "implement", "trivial", 1, "h")(lambda a: "ok")
    get("tour.head_output")  # the tour's checks are loaded
    with pytest.raises(ValueError, match="registered twice"):
        exercise("tour.head_output", "t", "implement", "easy", 1, "h")(lambda a: "ok")


def test_close_comparison_explains_the_mismatch():
    from toylab.lessons.checking import expect_close

    with pytest.raises(Wrong, match="shape"):
        expect_close(torch.zeros(2, 3), torch.zeros(3, 2), "x")
    with pytest.raises(Wrong, match="by up to 1"):
        expect_close(torch.tensor([0.0, 1.0]), torch.zeros(2), "x")
