"""Checkers for lesson 05, sparse autoencoders: TopK encoding, MMCS, an SAE that recovers a
known dictionary, and the latents that carry a toy model's features (found by feeding the
model each feature alone)."""

from __future__ import annotations

from functools import lru_cache

import torch

from toylab.lessons.checking import call, expect_close, number
from toylab.lessons.exercise import Wrong, exercise
from toylab.models import ToyModel
from toylab.sae import SAE, SAEConfig, cosine_matrix, mmcs, score_sae

from .fixtures import dictionary, feature_directions, toy_model


@exercise("sae.topk_encode", "TopK encoding", "implement", "easy", 10,
          hint="pre = (x - b_dec) @ W_enc + b_enc; keep the k largest entries of each row (torch.topk), "
               "ReLU them, and put zeros everywhere else (torch.zeros_like(pre).scatter(-1, indices, values))")
def _topk_encode(fn) -> str:
    sae = SAE(SAEConfig(d_in=12, d_sae=40, architecture="topk", k=3, seed=4))
    with torch.no_grad():
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(5))
        # Mostly negative pre-activations, so that some rows' top k hold negatives (which ReLU zeroes).
        sae.b_enc.normal_(mean=-2.0, generator=torch.Generator().manual_seed(6))
    x = torch.randn(64, 12, generator=torch.Generator().manual_seed(7))
    want = sae.encode(x).detach()
    assert int((want > 0).sum(-1).min()) < 3, "the checker's inputs must exercise the ReLU"
    got = call(fn, x, sae.W_enc.detach(), sae.b_enc.detach(), sae.b_dec.detach(), 3)
    expect_close(got, want, "latents", atol=1e-5,
                 hint="subtract b_dec before encoding; exactly k entries per row may be non-zero, and "
                      "negative ones among the top k become 0")
    return "your encoding matches SAE.encode for a TopK SAE"


@exercise("sae.mmcs", "Mean max cosine similarity", "implement", "easy", 10,
          hint="normalise the rows of both, take the [feature, latent] cosine matrix, the max over "
               "latents for each feature, and the mean over features")
def _mmcs(fn) -> str:
    data = dictionary()
    g = torch.Generator().manual_seed(8)
    for what, decoder in (("random atoms", torch.randn(200, 32, generator=g)),
                          ("scaled true features", 3.0 * data.features[:64]),
                          ("noisy true features", data.features + 0.3 * torch.randn(128, 32, generator=g))):
        got = number(call(fn, data.features, decoder), f"MMCS against {what}")
        want = mmcs(data.features, decoder)
        if abs(got - want) > 1e-4:
            hint = ""
            if abs(got - cosine_matrix(data.features, decoder).max(dim=0).values.mean().item()) < 1e-4:
                hint = " (you took the max over features for each atom: MMCS asks, for each true feature, " \
                       "how well some atom matches it)"
            raise Wrong(f"against {what}: got {got:.4f}, expected {want:.4f}{hint}")
    return "your MMCS matches toylab.sae.mmcs"


@exercise("sae.recover", "An SAE that finds every feature", "build", "medium", 15,
          hint="the true L0 is 128 x 0.03 = 3.84 features per sample: a TopK SAE with k = 4 and twice as "
               "many latents as features, trained with toylab.sae.train_sae, gets there in seconds")
def _recover(sae) -> str:
    if not isinstance(sae, SAE):
        raise Wrong(f"pass the trained toylab.sae.SAE itself, got {type(sae).__name__}")
    data = dictionary()
    if sae.cfg.d_in != data.d_in:
        raise Wrong(f"the SAE reads d_in={sae.cfg.d_in}; the lesson's activations have d_in={data.d_in}")
    x, c = data.sample(8192, torch.Generator().manual_seed(12345))  # fresh samples, never seen in training
    s = score_sae(sae, data.features, x, c)
    true_l0 = float((c > 0).sum(-1).float().mean())
    problems = []
    if s.mmcs < 0.99:
        problems.append(f"MMCS is {s.mmcs:.3f} (needs 0.99)")
    if s.uniqueness < 0.95:
        problems.append(f"uniqueness is {s.uniqueness:.2f}: several features share their best latent (needs 0.95)")
    if abs(s.l0 - true_l0) > 0.25 * true_l0:
        problems.append(f"L0 is {s.l0:.2f} against the data's true {true_l0:.2f} (needs to be within 25%)")
    if problems:
        raise Wrong("on fresh samples: " + "; ".join(problems))
    return (f"on fresh samples: MMCS {s.mmcs:.3f}, uniqueness {s.uniqueness:.2f}, L0 {s.l0:.2f} (true {true_l0:.2f}), "
            f"F1 {s.f1:.2f}, explained variance {s.explained_variance:.3f}")


@lru_cache(maxsize=1)
def _toy_model() -> ToyModel:
    """The lesson's toy model, trained once per process."""
    return toy_model()


@exercise("sae.toy_features", "Which latent carries each feature?", "answer", "medium", 15,
          hint="train an SAE on toy_model.hidden(...) activations, then match each true direction W[0][:, i] "
               "to a latent (score_sae(...).matched_latent) and answer (sae, that list)")
def _toy_features(answer) -> str:
    try:
        sae, latents = answer
        latents = [int(j) for j in latents]
    except (TypeError, ValueError):
        raise Wrong("answer with a pair (sae, latents): the trained SAE and, for each of the 20 features, "
                    "the index of its latent") from None
    if not isinstance(sae, SAE):
        raise Wrong(f"the first item must be the trained toylab.sae.SAE, got {type(sae).__name__}")
    model = _toy_model()
    n_features, n_hidden = model.cfg.n_features, model.cfg.n_hidden
    if sae.cfg.d_in != n_hidden:
        raise Wrong(f"the SAE reads d_in={sae.cfg.d_in}; the toy model's hidden layer has {n_hidden} dimensions")
    if len(latents) != n_features:
        raise Wrong(f"give one latent per feature ({n_features}), got {len(latents)}")
    if not all(0 <= j < sae.cfg.d_sae for j in latents):
        raise Wrong(f"latent indices must lie in 0..{sae.cfg.d_sae - 1}")
    with torch.no_grad():
        # Feed the model each feature alone and see which latent fires most on its hidden state.
        alone = torch.eye(n_features)[:, None, :]  # [batch=feature, instance=1, feature]
        fired = sae.encode(model.hidden(alone)[:, 0])  # [feature, d_sae]
    strongest = fired.argmax(-1)
    for i, j in enumerate(latents):
        if fired[i].max() <= 0:
            raise Wrong(f"no latent of your SAE fires when feature {i} alone is on: the SAE missed it")
        if int(strongest[i]) != j:
            raise Wrong(f"feature {i} alone makes latent {int(strongest[i])} fire most "
                        f"({float(fired[i].max()):.2f}), not latent {j} ({float(fired[i, j]):.2f})")
    if len(set(latents)) != n_features:
        raise Wrong("two features share a latent: the SAE merged them")
    cos = cosine_matrix(feature_directions(model), sae.W_dec.detach())  # [feature, d_sae]
    matched = cos[torch.arange(n_features), torch.tensor(latents)]
    return (f"each of the {n_features} features, fed alone, fires its own latent; decoder cosines with the "
            f"true directions: min {float(matched.min()):.3f}, mean {float(matched.mean()):.3f}")
