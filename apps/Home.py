"""The toylab lab, one page per lesson: ``toylab lab`` (or ``streamlit run apps/Home.py``)."""

import sys
import threading
from pathlib import Path
from typing import Any

import streamlit as st

from toylab import zoo
from toylab.viz import TRUTH_COLOR

# Pages `import lab_common` from this folder: `streamlit run` puts it on sys.path, AppTest does not.
APPS = Path(__file__).resolve().parent
if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))

# The pages live in lab_pages/, not pages/: Streamlit lists a folder named pages/ in the sidebar,
# by file name, while a page loads, until st.navigation's titled list replaces it.
# One line per lesson page (path relative to this folder, title): the navigation, the
# landing page's list and the tests all read this list. No page icons: the current page's
# icon becomes the favicon, which Streamlit fetches from Google's CDN for a ":material/...:"
# icon (the lab stays offline), and an emoji needs a font that many Linux machines lack.
LESSONS = [
    ("lab_pages/tour.py", "1 Tour of the lab"),
    ("lab_pages/induction.py", "2 Induction heads"),
    ("lab_pages/patching.py", "3 Activation and path patching"),
    ("lab_pages/superposition.py", "4 Superposition"),
    ("lab_pages/sae.py", "5 Sparse autoencoders"),
    ("lab_pages/grokking.py", "6 Grokking modular addition"),
    ("lab_pages/validate.py", "7 Validate your method"),
    ("lab_pages/probes.py", "8 Probes and factual recall"),
    ("lab_pages/traps.py", "9 Why methods fail"),
    ("lab_pages/ioi.py", "10 Indirect object identification"),
    ("lab_pages/steering.py", "11 Steering"),
    ("lab_pages/editing.py", "12 Editing facts"),
    ("lab_pages/attribution_graphs.py", "13 Attribution graphs"),
    ("lab_pages/lens.py", "14 Logit lens and DLA"),
    ("lab_pages/brackets.py", "15 Balanced brackets"),
    ("lab_pages/attribution_patching.py", "16 Attribution patching"),
    ("lab_pages/build.py", "17 Build the transformer"),
    ("lab_pages/challenge.py", "Blind challenges"),
    ("lab_pages/dashboards.py", "Feature dashboards"),
]


@st.cache_resource(show_spinner=False)
def warm_up() -> threading.Thread:
    """Once per server process, in the background: import what pages need first and that costs
    seconds of CPU to import, so the first page to use it does not wait for it."""

    def imports() -> None:
        # Altair (the pages' interactive charts) imports jsonschema, which builds a grammar for
        # IRI formats at import when rfc3987_syntax is installed (with Jupyter): 1.5 s, for a
        # format Vega-Lite's schema never uses. Hidden during that import only, so jsonschema
        # skips those two formats' checkers; anything that imports rfc3987_syntax later gets it.
        hide = "rfc3987_syntax" not in sys.modules and "jsonschema" not in sys.modules
        if hide:
            sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # import raises ImportError
        try:
            import altair  # noqa: F401
        finally:
            if hide and sys.modules.get("rfc3987_syntax", False) is None:
                del sys.modules["rfc3987_syntax"]
        # torch imports its compiler stack (1.5 s) when the first optimizer is made: every page that trains.
        import torch._dynamo  # noqa: F401

    thread = threading.Thread(target=imports, name="toylab-lab-warm-up", daemon=True)
    thread.start()
    return thread


def zoo_table() -> list[dict[str, Any]]:
    """One row per zoo recipe, from the recipes alone (no model is loaded)."""
    rows = []
    for name in zoo.names():
        rec = zoo.recipe(name)
        cfg = rec.model
        rows.append({
            "name": name,
            "truth provenance": rec.provenance or "-",
            "seeds": ", ".join(map(str, rec.seeds)),
            "model": f"{cfg.n_layers}L x {cfg.n_heads}H, d_model {cfg.d_model}"
                     + (", attn only" if cfg.attn_only else f", d_mlp {cfg.d_mlp}"),
            "task": repr(rec.task),
        })
    return rows


def home() -> None:
    st.title("toylab: the lab")
    st.markdown(
        "toylab trains small transformers from scratch on algorithmic tasks, in seconds to "
        "minutes on a laptop CPU. Every model in its **zoo** ships with its **ground truth**: "
        "the circuit that implements the task, as data, proven by a causal certificate "
        "computed from the weights. So here you can try an interpretability method and "
        "check what it finds against a circuit that is *known*."
    )
    st.subheader("The zoo")
    st.dataframe(zoo_table(), hide_index=True, width="stretch")
    st.caption(
        "Truth provenance: **constructed** (weights set by hand), **enforced** (trained with "
        "SIIT so the circuit sits in components chosen before training) or **certified** "
        "(trained naturally, circuit identified afterwards). `toylab truth NAME` prints one."
    )
    st.subheader("How to use the lab")
    st.markdown(
        "Each page goes with a lesson in `lessons/` and runs the same toylab functions live. "
        "Pick a model and seed at the top of a page; everything is computed on your machine, "
        "nothing is downloaded. Where a plot shows ground truth, it is outlined like this "
        f"<span style='border:2px solid {TRUTH_COLOR};padding:0 4px'>ground truth</span>.",
        unsafe_allow_html=True,
    )
    for page in LESSON_PAGES:
        st.page_link(page)


warm_up()
LESSON_PAGES = [st.Page(path, title=title) for path, title in LESSONS]
st.set_page_config(page_title="toylab lab", layout="wide")
st.navigation([st.Page(home, title="Home", default=True), *LESSON_PAGES]).run()
