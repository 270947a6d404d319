# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.

# %% exercise="grokking.fourier_basis"
def fourier_basis(p):
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64)]
    for w in range(1, (p - 1) // 2 + 1):
        angle = 2 * math.pi * w * x / p
        rows += [math.sqrt(2 / p) * torch.cos(angle), math.sqrt(2 / p) * torch.sin(angle)]
    return torch.stack(rows)  # [basis, x]


# %% exercise="grokking.trig_logits"
def trig_logits(a, b, freqs, p):
    c = torch.arange(p, dtype=torch.float64)
    out = torch.zeros(len(a), p, dtype=torch.float64)
    for w in freqs:
        wa, wb, wc = (2 * math.pi * w * v.double() / p for v in (a, b, c))
        cos_sum = wa.cos() * wb.cos() - wa.sin() * wb.sin()  # cos(w(a+b)) [n]
        sin_sum = wa.sin() * wb.cos() + wa.cos() * wb.sin()  # sin(w(a+b)) [n]
        out += cos_sum[:, None] * wc.cos()[None, :] + sin_sum[:, None] * wc.sin()[None, :]  # cos(w(a+b-c))
    return out


# %% exercise="grokking.frequency_fraction"
def frequency_fraction(grids, w):
    B = methods.fourier.fourier_basis(grids.shape[-1], torch.float64)[0]  # [basis, x]
    sq = (B @ grids.double() @ B.T) ** 2  # [neuron, basis, basis]
    rows = [0, 2 * w - 1, 2 * w]  # const, cos w, sin w
    part = sq[:, rows][:, :, rows].sum((1, 2)) - sq[:, 0, 0]
    return part / (sq.sum((1, 2)) - sq[:, 0, 0])


# %% exercise="grokking.key_frequencies"
# Start from the largest embedding frequencies (all of which pass as a set) and drop each one
# whose removal leaves the restricted loss within 0.005 nats of the full loss.
key_freqs = list(candidates)
for w in candidates:
    rest = [v for v in key_freqs if v != w]
    if methods.frequency_losses(model, task, rest).restricted <= losses.full + 0.005:
        key_freqs = rest
print("key frequencies:", key_freqs)


# %% exercise="grokking.halfway_steps"
def halfway_step(values):
    steps, values = list(measures.steps), list(values)
    i_peak = max(range(len(values)), key=values.__getitem__)
    half = (values[i_peak] + min(values[i_peak:])) / 2
    return next(s for s, v in zip(steps[i_peak:], values[i_peak:]) if v <= half)


halfway = {"restricted": halfway_step(measures.restricted_loss), "test": halfway_step(measures.test_loss)}
print(halfway)
