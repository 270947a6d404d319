"""Lesson 6, Grokking: train a modular-addition model live, and scrub through the shipped run."""

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import lab_common as lab
import numpy as np
import streamlit as st

from toylab import methods, viz, zoo
from toylab.lessons import lesson_fixtures
from toylab.tasks import ModularAddition
from toylab.train import Callback, train

LIVE_PRIMES = (53, 59, 61)  # small enough to grok in seconds with modadd-tiny's recipe


@st.cache_data(show_spinner="Loading the shipped run's progress measures...")
def shipped_progress(name: str) -> methods.ProgressMeasures:
    """The progress measures shipped with zoo model ``name`` (``progress.json``)."""
    return zoo.load_shipped_progress(name)


def live_run(p: int, seed: int, on_step: Callable[[int, int], None]) -> dict[str, Any]:
    """Train modadd-tiny's recipe on Z_p from ``seed`` until it generalises, calling
    ``on_step(step, total)`` as it goes; then measure what it learned. Not cached: the
    page keeps the result in the session."""
    rec = zoo.recipe("modadd-tiny")
    task = ModularAddition(p=p, train_frac=rec.task.train_frac, split_seed=rec.task.split_seed)
    model_cfg = dataclasses.replace(rec.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out)
    train_cfg = dataclasses.replace(rec.train, seed=seed)

    class Report(Callback):
        def on_step_end(self, run: Any) -> None:
            if run.step % 10 == 0:
                on_step(run.step, train_cfg.steps)

    start = time.perf_counter()
    result = train(model_cfg, task, train_cfg, callbacks=[Report()], progress=False)
    seconds = time.perf_counter() - start
    freqs = methods.key_frequencies(result.model, task)
    losses = methods.frequency_losses(result.model, task, freqs) if freqs else None
    return {"history": result.history, "steps": result.steps, "seconds": seconds, "key_frequencies": freqs,
            "spectrum": methods.embedding_frequency_norms(result.model, task.p).numpy(),
            "losses": dataclasses.asdict(losses) if losses else None, "metrics": result.metrics}


st.title("6 Grokking modular addition")
st.caption(
    "A one-layer transformer learns (a + b) mod p by memorising first and generalising much later. "
    "What it ends up computing is known: cos/sin of a few key frequencies, multiplied by the MLP into "
    "cos(w(a + b - c)). The progress measures show the circuit forming long before test loss falls."
)

# ---- the shipped run ---------------------------------------------------------------------
NAME = lesson_fixtures("grokking").PROGRESS_MODEL  # "modadd-113": the run lesson 6 reads
measures = shipped_progress(NAME)
truth_freqs = zoo.recipe(NAME).truth.claims["key_frequencies"]
st.header(f"The shipped run of {NAME}")
step_col, truth_col = st.columns([4, 1])
steps = list(measures.steps)
step = step_col.select_slider("Checkpoint (training step)", steps, steps[-1], key="grok_step")
show_truth = truth_col.toggle("Show ground truth", value=True, key="grok_truth")
i = steps.index(step)
lab.show(viz.progress_curves, measures, step=step, title=f"{NAME}: {len(steps)} checkpoints")

spectrum_col, numbers_col = st.columns([3, 1])
with spectrum_col:
    lab.show(viz.frequency_spectrum, np.asarray(measures.embedding_spectrum[i]),
             key_frequencies=truth_freqs if show_truth else (), title=f"W_E per frequency at step {step}")
with numbers_col:
    phase = next((p.name for p in measures.phases().phases if p.start <= step and (p.end is None or step <= p.end)),
                 "-")
    st.metric("phase", phase)
    st.metric("test accuracy", f"{measures.test_accuracy[i]:.3f}")
    st.metric("restricted / excluded loss", f"{measures.restricted_loss[i]:.2f} / {measures.excluded_loss[i]:.2f}")
    st.metric("Gini of W_E", f"{measures.gini[i]:.3f}")
if show_truth:
    st.caption(f"Outlined: the key frequencies of {NAME}'s certified truth, {truth_freqs}, proven by the "
               "restricted and excluded losses on the final weights.")
st.dataframe([{"phase": p.name, "from step": p.start, "to step": p.end} for p in measures.phases().phases],
             hide_index=True)

# ---- train one live ----------------------------------------------------------------------
st.header("Train one yourself")
st.caption("modadd-tiny's recipe (1 layer, 2 heads, d_model 64) on a small prime, until test accuracy reaches "
           "99.9%. Each prime and seed groks on its own frequencies.")
p_col, seed_col, go_col = st.columns([1, 1, 1])
p = p_col.selectbox("Prime p", LIVE_PRIMES, key="grok_p")
seed = int(seed_col.number_input("Seed", 0, 1000, 0, key="grok_seed"))
run_key = f"grok_run_{p}_{seed}"
if go_col.button("Train", key="grok_train"):
    bar = st.progress(0.0, text="training...")
    st.session_state[run_key] = live_run(
        p, seed, lambda s, total: bar.progress(min(s / total, 1.0), text=f"step {s}"))
    bar.empty()
run = st.session_state.get(run_key)
if run is not None:
    st.markdown(f"Stopped after **{run['steps']} steps** in {run['seconds']:.1f} s; test accuracy "
                f"{run['metrics']['test/accuracy']:.3f}. Key frequencies found from its MLP: "
                f"**{run['key_frequencies'] or 'none'}**.")
    curves_col, spectrum_col = st.columns(2)
    with curves_col:
        lab.show(viz.training_curves, run["history"], title=f"p = {p}, seed {seed}")
    with spectrum_col:
        lab.show(viz.frequency_spectrum, run["spectrum"], key_frequencies=run["key_frequencies"],
                 title="W_E per frequency (outlined: found from the MLP)")
    if run["losses"]:
        losses = run["losses"]
        st.markdown(f"Train loss {losses['full']:.3f}; keeping only those frequencies "
                    f"(restricted) {losses['restricted']:.3f}; removing them (excluded) {losses['excluded']:.3f}.")
