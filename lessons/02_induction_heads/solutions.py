# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.

# %% exercise="induction.previous_token_score"
def previous_token_score(pattern):
    below = torch.diagonal(pattern, offset=-1, dim1=-2, dim2=-1)  # [batch, head, query_pos - 1]
    return below.mean(dim=(0, 2))


# %% exercise="induction.induction_score"
def induction_score(pattern, tokens):
    n = tokens.shape[1]
    pos = torch.arange(n)
    same = tokens[:, :, None] == tokens[:, None, :]  # [batch, query_pos, key_pos]
    earlier = same & (pos[None, :] < pos[:, None])  # key strictly before query
    last = torch.where(earlier, pos, -1).amax(dim=-1)  # [batch, query_pos]: most recent j, or -1
    valid = last >= 0
    target = (last + 1).clamp(max=n - 1)  # the token after the earlier occurrence
    index = target[:, None, :, None].expand(-1, pattern.shape[1], -1, 1)
    attn = pattern.gather(-1, index).squeeze(-1)  # [batch, head, query_pos]
    return (attn * valid[:, None]).sum(dim=(0, 2)) / valid.sum()


# %% exercise="induction.circuit_heads"
pair = built.task.counterfactual(N, seed=0)
effects = methods.ablation_scores(built.model, pair)
print(effects.top(4))
circuit_heads = {head for head, effect in effects.top(4) if effect > 0.1 * effects.top(1)[0][1]}


# %% exercise="induction.ov_circuit"
def full_ov_circuit(model, layer, head):
    attn = model.blocks[layer].attn
    return model.embed.W_E @ attn.W_V[head] @ attn.W_O[head] @ model.unembed.W_U


# %% exercise="induction.k_composition"
def k_composition(model, sender_layer, sender_head, receiver_layer, receiver_head):
    sender, receiver = model.blocks[sender_layer].attn, model.blocks[receiver_layer].attn
    W_A = sender.W_V[sender_head] @ sender.W_O[sender_head]  # [d_model, d_model]
    W_B = (receiver.W_Q[receiver_head] @ receiver.W_K[receiver_head].T).T  # key side
    return float((W_A @ W_B).norm() / (W_A.norm() * W_B.norm()))


# %% exercise="induction.k_edge"
k_edge = ("L0H1", "L1H1", "k")
