"""Figures for grokking: progress measures along a run, and a Fourier spectrum.

Axis names used in shape comments:
    checkpoint  one snapshot of the weights along a run, in step order
    freq        a frequency w = 1 .. (p-1)/2

    progress_curves(measures, step=...)     losses, Gini and weight norm against step,
                                            the phases shaded, a marker at ``step``
    frequency_spectrum(norms, key=...)      a norm per frequency; the truth's key
                                            frequencies outlined

Like ``toylab.viz.plots``: new ``Figure`` objects (never pyplot), ground truth in the one
truth colour with ``gid="ground-truth"``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from toylab.viz.plots import _array, bar

if TYPE_CHECKING:
    from toylab.methods.progress import ProgressMeasures

PHASE_COLORS = {"memorisation": "#fde2c8", "circuit formation": "#d9ead3", "cleanup": "#d6e4f5"}


def progress_curves(measures: ProgressMeasures, step: int | None = None, show_phases: bool = True,
                    title: str | None = None) -> Figure:
    """Three panels against training step: train, test, restricted and excluded loss (log
    scale); the embedding's Gini sparsity in the Fourier basis; the total squared weight
    norm. ``show_phases`` shades memorisation, circuit formation and cleanup as
    ``measures.phases()`` locates them; ``step`` draws a vertical line there."""
    steps = np.asarray(measures.steps, dtype=float)  # [checkpoint]
    if step is not None and not steps[0] <= step <= steps[-1]:
        raise ValueError(f"step {step} is outside the run's checkpoints {int(steps[0])}..{int(steps[-1])}")
    fig = Figure(figsize=(11.0, 3.2), layout="constrained")
    loss_ax, gini_ax, norm_ax = fig.subplots(1, 3)
    for name, style in (("train_loss", "-"), ("test_loss", "-"), ("restricted_loss", "--"), ("excluded_loss", ":")):
        loss_ax.plot(steps, np.maximum(np.asarray(getattr(measures, name)), 1e-8), style,
                     label=name.replace("_", " "))
    loss_ax.set_yscale("log")
    loss_ax.set_title("loss (restricted / excluded: key frequencies kept / removed)", fontsize="small")
    loss_ax.legend(fontsize="x-small", frameon=False)
    gini_ax.plot(steps, measures.gini, color="#6a3d9a")
    gini_ax.set_title("Gini of W_E in the Fourier basis", fontsize="small")
    norm_ax.plot(steps, measures.weight_norm, color="#33a02c")
    norm_ax.set_title("total sum of squared weights", fontsize="small")
    phases = measures.phases().phases if show_phases else ()
    for ax in (loss_ax, gini_ax, norm_ax):
        ax.set_xlabel("step")
        for phase in phases:
            end = phase.end if phase.end is not None else steps[-1]
            ax.axvspan(phase.start, end, color=PHASE_COLORS.get(phase.name, "#eeeeee"), zorder=0, linewidth=0)
        if step is not None:
            ax.axvline(step, color="black", linewidth=1.0)
    if phases:
        handles = [Patch(color=PHASE_COLORS.get(p.name, "#eeeeee"), label=p.name) for p in phases]
        # Below the panels: above, constrained layout stacks it on the suptitle.
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize="small")
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def frequency_spectrum(norms: Any, key_frequencies: Collection[int] = (), title: str | None = None,
                       ylabel: str = "norm") -> Figure:
    """A value per frequency w = 1 .. len(norms), norms [freq]; the ``key_frequencies``
    (e.g. the truth's) are outlined as ground truth."""
    values = _array(norms, 1, "norms [freq]")
    labels = [str(w) for w in range(1, len(values) + 1)]
    unknown = sorted(int(w) for w in key_frequencies if not 1 <= int(w) <= len(values))
    if unknown:
        raise ValueError(f"key frequencies {unknown} are outside 1..{len(values)}")
    fig = bar(values, labels, title=title, highlight={str(int(w)) for w in key_frequencies}, ylabel=ylabel)
    ax = fig.axes[0]
    ax.set_xlabel("frequency w")
    if len(values) > 30:  # label every fifth frequency, and every key one
        keep = {str(int(w)) for w in key_frequencies}
        ax.set_xticks(range(len(values)), [lab if (i + 1) % 5 == 0 or lab in keep else ""
                                           for i, lab in enumerate(labels)], rotation=0)
    return fig


__all__ = ["PHASE_COLORS", "frequency_spectrum", "progress_curves"]
