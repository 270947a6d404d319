"""Feature dashboards drawn: HTML with every token escaped and shaded by its activation, Altair charts of the
histogram and the logit effects, and the matplotlib figure, truth match in the truth colour."""

import io
import json
from html import escape

import pytest
from matplotlib.figure import Figure

from toylab import methods, sae, viz, zoo
from toylab.methods.dashboard import ActivatingPrompt, FeatureDashboard, Neuron, SAELatent, TruthMatch

ZM = zoo.load("conjunctions")


@pytest.fixture(scope="module")
def cache():
    return methods.dashboard_activations(ZM, ZM.task, n_prompts=256)


def hostile(truth_match=None, promoted=(("<i>up</i>", 1.5),)) -> FeatureDashboard:
    """A dashboard whose tokens and output names are HTML."""
    prompt = ActivatingPrompt(0, ("BOS", "<script>alert(1)</script>", 'a"b', "&amp;"), (0.0, 2.0, 0.5, 0.0), 1)
    return FeatureDashboard(
        feature=Neuron(0, 0), label="MLP0N0 <b>", n_prompts=1, n_positions=4, max_activation=2.0, density=0.5,
        prompt_density=1.0, top=(prompt,), quantiles=(), hist_counts=(1, 1), hist_edges=(0.5, 1.25, 2.0),
        writes_to=("blocks.0.hook_mlp_out",), promoted=promoted, suppressed=(("<o>", -1.0),) if promoted else None,
        logits_note="direct path only", truth_match=truth_match, truth_note="no truth given")


def test_html_escapes_every_token_and_label_and_shades_tokens_by_activation():
    html = viz.dashboard_html(hostile())
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'a&quot;b' in html and "&amp;amp;" in html and "MLP0N0 &lt;b&gt;" in html
    assert "rgba(255,112,0,1.000)" in html and "rgba(255,112,0,0.250)" in html  # 2.0 of 2.0, 0.5 of 2.0
    assert html.count("outline:") == 1  # the peak token
    assert "truth match: none (no truth given)" in html


def test_html_of_a_real_dashboard_lists_its_top_prompts_and_the_truth_match(cache):
    d = methods.feature_dashboard(ZM, cache, Neuron(0, 3), n_top=4, n_quantiles=2)
    html = viz.dashboard_html(d)
    assert html.count("<tr>") == 1 + 4 + sum(len(q.examples) + 1 for q in d.quantiles)
    assert f"truth match: {escape(d.truth_match.name)} (cosine {d.truth_match.cosine:.3f}" in html
    assert viz.TRUTH_COLOR in html
    assert viz.dashboard_html(d, quantiles=False).count("<tr>") == 1 + 4


def test_altair_charts_hold_the_histogram_and_the_logit_effects(cache):
    d = methods.feature_dashboard(ZM, cache, Neuron(0, 1), n_logits=3)
    spec = viz.activation_histogram_chart(d).to_dict()
    assert [row["count"] for row in spec["data"]["values"]] == list(d.hist_counts)
    spec = viz.logit_chart(d).to_dict()
    values = spec["data"]["values"]
    assert [(r["output"], r["kind"]) for r in values] == [(n, "promoted") for n, _ in d.promoted] + \
        [(n, "suppressed") for n, _ in d.suppressed]
    json.dumps(spec)
    no_logits = methods.feature_dashboard(ZM, cache, SAELatent(sae.SAE(sae.SAEConfig(8, 4, "relu")),
                                                               "blocks.0.mlp.hook_post", 0))
    assert viz.logit_chart(no_logits) is None


def test_the_figure_builds_and_writes_its_truth_match_in_the_truth_colour(cache):
    d = methods.feature_dashboard(ZM, cache, Neuron(0, 3), truth=ZM.truth)
    fig = viz.plot_dashboard(d)
    assert isinstance(fig, Figure)
    truth = [t for t in fig.findobj(lambda a: a.get_gid() == viz.TRUTH_GID)]
    assert len(truth) == 1 and d.truth_match.name in truth[0].get_text()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    assert buf.getvalue().startswith(b"\x89PNG")
    # without a truth match, with no logit effects and a feature that never fires: it still builds, no truth mark
    match = TruthMatch("f", 0.5, "blocks.0.hook_mlp_out", 3, "v", 1, 0.2, 4)
    assert len(viz.plot_dashboard(hostile(match)).findobj(lambda a: a.get_gid() == viz.TRUTH_GID)) == 1
    silent = FeatureDashboard(**{**vars(hostile(promoted=None)), "top": (), "hist_counts": (), "hist_edges": (),
                                 "max_activation": 0.0, "density": 0.0})
    fig = viz.plot_dashboard(silent)
    assert not fig.findobj(lambda a: a.get_gid() == viz.TRUTH_GID)
    assert any("never fires" in t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))
    fig.savefig(io.BytesIO(), format="png", dpi=50)
