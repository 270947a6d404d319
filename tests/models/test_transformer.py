import math

import pytest
import torch

from toylab.models import Transformer, TransformerConfig

BATCH, POS = 3, 7


def make(attn_only: bool = False, ln: bool = False, **kw) -> Transformer:
    cfg = TransformerConfig(
        n_layers=2, d_model=16, n_heads=4, d_head=8, d_vocab=11, n_ctx=9,
        d_mlp=None if attn_only else 24, normalization_type="LN" if ln else None, **kw,
    )
    return Transformer(cfg, seed=1)


def tokens(n_vocab: int = 11, batch: int = BATCH, pos: int = POS, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, n_vocab, (batch, pos), generator=torch.Generator().manual_seed(seed))


def expected_shapes(model: Transformer) -> dict[str, tuple[int, ...]]:
    """The documented TransformerLens shapes, written out independently of the model code."""
    c = model.cfg
    b, p, m, h, d = BATCH, POS, c.d_model, c.n_heads, c.d_head
    shapes = {"hook_embed": (b, p, m), "hook_pos_embed": (b, p, m)}
    for layer in range(c.n_layers):
        blk = f"blocks.{layer}"
        shapes.update({
            f"{blk}.hook_resid_pre": (b, p, m), f"{blk}.hook_resid_mid": (b, p, m),
            f"{blk}.hook_resid_post": (b, p, m), f"{blk}.hook_attn_out": (b, p, m),
            f"{blk}.attn.hook_q": (b, p, h, d), f"{blk}.attn.hook_k": (b, p, h, d),
            f"{blk}.attn.hook_v": (b, p, h, d), f"{blk}.attn.hook_z": (b, p, h, d),
            f"{blk}.attn.hook_attn_scores": (b, h, p, p), f"{blk}.attn.hook_pattern": (b, h, p, p),
            f"{blk}.attn.hook_result": (b, p, h, m),
            f"{blk}.hook_q_input": (b, p, h, m), f"{blk}.hook_k_input": (b, p, h, m),
            f"{blk}.hook_v_input": (b, p, h, m),
        })
        if not c.attn_only:
            shapes.update({f"{blk}.hook_mlp_in": (b, p, m), f"{blk}.mlp.hook_pre": (b, p, c.d_mlp), f"{blk}.mlp.hook_post": (b, p, c.d_mlp),
                           f"{blk}.hook_mlp_out": (b, p, m)})
        if c.normalization_type == "LN":
            for ln in ("ln1", "ln2") if not c.attn_only else ("ln1",):
                shapes.update({f"{blk}.{ln}.hook_scale": (b, p, 1), f"{blk}.{ln}.hook_normalized": (b, p, m)})
    if c.normalization_type == "LN":
        shapes.update({"ln_final.hook_scale": (b, p, 1), "ln_final.hook_normalized": (b, p, m)})
    return shapes


@pytest.mark.parametrize("attn_only,ln", [(False, False), (True, False), (False, True), (True, True)])
def test_every_hook_fires_with_documented_shape(attn_only, ln):
    model = make(attn_only=attn_only, ln=ln)
    fired: dict[str, tuple[int, ...]] = {}
    with model.hooks([(lambda name: True, lambda x, hook: fired.__setitem__(hook.name, tuple(x.shape)))]):
        logits = model(tokens())
    assert logits.shape == (BATCH, POS, 11)
    assert fired == expected_shapes(model)
    assert list(fired) == model.hook_names()  # hook_names() lists hooks in firing order


def test_cache_holds_what_hooks_saw_and_logits_match_plain_forward():
    model = make(ln=True)
    toks = tokens()
    logits, cache = model.run_with_cache(toks)
    assert torch.allclose(logits, model(toks), atol=1e-6)
    assert set(cache) == set(model.hook_names())
    pattern = cache["blocks.1.attn.hook_pattern"]
    assert torch.allclose(pattern.sum(-1), torch.ones(BATCH, 4, POS), atol=1e-6)
    assert torch.all(pattern.triu(1) == 0)  # causal: nothing attends to the future
    # Per-head results sum (plus b_O) to the attention output.
    result = cache["blocks.0.attn.hook_result"].sum(2) + model.blocks[0].attn.b_O
    assert torch.allclose(result, cache["blocks.0.hook_attn_out"], atol=1e-5)
    # resid_post = resid_mid + mlp_out
    assert torch.allclose(cache["blocks.0.hook_resid_mid"] + cache["blocks.0.hook_mlp_out"],
                          cache["blocks.0.hook_resid_post"], atol=1e-6)
    assert cache["pattern", 1] is pattern
    assert not cache["blocks.0.hook_resid_pre"].requires_grad


def test_bidirectional_attention_sees_the_future():
    model = make(attention_dir="bidirectional")
    _, cache = model.run_with_cache(tokens(), names="blocks.0.attn.hook_pattern")
    assert cache["blocks.0.attn.hook_pattern"].triu(1).sum() > 0


def test_bad_tokens_give_clear_errors():
    model = make()
    with pytest.raises(ValueError, match="exceeds the model's n_ctx=9"):
        model(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 11\)"):
        model(torch.full((1, 3), 11))
    with pytest.raises(ValueError, match=r"\[0, 11\)"):
        model(torch.full((1, 3), -1))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 3))
    assert model(torch.tensor([1, 2, 3])).shape == (1, 3, 11)


def test_init_is_a_function_of_the_seed_alone():
    torch.manual_seed(123)
    a = make()
    torch.manual_seed(456)  # the global RNG must not matter
    b = make()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    other = Transformer(a.cfg, seed=2)
    assert not torch.equal(a.embed.W_E, other.embed.W_E)


def test_parameter_names_and_shapes_follow_transformer_lens():
    model = make(ln=True)
    c = model.cfg
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["embed.W_E"] == (c.d_vocab, c.d_model)
    assert shapes["pos_embed.W_pos"] == (c.n_ctx, c.d_model)
    for w in ("W_Q", "W_K", "W_V"):
        assert shapes[f"blocks.1.attn.{w}"] == (c.n_heads, c.d_model, c.d_head)
    assert shapes["blocks.1.attn.W_O"] == (c.n_heads, c.d_head, c.d_model)
    assert shapes["blocks.1.attn.b_Q"] == (c.n_heads, c.d_head)
    assert shapes["blocks.1.attn.b_O"] == (c.d_model,)
    assert shapes["blocks.0.mlp.W_in"] == (c.d_model, c.d_mlp)
    assert shapes["blocks.0.mlp.W_out"] == (c.d_mlp, c.d_model)
    assert shapes["unembed.W_U"] == (c.d_model, c.d_vocab_out)
    assert shapes["blocks.0.ln1.w"] == shapes["ln_final.b"] == (c.d_model,)


# ---- a TransformerLens-format state dict, and a forward pass written from scratch --------------

def tl_state_dict(n_layers, d_model, n_heads, d_head, d_vocab, n_ctx, seed=0):
    """What HookedTransformer.state_dict() holds for an attention-only model without LayerNorm,
    including the mask and IGNORE buffers TransformerLens saves."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    sd = {"embed.W_E": r(d_vocab, d_model), "pos_embed.W_pos": r(n_ctx, d_model)}
    for layer in range(n_layers):
        a = f"blocks.{layer}.attn."
        sd.update({a + "W_Q": r(n_heads, d_model, d_head), a + "W_K": r(n_heads, d_model, d_head),
                   a + "W_V": r(n_heads, d_model, d_head), a + "W_O": r(n_heads, d_head, d_model),
                   a + "b_Q": r(n_heads, d_head), a + "b_K": r(n_heads, d_head),
                   a + "b_V": r(n_heads, d_head), a + "b_O": r(d_model),
                   a + "mask": torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)),
                   a + "IGNORE": torch.tensor(-torch.inf)})
    sd.update({"unembed.W_U": r(d_model, d_vocab), "unembed.b_U": r(d_vocab)})
    return sd


def reference_forward(sd, toks, n_layers, n_heads, d_head):
    """Attention-only transformer from the paper's equations, one head at a time, in loops."""
    batch, n = toks.shape
    x = sd["embed.W_E"][toks] + sd["pos_embed.W_pos"][:n]
    future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    for layer in range(n_layers):
        a = f"blocks.{layer}.attn."
        out = torch.zeros_like(x) + sd[a + "b_O"]
        for h in range(n_heads):
            q = x @ sd[a + "W_Q"][h] + sd[a + "b_Q"][h]
            k = x @ sd[a + "W_K"][h] + sd[a + "b_K"][h]
            v = x @ sd[a + "W_V"][h] + sd[a + "b_V"][h]
            scores = (q @ k.transpose(1, 2)) / math.sqrt(d_head)
            scores = scores.masked_fill(future, float("-inf"))
            out = out + torch.softmax(scores, dim=-1) @ v @ sd[a + "W_O"][h]
        x = x + out
    return x @ sd["unembed.W_U"] + sd["unembed.b_U"]


def test_transformer_lens_state_dict_loads_unchanged_and_matches_reference_forward():
    dims = dict(n_layers=2, d_model=24, n_heads=3, d_head=8, d_vocab=13, n_ctx=10)
    sd = tl_state_dict(**dims)
    cfg = TransformerConfig(n_layers=2, d_model=24, n_heads=3, d_head=8, d_vocab=13, n_ctx=10, d_mlp=None)
    model = Transformer(cfg)
    model.load_state_dict(sd)  # strict: every key used, the TL buffers accepted
    toks = tokens(n_vocab=13, batch=4, pos=10, seed=3)
    expected = reference_forward(sd, toks, n_layers=2, n_heads=3, d_head=8)
    assert torch.allclose(model(toks), expected, atol=1e-5)
    # and our own state dict has exactly TransformerLens's parameter names (no buffers)
    assert set(model.state_dict()) == {k for k in sd if not k.endswith(("mask", "IGNORE"))}


def test_a_leaf_hooked_into_a_heads_input_gets_each_heads_own_gradient():
    """A hook that returns x.detach().requires_grad_() keeps the block's stride-0 view; every head's slice of that
    leaf must get the gradient a contiguous copy gets (the shared-stream shortcut once gave all of it to head 0)."""
    from toylab import zoo

    model = zoo.load("induction-siit").model
    tokens = torch.randint(1, 20, (2, 10))

    def gradient(contiguous: bool) -> torch.Tensor:
        leaves = {}

        def grab(x, hook):
            leaves["x"] = (x.detach().clone() if contiguous else x.detach()).requires_grad_(True)
            return leaves["x"]

        with torch.enable_grad(), model.hooks([("blocks.1.hook_k_input", grab)]):
            model(tokens)[:, -1].sum().backward()
        return leaves["x"].grad  # [batch, pos, head, d_model]

    shared = gradient(contiguous=False)
    assert shared[:, :, 1:].abs().sum() > 0, "heads other than 0 got no gradient"
    assert torch.allclose(shared, gradient(contiguous=True), atol=1e-6)
