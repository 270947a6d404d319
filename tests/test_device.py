"""Device plumbing, checked on the CPU: nothing may assume that tensors live on the CPU.

No GPU is needed to find a tensor created without a device: under ``with torch.device("meta")``
every tensor made without an explicit ``device=`` lands on the meta device, and the first op
that combines it with the model's CPU tensors raises "Tensor on device meta is not on the
expected device cpu". The models here are built on the CPU (toylab builds them there whatever
the default device), so each test below runs a representative pass of one part of toylab with
meta as the default device: a stray factory call fails it. (Indexing a CPU tensor with a meta
index does not raise; that case is not covered.) benchmarks/bench_cuda.py runs the real thing
on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from toylab import zoo
from toylab.devices import resolve_device
from toylab.models import Transformer, TransformerConfig
from toylab.tasks import Induction
from toylab.train import TrainConfig, train, versions

TASK = Induction(n_tokens=10, n_ctx=9, min_seg_len=2)
MODEL = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=TASK.d_vocab, n_ctx=9)
SHORT = TrainConfig(steps=6, lr=3e-3, batch_size=8, eval_every=3, checkpoint_every=4, seed=1)


@pytest.fixture
def meta_default():
    """Run the test body with the meta device as torch's default device."""
    with torch.device("meta"):
        yield


@pytest.fixture(scope="module")
def induction():
    return zoo.load("induction-tiny")


@pytest.fixture(scope="module")
def facts():
    return zoo.load("factual-recall")


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---- the device argument ----------------------------------------------------------------

def test_resolve_device_defaults_to_the_cpu_and_names_what_is_wrong():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="meta"):
        resolve_device("meta")
    with pytest.raises(TypeError, match="device must be"):
        resolve_device(0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_an_invalid_device_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown device 'cpux'"):
        train(MODEL, TASK, SHORT, progress=False, device="cpux")
    with pytest.raises(ValueError, match="unknown device"):
        Transformer(MODEL, device="not-a-device")
    with pytest.raises(ValueError, match="unknown device"):
        zoo.load("induction-tiny", device="gpu0")
    from toylab.models.superposition import SuperpositionConfig, ToyModel
    with pytest.raises(ValueError, match="unknown device"):
        ToyModel(SuperpositionConfig(n_instances=1, n_features=3, n_hidden=2), device="tpu-please")
    assert not (tmp_path / "run").exists()


def test_device_cpu_given_explicitly_reproduces_the_default_run_bitwise(tmp_path):
    default = train(MODEL, TASK, SHORT, progress=False, out_dir=tmp_path / "default")
    explicit = train(MODEL, TASK, SHORT, progress=False, out_dir=tmp_path / "explicit", device="cpu")
    also = train(MODEL, TASK, SHORT, progress=False, device=torch.device("cpu"))
    for other in (explicit, also):
        assert all(torch.equal(a, b) for a, b in zip(default.model.state_dict().values(),
                                                       other.model.state_dict().values()))
    assert (tmp_path / "default/model.safetensors").read_bytes() == (tmp_path / "explicit/model.safetensors").read_bytes()
    from toylab.checkpoint import read_json
    assert read_json(tmp_path / "explicit/card.json", "card")["versions"]["device"] == "cpu"
    assert versions()["device"] == "cpu"


def test_a_missing_device_in_an_old_card_reads_as_the_cpu():
    from toylab.train import bitwise_environment
    old = {k: v for k, v in versions().items() if k != "device"}
    assert bitwise_environment(old) == bitwise_environment(versions())
    assert bitwise_environment({**old, "device": "cuda (NVIDIA H200)"}) != bitwise_environment(old)


# ---- a representative pass over toylab with meta as the default device --------------------

def test_training_and_resuming(meta_default, tmp_path, interrupt_at):
    straight = train(MODEL, TASK, SHORT, progress=False)
    with pytest.raises(RuntimeError, match="power cut"):
        train(MODEL, TASK, SHORT, progress=False, out_dir=tmp_path, callbacks=[interrupt_at("crash", 5)])
    resumed = train(MODEL, TASK, SHORT, progress=False, out_dir=tmp_path)
    assert straight.model.device.type == "cpu"
    assert all(torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(),
                                                   resumed.model.state_dict().values()))


def test_forward_with_cache_and_every_hook(meta_default, induction):
    model, tokens = induction.model, induction.task.sample(4, seed=0).tokens
    logits, cache = model.run_with_cache(tokens)
    assert set(cache) == set(model.hook_names())
    seen = []
    with model.hooks([(lambda name: True, lambda x, hook: seen.append(hook.name))]):
        assert torch.equal(model(tokens), logits)
    assert sorted(seen) == sorted(model.hook_names())


def test_patching_and_attribution(meta_default, induction):
    from toylab import methods

    pair = induction.task.counterfactual(8, seed=0)
    for target in ("head", "resid_pre"):
        methods.activation_patching(induction.model, pair, target)
    methods.eap(induction.model, pair)
    methods.eap(induction.model, pair, qk_fix=True, grad_drop=True)
    methods.eap_ig(induction.model, pair, steps=2)
    for detector in methods.DETECTORS:
        methods.head_scores(induction.model, pair.clean.tokens, detector, induction.task)


def test_probe_steering_and_editing(meta_default, facts):
    from toylab import methods
    from toylab.methods.editing import EditConfig, FactEdit, rome
    from toylab.methods.steering import evaluate_steer, fit_steer, steering_targets

    batch = facts.task.sample(256, seed=1)
    labels = facts.task.variables(batch.tokens)["attribute"]
    site = methods.Site("blocks.0.hook_resid_post", facts.task.positions["subject"])
    methods.train_probe(facts.model, batch.tokens, labels, site, methods.ProbeConfig(steps=5, lr=0.1))

    target = next(iter(steering_targets(facts.task, facts.truth).values()))
    steer = fit_steer(facts.model, target, "diff-in-means", n=128)
    evaluate_steer(facts.model, target, steer, alphas=[1.0], n=32)

    before = _weights(facts.model)
    result = rome(facts.model, facts.task, FactEdit(0, 0, 1), layer=0, config=EditConfig(v_steps=3))
    assert result is not None
    facts.model.load_state_dict(before)


def test_sae_and_transcoder_training(meta_default, induction):
    from toylab.sae import SAE, SAEConfig, SyntheticFeatures, train_sae
    from toylab.sae.transcoder import Transcoder, TranscoderConfig, mlp_activations, train_transcoder

    data = SyntheticFeatures(n_features=8, d_in=6, seed=0)
    sae = SAE(SAEConfig(d_in=6, d_sae=12, architecture="relu"))
    train_sae(sae, data.sample, steps=4, batch_size=16, resample_every=2, resample_pool=32)
    topk = SAE(SAEConfig(d_in=6, d_sae=12, architecture="topk", k=2))
    train_sae(topk, data.sample(64, torch.Generator().manual_seed(0))[0], steps=3, batch_size=16)

    cfg = zoo.load("conjunctions").model.cfg
    model = zoo.load("conjunctions").model
    tokens = zoo.load("conjunctions").task.sample(64, seed=0).tokens
    x, y = mlp_activations(model, tokens)
    tc = Transcoder(TranscoderConfig(n_layers=cfg.n_layers, d_in=cfg.d_model, d_out=cfg.d_model, d_latent=16,
                                     architecture="topk", k=4))
    train_transcoder(tc, x.flatten(1, -2) if x.ndim > 3 else x, y.flatten(1, -2) if y.ndim > 3 else y, steps=3,
                     batch_size=16)


def test_attribution_graph(meta_default):
    from toylab.methods import attribution_graph
    from toylab.sae.transcoder import Transcoder, TranscoderConfig

    conj = zoo.load("conjunctions")
    cfg = conj.model.cfg
    with torch.device("cpu"):  # an untrained transcoder is enough to exercise the plumbing
        tc = Transcoder(TranscoderConfig(n_layers=cfg.n_layers, d_in=cfg.d_model, d_out=cfg.d_model, d_latent=16,
                                         architecture="relu"))
    graph = attribution_graph(conj.model, tc, conj.task.sample(1, seed=3).tokens[0])
    graph.prune()


def test_harness_score_with_baselines_and_a_feature_graph(meta_default):
    from toylab.validate import score
    from toylab.validate.baselines import BASELINES
    from toylab.validate.graph_baselines import GRAPH_BASELINES

    for name in ("random", "resample-ablation", "eap"):
        report = score(BASELINES[name], names=["induction-tiny"], seeds=[0], n_pairs=16, device="cpu")
        assert all(e.error is None for e in report.entries), [e.error for e in report.entries]
    report = score(GRAPH_BASELINES["untrained"], names=["conjunctions"], seeds=[0], n_pairs=16)
    assert all(e.error is None for e in report.entries), [e.error for e in report.entries]


def test_superposition_training_and_phase_diagram(meta_default):
    from toylab.methods.superposition import feature_status, phase_diagram
    from toylab.models.superposition import SuperpositionConfig, ToyModel, train_toy_model

    model = ToyModel(SuperpositionConfig(n_features=5, n_hidden=2, n_instances=3), feature_probability=0.1,
                     importance=0.9 ** torch.arange(5, device="cpu"), device="cpu")
    train_toy_model(model, steps=5, batch_size=32, log_every=2)
    feature_status(model)
    phase_diagram(n_density=2, n_importance=2, steps=3, batch_size=16, n_restarts=1, device="cpu")


def test_toy_model_device_cpu_reproduces_the_default_bitwise():
    from toylab.models.superposition import SuperpositionConfig, ToyModel, train_toy_model

    cfg = SuperpositionConfig(n_features=5, n_hidden=2, n_instances=2)
    a, b = ToyModel(cfg, 0.2, seed=3), ToyModel(cfg, 0.2, seed=3, device="cpu")
    ha, hb = train_toy_model(a, steps=4, batch_size=16), train_toy_model(b, steps=4, batch_size=16)
    assert torch.equal(a.W, b.W) and torch.equal(ha.loss, hb.loss)


def test_weight_circuits_and_composition(meta_default, induction):
    from toylab.methods import circuits

    model = induction.model
    for matrix in (circuits.ov_circuit(model, 1, 0), circuits.qk_circuit(model, 1, 0, key_through="L0H0"),
                   circuits.pos_qk_circuit(model, 1, 0)):
        assert matrix.device == model.device
        circuits.copying_score(matrix)
    circuits.eigen_copying_score(circuits.ov_circuit(model, 1, 0))
    for kind in circuits.COMPOSITIONS:
        scores = circuits.composition_scores(model, kind, n_baseline=4)
        scores.top(2)


def test_logit_lens_and_direct_logit_attribution(meta_default, induction, facts):
    from toylab import methods

    lens = methods.logit_lens(induction.model, induction.task.sample(8, seed=0))
    assert lens.loss.device == induction.model.device
    lens[lens.stages[-1]]
    methods.direct_logit_attribution(induction.model, induction.task.counterfactual(8, seed=0)).top(2)
    methods.direct_logit_attribution(facts.model, facts.task.sample(8, seed=0)).by_layer()  # has LN and MLPs


def test_fourier_analysis(meta_default):
    from toylab.methods import fourier

    tiny = zoo.load("modadd-tiny")
    model, task = tiny.model, tiny.task
    fourier.embedding_frequency_norms(model, task.p)
    fourier.neuron_frequencies(model, task)
    freqs = fourier.key_frequencies(model, task, k=2)
    fourier.frequency_losses(model, task, freqs)
    fourier.check_key_frequencies(model, task, freqs)


def test_causal_trace(meta_default, facts):
    from toylab import methods
    from toylab.methods import TracingConfig

    batch = facts.task.sample(4, seed=0)
    result = methods.causal_trace(facts.model, batch, [1], kinds=["mlp_out"])
    result.scores("mlp_out")
    methods.causal_trace(facts.model, batch, [1], kinds=["mlp_out"], config=TracingConfig(corruption="resample"),
                         source_tokens=facts.task.sample(4, seed=1).tokens)


def test_interchange_accuracy_and_das(meta_default, facts):
    from toylab import methods
    from toylab.methods import DASConfig, Site

    site = Site("blocks.0.hook_resid_post", 2)
    methods.interchange_accuracy(facts.model, facts.algorithm, "attribute", site, n=16)
    config = DASConfig(k=2, steps=2, batch_size=8, n_train=16, n_test=16)
    methods.das(facts.model, facts.algorithm, "attribute", site, config)
    methods.neuron_mask(facts.model, facts.algorithm, "attribute", site, config).basis


def test_feature_dashboard(meta_default):
    from toylab import methods
    from toylab.methods import Neuron, SAELatent
    from toylab.sae import SAE, SAEConfig

    conj = zoo.load("conjunctions")
    cache = methods.dashboard_activations(conj, conj.task, Neuron(0, 0), n_prompts=32)
    methods.feature_dashboard(conj, cache, Neuron(0, 1), n_top=3, n_quantiles=2)
    with torch.device("cpu"):
        sae = SAE(SAEConfig(d_in=conj.model.cfg.d_model, d_sae=8, architecture="relu"))
    methods.feature_dashboard(conj, cache, SAELatent(sae, "hook_embed", 2), n_top=3)


def test_detectors(meta_default, induction):
    from toylab import methods
    from toylab.methods.detectors import uniform_score

    tokens = induction.task.sample(4, seed=0).tokens
    for detector in methods.detectors_of(induction.task):
        methods.head_scores(induction.model, tokens, detector, induction.task)
        uniform_score(tokens, detector, induction.task)


def test_making_and_solving_a_challenge(meta_default, tmp_path):
    from toylab import challenges

    path = challenges.new_challenge(1, seed=0, folder=tmp_path / "c")
    score = challenges.solve(path)
    assert score.entry.error is None, score.entry.error
