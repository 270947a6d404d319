"""Interpretability methods: plain functions from (model, data, options) to a result dataclass.

The families, each a module (helpers and slow references stay there, importable from it):

    ablation             ablate, ablation_scores: zero / mean / resample ablation of components
    detectors            head_scores: where attention heads look (previous-token, induction, ...,
                         and a task's own head types such as IOI's name movers)
    circuits             ov_circuit, qk_circuit, composition_scores: QK/OV circuits from the weights
    lens                 logit_lens, direct_logit_attribution: reading the residual stream as logits
    patching             activation_patching, path_patching: fast and exact
    attribution          eap (qk_fix: AtP*'s QK fix), eap_ig: edge attribution patching, every edge
                         from one backward pass
    circuit_discovery    acdc: automatic circuit discovery by greedy edge pruning
    fourier, progress    key_frequencies, frequency_losses, progress_measures: grokking modular addition
    superposition        feature_status, reconstruction, phase_diagram: toy models of superposition
    probes               train_probe, probe_grid: linear probes with control tasks
    interchange          interchange_accuracy, das: does the model use a variable, and where
    tracing              causal_trace: corrupt the subject, restore one state at a time (ROME)
    repair               self_repair: backups that take over when heads are knocked out (IOI's
                         backup name movers), and heads that write against the answer
    attribution_graph    attribution_graph: one prompt through transcoder features, frozen attention,
                         circuit-tracer's pruning, replacement and completeness scores
    editing              rome, memit, fine_tune, score_edits, localisation_vs_editing: rewrite a stored
                         fact and score it as CounterFact does, exactly
    steering             steering_targets, fit_steer, evaluate_steer, compare_steering: steer a
                         variable to a value, graded exactly by the task's algorithm

Upper-case names list the choices of an option (``ablate(..., method=m)`` for m in
``ABLATIONS``). Building blocks are imported from their module, e.g.
``from toylab.methods.patching import naive_path_patching``.
"""

from toylab.methods.ablation import ABLATIONS, AblationScores, ablate, ablation_scores
from toylab.methods.attribution import EdgeAttribution, eap, eap_ig
from toylab.methods.attribution_graph import AttributionGraph, Node, PrunedGraph, attribution_graph
from toylab.methods.check import Check
from toylab.methods.circuit_discovery import ACDC_METRICS, ACDCResult, EdgePruningResult, acdc, edge_pruning
from toylab.methods.circuits import (
    COMPOSITIONS,
    CompositionScores,
    composition_scores,
    ov_circuit,
    pos_qk_circuit,
    qk_circuit,
)
from toylab.methods.dashboard import (
    DashboardActivations,
    FeatureDashboard,
    FeatureTable,
    Neuron,
    SAELatent,
    TranscoderFeature,
    TruthMatch,
    dashboard_activations,
    feature_dashboard,
    feature_table,
)
from toylab.methods.detectors import DETECTORS, HeadScores, detectors_of, head_scores
from toylab.methods.editing import (
    EDIT_METHODS,
    EditConfig,
    EditingComparison,
    EditResult,
    EditScores,
    FactEdit,
    LocalisationVsEditing,
    apply_edits,
    compare_editing,
    edit_score,
    fine_tune,
    key_second_moment,
    localisation_vs_editing,
    memit,
    mlp_keys,
    random_edits,
    rome,
    score_edits,
)
from toylab.methods.fourier import (
    SPLITS,
    FrequencyLosses,
    check_key_frequencies,
    embedding_frequency_norms,
    frequency_losses,
    key_frequencies,
    mlp_frequency_spectrum,
    neuron_frequencies,
)
from toylab.methods.interchange import (
    DASConfig,
    DASResult,
    IIAResult,
    NeuronMaskResult,
    Site,
    das,
    iia_sweep,
    interchange_accuracy,
    neuron_mask,
    probe_subspace,
    sae_subspace,
    subspace_interchange,
    variable_site,
)
from toylab.methods.lens import DirectLogitAttribution, LogitLens, direct_logit_attribution, logit_lens
from toylab.methods.patching import (
    DIRECTIONS,
    PATCH_TARGETS,
    RECEIVER_INPUTS,
    PatchingResult,
    activation_patching,
    edge_patching,
    path_patching,
)
from toylab.methods.probes import LinearProbe, ProbeConfig, ProbeGrid, ProbeResult, probe_grid, train_probe
from toylab.methods.progress import Phase, Phases, ProgressMeasures, progress_measures
from toylab.methods.repair import KNOCKOUTS, SelfRepair, self_repair
from toylab.methods.steering import (
    STEER_SOURCES,
    Steer,
    SteeringComparison,
    SteeringResult,
    SteeringScore,
    SteeringTarget,
    apply_steer,
    compare_steering,
    evaluate_steer,
    fit_steer,
    score_steer,
    steer_and_score,
    steering_targets,
)
from toylab.methods.superposition import (
    FeatureStatus,
    PhaseDiagram,
    feature_status,
    phase_diagram,
    phase_diagram_seeds,
    reconstruction,
    seed_agreement,
)
from toylab.methods.tracing import CORRUPTIONS, TRACE_KINDS, TracingConfig, TracingResult, causal_trace

__all__ = [
    # dashboard: a neuron's, SAE latent's or transcoder feature's top inputs, histogram, logits and truth match
    "DashboardActivations",
    "FeatureDashboard",
    "FeatureTable",
    "Neuron",
    "SAELatent",
    "TranscoderFeature",
    "TruthMatch",
    "dashboard_activations",
    "feature_dashboard",
    "feature_table",
    # ablation: knock components out (zero / mean / resample) and score what the metric loses
    "ABLATIONS",
    "AblationScores",
    "ablate",
    "ablation_scores",
    # detectors: how much each attention head attends where a known head type would
    "DETECTORS",
    "detectors_of",
    "HeadScores",
    "head_scores",
    # circuits: QK and OV circuits read from the weights, and composition between heads
    "COMPOSITIONS",
    "CompositionScores",
    "composition_scores",
    "ov_circuit",
    "pos_qk_circuit",
    "qk_circuit",
    # lens: the logit lens and direct logit attribution
    "DirectLogitAttribution",
    "LogitLens",
    "direct_logit_attribution",
    "logit_lens",
    # patching: activation and path patching on a counterfactual pair (target, direction, receiver input)
    "DIRECTIONS",
    "PATCH_TARGETS",
    "RECEIVER_INPUTS",
    "PatchingResult",
    "activation_patching",
    "path_patching",
    # circuit discovery: edge attribution patching (EAP, EAP-IG) and ACDC
    "ACDC_METRICS",
    "ACDCResult",
    "EdgeAttribution",
    "acdc",
    "edge_pruning",
    "EdgePruningResult",
    "eap",
    "eap_ig",
    "edge_patching",
    # Fourier analysis of modular addition; Check is the result of a method that tests a claim
    "SPLITS",
    "Check",
    "FrequencyLosses",
    "check_key_frequencies",
    "embedding_frequency_norms",
    "frequency_losses",
    "key_frequencies",
    "mlp_frequency_spectrum",
    "neuron_frequencies",
    # progress measures along a grokking run, and its phases
    "Phase",
    "Phases",
    "ProgressMeasures",
    "progress_measures",
    # superposition: which features a toy model keeps, and how (2 features in 1 dimension: phase_diagram)
    "FeatureStatus",
    "PhaseDiagram",
    "feature_status",
    "phase_diagram",
    "phase_diagram_seeds",
    "reconstruction",
    "seed_agreement",
    # probes: linear probes with control tasks, where can a variable be read off?
    "LinearProbe",
    "ProbeConfig",
    "ProbeGrid",
    "ProbeResult",
    "probe_grid",
    "train_probe",
    # interchange: IIA and DAS at a Site, through a subspace (probe_subspace, sae_subspace, das)
    "DASConfig",
    "DASResult",
    "IIAResult",
    "NeuronMaskResult",
    "Site",
    "das",
    "iia_sweep",
    "interchange_accuracy",
    "neuron_mask",
    "probe_subspace",
    "sae_subspace",
    "subspace_interchange",
    "variable_site",
    # causal tracing (ROME): corrupt the subject, restore one state at a time
    "CORRUPTIONS",
    "TRACE_KINDS",
    "TracingConfig",
    "TracingResult",
    "causal_trace",
    # repair: heads that take over when others are knocked out, heads that write against the answer
    "KNOCKOUTS",
    "SelfRepair",
    "self_repair",
    # attribution graphs: one prompt traced through transcoder features (circuit-tracer's definitions)
    "AttributionGraph",
    "Node",
    "PrunedGraph",
    "attribution_graph",
    # editing: rewrite a stored fact (ROME, MEMIT, constrained fine-tuning), scored as CounterFact does
    "EDIT_METHODS",
    "EditConfig",
    "EditingComparison",
    "EditResult",
    "EditScores",
    "FactEdit",
    "LocalisationVsEditing",
    "apply_edits",
    "compare_editing",
    "edit_score",
    "fine_tune",
    "key_second_moment",
    "localisation_vs_editing",
    "memit",
    "mlp_keys",
    "random_edits",
    "rome",
    "score_edits",
    # steering: set a variable to a value by adding a direction or setting a subspace, graded by the algorithm
    "STEER_SOURCES",
    "Steer",
    "SteeringComparison",
    "SteeringResult",
    "SteeringScore",
    "SteeringTarget",
    "apply_steer",
    "compare_steering",
    "evaluate_steer",
    "fit_steer",
    "score_steer",
    "steer_and_score",
    "steering_targets",
]
