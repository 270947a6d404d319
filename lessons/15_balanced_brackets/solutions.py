# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.
# ruff: noqa: F821  (the names these cells use are the lesson's, defined where the cells are spliced in)

# %% exercise="brackets.algorithm"
def is_balanced(tokens):
    step = torch.where(tokens == 1, 1, torch.where(tokens == 2, -1, 0))  # "(" +1, ")" -1, BOS 0
    balance = step.cumsum(-1)  # [batch, pos]: the count after each prefix
    return (balance[:, -1] == 0) & (balance >= 0).all(-1)


# %% exercise="brackets.r2"
def r2(x, y):
    x, y = x.double(), y.double()
    X = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # [n, d + 1]: the bias column
    w = torch.linalg.lstsq(X, y.unsqueeze(-1)).solution  # [d + 1, 1]
    residual = y - (X @ w).squeeze(-1)
    return float(1 - residual.pow(2).sum() / (y - y.mean()).pow(2).sum())


# %% exercise="brackets.flag_direction"
def flag_direction(acts, negative):
    x, on = acts[:, 1:].reshape(-1, acts.shape[-1]), negative[:, 1:].reshape(-1)  # every bracket's position
    difference = x[on].mean(0) - x[~on].mean(0)  # [d_model]
    return difference / difference.norm()


# %% exercise="brackets.iia"
def iia_by_hand(model, algorithm, variable, component, mask, n, seed):
    base, source = algorithm.sample_pairs(n, torch.Generator().manual_seed(seed))
    expected = algorithm.intervene(base, source, variable, mask)[:, -1]
    layer, rest = component[1:].split("H") if component.startswith("L") else (component[3:], None)
    hook = f"blocks.{layer}.attn.hook_z" if rest is not None else f"blocks.{layer}.hook_mlp_out"
    source_acts = model.run_with_cache(source.tokens, names=[hook])[1][hook]

    def patch(x, hook):
        x = x.clone()
        if rest is None:  # an MLP: [batch, pos, d_model]
            x[:, mask] = source_acts[:, mask]
        else:  # one head: [batch, pos, head, d_head]
            x[:, mask, int(rest)] = source_acts[:, mask, int(rest)]
        return x

    with model.hooks([(hook, patch)]):
        answers = model(base.tokens)[:, -1].argmax(-1)
    return float((answers == expected).float().mean())


# %% exercise="brackets.sites"
# balance: only L0H1 passes (L0H0 counts too, but swapping it moves nothing); negative: MLP0 passes both tests (L0H1
# also carries the final count, L1H1 only acts at the last position); any_negative: L1H1 at the last position.
sites = {variable: next(c for c in names if all(table[i, names.index(c)] >= IIA_BAR
                                                 for i, (v, _) in enumerate(IIA_TESTS) if v == variable))
         for variable in VARIABLES}
print(sites)

# %% exercise="brackets.failure_modes"
# A dip changes the balance inside the swapped pair, hence the flags there, hence what L1H1 finds; an unclosed string
# changes the final count, read by MLP1 from L0H1, and no flag.
failures = {"dips": {"L0H1", "MLP0", "L1H1", "MLP1"}, "unclosed": {"L0H1", "MLP1"}}
