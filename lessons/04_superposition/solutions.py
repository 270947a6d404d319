# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.

# %% exercise="superposition.loss"
def loss_per_instance(out, batch, importance):
    return (importance * (batch - out) ** 2).sum(dim=-1).mean(dim=0)


# %% exercise="superposition.dimensionality"
def dimensionality(W):
    norms = W.norm(dim=1)  # [instance, feature]
    unit = W / norms[:, None, :].clamp_min(1e-12)  # [instance, hidden, feature]
    overlaps = torch.einsum("ihf,ihg->ifg", unit, W) ** 2  # [instance, feature, other]
    den = overlaps.sum(-1)
    return torch.where(den > 1e-12, norms**2 / den.clamp_min(1e-12), torch.zeros_like(den))


# %% exercise="superposition.represented"
represented = (methods.reconstruction(model) > 0.5).sum(-1).tolist()


# %% exercise="superposition.phase_change"
row = methods.phase_diagram(n_density=13, n_importance=1, importance_range=(0.5, 0.5),
                            steps=500 if fast() else 1000, seed=0)
status = row.feature1()[0].tolist()  # dense to sparse
first = status.index(2)  # 2: superposed
transition_density = float(row.density[first - 1] * row.density[first]) ** 0.5 if first else 1.0
print("feature 1 by density:", dict(zip(row.density.numpy().round(3).tolist(), status)))
