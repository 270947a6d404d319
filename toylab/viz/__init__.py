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
    fig = viz.logit_lens_plot(lens); fig = viz.dla_plot(dla)                 # logit lens, DLA
    fig = viz.attribution_scatter(rows)                                      # attribution patching vs real
    fig = viz.bracket_trace(...); fig = viz.qk_heatmaps(...)                 # brackets; one head's scores
    fig = viz.plot_dashboard(dashboard); html = viz.dashboard_html(...)      # feature dashboards
    chart = viz.heatmap_chart(effect, rows, cols, "patching effect")         # interactive twins (INTERACTIVE)

Each returns a ``matplotlib.figure.Figure`` (in Streamlit: ``st.pyplot(fig)``; in a
notebook it displays itself), but the ``*_chart`` functions, which return Altair charts
(``st.altair_chart(chart)``; Altair is imported when one is built), and the ``*_html`` and
``*_table`` helpers of the lab's pages. Ground truth is always the same outline, with a legend entry.
"""

from toylab.viz.attribution_graph import attribution_graph_plot, graph_chart, graph_table
from toylab.viz.attribution_patching import attribution_chart, attribution_scatter, ig_steps_plot, scatter_table
from toylab.viz.brackets import bracket_trace, failure_bars
from toylab.viz.circuits import circuit_graph, faithfulness_curves, roc_curves
from toylab.viz.dashboard import activation_histogram_chart, dashboard_html, logit_chart, plot_dashboard, prompts_html
from toylab.viz.editing import editing_map
from toylab.viz.features import dimensionality_plot, feature_geometry, latent_cosines, phase_map
from toylab.viz.forward import qk_chart, qk_heatmaps, qk_table
from toylab.viz.interactive import (
    INTERACTIVE,
    attention_chart,
    bar_chart,
    head_heatmap_chart,
    heatmap_chart,
    probe_map_chart,
    progress_curves_chart,
    tracing_map_chart,
    training_curves_chart,
)
from toylab.viz.lens import dla_plot, lens_chart, logit_lens_plot, source_chart, source_plot
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
from toylab.viz.probes import probe_map, tracing_map
from toylab.viz.progress import frequency_spectrum, progress_curves
from toylab.viz.steering import steering_curves

__all__ = [
    "INTERACTIVE",
    "TRUTH_COLOR",
    "TRUTH_GID",
    "TRUTH_LABEL",
    "activation_histogram_chart",
    "attention_chart",
    "attention_pattern",
    "attribution_chart",
    "attribution_graph_plot",
    "attribution_scatter",
    "bar",
    "bar_chart",
    "bracket_trace",
    "circuit_graph",
    "dashboard_html",
    "dimensionality_plot",
    "dla_plot",
    "editing_map",
    "failure_bars",
    "faithfulness_curves",
    "feature_geometry",
    "frequency_spectrum",
    "graph_chart",
    "graph_table",
    "head_heatmap",
    "head_heatmap_chart",
    "heatmap",
    "heatmap_chart",
    "ig_steps_plot",
    "latent_cosines",
    "lens_chart",
    "logit_chart",
    "logit_lens_plot",
    "phase_map",
    "plot_dashboard",
    "probe_map",
    "probe_map_chart",
    "progress_curves",
    "progress_curves_chart",
    "prompts_html",
    "qk_chart",
    "qk_heatmaps",
    "qk_table",
    "roc_curves",
    "scatter_table",
    "source_chart",
    "source_plot",
    "steering_curves",
    "tracing_map",
    "tracing_map_chart",
    "training_curves",
    "training_curves_chart",
    "truth_outlines",
]
