"""Method traps: hand-built models whose known circuit makes one family of methods fail.

Each trap reproduces a failure documented in the literature, on a ``Logic`` gate, with every
weight set by hand so that the mechanism is exactly what is written here:

    self-repair   (McGrath et al. 2023; Rushing & Nanda 2024) y = a. The primary head P
                  copies a to the answer. A backup head B in layer 1 would copy it too, but
                  its query reads what P wrote and its key the value of a: when they agree
                  it attends BOS (writes nothing). Ablate P (resample: P now argues for the
                  other answer) and B attends to a and writes twice P's weight: the answer is
                  restored exactly, so P's total effect is 0 though P carries the answer.
    or-gate       (Heimersheim & Nanda 2024) y = a or b. Heads A and B move a and b to the
                  answer position; MLP0 computes min(a + b, 1). From a = b = 1, turning off
                  either input alone changes nothing (noising sees neither path), turning on
                  either alone from a = b = 0 restores the answer (denoising sees each).
    saturation    (Kramár et al. 2024, AtP*; Syed et al. 2023) y = b if s else a. Head Z
                  moves s to the answer position; the selector head M's query reads it and
                  attends to b or to a with a score gap of 2 * SELECT_GAIN, so its softmax
                  is saturated: the gradient through the query is ~e^-20 while flipping s
                  flips the answer.
    narrow-switch (Kramár et al. 2024; Hanna et al. 2024 on EAP-IG's steps) the saturation
                  trap with the selector's switch moved off-centre: it attends to b only
                  when sel > SWITCH_AT, with a gain of NARROW_GAIN. Saturated at both ends,
                  and along the straight path from the corrupted to the clean input the
                  switch happens within ~0.01 of alpha = 0.1 or 0.9, between the points
                  where a 5-step Riemann sum of the gradient (EAP-IG's default) looks.
    cancellation  (Kramár et al. 2024, AtP*'s GradDrop) y = a. Head A copies a to the
                  answer, and into a hidden channel that MLP1 reads. MLP1 writes back
                  -g(hidden), with g piecewise linear, slope 1 at hidden = +-1 and
                  g(1) = g(-1): to first order A's effect through MLP1 cancels its direct
                  effect exactly, while for real MLP1 writes the same on both inputs. A
                  carries the whole answer; the gradient at the clean input says it and
                  its input carry nothing.

    long-chain    y = a, through a chain of six edges in a 4-layer, 8-head model with MLPs
                  (about 1,500 edges, the circuit 0.4% of them): a mover, three relay
                  heads and MLP1 pass a from layer to layer, and sixteen distractors read
                  the chain at every stage and add a little each. What it tests is scale:
                  precision at the circuit's size among many small real effects, and the
                  cost of methods that patch edge by edge. MLP1 clips the bit and is
                  saturated on every input, so no gradient reaches the chain before it:
                  first-order methods rank those edges below the distractors after it.

    distributed   (Geiger et al. 2024, DAS; MIB's causal-variable track) y = a xor b. Heads
                  move a and b to the answer position; MLP0 re-encodes them as one code
                  a u + b v over four residual channels (u, v orthonormal, entries +-1/2
                  drawn from the seed: every channel carries both equally, and every
                  neuron mixes both); MLP1 reads a + b off
                  it. The variables a and b both live in MLP0's output, each along its own
                  direction (``CausalVariable.basis``): interchanging the whole output moves
                  both, no subset of channels or neurons holds one alone, and a learned
                  1-dim subspace (DAS) holds exactly one. A featuriser trap: the circuit
                  itself is easy; locating the variable within its node is not.

Every trap also has three *distractor* heads with small real effects (faint copies of the
circuit's last step, each 1-2.5% of the answer): the noise floor of a real model. A method
that scores a circuit component at 0 ranks it below them, as a method on a large model would.
Which heads play which role is drawn from the seed (``trap_heads``), so a method cannot
learn the answer from head indices; the weights of the distractors too.

Residual stream (``Layout``): one-hot ``tok`` [d_vocab] and ``pos`` [n_ctx], then four
scalar channels: ``ans`` (read by the unembedding: logit(true) - logit(false) =
LOGIT_SCALE * ans), ``hidden`` (cancellation), ``or_in`` (or-gate) and ``sel`` (saturation).
No LayerNorm; every bias is 0 except MLP0's in the or-gate.

    model = build_trap("self-repair", Logic("copy"), seed=0)
    truth = trap_truth("self-repair", seed=0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from toylab.components import Edge, head_id
from toylab.models import Transformer, TransformerConfig
from toylab.tasks.base import seeded_generator
from toylab.tasks.logic import BIT_POS, FALSE, QUERY, TRUE, Logic, bit_token
from toylab.truth.truth import AttentionRole, CausalVariable, Trap, Truth

TRAPS = ("self-repair", "or-gate", "saturation", "narrow-switch", "cancellation", "long-chain", "distributed")
GATE = {"self-repair": "copy", "or-gate": "or", "saturation": "mux", "narrow-switch": "mux", "cancellation": "copy",
        "long-chain": "copy", "distributed": "xor"}
KIND = {"narrow-switch": "saturation", "distributed": "distributed-variable"}  # where the name is not the kind
D_HEAD, D_MLP = 4, 4
SHAPE = {"long-chain": (4, 8)}  # (layers, heads) where not (2, 4)
ATTN_GAIN = 20.0  # score of the key a head is built to attend to, over the others
SELECT_GAIN = 10.0  # the selector's score gap per unit of sel (saturation)
NARROW_GAIN, SWITCH_AT = 40.0, 0.8  # narrow-switch: gaps of 16 (sel = 1) and 144 (sel = -1)
LOGIT_SCALE = 8.0  # logit(true) - logit(false) per unit of ans
BACKUP_WEIGHT = 2.0  # what the backup writes, in units of the primary's write: full repair
CHANNELS = ("ans", "hidden", "or_in", "sel", "c0", "c1", "c2", "c3")
CODE = ("hidden", "or_in", "sel", "c2")  # the distributed trap's code: a and b mixed over these
CODE_MIX = math.pi / 6  # MLP0's neurons read a and b rotated by this angle: each neuron mixes both

# Where each trap's roles live: layer -> roles, in the order trap_heads assigns them.
# "distractor" heads are faint copies of the circuit's last step.
ROLES: dict[str, dict[int, tuple[str, ...]]] = {
    "self-repair": {0: ("primary", "distractor", "distractor"), 1: ("backup", "distractor")},
    "or-gate": {0: ("path_a", "path_b", "distractor"), 1: ("distractor", "distractor")},
    "saturation": {0: ("mover",), 1: ("selector", "distractor", "distractor", "distractor")},
    "narrow-switch": {0: ("mover",), 1: ("selector", "distractor", "distractor", "distractor")},
    "cancellation": {0: ("cancelling", "distractor", "distractor"), 1: ("distractor",)},
    "long-chain": {layer: (role, *["distractor"] * 4)
                   for layer, role in enumerate(("mover", "relay1", "relay2", "relay3"))},
    "distributed": {0: ("mover_a", "mover_b", "distractor"), 1: ("distractor", "distractor")},
}


def code_directions(seed: int) -> tuple[list[float], list[float]]:
    """The distributed trap's directions of a and of b over the ``CODE`` channels: orthonormal,
    every entry +-1/2, so each channel carries a and b in equal measure (signs drawn from the
    seed). Patching any set of channels then moves a + b, what MLP1 reads, as patching the
    whole output does, only less: no mask of channels moves a alone."""
    g = seeded_generator(seed * 100 + 77)
    signs = torch.randint(2, (len(CODE),), generator=g) * 2 - 1  # [channel]
    flip = torch.tensor([1, 1, -1, -1])[torch.randperm(len(CODE), generator=g)]  # orthogonal to all ones
    u = signs / 2
    return u.tolist(), (u * flip).tolist()


@dataclass(frozen=True)
class Layout:
    """Where each subspace lies in the residual stream (see the module docstring)."""

    d_vocab: int
    n_ctx: int

    def tok(self, token: int) -> int:
        return token

    def pos(self, position: int) -> int:
        return self.d_vocab + position

    def channel(self, name: str) -> int:
        return self.d_vocab + self.n_ctx + CHANNELS.index(name)

    @property
    def d_model(self) -> int:
        return self.d_vocab + self.n_ctx + len(CHANNELS)


def _check(trap: str, task: object) -> None:
    if trap not in TRAPS:
        raise ValueError(f"unknown trap {trap!r}; the traps are {list(TRAPS)}")
    if not isinstance(task, Logic) or task.gate != GATE[trap]:
        raise ValueError(f"the {trap} trap is built on Logic(gate={GATE[trap]!r}), got {task!r}")


def config_for(trap: str, task: Logic) -> TransformerConfig:
    lay = Layout(task.d_vocab, task.n_ctx)
    n_layers, n_heads = SHAPE.get(trap, (2, 4))
    return TransformerConfig(n_layers=n_layers, d_model=lay.d_model, n_heads=n_heads, d_head=D_HEAD, d_mlp=D_MLP,
                             act_fn="relu", d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx,
                             normalization_type=None)


def trap_heads(trap: str, seed: int) -> dict[str, list[str]]:
    """Which head plays which role on this seed: {role: [head ids]} (a seeded shuffle per layer)."""
    if trap not in TRAPS:
        raise ValueError(f"unknown trap {trap!r}; the traps are {list(TRAPS)}")
    out: dict[str, list[str]] = {}
    for layer, roles in ROLES[trap].items():
        order = torch.randperm(SHAPE.get(trap, (2, 4))[1], generator=seeded_generator(seed * 100 + layer)).tolist()
        for role, head in zip(roles, order):
            out.setdefault(role, []).append(head_id(layer, head))
    return out


def _distractor_weights(seed: int, n: int) -> list[float]:
    """Each distractor's share of the answer: uniform in [0.01, 0.025), or for many
    distractors in [0.03, 0.075) / n, so that together they stay under 7.5%."""
    g = seeded_generator(seed * 100 + 99)
    low, width = (0.01, 0.015) if n <= 3 else (0.03 / n, 0.045 / n)
    return [low + width * float(u) for u in torch.rand(n, generator=g)]


def build_trap(trap: str, task: Logic, seed: int = 0) -> Transformer:
    """The hand-built model of ``trap`` on ``task`` (see the module docstring)."""
    _check(trap, task)
    lay = Layout(task.d_vocab, task.n_ctx)
    model = Transformer(config_for(trap, task))
    heads = trap_heads(trap, seed)
    gain = ATTN_GAIN * math.sqrt(D_HEAD)  # undoes the attention's 1 / sqrt(d_head)

    def attn(node: str):
        layer, head = int(node[1]), int(node[3:])
        return model.blocks[layer].attn, head

    def attend(node: str, position: int) -> None:
        """From the "?" position, attend to ``position`` (d_head index 0 of q and k)."""
        a, h = attn(node)
        a.W_Q[h, lay.tok(QUERY), 0] = gain
        a.W_K[h, lay.pos(position), 0] = 1.0

    def read_bit(node: str, bit: str, signed: bool = True) -> None:
        """Value index 0: +1 where ``bit`` is 1, -1 (or 0 if not ``signed``) where it is 0."""
        a, h = attn(node)
        a.W_V[h, lay.tok(bit_token(bit, 1)), 0] = 1.0
        if signed:
            a.W_V[h, lay.tok(bit_token(bit, 0)), 0] = -1.0

    def write(node: str, channel: str, weight: float) -> None:
        a, h = attn(node)
        a.W_O[h, 0, lay.channel(channel)] = weight

    def copy_a(node: str, weight: float) -> None:
        attend(node, BIT_POS["a"])
        read_bit(node, "a")
        write(node, "ans", weight)

    def relay(node: str, read: str, written: str, weight: float = 1.0) -> None:
        """At the "?" position, attend to itself and copy channel ``read`` into ``written``."""
        a, h = attn(node)
        a.W_Q[h, lay.tok(QUERY), 0] = gain
        a.W_K[h, lay.tok(QUERY), 0] = 1.0
        a.W_V[h, lay.channel(read), 0] = 1.0
        write(node, written, weight)

    def selector(node: str, select_gain: float, weight: float, switch_at: float = 0.0) -> None:
        """Attend to b where sel > switch_at and to a where sel < switch_at, copy that bit to ans."""
        a, h = attn(node)
        a.W_Q[h, lay.channel("sel"), 0] = select_gain * math.sqrt(D_HEAD)
        a.b_Q[h, 0] = -select_gain * switch_at * math.sqrt(D_HEAD)
        a.W_K[h, lay.pos(BIT_POS["b"]), 0] = 1.0
        a.W_K[h, lay.pos(BIT_POS["a"]), 0] = -1.0
        a.W_Q[h, lay.tok(QUERY), 1] = gain  # a and b only: every other key scores 0
        a.W_K[h, lay.pos(BIT_POS["a"]), 1] = 1.0
        a.W_K[h, lay.pos(BIT_POS["b"]), 1] = 1.0
        read_bit(node, "a")
        read_bit(node, "b")
        write(node, "ans", weight)

    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for token in range(task.d_vocab):
            model.embed.W_E[token, lay.tok(token)] = 1.0
        for position in range(task.n_ctx):
            model.pos_embed.W_pos[position, lay.pos(position)] = 1.0
        model.unembed.W_U[lay.channel("ans"), TRUE] = LOGIT_SCALE / 2
        model.unembed.W_U[lay.channel("ans"), FALSE] = -LOGIT_SCALE / 2

        distractors = heads.pop("distractor")
        for node, weight in zip(distractors, _distractor_weights(seed, len(distractors))):
            if GATE[trap] == "mux":
                selector(node, select_gain=0.5, weight=weight)  # soft: its gradient is alive
            elif trap == "long-chain" and node[1] != "0":  # reads the chain where it is at its layer
                relay(node, {"1": "c0", "2": "c2", "3": "c3"}[node[1]], "ans", weight)
            else:
                copy_a(node, weight)

        if trap == "self-repair":
            (primary,), (backup,) = heads["primary"], heads["backup"]
            copy_a(primary, 1.0)
            # The backup attends to a (score G) unless what is in ans already agrees with
            # a (then -G), against BOS at G / 2: a bilinear query-key suppression.
            a, h = attn(backup)
            a.W_Q[h, lay.tok(QUERY), 0] = gain
            a.W_K[h, lay.pos(BIT_POS["a"]), 0] = 1.0
            a.W_Q[h, lay.channel("ans"), 1] = -2 * gain
            a.W_K[h, lay.tok(bit_token("a", 1)), 1] = 1.0
            a.W_K[h, lay.tok(bit_token("a", 0)), 1] = -1.0
            a.W_Q[h, lay.tok(QUERY), 2] = gain / 2
            a.W_K[h, lay.pos(0), 2] = 1.0
            read_bit(backup, "a")
            write(backup, "ans", BACKUP_WEIGHT)
        elif trap == "or-gate":
            for role, bit in (("path_a", "a"), ("path_b", "b")):
                (node,) = heads[role]
                attend(node, BIT_POS[bit])
                read_bit(node, bit, signed=False)  # 1 or 0
                write(node, "or_in", 1.0)
            # MLP0: ans = 2 min(or_in, 1) - 1 = 2 relu(or_in) - 2 relu(or_in - 1) - 1
            mlp = model.blocks[0].mlp
            mlp.W_in[lay.channel("or_in"), 0] = 1.0
            mlp.W_in[lay.channel("or_in"), 1] = 1.0
            mlp.b_in[1] = -1.0
            mlp.W_out[0, lay.channel("ans")] = 2.0
            mlp.W_out[1, lay.channel("ans")] = -2.0
            mlp.b_out[lay.channel("ans")] = -1.0
        elif GATE[trap] == "mux":
            (mover,), (select,) = heads["mover"], heads["selector"]
            attend(mover, BIT_POS["s"])
            read_bit(mover, "s")
            write(mover, "sel", 1.0)
            if trap == "saturation":
                selector(select, select_gain=SELECT_GAIN, weight=1.0)
            else:
                selector(select, select_gain=NARROW_GAIN, weight=1.0, switch_at=SWITCH_AT)
        elif trap == "long-chain":
            # a -> c0 (mover, L0) -> c1 (relay1, L1) -> c2 (MLP1) -> c3 (relay2, L2) -> ans (relay3, L3)
            (mover,), (relay1,), (relay2,), (relay3,) = (heads[r] for r in ("mover", "relay1", "relay2", "relay3"))
            attend(mover, BIT_POS["a"])
            read_bit(mover, "a")
            write(mover, "c0", 1.0)
            relay(relay1, "c0", "c1")
            # MLP1 clips: c2 = clip(2 c1, -1, 1) = relu(2 c1 + 1) - relu(2 c1 - 1) - 1. At c1 = +-1
            # (clean and corrupted alike) it is flat: no gradient reaches the chain before it.
            mlp = model.blocks[1].mlp
            for neuron, (bias, sign) in enumerate(((1.0, 1.0), (-1.0, -1.0))):
                mlp.W_in[lay.channel("c1"), neuron] = 2.0
                mlp.b_in[neuron] = bias
                mlp.W_out[neuron, lay.channel("c2")] = sign
            mlp.b_out[lay.channel("c2")] = -1.0
            relay(relay2, "c2", "c3")
            relay(relay3, "c3", "ans")
        elif trap == "distributed":
            (mover_a,), (mover_b,) = heads["mover_a"], heads["mover_b"]
            for mover, bit, channel in ((mover_a, "a", "c0"), (mover_b, "b", "c1")):
                attend(mover, BIT_POS[bit])
                read_bit(mover, bit)
                write(mover, channel, 1.0)
            # MLP0 writes a u + b v over the CODE channels, linearly (a ReLU pair per
            # direction), through neurons that read a and b rotated: p = cos a + sin b,
            # q = -sin a + cos b, so every neuron, and every channel, mixes the two.
            u, v = (torch.tensor(d) for d in code_directions(seed))
            c, si = math.cos(CODE_MIX), math.sin(CODE_MIX)
            reads = ((c, si), (-si, c))  # (weight on a, weight on b) of p and q
            writes = (c * u + si * v, -si * u + c * v)  # a u + b v = p (c u + s v) + q (-s u + c v)
            mlp = model.blocks[0].mlp
            for k, ((wa, wb), out) in enumerate(zip(reads, writes)):
                for neuron, sign in ((2 * k, 1.0), (2 * k + 1, -1.0)):
                    mlp.W_in[lay.channel("c0"), neuron] = sign * wa
                    mlp.W_in[lay.channel("c1"), neuron] = sign * wb
                    for channel, value in zip(CODE, out.tolist()):
                        mlp.W_out[neuron, lay.channel(channel)] = sign * value
            # MLP1: ans = 1 - |a + b| (true iff a != b), reading a + b = (u + v) . code.
            mlp = model.blocks[1].mlp
            for neuron, sign in ((0, 1.0), (1, -1.0)):
                for channel, value in zip(CODE, (u + v).tolist()):
                    mlp.W_in[lay.channel(channel), neuron] = sign * value
                mlp.W_out[neuron, lay.channel("ans")] = -1.0
            mlp.b_out[lay.channel("ans")] = 1.0
        else:  # cancellation
            (cancelling,) = heads["cancelling"]
            copy_a(cancelling, 1.0)
            write(cancelling, "hidden", 1.0)
            # MLP1 writes -g(hidden) - 1 to ans, g = relu(h) - relu(-h) - 2 relu(h + 1/2) + 2 relu(h - 1/2):
            # slope 1 at h = +-1, g(1) = g(-1) = -1, so the write is 0 on both inputs.
            mlp = model.blocks[1].mlp
            hidden = lay.channel("hidden")
            for neuron, (w_in, b_in, w_out) in enumerate(((1.0, 0.0, -1.0), (-1.0, 0.0, 1.0), (1.0, 0.5, 2.0),
                                                         (1.0, -0.5, -2.0))):
                mlp.W_in[hidden, neuron] = w_in
                mlp.b_in[neuron] = b_in
                mlp.W_out[neuron, lay.channel("ans")] = w_out
            mlp.b_out[lay.channel("ans")] = -1.0
    return model


_DESCRIPTIONS = {
    "self-repair": "y = a. The primary head copies a to the answer; a backup head in layer 1 attends to a only "
    "when what is already in the answer disagrees with a, and then writes it with twice the primary's weight. "
    "On clean inputs the backup writes nothing; with the primary ablated it restores the answer exactly.",
    "or-gate": "y = a or b. One head moves a, another b, to the answer position; MLP0 computes min(a + b, 1). "
    "From a = b = 1 either path alone keeps the answer.",
    "saturation": "y = b if s else a. A layer-0 head moves s to the answer position; the selector head's query "
    "reads it and attends to b or to a with a saturated softmax, and copies that bit to the answer.",
    "narrow-switch": "y = b if s else a. As the saturation trap, but the selector attends to b only when what "
    "it reads of s exceeds 0.8, with a steep gain: the switch is narrow and off-centre.",
    "long-chain": "y = a, passed along a chain: a layer-0 head moves a to the answer position, a layer-1 head "
    "relays it, MLP1 relays it clipped to [-1, 1] (saturated on every input), a layer-2 and a layer-3 head relay "
    "it to the answer; sixteen faint distractors read the chain at each stage.",
    "distributed": "y = a xor b. Two layer-0 heads move a and b to the answer position; MLP0 re-encodes them "
    "as one code, a u + b v over four channels (u, v orthonormal, every channel carrying both equally); MLP1 reads a + b "
    "off the code and answers 1 - |a + b|.",
    "cancellation": "y = a. One head copies a to the answer and into a hidden channel; MLP1 reads that channel "
    "and writes back a function whose slope cancels the head's direct effect to first order but whose value is "
    "the same on both inputs.",
}

_TRAPS = {
    "self-repair": dict(
        mechanism="Ablating the primary head lets the backup head take over: its total effect (resample "
        "ablation, noising, and denoising alike) is 0 although it writes the answer. Patching one edge at a "
        "time (and EAP's QK fix, which recomputes the backup's attention exactly) flags the edges that hold "
        "the backup back instead: ablated alone, its query or key edge makes it fire on top of the primary. "
        "The primary's direct effect (EAP, EAP-IG, ACDC's edge to the logits) sees the circuit.",
        reference="McGrath et al. 2023, The Hydra Effect; Rushing & Nanda 2024, Explorations of self-repair",
        falls_in=("resample-ablation", "denoising", "edge-noising", "edge-denoising", "eap-qk", "atp-star"),
        remedies=("eap", "eap-ig", "acdc")),
    "or-gate": dict(
        mechanism="Two paths, each sufficient alone: noising one at a time (resample ablation, ACDC's pruning) "
        "sees nothing, so ACDC keeps one path and drops the other, and the gradient at the clean input is 0 "
        "(MLP0 is past its kink), so EAP sees neither. Denoising (patching one path's clean activations into "
        "the corrupted run) restores the answer through each.",
        reference="Heimersheim & Nanda 2024, How to use and interpret activation patching",
        falls_in=("resample-ablation", "edge-noising", "eap", "eap-qk", "atp-star", "acdc"),
        remedies=("denoising", "edge-denoising", "eap-ig")),
    "saturation": dict(
        mechanism="The selector's softmax is saturated, so the first-order estimate of patching its query "
        "(attribution patching, EAP) is ~0 while flipping s flips the answer, and masks learned by gradient "
        "descent (edge pruning) get no signal to keep it. Recomputing the pattern exactly (EAP's QK fix), "
        "integrating the gradient along the path (EAP-IG) or patching for real (ACDC, resample ablation) sees it. "
        "The fix repairs the selector's own softmax, not what lies upstream of it: the mover's input edge still "
        "gets a ~0 gradient, which the plain QK fix ranks third by a hair, and full AtP* (GradDrop, which drops "
        "layer 1, the only path from that edge) scores exactly 0.",
        reference="Kramár et al. 2024, AtP*; Syed et al. 2023, Attribution patching outperforms ACDC",
        falls_in=("eap", "atp-star", "edge-pruning"), remedies=("eap-qk", "eap-ig", "acdc", "resample-ablation", "edge-noising")),
    "narrow-switch": dict(
        mechanism="The selector's softmax is saturated at both ends and switches in a window ~0.01 wide near "
        "alpha = 0.1 or 0.9 of the straight path from the corrupted to the clean input. EAP's gradient at the "
        "clean input is ~0, and so is EAP-IG's: its 5-step Riemann sum samples alpha = 0, 0.2, ..., 0.8, never "
        "inside the window; edge pruning's masks get no gradient to keep it. Patching for real (ACDC, resample "
        "ablation) sees it, as do EAP's QK fix and EAP-IG with enough steps to land in the window.",
        reference="Kramár et al. 2024, AtP*; Hanna et al. 2024, Have faith in faithfulness (EAP-IG)",
        falls_in=("eap", "eap-ig", "atp-star", "edge-pruning"), remedies=("eap-qk", "acdc", "resample-ablation", "edge-noising")),
    "cancellation": dict(
        mechanism="The head's direct effect and its effect through MLP1 cancel to first order: the gradient at "
        "the clean input says the head and its input edge carry nothing, and that its edge into MLP1 carries as "
        "much as its edge to the logits, while for real MLP1 writes the same on both inputs and the head carries "
        "the whole answer. Attribution patching (EAP, its QK fix) falls in; integrating the gradient along the "
        "path (EAP-IG: the cancelling slopes integrate to g(1) - g(-1) = 0) or patching for real does not. AtP*'s "
        "GradDrop (dropping layer 1's gradient) recovers the head's input edge but keeps the false edge into MLP1, "
        "tied with it, so the circuit of the truth's size takes the wrong one.",
        reference="Kramár et al. 2024, AtP* (cancellation; GradDrop)",
        falls_in=("eap", "eap-qk", "atp-star"), remedies=("eap-ig", "acdc", "resample-ablation", "edge-noising")),
    "long-chain": dict(
        mechanism="Six edges among about 1,500, and sixteen distractor heads reading the chain at every stage, each "
        "adding 0.2-0.5% of the answer: hundreds of edges carry small real effects. Methods must rank the chain "
        "above them (precision at the circuit's size), and methods that patch edge by edge pay for every edge. "
        "MLP1 clips the relayed bit and sits saturated on clean and corrupted inputs alike, so no gradient reaches "
        "the chain's first three edges: attribution patching (EAP, its QK fix, AtP*) ranks them below the "
        "distractors that read the chain after MLP1, while EAP-IG, whose path crosses the clip, and real patching "
        "see them. Edge pruning's 60 steps, enough on 100-edge graphs, do not separate six edges from 1,600.",
        reference="Conmy et al. 2023 (ACDC's cost grows with the edges); MIB (Mueller et al. 2025), larger graphs",
        falls_in=("eap", "eap-qk", "atp-star", "edge-pruning", "attention-heuristic"),
        remedies=("eap-ig", "acdc", "resample-ablation", "edge-noising")),
    "distributed": dict(
        mechanism="The variable a lives in MLP0's output, but only along its direction u of a code that also "
        "carries b: interchanging MLP0's whole output (what node-level patching and the node's causal variable "
        "assume) swaps b too, and follows the algorithm only where b happens to agree (IIA ~0.5); every "
        "channel, and every MLP0 neuron, mixes a and b, so no set of them (a learned neuron mask) carries a "
        "alone. Distributed alignment search learns the direction and interchanges exactly a. (Of the circuit "
        "methods, AtP* falls in: on two layers GradDrop zeroes every edge into layer 0, whose effect runs only "
        "through layer 1.)",
        reference="Geiger et al. 2024 (DAS); Mueller et al. 2025 (MIB, causal variable localisation); "
        "Elhage et al. 2022 (features are not neurons)",
        falls_in=("full-vector", "neuron-mask", "atp-star"), remedies=("das",)),
}


def trap_truth(trap: str, seed: int = 0) -> Truth:
    """The ground truth of ``trap`` built with ``seed`` (its roles sit in seeded heads)."""
    if trap not in TRAPS:
        raise ValueError(f"unknown trap {trap!r}; the traps are {list(TRAPS)}")
    heads = trap_heads(trap, seed)
    name = f"trap-{trap}"
    nodes: dict[str, str] = {"embed": "input bits"}
    edges: list[Edge] = []
    trap_nodes: dict[str, tuple[str, ...]] = {}
    paths: tuple[tuple[Edge, ...], ...] = ()
    attention: tuple[AttentionRole, ...] = ()
    variables: list[CausalVariable] = []
    if trap == "self-repair":
        (p,), (b,) = heads["primary"], heads["backup"]
        nodes[p] = "primary"
        edges = [Edge("embed", p, "v"), Edge(p, "logits", "resid")]
        trap_nodes = {"primary": (p,), "backup": (b,)}
    elif trap == "or-gate":
        (a,), (b,) = heads["path_a"], heads["path_b"]
        nodes.update({a: "moves a", b: "moves b", "MLP0": "or"})
        paths = ((Edge("embed", a, "v"), Edge(a, "MLP0", "resid")), (Edge("embed", b, "v"), Edge(b, "MLP0", "resid")))
        edges = [*paths[0], *paths[1], Edge("MLP0", "logits", "resid")]
    elif GATE[trap] == "mux":
        (z,), (m,) = heads["mover"], heads["selector"]
        nodes.update({z: "moves s", m: "selector"})
        edges = [Edge("embed", z, "v"), Edge(z, m, "q"), Edge(m, "logits", "resid")]
        trap_nodes = {"saturated": (m,)}
    elif trap == "distributed":
        (ma,), (mb,) = heads["mover_a"], heads["mover_b"]
        nodes.update({ma: "moves a", mb: "moves b", "MLP0": "a and b in one distributed code", "MLP1": "xor"})
        edges = [Edge("embed", ma, "v"), Edge("embed", mb, "v"), Edge(ma, "MLP0", "resid"), Edge(mb, "MLP0", "resid"),
                 Edge("MLP0", "MLP1", "resid"), Edge("MLP1", "logits", "resid")]
        lay = Layout(Logic("xor").d_vocab, Logic("xor").n_ctx)
        variables = []
        for bit, direction in zip("ab", code_directions(seed)):
            vector = [0.0] * lay.d_model
            for channel, value in zip(CODE, direction):
                vector[lay.channel(channel)] = value
            variables.append(CausalVariable(bit, f"the bit {bit}, in MLP0's output along its own direction of the code",
                                            ("MLP0",), "last", basis=(tuple(vector),)))
        trap_nodes = {"code": ("MLP0",)}
    elif trap == "long-chain":
        (mover,), (r1,), (r2,), (r3,) = (heads[r] for r in ("mover", "relay1", "relay2", "relay3"))
        nodes.update({mover: "moves a", r1: "relay", "MLP1": "relay", r2: "relay", r3: "relay"})
        edges = [Edge("embed", mover, "v"), Edge(mover, r1, "v"), Edge(r1, "MLP1", "resid"), Edge("MLP1", r2, "v"),
                 Edge(r2, r3, "v"), Edge(r3, "logits", "resid")]
    else:
        (a,) = heads["cancelling"]
        nodes[a] = "copies a (cancelled to first order)"
        edges = [Edge("embed", a, "v"), Edge(a, "logits", "resid")]
        trap_nodes = {"cancelling": (a,)}
    nodes["logits"] = "output"
    return Truth(
        model=name, provenance="constructed", description=_DESCRIPTIONS[trap], nodes=nodes, edges=tuple(edges),
        attention=attention, variables=tuple(variables),
        trap=Trap(kind=KIND.get(trap, trap), nodes=trap_nodes, paths=paths, **_TRAPS[trap]),
    )


__all__ = ["CODE", "GATE", "TRAPS", "Layout", "build_trap", "code_directions", "config_for", "trap_heads", "trap_truth"]
