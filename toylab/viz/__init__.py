"""Figures for the lessons and the apps (matplotlib, no Streamlit).

    from toylab import viz
    fig = viz.head_heatmap(scores.scores, "induction score", highlight={"L1H1"})
    fig = viz.attention_pattern(cache["pattern", 1][0, 1], task.to_str_tokens(tokens[0]))
    fig = viz.heatmap(effect, [f"L{l}" for l in range(2)], str_tokens, "patching effect")
    fig = viz.bar(values, labels, "logit attribution", highlight={"L1H1"})
    fig = viz.training_curves(history)
    fig = viz.feature_geometry(model.W[0], importance=model.importance[0])   # toy models
    fig = viz.latent_cosines(cos, matched)                                   # SAEs
    fig = viz.probe_map(grid.accuracy, grid.selectivity, hooks, str_tokens)  # probes
    fig = viz.tracing_map({"mlp_out": trace.scores("mlp_out")}, str_tokens)  # causal tracing
    fig = viz.roc_curves({"eap": report})                                    # validate a method
    fig = viz.steering_curves({r.source: r for r in results})                # steering sweeps
    fig = viz.editing_map(result.trace, result.edit_scores, labels, layers)  # tracing vs editing
    fig = viz.attribution_graph_plot(pruned, task, mapped, on, truth)        # attribution graphs
    chart = viz.graph_chart(pruned, task, mapped, on, truth)                 # the same, interactive (Altair)

Each returns a ``matplotlib.figure.Figure`` (in Streamlit: ``st.pyplot(fig)``; in a
notebook it displays itself), but ``graph_chart``, an Altair chart (``st.altair_chart(chart)``;
Altair is imported when it is called). Ground truth is always the same outline, with a legend entry.
"""

from toylab.viz.attribution_graph import attribution_graph_plot, graph_chart, graph_table
from toylab.viz.attribution_patching import attribution_chart, attribution_scatter, ig_steps_plot, scatter_table  # noqa: F401  (estimate against real patch)
from toylab.viz.brackets import bracket_trace, failure_bars  # noqa: F401  (balanced brackets: trace, ablations)
from toylab.viz.circuits import circuit_graph, faithfulness_curves, roc_curves
from toylab.viz.dashboard import activation_histogram_chart, dashboard_html, logit_chart, plot_dashboard, prompts_html  # noqa: F401  (feature dashboards)
from toylab.viz.editing import editing_map
from toylab.viz.features import dimensionality_plot, feature_geometry, latent_cosines, phase_map
from toylab.viz.interactive import (  # noqa: F401  (the lab's interactive twins of the figures below)
    INTERACTIVE,
    attention_chart,
    bar_chart,
    head_heatmap_chart,
    heatmap_chart,
    progress_curves_chart,
    training_curves_chart,
)
from toylab.viz.forward import qk_chart, qk_heatmaps, qk_table  # noqa: F401  (one head's scores and pattern)
from toylab.viz.lens import dla_plot, lens_chart, logit_lens_plot, source_chart, source_plot  # noqa: F401
from toylab.viz.probes import probe_map, tracing_map
from toylab.viz.progress import frequency_spectrum, progress_curves
from toylab.viz.steering import steering_curves
from toylab.viz.plots import (
    TRUTH_COLOR,
    TRUTH_GID,
    TRUTH_LABEL,
    attention_pattern,
    bar,
    head_heatmap,
    heatmap,
    training_curves,
    truth_outlines,
)

__all__ = [
    "TRUTH_COLOR",
    "TRUTH_GID",
    "TRUTH_LABEL",
    "attention_pattern",
    "attribution_graph_plot",
    "circuit_graph",
    "editing_map",
    "faithfulness_curves",
    "roc_curves",
    "dimensionality_plot",
    "feature_geometry",
    "frequency_spectrum",
    "graph_chart",
    "graph_table",
    "progress_curves",
    "steering_curves",
    "latent_cosines",
    "phase_map",
    "probe_map",
    "tracing_map",
    "bar",
    "head_heatmap",
    "heatmap",
    "training_curves",
    "truth_outlines",
]
