"""The ground truth of each zoo recipe, as data. ``certify`` proves each one on the weights.

Edges are written at qkv granularity. Edges the counterfactual cannot vary are never
listed: ``pos_embed`` (same positions in both runs), and in these tasks the query of the
answer position (the "=" token in modular addition, the second copy of the segment in
induction, identical in clean and corrupted inputs). See ``toylab.truth.truth``.

The certified truths were found with ``toylab.truth.identify.identify_edges`` on each
shipped seed (modular addition's key frequencies with ``toylab.methods.key_frequencies``,
one set per seed), roles were named from the detector scores and the weights, and the result
is checked by the certificate like every other truth.
"""

from __future__ import annotations

import dataclasses

from toylab.truth import AttentionRole, CausalVariable, Edge, Trap, Truth


def _edges(*groups: tuple[list[str], list[str], str]) -> list[tuple[str, str, str]]:
    """All edges from each sender to each receiver of a group, with the group's kind."""
    return [(s, r, kind) for senders, receivers, kind in groups for s in senders for r in receivers]


def _modadd(name: str, n_heads: int, freqs: list[int]) -> Truth:
    heads = [f"L0H{h}" for h in range(n_heads)]
    return Truth(
        model=name,
        provenance="certified",
        description="Fourier multiplication (Nanda et al. 2023): the embedding maps a and b to cos/sin of "
        "w*a and w*b for a few key frequencies w; the heads, keyed on the operands, move them to the '=' "
        "position; the MLP multiplies them into cos/sin of w(a+b); the unembedding reads cos(w(a+b-c)).",
        nodes={"embed": "fourier-embedding", **{h: "operand-mover" for h in heads},
               "MLP0": "fourier-key-freq", "logits": "output"},
        edges=_edges((["embed"], heads, "k"), (["embed"], heads, "v"), (heads, ["MLP0"], "resid"),
                     (["MLP0"], ["logits"], "resid")),
        variables=(CausalVariable("sum", "(a + b) mod p, as cos/sin of w(a+b) for the key frequencies",
                                  ("MLP0",), "last"),),
        claims={"key_frequencies": freqs},
    )


def _modadd_seeds(name: str, n_heads: int, freqs_by_seed: dict[int, list[int]]) -> dict[int, Truth]:
    """One certified truth per shipped seed: the circuit is the same, the key frequencies differ."""
    return {seed: _modadd(name, n_heads, freqs) for seed, freqs in freqs_by_seed.items()}


MODADD_113 = _modadd("modadd-113", 4, [21, 29, 31])
MODADD_TINY_SEEDS = _modadd_seeds("modadd-tiny", 2, {0: [16, 19], 2: [2, 5, 8, 19]})
MODADD_TINY = MODADD_TINY_SEEDS[0]

_INDUCTION_DESCRIPTION = (
    "Induction (Olsson et al. 2022): a previous-token head writes, at each position, the token "
    "before it; an induction head's key reads that (K-composition), so the query at token x finds "
    "the position after x's earlier occurrence, and its value copies the token there to the logits."
)

INDUCTION_2L = Truth(
    model="induction-2l",
    provenance="certified",
    description=_INDUCTION_DESCRIPTION + " Naturally trained, the work is shared: two previous-token heads "
    "(L0H2, L0H3), two heads (L0H0, L0H1) whose outputs the induction heads' values read, and four "
    "induction heads.",
    nodes={"embed": "token", "L0H0": "token-copy", "L0H1": "token-copy", "L0H2": "previous-token",
           "L0H3": "previous-token", "L1H0": "induction", "L1H1": "induction", "L1H2": "induction",
           "L1H3": "induction", "logits": "output"},
    edges=[("L0H0", "L1H0", "v"), ("L0H0", "L1H1", "v"), ("L0H0", "L1H2", "v"), ("L0H0", "L1H3", "v"),
           ("L0H1", "L1H0", "v"), ("L0H1", "L1H3", "v"),
           *_edges((["L0H2", "L0H3"], ["L1H0", "L1H1", "L1H2", "L1H3"], "k")),
           *_edges((["L1H0", "L1H1", "L1H2", "L1H3"], ["logits"], "resid")),
           *_edges((["embed"], ["L0H0", "L0H1", "L0H2", "L0H3"], "v")),
           ("embed", "L0H3", "k"), ("embed", "L0H3", "q"),
           *_edges((["embed"], ["L1H0", "L1H1", "L1H2", "L1H3"], "v"))],
    attention=(AttentionRole("L0H2", "previous-token", 0.6), AttentionRole("L0H3", "previous-token", 0.5),
               *(AttentionRole(f"L1H{h}", "induction", 0.8) for h in range(4))),
)

INDUCTION_TINY = Truth(
    model="induction-tiny",
    provenance="certified",
    description=_INDUCTION_DESCRIPTION + " In this small model both layer-0 heads share the previous-token "
    "work and both layer-1 heads do induction.",
    nodes={"embed": "token", "L0H0": "previous-token", "L0H1": "previous-token", "L1H0": "induction",
           "L1H1": "induction", "logits": "output"},
    edges=[*_edges((["L0H0", "L0H1"], ["L1H0", "L1H1"], "k")), ("L0H1", "L1H0", "q"),
           *_edges((["L1H0", "L1H1"], ["logits"], "resid")),
           ("embed", "L0H0", "v"), ("embed", "L0H1", "k"), ("embed", "L0H1", "q"), ("embed", "L0H1", "v"),
           *_edges((["embed"], ["L1H0", "L1H1"], "k")), *_edges((["embed"], ["L1H0", "L1H1"], "v"))],
    attention=(AttentionRole("L0H0", "previous-token", 0.25), AttentionRole("L0H1", "previous-token", 0.25),
               AttentionRole("L1H0", "induction", 0.5), AttentionRole("L1H1", "induction", 0.5)),
)


def _single_induction_circuit(name: str, provenance: str, prev: str, induction: str, description: str,
                              min_score: float) -> Truth:
    return Truth(
        model=name,
        provenance=provenance,
        description=_INDUCTION_DESCRIPTION + " " + description,
        nodes={"embed": "token", prev: "previous-token", induction: "induction", "logits": "output"},
        edges=[("embed", prev, "v"), (prev, induction, "k"), ("embed", induction, "v"),
               (induction, "logits", "resid")],
        attention=(AttentionRole(prev, "previous-token", min_score), AttentionRole(induction, "induction", min_score)),
        variables=(CausalVariable("previous_token", "the token one position back", (prev,), "all"),
                   CausalVariable("induction", "the predicted next token", (induction,), "all")),
    )


INDUCTION_SIIT = _single_induction_circuit(
    "induction-siit", "enforced", "L0H2", "L1H1",
    "Heads chosen before training (not head 0); the six other heads are trained to be inert.", 0.5)


def _decoys(truth: Truth, prev: str, induction: str, how: str, also: str = "",
            falls_in: tuple[str, ...] = (), remedies: tuple[str, ...] = ("eap",)) -> Truth:
    """``truth`` with a previous-token decoy ``prev`` and an induction decoy ``induction``;
    ``also`` explains the measured failures beyond the attention heuristic (``falls_in``)."""
    trap = Trap(
        kind="decoys",
        mechanism=f"Heads outside the circuit attend exactly like its heads: {prev} like its previous-token head, "
        f"{induction} like its induction head, {how}. A method that goes by attention patterns (or by probing "
        "the residual stream for 'previous token' and 'next token') cannot tell them from the circuit; a causal "
        "method can." + also,
        reference="Olsson et al. 2022 (induction heads found by attention pattern); Makelov et al. 2023 "
        "(interpretability illusions: a subspace or pattern that looks right and does nothing)",
        falls_in=("attention-heuristic", *falls_in), remedies=("resample-ablation", "eap-ig", "acdc", *remedies),
        nodes={"decoy": (prev, induction)})
    roles = (AttentionRole(prev, "previous-token", truth.attention[0].min_score),
             AttentionRole(induction, "induction", truth.attention[1].min_score))
    return dataclasses.replace(truth, attention=(*truth.attention, *roles), trap=trap)


INDUCTION_CONSTRUCTED = _decoys(_single_induction_circuit(
    "induction-constructed", "constructed", "L0H1", "L1H1",
    "Weights set by hand; decoys L0H0 and L1H0 copy the circuit's attention patterns and write where "
    "nothing reads.", 0.95), "L0H0", "L1H0", "set by hand to write where nothing reads",
    also=" The induction head's softmax is saturated: the previous-token head's input edge gets a ~0 gradient, "
    "which AtP*'s GradDrop (dropping layer 1, its only path) makes exactly 0, below the decoys' edges.",
    falls_in=("atp-star",))
TRAP_DECOYS = _decoys(_single_induction_circuit(
    "trap-decoys", "enforced", "L0H3", "L1H2",
    "Heads chosen before training and trained in by SIIT, with two decoys trained to attend like them and to "
    "be inert.", 0.5), "L0H1", "L1H0", "trained (SIIT with a pattern term) to do so and to be inert",
    also=" Trained to a sharp pattern, the induction head's softmax saturates: attribution patching misses the "
    "previous-token head's edge into its key (EAP), and the QK fix, which recovers that edge, still misses the "
    "previous-token head's own input, whose gradient dies in the same softmax; edge pruning's masks get no "
    "gradient there either.",
    falls_in=("eap", "eap-qk", "atp-star", "edge-pruning"), remedies=("edge-noising",))

BRACKETS_SIIT = Truth(
    model="brackets-siit",
    provenance="enforced",
    description="Balanced brackets in two steps. L0H1 computes the running balance (open minus close so far) "
    "at every position; MLP0 flags the positions where it is negative; L1H1 gathers those flags at the last "
    "position (any_negative); MLP1 combines them with whether the final balance is zero. The nodes and "
    "variables were chosen before training; the edges between them are identified on each seed's weights, and so "
    "are its features: the embeddings of '(' and ')', and MLP0's flag at each position where the balance is below "
    "zero (one direction, written at every position), with edges brackets -> flags -> the 'unbalanced' logit.",
    nodes={"embed": "bracket", "L0H1": "balance", "MLP0": "negative", "L1H1": "any-negative",
           "MLP1": "answer", "logits": "output"},
    # The spine every seed must have; toylab.zoo identifies the full wiring per seed.
    edges=[Edge("embed", "L0H1", "v"), Edge("L0H1", "MLP0", "resid"), Edge("MLP0", "L1H1", "v"),
           Edge("L1H1", "MLP1", "resid"), Edge("MLP1", "logits", "resid")],
    variables=(CausalVariable("balance", "open minus close brackets so far", ("L0H1",), "all"),
               CausalVariable("negative", "the balance so far is below zero", ("MLP0",), "all"),
               CausalVariable("any_negative", "the balance went below zero somewhere", ("L1H1",), "last")),
)

FACTUAL_RECALL = Truth(
    model="factual-recall",
    provenance="enforced",
    description="Factual recall ([BOS, relation, subject, =] -> attribute[subject, relation]) in three steps, "
    "as in ROME and Geva et al. 2023. At the subject position (2), L0H1 reads the relation one position back; "
    "MLP0 there is a key-value memory keyed on (subject, relation) that writes the stored attribute (the facts "
    "live in its weights); at the answer position (3), L1H1 attends to the subject and moves the attribute to "
    "the logits. L0H0, L1H0 and MLP1 are trained to be inert. The nodes and variables were chosen before "
    "training; the edges between them are identified on each seed's weights, and so are its features: the relation "
    "and subject embeddings and one direction per attribute value in MLP0's output at the subject position, with "
    "edges subject and relation -> the fact's attribute -> its output class.",
    nodes={"embed": "subject and relation", "L0H1": "relation-mover", "MLP0": "fact-store",
           "L1H1": "attribute-mover", "logits": "output"},
    # The spine every seed must have; toylab.zoo identifies the full wiring per seed.
    edges=[Edge("embed", "L0H1", "v"), Edge("embed", "MLP0", "resid"), Edge("L0H1", "MLP0", "resid"),
           Edge("MLP0", "L1H1", "v"), Edge("L1H1", "logits", "resid")],
    variables=(CausalVariable("relation", "the relation, read at the subject position", ("L0H1",), "2"),
               CausalVariable("attribute", "attribute[subject, relation], looked up at the subject position",
                              ("MLP0",), "2"),
               CausalVariable("moved_attribute", "the attribute, moved to the answer position", ("L1H1",), "3")),
)

FACTUAL_RECALL_SPLIT = Truth(
    model="factual-recall-split",
    provenance="enforced",
    description="Factual recall with the facts stored in two places, each prompt in one of three forms (three "
    "paraphrase tokens per relation). At the subject position (2), L0H1 reads the relation one position back; "
    "MLP0 there stores the facts of subjects s0-s23 and MLP1 there those of s24-s47 (each store is a key-value "
    "memory the other half's facts do not pass through); at the answer position (3), L2H1 attends to the subject "
    "and moves the attribute to the logits. The other heads and MLP2 are trained to be inert. Where each fact is "
    "stored is known, so localisation (causal tracing) can be compared with where editing works best (Hase et "
    "al. 2023). The nodes and variables were chosen before training; the edges between them are identified on "
    "each seed's weights.",
    nodes={"embed": "subject and relation", "L0H1": "relation-mover", "MLP0": "fact-store-low",
           "MLP1": "fact-store-high", "L2H1": "attribute-mover", "logits": "output"},
    # The spine every seed must have; toylab.zoo identifies the full wiring per seed.
    edges=[Edge("embed", "L0H1", "v"), Edge("L0H1", "MLP0", "resid"), Edge("L0H1", "MLP1", "resid"),
           Edge("MLP0", "L2H1", "v"), Edge("MLP1", "L2H1", "v"), Edge("L2H1", "logits", "resid")],
    variables=(CausalVariable("relation", "the relation, read at the subject position", ("L0H1",), "2"),
               CausalVariable("attribute_low", "attribute[subject, relation] of subjects s0-s23, looked up at the "
                              "subject position", ("MLP0",), "2"),
               CausalVariable("attribute_high", "attribute[subject, relation] of subjects s24-s47, looked up at the "
                              "subject position", ("MLP1",), "2"),
               CausalVariable("moved_attribute", "the attribute, moved to the answer position", ("L2H1",), "3")),
)

CONJUNCTIONS = Truth(
    model="conjunctions",
    provenance="certified",
    description="Conjunctions of sparse features (computation in superposition): L0H0 and L0H1 attend from '=' to "
    "the two input features and move them there; MLP0's 8 neurons compute which of the 24 marked pairs they form "
    "(each conjunction a direction in MLP0's output, non-orthogonal: 24 directions in an 8-dim output space) and "
    "write it to the logits. The features (input features: their token embeddings; conjunctions: MLP0's output "
    "at '=' where the pair holds minus where none does) and the edges between them are identified on each seed's "
    "weights, as are the circuit's edges.",
    nodes={"embed": "input features", "L0H0": "feature-mover", "L0H1": "feature-mover", "MLP0": "conjunctions",
           "logits": "output"},
    edges=[Edge("MLP0", "logits", "resid")],
)

IOI_SIIT = Truth(
    model="ioi-siit",
    provenance="enforced",
    description="Indirect object identification (Wang et al. 2022) in three steps, trained in by SIIT. At the "
    "second mention of the subject S, the duplicate-token head L0H2 attends to its first mention and writes "
    "which slot of the first clause holds it; at the answer position the S-inhibition head L1H1 attends to that "
    "second mention and moves the slot there; the name movers L2H0 and L2H3, queried by it, attend to the name "
    "in the other slot (the indirect object) and copy it to the logits, while the negative name mover L3H2 "
    "attends to it too and writes against it. Outside the circuit, the backup name mover L3H1 does nothing "
    "while the name movers work and takes over when they are knocked out (self-repair, the claim "
    "self_repair); the ten other heads are trained to be inert. The nodes, variables and claims were chosen "
    "before training; the edges between the nodes are identified on each seed's weights.",
    nodes={"embed": "names and positions", "L0H2": "duplicate-token", "L1H1": "s-inhibition",
           "L2H0": "name-mover", "L2H3": "name-mover", "L3H2": "negative-name-mover", "logits": "output"},
    # The spine every seed must have; toylab.zoo identifies the full wiring per seed. The name
    # movers' values read names the ABC counterfactual leaves in place: no edge into them varies.
    edges=[Edge("L1H1", "L2H0", "q"), Edge("L1H1", "L2H3", "q"), Edge("L2H0", "logits", "resid"),
           Edge("L2H3", "logits", "resid"), Edge("L3H2", "logits", "resid")],
    attention=(AttentionRole("L0H2", "duplicate-s", 0.5), AttentionRole("L1H1", "s-inhibition", 0.5),
               AttentionRole("L2H0", "name-mover", 0.5), AttentionRole("L2H3", "name-mover", 0.5),
               AttentionRole("L3H2", "name-mover", 0.5)),
    variables=(CausalVariable("duplicate", "the first-clause slot of the repeated name, at its second mention",
                              ("L0H2",), "all"),
               CausalVariable("s_position", "that slot, moved to the answer position", ("L1H1",), "all"),
               CausalVariable("io", "the name in the other slot, copied to the logits", ("L2H0", "L2H3"), "all")),
    claims={"self_repair": {"primaries": ["L2H0", "L2H3"], "backups": ["L3H1"]}, "negative": ["L3H2"]},
)
