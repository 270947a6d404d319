"""Lesson 17 (build the transformer): its fixtures load and record any module, a learner's right modules pass, and
each checker rejects the mistakes a learner makes (no causal mask, the wrong scale, the softmax over the wrong axis,
b_O forgotten, the mask after the softmax, the positional embedding or a residual left out, ...), naming each, with
a hint. The right answers are toylab's own modules (``toylab.models``), written again as a learner would."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from toylab import zoo
from toylab.hooks import HookedRootModule, HookPoint
from toylab.lessons import check, find, lesson_fixtures

FIXTURES = lesson_fixtures("build")


@pytest.fixture(autouse=True)
def no_grad():
    """As in the lesson, which turns gradients off."""
    with torch.no_grad():
        yield


# ---- the right modules, as a learner writes them --------------------------------------------------


class Embed(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))

    def forward(self, tokens):
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))

    def forward(self, tokens):
        batch, pos = tokens.shape
        return self.W_pos[:pos].expand(batch, pos, -1)


class LayerNorm(nn.Module):
    EPS = None  # None: cfg.ln_eps

    def __init__(self, cfg):
        super().__init__()
        self.eps = cfg.ln_eps if self.EPS is None else self.EPS
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model))

    def normalise(self, x):
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()

    def forward(self, x):
        return self.normalise(x) * self.w + self.b


class Attention(nn.Module):
    SCALE = None  # None: sqrt(d_head); else "d_model", "sqrt_d_model" or a number
    MASK, AFTER_SOFTMAX, DIAGONAL, AXIS, B_O, IGNORE = True, False, 1, -1, True, float("-inf")
    HOOKS = FIXTURES.ATTENTION_HOOKS

    def __init__(self, cfg):
        super().__init__()
        h, m, d = cfg.n_heads, cfg.d_model, cfg.d_head
        for name, shape in (("W_Q", (h, m, d)), ("W_K", (h, m, d)), ("W_V", (h, m, d)), ("W_O", (h, d, m)),
                            ("b_Q", (h, d)), ("b_K", (h, d)), ("b_V", (h, d)), ("b_O", (m,))):
            setattr(self, name, nn.Parameter(torch.zeros(shape)))
        for hook in self.HOOKS:
            setattr(self, hook, HookPoint())
        self.d_model = m

    def hook(self, name, x):
        return getattr(self, name)(x) if hasattr(self, name) else x

    def forward(self, x):
        q = self.hook("hook_q", torch.einsum("bpm,hmd->bphd", x, self.W_Q) + self.b_Q)
        k = self.hook("hook_k", torch.einsum("bpm,hmd->bphd", x, self.W_K) + self.b_K)
        v = self.hook("hook_v", torch.einsum("bpm,hmd->bphd", x, self.W_V) + self.b_V)
        scale = {None: math.sqrt(q.shape[-1]), "d_model": self.d_model, "sqrt_d_model": math.sqrt(self.d_model)}
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / scale.get(self.SCALE, self.SCALE)
        n = x.shape[1]
        hidden = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=self.DIAGONAL)
        if self.MASK and not self.AFTER_SOFTMAX:
            scores = scores.masked_fill(hidden, self.IGNORE)
        pattern = self.hook("hook_pattern", self.hook("hook_attn_scores", scores).softmax(dim=self.AXIS))
        if self.MASK and self.AFTER_SOFTMAX:
            pattern = pattern.masked_fill(hidden, 0.0)
        z = self.hook("hook_z", torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        result = self.hook("hook_result", torch.einsum("bqhd,hdm->bqhm", z, self.W_O))
        return result.sum(dim=2) + (self.b_O if self.B_O else 0)


ACTS = {"relu": F.relu, "gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh")}


class MLP(nn.Module):
    B_IN = B_OUT = True
    HOOKS = FIXTURES.MLP_HOOKS

    def __init__(self, cfg):
        super().__init__()
        self.act = self.activation(cfg.act_fn)
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        for hook in self.HOOKS:
            setattr(self, hook, HookPoint())

    def activation(self, act_fn):
        return ACTS[act_fn]

    def forward(self, x):
        pre = x @ self.W_in + (self.b_in if self.B_IN else 0)
        post = self.act(self.hook_pre(pre) if hasattr(self, "hook_pre") else pre)
        post = self.hook_post(post) if hasattr(self, "hook_post") else post
        return post @ self.W_out + (self.b_out if self.B_OUT else 0)


def norm(cfg):
    return LayerNorm(cfg) if cfg.normalization_type == "LN" else nn.Identity()


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.hook_resid_pre, self.ln1, self.attn = HookPoint(), norm(cfg), Attention(cfg)
        self.hook_attn_out, self.hook_resid_mid = HookPoint(), HookPoint()
        self.ln2 = self.mlp = None
        if cfg.d_mlp is not None:
            self.ln2, self.mlp, self.hook_mlp_out = norm(cfg), MLP(cfg), HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid):
        pre = self.hook_resid_pre(resid)
        mid = self.hook_resid_mid(pre + self.hook_attn_out(self.attn(self.ln1(pre))))
        if self.mlp is None:
            return self.hook_resid_post(mid)
        return self.hook_resid_post(mid + self.hook_mlp_out(self.mlp(self.ln2(mid))))


class Unembed(nn.Module):
    B_U = True

    def __init__(self, cfg):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out))

    def forward(self, resid):
        return resid @ self.W_U + (self.b_U if self.B_U else 0)


class Transformer(HookedRootModule):
    BLOCK, UNEMBED = Block, Unembed

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed, self.hook_embed = Embed(cfg), HookPoint()
        self.pos_embed, self.hook_pos_embed = PosEmbed(cfg), HookPoint()
        self.blocks = nn.ModuleList(self.BLOCK(cfg) for _ in range(cfg.n_layers))
        self.ln_final, self.unembed = norm(cfg), self.UNEMBED(cfg)
        self.setup_hooks()

    def stream(self, tokens):
        return self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))

    def forward(self, tokens):
        resid = self.stream(tokens)
        for block in self.blocks:
            resid = block(resid)
        return self.unembed(self.ln_final(resid))


# ---- mistakes ---------------------------------------------------------------------------------


class PosNotBatched(PosEmbed):
    def forward(self, tokens):
        return self.W_pos[: tokens.shape[1]]


class PosAllPositions(PosEmbed):
    def forward(self, tokens):
        return self.W_pos.expand(tokens.shape[0], -1, -1)


class PosZero(PosEmbed):  # the positional embedding omitted
    def forward(self, tokens):
        return torch.zeros(*tokens.shape, self.W_pos.shape[1])


class PosByToken(PosEmbed):
    def forward(self, tokens):
        return self.W_pos[tokens]


class EmbedWithPos(Embed):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))

    def forward(self, tokens):
        return self.W_E[tokens] + self.W_pos[: tokens.shape[1]]


class EmbedTransposed(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab))

    def forward(self, tokens):
        return self.W_E.T[tokens]


class LNUnbiased(LayerNorm):
    def normalise(self, x):
        return (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + self.eps).sqrt()


class LNNotCentred(LayerNorm):  # RMSNorm
    def normalise(self, x):
        return x / (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()


class LNEpsOutside(LayerNorm):
    def normalise(self, x):
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)


class LNNoAffine(LayerNorm):
    def forward(self, x):
        return self.normalise(x)


class LNFixedEps(LayerNorm):
    EPS = 1e-5


class LNBatchAxis(LayerNorm):
    def normalise(self, x):
        x = x - x.mean(0, keepdim=True)
        return x / (x.pow(2).mean(0, keepdim=True) + self.eps).sqrt()


class LNTorch(nn.LayerNorm):  # torch's own: its parameters are weight and bias, not w and b
    def __init__(self, cfg):
        super().__init__(cfg.d_model, eps=cfg.ln_eps)


def attention(name, **changes):
    return type(name, (Attention,), changes)


class AttnLowercase(Attention):  # W_q, not W_Q
    def __init__(self, cfg):
        super().__init__(cfg)
        self.W_q = nn.Parameter(self.W_Q.detach().clone())
        del self.W_Q


class MLPAlwaysRelu(MLP):
    def activation(self, act_fn):
        return F.relu


class MLPExactGelu(MLP):  # gelu_new taken for the exact GELU
    def activation(self, act_fn):
        return F.gelu if act_fn.startswith("gelu") else ACTS[act_fn]


class MLPNoActivation(MLP):
    def activation(self, act_fn):
        return lambda x: x


class BlockNoResidual(Block):
    def forward(self, resid):
        a = self.attn(self.ln1(resid))
        return a + (self.mlp(self.ln2(a)) if self.mlp is not None else 0)


class BlockMLPOutputOnly(Block):  # the residual around the MLP omitted
    def forward(self, resid):
        mid = resid + self.attn(self.ln1(resid))
        return self.mlp(self.ln2(mid)) if self.mlp is not None else mid


class BlockParallel(Block):  # the MLP reads resid_pre
    def forward(self, resid):
        out = resid + self.attn(self.ln1(resid))
        return out + (self.mlp(self.ln2(resid)) if self.mlp is not None else 0)


class BlockPostNorm(Block):  # right where there is no LayerNorm (every zoo model), wrong where there is
    def forward(self, resid):
        pre = self.hook_resid_pre(resid)
        mid = self.hook_resid_mid(self.ln1(pre + self.hook_attn_out(self.attn(pre))))
        if self.mlp is None:
            return self.hook_resid_post(mid)
        return self.hook_resid_post(self.ln2(mid + self.hook_mlp_out(self.mlp(mid))))


class BlockNoResidMid(Block):  # TransformerLens's attention-only block: no hook_resid_mid
    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.d_mlp is None:
            del self.hook_resid_mid

    def forward(self, resid):
        mid = self.hook_resid_pre(resid) + self.hook_attn_out(self.attn(self.ln1(resid)))
        if self.mlp is None:
            return self.hook_resid_post(mid)
        mid = self.hook_resid_mid(mid)
        return self.hook_resid_post(mid + self.hook_mlp_out(self.mlp(self.ln2(mid))))


class BlockAlwaysMLP(Block):  # builds an MLP even when cfg.d_mlp is None
    def __init__(self, cfg):
        super().__init__(cfg)
        self.mlp = MLP(cfg)


class TodoLayerNorm(nn.Module):  # exercise 17.2 not done yet
    def __init__(self, cfg):
        super().__init__()
        raise NotImplementedError


class BlockWithTodoLayerNorm(Block):  # a right block, whose LayerNorm is still the lesson's placeholder
    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.normalization_type == "LN":
            self.ln1 = TodoLayerNorm(cfg)


class NoPosEmbed(Transformer):
    def stream(self, tokens):
        return self.hook_embed(self.embed(tokens))


class FirstBlockOnly(Transformer):
    def forward(self, tokens):
        return self.unembed(self.ln_final(self.blocks[0](self.stream(tokens))))


class NoBlocks(Transformer):
    def forward(self, tokens):
        return self.unembed(self.ln_final(self.stream(tokens)))


class NoBU(Transformer):
    UNEMBED = type("UnembedNoBU", (Unembed,), {"B_U": False})


class LayersNotBlocks(Transformer):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.layers = self.blocks
        del self.blocks

    def forward(self, tokens):
        resid = self.stream(tokens)
        for block in self.layers:
            resid = block(resid)
        return self.unembed(self.ln_final(resid))


class NoEmbedHooks(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed, self.pos_embed = Embed(cfg), PosEmbed(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final, self.unembed = norm(cfg), Unembed(cfg)

    def forward(self, tokens):
        resid = self.embed(tokens) + self.pos_embed(tokens)
        for block in self.blocks:
            resid = block(resid)
        return self.unembed(self.ln_final(resid))


# Each wrong answer, and what the checker's message or hint must say about it.
WRONG = {
    "build.embed": [
        ((Embed, PosNotBatched), "[pos, d_model]"),
        ((Embed, PosAllPositions), "n_ctx"),
        ((Embed, PosZero), "all zeros"),
        ((Embed, PosByToken), "raised IndexError"),
        ((EmbedWithPos, PosEmbed), "parameters ['W_pos'] that the weights do not"),
        ((EmbedTransposed, PosEmbed), "shapes differ"),
        (Embed, "the pair (Embed, PosEmbed)"),
    ],
    "build.layernorm": [
        (LNUnbiased, "unbiased variance"),
        (LNNotCentred, "RMSNorm"),
        (LNEpsOutside, "inside the square root"),
        (LNNoAffine, "gain w and bias b"),
        (LNFixedEps, "cfg.ln_eps"),
        (LNBatchAxis, "batch axis"),
        (LNTorch, "do not load"),
    ],
    "build.attention": [
        (attention("AttnNoMask", MASK=False), "no causal mask"),
        (attention("AttnScaleDModel", SCALE="d_model"), "divided by d_model"),
        (attention("AttnScaleSqrtDModel", SCALE="sqrt_d_model"), "divided by sqrt(d_model)"),
        (attention("AttnNoScale", SCALE=1.0), "not scaled"),
        (attention("AttnSoftmaxOverQueries", AXIS=-2), "query axis"),
        (attention("AttnNoBO", B_O=False), "b_O is missing"),
        (attention("AttnMaskAfterSoftmax", AFTER_SOFTMAX=True), "after the softmax"),
        (attention("AttnMaskDiagonal", DIAGONAL=0), "diagonal"),
        (attention("AttnIgnoreFinite", IGNORE=-1e5), "-inf"),
        (attention("AttnNoResultHook", HOOKS=FIXTURES.ATTENTION_HOOKS[:-1]), "hook_result"),
        (AttnLowercase, "do not load"),
        (Attention(FIXTURES.LN_CONFIG), "expected your class"),
    ],
    "build.mlp": [
        (MLPAlwaysRelu, "ReLU"),
        (MLPExactGelu, "exact GELU"),
        (MLPNoActivation, "no activation"),
        (type("MLPNoBIn", (MLP,), {"B_IN": False}), "b_in is missing"),
        (type("MLPNoBOut", (MLP,), {"B_OUT": False}), "b_out is missing"),
        (type("MLPNoHooks", (MLP,), {"HOOKS": ()}), "hook_pre"),
    ],
    "build.block": [
        (BlockNoResidual, "residual connections are missing"),
        (BlockMLPOutputOnly, "the MLP's output alone"),
        (BlockParallel, "reads resid_pre"),
        (BlockPostNorm, "post-norm"),
        (BlockNoResidMid, "hook_resid_mid"),
        (BlockAlwaysMLP, "raised TypeError"),
        (BlockWithTodoLayerNorm, "exercise 17.2"),
    ],
    "build.transformer": [
        (NoPosEmbed, "positional embedding is left out"),
        (FirstBlockOnly, "only the first block"),
        (NoBlocks, "blocks are skipped"),
        (NoBU, "b_U is missing"),
        (LayersNotBlocks, "do not load"),
        (NoEmbedHooks, "hook_embed"),
    ],
}


@pytest.mark.parametrize("ex_id,answer,says", [(k, a, s) for k, cases in WRONG.items() for a, s in cases],
                         ids=lambda v: getattr(v, "__name__", None) if isinstance(v, type) else None)
def test_each_mistake_is_rejected_and_named_with_a_hint(ex_id, answer, says, capsys):
    feedback = check(ex_id, answer)
    assert not feedback.passed and feedback.done
    assert feedback.message and feedback.hint
    assert says in f"{feedback.message} {feedback.hint}", feedback
    assert "[wrong]" in capsys.readouterr().out


def test_every_exercise_of_the_lesson_has_wrong_answers_under_test():
    assert set(find("build").exercises) == set(WRONG)
    assert all(len(cases) >= 2 for cases in WRONG.values())


def test_the_right_modules_pass_bitwise():
    for ex_id, answer in (("build.embed", (Embed, PosEmbed)), ("build.layernorm", LayerNorm),
                          ("build.attention", Attention), ("build.mlp", MLP), ("build.block", Block),
                          ("build.transformer", Transformer)):
        feedback = check(ex_id, answer)
        assert feedback.passed, feedback
        assert "bitwise identical" in feedback.message, feedback


def test_a_placeholder_is_not_done_yet():
    class Todo(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            raise NotImplementedError

    for ex_id in WRONG:
        feedback = check(ex_id, (Todo, Todo) if ex_id == "build.embed" else Todo)
        assert not feedback.passed and not feedback.done, feedback


# ---- the fixtures ----------------------------------------------------------------------------------


def test_load_weights_names_what_is_missing_extra_or_misshapen_and_copies():
    zm = zoo.load(FIXTURES.WITH_MLP)
    weights = zm.model.blocks[0].mlp.state_dict()
    with pytest.raises(ValueError, match=r"has parameters \['W_up'\].*the weights have \['W_in'\]"):
        mlp = MLP(zm.model.cfg)
        mlp.W_up = mlp.W_in
        del mlp.W_in
        FIXTURES.load_weights(mlp, weights)
    with pytest.raises(ValueError, match=r"W_out: yours \(32, 64\), the weights' \(64, 32\)"):
        mlp = MLP(zm.model.cfg)
        mlp.W_out = nn.Parameter(torch.empty(32, 64))
        FIXTURES.load_weights(mlp, weights)
    attn = Attention(zm.model.cfg)
    attn.register_buffer("mask", torch.ones(4, 4, dtype=torch.bool))  # a saved buffer the weights lack: fine
    FIXTURES.load_weights(attn, zm.model.blocks[0].attn.state_dict())
    attn.W_Q.data += 1.0  # the learner's copy, never the zoo model
    assert not torch.equal(attn.W_Q, zm.model.blocks[0].attn.W_Q)


def test_record_names_hooks_by_path_on_any_module_and_removes_them():
    zm = zoo.load(FIXTURES.ATTN_ONLY)
    tokens = FIXTURES.prompts(zm, 2)
    model = FIXTURES.load_weights(Transformer(zm.model.cfg), zm.model.state_dict())
    with FIXTURES.record(model) as seen:
        model(tokens)
    _, cache = zm.model.run_with_cache(tokens)
    assert set(seen) == set(cache) - {f"blocks.{layer}.hook_{kind}_input" for layer in range(2) for kind in "qkv"}
    assert all(torch.equal(seen[name], cache[name]) for name in seen)
    masked = cache["blocks.0.attn.hook_attn_scores"][0, 0].triu(1)
    assert (masked[masked != 0] == FIXTURES.IGNORE).all()  # toylab writes TransformerLens's IGNORE, -inf
    assert not any(module._forward_hooks for module in model.modules())


def test_random_model_has_biases_and_gains_away_from_their_init():
    model = FIXTURES.random_model()
    assert model.cfg.normalization_type == "LN" and model.cfg.act_fn == "gelu_new"
    assert not torch.equal(model.blocks[0].ln1.w, torch.ones(32)) and model.blocks[0].attn.b_O.abs().min() > 0
    assert torch.equal(model.blocks[1].mlp.W_in, FIXTURES.random_model().blocks[1].mlp.W_in)  # seeded
    assert [name for name, _, _ in FIXTURES.STEPS][:3] == ["hook_embed", "hook_pos_embed", "blocks.l.hook_resid_pre"]
    assert FIXTURES.step_of("blocks.1.attn.hook_q")[0] == "[batch, pos, head, d_head]"
    assert FIXTURES.step_of("blocks.0.ln1.hook_scale") is None
