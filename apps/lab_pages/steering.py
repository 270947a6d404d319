"""Lesson 11, Steering: push one variable of a zoo model to a value, and grade the steer exactly with the task's
algorithm: success, preservation and KL at any strength, the sweep over strengths, and the truth's ceiling."""

from typing import Any

import lab_common as lab
import streamlit as st

from toylab import methods, viz, zoo
from toylab.lessons import lesson_fixtures
from toylab.tasks import IGNORE, Batch

FIXTURES = lesson_fixtures("steering")  # lesson 11's models, prompt counts and sources, shared with the lesson
FIT_SEED = 0  # as steer_and_score(seed=0): fitted on prompts drawn with seed 0, alpha tuned on 1, graded on 2
GRADED_SEED = 3 * FIT_SEED + 2
ALPHAS = {"add": (0.0, 8.0, 0.25), "set": (0.0, 2.0, 0.05)}  # slider (min, max, step) per mode
N_EXAMPLES = 8
SOURCE_HELP = {
    "diff-in-means": "mean activation where the variable is the goal minus the mean elsewhere (added)",
    "probe": "a linear probe's logit gradient for the goal value (added)",
    "sae": "the decoder row of the SAE latent that best separates the goal value (added)",
    "das": "a DAS subspace trained for the variable, its coordinates set to the goal value's mean",
    "truth": "the truth's component for the variable, set to the goal value's mean: the ceiling",
}


def steering_target(name: str, seed: int) -> methods.SteeringTarget:
    return FIXTURES.target(lab.zoo_model(name, seed))


def score_row(score: methods.SteeringScore) -> dict[str, Any]:
    return {"alpha": score.alpha, "success": score.success, "preservation": score.preservation, "kl": score.kl,
            "n_changed": score.n_changed, "n_unchanged": score.n_unchanged}


@st.cache_resource(show_spinner="Fitting the steer...", max_entries=32)
def fitted(name: str, seed: int, source: str) -> methods.Steer:
    """``methods.fit_steer`` of ``source`` for the model's target, once per process; shared, never modified."""
    zm, target = lab.zoo_model(name, seed), steering_target(name, seed)
    with lab.FORWARD_LOCK:  # DAS trained as the lesson trains it
        return methods.fit_steer(zm.model, target, source, n=FIXTURES.n_fit(name), seed=FIT_SEED,
                                 sae_steps=FIXTURES.SAE_STEPS, das_config=FIXTURES.das_config(target, FIT_SEED))


@st.cache_data(show_spinner="Sweeping alpha...", max_entries=64)
def sweep(name: str, seed: int, source: str) -> dict[str, Any]:
    """``methods.evaluate_steer``: each alpha on tuning prompts, and the chosen one on the graded prompts."""
    zm, steer = lab.zoo_model(name, seed), fitted(name, seed, source)
    with lab.FORWARD_LOCK:
        result = methods.evaluate_steer(zm.model, steering_target(name, seed), steer, n=FIXTURES.N, seed=FIT_SEED)
    return {"mode": result.mode, "alpha": result.alpha, "sweep": [score_row(s) for s in result.sweep],
            "held_out": score_row(result.held_out), "info": dict(result.info)}


def graded_batch(name: str, seed: int) -> Batch:
    """The prompts steers are graded on: none was fitted on, none tuned alpha."""
    return steering_target(name, seed).sample(FIXTURES.N, GRADED_SEED)


@st.cache_data(show_spinner=False, max_entries=512)
def graded(name: str, seed: int, source: str, alpha: float) -> dict[str, Any]:
    """``methods.score_steer`` at ``alpha`` on the graded prompts."""
    zm, steer = lab.zoo_model(name, seed), fitted(name, seed, source)
    with lab.FORWARD_LOCK:
        score = methods.score_steer(zm.model, steering_target(name, seed), steer, graded_batch(name, seed), alpha)
    return score_row(score)


def output_name(task: Any, index: int) -> str:
    names = getattr(task, "output_names", None)
    return names[index] if names else str(index)


@st.cache_data(show_spinner=False, max_entries=512)
def examples(name: str, seed: int, source: str, alpha: float) -> list[dict[str, Any]]:
    """The first graded prompts: the answer before the steer, the algorithm's answer once it has worked, the steered
    model's answer (at the last position the algorithm scores)."""
    zm, steer, target = lab.zoo_model(name, seed), fitted(name, seed, source), steering_target(name, seed)
    task, full = zm.task, graded_batch(name, seed)
    batch = Batch(full.tokens[:N_EXAMPLES], full.targets[:N_EXAMPLES])
    expected = target.expected(batch)  # [batch, pos]
    with lab.FORWARD_LOCK:
        clean = zm.model(batch.tokens).argmax(-1)  # [batch, pos]
        with methods.apply_steer(zm.model, steer, target.goal(target.read(batch.tokens)), alpha):
            steered = zm.model(batch.tokens).argmax(-1)
    rows = []
    for i in range(len(batch.tokens)):
        pos = int((expected[i] != IGNORE).nonzero().max())  # the last position the algorithm scores
        want = int(expected[i, pos])
        should_change = bool(((expected[i] != batch.targets[i]) & (expected[i] != IGNORE)).any())
        rows.append({"prompt": " ".join(task.to_str_tokens(batch.tokens[i])),
                     "clean answer": output_name(task, int(clean[i, pos])),
                     "algorithm's answer": output_name(task, want),
                     "should change": should_change,
                     "steered answer": output_name(task, int(steered[i, pos])),
                     "right": bool(steered[i, pos] == want)})
    return rows


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


st.title("11 Steering")
st.caption(
    "A steer pushes one variable of the model to a value during the forward pass: it adds a direction to an "
    "activation, or sets a subspace of it. On these models the task's algorithm says what every answer must then "
    "be, so each steer is graded exactly: success (the prompts whose answer should change that now give the "
    "algorithm's answer), preservation (those whose answer should not change that keep it) and KL (how far the "
    "output moves on those). Fitted on prompts the grading never sees.")

model_col, seed_col = st.columns([3, 1])
name = model_col.selectbox("Zoo model", list(FIXTURES.MODELS), key="steer_model",
                           help="The zoo models toylab defines a steering target on (methods.steering_targets).")
seed = int(seed_col.selectbox("Seed", list(zoo.recipe(name).seeds), key="steer_seed",
                              help="Enforced recipes ship several seeds; the circuit sits in the same components."))
zm = lab.zoo_model_or_stop(name, seed)
target = steering_target(name, seed)
st.markdown(f"**Target:** `{target.name}`: {target.description}. Steered at `{target.site}`.")

source_col, alpha_col = st.columns([2, 3])
source = source_col.radio("Direction source", list(FIXTURES.SOURCES), key="steer_source",
                          help="; ".join(f"{s}: {h}" for s, h in SOURCE_HELP.items()))
if source == "truth" and target.truth_steer is None:
    st.info(f"{name}'s truth gives no component for {target.variable}: there is no ceiling steer.")
    st.stop()
steer = fitted(name, seed, source)
low, high, step = ALPHAS[steer.mode]
alpha = float(alpha_col.slider(
    "Strength alpha", min_value=low, max_value=high, value=1.0, step=step, key=f"steer_alpha_{steer.mode}",
    help="add: alpha x the activation's mean norm at the site; set: the fraction of the way to the goal value's "
         "mean (1 sets it)."))
st.caption(f"{source}: {'an additive' if steer.mode == 'add' else 'a setting'} steer at `{steer.site}` ({SOURCE_HELP[source]})."
           + (f" Fit: {', '.join(f'{k} {v:.3f}' if isinstance(v, float) else f'{k} {v}' for k, v in steer.info.items())}."
              if steer.info else ""))

# ---- at this strength --------------------------------------------------------------------------
st.header("At this strength")
now = graded(name, seed, source, alpha)
success_m, preservation_m, kl_m = st.columns(3)
success_m.metric("Success", fmt(now["success"]), help=f"{now['n_changed']} of {FIXTURES.N} graded prompts should "
                                                      "change their answer.")
preservation_m.metric("Preservation", fmt(now["preservation"]),
                      help=f"{now['n_unchanged']} graded prompts should keep their answer"
                           + (" (none here: every answer changes)." if now["preservation"] is None else "."))
kl_m.metric("KL", fmt(now["kl"]), help="Mean KL(unsteered || steered) of the output on the prompts that should "
                                       "keep their answer.")
st.dataframe(examples(name, seed, source, alpha), hide_index=True, width="stretch")
st.caption("The first graded prompts. The algorithm's answer is what the task's algorithm says once the variable "
           "is set (`target.expected`): the answer key, with no judge.")

# ---- the sweep ---------------------------------------------------------------------------------
st.header("The sweep over strengths")
show_truth = st.toggle("Show the truth's ceiling", value=True, key="steer_truth",
                       help="The truth's steer: its component for the variable set to the goal value's mean.")
curves = {source: sweep(name, seed, source)}
if show_truth and source != "truth" and target.truth_steer is not None:
    curves["truth"] = sweep(name, seed, "truth")
lab.show(viz.steering_curves, curves, title=f"{name}: {target.name}", marks={steer.mode: alpha} if alpha > 0 else None)
chosen = curves[source]["held_out"]
st.caption(f"Each alpha graded on {FIXTURES.N} tuning prompts; ringed, the alpha with the best success x "
           f"preservation ({curves[source]['alpha']:g}), which scores success {fmt(chosen['success'])}, preservation "
           f"{fmt(chosen['preservation'])}, KL {fmt(chosen['kl'])} on the graded prompts. Dashed: the slider's alpha."
           + (" The ceiling is drawn in the ground-truth colour." if "truth" in curves else ""))
