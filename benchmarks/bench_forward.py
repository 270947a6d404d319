"""What the hooks cost: toylab's forward against a plain-torch forward of the same weights.

Prints, for each shape, the time of
  - a plain forward (fused einsums, no hook points, no per-head result), the baseline;
  - toylab's forward with no hook attached;
  - toylab's run_with_cache recording every hook;
  - one full-batch training step of the modadd-113 recipe (forward, backward, AdamW),
and their ratios to the baseline, all measured in this run. Outputs are checked equal first.
Then training's last-position forward (``toylab.models.fast.last_position_logits``, what
``toylab.train.task_loss`` runs when only the last position is scored), against the full
forward's last position, with and without the backward pass, on modadd-113 (one block, no
LayerNorm: keys and values by vocabulary lookup) and on a two-layer LayerNorm model.

    python benchmarks/bench_forward.py
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
import torch.nn.functional as F

from toylab.models import Transformer, TransformerConfig
from toylab.models.fast import last_position_logits
from toylab.tasks import loss
from toylab.zoo import load, recipe


def plain_forward(sd: dict[str, torch.Tensor], cfg: TransformerConfig, tokens: torch.Tensor) -> torch.Tensor:
    n = tokens.shape[1]
    x = sd["embed.W_E"][tokens] + sd["pos_embed.W_pos"][:n]
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    for layer in range(cfg.n_layers):
        a = f"blocks.{layer}.attn."
        q = torch.einsum("bpm,hmd->bhpd", x, sd[a + "W_Q"]) + sd[a + "b_Q"][:, None]
        k = torch.einsum("bpm,hmd->bhpd", x, sd[a + "W_K"]) + sd[a + "b_K"][:, None]
        v = torch.einsum("bpm,hmd->bhpd", x, sd[a + "W_V"]) + sd[a + "b_V"][:, None]
        scores = (q @ k.transpose(-1, -2) / math.sqrt(cfg.d_head)).masked_fill(mask, float("-inf"))
        z = scores.softmax(-1) @ v
        x = x + torch.einsum("bhpd,hdm->bpm", z, sd[a + "W_O"]) + sd[a + "b_O"]
        if not cfg.attn_only:
            m = f"blocks.{layer}.mlp."
            x = x + torch.relu(x @ sd[m + "W_in"] + sd[m + "b_in"]) @ sd[m + "W_out"] + sd[m + "b_out"]
    return x @ sd["unembed.W_U"] + sd["unembed.b_U"]


def best_time(fn, repeats: int = 7, inner: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return min(times)


def bench_shape(label: str, cfg: TransformerConfig, batch: int, pos: int) -> None:
    model = Transformer(cfg, seed=0)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    tokens = torch.randint(0, cfg.d_vocab, (batch, pos), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(tokens), plain_forward(sd, cfg, tokens), atol=1e-4)
        base = best_time(lambda: plain_forward(sd, cfg, tokens))
        ours = best_time(lambda: model(tokens))
        cached = best_time(lambda: model.run_with_cache(tokens))
    print(f"{label:<42} plain {base * 1e3:7.2f} ms | toylab {ours * 1e3:7.2f} ms ({ours / base:4.2f}x)"
          f" | run_with_cache(all) {cached * 1e3:7.2f} ms ({cached / base:4.2f}x)")


def bench_train_step() -> None:
    rec = recipe("modadd-113")
    model = Transformer(rec.model, seed=0)
    batch = rec.task.train_batch(0, 0, None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))

    def step() -> None:
        value = loss(model(batch.tokens), batch)
        opt.zero_grad()
        value.backward()
        opt.step()

    t = best_time(step, repeats=3, inner=5)
    steps = load("modadd-113").card["steps"]
    print(f"modadd-113 full-batch training step ({len(batch)} examples): {t * 1e3:.1f} ms;"
          f" x {steps} steps (the shipped run) = {t * steps:.0f} s to grok")


def bench_last_position(label: str, cfg: TransformerConfig) -> None:
    rec = recipe("modadd-113")
    model = Transformer(cfg, seed=0)
    batch = rec.task.train_batch(0, 0, None)
    tokens, targets = batch.tokens, batch.targets[:, -1]
    torch.testing.assert_close(last_position_logits(model, tokens), model(tokens)[:, -1], atol=1e-5, rtol=1e-5)

    def backward(logits_fn) -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(logits_fn(), targets).backward()

    with torch.no_grad():
        full = best_time(lambda: model(tokens)[:, -1])
        fast = best_time(lambda: last_position_logits(model, tokens))
    full_bw = best_time(lambda: backward(lambda: model(tokens)[:, -1]), repeats=5, inner=3)
    fast_bw = best_time(lambda: backward(lambda: last_position_logits(model, tokens)), repeats=5, inner=3)
    print(f"{label:<42} forward: full {full * 1e3:6.2f} ms | last_position {fast * 1e3:6.2f} ms"
          f" ({full / fast:4.2f}x) || + backward: full {full_bw * 1e3:6.2f} ms | last_position"
          f" {fast_bw * 1e3:6.2f} ms ({full_bw / fast_bw:4.2f}x)")


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_shape("2L attn-only, d_model 64, 4 heads, 64 x 32",
                TransformerConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_vocab=49, n_ctx=32), 64, 32)
    bench_shape("1L d_model 128, 4 heads, MLP 512, 3831 x 3",
                TransformerConfig(n_layers=1, d_model=128, n_heads=4, d_head=32, d_mlp=512, d_vocab=114,
                                  d_vocab_out=113, n_ctx=3), 3831, 3)
    bench_train_step()
    modadd = recipe("modadd-113").model
    bench_last_position("last position, modadd-113 (3831 x 3)", modadd)
    bench_last_position("last position, 2L LayerNorm gelu (3831 x 3)",
                        dataclasses.replace(modadd, n_layers=2, normalization_type="LN", act_fn="gelu"))
