# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.
# ruff: noqa: F821  (the names these cells use are the lesson's, defined where the cells are spliced in)

# %% exercise="build.embed"
class Embed(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))  # [d_vocab, d_model]

    def forward(self, tokens):  # tokens [batch, pos] -> [batch, pos, d_model]
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))  # [n_ctx, d_model]

    def forward(self, tokens):  # tokens [batch, pos] -> [batch, pos, d_model]
        batch, pos = tokens.shape
        return self.W_pos[:pos].expand(batch, pos, -1)  # the same rows for every sequence


# %% exercise="build.layernorm"
class LayerNorm(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.eps = cfg.ln_eps
        self.w = nn.Parameter(torch.ones(cfg.d_model))  # [d_model]
        self.b = nn.Parameter(torch.zeros(cfg.d_model))  # [d_model]
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x):  # [batch, pos, d_model]
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale * self.w + self.b)


# %% exercise="build.attention"
class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, m, d = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(h, m, d))  # [head, d_model, d_head]
        self.W_K = nn.Parameter(torch.empty(h, m, d))
        self.W_V = nn.Parameter(torch.empty(h, m, d))
        self.W_O = nn.Parameter(torch.empty(h, d, m))  # [head, d_head, d_model]
        self.b_Q = nn.Parameter(torch.zeros(h, d))  # [head, d_head]
        self.b_K = nn.Parameter(torch.zeros(h, d))
        self.b_V = nn.Parameter(torch.zeros(h, d))
        self.b_O = nn.Parameter(torch.zeros(m))  # [d_model]
        self.register_buffer("IGNORE", torch.tensor(IGNORE), persistent=False)
        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # [batch, head, query_pos, key_pos]
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        self.hook_result = HookPoint()  # [batch, pos, head, d_model]

    def forward(self, x):  # x: the normalised stream [batch, pos, d_model]
        q = self.hook_q(torch.einsum("bpm,hmd->bphd", x, self.W_Q) + self.b_Q)
        k = self.hook_k(torch.einsum("bpm,hmd->bphd", x, self.W_K) + self.b_K)
        v = self.hook_v(torch.einsum("bpm,hmd->bphd", x, self.W_V) + self.b_V)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        n = x.shape[1]
        future = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), diagonal=1)  # key_pos > query_pos
        scores = self.hook_attn_scores(scores.masked_fill(future, self.IGNORE))
        pattern = self.hook_pattern(scores.softmax(dim=-1))  # over key_pos
        z = self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        result = self.hook_result(torch.einsum("bqhd,hdm->bqhm", z, self.W_O))
        return result.sum(dim=2) + self.b_O  # [batch, pos, d_model]


# %% exercise="build.mlp"
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh")}


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.act = ACTIVATIONS[cfg.act_fn]
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))  # [d_model, d_mlp]
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))  # [d_mlp]
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))  # [d_mlp, d_model]
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))  # [d_model]
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()

    def forward(self, x):  # [batch, pos, d_model]
        pre = self.hook_pre(x @ self.W_in + self.b_in)
        post = self.hook_post(self.act(pre))
        return post @ self.W_out + self.b_out


# %% exercise="build.block"
def make_norm(cfg):
    return LayerNorm(cfg) if cfg.normalization_type == "LN" else nn.Identity()


class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.hook_resid_pre = HookPoint()
        self.ln1 = make_norm(cfg)
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        if cfg.d_mlp is None:  # attention only
            self.ln2 = self.mlp = None
        else:
            self.ln2 = make_norm(cfg)
            self.mlp = MLP(cfg)
            self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid):  # [batch, pos, d_model]
        resid_pre = self.hook_resid_pre(resid)
        resid_mid = self.hook_resid_mid(resid_pre + self.hook_attn_out(self.attn(self.ln1(resid_pre))))
        if self.mlp is None:
            return self.hook_resid_post(resid_mid)
        return self.hook_resid_post(resid_mid + self.hook_mlp_out(self.mlp(self.ln2(resid_mid))))


# %% exercise="build.transformer"
class DemoTransformer(HookedRootModule):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()
        self.pos_embed = PosEmbed(cfg)
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_final = make_norm(cfg)
        self.unembed = Unembed(cfg)
        self.setup_hooks()  # names every hook point by its path: run_with_cache and hooks() work

    def forward(self, tokens):  # [batch, pos] -> logits [batch, pos, d_vocab_out]
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            resid = block(resid)
        return self.unembed(self.ln_final(resid))
